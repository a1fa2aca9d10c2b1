"""The researcher-facing CLI: help on every command, `peftbench list` (fast, truthful),
Hydra tab completion for peftbench-train, progress lines in a non-TTY log and the run summary."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftbench.cli.listing import listing, method_info
from peftbench.cli.main import build_parser
from peftbench.config.paths import conf_dir

BIN = Path(sys.executable).parent


def _subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


@pytest.mark.parametrize("cmd", [None, *_subcommands()])
def test_help_on_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(([cmd] if cmd else []) + ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: peftbench" + (f" {cmd}" if cmd else ""))
    assert len(text.splitlines()) >= 4


def test_every_subcommand_is_there():
    assert {"report", "params", "list", "export"} <= set(_subcommands())


def test_list_stays_light():
    """Models, datasets and experiments are read from yaml (no torch); methods are imported, which
    costs the torch import but never transformers, peft or Lightning."""
    code = ("import sys\nfrom peftbench.cli.listing import listing\n"
            "for what in ('models', 'datasets', 'experiments'):\n    listing(what)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('\\n'.join(listing('methods')))\n"
            "heavy = {'transformers', 'peft', 'lightning'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "reparameterized" in p.stdout and "2106.09685" in p.stdout


def test_method_listing_is_what_the_classes_declare():
    """`peftbench list methods` reads each registered class's family/summary/paper: every
    registered name, built-in or plugin, once."""
    from peftbench.methods.registry import available_methods, get_method

    names = available_methods()
    info = method_info()
    assert sorted(info) == names
    lines = {ln.split()[0]: ln for ln in listing("methods")}
    assert set(lines) == set(names)
    for name in names:
        m = get_method(name)
        assert info[name] == {"family": m.family, "summary": m.summary, "paper": m.paper}, name
        assert m.family in lines[name] and m.summary in lines[name] and m.paper in lines[name]


def test_list_models_datasets_experiments_cover_the_config_groups():
    conf = conf_dir()
    models = {ln.split()[0]: ln for ln in listing("models")}
    for f in (conf / "model").glob("*.yaml"):
        d = yaml.safe_load(f.read_text())
        assert all(size in models[f.stem] for size in d["sizes"]), f.stem
    datasets = {ln.split()[0]: ln.split()[1] for ln in listing("datasets")}
    assert datasets == {f.stem: yaml.safe_load(f.read_text())["task"] for f in (conf / "dataset").glob("*.yaml")}
    assert {ln.split()[0] for ln in listing("experiments")} == {f.stem for f in (conf / "experiment").glob("*.yaml")}


def test_list_all_and_unknown_choice():
    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0
    for section in ("methods:", "models:", "datasets:", "experiments:"):
        assert section in p.stdout.splitlines()
    p = subprocess.run([sys.executable, "-m", "peftbench.cli.main", "list", "optimizers"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "invalid choice" in p.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_hydra_bash_completion_for_peftbench_train(tmp_path):
    """The documented `eval "$(peftbench-train -sc install=bash)"`, then the real completion
    function on `peftbench-train method=lo<TAB>`."""
    script = ('eval "$(peftbench-train -sc install=bash)"\n'
              'COMP_LINE="peftbench-train method=lo"; COMP_POINT=${#COMP_LINE}; COMP_CWORD=1\n'
              'hydra_bash_completion\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    got = set(p.stdout.split())
    assert "method=lora" in got and all(c.startswith("method=lo") for c in got)


def test_progress_choice_follows_the_terminal():
    from lightning.pytorch.callbacks import RichProgressBar

    from peftbench.run.progress import PlainProgressLog, progress_callbacks

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    cbs, bar = progress_callbacks(True, 10, stream=Tty())
    assert bar is True and isinstance(cbs[0], RichProgressBar)
    cbs, bar = progress_callbacks(True, 10, stream=io.StringIO())
    assert bar is False and isinstance(cbs[0], PlainProgressLog)
    assert progress_callbacks(False, 10, stream=Tty()) == ([], False)


def test_plain_progress_lines_and_run_summary(compose_run, capfd, data_dir):
    """A non-TTY run (pytest captures stdout) logs `step N/M loss …` every log_every_n_steps and
    ends with the summary: typed counts, memory, throughput, metrics, where files went."""
    from peftbench.train import train

    cfg = compose_run("model=bert", "model_size=tiny", "method=lora", "trainer.max_steps=4",
                      "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=true", "dataset.train_limit=64",
                      "dataset.val_limit=16", "data.batch_size=8", "measure.inference_overhead=false")
    rec = train(cfg)
    assert rec["status"] == "ok", rec.get("error")
    out = capfd.readouterr().out
    steps = [ln for ln in out.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in steps] == ["2/4", "4/4"]
    assert all(" loss " in ln and " samples/s " in ln for ln in steps)
    assert "\r" not in out  # no redrawn progress bar in a log
    run_dir = Path(cfg.paths.output_dir)
    assert str(run_dir / "results.json") in out and str(run_dir / "adapter") in out
    for label in ("trainable params", "added params", "changed params", "stored bytes", "peak rss",
                  "train samples per s", "val/acc"):
        assert label in out, label
    assert f"{rec['params']['trainable']:,}" in out
