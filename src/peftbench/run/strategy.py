"""The Lightning strategy of a run: single device, DDP, or FSDP (CUDA only; refused by make_plan on CPU).

Choices, and why:
- **Wrap per transformer block, found by duck typing**: the repeated layers are the children of
  an ``nn.ModuleList`` that all share one class and hold parameters (``BertLayer``,
  ``LlamaDecoderLayer``, ``GPT2Block``, …) — no per-family table of class names. The policy
  finds them on the model FSDP is about to wrap (its first call sees the root module), so the
  strategy can be built before the weights are loaded.
- **use_orig_params=True**: a PEFT block mixes frozen base weights and trainable adapters;
  without it FSDP's ``FlatParameter`` needs uniform ``requires_grad`` per unit (DESIGN pitfall).
- **Mixed precision from ``trainer.precision``**: Lightning picks ``FSDPPrecision`` for this
  strategy and derives FSDP's ``MixedPrecision`` from it, so one knob sets the precision for
  every strategy (fair comparisons).
- **Quantized bases**: FSDP flattens parameters of one dtype; 4-bit weights can only be sharded
  when bitsandbytes stores them in the compute dtype. The method says so (``Method.check_strategy``;
  QLoRA's ``quant_storage``): no method name appears here.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

from peftbench.errors import ConfigError

_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2")


def _unwrap(m: nn.Module) -> nn.Module:
    """The module under FSDP / activation-checkpoint wrappers."""
    while True:
        inner = getattr(m, "_fsdp_wrapped_module", None) or getattr(m, "_checkpoint_wrapped_module", None)
        if inner is None:
            return m
        m = inner


def transformer_block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """Classes of the repeated blocks: members of an ``nn.ModuleList`` (≥ 2) of one class with
    parameters; classes nested inside another such class (e.g. experts in a block) are dropped."""
    found: dict[type[nn.Module], list[nn.Module]] = {}
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) >= 2:
            inner = [_unwrap(c) for c in m]
            classes = {type(c) for c in inner}
            if len(classes) == 1 and any(True for _ in inner[0].parameters()):
                found.setdefault(type(inner[0]), []).extend(inner)
    nested = {c for c in found for d, mods in found.items() if d is not c
              and any(isinstance(sub, c) for mod in mods for sub in mod.modules() if sub is not mod)}
    return set(found) - nested


class BlockWrapPolicy:
    """FSDP auto-wrap policy (callable form): wrap every transformer block, found on first use."""

    def __init__(self) -> None:
        self.classes: tuple[type[nn.Module], ...] | None = None

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int = 0, **_: Any) -> bool:
        if self.classes is None:  # FSDP calls the policy on the root module first
            self.classes = tuple(transformer_block_classes(module))
            if not self.classes:
                raise ConfigError("FSDP found no repeated transformer block to wrap in this model",
                                  option="strategy.auto_wrap")
        return True if recurse else isinstance(module, self.classes)


def make_fsdp_strategy(strategy_cfg: dict[str, Any], method: Any) -> Any:
    """``FSDPStrategy`` from ``conf/strategy/fsdp.yaml`` values, after the method checks."""
    from lightning.pytorch.strategies import FSDPStrategy

    method.check_strategy("fsdp")  # e.g. QLoRA's 4-bit storage dtype (also checked by make_plan)
    sharding = str(strategy_cfg.get("sharding_strategy", "FULL_SHARD")).upper()
    if sharding not in _SHARDING:
        raise ConfigError(f"unknown sharding strategy {sharding!r} ({' | '.join(_SHARDING)})",
                          option="strategy.sharding_strategy")
    wrap = strategy_cfg.get("auto_wrap", "transformer_block")
    if wrap not in ("transformer_block", None, "none"):
        raise ConfigError(f"unknown auto_wrap {wrap!r} (transformer_block | none)", option="strategy.auto_wrap")
    kw: dict[str, Any] = {
        "sharding_strategy": sharding,
        "use_orig_params": bool(strategy_cfg.get("use_orig_params", True)),
        "cpu_offload": bool(strategy_cfg.get("cpu_offload", False)),
        "state_dict_type": strategy_cfg.get("state_dict_type", "full"),
    }
    if wrap == "transformer_block":
        kw["auto_wrap_policy"] = BlockWrapPolicy()
    if strategy_cfg.get("activation_checkpointing"):
        kw["activation_checkpointing_policy"] = BlockWrapPolicy()
    if strategy_cfg.get("backend"):
        kw["process_group_backend"] = strategy_cfg["backend"]
    return FSDPStrategy(**kw)


def make_strategy(strategy_cfg: dict[str, Any], method: Any) -> Any:
    """``auto`` for one device, ``DDPStrategy`` (unused-parameter search only where the method's
    forward may skip trainable parameters), or FSDP."""
    name = strategy_cfg.get("name", "single")
    if name in ("single", "auto"):
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        method.check_strategy("ddp")
        fu = strategy_cfg.get("find_unused_parameters", "auto")
        if fu == "auto":
            fu = bool(getattr(method, "ddp_find_unused", False))
        return DDPStrategy(find_unused_parameters=fu, process_group_backend=strategy_cfg.get("backend"),
                           start_method=strategy_cfg.get("start_method", "popen"))
    return make_fsdp_strategy(strategy_cfg, method)


def patch_lightning_hydra_relaunch() -> None:
    """Lightning relaunches DDP ranks with the parent's argv, which under ``-m`` would start the
    whole sweep again. Relaunch with this job's own overrides instead (works for -m and single runs)."""
    try:
        from lightning.fabric.strategies.launchers import subprocess_script as ss
    except ImportError:  # pragma: no cover
        return

    def _cmd(local_rank: int):
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        hc = HydraConfig.get()
        command = [sys.executable, "-m", "peftbench.train", *hc.overrides.task,
                   f"hydra.run.dir={hc.runtime.output_dir}", f"hydra.job.name=train_ddp_process_{local_rank}",
                   "hydra.output_subdir=null"]
        return command, get_original_cwd()

    ss._hydra_subprocess_cmd = _cmd


def stop_on_signals() -> None:
    """SIGTERM — a SLURM time limit, pre-emption — and SIGUSR1 — a scheduler's "time is nearly
    up" — stop the run wherever it is (loading, fitting, evaluating): recorded ``interrupted``,
    exit 143. Lightning adds its own SIGTERM handling around fit and calls this one too. Inside a
    SLURM job SIGUSR1 is left to Lightning's SLURM environment (checkpoint and requeue)."""
    import os
    import signal

    from peftbench.run.failures import Terminated

    def stop(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGUSR1") and not os.environ.get("SLURM_JOB_ID"):
        signal.signal(signal.SIGUSR1, stop)
