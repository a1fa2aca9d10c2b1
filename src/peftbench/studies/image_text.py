"""Seed study 4: image–text (VisualGLM-style) LoRA on a tiny vision–language model.

The model is ``transformers.VisionEncoderDecoderModel`` built from config (random weights; no
image–text weights exist offline): a tiny ViT encoder + a tiny GPT-2 decoder with cross-attention.
LoRA (peft) goes on the decoder's attention projections only (self- and cross-attention ``c_attn``
/ ``q_attn``); the vision encoder and the rest stay frozen, as in VisualGLM's LoRA recipe.
Quality: corpus BLEU of greedy captions on a held-out slice, computed with ``sacrebleu``
(``evaluate``'s ``bleu`` loads its metric script from the hub, which fails offline).

The training loop is a plain PyTorch loop: the batches carry ``pixel_values`` rather than the text
tasks' ``input_ids``, and a few dozen steps need none of the Trainer's machinery.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError

DECODER_ATTN = r"decoder\.transformer\.h\.\d+\.(attn|crossattention)\.(c_attn|q_attn)"


def build_vlm(tok, image_size: int, patch: int, hidden: int, layers: int, heads: int, seed: int):
    import torch
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    enc = ViTConfig(image_size=image_size, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                    num_attention_heads=heads, intermediate_size=hidden * 2)
    dec = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=heads, n_positions=64,
                     add_cross_attention=True, is_decoder=True, bos_token_id=tok.bos_token_id or tok.eos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = dec.bos_token_id
    cfg.pad_token_id, cfg.eos_token_id = tok.pad_token_id, tok.eos_token_id
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return VisionEncoderDecoderModel(config=cfg)


def caption_labels(tok, texts: list[str], max_len: int):
    """Caption token ids + EOS, padded with -100 (ignored by the loss)."""
    import torch

    ids = [tok(t, add_special_tokens=False)["input_ids"][: max_len - 1] + [tok.eos_token_id] for t in texts]
    n = max(len(x) for x in ids)
    return torch.tensor([x + [-100] * (n - len(x)) for x in ids])


def bleu(preds: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(preds, [refs]).score / 100.0


def image_text(cfg: DictConfig) -> dict[str, Any]:
    """Study entry point (``study: peftbench.studies.image_text.image_text``)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from peftbench.data.image_text import load_pixels, make_shapes_dataset, read_annotations
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.models.loading import load_tokenizer
    from peftbench.models.spec import ModelSpec

    ic = OmegaConf.to_container(cfg.image_text, resolve=True) if cfg.get("image_text") else {}
    folder = ic.get("data_dir")
    if not folder:  # the synthetic set, generated once into the cache
        folder = Path(cfg.paths.cache_dir) / "image_text" / f"shapes-v2-n{ic.get('n', 96)}-s{ic.get('image_size', 32)}"
        if not (folder / "annotations.json").exists():
            make_shapes_dataset(folder, int(ic.get("n", 96)), 0, int(ic.get("image_size", 32)))
    pairs = read_annotations(folder)  # refusals (missing file/row) before any model is built
    if len(pairs) < 4:
        raise ConfigError(f"{folder} has {len(pairs)} examples; need at least 4 (train + validation)",
                          option="image_text.data_dir")
    n_val = max(2, int(len(pairs) * float(ic.get("val_fraction", 0.25))))
    train_p, val_p = pairs[:-n_val], pairs[-n_val:]
    steps, bs, lr = int(cfg.trainer.max_steps), int(cfg.data.batch_size), float(cfg.optim.lr)
    if steps <= 0:
        raise ConfigError("the image-text study needs trainer.max_steps > 0", option="trainer.max_steps")

    tok = load_tokenizer(ModelSpec(family="vlm", size="tiny", model_type="gpt2", arch={}, checkpoint=None,
                                   local_dir=None, from_config=True, tokenizer=str(ic.get("tokenizer", "smollm2"))))
    size = int(ic.get("image_size", 32))
    model = build_vlm(tok, size, int(ic.get("patch", 8)), int(ic.get("hidden", 64)), int(ic.get("layers", 2)),
                      int(ic.get("heads", 2)), int(cfg.model.get("init_seed", 0)))
    base_names = pm.base_param_names(model)
    method = str(cfg.method.name)
    if method == "lora":
        lcfg = LoraConfig(r=int(cfg.method.get("r", 8)), lora_alpha=int(cfg.method.get("alpha", 16)),
                          lora_dropout=float(cfg.method.get("dropout", 0.0)), target_modules=DECODER_ATTN,
                          fan_in_fan_out=True)  # GPT-2's Conv1D stores weights transposed
        torch.manual_seed(int(cfg.seed))
        model = get_peft_model(model, lcfg)
    elif method != "full":
        raise ConfigError(f"the image-text study supports method=lora or method=full, not '{method}'", option="method")
    counts = pm.count_params(model, base_names)

    x_tr, x_va = load_pixels([p for p, _ in train_p], size), load_pixels([p for p, _ in val_p], size)
    y_tr = caption_labels(tok, [t for _, t in train_p], int(ic.get("max_len", 16)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(int(cfg.seed))
    memcb_start = mem.peak_rss_mb()
    model.train()
    losses, t = [], time.perf_counter()
    for _ in range(steps):
        idx = rng.sample(range(len(train_p)), min(bs, len(train_p)))
        loss = model(pixel_values=x_tr[idx], labels=y_tr[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    fit_s = time.perf_counter() - t
    model.eval()
    refs = [c for _, c in val_p]
    with torch.no_grad():
        val_loss = float(model(pixel_values=x_va, labels=caption_labels(tok, refs, int(ic.get("max_len", 16)))).loss)
        gen = model.generate(pixel_values=x_va, max_new_tokens=int(ic.get("max_len", 16)), do_sample=False,
                             decoder_start_token_id=model.config.decoder_start_token_id,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    preds = [s.strip() for s in tok.batch_decode(gen, skip_special_tokens=True)]
    return {
        "metrics": {"val/bleu": bleu(preds, refs), "val/loss": val_loss, "train/loss_last": losses[-1],
                    "train/loss_first": losses[0]},
        "params": {**counts, "delta_rank": None},
        "memory": {"peak_rss_mb": mem.peak_rss_mb(), "rss_before_fit_mb": memcb_start},
        "timings": {"fit_s": fit_s},
        "model": {"family": "vit+gpt2 (VisionEncoderDecoder)", "size": "tiny", "checkpoint": "config",
                  "total": counts["total"] - counts.get("added", 0)},
        "method": {"name": method, "family": "reparameterized" if method == "lora" else "full",
                   "hparams": {"target_modules": DECODER_ATTN} if method == "lora" else {}},
        "dataset": {"name": "image_text", "task": "captioning", "source": str(folder),
                    "sizes": {"train": len(train_p), "validation": len(val_p)}},
        "extra": {"bleu_backend": "sacrebleu corpus_bleu / 100", "samples": list(zip(refs, preds))[:5],
                  "optimizer_steps": steps},
    }
