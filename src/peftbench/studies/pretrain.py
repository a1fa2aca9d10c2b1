"""Pretrain the ``gpt2_local`` size ladder from scratch on the local corpus, so a PEFT comparison
over several model sizes has real (if small) pretrained weights offline.

``peftbench-train experiment=pretrain_gpt2_local model_size=s|m|l`` → GPT2Config with the size's
arch values, random init, causal-LM training with the same LightningModule as every other run,
then ``save_pretrained`` (safetensors) + the tokenizer into ``pretrain.out_dir``
(``<cache>/pretrained/gpt2_local-<size>``), where ``model=gpt2_local model_size=<size>`` finds it.

Tokenizer: a byte-level BPE (``tokenizers``) trained on the same corpus and saved beside each model.
Why not SmolLM2's 49k vocabulary: its embedding table alone (49152 × 128 = 6.3M) would dwarf the
0.4M–4.7M block parameters of these sizes and most CPU time would go to the output softmax, so the
ladder would mostly measure the vocabulary, not depth and width.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError

log = logging.getLogger("peftbench")

SPECIAL = {"eos": "<|endoftext|>", "pad": "<|pad|>"}


def corpus_texts(ds: dict[str, Any], data_dir: str | None) -> list[str]:
    """The training split's text, exactly what the LM will see (validation text excluded)."""
    from peftbench.data.examples import load_examples

    return list(load_examples(ds, data_dir)["train"].columns["text"])


def train_bpe(texts: list[str], vocab_size: int, out: Path):
    """A byte-level BPE trained on ``texts`` (deterministic for the same corpus), saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (out / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(out))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=SPECIAL["eos"], bos_token=SPECIAL["eos"],
                                  unk_token=SPECIAL["eos"], pad_token=SPECIAL["pad"])
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out)
    return PreTrainedTokenizerFast.from_pretrained(str(out))


def gpt2_config(arch: dict[str, Any], tok):
    from transformers import GPT2Config

    arch = dict(arch)
    if len(tok) > int(arch.get("vocab_size", 0)):
        raise ConfigError(f"tokenizer has {len(tok)} tokens but the arch vocab_size is {arch.get('vocab_size')}",
                          option="model.arch_defaults.vocab_size")
    return GPT2Config(**arch, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Study entry point (``study: peftbench.studies.pretrain.pretrain``): returns record sections."""
    import lightning as L
    import torch
    from transformers import GPT2LMHeadModel

    from peftbench.data.datamodule import TaskDataModule
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import CausalLM
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.measure import throughput as tp

    size = str(cfg.model_size.name)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("model_type") != "gpt2":
        raise ConfigError(f"the pretrain study builds GPT-2 models; model '{model_cfg.get('family')}' is "
                          f"{model_cfg.get('model_type')}", option="model")
    if size not in (model_cfg.get("sizes") or {}):
        raise ConfigError(f"model family '{model_cfg['family']}' has no size '{size}'; its sizes: "
                          f"{', '.join(model_cfg.get('sizes') or {})}", option="model_size")
    arch = dict(model_cfg.get("arch_defaults") or {})
    arch.update((model_cfg["sizes"][size] or {}).get("arch") or {})
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    if ds.get("task") != "causal_lm" or ds.get("format") != "text":
        raise ConfigError(f"pretraining needs a plain-text corpus (task causal_lm, format text); '{ds['name']}' is not",
                          option="dataset")
    if int(ds.get("block_size", ds.get("max_length", 128))) > int(arch.get("n_positions", 1024)):
        raise ConfigError("dataset.block_size exceeds the model's n_positions", option="dataset.block_size")
    pcfg = cfg.get("pretrain") or {}
    out_dir = Path(str(pcfg.get("out_dir") or Path(cfg.paths.cache_dir) / "pretrained" / f"{model_cfg['family']}-{size}"))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    texts = corpus_texts(ds, cfg.paths.get("data_dir"))
    tok_dir = out_dir.parent / f"{model_cfg['family']}-tokenizer-{ds['name']}-{int(arch['vocab_size'])}"
    tok_dir.parent.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(texts, int(arch["vocab_size"]), tok_dir)
    timings["tokenizer_s"] = time.perf_counter() - t0

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = GPT2LMHeadModel(gpt2_config(arch, tok))  # random init from the seed: pretraining from scratch
    counts = pm.count_params(model, pm.base_param_names(model))
    dm = TaskDataModule(ds, cfg.paths.get("data_dir"), batch_size=int(cfg.data.batch_size),
                        eval_batch_size=int(cfg.data.eval_batch_size), num_workers=int(cfg.data.num_workers),
                        seed=int(cfg.seed), cache_dir=Path(cfg.paths.cache_dir) / "tokenized")
    dm.set_tokenizer(tok)
    dm.setup("fit")
    lit = PeftLitModule(model, CausalLM(), OmegaConf.to_container(cfg.optim, resolve=True))
    memcb, thr = mem.MemoryCallback(), tp.ThroughputCallback(warmup_steps=int(cfg.measure.warmup_steps))
    tkw = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    trainer = L.Trainer(default_root_dir=str(cfg.paths.output_dir), logger=False, callbacks=[memcb, thr],
                        enable_checkpointing=False, **tkw)
    t = time.perf_counter()
    trainer.fit(lit, train_dataloaders=dm.train_dataloader())
    timings["fit_s"] = time.perf_counter() - t
    metrics: dict[str, float] = {}
    for r in trainer.validate(lit, dataloaders=dm.val_dataloader(), verbose=False):
        metrics.update({k: float(v) for k, v in r.items()})

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lit.model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    info = {"corpus": ds["name"], "steps": int(trainer.global_step), "seed": int(cfg.seed), "arch": arch,
            "metrics": metrics, "run_dir": str(cfg.paths.output_dir)}
    (tmp / "pretrain.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    if out_dir.exists():  # a re-run replaces the previous weights as a whole, never half
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("pretrained %s-%s (%d steps, val ppl %.2f) → %s", model_cfg["family"], size, trainer.global_step,
             metrics.get("val/ppl", float("nan")), out_dir)

    memory = memcb.summary()
    memory.update({f"analytic_{k}": v for k, v in mem.analytic_memory(lit.model).items()})
    counts.update(changed=counts["total"], stored_bytes=pm.stored_bytes(sorted(out_dir.glob("*.safetensors"))),
                  delta_rank=None)
    return {
        "metrics": metrics, "params": counts, "memory": memory, "speed": thr.summary(), "timings": timings,
        "model": {"family": model_cfg["family"], "size": size, "checkpoint": "config", "total": counts["total"]},
        "method": {"name": "pretrain", "family": "full", "hparams": {"from_scratch": True}},
        "dataset": dm.describe(),
        "extra": {"out_dir": str(out_dir), "tokenizer": f"byte-level BPE, {len(tok)} tokens, trained on {ds['name']}",
                  "optimizer_steps": int(trainer.global_step)},
    }
