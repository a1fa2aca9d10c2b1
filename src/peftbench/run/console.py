"""What a run's console shows: the progress bar, the plan and the summary.

Third-party libraries print messages that are benign here and alarm a first-time user (a missing
optional CPU kernel, a deprecated property name inside peft, Lightning's adverts). Each is silenced at
its source, matched by its message *and* the module that emits it, never by category or library
wholesale, so anything new still shows. ``PEFTBENCH_VERBOSE=1`` turns every filter off.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

# (message regex, category, emitting-module regex, why it is benign here)
BENIGN_WARNINGS: tuple[tuple[str, type[Warning], str, str], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils\Z",
     "peft (peft_model.py) reads transformers' old property name; nothing of ours calls it"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree\Z",
     "Lightning's copy of torch's pytree uses the old LeafSpec"),
    (r"You defined a `validation_step` but have no `val_dataloader`", Warning,
     r"lightning\.pytorch\.trainer\.configuration_validator\Z",
     "the pipeline validates after fit (trainer.validate with its own loader); val metrics are reported"),
    (r"The `srun` command is available on your system but is not used", Warning,
     r"lightning\.fabric\.plugins\.environments\.slurm\Z",
     "a machine with SLURM tools installed; SLURM jobs (scripts/slurm.sh, the submitit launcher) use srun"),
)

# logger name → message regexes logged there (records, not warnings)
BENIGN_LOGS: dict[str, tuple[str, ...]] = {
    # bitsandbytes' CPU backend looks for an optional kernels package at import (peft imports it even
    # when nothing is quantized); 4-bit runs work without it
    "bitsandbytes.backends.cpu.ops": (r"Failed to load CPU gemm_4bit_forward",),
    # Lightning's advert for its cloud logger and the device banner of a CPU-only machine
    "lightning.pytorch.utilities.rank_zero": (
        r"💡 Tip: .*litlogger", r"GPU available: False, used: False\Z", r"(TPU|HPU) available: False",
        r"Loading `train_dataloader` to estimate number of stepping batches",
        r"`Trainer\.fit` stopped: `max_(epochs|steps)=\d+` reached",
    ),
}


class _DropMatching(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.search(msg) for p in self.patterns)


def verbose() -> bool:
    return os.environ.get("PEFTBENCH_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def quiet(weight_bars: bool = False) -> None:
    """Install the filters (idempotent). Entry points call it first: ``peftbench-train``, ``peftbench``.
    ``weight_bars=False`` also turns off transformers' per-shard "Loading weights" / "Writing model
    shards" bars (the run's own bar and summary say what happens); hub download bars stay. It imports
    transformers, so commands that must start fast (``report``, ``--help``) leave it."""
    if verbose():
        return
    for message, category, module, _why in BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, patterns in BENIGN_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) for f in logger.filters):
            logger.addFilter(_DropMatching(patterns))
    if not weight_bars:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def plan_line(plan: Any) -> str:
    """One line saying what this run will do, printed before anything loads."""
    b, tr = plan.budget, plan.cfg.trainer
    steps, epochs = tr.get("max_steps", -1), tr.get("max_epochs")
    length = " and ".join(x for x in (f"≤ {steps} steps" if steps and steps > 0 else "",
                                      f"≤ {epochs} epoch(s)" if epochs and epochs > 0 else "") if x) or "no limit"
    accum = f" × {b.accumulate_grad_batches} accumulated" if b.accumulate_grad_batches > 1 else ""
    devices = f" × {b.world_size} devices" if b.world_size > 1 else ""
    return (f"plan: {plan.spec.family} {plan.spec.size} + {plan.method.name} ({plan.method.family}) on "
            f"{plan.dataset.get('name')} [{plan.task}], seed {plan.seed} · {length}, batch {b.effective_batch_size}"
            f"{f' = {b.micro_batch_size}{accum}{devices}' if accum or devices else ''}, lr {plan.optim.get('lr')}, "
            f"{b.precision} · out {plan.out}")


def print_plan(plan: Any) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    rank_zero_only(print)(plan_line(plan), flush=True)
