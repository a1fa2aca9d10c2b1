"""The classification head: one design for every family and method, reading the representation the
checkpoint was trained to produce (the family's ``pooling``).

    pooling       what the head reads                                   used by
    cls_pooler    the checkpoint's own pooler (dense + tanh over [CLS])  BERT (pretrained with NSP)
    cls           the first token's hidden state                         RoBERTa
    mean          the mask-weighted mean of the last hidden states      MiniLM, MPNet (sentence embedders)
    last_token    the last non-padding token's hidden state             decoders (HF's own head; the
                                                                          mask finds it under soft prompts)

The head itself is ``dropout → Linear(hidden, num_labels)`` everywhere (decoders keep HF's bias-free
``score``, which already reads the last token): sizes and families then differ in their body, never
in a head of another design (HF's RoBERTa/MPNet heads are a fresh 2-layer MLP, 592K parameters on
MPNet; BERT's a single linear layer). Its weights are drawn N(0, initializer_range) from their own
generator seeded with ``head_seed`` — independent of the method and of anything the loader drew —
so every method of a run seed starts from the very same head.

Why ``mean`` matters: sentence-embedding checkpoints were trained for mean pooling; HF's head reads
the [CLS] pooler, which carries little of the sentence, so a frozen body scores the majority rate.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError

POOLINGS = ("cls_pooler", "cls", "mean", "last_token")
MASK = "peftbench_mask"  # attribute of a module that reads the attention mask of the current call


class Pool(nn.Module):
    """Parameter-free pooling of ``[batch, seq, hidden]`` states. The attention mask is not passed to
    a pooler or head by HF's models, so ``capture_mask`` (a pre-hook on the backbone) keeps it for one call."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        setattr(self, MASK, None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = getattr(self, MASK)
        setattr(self, MASK, None)
        if self.how == "cls":
            return hidden[:, 0]
        if mask is None:
            return hidden.mean(dim=1)
        # prefix tuning prepends virtual tokens to the mask, not to the states: their tail is the text
        m = mask[:, -hidden.shape[1]:].to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def extra_repr(self) -> str:
        return f"how={self.how!r}"


def capture_mask(model: nn.Module, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Hand the backbone's attention mask to every module of ``model`` that reads it (``MASK``: a
    ``Pool``, a decoder's head), found at call time: peft's ``modules_to_save`` runs a deep copy of
    the head made after this hook was registered (a hook bound to the original Pool left the copy
    averaging over padding)."""
    mask = kwargs.get("attention_mask")
    mask = mask if mask is not None or len(args) < 2 else args[1]
    for m in model.modules():
        if hasattr(m, MASK):
            setattr(m, MASK, mask)


def last_real_token(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook on a decoder's ``score``: HF pools the position of the last non-pad input id, but
    given ``inputs_embeds`` (prompt tuning, P-Tuning: peft prepends the virtual tokens as embeddings)
    it reads the last position, padding in a right-padded row. Writing the last real token's logits
    there makes both read the same token (a plain function: deep copies of the head keep it)."""
    mask = getattr(module, MASK, None)
    setattr(module, MASK, None)
    if mask is None or output.dim() != 3:
        return None
    m = mask[:, -output.shape[1]:].bool()  # prefix tuning's mask also covers its virtual tokens
    last = (torch.arange(m.shape[1], device=m.device) * m).argmax(-1)
    out = output.clone()
    out[:, -1] = output[torch.arange(output.shape[0], device=output.device), last]
    return out


class PooledHead(nn.Module):
    """Pool → dropout → linear: the head for models whose HF head reads the whole sequence."""

    def __init__(self, pool: Pool, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.out_proj(self.dropout(self.pool(features)))


def check_pooling(pooling: Any, family: str, decoder: bool, has_head: bool) -> str | None:
    """The family's declared pooling, refused before any weight loads when it cannot work."""
    if not has_head:
        if pooling not in (None, "none"):
            raise ConfigError(f"family '{family}' has no classification head to pool for", option="model.pooling")
        return None
    if pooling not in POOLINGS:
        raise ConfigError(f"family '{family}': pooling must be one of {list(POOLINGS)}, got {pooling!r}",
                          option="model.pooling")
    if decoder != (pooling == "last_token"):
        want = "last_token (a decoder reads its last token)" if decoder else "cls_pooler | cls | mean (an encoder)"
        raise ConfigError(f"family '{family}': pooling '{pooling}' does not fit; use {want}", option="model.pooling")
    return str(pooling)


def _linear(head: nn.Module) -> nn.Linear:
    return head.out_proj if isinstance(head, PooledHead) else head


def install_head(model: nn.Module, pooling: str, head_name: str, seed: int | None = 0) -> nn.Module:
    """Give a ``…ForSequenceClassification`` model the head its pooling asks for, in place; draw its
    weights from ``seed`` (None: keep what the checkpoint holds, or structure only on the meta device)."""
    backbone = model.base_model
    head = getattr(model, head_name, None)
    if head is None:
        raise ConfigError(f"the model has no head module '{head_name}'", option="model.head_modules")
    pooler = getattr(backbone, "pooler", None)
    cfg = model.config
    if pooling == "cls_pooler" and pooler is None:
        raise ConfigError(f"{cfg.model_type}: its classification model has no pretrained pooler; declare "
                          "pooling cls or mean", option="model.pooling")
    if pooling in ("cls", "mean"):
        pool = Pool(pooling)
        if pooler is not None:  # BERT-style: the head reads the pooler's output; the pooler now pools
            backbone.pooler = pool
        else:  # RoBERTa/MPNet-style: the head reads the sequence
            dropout = getattr(cfg, "classifier_dropout", None) or getattr(cfg, "hidden_dropout_prob", 0.0)
            new = PooledHead(pool, cfg.hidden_size, cfg.num_labels, float(dropout))
            _keep_linear(getattr(head, "out_proj", None), new.out_proj)
            setattr(model, head_name, new)
    if pooling == "last_token":
        setattr(head, MASK, None)
        head.register_forward_hook(last_real_token)
    if pooling in ("cls", "mean", "last_token"):
        backbone.register_forward_pre_hook(functools.partial(capture_mask, model), with_kwargs=True)
    if pooling != "cls_pooler" and pooling != "last_token":
        cfg.peftbench_pooling = pooling  # recorded in a saved config.json: HF's own class would read [CLS]
    if seed is not None:
        init_head(_linear(getattr(model, head_name)), seed, float(getattr(cfg, "initializer_range", 0.02) or 0.02))
    return model


def _keep_linear(old: Any, new: nn.Linear) -> None:
    """A checkpoint's trained output layer survives the head's new design (a saved pooled head loads
    into HF's own class, whose ``out_proj`` has the same shape)."""
    if isinstance(old, nn.Linear) and old.weight.shape == new.weight.shape and not old.weight.is_meta:
        new.load_state_dict(old.state_dict())


def init_head(linear: nn.Linear, seed: int, std: float) -> None:
    """N(0, std) weights and zero bias from a generator of their own (the global RNG is untouched)."""
    if linear.weight.is_meta:
        return
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        linear.weight.copy_(torch.normal(0.0, std, tuple(linear.weight.shape), generator=g))
        if linear.bias is not None:
            linear.bias.zero_()


def stock_reproduces(pooling: str | None) -> bool:
    """Whether stock ``AutoModelForSequenceClassification`` computes what peftbench's head computes:
    yes for BERT's pooler (HF's own head, only re-drawn) and for decoders (HF's ``score`` on the last
    non-pad token); no for ``mean`` and ``cls`` (HF reads its [CLS] pooler or a 2-layer MLP there)."""
    return pooling in (None, "cls_pooler", "last_token")


def load_exported(path: str, base: str | None = None, **kwargs: Any) -> nn.Module:
    """Open a ``peftbench export`` folder (classification) with the head the run trained: stock
    ``AutoModelForSequenceClassification`` (+ ``PeftModel`` for an adapter), then peftbench's pooling
    re-applied, so the logits are the run's. Needs only transformers, peft and peftbench.

    ``base`` overrides where an adapter's base model is read from (a local copy of its hub id);
    ``kwargs`` go to ``from_pretrained`` (``torch_dtype``, ``device_map``, …)."""
    import json
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    folder = Path(path)
    meta_path = folder / "peftbench_export.json"
    if not meta_path.is_file():
        raise ConfigError(f"{folder} has no peftbench_export.json: not a `peftbench export` folder", option="path")
    meta = json.loads(meta_path.read_text())
    head = meta.get("head") or {}
    if meta.get("kind") not in ("merged", "peft") or not head.get("pooling"):
        raise ConfigError(f"{folder}: a '{meta.get('kind')}' export without a classification head; load it as its "
                          "README.md says", option="path")
    if meta["kind"] == "merged":
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), **kwargs)
        return install_head(model, head["pooling"], head["module"], seed=None).eval()
    from peft import PeftModel

    if base is None:
        shipped = folder / "base_model"
        base = str(shipped) if shipped.is_dir() else \
            json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=int(head["num_labels"]), **kwargs)
    install_head(model, head["pooling"], head["module"], seed=None)
    return PeftModel.from_pretrained(model, str(folder)).eval()
