"""Trackers for real: wandb offline (its run files and logged config), tensorboard event files,
csv metrics, all three at once with `logger=many`; wandb picks offline mode by itself."""

from __future__ import annotations

import pytest

from tests.conftest import FAST


def test_logger_many_writes_wandb_offline_tensorboard_and_csv(compose_run, tmp_path, monkeypatch):
    from peftbench.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    cfg = compose_run("model=bert", "model_size=tiny", "method=lora", *FAST, "trainer.log_every_n_steps=1",
                      "logger=many", out=out)
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}
    rec = train(cfg)
    assert rec["status"] == "ok", rec["error"]

    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted(p.name for p in out.rglob("*"))[:50]
    streams = list(runs[0].glob("run-*.wandb"))
    assert len(streams) == 1, sorted(p.name for p in runs[0].iterdir())
    # offline, wandb keeps config and history in the run's record stream (what `wandb sync` uploads)
    blob = streams[0].read_bytes()
    for needle in (b"sst2", b"max_steps", b"lora", b"train/loss"):
        assert needle in blob, needle

    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)
    metrics = (out / "logs" / "metrics.csv").read_text()
    assert "train/loss" in metrics
    assert "method" in (out / "logs" / "hparams.yaml").read_text()


def test_wandb_goes_offline_without_api_key(tmp_path, monkeypatch):
    from peftbench.run.trackers import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's choice wins
    assert wandb_mode() == "disabled"


def test_swanlab_refused_clearly_when_missing(compose_run):
    try:
        import swanlab  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("swanlab is installed: the refusal path does not apply")
    from peftbench.train import train

    rec = train(compose_run("model=bert", "model_size=tiny", "method=lora", *FAST, "logger=swanlab"))
    assert rec["status"] == "refused"
    assert "swanlab" in rec["error"] and "[logger]" in rec["error"]
    assert "load_model_s" not in rec["timings"]  # refused before weights load
