"""Fixed padding (64) vs dynamic padding vs length grouping, MiniLM-L6 + LoRA on SST-2.

Several rounds in one process; each round runs the three settings in a rotated order (round r starts
at setting r mod 3), so neither machine load drifting over time nor running first/last favours one
setting. Every run has the same seed, data subset and number of optimizer updates, and one torch
thread: on a shared machine a run's process CPU time (recorded beside wall time) then measures its
own compute, where several threads would also count their waits for each other.

    python experiments/padding_sst2/driver.py run OUT_DIR [ROUNDS] [extra overrides...]
    python experiments/padding_sst2/driver.py table OUT_DIR     # table.md from OUT_DIR/runs/*/results.json

The table is made from the run records alone: per setting the padded and useful tokens per sample,
a forward FLOP count from the model's shapes in the record (linear layers 2·N·tokens plus attention's
QKᵀ and AV, 2·s²·d each per layer and sequence), and the measured useful-tokens/s ratio against
fixed-64 per round (median and range) beside what the token counts and the FLOP counts predict.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

MODES = {
    "fixed-64": ["dataset.padding=max_length"],
    "dynamic": ["dataset.padding=dynamic"],
    "length-grouped": ["dataset.padding=dynamic", "dataset.group_by_length=true"],
}
BASE = "fixed-64"
COMMON = ["model=minilm", "model_size=l6", "method=lora", "dataset=sst2", "seed=1",
          "dataset.train_limit=1000", "dataset.val_limit=64", "dataset.max_length=64", "data.batch_size=16",
          "data.eval_batch_size=64", "trainer.max_steps=14", "trainer.max_epochs=-1", "logger=none",
          "trainer.enable_progress_bar=false", "measure.inference_overhead=false", "measure.changed=false",
          "measure.warmup_steps=3", "perf.num_threads=1"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def order(r: int) -> list[str]:
    """Round r's order: the settings rotated by r (each setting takes each position once per 3 rounds)."""
    names = list(MODES)
    k = r % len(names)
    return names[k:] + names[:k]


def run(out: Path, rounds: int, extra: list[str]) -> None:
    from peftbench.config.compose import compose
    from peftbench.run.record import env_info
    from peftbench.train import train

    runs = []
    for r in range(rounds):
        for pos, mode in enumerate(order(r)):
            folder = out / "runs" / f"r{r}-p{pos}-{mode}"
            load = os.getloadavg()
            rec = train(compose([*COMMON, *MODES[mode], *extra], output_dir=str(folder)))
            if rec["status"] != "ok":
                raise SystemExit(f"{mode} round {r}: {rec['status']}: {rec['error']}")
            shutil.rmtree(folder / "adapter", ignore_errors=True)  # the record is the result; weights are not needed
            (folder / ".peftbench.lock").unlink(missing_ok=True)  # the finished run's folder lock
            runs.append({"run": folder.name, "loadavg_before": load, "useful_tokens_per_s": rec["speed"]["useful_tokens_per_s"]})
            print(json.dumps(runs[-1]), flush=True)
    env = env_info()
    env.update(nproc=os.cpu_count(), cpu_model=cpu_model(), loadavg_after=os.getloadavg())
    (out / "manifest.json").write_text(json.dumps(
        {"command": " ".join(["python", *sys.argv]), "common_overrides": COMMON, "modes": MODES, "rounds": rounds,
         "orders": [order(r) for r in range(rounds)], "extra": extra, "env": env, "runs": runs},
        indent=2, default=str) + "\n")
    table(out)


def forward_flops(rec: dict) -> tuple[float, float]:
    """(linear, attention) forward FLOPs of the run's timed steps, from the model's shapes in the record:
    linear 2·(L·(4d² + 2·d·d_ff) + adapter params)·tokens, attention 2·2·d·L·Σ rows·s² (QKᵀ and AV)."""
    cfg = rec["config"]["model"]
    arch = cfg["sizes"][rec["config"]["model_size"]["name"]]["arch"]
    d, ff, layers = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    n_linear = layers * (4 * d * d + 2 * d * ff) + int(rec["params"].get("added") or 0)
    s = rec["speed"]
    return 2.0 * n_linear * s["train_tokens"], 2.0 * 2.0 * d * layers * s["train_attn_pairs"]


def read_runs(out: Path) -> list[dict]:
    """One row per run folder ``r<round>-p<position>-<setting>``: the numbers the table needs."""
    rows = []
    for path in sorted((out / "runs").glob("r*-p*-*/results.json")):
        rec = json.loads(path.read_text())
        r, p, mode = path.parent.name.split("-", 2)
        s, samples = rec["speed"], rec["speed"]["train_samples_per_s"] * rec["speed"]["train_time_s"]
        lin, att = forward_flops(rec)
        rows.append({"round": int(r[1:]), "pos": int(p[1:]), "mode": mode, "time": s["train_time_s"],
                     "cpu": s.get("train_cpu_s"),
                     "samples": samples, "tokens": s["train_tokens"], "useful": s["train_useful_tokens"],
                     "lin": lin, "att": att, "val_acc": rec["metrics"].get("val/acc"),
                     "updates": rec["budget"]["optimizer_steps"]})
    if not rows:
        raise SystemExit(f"no run records under {out / 'runs'} (folders r<round>-p<position>-<setting>)")
    return rows


def _ratios(rows: list[dict], clock: str = "time") -> dict[str, list[float]]:
    """Per round, each setting's useful tokens per second (wall ``time`` or process ``cpu``) over
    fixed-64's in the same round; empty where a record lacks that clock."""
    if any(not x[clock] for x in rows):
        return {}
    base = {x["round"]: x["useful"] / x[clock] for x in rows if x["mode"] == BASE}
    out: dict[str, list[float]] = {}
    for x in sorted(rows, key=lambda x: x["round"]):
        out.setdefault(x["mode"], []).append(x["useful"] / x[clock] / base[x["round"]])
    return out


def _spread(rs: list[float]) -> str:
    return f"{statistics.median(rs):.2f}× [{min(rs):.2f}–{max(rs):.2f}]" if rs else "—"


def setting_lines(rows: list[dict]) -> tuple[list[str], dict[str, tuple]]:
    """The per-setting table, and per setting (measured median, lo, hi, FLOP-predicted, CPU-time) ratios."""
    med = statistics.median
    by = {m: [x for x in rows if x["mode"] == m] for m in MODES if any(x["mode"] == m for x in rows)}
    f0 = by[BASE][0]
    eff0 = f0["useful"] / (f0["lin"] + f0["att"])
    ratios, cpu_ratios, verdict = _ratios(rows), _ratios(rows, "cpu"), {}
    lines = [("| setting | padded tokens/sample | useful tokens/sample | fwd GFLOP/sample (attention share) | "
              "useful tokens/s (median) | achieved fwd GFLOP/s (median) | measured ratio vs fixed-64: median "
              "[min–max] | same, by process CPU time | token-count ratio | FLOP ratio | measured ÷ FLOP | val acc | "
              "updates | rounds |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, xs in by.items():
        x = xs[0]  # same seed and data: every round feeds the same batches (checked below)
        flops = x["lin"] + x["att"]
        tok = (x["useful"] / x["tokens"]) / (f0["useful"] / f0["tokens"])
        flop = (x["useful"] / flops) / eff0
        rs = ratios[mode]
        verdict[mode] = (med(rs), min(rs), max(rs), flop, _spread(cpu_ratios.get(mode, [])))
        lines.append(
            f"| {mode} | {x['tokens'] / x['samples']:.1f} | {x['useful'] / x['samples']:.1f} | "
            f"{flops / x['samples'] / 1e9:.3f} ({x['att'] / flops:.1%}) | {med([y['useful'] / y['time'] for y in xs]):.0f} | "
            f"{med([(y['lin'] + y['att']) / y['time'] for y in xs]) / 1e9:.1f} | "
            f"{_spread(rs)} | {_spread(cpu_ratios.get(mode, []))} | {tok:.2f}× | {flop:.2f}× | {med(rs) / flop:.2f} | "
            f"{', '.join(sorted({str(y['val_acc']) for y in xs}))} | {x['updates']} | {len(xs)} |")
    return lines, verdict


def round_lines(rows: list[dict]) -> list[str]:
    ratios = _ratios(rows)
    modes = [m for m in MODES if m in ratios]
    lines = ["| round | order | " + " | ".join(f"{m} useful tokens/s" for m in modes) + " | "
             + " | ".join(f"{m} ratio" for m in modes if m != BASE) + " |",
             "|---|---|" + "---|" * (2 * len(modes) - 1)]
    for r in sorted({x["round"] for x in rows}):
        xs = sorted((x for x in rows if x["round"] == r), key=lambda x: x["pos"])
        tps = {x["mode"]: x["useful"] / x["time"] for x in xs}
        lines.append(f"| {r} | {' → '.join(x['mode'] for x in xs)} | " + " | ".join(f"{tps[m]:.0f}" for m in modes)
                     + " | " + " | ".join(f"{tps[m] / tps[BASE]:.2f}" for m in modes if m != BASE) + " |")
    return lines


def verdict_lines(verdict: dict[str, tuple]) -> list[str]:
    """Is the FLOP-predicted ratio inside the measured (wall-clock) range over rounds?"""
    out = []
    for mode, (m, lo, hi, flop, cpu) in verdict.items():
        if mode == BASE:
            continue
        if lo <= flop <= hi:
            out.append(f"- {mode}: the FLOP count ({flop:.2f}×) lies within the measured range [{lo:.2f}–{hi:.2f}]: "
                       f"it is consistent with the measured gain (by process CPU time: {cpu}).")
        else:
            word = "more" if m > flop else "less"
            out.append(f"- {mode}: measured {m:.2f}× [{lo:.2f}–{hi:.2f}] is {word} than the FLOP count predicts "
                       f"({flop:.2f}×): the FLOP count does not explain it (a {m / flop:.2f}× difference in "
                       f"achieved FLOP/s between the settings; by process CPU time: {cpu}).")
    return out


def table(out: Path) -> None:
    rows = read_runs(out)
    for mode in MODES:  # the token counts assume each setting saw the same batches every round
        if len({(x["tokens"], x["useful"]) for x in rows if x["mode"] == mode}) > 1:
            raise SystemExit(f"{mode}: rounds saw different batches; the per-setting token counts would not hold")
    settings, verdict = setting_lines(rows)
    text = "\n".join(["## Per setting", "", *settings, "", "## Per round (useful tokens/s; ratio vs fixed-64 in the same round)",
                      "", *round_lines(rows), "", "## Does the FLOP count explain the measured ratio?", "",
                      *verdict_lines(verdict), ""])
    (out / "table.md").write_text(text)
    print(text)


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("run", "table"):
        raise SystemExit(__doc__)
    out = Path(sys.argv[2])
    if sys.argv[1] == "table":
        table(out)
    else:
        run(out, int(sys.argv[3]) if len(sys.argv) > 3 else 3, sys.argv[4:])


if __name__ == "__main__":
    main()
