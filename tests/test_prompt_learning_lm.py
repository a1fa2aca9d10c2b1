"""Prompt-learning methods on a causal LM: prompt tuning and p-tuning prepend virtual tokens, so
peft's logits are longer than the labels; evaluation must score the labelled positions only
(the bug: `tensor a (147) must match tensor b (127)` on the first validation of a llama run)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from peftbench.data.tokenize import IGNORE
from peftbench.methods._prompt_base import PromptLearning
from peftbench.methods.registry import available_methods, get_method

PROMPT_METHODS = [n for n in available_methods() if issubclass(get_method(n), PromptLearning)]
WORDS = "the river runs past an old mill where children watch boats drift toward the quiet sea".split()


def test_the_registry_has_the_prompt_learning_methods():
    assert {"prompt_tuning", "p_tuning", "prefix_tuning", "p_tuning_v2"} <= set(PROMPT_METHODS)


def _corpus(tmp_path: Path) -> Path:
    """A small plain-text corpus (offline): enough lines for a few blocks in train and validation."""
    d = tmp_path / "corpus"
    d.mkdir()
    lines = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)) + "." for i in range(80)]
    (d / "wiki_demo.txt").write_text("\n\n".join(lines) + "\n")
    return d


@pytest.mark.parametrize("model", ["llama", "gpt2"])
@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_prompt_learning_trains_and_evaluates_a_causal_lm(method, model, tmp_path, compose_run):
    """Two steps of LM on a tiny model, validated during fit (a curve point) and at the end."""
    from peftbench.train import train

    virtual, block = 4, 32
    cfg = compose_run(f"model={model}", "model_size=tiny", f"method={method}", "dataset=wiki_demo",
                      f"dataset.local.dir={_corpus(tmp_path)}", f"dataset.block_size={block}",
                      f"dataset.max_length={block}", "dataset.val_limit=4", f"method.num_virtual_tokens={virtual}",
                      "trainer.max_steps=2", "data.batch_size=4", "data.eval_batch_size=4",
                      "measure.curve_points=1", "measure.curve_max_examples=4", "measure.inference_overhead=false",
                      "measure.changed=false", "forgetting.enabled=false", "checkpoint.enabled=false",
                      "perf.num_threads=1")
    rec = train(cfg)
    assert rec["status"] == "ok", rec.get("error")
    assert math.isfinite(rec["metrics"]["val/loss"])
    assert 0.0 <= rec["metrics"]["val/token_acc"] <= 1.0
    assert [p[0] for p in rec["curves"]["val"]["points"]] == [2]  # one point, at the last step


def test_causal_lm_eval_scores_only_the_labelled_positions():
    """peft prompt tuning returns num_virtual_tokens more logits than labels; the evaluation's
    per-row token counts and losses are those of the labels alone, as without virtual tokens."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from peftbench.lit.tasks import CausalLM, label_logits, token_losses

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=64)).eval()
    virtual, rows, length = 5, 3, 7
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual))
    ids = torch.randint(1, 50, (rows, length))
    labels = ids.clone()
    labels[0, :3] = IGNORE  # a masked prompt in one row
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    task = CausalLM()
    metrics = task.metrics()
    with torch.no_grad():
        logits = model(**batch).logits
        assert logits.shape[1] == length + virtual  # the mismatch the task must absorb
        task.evaluate(model, batch, metrics)
    kept = task.pop_examples()
    assert kept["tokens"].tolist() == [int((labels[r, 1:] != IGNORE).sum()) for r in range(rows)]
    expected, _ = token_losses(logits[:, virtual:-1], labels[:, 1:])
    assert torch.allclose(kept["loss"], expected)
    assert label_logits(logits, labels).shape[1] == length
