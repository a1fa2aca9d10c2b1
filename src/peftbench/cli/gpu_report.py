"""``peftbench gpu-check``'s report half: rows → gpu.md + gpu.json. Pure functions (no torch), so a
report can be re-rendered from its JSON anywhere: ``python -m peftbench.cli.gpu_report gpu.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(x: Any, fmt: str = "{:.3g}", none: str = "—") -> str:
    return none if x is None else fmt.format(x)


def _by_case(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in rows}


def _status(r: dict[str, Any]) -> str:
    if r.get("status") == "expected_error":
        return f"refused, as expected: {str(r.get('error', ''))[:160]}"
    return "ok" if r.get("status") == "ok" else f"{r.get('status')}: {str(r.get('error', ''))[:160]}"


def header(meta: dict[str, Any]) -> list[str]:
    v = meta.get("versions", {})
    sc = meta.get("scale", {})
    lines = [f"# GPU check — {meta.get('device')}", ""]
    if meta.get("dry_run"):
        lines += ["**DRY RUN on CPU: tiny model, fp32, 2–3 steps per case. No figure below is a GPU measurement.**", ""]
    lines += [(f"Command: `{meta.get('command')}` · {meta.get('date_utc')} · wall {meta.get('wall_s')} s "
              f"(budget {meta.get('budget_s')} s) · git {meta.get('git_revision')}"), "",
              (f"Machine: {meta.get('device')} ({meta.get('gpu_memory_gib', '—')} GiB, compute capability "
              f"{meta.get('capability', '—')}), CUDA {meta.get('torch_cuda')}, cuDNN {meta.get('cudnn', '—')}, "
              f"{meta.get('cpu_count')} CPUs, Python {meta.get('python')}, {meta.get('platform')}"), "",
              "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()), "",
              (f"Model: llama `{sc.get('size')}` built from config (random init); batch {sc.get('batch')} × "
              f"{sc.get('seq')} tokens, {sc.get('warmup')} warm-up + {sc.get('steps')} timed steps, "
              f"precision {'bf16-mixed' if sc.get('cuda') else '32-true'}. MFU: FLOPs/token = 4·N + 2·N_trainable "
              "+ 12·L·d·T (attention), N = matmul weights (src/peftbench/measure/flops.py), against the "
              "device's dense bf16 peak."), ""]
    return lines


def method_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Methods (hand-written loop, the run's optimizer)", "",
             ("| case | trainable | optimizer | step (s) | tokens/s | GFLOPs/token | MFU | peak alloc (GiB) | "
             "above the model (GiB) | peak reserved (GiB) | status |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("params") or {}
        lines.append(f"| {r['case']} | {_f(p.get('trainable'), '{:,}')} | {r.get('optimizer') or '—'} | "
                     f"{_f(r.get('step_time_s'), '{:.4f}')} | "
                     f"{_f(r.get('tokens_per_s'), '{:,.0f}')} | {_f((r.get('flops_per_token') or 0) / 1e9 or None)} | "
                     f"{_f(r.get('mfu'), '{:.1%}')} | {_f(r.get('peak_allocated_gib'), '{:.2f}')} | "
                     f"{_f(r.get('peak_above_model_gib'), '{:.2f}')} | "
                     f"{_f(r.get('peak_reserved_gib'), '{:.2f}')} | {_status(r)} |")
    return lines + [""]


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    """a[key] / b[key] where both measured."""
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return None
    x, y = a.get(key), b.get(key)
    return x / y if x is not None and y else None


def ablation_lines(rows: list[dict[str, Any]]) -> list[str]:
    c = _by_case(rows)
    pairs = [("gradient checkpointing, LoRA: peak alloc on/off", "gc-lora", "method-lora", "peak_allocated_gib"),
             ("gradient checkpointing, LoRA: peak above the model on/off", "gc-lora", "method-lora", "peak_above_model_gib"),
             ("gradient checkpointing, LoRA: tokens/s on/off", "gc-lora", "method-lora", "tokens_per_s"),
             ("gradient checkpointing, full: peak alloc on/off", "gc-full", "method-full", "peak_allocated_gib"),
             ("gradient checkpointing, full: peak above the model on/off", "gc-full", "method-full", "peak_above_model_gib"),
             ("gradient checkpointing, full: tokens/s on/off", "gc-full", "method-full", "tokens_per_s"),
             ("attention, LoRA: tokens/s SDPA / eager", "sdpa-lora", "eager-lora", "tokens_per_s"),
             ("attention, LoRA: peak alloc SDPA / eager", "sdpa-lora", "eager-lora", "peak_allocated_gib"),
             ("torch.compile, LoRA: tokens/s on/off", "compile-lora", "method-lora", "tokens_per_s"),
             ("torch.compile, full: tokens/s on/off", "compile-full", "method-full", "tokens_per_s")]
    lines = ["## Ablations", "", "| comparison | ratio | cases |", "|---|---|---|"]
    for label, a, b, key in pairs:
        lines.append(f"| {label} | {_f(ratio(c.get(a), c.get(b), key), '{:.3f}')} | {a} / {b} |")
    lines += ["", ("Compiled cases: the first steps (compilation) are outside the timed steps; their cost is "
              "`first_steps_s` in gpu.json."), ""]
    return lines + method_table([r for r in rows if r["group"] != "methods"])[2:]


def fsdp_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## FSDP on the one GPU", "", ("| case | processes | use_orig_params | tokens/s (all ranks) | "
             "peak alloc (GiB, rank 0) | note | status |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r.get('world_size', 1)} | {r.get('use_orig_params', (r.get('strategy') or {}).get('use_orig_params', '—'))} | "
                     f"{_f(r.get('tokens_per_s'), '{:,.0f}')} | {_f(r.get('peak_allocated_gib'), '{:.2f}')} | "
                     f"{r.get('note', '')} | {_status(r)} |")
    return lines + [""]


def overhead_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Framework overhead on the device", "",
             ("Same model, batches, optimizer and steps; segments interleaved a b c, b c a, … in one process; "
             "ratios paired per round (median)."), "",
             "| method | rounds | (a) loop steps/s | (b) peftbench steps/s | (c) HF Trainer steps/s | b/a | b/c | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r.get("overhead") or {}
        lines.append(f"| {r['method']} | {o.get('rounds', '—')} | {_f(o.get('a_steps_per_s'))} | {_f(o.get('b_steps_per_s'))} | "
                     f"{_f(o.get('c_steps_per_s'))} | {_f(o.get('thr_b_over_a'), '{:.3f}')} | "
                     f"{_f(o.get('thr_b_over_c'), '{:.3f}')} | {_status(r)} |")
    return lines + [""]


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    g = {k: [r for r in rows if r["group"] == k] for k in ("methods", "ablations", "fsdp", "overhead", "compile", "fsdp2")}
    lines = header(meta) + method_table(g["methods"]) + ablation_lines(g["ablations"] + g["compile"] + g["methods"])
    lines += fsdp_lines(g["fsdp"] + g["fsdp2"])
    lines += overhead_lines(g["overhead"])
    bad = [r for r in rows if r.get("status") not in ("ok", "expected_error")]
    lines += ["## Not measured", ""] + ([f"- `{r['case']}`: {r.get('error')}" for r in bad] or ["- none"]) + [""]
    return "\n".join(lines)


def write_report(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """gpu.md and gpu.json (the rows with their errors) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, rows)
    (out / "gpu.md").write_text(text)
    (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    return {"markdown": text, "files": [str(out / "gpu.md"), str(out / "gpu.json")], "meta": meta, "rows": rows}


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print(markdown(data["meta"], data["rows"]))
