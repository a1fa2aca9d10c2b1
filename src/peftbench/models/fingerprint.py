"""Which base weights a run started from, so two runs on different weights behind one name can be told
apart: a local folder's weight files are hashed (``sha256:…``), a hub checkpoint names its commit.

A path in the config says where the weights were, not what they were: a rebuilt local model (the
gpt2_local ladder pretrained again on another machine) keeps its path and changes its numbers.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from peftbench.models.spec import ModelSpec

# in the order transformers prefers them: a hub-style folder holding safetensors and .bin (and TF,
# ONNX copies) is hashed by the files that load, not by every copy
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
_CHUNK = 1 << 20


def weight_files(folder: Path) -> list[Path]:
    """The top-level weight files of the first kind the folder has (sharded ones all count)."""
    top = sorted(p for p in folder.iterdir() if p.is_file())
    for suffix in WEIGHT_SUFFIXES:
        if hits := [p for p in top if p.name.endswith(suffix)]:
            return hits
    return []


def folder_digest(folder: str | Path) -> str | None:
    """``sha256:<hex>`` over the weight files' relative names and bytes; None without weight files."""
    folder = Path(folder)
    files = weight_files(folder) if folder.is_dir() else [folder] if folder.is_file() else []
    if not files:
        return None
    base = folder if folder.is_dir() else folder.parent
    return _digest(tuple((str(p), str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=16)
def _digest(files: tuple[tuple[str, str, int, int], ...]) -> str:
    """Keyed on (path, size, mtime): a multirun in one process hashes a 400 MB encoder once."""
    h = hashlib.sha256()
    for path, rel, _, _ in files:
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def weights_digest(spec: ModelSpec, model: Any = None) -> str | None:
    """The run's base weights: a local copy's digest (its GGUF file where it is one), else the hub
    commit transformers loaded (``hub:<id>@<commit>``); None for a from-config model, whose random
    init the config and seed already name."""
    if spec.from_config:
        return None
    if spec.local_dir is not None:
        return folder_digest(spec.local_dir / spec.gguf_file if spec.gguf_file else spec.local_dir)
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return f"hub:{spec.checkpoint}@{commit}" if commit and spec.checkpoint else None
