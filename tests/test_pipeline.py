"""The one plan and the one pipeline: the plan decides once (data read once, OOM retries change
only the micro-batch), explicit options beat the environment, the config's callback group is
built, and every experiment runs through ``run.pipeline.execute``."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.errors import ConfigError
from tests.conftest import FAST


def test_explicit_data_dir_beats_the_environment(compose_run, data_dir, tmp_path, monkeypatch):
    from peftbench.config.paths import data_root
    from peftbench.config.plan import make_plan

    monkeypatch.setenv("PEFTBENCH_DATA_DIR", str(tmp_path / "nowhere"))
    plan = make_plan(compose_run(f"paths.data_dir={data_dir}", "dataset=sst2", *FAST))
    assert plan.examples["train"].source.startswith(str(data_dir))
    assert data_root(None) == tmp_path / "nowhere"  # with no config value, the variable is the default
    assert data_root(str(data_dir)) == data_dir


def test_oom_retry_reuses_the_plan_and_halves_the_micro_batch(compose_run, monkeypatch):
    from peftbench.config.plan import make_plan
    from peftbench.run import pipeline

    plan = make_plan(compose_run("data.effective_batch_size=8", "data.micro_batch_size=auto", *FAST))
    seen = []

    def attempt(p, t_start):
        seen.append(p)
        if len(seen) == 1:
            raise MemoryError("out of memory (test)")
        return {"metrics": {}}

    monkeypatch.setattr(pipeline, "attempt", attempt)
    part = pipeline.execute(plan)
    first, second = seen
    assert (first.budget.micro_batch_size, second.budget.micro_batch_size) == (8, 4)
    assert second.budget.accumulate_grad_batches == 2 and second.budget.effective_batch_size == 8
    assert second.examples is plan.examples and second.method is plan.method  # not re-planned, not re-read
    assert part["budget"]["attempts"][0]["micro_batch_size"] == 8


def test_the_callbacks_group_is_built_and_a_bad_target_refused(compose_run):
    from lightning.pytorch.callbacks import Timer

    from peftbench.config.plan import make_plan
    from peftbench.run.pipeline import prepare

    plan = make_plan(compose_run("+callbacks.timer._target_=lightning.pytorch.callbacks.Timer", *FAST), load_data=False)
    _, _, callbacks = prepare(plan)
    assert [type(c) for c in callbacks] == [Timer]
    bad = make_plan(compose_run("+callbacks.x._target_=no.such.Callback", *FAST), load_data=False)
    with pytest.raises(ConfigError) as e:
        prepare(bad)
    assert e.value.option == "callbacks.x"


def test_every_experiment_is_a_configuration_of_the_pipeline(tmp_path):
    """No study code path: every experiment composes and plans like any run (no `study:` callable);
    the only refusal allowed is the one that says how to pretrain the gpt2_local ladder first."""
    from peftbench.config.compose import compose
    from peftbench.config.paths import conf_dir
    from peftbench.config.plan import make_plan

    experiments = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
    assert {"quickstart", "seed004_toy_lora", "seed_image_text", "seed_textcls_sst2", "pretrain_gpt2_local"} <= set(experiments)
    for name in experiments:
        cfg = compose([f"experiment={name}", f"paths.cache_dir={tmp_path}"], output_dir=str(tmp_path / name))
        assert "study" not in cfg, name
        try:
            plan = make_plan(cfg, load_data=False)
        except ConfigError as e:
            assert "experiment=pretrain_gpt2_local" in str(e), (name, str(e))
            continue
        assert plan.method.name == cfg.method.name
    assert not (Path(__file__).resolve().parents[1] / "src" / "peftbench" / "studies").exists()
