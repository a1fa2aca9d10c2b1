"""The method registry: built-ins are discovered like plugins (no list to keep), one module per
registered name, and an in-tree method is exactly two new files — checked by adding one to a copy
of the package and its conf/ and editing nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from peftbench.config.paths import conf_dir
from peftbench.methods.registry import available_methods, builtin_modules, get_method
from tests.conftest import ROOT

SRC = ROOT / "src" / "peftbench"

# The two new files of a brand-new method: a module and its yaml (nothing else is edited).
NEW_METHOD = '''"""Norm tuning — a toy selective method: only the layer norms' scale and shift (+ the task head)
train; every other tensor stays frozen."""

from dataclasses import dataclass

from peftbench.methods.base import Method, freeze, unfreeze_modules
from peftbench.methods.registry import register_method


@register_method("norm_tune")
@dataclass
class NormTune(Method):
    family = "selective"
    summary = "layer norms only (+ head): the two-file test's method"
    paper = "https://example.org/norm-tune"

    train_head: bool = True

    def apply(self, model, ctx):
        freeze(model)
        for mod in model.modules():
            if "norm" in type(mod).__name__.lower():
                mod.requires_grad_(True)
        if self.train_head and ctx.task == "classification":
            unfreeze_modules(model, ctx.head_modules)
        return model
'''
NEW_YAML = "# Norm tuning: the layer norms (+ head) train.\nname: norm_tune\ntrain_head: true\n"


def test_one_module_per_registered_name():
    """Every public module of peftbench.methods registers exactly the method it is named after,
    or nothing (the shared bases); every built-in has its conf/method/<name>.yaml."""
    names = available_methods()
    for mod in builtin_modules():
        registered = {n for n in names if get_method(n).__module__ == f"peftbench.methods.{mod}"}
        assert registered in ({mod}, set()), f"methods/{mod}.py registers {sorted(registered)}"
    builtins = [n for n in names if get_method(n).__module__.startswith("peftbench.methods.")]
    assert {"lora", "houlsby", "pfeiffer", "dora", "loha", "vera", "peft"} <= set(builtins)
    for name in builtins:
        assert get_method(name).__module__ == f"peftbench.methods.{name}", name
        assert yaml.safe_load((conf_dir() / "method" / f"{name}.yaml").read_text())["name"] == name


def _copy_tree(dest: Path) -> dict[str, str]:
    """A checkout's package + conf/ under ``dest``; the environment that imports it from there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(SRC, dest / "src" / "peftbench", ignore=ignore)
    shutil.copytree(conf_dir(), dest / "conf", ignore=ignore)
    env = {**os.environ, "PYTHONPATH": str(dest / "src"), "PEFTBENCH_CONF_DIR": str(dest / "conf"),
           "HF_HUB_OFFLINE": "1"}
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: int = 600) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, check=False)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def test_in_tree_method_is_two_new_files(tmp_path):
    """methods/norm_tune.py + conf/method/norm_tune.yaml, added to a copy of the tree: the method is
    listed, registered (so the conformance suite, parametrized from the registry, runs and passes
    it), composes as `method=norm_tune` and is counted — with no other file touched."""
    env = _copy_tree(tmp_path)
    try:
        before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
        (tmp_path / "src" / "peftbench" / "methods" / "norm_tune.py").write_text(NEW_METHOD)
        (tmp_path / "conf" / "method" / "norm_tune.yaml").write_text(NEW_YAML)
        after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
        assert after - before == {Path("src/peftbench/methods/norm_tune.py"), Path("conf/method/norm_tune.yaml")}

        code = ("import peftbench; from peftbench.methods.registry import available_methods as a; "
                "print(peftbench.__file__); print(' '.join(a()))")
        where = _run([sys.executable, "-c", code], env)
        assert where.splitlines()[0].startswith(str(tmp_path)), where  # the copy, not the checkout
        assert "norm_tune" in where.splitlines()[1].split()

        listed = _run([sys.executable, "-m", "peftbench.cli.main", "list", "methods"], env)
        line = next(ln for ln in listed.splitlines() if ln.split()[0] == "norm_tune")
        assert "selective" in line and "the two-file test's method" in line and "example.org" in line

        counted = json.loads(_run([sys.executable, "-m", "peftbench.cli.main", "params", "model=bert",
                                   "model_size=tiny", "method=norm_tune", "--json"], env))
        assert counted["method"]["name"] == "norm_tune" and counted["method"]["family"] == "selective"
        assert 0 < counted["params"]["trainable"] < counted["params"]["total"]

        # The conformance suite picks it up from the registry: it is collected, and it passes.
        suite = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "norm_tune",
                      str(ROOT / "tests" / "test_methods.py")], env)
        assert " passed" in suite and "failed" not in suite, suite[-2000:]
        assert int(suite.rsplit(" passed", 1)[0].split()[-1]) >= 6  # train, count, save × 2 tasks
    finally:
        shutil.rmtree(tmp_path / "src", ignore_errors=True)
        shutil.rmtree(tmp_path / "conf", ignore_errors=True)
