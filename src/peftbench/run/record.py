"""The run record around the pipeline: the output folder, the base record every run starts from,
the finished-run lookup that makes sweeps resumable, env info, and the final write. Shared by
``train``, the benchmark suite and ``peftbench bench``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import results
from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")


def container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def rank() -> int:
    for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(k):
            return int(os.environ[k])
    return 0


def env_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "hostname": platform.node()}
    info.update(package_versions("torch", "lightning", "transformers", "peft", "hydra", "datasets", "bitsandbytes"))
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        # intra-op threads: they set a CPU run's speed and its float summation order (a rebuild with
        # another count reaches other weights)
        info["threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        info["device"] = "unknown"
    info["git_revision"] = git_revision()
    return info


def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions, None for a package that is not installed (the optional ones). Read from
    package metadata, not imports: importing bitsandbytes alone pulls in torch inductor (seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version({"hydra": "hydra-core"}.get(name, name))
        except PackageNotFoundError:
            out[name] = None
    return out


def git_revision(short: bool = True) -> str | None:
    """HEAD of the checkout this package runs from; None outside git."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], check=False,
                              capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def output_dir(cfg: DictConfig) -> Path:
    try:
        d = OmegaConf.select(cfg, "paths.output_dir", default=None)
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra app
        d = None
    if d is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            d = HydraConfig.get().runtime.output_dir
        except Exception:  # noqa: BLE001
            d = "outputs/run"
    return Path(d)


def job_dir(overrides: str) -> str:
    """A sweep job's folder name from its overrides (Hydra's ``override_dirname``): readable when
    it is a short plain name, else ``job-<hash>``; the same overrides, the same folder."""
    import hashlib
    import re

    if overrides and len(overrides.encode()) <= 120 and re.fullmatch(r"[\w.=,+\-\[\]]+", overrides):
        return overrides
    return "job-" + hashlib.sha1(overrides.encode()).hexdigest()[:12]


def finished_in_sweep(out: Path, rid: str) -> dict[str, Any] | None:
    """The same configuration, finished in another job folder of this sweep (spelled with other
    overrides: a default named, ``1e-4`` for ``0.0001``): found, not trained again."""
    sweep = out.parent
    if not (sweep / "multirun.yaml").exists():
        return None
    for f in sorted(sweep.glob(f"*/{results.FILENAME}")):
        if f.parent != out and (rec := finished_record(f.parent, rid)) is not None:
            return rec
    return None


def prior_run(out: Path, rid: str) -> dict[str, Any] | None:
    """What a run of ``rid`` in ``out`` meets before it trains: its finished record (in ``out`` or in
    another job folder of its sweep: skipped), None (it trains), or ConfigError when ``out`` holds
    another configuration's finished run (refused, the folder kept). ``train`` and the suite's dry
    pass both ask this, so they agree on skip / train / refuse (a lock held by a live process or an
    unwritable folder is found only when the run starts)."""
    done = finished_record(out, rid) or finished_in_sweep(out, rid)
    if done is None:
        check_other_run(out, rid)
    return done


def check_other_run(out: Path, rid: str) -> None:
    """A folder holding another configuration's finished run is never overwritten."""
    path = out / results.FILENAME
    try:
        rec = results.read(path) if path.exists() else None
    except results.SchemaError:
        return
    if rec is not None and rec["status"] == "ok" and rec["run_id"] != rid:
        raise ConfigError(f"{out} holds the finished run {rec['run_id']} of another configuration; "
                          "choose another output folder (it is kept as it is)", option="hydra.run.dir")


class FolderLock:
    """One process per run folder: a second one (a double submit, a relaunch while the first
    still runs) is refused with the holder's pid and host, instead of training beside it and
    resuming from its half-written checkpoint. DDP ranks of one run share their rank 0's lock."""

    def __init__(self, out: Path) -> None:
        self.path, self.file = out / ".peftbench.lock", None

    def __enter__(self) -> "FolderLock":
        import fcntl
        import socket

        if rank() != 0 or os.environ.get("LOCAL_RANK", "0") != "0":  # ranks > 0 run inside rank 0's hold
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")
        except OSError:  # not a folder we can write: check_writable refuses it, naming the option
            return self
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # a file system without flock: go on, unguarded
                log.warning("could not lock %s (%s): two processes in this folder would not be stopped", self.path, e)
                f.close()
                return self
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ConfigError(f"{self.path.parent} is in use by {holder}; wait for it, or use another output folder",
                              option="hydra.run.dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None


def check_writable(out: Path) -> None:
    """A read-only or full output dir is found before training, not after it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".peftbench-write-probe"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output dir {out} is not writable: {e.strerror}", option="hydra.run.dir") from e
    import shutil

    if shutil.disk_usage(out).free < 50 * 2**20:
        raise ConfigError(f"output dir {out} has less than 50 MiB free", option="hydra.run.dir")


def finished_record(out: Path, rid: str, statuses: tuple[str, ...] = ("ok",)) -> dict[str, Any] | None:
    """The record of run ``rid`` in ``out`` if its status is one of ``statuses`` (default: finished)."""
    path = out / results.FILENAME
    if not path.exists():
        return None
    try:
        rec = results.read(path)
    except results.SchemaError:
        return None
    return rec if rec["run_id"] == rid and rec["status"] in statuses else None


def base_record(cfg: DictConfig, rid: str) -> dict[str, Any]:
    c = container(cfg)
    return results.empty_record(
        run_id=rid, config=c, seed=int(c["seed"]) if str(c.get("seed")).lstrip("-").isdigit() else 0,
        model={"family": c["model"].get("family", ""), "size": c["model_size"]["name"]},
        method={"name": c["method"]["name"], "family": "", "hparams": {k: v for k, v in c["method"].items() if k != "name"}},
        dataset={"name": c["dataset"]["name"], "task": c["dataset"].get("task")},
        env={"trust_remote_code": bool(c["model"].get("trust_remote_code", False)), "world_size": 1},
    )


def run_stages(rec: dict[str, Any], stages: Any) -> dict[str, Any]:
    """Fill ``rec`` from ``stages()`` (the record sections of a plan's execution); a refusal,
    crash, NaN or OOM becomes the record's status, never an exception into the sweep."""
    import traceback

    from peftbench.errors import PeftbenchError
    from peftbench.run.failures import classify

    try:
        part = stages()
        rec["env"].update(part.pop("env", {}))
        rec.update(part)
        rec["status"] = rec.get("status") or "ok"
    except PeftbenchError as e:
        rec.update(status="refused", error=str(e))
        log.error("refused: %s", e)
    except (SystemExit, KeyboardInterrupt) as e:  # SIGTERM (a SLURM time limit, pre-emption) or Ctrl+C:
        # Lightning turns both into SystemExit; record the run as interrupted (resumable), never as ok
        rec.update(status="interrupted", error=f"{interruption(e)}; relaunch the same command to resume "
                                               "from the last checkpoint")
        log.error("interrupted: %s", rec["error"])
    except Exception as e:  # noqa: BLE001 - recorded, never lost; the sweep goes on
        status = classify(e)
        rec.update(status=status, error=f"{type(e).__name__}: {e}")
        rec.setdefault("traceback", traceback.format_exc())
        log.error("%s: %s", status, rec["error"])
    return rec


def interruption(e: BaseException) -> str:
    """What stopped the run: Lightning's SIGTERMException, or the 143 of an interrupted base stage."""
    if type(e).__name__ in ("SIGTERMException", "Terminated") or getattr(e, "code", None) == 143:
        return "SIGTERM received"
    return f"stopped ({type(e).__name__} {getattr(e, 'code', '') or ''})".replace(" )", ")")


def exit_code(rec: dict[str, Any]) -> int | None:
    """The code an interrupted run's process ends with (128 + SIGTERM, as the signal would):
    a scheduler must see that the job did not finish."""
    if rec["status"] != "interrupted":
        return None
    return 143 if rec["error"].startswith("SIGTERM") else 130


def finish(rec: dict[str, Any], out: Path, total_s: float) -> dict[str, Any]:
    """Close trackers, add env info and the total time; rank 0 writes results.json and prints
    the summary (a display problem never fails a finished run)."""
    from peftbench.run.trackers import finish_runs

    finish_runs(ok=rec["status"] == "ok")  # a sequential multirun's next job gets its own tracker run
    rec["timings"]["total_s"] = round(total_s, 3)
    if not rec["env"].get("python"):
        rec["env"].update(env_info())
    if rank() != 0:
        return rec
    try:
        results.write(out, rec)
    except OSError as e:
        log.error("could not write results.json to %s: %s", out, e)
    else:  # only now: a kill before this line still finds the checkpoints to resume from
        keep = ((rec.get("config") or {}).get("checkpoint") or {}).get("keep", False)
        if rec["status"] == "ok" and not keep:
            from peftbench.run.resume import remove_checkpoints

            remove_checkpoints(out)  # the adapter and results.json are what a finished run keeps
    try:
        from peftbench.run.summary import render_summary

        render_summary(rec, out)
    except Exception as e:  # noqa: BLE001
        log.warning("could not print the run summary: %s", e)
    return rec
