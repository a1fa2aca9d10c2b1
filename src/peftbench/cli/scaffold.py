"""``peftbench new-method NAME``: a complete plugin package for a new method, ready to install.

A person edits two files — ``src/peftbench_NAME/method.py`` (the update rule) and
``src/peftbench_NAME/conf/method/NAME.yaml`` (its hyper-parameters); the rest is wiring that has to be
exactly right and is the same for every plugin: the ``peftbench.methods`` entry point, the Hydra
search-path plugin, the ``conf/__init__.py`` Hydra needs to read a ``pkg://`` config folder, the
package data, and a test that runs peftbench's conformance suite on the method.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from peftbench.errors import ConfigError

PYPROJECT = '''[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "peftbench-{dist}"
version = "0.1.0"
description = "{name}: a parameter-efficient fine-tuning method for peftbench"
requires-python = ">=3.10"
license = "Apache-2.0"
dependencies = ["peftbench"]

[project.optional-dependencies]
test = ["pytest>=8"]

# peftbench's registry finds the method class here: `method={name}` and `peftbench list methods`
[project.entry-points."peftbench.methods"]
{name} = "{pkg}.method:{cls}"

[tool.setuptools.packages.find]
where = ["src"]
namespaces = true  # hydra_plugins is a namespace package shared by every Hydra plugin

[tool.setuptools.package-data]
{pkg} = ["conf/*/*.yaml"]
'''

METHOD = '''"""{cls} — <authors, year, "title", arXiv id>.

Update rule: <one line, e.g. h' = h + s·δ, with δ trained and W frozen>.

This template trains the layer norms (and the task head): replace ``apply`` with your method. peftbench
calls, in order: ``from_config`` (the yaml's keys become the dataclass fields below; unknown keys are
refused by name), ``check(ctx)`` before any weight loads (raise ConfigError(..., option="method.<key>")
for a combination that cannot work), ``apply(model, ctx)`` on the loaded base (freeze, add, mark what
trains), then ``save``/``load`` (default: the trainable tensors as safetensors).

Export: a run whose model has no parameter beyond the base's is exported with ``--merge`` as it is. If
``apply`` adds parameters that can be folded into the base weights (a low-rank ΔW, a bias shift), set
``supports_merge = True`` and implement ``merge(model)``: return the model with exactly the base's
parameters and the same outputs (the conformance suite checks both). Otherwise leave it False and
``peftbench export --merge`` refuses, naming what the method adds.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.errors import ConfigError
from peftbench.methods.base import ApplyContext, Method, freeze, unfreeze_modules


@dataclass
class {cls}(Method):
    family = "selective"  # additive | selective | reparameterized | hybrid
    summary = "layer norms (+ the task head): replace with one line saying what trains"
    paper = ""  # https://arxiv.org/abs/…
    supports_merge = False

    # hyper-parameters: one field per key of conf/method/{name}.yaml
    train_head: bool = True

    def check(self, ctx: ApplyContext) -> None:
        super().check(ctx)  # the task is one of `tasks`
        if not ctx.head_modules and self.train_head and ctx.task == "classification":
            raise ConfigError(f"model family '{{ctx.family}}' names no head modules", option="model.head_modules")

    def apply(self, model: nn.Module, ctx: ApplyContext) -> nn.Module:
        freeze(model)
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                module.requires_grad_(True)
        if self.train_head and ctx.task == "classification":  # a fresh head must learn the labels
            unfreeze_modules(model, ctx.head_modules)
        return model
'''

YAML = '''# {cls}: <one line for `peftbench list methods`-style readers: what trains>
name: {name}
train_head: true
optim: {{lr: 1.0e-3}}  # this method's own default learning rate (an explicit optim.lr= wins)
'''

SEARCHPATH = '''"""Puts this plugin's conf/ on Hydra's search path, so `method={name}` composes."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class {cls}SearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="peftbench-{dist}", path="pkg://{pkg}.conf")
'''

TEST = '''"""peftbench's conformance suite on `{name}`: frozen weights stay put, the loss goes down,
save → load reproduces outputs, merge (where declared) keeps them — the checks every built-in passes.
Run from a peftbench checkout (the suite is its tests/test_methods.py): `pytest tests/`."""

import subprocess
import sys
from pathlib import Path

import pytest

NAME = "{name}"
CHECKS = ("test_train_frozen_and_loss", "test_trainable_count", "test_save_load_merge")


def test_registered():
    from peftbench.methods.registry import available_methods

    assert NAME in available_methods(), "not installed? pip install -e . (the entry point registers it)"


def test_conformance():
    from peftbench.config.paths import conf_dir

    root = conf_dir().parent
    suite = root / "tests" / "test_methods.py"
    if not suite.is_file():
        pytest.skip(f"peftbench's conformance suite is not beside {{root}} (install peftbench from a checkout)")
    ids = [f"{{suite}}::{{check}}[{{NAME}}-{{task}}]" for check in CHECKS for task in ("classification", "causal_lm")]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids],
                       cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
'''

README = '''# peftbench-{dist}

A peftbench plugin: `pip install -e .` here, then `peftbench-train method={name} …` and
`peftbench list methods` know it, with no edit to peftbench.

The two files you edit:
- `src/{pkg}/method.py` — the method: a dataclass of hyper-parameters and `apply` (the docstring
  says what peftbench calls and when, and how to support `peftbench export --merge`);
- `src/{pkg}/conf/method/{name}.yaml` — its hyper-parameters, one key per dataclass field.

The wiring (leave as is): `pyproject.toml` (the `peftbench.methods` entry point, package data),
`src/hydra_plugins/{pkg}/searchpath.py` (puts `conf/` on Hydra's search path),
`src/{pkg}/conf/__init__.py` (Hydra reads `pkg://` config folders only from packages).

Test: `pytest tests/` runs peftbench's conformance suite on `{name}`.
'''


def _names(name: str) -> dict[str, str]:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ConfigError(f"method name {name!r}: use lower-case letters, digits and _ (a Python identifier, "
                          "as in method=my_method)", option="NAME")
    cls = "".join(part.capitalize() for part in name.split("_") if part)
    return {"name": name, "cls": cls, "pkg": f"peftbench_{name}", "dist": name.replace("_", "-")}


def files_for(name: str) -> dict[str, str]:
    """relative path → text of every file of the plugin package."""
    n = _names(name)
    pkg = n["pkg"]
    return {
        "pyproject.toml": PYPROJECT.format(**n),
        "README.md": README.format(**n),
        f"src/{pkg}/__init__.py": "",
        f"src/{pkg}/method.py": METHOD.format(**n),
        f"src/{pkg}/conf/__init__.py": "",
        f"src/{pkg}/conf/method/{name}.yaml": YAML.format(**n),
        f"src/hydra_plugins/{pkg}/__init__.py": "",
        f"src/hydra_plugins/{pkg}/searchpath.py": SEARCHPATH.format(**n),
        f"tests/test_{name}.py": TEST.format(**n),
    }


def scaffold(name: str, out: str | Path | None = None) -> list[Path]:
    """Write the plugin package for ``name`` into ``out`` (default ``./peftbench-<name>``); refuses a
    name peftbench already has and a non-empty folder."""
    from peftbench.methods.registry import available_methods

    files = files_for(name)
    if name in available_methods():
        raise ConfigError(f"a method named '{name}' already exists (peftbench list methods); choose another name",
                          option="NAME")
    root = Path(out) if out else Path(f"peftbench-{_names(name)['dist']}")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not empty; choose another --out", option="--out")
    written = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
