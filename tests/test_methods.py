"""Conformance suite: every registered method (built-in or plugin) × task, checked the same way.

(a) frozen base weights bit-identical after AdamW steps; (b) trainable count = closed form;
(c) loss goes down when overfitting 16 examples; (d) save → load onto a fresh base reproduces the
outputs, and merged outputs equal unmerged ones with no added parameters; (e) refusals name the option.
"""

from __future__ import annotations

import sys

import pytest
import torch

try:  # tests/ is a package (tests/__init__.py); fall back to rootdir-relative import
    from tests import methods_cases as C
except ImportError:  # pragma: no cover
    import methods_cases as C
from peftbench.errors import ConfigError
from peftbench.methods.registry import available_methods, get_method

METHODS = available_methods()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-CPU box they only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
CASES = [(m, t) for m in METHODS for t in ("classification", "causal_lm")]


def _make(name: str, task: str, tmp_path):
    cls = get_method(name)
    if task not in cls.tasks:
        pytest.skip(f"{name} does not support {task}")
    if (name, task) in C.UNSUPPORTED:
        method = cls.from_config(C.hparams_for(name, task, tmp_path))
        with pytest.raises(ConfigError):
            method.check(C.make_ctx(task))
        pytest.skip(f"{name} refuses {task} by design: {C.UNSUPPORTED[(name, task)]}")
    method = cls.from_config({"name": name, **C.hparams_for(name, task, tmp_path)})
    ctx = C.make_ctx(task)
    method.check(ctx)
    return method, ctx


def _apply(name, task, tmp_path, seed=0):
    method, ctx = _make(name, task, tmp_path)
    base = C.build_for(method, task, tmp_path, seed)
    before = {n: (p, p.detach().clone()) for n, p in base.named_parameters()}
    model = method.apply(base, ctx)
    return method, ctx, model, before


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _loss(model, b):
    return model(**b).loss


def _logits(model, b):
    model.eval()
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()


@pytest.mark.parametrize("name,task", CASES)
def test_train_frozen_and_loss(name, task, tmp_path):
    """(a) + (c): frozen base unchanged bit for bit; loss decreases when overfitting."""
    method, ctx, model, before = _apply(name, task, tmp_path)
    params = _trainable(model)
    assert params, "nothing trains"
    torch.manual_seed(0)
    opt = torch.optim.AdamW(params, lr=C.LR.get(name, C.DEFAULT_LR), weight_decay=0.0)
    b = C.batch(task)
    model.train()
    losses = []
    for step in range(C.STEPS):
        loss = _loss(model, b)
        loss.backward()
        opt.step()
        method.on_train_step_end(model, step)
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    # a frozen random tiny base leaves small methods little leverage in 30 steps: require a clear,
    # not a large, decrease
    assert min(losses[-3:]) < losses[0] - C.MIN_DECREASE, f"loss did not go down: {losses[0]:.4f} → {losses[-1]:.4f}"
    if method.freezes_base:
        changed = [n for n, (p, orig) in before.items()
                   if not p.requires_grad and not torch.equal(p.detach(), orig)]
        assert not changed, f"frozen base weights changed: {changed[:5]}"


@pytest.mark.parametrize("name,task", CASES)
def test_trainable_count(name, task, tmp_path):
    """(b) trainable = the closed form for the main methods; 0 < trainable <= total for all."""
    method, ctx, model, _ = _apply(name, task, tmp_path)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable <= total
    if method.freezes_base:
        assert trainable < total
    if name in C.EXPECTED_TRAINABLE:
        assert trainable == C.EXPECTED_TRAINABLE[name](task, C.hparams_for(name, task, tmp_path))


def _perturb(model, seed: int = 3) -> None:
    """Move the trainable parameters away from their (often identity) initialisation."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in _trainable(model):
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("name,task", CASES)
def test_save_load_merge(name, task, tmp_path):
    """(d) save → load onto a fresh base gives identical outputs; merge keeps them, adds nothing."""
    method, ctx, model, _ = _apply(name, task, tmp_path)
    _perturb(model)
    b = C.batch(task, seed=5)
    ref = _logits(model, b)
    out = tmp_path / "saved"
    files = method.save(model, out)
    assert files and all(f.exists() for f in files)
    fresh_method = type(method).from_config(method.hparams())
    fresh = C.build_for(fresh_method, task, tmp_path)
    loaded = fresh_method.load(fresh, out, ctx)
    torch.testing.assert_close(_logits(loaded, b), ref, rtol=0, atol=1e-5)
    if method.supports_merge:
        base_numel = sum(p.numel() for p in C.build_base(task).parameters())
        merged = method.merge(model)
        torch.testing.assert_close(_logits(merged, b), ref, rtol=0, atol=1e-4)
        assert sum(p.numel() for p in merged.parameters()) == base_numel


@pytest.mark.parametrize("name", ["ia3", "vera", "loha", "lokr", "lora"])
def test_merge_keeps_a_pooled_head(name, compose_run):
    """A mean-pooled head (PooledHead: no ``weight``; MPNet's) in modules_to_save merges into the
    same outputs. peft's generic unload rebinds ``.weight`` and failed on it: the first (IA)³ run
    on MPNet trained 150 steps, then failed while counting changed parameters."""
    from peftbench.config.plan import make_plan
    from peftbench.models import load_model, load_tokenizer
    from peftbench.models.heads import PooledHead

    plan = make_plan(compose_run("model=mpnet", "model_size=tiny", f"method={name}"))
    model = load_model(plan.spec, plan.task, plan.num_labels, load_tokenizer(plan.spec), {}, init_seed=0)
    assert isinstance(model.classifier, PooledHead)
    model = plan.method.apply(model, plan.ctx)
    _perturb(model)
    b = C.batch("classification", seed=5)
    ref = _logits(model, b)
    merged = plan.method.merge(model)
    assert isinstance(merged.classifier, PooledHead)
    torch.testing.assert_close(_logits(merged, b), ref, rtol=0, atol=1e-4)


# ---- (e) refusals ------------------------------------------------------------------------------


def _refuses(name, task="classification", ctx_over=None, **hp):
    method = get_method(name).from_config(hp)
    with pytest.raises(ConfigError) as ei:
        method.check(C.make_ctx(task, **(ctx_over or {})))
    return ei.value


@pytest.mark.parametrize("name", ["prefix_tuning", "p_tuning_v2", "prompt_tuning", "p_tuning", "mam", "unipelt"])
def test_refuses_prefix_longer_than_positions(name):
    e = _refuses(name, num_virtual_tokens=C.MAXPOS + 10)
    assert e.option == "method.num_virtual_tokens" and "positions" in str(e)


@pytest.mark.parametrize("name", ["prefix_tuning", "p_tuning_v2", "mam"])
def test_refuses_prefix_without_past_kv(name):
    e = _refuses(name, ctx_over={"past_key_values": False}, num_virtual_tokens=4)
    assert "past_key_values" in str(e)


def test_refuses_bitfit_without_biases():
    """A bias-free model (Llama: the meta-device build says so) has nothing for BitFit to train; with
    its head it would be head-only under BitFit's name, so that is refused too, naming head_only."""
    e = _refuses("bitfit", ctx_over={"has_bias": False}, train_head=False)
    assert e.option == "method" and "no bias" in str(e)
    with pytest.raises(ConfigError, match="method=head_only"):
        get_method("bitfit").from_config({"train_head": True}).check(C.make_ctx("classification", has_bias=False))
    get_method("bitfit").from_config({"train_head": True}).check(C.make_ctx("classification", has_bias=True))


@pytest.mark.parametrize("body_bias", [False, True])
def test_bitfit_counts_only_biases_outside_the_head(body_bias):
    """Biases in the task head alone (a bias-free body) leave BitFit head-only: refused once loaded,
    where the context could not tell; a body with biases trains them and the head."""
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(4, 4, bias=body_bias))
    model.add_module("classifier", torch.nn.Linear(4, 2, bias=True))
    ctx = C.make_ctx("classification", has_bias=None, head_modules=["classifier"])
    bitfit = get_method("bitfit").from_config({"train_head": True})
    if not body_bias:
        with pytest.raises(ConfigError, match="outside its task head"):
            bitfit.apply(model, ctx)
        return
    trains = {n for n, p in bitfit.apply(model, ctx).named_parameters() if p.requires_grad}
    assert trains == {"body.bias", "classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("name,key", [("houlsby", "attn_out"), ("pfeiffer", "ffn_out"), ("mam", "ffn_in"),
                                      ("ia3", "ia3")])
def test_refuses_family_without_insertion_point(name, key):
    """Architecture facts come from the family yaml (via the context), never a model-type table."""
    ctx = C.make_ctx("classification")
    e = _refuses(name, ctx_over={"targets": {k: v for k, v in ctx.targets.items() if k != key}})
    assert f"targets.{key}" in str(e) and "conf/model/bert.yaml" in str(e)


@pytest.mark.parametrize("name,key", [("lora", "target_modules"), ("dora", "target_modules"),
                                      ("adalora", "target_modules"), ("vera", "target_modules"),
                                      ("ia3", "target_modules"), ("diff_pruning", "target_modules"),
                                      ("unipelt", "target_modules"), ("qlora", "target_modules")])
def test_refuses_targets_matching_nothing(name, key):
    e = _refuses(name, **{key: ["no_such_module"]})
    assert e.option == f"method.{key}" and "match" in str(e)


def test_refuses_peft_generic_targets_and_unknown_type():
    e = _refuses("peft", kwargs={"r": 4, "target_modules": ["no_such_module"]})
    assert "match" in str(e)
    e = _refuses("peft", peft_type="NOT_A_TUNER")
    assert e.option == "method.peft_type" and "LORA" in str(e)


def test_refuses_adapter_fusion_without_stage_one(tmp_path):
    e = _refuses("adapter_fusion", adapter_dirs=[])
    assert e.option == "method.adapter_dirs" and "stage-one" in str(e)
    (tmp_path / "empty").mkdir()
    e = _refuses("adapter_fusion", adapter_dirs=[str(tmp_path / "empty")])
    assert e.option == "method.adapter_dirs" and "no saved stage-one adapter" in str(e)


def test_refuses_qlora_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    e = _refuses("qlora")
    assert "bitsandbytes" in str(e) and "pip install" in str(e)


@pytest.mark.parametrize("name,key", [("lora", "r"), ("dora", "r"), ("rslora", "r"), ("qlora", "r"),
                                      ("adalora", "init_r"), ("adalora", "target_r"), ("vera", "r"),
                                      ("loha", "r"), ("unipelt", "r"), ("houlsby", "bottleneck"),
                                      ("pfeiffer", "bottleneck"), ("mam", "bottleneck")])
def test_refuses_rank_zero(name, key):
    e = _refuses(name, **{key: 0})
    assert e.option == f"method.{key}"


def test_refuses_unknown_option():
    with pytest.raises(ConfigError) as ei:
        get_method("houlsby").from_config({"bottlenek": 8})
    assert ei.value.option == "method.bottlenek"


# ---- method-specific behaviour -------------------------------------------------------------------


def test_diff_pruning_changed_much_smaller_than_trainable(tmp_path):
    method, ctx, model, before = _apply("diff_pruning", "causal_lm", tmp_path)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in _trainable(model):
            p.add_(torch.randn_like(p))
    merged = method.merge(model)
    changed = sum(int((p.detach() != before[n][1]).sum()) for n, p in merged.named_parameters() if n in before)
    assert 0 < changed <= 0.11 * trainable


def test_adapter_drop_skips_adapter_calls_at_inference(tmp_path):
    from peftbench.methods import _adapter_layers as L

    method, ctx, model, _ = _apply("adapter_drop", "causal_lm", tmp_path)
    b = C.batch("causal_lm")
    model.train()
    L.reset_calls(model)
    model(**b)
    train_calls = L.count_calls(model)
    model.eval()
    L.reset_calls(model)
    with torch.no_grad():
        model(**b)
    assert train_calls == C.LAYERS and L.count_calls(model) == C.LAYERS - 1


def test_adalora_prunes_ranks(tmp_path):
    method, ctx, model, _ = _apply("adalora", "classification", tmp_path)
    assert model.peft_config["default"].total_step == 30
    assert get_method("adalora").ddp_find_unused


def test_qlora_is_4bit_and_optimizer_hint(tmp_path):
    import bitsandbytes as bnb

    method, ctx, model, _ = _apply("qlora", "causal_lm", tmp_path)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    kw = method.load_kwargs(ctx)["quantization_config"]
    assert kw.bnb_4bit_quant_type == "nf4" and kw.bnb_4bit_use_double_quant
    optim = {"name": "adamw", "lr": 1e-4, "fused": True}
    trained_with = method.train_optimizer(optim)
    assert trained_with == ({**optim, "name": "paged_adamw_8bit", "fused": False} if torch.cuda.is_available() else optim)
    off = type(method).from_config({"name": "qlora", "optimizer": None})
    assert off.train_optimizer(optim) == optim  # method.optimizer: null keeps the run's optimizer


def test_every_method_declares_metadata():
    for name in METHODS:
        cls = get_method(name)
        assert cls.family in ("additive", "selective", "reparameterized", "hybrid"), name
        assert cls.summary, name
        if name not in ("full", "head_only"):
            assert cls.paper.startswith("http"), name


# ---- architecture facts: the family yaml, through the apply context -------------------------------

FAMILIES = ["bert", "roberta", "minilm", "mpnet", "gpt2", "gpt2_local", "qwen2", "llama"]
# what a family declares on purpose (not a missing fact): MPNet's attention takes no past key/values;
# Llama blocks have no biases, so BitFit is refused (nothing to train, or the head alone: head-only)
DECLARED_REFUSALS = {"mpnet": "past_key_values", "gpt2": "Conv1D", "gpt2_local": "Conv1D", "llama": "no bias terms"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_yaml_carries_what_its_methods_need(family):
    """Every method's pre-load check passes on every family's tiny model, or refuses for a reason
    the family's yaml states — never because an insertion point or a target set is missing."""
    import yaml

    from peftbench.config.paths import conf_dir
    from peftbench.models import build_context, resolve_spec

    spec = resolve_spec(yaml.safe_load((conf_dir() / "model" / f"{family}.yaml").read_text()), "tiny")
    for task in spec.tasks:
        ctx = build_context(spec, task)
        assert ctx.has_bias is (family != "llama"), family  # Llama blocks have no biases
        for name in METHODS:
            cls = get_method(name)
            # built-ins only (a plugin's defaults are its own affair); fusion needs stage-one adapters
            if not cls.__module__.startswith("peftbench.methods.") or name == "adapter_fusion" \
                    or task not in cls.tasks:
                continue
            try:
                cls().check(ctx)
            except ConfigError as e:
                assert DECLARED_REFUSALS.get(family, "\0") in str(e), f"{family}/{task}/{name}: {e}"


def test_positions_after_padding_come_from_the_family():
    import yaml

    from peftbench.config.paths import conf_dir
    from peftbench.models import build_context, resolve_spec

    def ctx(family):
        return build_context(resolve_spec(yaml.safe_load((conf_dir() / "model" / f"{family}.yaml").read_text()),
                                          "base"), "classification")

    assert ctx("roberta").max_positions == 512 and ctx("mpnet").max_positions == 512  # 514 − pad 1 − 1
    assert ctx("bert").max_positions == 512
