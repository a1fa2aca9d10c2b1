"""Method registry: built-ins register by decorator, plugins through the
``peftbench.methods`` entry-point group (``pip install peftbench-foo`` makes ``method=foo`` work)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

from peftbench.errors import ConfigError

if TYPE_CHECKING:
    from peftbench.methods.base import Method

_METHODS: dict[str, type["Method"]] = {}
# Built-in method modules, imported lazily so `peftbench list` and the registry stay cheap.
_BUILTIN_MODULES = [
    "full", "head_only", "bitfit", "layers", "diff_pruning",
    "lora", "adalora", "qlora", "lora_variants",
    "prompt_tuning", "prefix_tuning", "p_tuning", "p_tuning_v2",
    "adapters", "adapter_drop", "adapter_fusion", "ia3",
    "mam", "unipelt", "peft_generic",
]
_loaded = False


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: ``@register_method("lora")``."""

    def deco(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"peftbench.methods.{mod}")
        except ModuleNotFoundError as e:  # a built-in not written yet must not break the others
            if e.name != f"peftbench.methods.{mod}":
                raise
    for ep in entry_points(group="peftbench.methods"):
        obj = ep.load()
        if isinstance(obj, type) and ep.name not in _METHODS:
            register_method(ep.name)(obj)


def available_methods() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get_method(name: str) -> type["Method"]:
    _load_all()
    if name not in _METHODS:
        raise ConfigError(
            f"unknown method '{name}'; available: {', '.join(sorted(_METHODS))}", option="method"
        )
    return _METHODS[name]
