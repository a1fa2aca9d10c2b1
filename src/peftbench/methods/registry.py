"""Method registry. Built-ins are found the way plugins are, with no list to keep:

- **built-in**: every public module of the ``peftbench.methods`` package (a name not starting with
  ``_``) is imported, and the ``@register_method("<name>")`` decorators it runs register its
  method. The convention, checked by tests/test_registry.py: one registered name per module, the
  module named after it (``lora.py`` registers ``lora``); shared code lives in private ``_*.py``
  helpers, and the shared bases (``base``, ``peft_base``) and this module register nothing. So an
  in-tree method is two new files: ``src/peftbench/methods/<name>.py`` + ``conf/method/<name>.yaml``.
- **plugin**: the ``peftbench.methods`` entry-point group (``pip install peftbench-foo`` makes
  ``method=foo`` work); a built-in of the same name wins.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

from peftbench.errors import ConfigError

if TYPE_CHECKING:
    from peftbench.methods.base import Method

_METHODS: dict[str, type["Method"]] = {}
_loaded = False


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Class decorator: ``@register_method("lora")``."""

    def deco(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def builtin_modules() -> list[str]:
    """The public modules of the ``peftbench.methods`` package, by name."""
    pkg = importlib.import_module("peftbench.methods")
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in builtin_modules():
        importlib.import_module(f"peftbench.methods.{mod}")
    for ep in entry_points(group="peftbench.methods"):
        if ep.name not in _METHODS:
            obj = ep.load()
            if isinstance(obj, type):
                register_method(ep.name)(obj)
    _loaded = True


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
