"""The one set of option validators: each refuses with a ConfigError naming the option.

`not v > 0` rather than `v <= 0`: NaN compares False with everything, so the plain form lets
``optim.lr=nan`` through to the optimizer. Booleans are not numbers here (``True`` is an int).
"""

from __future__ import annotations

import math
from typing import Any

from peftbench.errors import ConfigError


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive(v: Any, option: str, allow: tuple[Any, ...] = ()) -> Any:
    """A finite number > 0 (None passes: the option is unset); values in ``allow`` pass as they are."""
    if v is None or any(v == a and type(v) is type(a) for a in allow):
        return v
    if not _number(v) or not math.isfinite(v) or not v > 0:
        raise ConfigError(f"must be a finite number > 0, got {v!r}", option=option)
    return v


def positive_int(v: Any, option: str) -> int | None:
    """An integer > 0 (None passes); 1.5 or True is refused, not rounded."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"must be a positive integer, got {v!r}", option=option)
    return v


def integer(v: Any, option: str, minimum: int | None = None, allow: tuple[Any, ...] = ()) -> int | None:
    """An integer (≥ ``minimum`` when given; None passes); 1.5, "abc" or True is refused, not rounded."""
    if v is None or v in allow and type(v) is int:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
        bound = f" ≥ {minimum}" if minimum is not None else ""
        raise ConfigError(f"must be an integer{bound}, got {v!r}", option=option)
    return v


def devices(v: Any, option: str = "trainer.devices") -> Any:
    """Lightning's ``devices``: a count > 0, -1 (all), ``auto``, or a list of device indices."""
    if v in ("auto", -1) or v is None:
        return v
    if isinstance(v, str) and v.replace(",", "").replace("-", "").isdigit():  # Lightning's "2", "0,1", "-1"
        return v
    if isinstance(v, (list, tuple)) or hasattr(v, "__len__") and not isinstance(v, str):
        if not len(v):
            raise ConfigError("must list at least one device", option=option)
        for i in v:
            integer(i, option, minimum=0)
        return v
    return integer(v, option, minimum=1)


def in_range(v: Any, option: str, lo: float, hi: float, hi_open: bool = False) -> Any:
    """A finite number in [lo, hi] (or [lo, hi) when ``hi_open``); None passes."""
    if v is None:
        return None
    ok = _number(v) and math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ConfigError(f"must be a number in [{lo}, {hi}{')' if hi_open else ']'}, got {v!r}", option=option)
    return v


def one_of(v: Any, option: str, choices: tuple[Any, ...] | list[Any]) -> Any:
    if v not in choices:
        raise ConfigError(f"must be one of {', '.join(map(str, choices))}, got {v!r}", option=option)
    return v
