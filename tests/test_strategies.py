"""Strategy configs: every one composes; FSDP is refused on CPU before any weight loads; the FSDP
wrap policy finds transformer blocks by duck typing; QLoRA + FSDP needs matching quant storage."""

from __future__ import annotations

import pytest
import torch

from peftbench.errors import ConfigError
from tests.conftest import FAST


@pytest.mark.parametrize("name", ["single", "ddp", "fsdp"])
def test_strategy_configs_compose(compose_run, name):
    cfg = compose_run(f"strategy={name}")
    assert cfg.strategy.name == name


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fsdp_refused_on_cpu_before_weights_load(compose_run):
    from peftbench.train import train

    rec = train(compose_run("model=bert", "model_size=tiny", "method=lora", "strategy=fsdp", *FAST))
    assert rec["status"] == "refused"
    assert "FSDP needs CUDA" in rec["error"] and "strategy" in rec["error"]
    assert "load_model_s" not in rec["timings"]  # refused before the model was loaded


def test_ddp_find_unused_follows_the_method(compose_run):
    from omegaconf import OmegaConf

    from peftbench.methods.registry import get_method
    from peftbench.run.strategy import make_strategy

    s = OmegaConf.to_container(compose_run("strategy=ddp").strategy, resolve=True)
    lora = get_method("lora").from_config({"name": "lora"})
    drop = get_method("adapter_drop").from_config({"name": "adapter_drop"})
    assert make_strategy(s, lora)._ddp_kwargs["find_unused_parameters"] is False
    assert make_strategy(s, drop)._ddp_kwargs["find_unused_parameters"] is True
    assert make_strategy({**s, "find_unused_parameters": True}, lora)._ddp_kwargs["find_unused_parameters"] is True


@pytest.mark.parametrize("family,block", [("bert", "BertLayer"), ("gpt2", "GPT2Block"), ("llama", "LlamaDecoderLayer")])
def test_fsdp_block_classes_by_duck_typing(compose_run, family, block):
    from peftbench.config.plan import make_plan
    from peftbench.models import load_model, load_tokenizer
    from peftbench.run.strategy import BlockWrapPolicy, transformer_block_classes

    cfg = compose_run(f"model={family}", "model_size=tiny", "method=lora")
    plan = make_plan(cfg, load_data=False)
    model = load_model(plan.spec, plan.task, plan.num_labels, load_tokenizer(plan.spec), {})
    model = plan.method.apply(model, plan.ctx)  # adapted model: LoRA layers must not count as blocks
    assert {c.__name__ for c in transformer_block_classes(model)} == {block}
    policy = BlockWrapPolicy()
    assert policy(model, recurse=True) is True  # root call: discovers the classes
    wrapped = [m for m in model.modules() if policy(m, recurse=False)]
    assert len(wrapped) == plan.ctx.num_layers
    assert all(type(m).__name__ == block for m in wrapped)


def test_fsdp_policy_refuses_a_model_without_blocks():
    from peftbench.run.strategy import BlockWrapPolicy

    with pytest.raises(ConfigError, match="no repeated transformer block"):
        BlockWrapPolicy()(torch.nn.Sequential(torch.nn.Linear(2, 2)), recurse=True)


def test_fsdp_strategy_settings():
    from lightning.pytorch.strategies import FSDPStrategy

    from peftbench.methods.registry import get_method
    from peftbench.run.strategy import BlockWrapPolicy, make_fsdp_strategy

    lora = get_method("lora").from_config({"name": "lora"})
    s = make_fsdp_strategy({"name": "fsdp", "sharding_strategy": "shard_grad_op", "activation_checkpointing": True}, lora)
    assert isinstance(s, FSDPStrategy)
    assert s.kwargs["use_orig_params"] is True
    assert isinstance(s.kwargs["auto_wrap_policy"], BlockWrapPolicy)
    assert s.sharding_strategy.name == "SHARD_GRAD_OP"
    assert s._activation_checkpointing_kwargs  # per-block activation checkpointing requested
    with pytest.raises(ConfigError, match="strategy.sharding_strategy"):
        make_fsdp_strategy({"sharding_strategy": "everything"}, lora)


def test_qlora_under_fsdp_needs_matching_quant_storage():
    """A real option (method.quant_storage), refused before weights, passed to BitsAndBytesConfig."""
    from peftbench.methods.registry import get_method

    cls = get_method("qlora")
    q = cls.from_config({"name": "qlora"})
    with pytest.raises(ConfigError, match="bnb_4bit_quant_storage") as e:
        q.check_strategy("fsdp")
    assert e.value.option == "method.quant_storage"
    q.check_strategy("ddp")  # only FSDP flattens the 4-bit weights
    with pytest.raises(ConfigError, match="quant_storage='uint8'"):  # bitsandbytes' default: not shardable
        cls.from_config({"name": "qlora", "quant_storage": "uint8"}).check_strategy("fsdp")
    with pytest.raises(ConfigError, match="unknown dtype"):
        cls.from_config({"name": "qlora", "quant_storage": "float77"}).check_strategy("fsdp")
    dtype = str(q.compute_dtype()).replace("torch.", "")
    ok = cls.from_config({"name": "qlora", "quant_storage": dtype})
    ok.check_strategy("fsdp")  # storage == compute dtype: allowed
    pytest.importorskip("bitsandbytes")
    bnb = ok.load_kwargs(_ctx_for_qlora())["quantization_config"]
    assert bnb.bnb_4bit_quant_storage == q.compute_dtype()


def _ctx_for_qlora():
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir
    from peftbench.models import build_context, resolve_spec

    spec = resolve_spec(OmegaConf.load(conf_dir() / "model" / "gpt2.yaml"), "tiny")
    return build_context(spec, "causal_lm")
