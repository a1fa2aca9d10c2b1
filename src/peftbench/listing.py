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


def _static_methods() -> dict[str, dict[str, str]]:
    """name → {family, summary, paper} read from the built-in method modules' source (AST), so
    ``peftbench list methods`` answers without importing torch or peft (seconds on a busy node).
    Class attributes are inherited by class name across the modules, as Python would."""
    import ast

    from peftbench.methods import registry

    root = Path(registry.__file__).parent
    classes: dict[str, tuple[list[str], dict[str, str]]] = {}
    registered: dict[str, str] = {}
    builtin = set(registry._BUILTIN_MODULES)
    for f in sorted(root.glob("*.py")):  # helper modules (_prompt_base, …) hold shared base classes
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ClassDef):
                continue
            attrs = {}
            for st in node.body:
                targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(st, ast.AnnAssign) else []
                if getattr(st, "value", None) is not None and isinstance(st.value, ast.Constant) \
                        and isinstance(st.value.value, str):
                    attrs.update({t.id: st.value.value for t in targets if isinstance(t, ast.Name)})
            classes[node.name] = ([b.id for b in node.bases if isinstance(b, ast.Name)], attrs)
            for d in node.decorator_list if f.stem in builtin else []:
                if (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register_method" and d.args
                        and isinstance(d.args[0], ast.Constant)):
                    registered[d.args[0].value] = node.name

    def attr(cls: str, key: str) -> str:
        bases, attrs = classes.get(cls, ([], {}))
        if key in attrs:
            return attrs[key]
        return next((v for b in bases if (v := attr(b, key))), "")

    return {name: {k: attr(cls, k) for k in ("family", "summary", "paper")} for name, cls in registered.items()}


def _method_info() -> dict[str, dict[str, str]]:
    """Built-ins from source; plugins (entry points) are imported, as only they can say."""
    from importlib.metadata import entry_points

    info = _static_methods()
    plugins = [ep for ep in entry_points(group="peftbench.methods") if ep.name not in info]
    if plugins:
        from peftbench.methods.registry import get_method

        for ep in plugins:
            m = get_method(ep.name)
            info[ep.name] = {"family": m.family, "summary": m.summary, "paper": m.paper}
    return info


def listing(what: str) -> list[str]:
    from peftbench.train import conf_dir

    conf = conf_dir()
    if what == "methods":
        info = _method_info()
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
