"""Useful-token throughput (issue 11): dynamic padding, length grouping and packing keep labels,
loss masks and attention right, and padded vs unpadded evaluation gives the same metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftbench.data.collate import LengthGroupedBatchSampler, PadCollator
from peftbench.data.packing import PackedCollator, pack
from peftbench.data.tokenize import IGNORE

SFT = [  # prompt tokens masked (-100), response tokens as labels
    {"input_ids": [5, 6, 7, 8], "attention_mask": [1] * 4, "labels": [IGNORE, IGNORE, 7, 8]},
    {"input_ids": [9, 10, 11], "attention_mask": [1] * 3, "labels": [IGNORE, 10, 11]},
    {"input_ids": [12, 13, 14, 15, 16], "attention_mask": [1] * 5, "labels": [IGNORE, IGNORE, IGNORE, 15, 16]},
]


@pytest.mark.parametrize("fixed", [None, 16])
def test_padding_keeps_labels_and_loss_masks_aligned(fixed):
    b = PadCollator(pad_id=0, pad_to_multiple_of=8, fixed_length=fixed)(SFT)
    assert b["input_ids"].shape == (3, fixed or 8)
    for row, ex in enumerate(SFT):
        n = len(ex["input_ids"])
        assert b["input_ids"][row, :n].tolist() == ex["input_ids"]
        assert b["labels"][row, :n].tolist() == ex["labels"]
        assert (b["labels"][row, n:] == IGNORE).all() and (b["attention_mask"][row, n:] == 0).all()
        assert (b["attention_mask"][row, :n] == 1).all()
    cls = PadCollator(0)([{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 1},
                          {"input_ids": [3], "attention_mask": [1], "labels": 0}])
    assert cls["labels"].tolist() == [1, 0]


def test_packing_keeps_labels_positions_and_boundaries():
    rows = pack(SFT, max_length=8)
    assert [r["seq_lengths"] for r in rows] == [[4, 3], [5]]
    r = rows[0]
    assert r["input_ids"] == SFT[0]["input_ids"] + SFT[1]["input_ids"]
    assert r["position_ids"] == [0, 1, 2, 3, 0, 1, 2]
    # each example's first label ignored: never predict across a boundary; the rest unchanged
    assert r["labels"] == [IGNORE] + SFT[0]["labels"][1:] + [IGNORE] + SFT[1]["labels"][1:]
    assert sum(l != IGNORE for row in rows for l in row["labels"]) == sum(l != IGNORE for e in SFT for l in e["labels"])
    coll = PackedCollator(pad_id=0)
    b = coll(rows)
    assert "attention_mask" not in b and b["input_ids"].shape == (2, 8)
    assert b["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 0]  # padding: a segment of its own
    assert b["labels"][0, 7] == IGNORE and b["labels"][1, 5:].eq(IGNORE).all()
    assert coll.useful == 12 and coll.tokens == 16 and coll.padding_fraction == pytest.approx(0.25)


def _tiny_causal(family: str):
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=64, num_attention_heads=2, num_hidden_layers=2)
    cfg = {"llama": lambda: tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
           "qwen2": lambda: tf.Qwen2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
           "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64)}[family]()
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_packed_examples_do_not_attend_across_boundaries(family, attn):
    """A packed example's logits equal the example run alone: no attention to its neighbours."""
    model = _tiny_causal(family)
    model.config._attn_implementation = attn
    for m in model.modules():
        if hasattr(m, "config"):
            m.config._attn_implementation = attn
    b = PackedCollator(pad_id=0)(pack(SFT, max_length=16))
    with torch.no_grad():
        packed = model(**b).logits[0]
        start = 0
        for ex in SFT:
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + n], alone, atol=1e-5, rtol=1e-4)
            start += n


def test_length_grouping_covers_every_example_once_and_cuts_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 64, (400,), generator=g).tolist()
    s = LengthGroupedBatchSampler(lengths, batch_size=16, seed=1, bucket_batches=5)
    e0, e1 = list(s), list(s)
    assert sorted(i for b in e0 for i in b) == list(range(400)) and len(e0) == len(s)
    assert e0 != e1  # re-drawn every epoch: training order stays random
    padded = lambda batches: sum(max(lengths[i] for i in b) * len(b) for b in batches)  # noqa: E731
    rand = torch.randperm(400, generator=g).tolist()
    assert padded(e0) < 0.8 * padded([rand[k:k + 16] for k in range(0, 400, 16)])


def _grouped(n: int, seed: int):
    """A maker of identical length-grouped samplers (batch 8, buckets of 4) over n random lengths."""
    lengths = torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
    return lambda: LengthGroupedBatchSampler(lengths, batch_size=8, seed=3, bucket_batches=4)


def test_length_grouping_resumes_where_a_checkpoint_stopped():
    """A resumed run continues its epoch's batches (not the epoch's start) and its epoch's order
    (Lightning never calls set_epoch on a batch sampler); a save on an epoch's last batch goes on
    with the next epoch."""
    make = _grouped(100, seed=0)
    run = make()
    epochs = [list(run) for _ in range(3)]
    fresh = make()
    assert fresh.resume_at(1, 5) == (1, 5) and list(fresh) == epochs[1][5:] and list(fresh) == epochs[2]
    fresh = make()
    assert fresh.resume_at(0, len(fresh)) == (1, 0) and list(fresh) == epochs[1]


@pytest.mark.parametrize("n", [100, 104, 20])
def test_length_grouping_shards_an_epoch_over_ranks(n):
    """Under DDP each rank takes every world-th batch of the same epoch, epoch after epoch: together
    they cover the single-process epoch, every rank the same number of batches (the short one
    padded with the epoch's first batches)."""
    make = _grouped(n, seed=1)
    single = make()
    ranks = [make() for _ in range(3)]
    for r, s in enumerate(ranks):
        s.set_shard(r, 3)
    for _ in range(2):
        whole, shares = list(single), [list(s) for s in ranks]
        assert [len(x) for x in shares] == [len(s) for s in ranks] == [-(-len(whole) // 3)] * 3
        dealt = [b for k in range(len(shares[0])) for b in (x[k] for x in shares)]
        assert dealt[:len(whole)] == whole and all(b in whole[:3] for b in dealt[len(whole):])


def test_a_sharded_length_grouped_run_resumes_inside_its_rank_share():
    """A DDP rank's checkpoint counts its own batches; the resumed rank continues its share of
    that epoch (a plain sampler under DDP restarts the epoch: Lightning re-wraps it)."""
    from types import SimpleNamespace

    from peftbench.run.resume import TrainableCheckpoint

    make = _grouped(100, seed=0)
    run = make()
    run.set_shard(1, 2)
    epochs = [list(run) for _ in range(2)]
    resumed = make()
    resumed.set_shard(1, 2)
    cb = TrainableCheckpoint(Path("unused"), 10, "rid", resumed)
    cb.on_load_checkpoint(SimpleNamespace(world_size=2), None,
                          {"global_step": 9, "peftbench": {"epoch": 1, "epoch_batches_done": 2}})
    assert list(resumed) == epochs[1][2:]


def test_evaluation_loaders_split_themselves_over_ranks():
    """With more than one rank the evaluation loaders carry their own distributed sampler (Lightning
    injects none when length grouping turns that off): unpadded under DDP, padded otherwise."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    from peftbench.run.predictions import eval_loader

    loader = torch.utils.data.DataLoader(list(range(7)), batch_size=2)
    rows = lambda shard: [int(i) for b in eval_loader(loader, row_ids=False, shard=shard) for i in b]
    assert isinstance(eval_loader(loader, row_ids=False, shard=(0, 2, True)).sampler, UnrepeatedDistributedSampler)
    assert sorted(rows((0, 2, True)) + rows((1, 2, True))) == list(range(7))
    padded = rows((0, 2, False)) + rows((1, 2, False))
    assert len(padded) == 8 and set(padded) == set(range(7))
    assert rows(None) == list(range(7))


def _tiny_bert_eval(compose_run):
    """A tiny BERT classifier and a maker of its SST-2 data module (96 validation rows) with the
    dataset options given."""
    from omegaconf import OmegaConf

    from peftbench.config.plan import make_plan
    from peftbench.data.datamodule import TaskDataModule
    from peftbench.models import load_model, load_tokenizer

    cfg = compose_run("model=bert", "model_size=tiny", "method=lora", "dataset.val_limit=96")
    plan = make_plan(cfg)
    tok = load_tokenizer(plan.spec)
    model = load_model(plan.spec, plan.task, plan.num_labels, tok, {}, init_seed=0).eval()

    def datamodule(**options):
        ds = {**OmegaConf.to_container(cfg.dataset, resolve=True), **options}
        dm = TaskDataModule(ds, None, batch_size=8, eval_batch_size=32, examples=plan.examples,
                            cache_dir=cfg.paths.cache_dir + "/tokenized")
        dm.set_tokenizer(tok)
        dm.setup("fit")
        return dm

    return model, datamodule


def _validate(model, loader):
    """(metrics, per-example records) of one validation pass over ``loader``."""
    import lightning as L

    from peftbench.lit import PeftLitModule
    from peftbench.lit.tasks import make_task

    lit = PeftLitModule(model, make_task("classification", 2), {"name": "adamw", "lr": 1e-3})
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return trainer.validate(lit, dataloaders=loader, verbose=False)[0], lit.examples.get("val")


def test_padded_and_unpadded_evaluation_give_identical_metrics(compose_run):
    """The same model evaluated with padding to 64 and with dynamic padding: same loss, same acc."""
    model, datamodule = _tiny_bert_eval(compose_run)
    out = {}
    for padding in ("max_length", "dynamic"):
        dm = datamodule(padding=padding)
        width = next(iter(dm.val_dataloader()))["input_ids"].shape[1]
        assert (width == 64) == (padding == "max_length")
        out[padding] = _validate(model, dm.val_dataloader())[0]
    assert out["max_length"]["val/loss"] == pytest.approx(out["dynamic"]["val/loss"], abs=1e-5)
    assert out["max_length"]["val/acc"] == out["dynamic"]["val/acc"]


def test_length_sorted_evaluation_pads_less_and_changes_no_record(compose_run):
    """``dataset.group_by_length``: evaluation batches sorted by length (longest first) pad less,
    and give the metrics and the per-example records (stored by row id) of the split's own order;
    split over ranks, each row is scored once."""
    from peftbench.run.predictions import eval_loader

    model, datamodule = _tiny_bert_eval(compose_run)
    dm = datamodule(group_by_length=True)
    assert dm.groups_by_length
    loaders = {s: eval_loader(dm.val_dataloader(), row_ids=True, by_length=s) for s in (False, True)}
    width = {s: [b["input_ids"].shape[1] for b in loaders[s]] for s in loaders}
    assert width[True] == sorted(width[True], reverse=True)
    assert sum(width[True]) < sum(width[False])  # same batch count (32 rows), narrower batches
    (m0, rows0), (m1, rows1) = _validate(model, loaders[False]), _validate(model, loaders[True])
    assert m1["val/acc"] == m0["val/acc"] and m1["val/loss"] == pytest.approx(m0["val/loss"], abs=1e-5)
    assert rows1 == rows0 and rows0["ids"] == list(range(96))  # label and prediction of each row
    shards = [[int(i) for b in eval_loader(dm.val_dataloader(), row_ids=True, by_length=True, shard=(r, 2, True))
               for i in b["row_ids"]] for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(96))


@pytest.mark.parametrize("option,value,refused", [("trainer.limit_val_batches", 2, True),
                                                  ("+trainer.limit_test_batches", 0.5, True),
                                                  ("trainer.limit_val_batches", 1.0, False)])
def test_batch_limits_with_length_sorted_evaluation_are_refused(compose_run, option, value, refused):
    """Sorted evaluation batches: a batch limit would score the longest rows only (1.0 = all rows)."""
    from peftbench.config.plan import check_eval_limits
    from peftbench.errors import ConfigError

    cfg = compose_run(f"{option}={value}", "dataset.group_by_length=true")
    if not refused:
        check_eval_limits(cfg)
        return
    with pytest.raises(ConfigError, match="longest rows") as e:
        check_eval_limits(cfg)
    assert e.value.option == option.lstrip("+")
    check_eval_limits(compose_run(f"{option}={value}"))  # unsorted evaluation: the user's limit stands


def test_an_empty_text_is_refused_at_tokenization(tmp_path):
    """A decoder's tokenizer adds no token to an empty text: a row with nothing to classify (a batch
    of only such rows, which sorted evaluation gathers, has width 0) is refused, naming the row."""
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir
    from peftbench.data.examples import SplitExamples
    from peftbench.data.tokenize import tokenize_split
    from peftbench.errors import DataError
    from peftbench.models import load_tokenizer, resolve_spec

    tok = load_tokenizer(resolve_spec(OmegaConf.load(conf_dir() / "model" / "llama.yaml"), "tiny"))
    ds = {"name": "texts", "task": "classification", "max_length": 8}
    ok = tokenize_split(SplitExamples("train", "x.tsv", {"text": ["a film", "bad"], "label": [1, 0]}), tok, ds, tmp_path)
    assert len(ok) == 2
    empty = SplitExamples("validation", "y.tsv", {"text": ["a film", ""], "label": [1, 0]})
    with pytest.raises(DataError, match=r"y.tsv \(validation\): row 1 tokenizes to no token"):
        tokenize_split(empty, tok, ds, tmp_path)


def test_throughput_totals_count_timed_tokens_and_attention_pairs():
    """The record's timed totals (issue 25): tokens, useful tokens and Σ rows·s² (what dense attention's
    QKᵀ and AV scale with) over the optimizer steps past warm-up, from the batch shapes."""
    from types import SimpleNamespace

    from peftbench.measure.throughput import ThroughputCallback

    thr = ThroughputCallback(warmup_steps=1)
    trainer = SimpleNamespace(global_step=0, world_size=1, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    thr.on_train_start(trainer, None)
    shapes = [(2, 8, 5), (2, 4, 3), (3, 6, 2)]  # (rows, padded length, useful tokens per row)
    for i, (rows, s, useful) in enumerate(shapes):
        mask = torch.zeros(rows, s, dtype=torch.long)
        mask[:, :useful] = 1
        batch = {"input_ids": torch.ones(rows, s, dtype=torch.long), "attention_mask": mask}
        thr.on_train_batch_start(trainer, None, batch, i)
        trainer.global_step += 1
        thr.on_train_batch_end(trainer, None, None, batch, i)
    thr.on_train_end(trainer, None)
    out = thr.summary()
    timed = shapes[1:]  # the first step is warm-up
    assert out["train_tokens"] == sum(r * s for r, s, _ in timed)
    assert out["train_useful_tokens"] == sum(r * u for r, _, u in timed)
    assert out["train_attn_pairs"] == sum(r * s * s for r, s, _ in timed)
    assert out["train_time_s"] == pytest.approx(sum(thr.step_times))
    assert out["train_cpu_s"] == pytest.approx(sum(thr.step_cpu_times)) and len(thr.step_cpu_times) == 2
    assert out["train_tokens_per_s"] == pytest.approx(out["train_tokens"] / out["train_time_s"])


def _padding_driver():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / "padding_sst2" / "driver.py"
    spec = importlib.util.spec_from_file_location("padding_driver", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_padding_table_is_made_from_the_run_records(tmp_path):
    """The padding report's table comes from runs/*/results.json alone: rotated order per round, the
    measured ratio (median, range) beside the token-count and FLOP predictions, all derived here."""
    import json

    drv = _padding_driver()
    assert [drv.order(r) for r in range(3)] == [["fixed-64", "dynamic", "length-grouped"],
                                                ["dynamic", "length-grouped", "fixed-64"],
                                                ["length-grouped", "fixed-64", "dynamic"]]
    d, ff, L, added = 8, 16, 2, 10
    arch = {"hidden_size": d, "intermediate_size": ff, "num_hidden_layers": L}
    # (samples, tokens, useful, Σ rows·s²) per setting; times per round chosen by hand
    counts = {"fixed-64": (32, 32 * 64, 320, 32 * 64 * 64), "length-grouped": (32, 32 * 16, 320, 32 * 16 * 16)}
    times = {"fixed-64": [4.0, 5.0, 4.0], "length-grouped": [1.0, 1.0, 0.5]}
    for r in range(3):
        for pos, mode in enumerate(m for m in drv.order(r) if m in counts):
            n, tok, useful, pairs = counts[mode]
            t = times[mode][r]
            rec = {"config": {"model": {"sizes": {"x": {"arch": arch}}}, "model_size": {"name": "x"}},
                   "params": {"added": added}, "metrics": {"val/acc": 0.5}, "budget": {"optimizer_steps": 2},
                   "speed": {"train_time_s": t, "train_samples_per_s": n / t, "train_tokens": tok,
                             "train_useful_tokens": useful, "train_attn_pairs": pairs}}
            (tmp_path / "runs" / f"r{r}-p{pos}-{mode}").mkdir(parents=True)
            (tmp_path / "runs" / f"r{r}-p{pos}-{mode}" / "results.json").write_text(json.dumps(rec))
    drv.table(tmp_path)
    text = (tmp_path / "table.md").read_text()
    ratios = sorted((320 / times["length-grouped"][r]) / (320 / times["fixed-64"][r]) for r in range(3))  # 4, 5, 8
    n_lin = L * (4 * d * d + 2 * d * ff) + added
    flops = {m: 2 * n_lin * c[1] + 4 * d * L * c[3] for m, c in counts.items()}
    flop_ratio = flops["fixed-64"] / flops["length-grouped"]  # the same useful tokens in both
    row = next(line for line in text.splitlines() if line.startswith("| length-grouped | 16.0 | 10.0 |"))
    assert f"{ratios[1]:.2f}× [{ratios[0]:.2f}–{ratios[2]:.2f}]" in row
    assert f"| {64 / 16:.2f}× | {flop_ratio:.2f}× |" in row  # token-count ratio, then the FLOP ratio
    assert "length-grouped → fixed-64" in text  # the rotated order is shown per round
    verdict = "does not explain" if not ratios[0] <= flop_ratio <= ratios[2] else "is consistent"
    assert verdict in text.split("FLOP count explain")[1]
