"""GPU-hours of a GPU-edition sweep (``conf/experiment/gpu_*.yaml``), computed before it is submitted.

Every job of the sweep is expanded (the experiment's ``hydra.sweeper.params`` and the command line's
own sweeps, as Hydra's basic sweeper would), every distinct cell (all but the seed) is composed and
planned with ``make_plan`` — the run's own refusals, no weights, no data — and costed:

  FLOPs = train tokens × (4·N + 2·N_trainable + 12·L·d·T) + eval tokens × (2·N + 4·L·d·T)

(measure/flops.py; N from the model on the meta device with the method applied; tokens from the
experiment's ``gpu_estimate`` block). The rate divides FLOPs by the FLOP/s **measured** for the
method by ``peftbench gpu-check`` (MFU × the device's bf16 peak, from reports/gpu-*/gpu.json) where
that exists, else by ``assumed_mfu`` × the peak of ``gpu_estimate.device``; each job adds
``job_overhead_min``. The table says which rate each row used.

    python -m peftbench.cli.gpu_estimate experiment=gpu_glue [more overrides]
``peftbench-train -m experiment=gpu_glue`` prints the same table first (``EstimateCallback``).
"""

from __future__ import annotations

import glob
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.errors import ConfigError
from peftbench.measure.flops import flops_per_token, peak_bf16_flops


@dataclass
class Cell:
    """One distinct configuration of the sweep (its seeds are its jobs)."""

    overrides: tuple[str, ...]
    jobs: int
    label: str = ""
    row: dict[str, Any] | None = None


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def sweep_config(overrides: Sequence[str]) -> Any:
    """The composed config with its ``hydra`` node (the sweeper's params), plain overrides only."""
    from hydra import compose, initialize_config_dir

    from peftbench.config.paths import conf_dir

    plain = [o.input_line for o in _parse(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=plain, return_hydra_config=True)


def expand(overrides: Sequence[str], params: dict[str, Any]) -> list[list[str]]:
    """Every job's overrides: the sweeper's params, then the command line (which wins on a key)."""
    parsed = _parse([f"{k}={v}" for k, v in params.items()] + list(overrides))
    axes: dict[str, list[str]] = {}
    for o in parsed:  # later (command line) replaces earlier (params) for the same key
        key = o.input_line.split("=", 1)[0]
        axes.pop(key, None)
        vals = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes[key] = [f"{key}={v}" for v in vals]
    return [list(combo) for combo in itertools.product(*axes.values())]


def cells(overrides: Sequence[str]) -> tuple[Any, list[Cell]]:
    """The sweep's distinct cells (seed left out), with their number of jobs."""
    cfg = sweep_config(overrides)
    params = dict(cfg.hydra.sweeper.get("params") or {})
    out: dict[tuple[str, ...], Cell] = {}
    for job in expand(overrides, params):
        key = tuple(o for o in job if not o.lstrip("+~").startswith(("seed=", "hydra.", "hydra/")))
        if key not in out:
            out[key] = Cell(key, 0, " ".join(o for o in key if not o.startswith("experiment=")))
        out[key].jobs += 1
    return cfg, list(out.values())


def measured_rates(pattern: str = "reports/gpu-*/gpu.json") -> dict[str, tuple[float, str]]:
    """Method → (achieved FLOP/s, source) from gpu-check reports: MFU × peak of the methods group."""
    rates: dict[str, tuple[float, str]] = {}
    for f in sorted(glob.glob(pattern)):
        data = json.loads(Path(f).read_text())
        if (data.get("meta") or {}).get("dry_run"):
            continue  # a CPU dry run measures no GPU
        for r in data.get("rows", []):
            if r.get("group") == "methods" and r.get("status") == "ok" and r.get("mfu") and r.get("peak_flops"):
                rates[r["method"]] = (r["mfu"] * r["peak_flops"], f"measured {data['meta'].get('device')} ({f})")
    return rates


def plan_cell(cell: Cell, cuda: bool) -> Any:
    """``make_plan`` of the cell without data; on a machine without CUDA, as a CPU run (the GPU-only
    checks are the device's; every other refusal applies)."""
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan

    extra = [] if cuda else ["trainer.accelerator=cpu"]
    return make_plan(compose([*cell.overrides, *extra]), load_data=False)


_META: dict[tuple, Any] = {}


def model_flops(plan: Any) -> dict[str, int]:
    """Matmul weights (all, trainable) of the planned model with its method, on the meta device."""
    import copy

    import torch

    from peftbench.measure.flops import matmul_params
    from peftbench.models import meta_model

    key = (plan.spec.family, plan.spec.size, plan.task, plan.num_labels)
    if key not in _META:
        _META[key] = meta_model(plan.spec, plan.task, plan.num_labels)
    with torch.device("meta"):
        model = plan.method.apply(copy.deepcopy(_META[key]), plan.ctx)
    return matmul_params(model)


def _table(est: dict[str, Any], name: str) -> dict[str, Any]:
    ds = plan_name = est["dataset"]
    table = est["cfg"].get(name) or {}
    if plan_name not in table:
        raise ConfigError(f"gpu_estimate.{name} has no entry for dataset '{ds}'", option=f"gpu_estimate.{name}")
    return table[plan_name]


def cost(plan: Any, mm: dict[str, int], est: dict[str, Any], rates: dict[str, tuple[float, str]]) -> dict[str, Any]:
    """Tokens, FLOPs and GPU-hours of one job of the cell."""
    cfg, g = plan.cfg, est["cfg"]
    tpe = float(_table(est, "tokens_per_example"))
    steps, batch = int(cfg.trainer.max_steps), int(cfg.data.get("effective_batch_size") or cfg.data.batch_size)
    epochs = float(cfg.trainer.max_epochs) if steps <= 0 else steps * batch / float(_table(est, "train_examples"))
    train_tokens = epochs * float(_table(est, "train_examples")) * tpe
    eval_tokens = epochs * float(g.get("evals_per_epoch", 1)) * float(_table(est, "eval_examples")) * tpe
    args = (plan.ctx.num_layers, plan.ctx.hidden_size, int(tpe))
    flops = train_tokens * flops_per_token(mm["all"], mm["trainable"], *args) + \
        eval_tokens * flops_per_token(mm["all"], mm["trainable"], *args, training=False)
    peak = peak_bf16_flops(str(g.get("device", "H100")))
    if plan.method.name in rates:
        rate, source = rates[plan.method.name]
    else:
        if peak is None:
            raise ConfigError(f"gpu_estimate.device={g.get('device')!r} is not in measure/flops.py's peak table",
                              option="gpu_estimate.device")
        rate, source = float(g.get("assumed_mfu", 0.3)) * peak, f"assumed MFU {g.get('assumed_mfu', 0.3)} × {g.get('device')} peak"
    hours = flops / rate / 3600 + float(g.get("job_overhead_min", 0)) / 60
    return {"epochs": epochs, "lr": float(plan.optim["lr"]), "train_tokens": train_tokens, "flops": flops,
            "trainable": mm["trainable"], "params": mm["all"], "gpu_hours": hours, "rate_source": source}


def estimate(overrides: Sequence[str], rates: dict[str, tuple[float, str]] | None = None) -> dict[str, Any]:
    """Plan and cost every cell of the sweep the overrides describe (e.g. ``["experiment=gpu_glue"]``)."""
    import torch
    from omegaconf import OmegaConf

    cfg, found = cells(overrides)
    if cfg.get("gpu_estimate") is None:
        raise ConfigError("this configuration has no gpu_estimate block (see conf/experiment/gpu_glue.yaml)",
                          option="gpu_estimate")
    g = OmegaConf.to_container(cfg.gpu_estimate, resolve=True)
    rates = measured_rates() if rates is None else rates
    cuda = torch.cuda.is_available()
    for c in found:
        plan = plan_cell(c, cuda)
        c.row = cost(plan, model_flops(plan), {"cfg": g, "dataset": plan.dataset["name"]}, rates)
    total = sum(c.row["gpu_hours"] * c.jobs for c in found)
    return {"cells": found, "jobs": sum(c.jobs for c in found), "gpu_hours": total, "planned_on": "cuda" if cuda else "cpu",
            "settings": g}


def render(est: dict[str, Any]) -> str:
    """The table printed before submission."""
    lines = ["GPU-hours estimate (peftbench.cli.gpu_estimate; FLOPs = tokens × (4N + 2N_trainable + attention))", "",
             "| cell | jobs | epochs | lr | trainable | train tokens/job | PFLOP/job | GPU-h/job | GPU-h | rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in est["cells"]:
        r = c.row
        lines.append(f"| {c.label} | {c.jobs} | {r['epochs']:g} | {r['lr']:g} | {r['trainable']:,} | "
                     f"{r['train_tokens']:.3g} | {r['flops'] / 1e15:.3g} | {r['gpu_hours']:.3g} | "
                     f"{r['gpu_hours'] * c.jobs:.3g} | {r['rate_source']} |")
    lines += ["", (f"{est['jobs']} jobs in {len(est['cells'])} cells: about {est['gpu_hours']:.1f} GPU-hours "
              f"(every cell planned with make_plan on {est['planned_on']}; tokens per example and overhead: "
              "the experiment's gpu_estimate block).")]
    return "\n".join(lines)


try:  # a Hydra callback where hydra-core is installed (it is a peftbench dependency)
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


class EstimateCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """``hydra.callbacks``: prints the estimate at the start of a multirun, before any job is launched.
    In its own process: composing inside a running Hydra app is refused (GlobalHydra is initialised)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        import subprocess

        overrides = list(config.hydra.overrides.task)
        subprocess.run([sys.executable, "-m", "peftbench.cli.gpu_estimate", *overrides], check=False)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    print(render(estimate(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
