"""The Method protocol and the helpers every method shares.

A method is a dataclass of its hyper-parameters with one ``apply(model, ctx)``: it transforms a
Hugging Face model in place (or wraps it) and leaves ``requires_grad`` set on exactly what trains.
The LightningModule never names a method; it only asks the method to apply, save and load.

Framework rule — the task head trains: on a classification task the head is new (models/heads.py),
so every method trains it unless it declares otherwise (class attribute ``trains_head = False``, or
a ``train_head`` hyper-parameter set false). Every subclass's ``apply`` is wrapped when the class is
defined (``__init_subclass__``), so the rule holds wherever a method is applied — a run, ``params``,
``load``, a test — and a plugin that never mentions the head still trains it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from peftbench.config.checks import positive
from peftbench.errors import ConfigError
from peftbench.models.context import ApplyContext  # re-exported: methods and plugins import it from here

FAMILIES = ("additive", "selective", "reparameterized", "hybrid")
TASKS = ("classification", "causal_lm")


@dataclass
class Method:
    """Base for all methods. Subclasses are dataclasses; their fields are the hyper-parameters."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line: what trains
    tasks: ClassVar[tuple[str, ...]] = TASKS
    freezes_base: ClassVar[bool] = True
    supports_merge: ClassVar[bool] = False
    # DDP: methods whose forward may skip trainable parameters need find_unused_parameters.
    ddp_find_unused: ClassVar[bool] = False
    supports_grad_checkpointing: ClassVar[bool] = True
    # Classification: the (new) task head trains too — the framework rule above. False: the method
    # decides alone what of the head trains (a per-run ``train_head`` field overrides this).
    trains_head: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("apply")
        if own is not None and not getattr(own, "_trains_head_rule", False):
            cls.apply = _with_head_rule(own)  # type: ignore[method-assign]

    def head_trains(self) -> bool:
        """Does this configuration train the task head (classification)?"""
        return bool(getattr(self, "train_head", type(self).trains_head))

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Method":
        """Build from the ``method`` config group; unknown keys are refused by name."""
        # `optim` is the one shared key: a method may declare its own optimizer settings (e.g. a
        # learning rate), which the run merges over the global `optim` block and records.
        data = {k: v for k, v in dict(cfg).items() if k not in ("name", "family", "_target_", "optim")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"method '{cls.name}' has no option(s) {unknown}; its options: {sorted(known)}",
                option=f"method.{unknown[0]}",
            )
        for f in dataclasses.fields(cls):
            if f.name in data:
                _check_type(data[f.name], f.type, f"method.{f.name}")
        return cls(**data)

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- checks before any weight is loaded --------------------------------------------------
    def check(self, ctx: ApplyContext) -> None:
        """Refuse combinations that cannot work, naming the option. Called before loading weights."""
        if ctx.task not in self.tasks:
            raise ConfigError(
                f"method '{self.name}' does not support task '{ctx.task}' (supports {list(self.tasks)})",
                option="method",
            )

    def check_strategy(self, strategy: str) -> None:
        """Refuse a distributed strategy (``ddp`` | ``fsdp``) this configuration cannot run under,
        naming the option. Capabilities, not names: the strategy code never asks which method."""

    def train_optimizer(self, optim: dict[str, Any]) -> dict[str, Any]:
        """The optimizer block this method trains with: the run's, unless the method's paper
        prescribes another (QLoRA's paged AdamW on CUDA). Recorded in results.json."""
        return optim

    def load_kwargs(self, ctx: ApplyContext) -> dict[str, Any]:
        """Extra ``from_pretrained`` kwargs the method needs at load time (e.g. 4-bit quantization)."""
        return {}

    # ---- the transformation ----------------------------------------------------------------
    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        raise NotImplementedError

    # ---- what must be saved to rebuild the fine-tuned model from the base -------------------------
    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}

    def save(self, model: nn.Module, out_dir: str | Path) -> list[Path]:
        """Default: trainable tensors as safetensors + method.json. peft methods override."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = self.trainable_state(model)
        save_file(state, str(out / "adapter_model.safetensors"))
        (out / "method.json").write_text(json.dumps({"name": self.name, "hparams": self.hparams()}, indent=2, default=str))
        return [out / "adapter_model.safetensors", out / "method.json"]

    def load(self, base: nn.Module, in_dir: str | Path, ctx: ApplyContext) -> nn.Module:
        """Apply to a fresh base, then load the saved trainable state onto it."""
        from safetensors.torch import load_file

        model = self.apply(base, ctx)
        state = load_file(str(Path(in_dir) / "adapter_model.safetensors"))
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise ConfigError(f"saved state has tensors the model lacks: {sorted(missing)[:3]}", option="method")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)
        return model

    def on_train_step_end(self, model: nn.Module, step: int) -> None:
        """Per-step hook (after optimizer.step, before zero_grad); the LightningModule calls it for
        every method. No-op by default; AdaLoRA re-allocates ranks here."""

    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the update into the base weights (no added parameters at inference)."""
        raise NotImplementedError(f"method '{self.name}' has no merge")


# ---- shared helpers ------------------------------------------------------------------------------


def _with_head_rule(apply: Any) -> Any:
    """``apply`` followed by the head rule (idempotent: a subclass calling ``super().apply`` is fine)."""

    @functools.wraps(apply)
    def wrapped(self: Method, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        out = apply(self, model, ctx)
        if ctx.task == "classification" and self.head_trains():
            train_head(out, ctx.head_modules)
        return out

    wrapped._trains_head_rule = True  # type: ignore[attr-defined]
    return wrapped


def head_parameters(model: nn.Module, heads: list[str]) -> dict[str, nn.Parameter]:
    """The task head's parameters by name: the outermost modules named like ``heads`` (suffix match),
    less peft's frozen ``original_module`` copy of a ``modules_to_save`` head (forward uses the copy)."""
    found: dict[str, nn.Parameter] = {}
    roots = [n for n in matching_modules(model, heads) if n]
    roots = [r for r in roots if not any(r.startswith(o + ".") for o in roots)]
    modules = dict(model.named_modules())
    for r in roots:
        for n, p in modules[r].named_parameters(prefix=r):
            if ".original_module." not in n:
                found[n] = p
    return found


def train_head(model: nn.Module, heads: list[str]) -> int:
    """Make the task head trainable unless some of it already trains (the method, e.g. peft's
    ``modules_to_save``, chose what); returns the number of scalars unfrozen."""
    params = head_parameters(model, heads)
    if not params or any(p.requires_grad for p in params.values()):
        return 0
    for p in params.values():
        p.requires_grad_(True)
    return sum(p.numel() for p in params.values())


def _check_type(value: Any, annotation: Any, option: str) -> None:
    """A value against its field's plain type (``int``, ``float``, ``bool``, ``str``): ``r=0.5`` or
    ``alpha=true`` is refused by name instead of failing inside the library (or being rounded)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}.get(kind)
    if ok is not None and value is not None and not ok(value):
        raise ConfigError(f"must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}", option=option)



def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_modules(model: nn.Module, names: list[str]) -> int:
    """Unfreeze every module whose qualified name ends with one of ``names``; returns count."""
    n = 0
    for mod_name, mod in model.named_modules():
        if any(mod_name == x or mod_name.endswith("." + x) for x in names):
            for p in mod.parameters():
                p.requires_grad_(True)
            n += 1
    return n


def matching_modules(model_or_names: nn.Module | list[str], targets: list[str] | str) -> list[str]:
    """Names of modules matched by ``targets`` (suffix names, or one regex string) — the same rule
    as peft's ``target_modules`` so our own methods and peft agree on what a target means."""
    names = (
        [n for n, _ in model_or_names.named_modules()]
        if isinstance(model_or_names, nn.Module)
        else list(model_or_names)
    )
    if isinstance(targets, str):
        rx = re.compile(targets)
        return [n for n in names if rx.fullmatch(n)]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


def resolve_targets(targets: list[str] | str | None, ctx: ApplyContext, default_key: str = "attention") -> list[str] | str:
    if targets is None or targets == "auto":
        if default_key not in ctx.targets:
            raise ConfigError(
                f"model family '{ctx.family}' declares no default '{default_key}' targets; set method.target_modules",
                option="method.target_modules",
            )
        return list(ctx.targets[default_key])
    if isinstance(targets, str) and targets in ctx.targets:
        return list(ctx.targets[targets])
    return list(targets) if not isinstance(targets, str) else targets


def require_positive(**values: Any) -> None:
    """Refuse non-positive numeric hyper-parameters, naming the option."""
    for key, v in values.items():
        positive(v, f"method.{key}")
