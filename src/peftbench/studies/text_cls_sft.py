"""Seed study 2: text classification with a causal LM as instruction-style SFT.

Each labelled example becomes a prompt ("classify into one of <label set>: <text>") with the label
name as the response; the method (LoRA by default) is trained with the response-only SFT loss of
every other causal-LM run. Accuracy comes from *generated* labels (greedy decoding, the first line
of the answer matched to a label name), not from logits over the label set — what a user of the
fine-tuned chat model would see. Outputs naming no label count as wrong (``val/valid_label_rate``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ConfigError

PROMPT = "Classify the text into one of these labels: {labels}.\nText: {text}\nAnswer with the label only."


def to_sft(ex, label_names: list[str]):
    """Classification examples (text, label id) → prompt/response examples."""
    from peftbench.data.examples import SplitExamples

    labels = ", ".join(label_names)
    prompts = [PROMPT.format(labels=labels, text=t) for t in ex.columns["text"]]
    return SplitExamples(ex.split, ex.source, {"prompt": prompts,
                                               "response": [label_names[i] for i in ex.columns["label"]]})


def parse_label(generated: str, label_names: list[str]) -> int | None:
    """The label the answer names: exact first line, else the label it starts with (longest first)."""
    line = generated.strip().splitlines()[0].strip().strip(".:'\"").lower() if generated.strip() else ""
    names = [n.lower() for n in label_names]
    if line in names:
        return names.index(line)
    for n in sorted(names, key=len, reverse=True):
        if line.startswith(n):
            return names.index(n)
    return None


def generated_accuracy(model, tok, prompts: list[str], gold: list[int], label_names: list[str],
                       use_chat_template: bool, batch_size: int = 16, max_new_tokens: int = 8) -> dict[str, float]:
    import torch

    from peftbench.data.tokenize import render_prompt

    side, tok.padding_side = tok.padding_side, "left"  # generation continues at the right edge
    model.eval()
    correct = valid = 0
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render_prompt(tok, p, use_chat_template) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for j, seq in enumerate(out[:, enc["input_ids"].shape[1]:]):
                pred = parse_label(tok.decode(seq, skip_special_tokens=True), label_names)
                valid += pred is not None
                correct += pred == gold[i + j]
    finally:
        tok.padding_side = side
    n = max(1, len(prompts))
    return {"val/acc": correct / n, "val/valid_label_rate": valid / n, "val/n_generated": float(len(prompts))}


def text_cls_sft(cfg: DictConfig) -> dict[str, Any]:
    """Study entry point (``study: peftbench.studies.text_cls_sft.text_cls_sft``)."""
    import lightning as L

    from peftbench.build import check_numbers
    from peftbench.data.datamodule import TaskDataModule
    from peftbench.data.examples import load_examples
    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import CausalLM
    from peftbench.measure import memory as mem
    from peftbench.measure import params as pm
    from peftbench.methods.registry import get_method
    from peftbench.models import load_model, load_tokenizer
    from peftbench.models.loading import build_context
    from peftbench.models.spec import resolve_spec

    check_numbers(cfg)
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    label_names = list(ds.get("label_names") or [])
    if ds.get("task") != "classification" or not label_names:
        raise ConfigError(f"text-classification SFT needs a classification dataset with label_names; "
                          f"'{ds['name']}' has none", option="dataset")
    spec = resolve_spec(cfg.model, cfg.model_size.name)
    if "causal_lm" not in spec.tasks:
        raise ConfigError(f"model family '{spec.family}' is not a causal LM", option="model")
    method = get_method(cfg.method.name).from_config(OmegaConf.to_container(cfg.method, resolve=True))
    ctx = build_context(spec, "causal_lm")
    method.check(ctx)
    raw = load_examples(ds, cfg.paths.get("data_dir"))
    examples = {k: to_sft(v, label_names) for k, v in raw.items()}
    sft_ds = {**ds, "task": "causal_lm", "format": "prompt_response", "name": f"{ds['name']}_sft",
              "max_length": int((cfg.get("textcls") or {}).get("max_length", 160))}
    tc = cfg.get("textcls") or {}
    timings: dict[str, float] = {}

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t = time.perf_counter()
    tok = load_tokenizer(spec)
    model = load_model(spec, "causal_lm", 0, tok, method.load_kwargs(ctx), init_seed=int(cfg.model.get("init_seed", 0)))
    timings["load_model_s"] = time.perf_counter() - t
    base_names = pm.base_param_names(model)
    val = raw["validation"]
    n = min(len(val), int(tc.get("eval_limit") or len(val)))

    def accuracy(m) -> dict[str, float]:
        return generated_accuracy(m, tok, examples["validation"].columns["prompt"][:n], list(val.columns["label"][:n]),
                                  label_names, bool(ds.get("use_chat_template", True)),
                                  batch_size=int(cfg.data.eval_batch_size), max_new_tokens=int(tc.get("max_new_tokens", 8)))

    zero_shot: dict[str, float] = {}
    if tc.get("zero_shot", True):  # the base model prompted the same way: what fine-tuning adds
        t = time.perf_counter()
        zero_shot = {f"{k}_zero_shot": v for k, v in accuracy(model).items() if k != "val/n_generated"}
        timings["zero_shot_s"] = time.perf_counter() - t
    model = method.apply(model, ctx)
    counts = pm.count_params(model, base_names)
    dm = TaskDataModule(sft_ds, cfg.paths.get("data_dir"), batch_size=int(cfg.data.batch_size),
                        eval_batch_size=int(cfg.data.eval_batch_size), seed=int(cfg.seed),
                        cache_dir=Path(cfg.paths.cache_dir) / "tokenized", examples=examples)
    dm.set_tokenizer(tok)
    dm.setup("fit")
    lit = PeftLitModule(model, CausalLM(), OmegaConf.to_container(cfg.optim, resolve=True))
    memcb = mem.MemoryCallback()
    tkw = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if v is not None}
    trainer = L.Trainer(default_root_dir=str(cfg.paths.output_dir), logger=False, callbacks=[memcb],
                        enable_checkpointing=False, **tkw)
    t = time.perf_counter()
    model.train()
    trainer.fit(lit, train_dataloaders=dm.train_dataloader())
    timings["fit_s"] = time.perf_counter() - t
    metrics: dict[str, float] = {}
    for r in trainer.validate(lit, dataloaders=dm.val_dataloader(), verbose=False):
        metrics.update({f"{k}_sft" if k == "val/token_acc" else k: float(v) for k, v in r.items()})
    t = time.perf_counter()
    metrics.update(accuracy(lit.model), **zero_shot)
    timings["generate_s"] = time.perf_counter() - t
    return {
        "metrics": metrics, "params": {**counts, "delta_rank": None}, "memory": memcb.summary(), "timings": timings,
        "model": {"family": spec.family, "size": spec.size, "checkpoint": spec.source,
                  "total": counts["total"] - counts.get("added", 0)},
        "method": {"name": method.name, "family": method.family, "hparams": method.hparams()},
        "dataset": {**dm.describe(), "name": ds["name"], "task": "classification (as SFT)"},
        "extra": {"prompt": PROMPT, "label_names": label_names, "optimizer_steps": int(trainer.global_step)},
    }
