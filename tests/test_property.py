"""Property test over the config space: any (model family × method × dataset × hyper-parameters)
either trains one step (status ok) or is refused before training with a peftbench error that names
the option in brackets (status refused). A traceback from inside transformers/peft/Lightning
(status failed) is a bug — fix it at its root (a check in make_plan or method.check), not here.

The default suite runs a reduced profile (25 examples); CI runs the full one (200 examples):

    pytest -m slow tests/test_property.py -k full
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["bert", "roberta", "gpt2", "llama", "qwen2", "minilm", "mpnet"]
DATASETS = ["sst2", "cola", "agnews", "mr", "alpaca", "tinyshakespeare", "wiki_demo"]
# Every run is one optimizer step on a tiny slice, without the expensive measurements.
BASE = ["model_size=tiny", "trainer.max_steps=1", "dataset.train_limit=16", "dataset.val_limit=8",
        "dataset.test_limit=8", "data.eval_batch_size=8", "measure.inference_overhead=false",
        "measure.changed=false", "logger=none", "trainer.enable_progress_bar=false"]
# Method hyper-parameters worth breaking, by field name (only drawn when the method has the field).
METHOD_NUMBERS: dict[str, list[Any]] = {
    "r": [0, -2, 1, 4],
    "init_r": [0, 2, 6],
    "target_r": [0, 1, 4],
    "bottleneck": [0, -1, 1, 8],
    "num_virtual_tokens": [0, 1, 4, 600, 100_000],
    "encoder_hidden_size": [0, 8],
    "top_k": [0, 1, 99],
    "density": [0.0, 0.05, 1.5],
}
GLOBAL_NUMBERS: dict[str, list[Any]] = {
    "optim.lr": [5e-4, 1e-2, 0.0, -1e-3, float("nan"), float("inf")],
    "data.batch_size": [0, 1, 4, 16],
    "dataset.max_length": [0, -5, 8, 32, 512, 100_000],
}
# Values that must never train (compose-time refusals): option -> predicate on the value.
BAD = {
    "optim.lr": lambda v: not (math.isfinite(v) and v > 0),
    "data.batch_size": lambda v: v <= 0,
    "dataset.max_length": lambda v: v <= 0,
    "method.r": lambda v: v <= 0,
    "method.init_r": lambda v: v <= 0,
    "method.target_r": lambda v: v <= 0,
    "method.bottleneck": lambda v: v <= 0,
    "method.num_virtual_tokens": lambda v: v <= 0 or v >= 100_000,  # longer than any tiny context
    "method.encoder_hidden_size": lambda v: v <= 0,
}
OPTION_RX = re.compile(r"\[[\w.\-]+\]")


def _methods() -> list[str]:
    from peftbench.methods.registry import available_methods

    # adapter_fusion needs trained adapters on disk, so random configs cannot build it.
    return [m for m in available_methods() if m != "adapter_fusion"]


def _fields(method: str) -> set[str]:
    from peftbench.methods.registry import get_method

    return {f.name for f in dataclasses.fields(get_method(method))}


@st.composite
def configs(draw) -> dict[str, Any]:
    method = draw(st.sampled_from(_methods()))
    spec: dict[str, Any] = {"model": draw(st.sampled_from(FAMILIES)), "method": method,
                            "dataset": draw(st.sampled_from(DATASETS)), "numbers": {}}
    for key, values in GLOBAL_NUMBERS.items():
        if draw(st.booleans()):
            spec["numbers"][key] = draw(st.sampled_from(values))
    for key in sorted(_fields(method) & set(METHOD_NUMBERS)):
        if draw(st.booleans()):
            spec["numbers"][f"method.{key}"] = draw(st.sampled_from(METHOD_NUMBERS[key]))
    return spec


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def compose_spec(spec: dict[str, Any], out: Path):
    """The DictConfig for one drawn spec. Methods without a conf/method yaml get their dataclass
    defaults (``method: {name: …}``), the same thing a minimal user yaml would give."""
    from omegaconf import OmegaConf

    from peftbench.config.compose import compose

    has_yaml = (ROOT / "conf" / "method" / f"{spec['method']}.yaml").exists()
    over = [f"model={spec['model']}", f"dataset={spec['dataset']}", *BASE]
    over.append(f"method={spec['method']}" if has_yaml else "method=lora")
    over += [f"{k}={_fmt(v)}" for k, v in spec["numbers"].items() if has_yaml or not k.startswith("method.")]
    cfg = compose(over, output_dir=str(out))
    if not has_yaml:
        cfg.method = OmegaConf.create({"name": spec["method"], **{k.split(".", 1)[1]: v for k, v in spec["numbers"].items()
                                                                   if k.startswith("method.")}})
    return cfg


def check_one(spec: dict[str, Any]) -> dict[str, Any]:
    from peftbench.train import train

    out = Path(tempfile.mkdtemp(prefix="prop-", dir=os.environ.get("PEFTBENCH_PROPERTY_TMP")))
    rec = train(compose_spec(spec, out))
    shown = f"config: {spec}\nstatus: {rec['status']}\nerror: {rec['error']}\n{rec.get('traceback', '')}"
    assert rec["status"] in ("ok", "refused"), f"crashed instead of refusing:\n{shown}"
    bad = sorted(k for k, v in spec["numbers"].items() if k in BAD and BAD[k](v))
    if rec["status"] == "refused":
        assert OPTION_RX.search(rec["error"] or ""), f"refusal does not name an option:\n{shown}"
        assert not (out / "adapter").exists(), f"refused after training:\n{shown}"
    else:
        assert not bad, f"trained with invalid {bad}:\n{shown}"
        assert rec["metrics"], f"ok but no metrics:\n{shown}"
        assert (out / "adapter").is_dir()
    shutil.rmtree(out, ignore_errors=True)  # kept only when an assertion fails, for the post-mortem
    return rec


COMMON = dict(deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=int(os.environ.get("PEFTBENCH_PROPERTY_EXAMPLES", 25)), **COMMON)
@given(configs())
def test_config_space(spec):
    check_one(spec)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 200 one-step runs: ~15-25 min on 2 idle cores
@settings(max_examples=200, **COMMON)
@given(configs())
def test_config_space_full(spec):
    check_one(spec)


@pytest.mark.parametrize("spec", [
    {"model": "bert", "method": "lora", "dataset": "sst2", "numbers": {"optim.lr": float("nan")}},
    {"model": "bert", "method": "lora", "dataset": "sst2", "numbers": {"optim.lr": 0.0}},
    {"model": "gpt2", "method": "lora", "dataset": "alpaca", "numbers": {"data.batch_size": 0}},
    {"model": "bert", "method": "lora", "dataset": "sst2", "numbers": {"method.r": 0}},
    {"model": "bert", "method": "lora", "dataset": "sst2", "numbers": {"method.r": -2}},
])
def test_known_bad_numbers_refused_with_option(spec):
    """The bad-number corners, pinned (hypothesis may not draw them in the reduced profile)."""
    rec = check_one(spec)
    assert rec["status"] == "refused"
    assert f"[{next(iter(spec['numbers']))}]" in rec["error"]
