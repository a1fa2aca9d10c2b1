"""The package's shape, checked from its source with ``ast`` (nothing imported): no import cycle,
no import upward between the layers DESIGN.md names, nothing at the top of the package but the
entry points, and no function longer than a reader can hold in view."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "peftbench"

# Lowest first; a module may import its own layer and the layers below it, never one above.
# config's leaves (paths, checks) are the foundation every loader asks; config's planners (plan,
# budget, knobs, compose, forgetting) sit above the models, methods and data they resolve.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("peftbench", "peftbench.errors", "peftbench.results", "peftbench.config.paths",
                    "peftbench.config.checks")),
    ("components", ("peftbench.models", "peftbench.methods", "peftbench.data")),
    ("config", ("peftbench.config",)),
    ("engine", ("peftbench.lit", "peftbench.measure")),
    ("run", ("peftbench.run", "peftbench.train")),
    ("commands", ("peftbench.cli", "peftbench.report")),
]
TOP_LEVEL = {"__init__", "train", "results", "errors"}
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """module → peftbench modules it imports anywhere (top level or inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        out: set[str] = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {_resolve(a.name, mods) for a in node.names if a.name.startswith("peftbench")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                if base.startswith("peftbench"):
                    for a in node.names:  # `from peftbench.run import resume` names a module
                        full = f"{base}.{a.name}"
                        out.add(full if full in mods else _resolve(base, mods))
        out.discard(mod)
        graph[mod] = out
    return graph


def layer_of(mod: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or (p != "peftbench" and mod.startswith(p + "."))) and len(p) > best:
                best, rank = len(p), i
    if rank < 0:
        raise AssertionError(f"{mod} is in no layer; add it to LAYERS (and DESIGN.md)")
    return rank


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_no_upward_import_between_layers():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {n} ({LAYERS[layer_of(n)][0]})"
              for m, deps in sorted(import_graph().items()) for n in sorted(deps) if layer_of(n) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_cycles_and_upward_imports():
    """The two checks above must be able to fail."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("peftbench.config.paths") < layer_of("peftbench.models.loading") < layer_of("peftbench.config.plan")
    assert layer_of("peftbench.run.pipeline") < layer_of("peftbench.cli.main")


def test_only_entry_points_at_the_top_of_the_package():
    top = {p.stem for p in PKG.glob("*.py")}
    assert top <= TOP_LEVEL, f"modules at the top of src/peftbench: {sorted(top - TOP_LEVEL)}"


def test_report_imports_only_the_record_schema():
    """report/ renders records on a laptop: no torch, no training code, nothing but results.py."""
    bad = {f"{m} -> {n}" for m, deps in import_graph().items() if m.startswith("peftbench.report")
           for n in deps if not (n.startswith("peftbench.report") or n in ("peftbench.results", "peftbench.errors"))}
    assert not bad, bad


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_function_over_sixty_lines(path):
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines, line {n.lineno})"
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long
