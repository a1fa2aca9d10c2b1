"""The table behind tests/test_methods.py: tiny models, hand-built ApplyContexts, per-method test
hyper-parameters and learning rates, and closed-form trainable counts.

Tiny models: BERT (classification) and GPT-2 (causal LM), hidden 32, 2 blocks, vocab 200, no
dropout, built from a config with a fixed seed so "a fresh base" is bit-identical to the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from peftbench.methods.base import ApplyContext

H, LAYERS, HEADS, INTER, VOCAB, MAXPOS, LABELS = 32, 2, 2, 64, 200, 64, 2
SEQ, N_EXAMPLES = 8, 16

TASK_MODEL = {"classification": "bert", "causal_lm": "gpt2"}


def hf_config(task: str):
    from transformers import BertConfig, GPT2Config

    if TASK_MODEL[task] == "bert":
        return BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          intermediate_size=INTER, max_position_embeddings=MAXPOS, num_labels=LABELS,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return GPT2Config(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=MAXPOS,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)


def build_base(task: str, seed: int = 0):
    from transformers import BertForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = hf_config(task)
    cls = BertForSequenceClassification if task == "classification" else GPT2LMHeadModel
    return cls(cfg).eval()


def build_for(method, task: str, tmp_dir: Path, seed: int = 0):
    """The base model as the method wants it loaded (QLoRA: 4-bit from_pretrained)."""
    ctx = make_ctx(task)
    kw = method.load_kwargs(ctx)
    base = build_base(task, seed)
    if not kw:
        return base
    d = Path(tmp_dir) / f"base_{task}_{seed}"
    if not d.exists():
        base.save_pretrained(str(d))
    return type(base).from_pretrained(str(d), **kw).eval()


def family_facts(family: str) -> dict[str, Any]:
    """The architecture facts the apply context carries, read from conf/model/<family>.yaml (the
    same path as a run: resolve_spec → build_context), so these tests exercise the yaml itself."""
    import yaml

    from peftbench.config.paths import conf_dir
    from peftbench.models import resolve_spec

    spec = resolve_spec(yaml.safe_load((conf_dir() / "model" / f"{family}.yaml").read_text()), "tiny")
    return dict(model_type=spec.model_type, family=family, targets=spec.targets, conv1d=spec.conv1d,
                past_key_values=spec.past_key_values)


def make_ctx(task: str, **over: Any) -> ApplyContext:
    model = build_base(task)
    kw = family_facts(TASK_MODEL[task])
    if TASK_MODEL[task] == "bert":
        kw.update(head_modules=["classifier"], layers_path="bert.encoder.layer")
    else:
        kw.update(head_modules=["lm_head"], layers_path="transformer.h")
    kw.update(task=task, num_layers=LAYERS, hidden_size=H, num_heads=HEADS, max_positions=MAXPOS,
              hf_config=model.config, module_names=[n for n, _ in model.named_modules()],
              has_bias=any(n.endswith(".bias") for n, _ in model.named_parameters()))
    kw.update(over)
    return ApplyContext(**kw)


def batch(task: str, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (N_EXAMPLES, SEQ), generator=g)
    am = torch.ones_like(ids)
    if task == "classification":
        return {"input_ids": ids, "attention_mask": am, "labels": torch.randint(0, LABELS, (N_EXAMPLES,), generator=g)}
    # learnable LM data: each sequence counts up from a random start (next token = this token + 1)
    ids = (ids[:, :1] + torch.arange(SEQ)) % (VOCAB - 1) + 1
    return {"input_ids": ids, "attention_mask": am, "labels": ids.clone()}


# ---- per-method test hyper-parameters (small, so every case runs in well under a second) --------
def stage_one_adapters(task: str, tmp_dir: Path) -> list[str]:
    """Two saved Pfeiffer runs (random non-zero adapters) for adapter_fusion's stage two."""
    from peftbench.methods.pfeiffer import Pfeiffer

    dirs = []
    for i in range(2):
        d = Path(tmp_dir) / f"stage1_{task}_{i}"
        if not (d / "method.json").exists():
            m = Pfeiffer(bottleneck=4)
            model = m.apply(build_base(task), make_ctx(task))
            torch.manual_seed(100 + i)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "pb_adapter" in n:
                        p.add_(0.1 * torch.randn_like(p))
            m.save(model, d)
        dirs.append(str(d))
    return dirs


HPARAMS: dict[str, Any] = {
    "lora": dict(r=4, alpha=8, dropout=0.0),
    "dora": dict(r=4, alpha=8, dropout=0.0),
    "rslora": dict(r=4, alpha=8, dropout=0.0),
    "qlora": dict(r=4, alpha=8, dropout=0.0),
    "loha": dict(r=4, alpha=4),
    "lokr": dict(r=4, alpha=4),
    "vera": dict(r=16),
    "adalora": dict(init_r=4, target_r=2, total_step=30, tinit=5, tfinal=5, alpha=8),
    "ia3": dict(),
    "layers": dict(top_k=1),
    "diff_pruning": dict(density=0.1),
    "prompt_tuning": dict(num_virtual_tokens=4),
    "prefix_tuning": dict(num_virtual_tokens=4, encoder_hidden_size=16),
    "p_tuning": dict(num_virtual_tokens=4, encoder_hidden_size=16),
    "p_tuning_v2": dict(num_virtual_tokens=4),
    "houlsby": dict(bottleneck=8),
    "pfeiffer": dict(bottleneck=8),
    "adapter_drop": dict(bottleneck=8, drop_n=1, drop_at="inference"),
    "mam": dict(num_virtual_tokens=4, bottleneck=8, scale=2.0),
    "unipelt": dict(num_virtual_tokens=4, r=4, bottleneck=8),
    "peft": dict(peft_type="LORA", kwargs={"r": 4, "lora_alpha": 8}),
}


def hparams_for(name: str, task: str, tmp_dir: Path) -> dict[str, Any]:
    hp = dict(HPARAMS.get(name, {}))
    if name == "adapter_fusion":
        hp["adapter_dirs"] = stage_one_adapters(task, tmp_dir)
    return hp


# learning rate for the "loss goes down when overfitting 16 examples" check
LR: dict[str, float] = {"full": 1e-3, "layers": 3e-3, "diff_pruning": 3e-3, "vera": 5e-2, "ia3": 5e-2,
                        "prompt_tuning": 1e-1, "p_tuning": 3e-2, "p_tuning_v2": 3e-2, "prefix_tuning": 1e-2,
                        "head_only": 3e-2, "bitfit": 3e-2}
DEFAULT_LR = 1e-2
STEPS = 30
MIN_DECREASE = 0.005  # absolute loss decrease required after STEPS steps

# (method, task) pairs a method refuses by design, with the reason
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("loha", "causal_lm"): "peft LyCORIS layers do not support GPT-2's Conv1D",
    ("lokr", "causal_lm"): "peft LyCORIS layers do not support GPT-2's Conv1D",
}

# ---- closed-form trainable counts -----------------------------------------------------------------
h, L, I, V = H, LAYERS, INTER, VOCAB
BERT_HEAD = h * LABELS + LABELS


def _cls(task: str, n: int) -> int:
    return n + (BERT_HEAD if task == "classification" else 0)


EXPECTED_TRAINABLE: dict[str, Callable[[str, dict], int]] = {
    # classification adapts BERT query/value (h×h); causal LM adapts GPT-2 c_attn (h → 3h)
    "lora": lambda t, hp: _cls(t, L * (2 * hp["r"] * (h + h) if t == "classification" else hp["r"] * (h + 3 * h))),
    # BERT: key h + value h + (attention.)output.dense inputs h + I; GPT-2: c_attn out 3h + mlp.c_proj in 4h
    "ia3": lambda t, hp: _cls(t, L * (3 * h + I) if t == "classification" else L * (3 * h + 4 * h)),
    # BERT: embeddings LN + per block (q,k,v,attn-out, LN, intermediate, out, LN) + pooler + classifier;
    # GPT-2: per block ln_1 h, c_attn 3h, attn c_proj h, ln_2 h, c_fc 4h, mlp c_proj h; + ln_f
    "bitfit": lambda t, hp: (h + L * (7 * h + I) + h + h * LABELS + LABELS) if t == "classification"
    else L * 11 * h + h,
    # BERT classifier; GPT-2 lm_head (tied to the token embedding)
    "head_only": lambda t, hp: BERT_HEAD if t == "classification" else V * h,
    "prompt_tuning": lambda t, hp: _cls(t, hp["num_virtual_tokens"] * h),
    # embedding n×h + MLP h→e→2Lh
    "prefix_tuning": lambda t, hp: _cls(t, hp["num_virtual_tokens"] * h + h * hp["encoder_hidden_size"]
                                        + hp["encoder_hidden_size"] + hp["encoder_hidden_size"] * 2 * L * h + 2 * L * h),
    "p_tuning_v2": lambda t, hp: _cls(t, hp["num_virtual_tokens"] * 2 * L * h),
    # 2 adapters (down h×b + b, up b×h + h) + 2 layer norms (2h each) per block
    "houlsby": lambda t, hp: _cls(t, L * (2 * (2 * h * hp["bottleneck"] + hp["bottleneck"] + h) + 2 * 2 * h)),
    "pfeiffer": lambda t, hp: _cls(t, L * (2 * h * hp["bottleneck"] + hp["bottleneck"] + h)),
}
