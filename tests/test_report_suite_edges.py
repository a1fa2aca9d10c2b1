"""The benchmark runner extends an edge-selected lr grid by one step (bounded, recorded in the
manifest), before the other seeds run at the final selection. Runs are faked: only the selection logic
is under test."""

from __future__ import annotations

import dataclasses
import math

import pytest

from peftbench.cli import suite
from peftbench.cli.suite import Cell, Grid, Task, edge_extensions, next_lr, select
from peftbench.errors import ConfigError


def _fake_run(calls):
    """val/acc peaks at lr = 1e-2: 1 − |log10(lr) + 2| / 10."""
    def run(overrides, out, reuse=False):
        lr = float(next(o for o in overrides if o.startswith("optim.lr=")).split("=")[1])
        calls.append((lr, int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])))
        return {"status": "ok", "run_id": f"{lr}-{calls[-1][1]}",
                "metrics": {"val/acc": 1 - abs(math.log10(lr) + 2) / 10, "test/acc": 0.5}}
    return run


def _grid(lrs):
    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    return Grid("g", [t], ["lora"], seeds=[1, 2], lrs={"default": lrs}, common=())


def test_next_lr_steps_by_the_grid_ratio():
    assert next_lr([1e-4, 1e-3], "high") == 1e-2
    assert next_lr([1e-4, 1e-3], "low") == 1e-5
    assert next_lr([1e-3, 3e-3], "high") == 0.009  # rounded: a stable run id
    assert next_lr([1e-3], "high") is None


def test_edge_selected_grid_is_extended_once_then_seeds_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(suite, "_run", _fake_run(calls))
    ext = []
    records = suite._run_cells(_grid([1e-4, 1e-3]), ["lora"], tmp_path, tmp_path, extend=1, extensions=ext)
    # phase 1 picks 1e-3 (upper edge) → one extra run at 1e-2, which wins; the bound stops there
    assert calls == [(1e-4, 1), (1e-3, 1), (1e-2, 1), (1e-2, 2)]
    assert [(e["round"], e["added_lr"]) for e in ext] == [(1, 1e-2)]
    (row,) = select(_grid([1e-4, 1e-3]), records)
    assert row["best_lr"] == 1e-2 and row["edge"] == "high"  # still at the edge: flagged, not chased forever


def test_interior_selection_is_not_extended(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(suite, "_run", _fake_run(calls))
    g = _grid([1e-3, 1e-2, 1e-1])
    records = suite._run_cells(g, ["lora"], tmp_path, tmp_path, extend=3)
    assert sorted({lr for lr, _ in calls}) == [1e-3, 1e-2, 1e-1] and edge_extensions(g, records) == []
    assert select(g, records)[0]["edge"] is None


def test_extension_disabled(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(suite, "_run", _fake_run(calls))
    suite._run_cells(_grid([1e-4, 1e-3]), ["lora"], tmp_path, tmp_path, extend=0)
    assert calls == [(1e-4, 1), (1e-3, 1), (1e-3, 2)]


def test_a_task_s_own_rounds_beat_the_grid_s_and_the_command_line_beats_both(monkeypatch, tmp_path):
    """val/acc peaks at 1e-2: from [1e-6, 1e-5] that is three steps up. The grid allows one round, the
    task three; --extend-edges (``extend``) overrides the task's."""
    calls = []
    monkeypatch.setattr(suite, "_run", _fake_run(calls))
    g = _grid([1e-6, 1e-5])
    g = dataclasses.replace(g, extend_edges=1, tasks=[dataclasses.replace(g.tasks[0], extend_edges=3)])
    ext = []
    suite._run_cells(g, ["lora"], tmp_path, tmp_path, extensions=ext)
    assert [e["added_lr"] for e in ext] == [1e-4, 1e-3, 1e-2] and calls[-1] == (1e-2, 2)
    assert g.extend_per_task() == {"t:m-s": 3} and g.extend_per_task(0) == {"t:m-s": 0}
    assert suite.rounds_text({"a": 2, "b": 2, "c": 4}) == "2 (c: 4)" and suite.rounds_text(1) == "1"
    calls.clear()
    suite._run_cells(g, ["lora"], tmp_path / "cli", tmp_path, extend=0)
    assert calls == [(1e-6, 1), (1e-5, 1), (1e-5, 2)]


def test_a_task_s_bad_rounds_are_refused(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("methods: [lora]\nseeds: [1]\nlrs: {default: [1.0e-3]}\n"
                 "tasks: [{name: t, overrides: [], select: val/acc, report: test/acc, models: {m: [s]}, extend_edges: -2}]\n")
    with pytest.raises(ConfigError, match=r"tasks\[0\]: extend_edges must be an integer >= 0, got -2"):
        suite.load_grid(p)


def test_a_flat_grid_is_named_flat_in_the_selection_and_an_unscored_point_is_not_flat():
    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    g = _grid([1e-4, 1e-3, 1e-2])

    def recs(scores):
        return {Cell(t, "m", "s", "lora", lr, 1): ({"status": "ok", "metrics": {"val/acc": v}} if v is not None
                                                   else {"status": "failed", "metrics": {}})
                for lr, v in zip((1e-4, 1e-3, 1e-2), scores)}

    (row,) = select(g, recs([0.5, 0.5, 0.5]))
    assert row["flat"] and row["best_lr"] == 1e-4 and row["edge"] == "low"
    m = {"grid": "g", "command": "x", "splits": {}, "methods_skipped_not_available": [], "selection": [row],
         "lr_grid_extensions": [], "extend_edges": {"a": 2, "b": 4, "c": 4, "d": 2}}
    text = suite.selection_markdown(m)
    assert "every lr ties (grid flat)" in text and "edge of the lrs tried" not in text and "at most 2 (b: 4; c: 4)" in text
    (row,) = select(g, recs([0.5, None, 0.5]))  # a failed point: not a plateau, the edge rule applies
    assert not row["flat"] and row["edge"] == "low"


def test_selection_markdown_flags_the_edge():
    t = Task("t", (), "val/acc", "test/acc", (("m", "s"),))
    g = _grid([1e-4, 1e-3])
    recs = {Cell(t, "m", "s", "lora", lr, 1): {"status": "ok", "metrics": {"val/acc": v}}
            for lr, v in ((1e-4, 0.6), (1e-3, 0.7))}
    m = {"grid": "g", "command": "x", "splits": {"sst2": "a", "lm/sft": "b"}, "methods_skipped_not_available": [],
         "selection": select(g, recs), "lr_grid_extensions": [], "extend_edges": 0}
    text = suite.selection_markdown(m)
    assert "at the high edge of the lrs tried" in text and "0 extra run(s)" in text


def test_report_sees_the_whole_grid(tmp_path):
    """The suite's report reads every lr's runs, so it can show the grid and flag its edge."""
    for rel in ("t/m-s/lora/lr0.001/seed1", "t/m-s/lora/lr0.01/seed1", "t/m-s/lora/lr0.01/seed2"):
        (tmp_path / rel).mkdir(parents=True)
    m = {"run_ids": {"t/m-s/lora/lr0.001/seed1": "a", "t/m-s/lora/lr0.01/seed1": "b", "t/m-s/lora/lr0.01/seed2": "c"},
         "pretrain": {"s": {"dir": str(tmp_path / "pretrain" / "s")}, "m": {"dir": str(tmp_path.parent / "ladder")}}}
    # the runs folder itself (as `peftbench report <runs>` reads it, so the two agree byte for byte),
    # and a ladder record kept outside it
    assert suite.report_dirs(m, tmp_path) == [tmp_path, tmp_path.parent / "ladder"]
