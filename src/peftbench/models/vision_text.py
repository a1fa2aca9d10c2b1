"""Vision–text models (task ``image_text``): a ``VisionEncoderDecoderModel`` — an image encoder and a
text decoder with cross-attention — from the family's ``arch: {encoder: {...}, decoder: {...}}``,
each a transformers config (``model_type`` + its fields). Random weights (``tiny``, from config):
no image–text checkpoint exists offline. loading.py builds, saves and loads it like any family.
"""

from __future__ import annotations

from typing import Any

from peftbench.errors import ConfigError
from peftbench.models.spec import ModelSpec


def vlm_config(spec: ModelSpec, vocab_size: int | None = None, pad_token_id: int | None = None) -> Any:
    """The composite config; the decoder gets the tokenizer's vocabulary. The decoder's layer count,
    width, heads and positions are also set on the top level, where the apply context reads them."""
    from transformers import AutoConfig, VisionEncoderDecoderConfig

    parts = {k: dict(spec.arch.get(k) or {}) for k in ("encoder", "decoder")}
    for k, part in parts.items():
        if "model_type" not in part:
            raise ConfigError(f"{spec.family}/{spec.size}: arch.{k} needs a model_type", option="model.sizes")
    dec = parts["decoder"]
    if vocab_size is not None:
        dec["vocab_size"] = vocab_size
    if pad_token_id is not None:
        dec["pad_token_id"] = pad_token_id
    try:
        enc_cfg = AutoConfig.for_model(parts["encoder"].pop("model_type"), **parts["encoder"])
        dec_cfg = AutoConfig.for_model(dec.pop("model_type"), is_decoder=True, add_cross_attention=True, **dec)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"bad architecture values for {spec.family}/{spec.size}: {e}", option="model.sizes") from e
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
    cfg.pad_token_id = pad_token_id
    text = dec_cfg.get_text_config()
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "max_position_embeddings"):
        setattr(cfg, key, getattr(text, key, None))
    return cfg


def set_token_ids(model: Any, tokenizer: Any) -> None:
    """Captions start from the tokenizer's BOS (else EOS) and end with its EOS; set where the
    loss (label shifting) and ``generate`` read them."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.bos_token_id = start, start
        cfg.pad_token_id, cfg.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id


def image_size(cfg: Any) -> int | None:
    """The encoder's input resolution (images must be resized to it)."""
    size = getattr(getattr(cfg, "encoder", None), "image_size", None)
    return int(size) if size is not None else None


def check_image_size(cfg: Any, size: Any) -> None:
    """The data's image size against the model's encoder (a ViT's patch grid is fixed), before weights."""
    want = image_size(cfg)
    if want is not None and size is not None and int(size) != want:
        raise ConfigError(f"images are resized to {size} but the model's encoder takes {want}x{want}",
                          option="dataset.image_size")
