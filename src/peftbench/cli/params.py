"""``peftbench params``: the composed model on the meta device (no weights, no network), the
method applied, typed counts. ``changed`` and ``stored_bytes`` need a trained run, so they are
reported as what they will be at most (trainable) and the adapter's tensor bytes."""

from __future__ import annotations

from typing import Any, Sequence

from peftbench.config.compose import compose
from peftbench.config.plan import make_plan


def params_table(overrides: Sequence[str]) -> dict[str, Any]:
    import torch

    from peftbench.measure import params as pm
    from peftbench.models import meta_model

    cfg = compose(overrides)
    plan = make_plan(cfg, load_data=False)
    model = meta_model(plan.spec, plan.task, plan.num_labels)
    base_names = pm.base_param_names(model)
    base_total = pm.count_params(model, base_names)["total"]
    with torch.device("meta"):
        model = plan.method.apply(model, plan.ctx)
    counts = pm.count_params(model, base_names)
    trainable_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    counts["stored_bytes_estimate"] = trainable_bytes
    counts["trainable_pct"] = round(100.0 * counts["trainable"] / max(1, counts["total"]), 4)
    return {
        "model": {"family": plan.spec.family, "size": plan.spec.size, "checkpoint": plan.spec.checkpoint,
                  "total": base_total},
        "method": {"name": plan.method.name, "family": plan.method.family, "hparams": plan.method.hparams()},
        "task": plan.task,
        "params": counts,
    }
