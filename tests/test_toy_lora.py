"""Seed study 004 through the one pipeline: a two-stage run (base_stage) on a model family built
from config (toy_mlp) and a generated dataset (sphere_shift); typed counts from the shapes."""

from __future__ import annotations

import pytest

# a few epochs: the path and the counts are what is tested here; the accuracies need the full
# budget (../shared/checks/06-seed004 and reports/seed004_toy_lora)
SHORT = ["trainer.max_epochs=2", "+base_stage.set.trainer.max_epochs=3", "dataset.generator.n_eval=512"]


@pytest.fixture
def toy_run(compose_run, tmp_path):
    from peftbench.train import train

    def run(*extra: str, out: str = "run"):
        return train(compose_run("experiment=seed004_toy_lora", f"paths.cache_dir={tmp_path / 'cache'}", *SHORT,
                                 *extra, out=tmp_path / out))

    return run


def test_data_is_the_seeds():
    """Sphere of radius √d, shift N(0, (1/d)² I), label 1 where mean(x) ≥ 0, eval sets shared by stages."""
    import torch

    from peftbench.data.generated import sphere_shift

    a = sphere_shift({"d": 16, "n_train": 300, "n_eval": 400, "train_on": "sphere"}, seed=3)
    b = sphere_shift({"d": 16, "n_train": 300, "n_eval": 400, "train_on": "gaussian"}, seed=3)
    train = torch.stack(a["train"].columns["inputs"])
    assert torch.allclose(train.norm(dim=1), torch.full((300,), 4.0), atol=1e-5)
    shifted = torch.stack(b["train"].columns["inputs"])
    assert abs(shifted.std().item() - 1 / 16) < 0.005
    assert a["train"].columns["label"] == (train.mean(dim=1) >= 0).long().tolist()
    for split in ("validation", "test"):  # the same evaluation points whichever stage draws them
        assert torch.equal(torch.stack(a[split].columns["inputs"]), torch.stack(b[split].columns["inputs"]))
    other_seed = torch.stack(sphere_shift({"n_eval": 8}, seed=4)["test"].columns["inputs"])
    assert not torch.equal(other_seed, torch.stack(a["test"].columns["inputs"])[:8])


def test_two_stage_run_counts_and_reuse(toy_run):
    rec = toy_run()
    assert rec["status"] == "ok", rec["error"]
    h, r, d = 32, 2, 16
    p = rec["params"]
    assert p["trainable"] == r * h + h * r + h == 160      # LoRA A + B on fc2, plus fc2's bias
    assert p["added"] == r * h + h * r == 128
    base = d * h + h + h * h + h + h                        # the last layer has no bias
    assert rec["model"]["total"] == base == 1632 and p["total"] == base + 128
    assert 0 < p["changed"] <= h * h + h == 1056            # at most fc2's weight and bias
    assert p["delta_rank"] == {"fc2.weight": r}
    m = rec["metrics"]
    for key in ("toy/uniform_acc_before", "toy/gaussian_acc_before", "toy/gaussian_acc_after", "toy/uniform_acc_after"):
        assert 0.0 <= m[key] <= 1.0
    assert m["toy/gaussian_acc_after"] == m["val/acc"] and m["toy/gaussian_acc_before"] == m["val/acc_before"]
    stage = rec["stages"]["base"]
    assert stage["method"] == "full" and stage["budget"]["optimizer_steps"] == 3 * 8  # 2,000 points / 256
    assert rec["budget"]["optimizer_steps"] == 2 * 8

    again = toy_run(out="again")  # same seed: the base stage is found finished, the run repeats exactly
    assert again["stages"]["base"]["skipped"] and again["stages"]["base"]["run_id"] == stage["run_id"]
    assert {k: v for k, v in again["metrics"].items() if "loss" not in k} == \
           {k: v for k, v in m.items() if "loss" not in k}
    other = toy_run("seed=2", out="seed2")
    assert other["stages"]["base"]["run_id"] != stage["run_id"]


def test_base_stage_refusals_name_the_option(compose_run, tmp_path):
    from peftbench.config.stages import stage_config
    from peftbench.errors import ConfigError

    for bad, option in (("+base_stage.oops=1", "base_stage.oops"), ("base_stage.method=nope", "base_stage.method"),
                        ("+base_stage.set.paths.cache_dir=/x", "base_stage.set.paths.cache_dir")):
        cfg = compose_run("experiment=seed004_toy_lora", bad, out=tmp_path / "x")
        with pytest.raises(ConfigError) as e:
            stage_config(cfg)
        assert e.value.option == option


def test_refusals_come_before_the_base_trains(toy_run, tmp_path):
    bad = toy_run("method.r=-1", out="bad")  # the final stage's own option: refused before any stage trains
    assert bad["status"] == "refused" and "method.r" in bad["error"]
    assert not (tmp_path / "cache" / "stages").exists()
    base_bad = toy_run("+base_stage.set.optim.lr=-1", out="base_bad")  # the stage's refusal stays a refusal
    assert base_bad["status"] == "refused" and "base stage" in base_bad["error"] and "optim.lr" in base_bad["error"]


def test_export_merges_onto_the_stage_model(toy_run, tmp_path):
    """The record names its real base (model.path = the stage's model), so export rebuilds on it."""
    from safetensors.torch import load_file

    from peftbench.cli.export import export_run
    from peftbench.models import fingerprint

    rec = toy_run()
    base_dir = rec["stages"]["base"]["model_dir"]
    assert rec["config"]["model"]["path"] is None  # the run's own config: seeds of it stay one report row
    assert base_dir == str(tmp_path / "cache" / "stages" / rec["stages"]["base"]["run_id"] / "model")
    # the final stage names the weights it started from: the digest of the folder the stage saved
    digest = fingerprint.folder_digest(base_dir)
    assert digest is not None and digest.startswith("sha256:")
    assert rec["model"]["weights"] == rec["stages"]["base"]["model_weights"] == digest
    res = export_run(str(tmp_path / "run"), str(tmp_path / "merged"), merge=True, overwrite=False)
    merged, base = load_file(str(res.out / "model.safetensors")), load_file(f"{base_dir}/model.safetensors")
    assert (merged["fc1.weight"] == base["fc1.weight"]).all()  # untouched by LoRA: the stage's weights
    assert not (merged["fc2.weight"] == base["fc2.weight"]).all()  # the merged update
