"""One line per method / model family and sizes / dataset / experiment."""

from __future__ import annotations

from pathlib import Path

import yaml


def _first_comment(path: Path, limit: int = 140) -> str:
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


def listing(what: str) -> list[str]:
    from peftbench.config.paths import conf_dir

    conf = conf_dir()
    if what == "methods":
        info = method_info()
        return [f"{name:<16} {m['family']:<16} {m['summary']}" + (f"  [{m['paper']}]" if m["paper"] else "")
                for name, m in sorted(info.items())]
    if what == "models":
        out = []
        for f in sorted((conf / "model").glob("*.yaml")):
            d = yaml.safe_load(f.read_text()) or {}
            out.append(f"{f.stem:<12} {'/'.join(d.get('tasks') or ['classification', 'causal_lm']):<26} "
                       f"sizes: {', '.join(d.get('sizes', {}))}  — {_first_comment(f)}")
        return out
    if what == "datasets":
        out = []
        for f in sorted((conf / "dataset").glob("*.yaml")):
            task = (yaml.safe_load(f.read_text()) or {}).get("task", "?")
            out.append(f"{f.stem:<16} {task:<15} {_first_comment(f)}")
        return out
    return [f"{f.stem:<24} {_first_comment(f)}" for f in sorted((conf / "experiment").glob("*.yaml"))]
