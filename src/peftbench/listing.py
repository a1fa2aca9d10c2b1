"""One line per method / model family and sizes / dataset / experiment."""

from __future__ import annotations

from pathlib import Path

import yaml


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def listing(what: str) -> list[str]:
    from peftbench.train import conf_dir

    conf = conf_dir()
    if what == "methods":
        from peftbench.methods.registry import available_methods, get_method

        out = []
        for name in available_methods():
            m = get_method(name)
            out.append(f"{name:<16} {m.family:<16} {m.summary}" + (f"  [{m.paper}]" if m.paper else ""))
        return out
    if what == "models":
        out = []
        for f in sorted((conf / "model").glob("*.yaml")):
            d = yaml.safe_load(f.read_text()) or {}
            out.append(f"{f.stem:<10} sizes: {', '.join(d.get('sizes', {}))}  — {_first_comment(f)}")
        return out
    group = {"datasets": "dataset", "experiments": "experiment"}[what]
    return [f"{f.stem:<24} {_first_comment(f)}" for f in sorted((conf / group).glob("*.yaml"))]
