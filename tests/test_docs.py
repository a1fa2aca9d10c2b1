"""The documentation's runnable code blocks (a fenced ```bash block right after a
`<!-- runnable -->` line, in README.md and docs/*.md) run exactly as written and succeed.

Blocks of one page run in order in one scratch folder (a later block may use what an earlier one
made), offline, with the peftbench commands of this interpreter's environment on PATH, and with
`tests/` and `examples/` linked in so repo-relative paths in the docs resolve.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]
BLOCK = re.compile(r"^<!--\s*runnable\s*-->\s*\n```(?:bash|sh|console)\s*\n(.*?)^```", re.M | re.S)


def runnable_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_the_marker_is_parsed():
    text = "x\n<!-- runnable -->\n```bash\necho hi\n```\n```bash\nnot me\n```\n"
    assert runnable_blocks(text) == ["echo hi\n"]


def test_every_doc_link_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runnable_blocks(page, tmp_path, data_dir):
    for name in ("tests", "examples", "conf", "experiments"):
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "PEFTBENCH_DATA_DIR": str(data_dir), "PEFTBENCH_LOG_DIR": str(tmp_path / "outputs")}
    for i, block in enumerate(runnable_blocks(page.read_text(encoding="utf-8"))):
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=1200)
        assert p.returncode == 0, (f"{page.name} block {i + 1} failed (rc {p.returncode}):\n{block}\n"
                                   f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
