"""Forgetting (held-out perplexity / frozen-probe accuracy, before vs after) and data mixing/replay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from peftbench.data.load import load_examples, tokenize
from peftbench.data.mixing import counts, draw
from peftbench.data.tokenize import IGNORE
from peftbench.errors import ConfigError
from tests.conftest import FAST

SFT = Path(__file__).parent / "data" / "sft"
TASK = {"dataset": {"name": "pr", "task": "causal_lm", "format": "prompt_response", "val_fraction": 0.25,
                    "local": {"dir": str(SFT), "files": {"train": "prompt_response.jsonl"}}}}


@pytest.fixture(scope="module")
def tok():
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir
    from peftbench.models import resolve_spec
    from peftbench.models.loading import load_tokenizer

    return load_tokenizer(resolve_spec(OmegaConf.load(conf_dir() / "model" / "llama.yaml"), "tiny"))


def _mix(weights=(0.75, 0.25), size=20, seed=0, **extra):
    return {"name": "mixtest", "task": "causal_lm", "max_length": 32, "mix_size": size, "mix_seed": seed,
            "mix": [{**TASK, "weight": weights[0]},
                    {"dataset": "c4_demo", "weight": weights[1], "overrides": {"train_limit": 20}}], **extra}


# ------------------------------------------------------------------ mixing

def test_counts_sum_exactly_and_follow_weights():
    assert counts([0.9, 0.1], 40) == [36, 4]
    assert counts([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]
    assert sum(counts([0.7, 0.2, 0.1], 13)) == 13


def test_draw_is_without_replacement_until_exhausted():
    import random

    idx = draw(5, 12, random.Random(0))
    assert sorted(idx[:5]) == [0, 1, 2, 3, 4] and sorted(idx[5:10]) == [0, 1, 2, 3, 4] and len(idx) == 12


def test_mix_ratio_replay_and_determinism(tok, tmp_path):
    ds = _mix()
    ex = load_examples(ds, None)
    assert len(ex["train"]) == 20 and ex["train"].source.startswith("mix(pr:0.75+c4_demo:0.25")
    a = tokenize(ex["train"], tok, ds, tmp_path)
    # SFT rows open with a masked prompt; c4 blocks are trained on every token and are exactly 32 long
    kinds = ["sft" if r["labels"][0] == IGNORE else "text" for r in a]
    assert kinds.count("sft") == 15 and kinds.count("text") == 5
    assert all(len(r["input_ids"]) == 32 and r["labels"] == r["input_ids"] for r, k in zip(a, kinds) if k == "text")
    # the task has 3 training rows: 15 draws replay each of them exactly 5 times
    sft_rows = [tuple(r["input_ids"]) for r, k in zip(a, kinds) if k == "sft"]
    assert sorted(sft_rows.count(x) for x in set(sft_rows)) == [5, 5, 5]
    b = tokenize(load_examples(ds, None)["train"], tok, ds, tmp_path)
    assert a["input_ids"] == b["input_ids"]  # same seed, same mix
    c = tokenize(load_examples(_mix(seed=1), None)["train"], tok, ds, tmp_path)
    assert a["input_ids"] != c["input_ids"]  # another seed, another mix
    # evaluation is the task's own held-out split, unmixed
    val = tokenize(ex["validation"], tok, ds, tmp_path)
    assert len(val) == 1 and val[0]["labels"][0] == IGNORE


@pytest.mark.parametrize("mix,option", [
    ([{"dataset": "alpaca", "weight": 0}], r"dataset.mix\[0\].weight"),
    ([{"dataset": "alpaca", "weight": 1}, {"dataset": "nope", "weight": 1}], r"dataset.mix\[1\].dataset\] unknown dataset 'nope'"),
    ([{"dataset": "alpaca", "weight": 1}, {"dataset": "sst2", "weight": 1}], r"dataset.mix\[1\].dataset\] source 'sst2' is a classification"),
    ([{"weight": 1}], r"dataset.mix\[0\]\] each mix entry"),
])
def test_bad_mix_refused(mix, option):
    with pytest.raises(ConfigError, match=option):
        load_examples({"name": "m", "task": "causal_lm", "max_length": 32, "mix": mix}, None)


def test_bad_mix_refused_before_weights(compose_run):
    from peftbench.train import train

    rec = train(compose_run("model=llama", "model_size=tiny", "method=lora", "dataset=alpaca_mix_c4",
                            "dataset.mix=[{dataset:alpaca,weight:0.9},{dataset:c4_demo,weight:-1}]", *FAST))
    assert rec["status"] == "refused" and "dataset.mix[1].weight" in rec["error"]
    assert "load_model_s" not in rec["timings"]


# ------------------------------------------------------------------ forgetting

def test_perplexity_matches_the_models_own_loss(tok):
    """Our held-out perplexity = exp(HF's mean token loss) on the same blocks (an independent path)."""
    import torch
    import transformers

    from peftbench.config.forgetting import ForgettingPlan
    from peftbench.measure.forgetting import _blocks, perplexity

    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    texts = ["The quick brown fox jumps over the lazy dog. " * 5, "A second document about nothing at all. " * 5]
    plan = ForgettingPlan("perplexity", {"name": "t", "block_size": 16}, 3, None, 0, 2, [], [], texts, [], "mem")
    ppl, n_blocks, n_tok = perplexity(model, tok, plan)
    assert (n_blocks, n_tok) == (3, 3 * 15)
    ids = torch.tensor(_blocks(tok, texts, 16, 3, None))
    with torch.no_grad():
        ref = math.exp(model(input_ids=ids, labels=ids).loss.item())
    assert ppl == pytest.approx(ref, rel=1e-4)
    plan.max_tokens = 20  # a token cap keeps only whole blocks
    assert perplexity(model, tok, plan)[1:] == (1, 15)


def test_probe_learns_separable_features():
    import torch

    from peftbench.measure.forgetting import Probe

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 8, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 8).float() * 3
    probe = Probe(x, y.tolist(), 3)
    assert probe.accuracy(x, y.tolist()) == 1.0
    assert probe.accuracy(x, ((y + 1) % 3).tolist()) == 0.0


def test_causal_lm_run_records_forgetting(compose_run):
    from peftbench import results
    from peftbench.train import train

    cfg = compose_run("model=llama", "model_size=tiny", "method=full", "dataset=alpaca", *FAST,
                      "dataset.max_length=64", "forgetting.max_examples=4", "optim.lr=1e-2")
    rec = train(cfg)
    assert rec["status"] == "ok", rec["error"]
    f = results.read(Path(cfg.paths.output_dir) / "results.json")["forgetting"]
    assert f["measure"] == "perplexity" and f["set"] == "c4_demo" and not f["higher_is_better"]
    assert f["source"].endswith("c4_demo.jsonl") and (f["n_examples"], f["n_tokens"], f["block_size"]) == (4, 4 * 63, 64)
    assert f["before"] > 1 and math.isfinite(f["after"]) and f["after"] != f["before"]
    assert f["delta"] == pytest.approx(f["after"] - f["before"]) and f["forgot"] == pytest.approx(f["delta"])


def test_classification_probe_forgetting_on_request(compose_run):
    from peftbench.train import train

    off = train(compose_run("model=bert", "model_size=tiny", "method=lora", "dataset=sst2", *FAST))
    assert off["status"] == "ok", off.get("error")
    assert "forgetting" not in off  # auto: off for classification
    rec = train(compose_run("model=bert", "model_size=tiny", "method=full", "dataset=sst2", *FAST, "optim.lr=1e-2",
                            "forgetting.enabled=true", "forgetting.max_examples=48",
                            "forgetting.probe_train_examples=48"))
    assert rec["status"] == "ok", rec["error"]
    f = rec["forgetting"]
    assert f["measure"] == "probe_accuracy" and f["set"] == "agnews" and f["higher_is_better"]
    assert f["n_examples"] == 48 and f["probe_train_examples"] == 48
    assert 0 <= f["before"] <= 1 and 0 <= f["after"] <= 1 and f["forgot"] == pytest.approx(-f["delta"])


@pytest.mark.parametrize("overrides,message", [
    (("dataset=sst2", "forgetting.enabled=true", "forgetting.dataset=sst2"), r"\[forgetting.dataset\] the forgetting set must be a task"),
    (("dataset=alpaca", "forgetting.dataset=agnews"), r"\[forgetting.dataset\] 'agnews' is not a plain-text corpus"),
    (("dataset=alpaca", "forgetting.dataset=nope"), r"\[forgetting.dataset\] unknown dataset 'nope'"),
    (("dataset=alpaca", "forgetting.enabled=maybe"), r"\[forgetting.enabled\] must be auto"),
    (("dataset=alpaca", "forgetting.max_examples=0"), r"\[forgetting.max_examples\] must be a positive"),
])
def test_bad_forgetting_config_refused_before_weights(overrides, message, compose_run):
    import re

    from peftbench.train import train

    rec = train(compose_run("model=llama", "model_size=tiny", "method=lora", *overrides, *FAST))
    assert rec["status"] == "refused" and re.search(message, rec["error"]), rec["error"]
    assert "load_model_s" not in rec["timings"]


def test_same_model_means_zero_delta(tok):
    """before and after on an unchanged model agree exactly (the probe is trained once, on the base)."""
    import torch
    import transformers

    from peftbench.config.forgetting import ForgettingPlan
    from peftbench.measure.forgetting import ForgettingMeter

    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_labels=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    texts = [f"sample number {i} about {'sports' if i % 2 else 'markets'}" for i in range(16)]
    labels = [i % 2 for i in range(16)]
    plan = ForgettingPlan("probe_accuracy", {"name": "t", "label_names": ["a", "b"], "max_length": 16}, 16, None, 16,
                          8, texts, labels, texts, labels, "mem")
    meter = ForgettingMeter(plan, tok)
    meter.before(model)
    f = meter.after(model)
    assert f["delta"] == 0 and f["forgot"] == 0 and f["before"] > 0.5


# ------------------------------------------------------------------ report

def _record(method: str, seed: int, acc: float, before: float, after: float) -> dict:
    from peftbench import results

    return results.empty_record(
        run_id=f"{method}{seed}", seed=seed, model={"family": "llama", "size": "tiny"},
        method={"name": method, "family": "baseline" if method == "full" else "reparameterized"},
        dataset={"name": "alpaca", "task": "causal_lm"}, params={"trainable": 10.0, "total": 100.0},
        metrics={"val/token_acc": acc},
        forgetting={"measure": "perplexity", "set": "c4_demo", "n_examples": 32, "n_tokens": 4064, "block_size": 128,
                    "before": before, "after": after, "delta": after - before, "forgot": after - before,
                    "higher_is_better": False})


def test_report_shows_forgetting_column_note_csv_and_plot(tmp_path):
    from peftbench import results
    from peftbench.report import collect
    from peftbench.report.plots import make_plots
    from peftbench.report.tables import build_tables, to_csv, to_markdown

    for i, (m, s, acc, b, a) in enumerate([("full", 1, 0.5, 20.0, 26.0), ("full", 2, 0.6, 20.0, 24.0),
                                           ("lora", 1, 0.4, 20.0, 21.0)]):
        results.write(tmp_path / "runs" / str(i), _record(m, s, acc, b, a))
    coll = collect([tmp_path / "runs"])
    md = to_markdown(coll, build_tables(coll))
    assert "forgetting (before → after, Δ)" in md
    assert "20.00 → 25.00 (+5 ppl)" in md and "20.00 → 21.00 (+1 ppl)" in md  # full: mean over 2 seeds
    assert "perplexity on the held-out split of c4_demo (32 blocks of 128 tokens = 4064 scored tokens)" in md
    header, *rows = to_csv(coll).splitlines()
    cols = header.split(",")
    assert [r.split(",")[cols.index("forgetting_delta")] for r in rows] == ["5", "1"]
    plots = [p.name for p in make_plots(coll, tmp_path / "plots")]
    assert "task_vs_forgetting_alpaca.png" in plots


def test_auto_skips_without_local_general_set_but_explicit_refuses(compose_run, tmp_path, monkeypatch, data_dir):
    """auto never starts a hub download of C4; an explicit request says what is missing."""
    from peftbench.config.forgetting import plan_forgetting
    from peftbench.errors import PeftbenchError

    (tmp_path / "d" / "alpaca").mkdir(parents=True)
    (tmp_path / "d" / "alpaca" / "alpaca_en_demo.json").symlink_to(data_dir / "alpaca" / "alpaca_en_demo.json")
    monkeypatch.setenv("PEFTBENCH_DATA_DIR", str(tmp_path / "d"))
    assert plan_forgetting(compose_run("model=llama", "model_size=tiny", "dataset=alpaca")) is None
    assert plan_forgetting(compose_run("model=llama", "model_size=tiny", "dataset=alpaca",
                                       "forgetting.enabled=false")) is None
    monkeypatch.setenv("PEFTBENCH_DATA_DIR", str(data_dir))
    assert plan_forgetting(compose_run("model=llama", "model_size=tiny", "dataset=alpaca")).source.endswith("c4_demo.jsonl")
    monkeypatch.setenv("PEFTBENCH_DATA_DIR", str(tmp_path / "d"))
    with pytest.raises(PeftbenchError, match="c4"):
        plan_forgetting(compose_run("model=llama", "model_size=tiny", "dataset=alpaca", "forgetting.enabled=true"))
