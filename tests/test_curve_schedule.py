"""measure.curve_points owns Lightning's validation schedule during fit: a user's own
trainer.val_check_interval (or check_val_every_n_epoch) is refused before anything loads, never
silently replaced; with curve_points=0 it is the user's."""

from __future__ import annotations

import pytest

from peftbench.config.plan import check_curve_schedule, make_plan
from peftbench.errors import ConfigError


@pytest.mark.parametrize("option,value", [("trainer.val_check_interval", 5), ("trainer.val_check_interval", 0.5),
                                          ("+trainer.check_val_every_n_epoch", 2)])
def test_own_validation_schedule_with_curves_is_refused_before_loading(compose_run, monkeypatch, option, value):
    import peftbench.config.plan as plan_mod

    def no_model(*a, **k):  # the refusal must come before the model is even resolved
        raise AssertionError("the plan went past the curve check")

    monkeypatch.setattr(plan_mod, "plan_method", no_model)
    with pytest.raises(ConfigError) as e:
        make_plan(compose_run(f"{option}={value}", "measure.curve_points=3"), load_data=False)
    key = option.lstrip("+")
    assert e.value.option == key
    msg = str(e.value)
    assert key in msg and "measure.curve_points=3" in msg and "measure.curve_points=0" in msg


@pytest.mark.parametrize("overrides", [("trainer.val_check_interval=5", "measure.curve_points=0"),
                                       ("measure.curve_points=3",), ("trainer.val_check_interval=5",
                                                                      "+trainer.check_val_every_n_epoch=2",
                                                                      "measure.curve_points=0")])
def test_own_interval_without_curves_and_curves_without_interval_pass(compose_run, overrides):
    check_curve_schedule(compose_run(*overrides))  # no refusal
