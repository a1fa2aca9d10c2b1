"""Hardening: bad numbers refused before any weight loads, security defaults, and disk failures
(read-only output dir, a crash while writing results.json) that never lose or corrupt a record."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from peftbench import results
from peftbench.config.plan import make_plan
from peftbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "peftbench"
FAST1 = ["model_size=tiny", "trainer.max_steps=1", "dataset.train_limit=16", "dataset.val_limit=8",
         "measure.inference_overhead=false", "measure.changed=false"]


# ---- bad numbers: refused by make_plan (which never loads weights), naming the option ---------------
@pytest.mark.parametrize("overrides, option", [
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-1e-3"], "optim.lr"),
    (["optim.lr=nan"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr"),
    (["data.batch_size=0"], "data.batch_size"),
    (["optim.warmup_ratio=1.5"], "optim.warmup_ratio"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay"),
    (["dataset.max_length=0"], "dataset.max_length"),
    (["dataset.max_length=4096"], "dataset.max_length"),  # bert tiny has 512 positions
    (["method=lora", "method.r=0"], "method.r"),
    (["method=lora", "method.r=-4"], "method.r"),
    (["method=prompt_tuning", "method.num_virtual_tokens=100000"], "method.num_virtual_tokens"),
    # fits alone (500 < 512) but not with the 64-token inputs: position lookup would fail in BERT
    (["method=prompt_tuning", "method.num_virtual_tokens=500"], "method.num_virtual_tokens"),
    (["model=roberta", "dataset.max_length=513"], "dataset.max_length"),  # 514 positions, offset by pad id + 1
    (["model=gpt2", "dataset=tinyshakespeare", "dataset.block_size=4096"], "dataset.block_size"),
    # integer options are refused, not rounded (1.5 → 1, 0.5 → 0 ran silently before)
    (["data.batch_size=1.5"], "data.batch_size"),
    (["dataset.max_length=0.5"], "dataset.max_length"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (["trainer.max_steps=2.5"], "trainer.max_steps"),
    (["seed=abc"], "seed"),
    (["seed=1.5"], "seed"),
    (["trainer.devices=abc"], "trainer.devices"),
    (["trainer.devices=0"], "trainer.devices"),
    (["optim.name=foo"], "optim.name"),
    (["optim.scheduler=foo"], "optim.scheduler"),
    (["method=lora", "method.r=0.5"], "method.r"),  # a method's option, by its dataclass field type
    (["method=lora", "method.alpha=true"], "method.alpha"),
    (["method=prompt_tuning", "method.num_virtual_tokens=2.5"], "method.num_virtual_tokens"),
    (["optim.name=null"], "optim.name"),
    (["trainer.devices=[]"], "trainer.devices"),
])
def test_bad_numbers_refused_before_weights(compose_run, overrides, option):
    cfg = compose_run("model=bert", "model_size=tiny", *overrides)
    with pytest.raises(ConfigError) as e:
        make_plan(cfg, load_data=False)
    assert e.value.option == option
    assert f"[{option}]" in str(e.value)


def test_a_nan_loss_is_never_recorded_ok(compose_run, data_dir):
    """Five steps at lr 1e20: NaN after the first update, before the every-10-steps check ran."""
    from peftbench.train import train

    rec = train(compose_run("model=bert", "method=lora", "optim.lr=1e20", "trainer.max_steps=5",
                            "checkpoint.enabled=false", *[o for o in FAST1 if "max_steps" not in o]))
    assert rec["status"] == "diverged", (rec["status"], rec["metrics"])
    assert "nan" in rec["error"].lower()


def test_a_non_integer_seed_is_a_refusal_not_a_traceback(compose_run):
    from peftbench.train import train

    rec = train(compose_run("seed=abc", *FAST1))
    assert rec["status"] == "refused" and "[seed]" in rec["error"]


def test_refused_run_records_status_and_writes_no_weights(compose_run):
    from peftbench.train import train

    cfg = compose_run("model=bert", "method=lora", "optim.lr=nan", *FAST1)
    rec = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert rec["status"] == "refused" and "[optim.lr]" in rec["error"]
    assert results.read(out / "results.json")["status"] == "refused"
    assert not (out / "adapter").exists()


# ---- security defaults -----------------------------------------------------------------------------
def test_trust_remote_code_false_by_default_in_every_family():
    import yaml

    for f in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        assert yaml.safe_load(f.read_text()).get("trust_remote_code", False) is False, f


def test_run_records_trust_remote_code_and_saves_only_safetensors(compose_run):
    from peftbench.train import train

    cfg = compose_run("model=bert", "method=lora", *FAST1)
    rec = train(cfg)
    assert rec["status"] == "ok", rec["error"]
    out = Path(cfg.paths.output_dir)
    on_disk = results.read(out / "results.json")
    assert on_disk["env"]["trust_remote_code"] is False
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    pickled = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle")]
    assert not pickled, pickled
    # opting in is recorded too (a refused run still says what it would have trusted)
    rec2 = train(compose_run("model=bert", "model.trust_remote_code=true", "optim.lr=0", *FAST1))
    assert rec2["status"] == "refused" and rec2["env"]["trust_remote_code"] is True


def _calls(pattern: str) -> list[tuple[Path, int, str]]:
    """Each call matching ``pattern`` in src/, with its full argument text (calls may span lines)."""
    hits = []
    for f in sorted(SRC.rglob("*.py")):
        text = f.read_text()
        for m in re.finditer(pattern, text):
            depth, i = 0, m.end() - 1
            while i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                if depth == 0:
                    break
                i += 1
            hits.append((f.relative_to(ROOT), text.count("\n", 0, m.start()) + 1, text[m.start(): i + 1]))
    return hits


def test_every_torch_load_is_weights_only():
    """Unpickling a checkpoint can execute code: every torch.load must pass weights_only=True."""
    bad = [f"{f}:{line}: {call}" for f, line, call in _calls(r"torch\.load\(") if "weights_only=True" not in call]
    assert not bad, "torch.load without weights_only=True:\n" + "\n".join(bad)


def test_no_code_execution_from_files():
    """Nothing in src/ unpickles, evals or yaml-loads unsafely; results and configs are data only."""
    pats = [r"\bpickle\.loads?\(", r"\bdill\.", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"yaml\.load\(",
            r"yaml\.unsafe_load\(", r"trust_remote_code\s*=\s*True"]
    bad = [f"{f}:{line}: {call[:80]}" for p in pats for f, line, call in _calls(p)]
    assert not bad, "\n".join(bad)


def test_report_reads_results_as_plain_json(tmp_path):
    """A results.json with a Hydra ``_target_`` in it is read as data, never instantiated."""
    from peftbench.report.collect import collect

    marker = tmp_path / "pwned"
    rec = results.empty_record(run_id="x", config={"evil": {"_target_": "builtins.open", "_args_": [str(marker), "w"]}},
                               model={"family": "bert", "size": "tiny"}, method={"name": "lora", "family": "r"},
                               dataset={"name": "sst2"})
    results.write(tmp_path / "run" / "results.json", rec)
    collect([tmp_path])
    assert not marker.exists()


# ---- disk ----------------------------------------------------------------------------------------------
def _under_a_file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file" / "run"  # its parent is a regular file: mkdir fails with ENOTDIR


@pytest.mark.parametrize("make_out", [
    _under_a_file,
    lambda tmp: Path("/proc/self/peftbench-run"),  # procfs: not writable, even for root
], ids=["parent-is-file", "procfs"])
def test_unwritable_output_dir_refused_before_training(compose_run, tmp_path, make_out):
    """chmod does not stop root, so use paths no one can create directories in."""
    from peftbench.train import train

    out = make_out(tmp_path)
    cfg = compose_run("model=bert", "method=lora", *FAST1, out=out)
    rec = train(cfg)
    assert rec["status"] == "refused"
    assert "[hydra.run.dir]" in rec["error"] and "not writable" in rec["error"]
    assert "plan_s" not in rec["timings"]  # refused before the plan, so before weights and data


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialise")


def _rec(**kw):
    return results.empty_record(run_id="r1", model={"family": "bert", "size": "tiny"},
                                method={"name": "lora", "family": "reparameterized"}, dataset={"name": "sst2"}, **kw)


def test_results_write_crash_midway_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="cannot serialise"):
        results.write(tmp_path, _rec(metrics={"a": 1.0, "z": _Unprintable()}))
    assert os.listdir(tmp_path) == []


def test_results_write_crash_keeps_previous_record(tmp_path, monkeypatch):
    """A failing rename (disk full, killed job) leaves the previous results.json intact, no temp file."""
    first = results.write(tmp_path, _rec(status="ok", metrics={"val/acc": 0.9}))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.write(tmp_path, _rec(status="failed", error="x"))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    assert json.loads(first.read_text())["metrics"] == {"val/acc": 0.9}


def test_full_output_dir_refused(tmp_path, monkeypatch):
    """A nearly full disk is found before training (the free-space figure is the OS's, faked here)."""
    import shutil
    from collections import namedtuple

    from peftbench.run.record import check_writable

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"\[hydra.run.dir\].*less than 50 MiB free"):
        check_writable(tmp_path / "out")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_sigterm_is_recorded_interrupted_and_the_process_fails(tmp_path, sig, data_dir):
    """A SLURM time limit or pre-emption sends SIGTERM: Lightning turns it into SystemExit(None),
    which used to end the process with 0 and no results.json. Now: a record, and exit 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "peftbench.train", "model=bert", "model_size=tiny", "method=lora",
           "trainer.max_steps=100000", "dataset.train_limit=64", "dataset.val_limit=16", "data.batch_size=8",
           "trainer.log_every_n_steps=1", "logger=none", f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not inside a SLURM job
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen, deadline = [], time.time() + 300
    for line in p.stdout:  # wait until it is really training
        seen.append(line)
        if line.startswith("step ") or time.time() > deadline:
            break
    p.send_signal(getattr(signal, sig))  # SIGUSR1: a scheduler's early warning, handled as SIGTERM
    try:
        rest, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert p.returncode == 143, "".join(seen[-5:]) + rest[-2000:]
    rec = results.read(out / "results.json")
    assert rec["status"] == "interrupted" and "SIGTERM" in rec["error"]


def test_job_folders_are_named_by_their_overrides():
    from peftbench.run.record import job_dir

    assert job_dir("method=lora,seed=2") == "method=lora,seed=2"
    long = ",".join(f"k{i}=v{i}" for i in range(40))
    assert job_dir(long).startswith("job-") and job_dir(long) == job_dir(long) != job_dir(long + "x")
    assert job_dir("paths.data_dir=/a/b").startswith("job-")  # never a nested folder
    assert job_dir("").startswith("job-")


def test_extending_a_sweep_never_overwrites_a_finished_run(tmp_path, data_dir):
    """`method=lora,bitfit seed=1`, then `seed=1,2` in the same sweep dir: with folders numbered by
    position, job 1 (lora, seed 2) used to train over bitfit/seed 1's finished folder. Now every
    finished record is kept untouched (skipped, not retrained); and a folder holding another
    configuration's finished run is refused, its record left as it was."""
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    common = [sys.executable, "-m", "peftbench.train", "-m", "model=bert", "model_size=tiny", "method=lora,bitfit",
              "trainer.max_steps=1", "dataset.train_limit=16", "dataset.val_limit=8", "logger=none",
              "measure.inference_overhead=false", "measure.changed=false", f"hydra.sweep.dir={sweep}"]
    env = dict(os.environ)

    def records() -> dict[tuple[str, int], str]:
        out = {}
        for f in sweep.glob("*/results.json"):
            rec = results.read(f)
            out[(rec["method"]["name"], rec["seed"])] = f.read_text()
        return out

    p = subprocess.run([*common, "seed=1"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    first = records()
    p = subprocess.run([*common, "seed=1,2"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    second = records()
    assert sorted(second) == [("bitfit", 1), ("bitfit", 2), ("lora", 1), ("lora", 2)]
    assert all(second[k] == v for k, v in first.items())  # the finished runs, byte for byte

    folder = next(f.parent for f in sweep.glob("*/results.json") if results.read(f)["method"]["name"] == "lora")
    before = (folder / "results.json").read_text()
    p = subprocess.run([sys.executable, "-m", "peftbench.train", "model=bert", "model_size=tiny", "method=ia3",
                        "trainer.max_steps=1", "dataset.train_limit=16", "dataset.val_limit=8", "logger=none",
                        f"hydra.run.dir={folder}"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 2 and "another configuration" in p.stderr + p.stdout
    assert (folder / "results.json").read_text() == before


def test_records_are_readable_by_others_and_refusal_tags_are_printed(tmp_path):
    """results.json is 0644 like every other file (mkstemp made it 0600: a cluster's other users'
    reports skipped it); the printed summary keeps a refusal's [option] tag (rich read it as markup)."""
    import io
    import os
    import stat

    from peftbench.run.summary import render_summary

    rec = results.empty_record(run_id="x", status="refused", error="[method.r] must be a finite number > 0, got 0")
    old = os.umask(0o022)
    try:
        path = results.write(tmp_path, rec)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    buf = io.StringIO()
    render_summary(rec, tmp_path, stream=buf)
    assert "[method.r] must be" in buf.getvalue()


def test_a_second_process_in_a_run_folder_is_refused(tmp_path, compose_run, data_dir):
    """Two processes in one run dir used to both train (metrics twice, a later one resuming from
    the first one's half-written checkpoint): the second is refused, naming the holder."""
    import os

    from peftbench.run.record import FolderLock
    from peftbench.train import train

    cfg = compose_run("model=bert", "method=lora", *FAST1, out=tmp_path / "run")
    with FolderLock(tmp_path / "run"):  # as another process would hold it
        rec = train(cfg)
    assert rec["status"] == "refused" and "in use by pid" in rec["error"] and str(os.getpid()) in rec["error"]
    assert not (tmp_path / "run" / "results.json").exists()  # nothing written into the holder's folder
    assert train(cfg)["status"] == "ok"  # released: the folder is free again


def test_dataset_names_never_reach_cache_paths(tmp_path):
    from omegaconf import OmegaConf

    from peftbench.config.paths import conf_dir
    from peftbench.data.examples import SplitExamples
    from peftbench.data.tokenize import tokenize_split
    from peftbench.models import load_tokenizer, resolve_spec

    tok = load_tokenizer(resolve_spec(OmegaConf.load(conf_dir() / "model" / "bert.yaml"), "tiny"))
    ex = SplitExamples("train", "x", {"text": ["a film"], "label": [1]})
    cache = tmp_path / "cache"
    cache.mkdir()
    tokenize_split(ex, tok, {"name": "../../escape", "task": "classification", "max_length": 8}, cache)
    assert not list(tmp_path.glob("escape*")) and list(cache.glob("*escape*.arrow"))


@pytest.mark.parametrize("overrides", [["seed='3'"], ["trainer.devices='0,1'", "strategy=ddp"], ["optim.scheduler=null"]])
def test_valid_spellings_are_accepted(compose_run, overrides):
    """A seed from ${oc.env:SLURM_ARRAY_TASK_ID} is the string "3"; Lightning takes devices "0,1"."""
    plan = make_plan(compose_run("model=bert", "model_size=tiny", *overrides), load_data=False)
    assert plan.seed in (1, 3)


def test_a_relaunch_spelled_differently_finds_the_finished_run(tmp_path, data_dir):
    """Job folders are named by overrides; the same configuration spelled otherwise (a default
    named, 5e-4 for 0.0005) is found finished in its sibling folder, not trained twice. A job that
    meets another configuration's folder ends the sweep with exit 2."""
    import os
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    common = [sys.executable, "-m", "peftbench.train", "-m", "model=bert", "model_size=tiny", "method=lora",
              "trainer.max_steps=1", "dataset.train_limit=16", "dataset.val_limit=8", "logger=none",
              "measure.inference_overhead=false", "measure.changed=false", f"hydra.sweep.dir={sweep}"]
    env = dict(os.environ)
    p = subprocess.run([*common, "optim.lr=5e-4"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    p = subprocess.run([*common, "optim.lr=0.0005", "seed=1"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0 and "skipping" in p.stderr + p.stdout, p.stderr[-2000:]
    assert len([f for f in sweep.glob("*/results.json")]) == 1


def test_a_nan_between_reads_is_not_lost():
    """Every step's loss is folded into the flag, not only the steps the flag is read on."""
    from types import SimpleNamespace

    import torch

    from peftbench.run.callbacks import DivergenceCallback
    from peftbench.run.failures import Diverged

    cb, trainer = DivergenceCallback(every_n_steps=100), SimpleNamespace(global_step=3)
    for i, v in enumerate([1.0, float("nan"), 0.5]):  # batch_idx 1..3: no read on the way
        cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(v)}, None, i + 1)
    with pytest.raises(Diverged, match="nan"):
        cb.on_train_end(trainer, None)
    fine = DivergenceCallback(every_n_steps=1)
    for i in range(3):
        fine.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5)}, None, i)
    fine.on_train_end(trainer, None)  # finite all along: nothing raised
