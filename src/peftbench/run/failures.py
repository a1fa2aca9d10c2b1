"""Map an exception from a run to a results.json status."""

from __future__ import annotations


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def classify(e: BaseException) -> str:
    if isinstance(e, Diverged):
        return "diverged"
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError":
        return "oom"
    return "failed"
