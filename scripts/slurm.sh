#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost, for tests and for trying the submitit launcher.
#
#   scripts/slurm.sh install   # apt-get install slurmctld slurmd slurm-client munge (needs root)
#   scripts/slurm.sh start     # (install if needed) munge key, munged, slurm.conf, slurmctld, slurmd
#   scripts/slurm.sh status    # daemons + sinfo
#   scripts/slurm.sh stop      # kill slurmd, slurmctld, munged (safe to call twice)
#
# No systemd/init is assumed: the daemons are started directly and tracked by pid files.
# Everything is idempotent; it works non-interactively (CI=true, no stdin).
# Environment knobs: SLURM_PARTITION (debug), SLURM_CONF_DIR (/etc/slurm),
# SLURM_START_TIMEOUT (60 s), SLURM_CLUSTER_NAME (peftbench).
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
CONF_DIR="${SLURM_CONF_DIR:-/etc/slurm}"
CONF="$CONF_DIR/slurm.conf"
TIMEOUT="${SLURM_START_TIMEOUT:-60}"
CLUSTER="${SLURM_CLUSTER_NAME:-peftbench}"
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_KEY=/etc/munge/munge.key
NODE="$(hostname -s 2>/dev/null || echo localhost)"
[ -n "$NODE" ] || NODE=localhost

log() { echo "[slurm.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"; }
have() { command -v "$1" >/dev/null 2>&1; }

installed() { have slurmctld && have slurmd && have sinfo && have srun && have sbatch && have munged && have munge; }

cmd_install() {
  if installed; then log "slurm + munge already installed ($(slurmd -V 2>/dev/null))"; return 0; fi
  need_root
  have apt-get || die "apt-get not found: install slurmctld slurmd slurm-client munge by hand"
  export DEBIAN_FRONTEND=noninteractive
  # No init system: stop the maintainer scripts from trying to start the services.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  local rc=0
  { apt-get update -q &&
    apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      slurmctld slurmd slurm-client munge </dev/null; } || rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install failed (rc=$rc)"
  installed || die "packages installed but slurm binaries are still missing"
  log "installed $(slurmd -V 2>/dev/null)"
}

pid_alive() { # pidfile -> 0 when the pid in it is a live process
  local f="$1" p
  [ -s "$f" ] || return 1
  p="$(cat "$f" 2>/dev/null)" || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

find_pids() { # binary name -> pids of that exact program (fallback when a pid file is missing)
  pgrep -x "$1" 2>/dev/null || true
}

start_munge() {
  local muser=root
  id munge >/dev/null 2>&1 && muser=munge
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key $MUNGE_KEY"
    if have mungekey; then mungekey --create --keyfile="$MUNGE_KEY" --force >/dev/null 2>&1 || true; fi
    [ -s "$MUNGE_KEY" ] || dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
  fi
  chown -R "$muser:$muser" /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 "$MUNGE_KEY"
  if pid_alive "$MUNGE_PID" || [ -n "$(find_pids munged)" ]; then
    log "munged already running"
  else
    log "starting munged (as $muser)"
    if [ "$muser" = munge ]; then
      runuser -u munge -- munged --pid-file="$MUNGE_PID" || die "munged failed: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
    else
      munged --force --pid-file="$MUNGE_PID" || die "munged failed"
    fi
  fi
  local i
  for i in $(seq 1 20); do
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "munge does not work: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
}

write_conf() {
  local cpus mem
  cpus="$(nproc)"
  # RealMemory must not exceed what slurmd detects, else the node is drained: leave 5% slack.
  mem="$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')"
  [ -n "$mem" ] && [ "$mem" -gt 0 ] || mem=1000
  mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  cat >"$CONF.tmp" <<EOF
# Written by peftbench scripts/slurm.sh: one-node cluster on localhost (tests only).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=30
MinJobAge=300
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  # No cgroup plugin is configured (proctrack/linuxproc, task/none, jobacct_gather/none), so
  # no cgroup.conf is needed; containers (gVisor, docker) often have no writable cgroups anyway.
  log "wrote $CONF (node $NODE, CPUs=$cpus, RealMemory=${mem}M, partition $PARTITION)"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true; }

dump_logs() {
  log "---- $CONF"; cat "$CONF" >&2 || true
  log "---- slurmctld.log (tail)"; tail -n 40 "$LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
  log "---- slurmd.log (tail)"; tail -n 40 "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
  log "---- munged.log (tail)"; tail -n 10 /var/log/munge/munged.log >&2 2>/dev/null || true
  log "---- sinfo"; sinfo -N -l >&2 2>&1 || true
}

cmd_start() {
  need_root
  cmd_install
  case "$(node_state)" in
    idle*|mix*|alloc*|comp*) log "cluster already up: node $NODE is $(node_state)"; return 0 ;;
  esac
  start_munge
  local ctld_up=0 slurmd_up=0
  { pid_alive "$CTLD_PID" || [ -n "$(find_pids slurmctld)" ]; } && ctld_up=1
  { pid_alive "$SLURMD_PID" || [ -n "$(find_pids slurmd)" ]; } && slurmd_up=1
  if [ "$ctld_up" = 0 ] || [ ! -s "$CONF" ]; then write_conf; fi
  if [ "$ctld_up" = 0 ]; then
    log "starting slurmctld"
    # -c: start with no saved jobs (a test cluster: jobs from an earlier life are gone anyway)
    slurmctld -c -f "$CONF" || { dump_logs; die "slurmctld failed to start"; }
  fi
  if [ "$slurmd_up" = 0 ]; then
    log "starting slurmd"
    slurmd -f "$CONF" || { dump_logs; die "slurmd failed to start"; }
  fi
  local waited=0 st=""
  while [ "$waited" -lt "$TIMEOUT" ]; do
    st="$(node_state)"
    case "$st" in
      idle*|mix*|alloc*|comp*) log "cluster up: node $NODE is $st, partition $PARTITION"; sinfo >&2; return 0 ;;
      drain*|down*|fail*|inval*)
        # stale state from an earlier run (e.g. killed slurmd): bring the node back
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1; waited=$((waited + 1))
  done
  dump_logs
  die "node $NODE not idle after ${TIMEOUT}s (state: '${st:-no answer}')"
}

stop_one() { # name pidfile
  local name="$1" pf="$2" pids="" p i
  if pid_alive "$pf"; then pids="$(cat "$pf")"; fi
  pids="$(printf '%s\n%s\n' "$pids" "$(find_pids "$name")" | sort -u | grep -v '^$' || true)"
  if [ -z "$pids" ]; then log "$name not running"; rm -f "$pf"; return 0; fi
  log "stopping $name ($(echo $pids))"
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 1 20); do
    local alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$pf"
}

cancel_jobs() {
  # Cancel every job and wait until none is left (also COMPLETING): submitit returns as soon as
  # the result files exist, while the job's steps are still reporting back; killing munged or
  # slurmctld then strands slurmstepd/srun forever (job stuck in CG after the next start).
  have squeue || return 0
  squeue -h >/dev/null 2>&1 || return 0
  local i
  if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    log "cancelling jobs: $(echo $(squeue -h -o %i))"
    scancel --full --quiet -u root >/dev/null 2>&1 || true
    scancel --quiet $(squeue -h -o %i) >/dev/null 2>&1 || true
  fi
  for i in $(seq 1 30); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  log "jobs still listed after 15 s: $(echo $(squeue -h -o '%i:%T'))"
}

cmd_stop() {
  cancel_jobs
  stop_one slurmd "$SLURMD_PID"
  stop_one slurmctld "$CTLD_PID"
  stop_one slurmstepd /nonexistent  # orphaned job steps, if any
  stop_one munged "$MUNGE_PID"
}

cmd_status() {
  local n
  for n in munged slurmctld slurmd; do
    if [ -n "$(find_pids "$n")" ]; then echo "$n: running ($(echo $(find_pids "$n")))"; else echo "$n: stopped"; fi
  done
  if have sinfo && sinfo >/dev/null 2>&1; then sinfo; squeue 2>/dev/null || true; return 0; fi
  echo "sinfo: no answer"; return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  *) echo "usage: $0 {install|start|stop|restart|status}" >&2; exit 2 ;;
esac
