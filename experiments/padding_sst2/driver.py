"""Fixed padding (64) vs dynamic padding vs length grouping, MiniLM-L6 + LoRA on SST-2.

The three settings run interleaved round by round in one process, so load on a shared machine
hits all of them alike; every run has the same seed, data subset and number of optimizer updates.
Usage: python experiments/padding_sst2/driver.py OUT_DIR [ROUNDS] [extra overrides...]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

MODES = {
    "fixed-64": ["dataset.padding=max_length"],
    "dynamic": ["dataset.padding=dynamic"],
    "length-grouped": ["dataset.padding=dynamic", "dataset.group_by_length=true"],
}
COMMON = ["model=minilm", "model_size=l6", "method=lora", "dataset=sst2", "seed=1",
          "dataset.train_limit=1000", "dataset.val_limit=400", "dataset.max_length=64", "data.batch_size=16", "data.eval_batch_size=64",
          "trainer.max_steps=40", "trainer.max_epochs=-1", "logger=none", "trainer.enable_progress_bar=false",
          "measure.inference_overhead=false", "measure.changed=false", "measure.warmup_steps=3"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    from peftbench.config.compose import compose
    from peftbench.run.record import env_info
    from peftbench.train import train

    out = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    extra = sys.argv[3:]
    rows: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode, ov in MODES.items():
            cfg = compose([*COMMON, *ov, *extra], output_dir=str(out / "runs" / f"r{r}-{mode}"))
            rec = train(cfg)
            if rec["status"] != "ok":
                raise SystemExit(f"{mode} round {r}: {rec['status']}: {rec['error']}")
            s, m = rec["speed"], rec["metrics"]
            rows[mode].append({"round": r, "useful_tokens_per_s": s["useful_tokens_per_s"],
                               "train_tokens_per_s": s["train_tokens_per_s"], "padding_fraction": s["padding_fraction"],
                               "samples_per_s": s["train_samples_per_s"], "step_time_median_s": s["step_time_median_s"],
                               "val_acc": m.get("val/acc"), "val_loss": m.get("val/loss"),
                               "optimizer_steps": rec["budget"]["optimizer_steps"], "run_id": rec["run_id"]})
            print(mode, r, json.dumps(rows[mode][-1]), flush=True)
    base = statistics.median(x["useful_tokens_per_s"] for x in rows["fixed-64"])
    lines = ["| setting | useful tokens/s (median) | all tokens/s (median) | padding fraction | samples/s | "
             "useful tokens/s vs fixed-64 | per-round ratio | val acc | val loss | updates |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base_by_round = {x["round"]: x["useful_tokens_per_s"] for x in rows["fixed-64"]}
    for mode, xs in rows.items():
        med = lambda k: statistics.median(x[k] for x in xs)  # noqa: E731
        per_round = " / ".join(f"{x['useful_tokens_per_s'] / base_by_round[x['round']]:.2f}" for x in xs)
        accs = sorted({round(x["val_acc"], 4) for x in xs})
        lines.append(f"| {mode} | {med('useful_tokens_per_s'):.0f} | {med('train_tokens_per_s'):.0f} | "
                     f"{med('padding_fraction'):.3f} | {med('samples_per_s'):.1f} | "
                     f"{med('useful_tokens_per_s') / base:.2f}× | {per_round} | {', '.join(map(str, accs))} | "
                     f"{med('val_loss'):.4f} | {xs[0]['optimizer_steps']} |")
    env = env_info()
    env.update(nproc=os.cpu_count(), cpu_model=cpu_model(), loadavg=os.getloadavg())
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "manifest.json").write_text(json.dumps({"common_overrides": COMMON, "modes": MODES, "rounds": rounds,
                                                   "extra": extra, "env": env, "runs": rows}, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
