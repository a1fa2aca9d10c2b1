"""One line per method / model family and sizes / dataset / experiment, from the whole config search
path (conf/, ``$PEFTBENCH_CONFIG_PATH``, plugins): what ``list`` shows is what ``peftbench-train`` composes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def _first_comment(path: Any, limit: int = 140) -> str:
    """The file's first comment block (consecutive ``#`` lines) on one line, cut at a word."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and "@package" not in line:
            words += line.lstrip("# ").split()
        elif words:
            break
    text = " ".join(words)
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def method_info() -> dict[str, dict[str, str]]:
    """name → {family, summary, paper}, as each registered method class declares them (built-ins
    and plugins alike are imported: importing them costs the torch import, not transformers/peft)."""
    from peftbench.methods.registry import available_methods, get_method

    return {name: {k: getattr(get_method(name), k) for k in ("family", "summary", "paper")}
            for name in available_methods()}


def search_path_dirs() -> list[Any]:
    """Hydra's config search path as folders (``Path`` or importlib ``Traversable``), first wins: conf/,
    ``$PEFTBENCH_CONFIG_PATH``'s folders, installed plugins' ``pkg://`` confs."""
    from hydra._internal.utils import create_config_search_path

    from peftbench.config.paths import conf_dir, user_config_dirs

    user_config_dirs()  # refuse a bad $PEFTBENCH_CONFIG_PATH by name
    out: list[Any] = []
    for entry in create_config_search_path(str(conf_dir())).get_path():
        scheme, sep, where = (entry.path or "").partition("://")
        if not sep:  # the primary config dir comes without a scheme
            out.append(Path(scheme))
        elif scheme == "file":
            out.append(Path(where))
        elif scheme == "pkg" and entry.provider != "hydra":
            try:
                out.append(resources.files(where.replace("/", ".")))
            except (ModuleNotFoundError, TypeError):  # a plugin whose conf is not a package: Hydra skips it too
                continue
    return out


def group_files(group: str) -> dict[str, Any]:
    """name → yaml file of a config group, across the whole search path (the first of a name wins)."""
    found: dict[str, Any] = {}
    for d in search_path_dirs():
        gdir = d / group
        if not gdir.is_dir():
            continue
        for f in sorted(gdir.iterdir(), key=lambda f: f.name):
            if f.name.endswith(".yaml") and f.is_file():
                found.setdefault(f.name[: -len(".yaml")], f)
    return dict(sorted(found.items()))


def listing(what: str) -> list[str]:
    if what == "methods":
        info = method_info()
        return [f"{name:<16} {m['family']:<16} {m['summary']}" + (f"  [{m['paper']}]" if m["paper"] else "")
                for name, m in sorted(info.items())]
    group = {"models": "model", "datasets": "dataset"}.get(what, "experiment")
    out = []
    for name, f in group_files(group).items():
        d = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if what == "models":
            out.append(f"{name:<12} {'/'.join(d.get('tasks') or ['classification', 'causal_lm']):<26} "
                       f"sizes: {', '.join(d.get('sizes', {}))}  — {_first_comment(f)}")
        elif what == "datasets":
            out.append(f"{name:<16} {d.get('task', '?'):<15} {_first_comment(f)}")
        else:
            out.append(f"{name:<24} {_first_comment(f)}")
    return out
