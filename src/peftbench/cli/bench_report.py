"""``peftbench bench``'s report half: pair the runners' measurements per round, check the targets,
and write overhead.md. Pure functions of the measured rows (no torch); the measuring half is
``peftbench.cli.bench``."""

from __future__ import annotations

import json
import statistics
from typing import Any

RUNNERS = ("a", "b", "c")
RUNNER_NAMES = {"a": "hand-written PyTorch loop", "b": "peftbench (Lightning)", "c": "HF Trainer"}


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _quartiles(xs: list[float]) -> list[float] | None:
    if not xs:
        return None
    if len(xs) < 4:
        return [min(xs), max(xs)]
    q = statistics.quantiles(xs, n=4)
    return [q[0], q[2]]


def _by_round(mine: list[dict[str, Any]], kind: str) -> list[dict[str, dict]]:
    """One method's measurements of ``kind`` (segment | memory), grouped {runner: result} per round."""
    rounds: dict[int, dict[str, dict]] = {}
    for r in mine:
        if r.get("kind") == kind and "error" not in r:
            rounds.setdefault(r["round"], {})[r["runner"]] = r
    return list(rounds.values())


def _ratio(rounds: list[dict[str, dict]], x: str, y: str, key: str) -> list[float]:
    return [rr[x][key] / rr[y][key] for rr in rounds if x in rr and y in rr]


def _med(rounds: list[dict[str, dict]], runner: str, key: str) -> float | None:
    return _median([rr[runner][key] for rr in rounds if runner in rr])


def summarize(results: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Per method: the per-round (paired) throughput ratios b/a and b/c of the in-process segments,
    their median and quartiles; peak memory b/a paired per fresh-process round, median."""
    rows = []
    for m in methods:
        mine = [r for r in results if r.get("method") == m]
        errs = sorted({f"{r.get('runner', '')}: {r['error']}".lstrip(": ") for r in mine if "error" in r})
        seg, mem = _by_round(mine, "segment"), _by_round(mine, "memory")
        ba, bc = _ratio(seg, "b", "a", "steps_per_s"), _ratio(seg, "b", "c", "steps_per_s")
        rows.append({"method": m, "rounds": len(seg), "memory_rounds": len(mem),
                     "thr_b_over_a_iqr": _quartiles(ba), "thr_b_over_c_iqr": _quartiles(bc),
                     **{f"{k}_steps_per_s": _med(seg, k, "steps_per_s") for k in RUNNERS},
                     "thr_b_over_a": _median(ba), "thr_b_over_c": _median(bc),
                     "mem_b_over_a": _median(_ratio(mem, "b", "a", "peak_rss_mb")),
                     **{f"{k}_peak_mb": _med(mem, k, "peak_rss_mb") for k in RUNNERS}, "errors": errs})
    return rows


def targets(rows: list[dict]) -> dict[str, str]:
    """Per method: "met", or which of throughput b/a, memory b/a and throughput b/c missed its target."""
    out = {}
    for r in rows:
        ok = [r["thr_b_over_a"] is not None and r["thr_b_over_a"] >= 0.97,
              r["mem_b_over_a"] is not None and r["mem_b_over_a"] <= 1.05,
              r["thr_b_over_c"] is not None and r["thr_b_over_c"] >= 1.0]
        out[r["method"]] = "met" if all(ok) else "not met (" + ", ".join(
            n for n, k in zip(("b/a", "mem", "b/c"), ok) if not k) + ")"
    return out


def _threads(n: int) -> str:
    return "torch's default intra-op threads" if n <= 0 else f"{n} intra-op thread{'s' if n > 1 else ''} each"


def _allocator_line(allocator: str) -> str:
    if allocator == "keep":
        return ("Allocator: in the throughput process, peftbench's `perf.keep_freed_memory` (glibc malloc keeps "
                "freed memory: no per-step page faults) is set once for all three runners, so the ratios are the "
                "frameworks' own per-step cost; in the memory processes (b) runs with it, (a) and (c) with "
                "glibc's defaults, as each would run for a user.")
    return ("Allocator: glibc's default dynamic malloc thresholds for all three runners "
            "(`perf.keep_freed_memory=false` in (b)): each path pays the page faults its allocation order causes.")


def markdown(rows: list[dict], meta: dict[str, Any], arch: dict[str, int], seq_len: int, warmup: int) -> str:
    """overhead.md: the machine, the set-up (``arch``: the from-config BERT; ``seq_len`` tokens; the first
    ``warmup`` steps of a segment untimed), the protocol, then one row per method."""
    mc = meta["machine"]
    lines = ["# Framework overhead: peftbench vs hand-written loop vs HF Trainer", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {mc['nproc']} CPU(s), {mc['cpu']}, Python {mc['python']}; load average at start "
             f"{mc['loadavg']} (a shared VM: absolute rates drift between runs; the paired per-round "
             f"ratios are what to read).", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in mc["versions"].items()), "",
             f"Setup: BERT from config {arch}, batch {meta['batch']} × {seq_len} tokens (synthetic, "
             f"seeded, identical in all runners), fp32, AdamW + linear schedule, no gradient clipping, "
             f"{_threads(meta.get('threads', 0))}.", "", _allocator_line(meta.get("allocator", "keep")), "",
             f"Throughput: one process per method, one model, {meta['rounds']} rounds of a {meta['steps']}-step "
             f"segment per runner, the order rotated each round (a b c, b c a, c a b, …); steps/s from the end "
             f"of step {warmup} to the end of the last step. Ratios: median of the per-round (paired) ratios, "
             "then their quartiles (how far one round can be trusted). Peak memory: each runner in its own "
             f"fresh process ({meta['memory_rounds']} round(s), ru_maxrss), ratio b/a paired per round.", "",
             "| method | a steps/s | b steps/s | c steps/s | thr b/a | thr b/c | mem b/a | peak MiB a / b / c "
             "| quartiles b/a; b/c |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peaks = " / ".join(_fmt(r[f"{k}_peak_mb"], 0) for k in RUNNERS)
        spread = "; ".join("—" if not rg else f"{rg[0]:.2f}–{rg[1]:.2f}"
                           for rg in (r.get("thr_b_over_a_iqr"), r.get("thr_b_over_c_iqr")))
        lines.append(f"| {r['method']} | {_fmt(r['a_steps_per_s'], 2)} | {_fmt(r['b_steps_per_s'], 2)} | "
                     f"{_fmt(r['c_steps_per_s'], 2)} | {_fmt(r['thr_b_over_a'])} | {_fmt(r['thr_b_over_c'])} | "
                     f"{_fmt(r['mem_b_over_a'])} | {peaks} | {spread} |")
    errs = [f"- {r['method']}: {e}" for r in rows for e in r["errors"]]
    if errs:
        lines += ["", "Errors:", *errs]
    t = meta.get("targets")
    if t:
        lines += ["", "Targets (thr b/a ≥ 0.97, mem b/a ≤ 1.05, thr b/c ≥ 1.0), per method: " +
                  ", ".join(f"{m}: {v}" for m, v in t.items())]
    extra = meta.get("extra") or {}
    if extra:
        lines += ["", "## Start-up and data", ""]
        for k, v in extra.items():
            lines.append(f"- {k}: {json.dumps(v) if not isinstance(v, str) else v}")
    return "\n".join(lines) + "\n"


def _fmt(v: Any, nd: int = 3) -> str:
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))
