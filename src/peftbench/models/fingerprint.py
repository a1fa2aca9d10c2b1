"""Which base weights a run started from, so two runs on different weights behind one name can be told
apart: the weight files a run loads are hashed (``sha256:…``); a hub checkpoint not in the local cache
names its commit instead.

A path in the config says where the weights were, not what they were: a rebuilt local model (the
gpt2_local ladder pretrained again on another machine) keeps its path and changes its numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from peftbench.models.spec import ModelSpec

log = logging.getLogger("peftbench")

# the files transformers loads, in the order it prefers them (a hub-style folder may hold a .bin copy,
# TF or ONNX files beside the safetensors); a sharded checkpoint is its index's shards
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PREFERRED = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
# a Trainer's output folder: run state, not weights (training_args.bin holds paths and timestamps)
NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state", "scaler")
_CHUNK = 1 << 20


def weight_files(folder: Path) -> list[Path]:
    """The weight files transformers would load from ``folder`` (top level only)."""
    for index in INDEXES:
        if (folder / index).is_file():
            shards = json.loads((folder / index).read_text()).get("weight_map", {}).values()
            return [folder / s for s in sorted(set(shards))]
    for name in PREFERRED:
        if (folder / name).is_file():
            return [folder / name]
    top = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(NOT_WEIGHTS))
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
    return _digest(tuple((str(p), str(p.relative_to(base)), _stamp(p)) for p in files))


def _stamp(p: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten: ctime cannot be set back (mtime can, by os.utime), and a
    new file is a new inode."""
    st = os.stat(p)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


@functools.lru_cache(maxsize=16)
def _digest(files: tuple[tuple[str, str, tuple[int, ...]], ...]) -> str:
    """Keyed on each file's stamp: a multirun in one process hashes a 400 MB encoder once."""
    h = hashlib.sha256()
    for path, rel, _ in files:
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def weights_digest(spec: ModelSpec, model: Any = None) -> str | None:
    """The run's base weights: a local copy's digest (its GGUF file where it is one), a hub checkpoint's
    cached snapshot's digest (the same bytes as a local copy of it name the same weights), else
    ``hub:<id>@<commit>``; None for a from-config model, whose random init its config and seed name.
    Never raises: a file that cannot be read leaves the weights unnamed, not the run failed."""
    if spec.from_config:
        return None
    try:
        if spec.local_dir is not None:
            return folder_digest(spec.local_dir / spec.gguf_file if spec.gguf_file else spec.local_dir)
        if spec.checkpoint and Path(spec.checkpoint).is_dir():
            return folder_digest(spec.checkpoint)
        commit = getattr(getattr(model, "config", None), "_commit_hash", None)
        if not (commit and spec.checkpoint):
            return None
        return _hub_snapshot_digest(spec.checkpoint, commit) or f"hub:{spec.checkpoint}@{commit}"
    except OSError as e:
        log.warning("could not hash the base weights of %s (%s): the record leaves model.weights empty",
                    spec.source, e)
        return None


def _hub_snapshot_digest(repo: str, commit: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return folder_digest(snapshot_download(repo, revision=commit, local_files_only=True))
    except Exception:  # noqa: BLE001 - not (fully) cached, or no hub client: fall back to the commit
        return None


def saved_digest(folder: Path) -> str | None:
    """A just-saved model's digest, for the record; a read error leaves it unnamed (the run stands)."""
    try:
        return folder_digest(folder)
    except OSError as e:
        log.warning("could not hash the saved model in %s (%s)", folder, e)
        return None
