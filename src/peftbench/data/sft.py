"""A classification set read as instruction SFT for a causal LM (``dataset.as_sft``).

Each labelled example becomes a prompt ("classify into one of <label set>: <text>") with the label
name as the response, so the run trains with the response-only loss of every causal-LM SFT run.
The causal-LM task then scores *generated* labels at evaluation (lit/generation.py) — what a user
of the fine-tuned chat model would see — because the dataset asks for it by carrying ``as_sft``.
"""

from __future__ import annotations

from typing import Any, Mapping

from peftbench.config.checks import positive_int
from peftbench.data.examples import SplitExamples
from peftbench.errors import ConfigError

PROMPT = "Classify the text into one of these labels: {labels}.\nText: {text}\nAnswer with the label only."


def run_dataset(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset as the run sees it: with ``as_sft``, a causal-LM prompt/response set named
    ``<name>_sft``; without, unchanged. Refuses a set that has no labels to answer with."""
    ds = dict(ds)
    sft = ds.get("as_sft")
    if not sft or ds.get("source_task"):  # no transform, or already the run's view
        return ds
    if not isinstance(sft, Mapping):
        raise ConfigError(f"must be a mapping ({{prompt, max_new_tokens}}) or null, got {sft!r}", option="dataset.as_sft")
    if ds.get("task") != "classification" or not ds.get("label_names"):
        raise ConfigError(f"as_sft needs a classification dataset with label_names; '{ds.get('name')}' is "
                          f"task '{ds.get('task')}' with label_names {ds.get('label_names')}", option="dataset.as_sft")
    positive_int(sft.get("max_new_tokens"), "dataset.as_sft.max_new_tokens")
    prompt = sft.get("prompt") or PROMPT
    if "{text}" not in prompt:
        raise ConfigError("the prompt must contain {text} (and may name {labels})", option="dataset.as_sft.prompt")
    return {**ds, "task": "causal_lm", "format": "prompt_response", "name": f"{ds['name']}_sft",
            "source_task": "classification", "as_sft": {**sft, "prompt": prompt}}


def load_as_sft(ds: Mapping[str, Any], load: Any) -> dict[str, SplitExamples]:
    """Read the classification splits with ``load`` (labels checked row by row), then convert."""
    view = run_dataset(ds)
    return {k: to_sft(v, view) for k, v in load({**view, "task": view["source_task"]}).items()}


def to_sft(ex: SplitExamples, ds: Mapping[str, Any]) -> SplitExamples:
    """Classification examples (text[, text_pair], label id) → prompt/response examples."""
    names = list(ds["label_names"])
    template, labels = ds["as_sft"]["prompt"], ", ".join(names)
    pairs = ex.columns.get("text_pair") or [""] * len(ex)
    prompts = [template.format(labels=labels, text=t, text_pair=p) for t, p in zip(ex.columns["text"], pairs)]
    return SplitExamples(ex.split, ex.source, {"prompt": prompts, "response": [names[i] for i in ex.columns["label"]]})
