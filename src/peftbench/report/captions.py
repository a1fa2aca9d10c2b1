"""What each plot shows, by file stem: the figure captions of report.md and report.html.

make_plots fills ``CAPTIONS`` as it draws; a plot file from elsewhere falls back to its name.
"""

from __future__ import annotations

from pathlib import Path

CAPTIONS: dict[str, str] = {}


def caption(path: Path) -> str:
    return CAPTIONS.get(Path(path).stem, Path(path).stem.replace("_", " "))
