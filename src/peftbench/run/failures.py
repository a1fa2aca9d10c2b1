"""Map an exception from a run to a results.json status."""

from __future__ import annotations


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Terminated(SystemExit):
    """SIGTERM (or SIGUSR1) reached the process: the run is recorded ``interrupted``, exit 143."""

    def __init__(self) -> None:
        super().__init__(143)


def classify(e: BaseException) -> str:
    if isinstance(e, Diverged):
        return "diverged"
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError":
        return "oom"
    return "failed"
