"""Issue 20, the run side: each run records per-example predictions (ids = row index of the eval
split), the majority baseline of its eval labels, and convergence curves — without changing what
it trains or its final full-split metrics. The record schema checks the new optional keys."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from peftbench import results
from tests.conftest import FAST

VAL = 40      # validation rows: not a multiple of the eval batch, so the last batch is partial
STEPS = 6
CLS = ["dataset=sst2", *FAST, f"trainer.max_steps={STEPS}", f"dataset.val_limit={VAL}", "data.eval_batch_size=16",
       "measure.changed=false", "checkpoint.enabled=false"]


def _predictions(rec: dict, split: str = "val") -> dict:
    from peftbench.run.predictions import read_predictions

    out = Path(rec["config"]["paths"]["output_dir"])
    return read_predictions(out / rec["eval"][split]["predictions"])


def test_classification_run_records_predictions_baseline_and_curves(compose_run, data_dir):
    from peftbench.config.plan import make_plan
    from peftbench.train import train

    # measure.before: a validate (inference mode) before fit, then the curve's validations in fit (no_grad)
    cfg = compose_run(*CLS, "measure.curve_points=3", "measure.curve_max_examples=24", "measure.before=true")
    labels = make_plan(copy.deepcopy(cfg)).examples["validation"].columns["label"]  # read independently
    rec = train(cfg)
    assert rec["status"] == "ok", rec["error"]
    ev = rec["eval"]["val"]
    p = _predictions(rec)
    assert ev["n"] == VAL == len(p["ids"]) == len(p["label"]) == len(p["pred"])
    assert p["ids"] == list(range(VAL)) and p["label"] == labels
    acc = sum(a == b for a, b in zip(p["label"], p["pred"])) / VAL
    assert acc == pytest.approx(rec["metrics"]["val/acc"], abs=1e-6) and ev["metric"] == "val/acc"
    hist = Counter(labels)
    top = max(hist.values())  # a tie (a stratified subset of a balanced file) names any top label
    assert hist[ev["majority_label"]] == top and ev["majority_rate"] == pytest.approx(top / VAL)
    curves = rec["curves"]
    assert curves["val"]["metric"] == "val/acc" and curves["val"]["subset"] == 24
    assert [s for s, _ in curves["val"]["points"]] == [2, 4, 6]  # every ceil(6 / 3) optimizer steps
    assert all(0 <= v <= 1 for _, v in curves["val"]["points"])
    assert [s for s, _ in curves["train_loss"]] == list(range(1, STEPS + 1))  # ≤ 50 steps: one point each
    assert all(v > 0 for _, v in curves["train_loss"])
    assert results.read(Path(rec["config"]["paths"]["output_dir"]) / "results.json")["eval"] == rec["eval"]
    assert "val/acc_before" in rec["metrics"]  # the final file is the trained model's, not the before one's


def test_a_curve_ends_at_the_final_step_when_the_interval_does_not_divide_it(compose_run, data_dir):
    """7 steps at 2 points: Lightning validates at step 4 only; the pipeline scores the curve's subset
    once more at step 7 with the final weights: the value the predictions give on those rows."""
    from peftbench.train import train

    rec = train(compose_run(*CLS, "trainer.max_steps=7", "measure.curve_points=2", "measure.curve_max_examples=24"))
    assert rec["status"] == "ok", rec["error"]
    pts = rec["curves"]["val"]["points"]
    assert [s for s, _ in pts] == [4, 7]
    p = _predictions(rec)
    first = [a == b for i, a, b in zip(p["ids"], p["pred"], p["label"]) if i < 24]
    assert pts[-1][1] == pytest.approx(sum(first) / 24, abs=1e-6)


@pytest.mark.parametrize("steps", [STEPS, STEPS + 1])  # 7 steps at 2 points: the curve is closed after fit
def test_curves_change_neither_training_nor_final_metrics(compose_run, data_dir, steps):
    """Validating a capped subset during fit (and once more after it) draws nothing from the RNG
    that dropout uses: the final full-split metrics are identical with curves on and off."""
    from peftbench.train import train

    off = train(compose_run(*CLS, f"trainer.max_steps={steps}", "measure.curve_points=0", "measure.predictions=false"))
    on = train(compose_run(*CLS, f"trainer.max_steps={steps}", "measure.curve_points=2", "measure.curve_max_examples=8"))
    assert off["status"] == on["status"] == "ok", (off["error"], on["error"])
    assert "curves" not in off and len(on["curves"]["val"]["points"]) == 2
    assert on["curves"]["val"]["points"][-1][0] == steps
    assert off["eval"]["val"]["predictions"] is None and off["eval"]["val"]["n"] == on["eval"]["val"]["n"] == VAL
    assert not (Path(off["config"]["paths"]["output_dir"]) / "predictions").exists()
    for k in ("val/acc", "val/loss", "val/f1"):
        assert on["metrics"][k] == off["metrics"][k], k
    assert on["params"]["stored_bytes"] == off["params"]["stored_bytes"]


def test_train_loss_curve_is_downsampled_to_at_most_50_points():
    from peftbench.run.callbacks import ConvergenceCurves

    cb = ConvergenceCurves("val/acc", subset=8)
    module = SimpleNamespace(device=torch.device("cpu"))
    trainer = SimpleNamespace(estimated_stepping_batches=120, accumulate_grad_batches=2, world_size=1, global_step=120)
    cb.on_train_start(trainer, module)
    for i in range(240):  # 2 batches per optimizer step; Lightning hands over loss / accumulate
        step = i // 2
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(float(step) / 2)}, None, i)
    cb.on_train_end(trainer, module)
    pts = cb.curves()["train_loss"]
    assert len(pts) == 40 and [s for s, _ in pts] == list(range(3, 121, 3))  # bins of ceil(120 / 50) = 3 steps
    assert pts[0][1] == pytest.approx(1.0) and pts[-1][1] == pytest.approx(118.0)  # mean step of each bin


def test_causal_lm_rows_weigh_back_to_the_models_loss():
    """Per-example mean token loss × token count sums to the model's own (token-mean) loss; rows
    with no scored token are left out of the file."""
    from peftbench.lit.module import gather_rows
    from peftbench.lit.tasks import CausalLM
    from peftbench.run.predictions import scored_rows

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=g)
    labels = torch.randint(0, 11, (3, 6), generator=g)
    labels[0, :3] = -100
    labels[2] = -100  # nothing to score
    shifted = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), shifted.reshape(-1), ignore_index=-100)
    model = lambda **b: SimpleNamespace(logits=logits, loss=loss)
    task = CausalLM()
    task.evaluate(model, {"input_ids": labels.clamp(min=0), "labels": labels}, task.metrics())
    rows = task.pop_examples()
    cols = scored_rows(gather_rows([{"ids": torch.tensor([7, 8, 9]), **rows}]))
    assert cols["ids"] == [7, 8] and cols["tokens"] == [int((shifted[0] != -100).sum()), 5]
    total = sum(l * t for l, t in zip(cols["loss"], cols["tokens"])) / sum(cols["tokens"])
    assert total == pytest.approx(float(loss), rel=1e-5) and task.headline == "loss"


def test_generated_answers_land_on_their_rows():
    """A classification set read as SFT: per row correct / gold / predicted label (-1: none); a row
    cut before its answer gets none, and the headline is the generated-label accuracy."""
    from peftbench.lit.generation import GeneratedLabels
    from peftbench.lit.tasks import CausalLM

    labels = torch.tensor([[-100, -100, 7, 8], [-100] * 4, [-100, 9, 3, -100]])
    cols = CausalLM._answer_rows({"labels": labels}, gold=[1, 0], pred=[1, None], hit=torch.tensor([1.0, 0.0]))
    assert {k: v.tolist() for k, v in cols.items()} == {"correct": [1, -1, 0], "label": [1, -1, 0], "pred": [1, -1, -1]}
    assert CausalLM(GeneratedLabels(None, ["a", "b"])).headline == "acc"


def test_rows_gathered_once_each_and_sorted():
    """A DistributedSampler pads ranks with repeated rows: each id is kept once, in id order."""
    from peftbench.lit.module import gather_rows

    rows = [{"ids": torch.tensor([4, 0, 2]), "pred": torch.tensor([1, 0, 1])},
            {"ids": torch.tensor([4, 3]), "pred": torch.tensor([1, 1])}]
    assert gather_rows(rows) == {"ids": [0, 2, 3, 4], "pred": [0, 1, 1, 1]}


def test_majority_and_predictions_file(tmp_path):
    from peftbench.run.predictions import majority, read_predictions, write_predictions

    assert majority([2, 1, 1, 2, 0]) == (0.4, 1)  # a tie goes to the smallest label
    assert majority([]) == (None, None)
    section = write_predictions(tmp_path, {"test": {"ids": [0, 1], "loss": [0.123456789, 2.0], "tokens": [3, 4]}}, "loss")
    assert section == {"test": {"n": 2, "majority_rate": None, "majority_label": None, "metric": "test/loss",
                                "predictions": "predictions/test.json.gz"}}
    assert read_predictions(tmp_path / "predictions/test.json.gz") == {"ids": [0, 1], "loss": [0.123457, 2.0],
                                                                       "tokens": [3, 4]}


GOOD_EVAL = {"val": {"n": 10, "majority_rate": 0.6, "majority_label": 1, "metric": "val/acc",
                     "predictions": "predictions/val.json.gz"}}
GOOD_CURVES = {"val": {"metric": "val/acc", "subset": 8, "points": [[2, 0.5], [4, 0.75]]}, "train_loss": [[1, 0.7]]}


def test_schema_accepts_the_new_keys_and_old_records():
    results.validate(results.empty_record())
    results.validate(results.empty_record(eval=GOOD_EVAL, curves=GOOD_CURVES))
    results.validate(results.empty_record(eval={"test": {**GOOD_EVAL["val"], "majority_rate": None,
                                                         "majority_label": None, "predictions": None}}))


@pytest.mark.parametrize("field,match", [
    ({"eval": [1]}, "key 'eval' has type list"),
    ({"eval": {"train": GOOD_EVAL["val"]}}, "eval.train: unknown split"),
    ({"eval": {"val": {**GOOD_EVAL["val"], "n": "10"}}}, "eval.val.n is not an int"),
    ({"eval": {"val": {**GOOD_EVAL["val"], "n": True}}}, "eval.val.n is not an int"),
    ({"eval": {"val": {k: v for k, v in GOOD_EVAL["val"].items() if k != "metric"}}}, "missing key 'eval.val.metric'"),
    ({"eval": {"val": {**GOOD_EVAL["val"], "majority_rate": 1.5}}}, "majority_rate within"),
    ({"eval": {"val": {**GOOD_EVAL["val"], "majority_label": 0.5}}}, "majority_label is not an int"),
    ({"curves": {"train_loss": [[1, "x"]]}}, "curves.train_loss is not a list"),
    ({"curves": {"val": {"metric": "val/acc", "points": []}}}, "curves.val needs"),
    ({"curves": {**GOOD_CURVES, "val": {**GOOD_CURVES["val"], "points": [[0.5, 1.0]]}}}, "curves.val.points"),
])
def test_schema_refuses_a_malformed_eval_or_curves(field, match):
    with pytest.raises(results.SchemaError, match=match):
        results.validate(results.empty_record(**field))


def test_a_malformed_file_is_refused_on_read(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results.empty_record(eval={"val": {"n": 3}})))
    with pytest.raises(results.SchemaError, match="missing key 'eval.val.metric'"):
        results.read(path)


@pytest.mark.parametrize("override,option", [("measure.curve_points=-1", "measure.curve_points"),
                                             ("measure.curve_max_examples=0", "measure.curve_max_examples")])
def test_bad_curve_options_refused_before_weights(compose_run, override, option):
    from peftbench.config.plan import make_plan
    from peftbench.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        make_plan(compose_run(*FAST, override), load_data=False)
    assert e.value.option == option
