"""Seed study 004 (Toy LoRA MLP): thresholds, typed parameter counts, determinism."""

from omegaconf import OmegaConf

from peftbench.studies.toy_lora import run

CFG = "conf/experiment/seed004_toy_lora.yaml"


def _run(seed: int) -> dict:
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / CFG
    return run(OmegaConf.merge(OmegaConf.load(path), {"seed": seed}))


def test_toy_lora_seed1_thresholds_counts_determinism():
    out = _run(1)
    m, p = out["metrics"], out["params"]
    u, gb, ga = m["toy/uniform_acc_before"], m["toy/gaussian_acc_before"], m["toy/gaussian_acc_after"]
    assert u >= 0.95 and gb <= 0.92 and ga >= 0.95 and ga - gb >= 0.05, m
    h, r = 32, 2
    # trainable = LoRA A (r*h) + B (h*r) + fc2 bias (h) = 64 + 64 + 32 = 160  (train_bias: true)
    assert p["trainable"] == r * h + h * r + h == 160
    # added = scalars absent from the base model = A + B = 128
    assert p["added"] == r * h + h * r == 128
    # total = base (16*32+32 + 32*32+32 + 32+1 = 1633) + added
    assert out["model"]["total"] == 16 * 32 + 32 + h * h + h + h + 1 == 1633
    assert p["total"] == 1633 + 128
    # changed = scalars of the merged model differing from the base: at most the whole fc2
    # weight + bias (h*h + h = 1056). A fc2 unit that never fires on the adaptation data gets no
    # gradient, so its B row (hence its weight row) and its bias stay put: h + 1 = 33 fewer each.
    assert p["changed"] <= h * h + h == 1056
    assert (h * h + h - p["changed"]) % (h + 1) == 0
    assert p["changed"] == 1023  # seed 1: one such unit
    # delta_rank = rank(B @ A) = r = 2
    assert p["delta_rank"] == {"fc2": 2}
    assert p["stored_bytes"] > 0
    assert _run(1)["metrics"] | {"toy/wall_s": 0} == m | {"toy/wall_s": 0}
