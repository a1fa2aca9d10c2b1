"""Resolve (family config, size) → a ModelSpec, refusing unknown sizes before anything loads."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from peftbench.errors import ConfigError

AUTO_CLASSES = {"classification": "AutoModelForSequenceClassification", "causal_lm": "AutoModelForCausalLM",
                "image_text": "AutoModelForImageTextToText"}  # image_text: VisionEncoderDecoder (vision_text.py)


@dataclass
class ModelSpec:
    family: str
    size: str
    model_type: str
    arch: dict[str, Any]
    checkpoint: str | None  # hub id (users online) or local dir
    local_dir: Path | None  # an existing local copy, preferred over the hub
    from_config: bool  # random init from arch (tiny, or pretraining from scratch)
    tokenizer: str | None  # tokenizer source: hub id, local dir, or "pkg:<module>/<sub>" / "gguf:…"
    head_modules: dict[str, list[str]] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)
    layers_path: dict[str, str] = field(default_factory=dict)
    # Architecture facts of the family (its yaml), carried to methods by the ApplyContext:
    conv1d: bool = False  # projections are transformers Conv1D (GPT-2)
    past_key_values: bool = False  # attention accepts past key/values (prefix-style methods)
    positions_after_padding: bool = False  # position ids start after the pad id (RoBERTa, MPNet)
    gguf_file: str | None = None
    trust_remote_code: bool = False
    tasks: tuple[str, ...] = ("classification", "causal_lm")
    # What the classification head reads (models/heads.py): cls_pooler | cls | mean | last_token;
    # None: no classification head, or an encoder left to its HF class (its pooler if it has one, else [CLS]).
    pooling: str | None = None

    @property
    def source(self) -> str:
        if self.from_config:
            return "config"
        return str(self.local_dir) if self.local_dir else str(self.checkpoint)


def resolve_path(ref: str | None) -> Path | None:
    """``pkg:module/sub/dir`` → the folder inside an installed package; ``zipparts:<glob>`` → the
    model folder of a zip split across installed packages (joined and extracted once into the
    cache); a plain path if it exists."""
    if not ref:
        return None
    if ref.startswith("zipparts:"):
        return joined_zip_dir(ref[len("zipparts:"):])
    if ref.startswith("pkg:"):
        mod, _, sub = ref[4:].partition("/")
        spec = importlib.util.find_spec(mod) if importlib.util.find_spec is not None else None
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(list(spec.submodule_search_locations)[0]) / sub
        return p if p.exists() else None
    p = Path(os.path.expanduser(ref))
    return p if p.exists() else None


def joined_zip_dir(pattern: str, search: list[str] | None = None) -> Path | None:
    """Concatenate the parts matching ``pattern`` (a glob under a ``sys.path`` entry, e.g. the five
    all-mpnet-base-v2 wheels' ``…zip.001`` … ``.005``) in suffix order, extract the zip into
    ``<cache>/zipparts/<key>`` and return the folder holding ``config.json``; None if no part is
    installed. Atomic: a half-written extraction is never seen by another process."""
    import glob
    import hashlib
    import shutil
    import sys
    import tempfile
    import zipfile

    from peftbench.config.paths import cache_dir

    parts: list[Path] = []
    for root in search if search is not None else sys.path:
        if root and os.path.isdir(root):
            parts = sorted((Path(p) for p in glob.glob(os.path.join(root, pattern))), key=lambda p: p.suffix)
            if parts:
                break
    if not parts:
        return None
    key = hashlib.sha1("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    dest = cache_dir() / "zipparts" / key
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp", dir=dest.parent))
        try:
            joined = tmp / "joined.zip"
            with open(joined, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 24)
            with zipfile.ZipFile(joined) as z:
                z.extractall(tmp / "x")
            joined.unlink()
            try:
                os.replace(tmp / "x", dest)
            except OSError:  # another process finished first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    found = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    return found[0].parent if found else None


def _plain(x: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(x):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return x


def resolve_spec(model_cfg: Mapping[str, Any], size: str) -> ModelSpec:
    mc = _plain(model_cfg)
    family = mc.get("family", "?")
    sizes = mc.get("sizes") or {}
    if size not in sizes:
        raise ConfigError(
            f"model family '{family}' has no size '{size}'; its sizes: {', '.join(sizes)}", option="model_size"
        )
    s = sizes[size] or {}
    arch = dict(mc.get("arch_defaults") or {})
    arch.update(s.get("arch") or {})
    # A user-given local dir (model.path=…) wins over everything.
    user_path = mc.get("path")
    local = resolve_path(user_path) if user_path else resolve_path(s.get("local"))
    if user_path and local is None:
        raise ConfigError(f"model.path '{user_path}' does not exist", option="model.path")
    # from config (random init): tiny sizes, or every size when the family says so (pretraining here)
    from_config = bool(s.get("from_config", mc.get("from_config") or size == "tiny")) and not user_path
    if not from_config and local is None and not s.get("checkpoint"):
        if s.get("make_with"):  # a size produced here (e.g. pretrained gpt2_local): say how to make it
            raise ConfigError(f"size '{size}' of '{family}' is not pretrained yet ({s.get('local')} is missing); "
                              f"make it with: {s['make_with']}", option="model_size")
        raise ConfigError(f"size '{size}' of '{family}' has no checkpoint and no local copy", option="model_size")
    tok = mc.get("tokenizer_path") or s.get("tokenizer") or mc.get("tokenizer")
    tasks = tuple(mc.get("tasks") or ("classification", "causal_lm"))
    return ModelSpec(
        family=family,
        size=size,
        model_type=mc["model_type"],
        arch=arch,
        checkpoint=s.get("checkpoint"),
        local_dir=local,
        from_config=from_config,
        tokenizer=tok,
        head_modules=dict(mc.get("head_modules") or {}),
        targets=dict(mc.get("targets") or {}),
        layers_path=dict(mc.get("layers_path") or {}),
        conv1d=bool(mc.get("conv1d", False)),
        past_key_values=bool(mc.get("past_key_values", False)),
        positions_after_padding=bool(mc.get("positions_after_padding", False)),
        gguf_file=s.get("gguf_file"),
        trust_remote_code=bool(mc.get("trust_remote_code", False)),
        tasks=tasks,
        pooling=_pooling(mc, s, family, tasks),
    )


def _pooling(mc: Mapping[str, Any], size: Mapping[str, Any], family: str, tasks: tuple[str, ...]) -> str | None:
    """A size's ``pooling`` overrides its family's; a decoder family that says nothing reads its last token."""
    from peftbench.models.heads import check_pooling

    decoder = "causal_lm" in tasks
    has_head = "classification" in tasks and bool((mc.get("head_modules") or {}).get("classification"))
    pooling = size.get("pooling", mc.get("pooling"))
    if pooling is None and (decoder or not has_head):
        pooling = "last_token" if decoder and has_head else None
    elif pooling is None:
        return None  # an encoder that declares nothing keeps its HF head's reading
    return check_pooling(pooling, family, decoder, has_head)
