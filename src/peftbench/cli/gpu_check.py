"""``peftbench gpu-check``: everything peftbench does on a GPU, measured in one command (≤ 8 min on one
H100/H200), written to ``reports/gpu-<device>/gpu.md`` + ``gpu.json``.

Measured on a Llama-3.2-1B-shaped model built from config (random init), bf16-mixed:
  methods    LoRA, QLoRA (needs bitsandbytes), full FT, (IA)³, prefix tuning: step time, tokens/s,
             MFU (measure/flops.py), CUDA peak allocated / reserved
  ablations  gradient checkpointing on/off (memory ratio), SDPA vs eager attention
  fsdp       a 1-device FSDP run through peftbench's strategy (LoRA, full FT), torch FSDP with mixed
             requires_grad in one flat unit
  overhead   hand-written loop vs peftbench's Lightning path vs HF Trainer, interleaved (as ``peftbench bench``)
  compile    torch.compile on/off
  fsdp2      torch FSDP in 2 processes sharing the one GPU
Each group runs in its own child process (a crash or a poisoned CUDA context costs one group, not
the report); each case inside is recorded with its figures or its error. ``--dry-run`` runs every
path on CPU with a tiny model in seconds (tests/test_gpu_check.py), so the check cannot rot.

This module imports only the standard library at import time: on a machine without a package,
the check says which is missing instead of failing on import.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

# the device machine has no such package: the check's code path must never import one
ABSENT_ON_DEVICE = ("datasets", "submitit", "gguf")
REQUIRED = ("torch", "lightning", "transformers", "peft", "hydra", "omegaconf", "yaml", "safetensors")
# in the order they run: what is most wanted first; torch.compile (minutes of compilation) and two
# processes on one GPU (NCCL may refuse or stall) last, so a slow case costs only what follows it
GROUPS = ("methods", "ablations", "fsdp", "overhead", "compile", "fsdp2")
PEFT_METHODS = ("lora", "qlora", "full", "ia3", "prefix_tuning")


def all_cases(dry_run: bool = False) -> list[Any]:
    """Every measurement, in the order they run (cheap and most wanted first). On CPU (the dry run)
    Lightning's FSDP is refused by make_plan: that refusal is the dry run's expected outcome."""
    from peftbench.cli.gpu_measure import Case

    cases = [Case(f"method-{m}", "methods", m) for m in PEFT_METHODS]
    gc = ["model.gradient_checkpointing=true"]
    cases += [Case("gc-lora", "ablations", "lora", overrides=tuple(gc), note="vs method-lora (checkpointing off)"),
              Case("gc-full", "ablations", "full", overrides=tuple(gc), note="vs method-full (checkpointing off)", dry=False),
              Case("sdpa-lora", "ablations", "lora", overrides=("model.attn_implementation=sdpa",)),
              Case("eager-lora", "ablations", "lora", overrides=("model.attn_implementation=eager",)),
              Case("compile-lora", "compile", "lora", overrides=("perf.compile=true",), note="vs method-lora"),
              Case("compile-full", "compile", "full", overrides=("perf.compile=true",), note="vs method-full", dry=False)]
    fsdp = ("strategy=fsdp",)
    cases += [Case("fsdp1-lightning-lora", "fsdp", "lora", "fsdp_lightning", fsdp, note="peftbench strategy=fsdp, 1 device",
                   expect_error="" if not dry_run else "FSDP needs CUDA"),
              Case("fsdp1-lightning-full", "fsdp", "full", "fsdp_lightning", fsdp, note="peftbench strategy=fsdp, 1 device", dry=False),
              Case("fsdp1-torch-mixed", "fsdp", "lora", "fsdp_torch", use_orig_params=False, expect_error="uniform `requires_grad`",
                   note="LoRA's frozen + trainable weights in one FlatParameter (use_orig_params=False): FSDP1 refuses it"),
              Case("fsdp2-torch-lora", "fsdp2", "lora", "fsdp_torch", procs=2,
                   note="2 processes on the one device; mixed requires_grad per block (use_orig_params=True)"),
              Case("fsdp2-torch-full", "fsdp2", "full", "fsdp_torch", procs=2, note="2 processes on the one device", dry=False)]
    cases += [Case("overhead-lora", "overhead", "lora", "overhead"), Case("overhead-full", "overhead", "full", "overhead", dry=False)]
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(cases, key=lambda c: order[c.group])  # stable: the order above within a group
    return cases


# ---- fail fast: what must be there before anything is measured ---------------------------------------
def preflight(dry_run: bool) -> dict[str, Any]:
    """Stop at once (SystemExit, the message names the fix) on a missing package or, for the real
    check, a missing CUDA device."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gpu-check: missing package(s) {missing}. Offline device? carry wheels: "
                         "`bash scripts/gpu-wheels.sh` here, then `bash scripts/gpu-check.sh` there (installs .whl/)")
    import torch

    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device is visible (torch.cuda.is_available() is False; "
                         f"torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a CUDA machine, "
                         "or `--dry-run` on CPU")
    return machine(dry_run)


def machine(dry_run: bool) -> dict[str, Any]:
    import torch

    from peftbench.run.record import git_revision, package_versions

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "torch_cuda": torch.version.cuda, "dry_run": dry_run,
                            "versions": package_versions("torch", "lightning", "transformers", "peft", "accelerate",
                                                         "hydra", "omegaconf", "bitsandbytes", "safetensors"),
                            "git_revision": git_revision()}
    if dry_run or not torch.cuda.is_available():
        info.update(device="cpu", device_slug="dry-run-cpu")
        return info
    p = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    info.update(device=name, device_slug=re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
                gpu_memory_gib=round(p.total_memory / 1024**3, 1), capability=f"{p.major}.{p.minor}",
                gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
    return info


# ---- the parent: one child process per group, under one deadline ---------------------------------------
def run_group(groups: tuple[str, ...], dry_run: bool, work: Path, deadline: float) -> list[dict[str, Any]]:
    """Run the groups' cases in one child process; rows it did not write (a crash, the deadline)
    are recorded as errors naming the cause."""
    cmd = [sys.executable, "-m", "peftbench.cli.gpu_check", "--child", ",".join(groups), "--work", str(work),
           "--deadline", str(deadline), *(["--dry-run"] if dry_run else [])]
    tail = ""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, deadline - time.time() + 30), check=False)
        tail = (p.stderr or p.stdout).strip()[-1500:] if p.returncode != 0 else ""
    except subprocess.TimeoutExpired:
        tail = "the group's process ran past the check's time budget and was stopped"
    rows = []
    for g in groups:
        f = work / f"rows-{g}.jsonl"
        rows += [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []
    done = {r["case"] for r in rows}
    for c in all_cases(dry_run):
        if c.group in groups and c.name not in done:
            rows.append({"case": c.name, "group": c.group, "method": c.method, "kind": c.kind, "status": "error",
                         "error": f"not measured: group process ended early ({tail.splitlines()[-1] if tail else 'no output'})",
                         "traceback": tail})
    return rows


class ImportWatch:
    """Who first looks up a package the device lacks. peftbench's code must not need one; a library's
    optional import of a package installed here (transformers' Trainer and ``datasets``) is fine —
    on the device the library finds it missing and goes on."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        top = name.split(".")[0]
        if top in ABSENT_ON_DEVICE and top not in self.seen:
            self.seen[top] = "?"  # first: reading the stack may import (linecache) and come back here
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            self.seen[top] = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        # only watching: the normal finders go on


def child(groups: list[str], dry_run: bool, work: Path, deadline: float) -> None:
    """The groups' cases, one row per line in ``rows-<group>.jsonl`` as each finishes."""
    from peftbench.cli.gpu_measure import DRY, REAL, run_case

    watch = ImportWatch()
    sys.meta_path.insert(0, watch)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scale = DRY if dry_run else REAL
    for case in [c for c in all_cases(dry_run) if c.group in groups]:
        skip = "time budget spent" if time.time() > deadline else None
        if dry_run and not case.dry:
            skip = "dry run: the same code path as another case (runs on the GPU)"
        if skip:
            row = {"case": case.name, "group": case.group, "method": case.method, "kind": case.kind,
                   "status": "skipped", "error": skip}
        else:
            row = run_case(case, scale, work / "cases")
        with (work / f"rows-{case.group}.jsonl").open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
    (work / f"imports-{'-'.join(groups)}.json").write_text(json.dumps(watch.seen))


def run_check(out: Path | None, dry_run: bool = False, budget_s: float = 480.0, groups: tuple[str, ...] = GROUPS,
              log: Any = print, command: str = "peftbench gpu-check") -> dict[str, Any]:
    """Preflight, then every group under one deadline, then the report (Markdown + JSON)."""
    import tempfile

    from peftbench.cli.gpu_report import write_report

    t0 = time.time()
    info = preflight(dry_run)
    out = out or Path("reports") / f"gpu-{info['device_slug']}"
    deadline = t0 + budget_s - 15  # leave time to write the report
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pb-gpu-check-") as tmp:
        # one process per group on the device (a crash costs one group); the dry run: one for all
        for batch in ([groups] if dry_run else [(g,) for g in groups]):
            log(f"gpu-check: {', '.join(batch)} …")
            new = run_group(batch, dry_run, Path(tmp), deadline)
            rows += new
            bad = [r["case"] for r in new if r["status"] == "error"]
            log(f"gpu-check: {', '.join(batch)} done ({round(time.time() - t0)} s){'; errors: ' + ', '.join(bad) if bad else ''}")
        absent = {m: w for f in sorted(Path(tmp).glob("imports-*.json")) for m, w in json.loads(f.read_text()).items()}
    meta = {**info, "looked_up_but_absent_on_device": absent, "command": command,
            "wall_s": round(time.time() - t0, 1), "budget_s": budget_s, "scale": _scale(dry_run), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return write_report(out, meta, rows)


def _scale(dry_run: bool) -> dict[str, Any]:
    from peftbench.cli.gpu_measure import DRY, REAL

    return asdict(DRY if dry_run else REAL)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peftbench gpu-check", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="every path on CPU with a tiny model (seconds; no GPU figure)")
    p.add_argument("--out", default=None, help="report folder (default reports/gpu-<device>)")
    p.add_argument("--budget-min", type=float, default=8.0, help="wall-clock budget; cases past it are recorded as skipped")
    p.add_argument("--groups", default=",".join(GROUPS), help=f"comma list of {', '.join(GROUPS)}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)


def main_args(a: argparse.Namespace) -> int:
    if a.child:
        child(a.child.split(","), a.dry_run, Path(a.work), a.deadline)
        return 0
    groups = tuple(g for g in a.groups.split(",") if g)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise SystemExit(f"gpu-check: unknown group(s) {unknown}; groups: {', '.join(GROUPS)}")
    res = run_check(Path(a.out) if a.out else None, a.dry_run, a.budget_min * 60, groups,
                    log=lambda s: print(s, file=sys.stderr, flush=True),
                    command="peftbench gpu-check " + " ".join(sys.argv[1:] if sys.argv[1:2] != ["gpu-check"] else sys.argv[2:]))
    print(res["markdown"])
    print(f"wrote {res['files']}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
