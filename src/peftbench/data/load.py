"""The data entry points: one source or a mix of several (data/mixing.py), read and tokenized alike.
Called by the plan (reading, before weights load) and the DataModule (tokenizing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from peftbench.data.examples import SplitExamples, load_single
from peftbench.data.generated import feature_rows, is_features, load_generated
from peftbench.data.mixing import MixedSplit, load_mix, tokenize_mix
from peftbench.data.tokenize import tokenize_split


def load_examples(ds: Mapping[str, Any], data_dir: str | None) -> dict[str, SplitExamples]:
    """Every configured split; a dataset with a ``mix`` list samples several sources at fixed ratios,
    one with a ``generator`` is drawn, not read, one with ``as_sft`` is a classification set read as
    prompt/response pairs (data/sft.py), an ``image_text`` one a folder of images and captions."""
    if ds.get("generator"):
        return load_generated(ds)
    if ds.get("as_sft"):
        from peftbench.data.sft import load_as_sft

        return load_as_sft(ds, lambda src: load_single(src, data_dir))
    if ds.get("task") == "image_text":
        from peftbench.data.image_text import load_image_text

        return load_image_text(ds, data_dir)
    return load_mix(ds, data_dir) if ds.get("mix") else load_single(ds, data_dir)


def tokenize(ex: SplitExamples, tok: Any, ds: Mapping[str, Any], cache_dir: Path) -> Any:
    """A ``datasets.Dataset`` of input_ids/attention_mask(/labels), cached on disk; a mixed split
    tokenizes each source with its own config; feature vectors pass through as tensors."""
    if is_features(ex):
        return feature_rows(ex)
    if isinstance(ex, MixedSplit):
        return tokenize_mix(ex, tok, cache_dir)
    if ds.get("task") == "image_text":  # pixels + caption ids (small sets: in memory, not cached)
        from peftbench.data.image_text import encode_split

        return encode_split(ex, tok, ds)
    return tokenize_split(ex, tok, ds, cache_dir)
