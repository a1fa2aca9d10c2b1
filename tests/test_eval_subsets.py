"""A limited evaluation split is a seeded, stratified sample of the whole file: on a file sorted by
class its class histogram follows the file's (not the first rows'), and it is the same for every
method and run seed of one dataset config (runs can be paired example by example)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from peftbench.data.examples import load_single, stratified_subset
from peftbench.data.load import load_examples

# 4 classes of unequal size, the file sorted by class (as THUCNews' test.txt is)
SIZES = {"a": 40, "b": 30, "c": 20, "d": 10}


def _ds(folder: Path, **over) -> dict:
    ds = {"name": "sorted", "task": "classification", "label_names": list(SIZES),
          "local": {"dir": str(folder), "format": "tsv", "header": False, "text": 0, "label": 1,
                    "files": {"train": "train.tsv", "validation": "val.tsv", "test": "val.tsv"}},
          "train_limit": None, "val_limit": None, "test_limit": None, "subset_seed": 0}
    ds.update(over)
    return ds


@pytest.fixture()
def sorted_dir(tmp_path):
    rows = [f"text {c} {i}\t{c}" for c, n in SIZES.items() for i in range(n)]
    (tmp_path / "val.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _expected(limit: int) -> dict[int, int]:
    """The file's shares scaled to ``limit`` (these sizes divide exactly for the limits used)."""
    total = sum(SIZES.values())
    return {i: limit * n // total for i, n in enumerate(SIZES.values())}


@pytest.mark.parametrize("limit", [10, 20, 50])
def test_limited_split_keeps_the_files_class_histogram(sorted_dir, limit):
    out = load_single(_ds(sorted_dir, val_limit=limit, test_limit=limit), None)
    for split in ("validation", "test"):
        assert len(out[split]) == limit
        assert dict(Counter(out[split].columns["label"])) == _expected(limit)
    # the first `limit` rows of the file would have held class "a" only
    assert len(set(out["validation"].columns["label"])) == len(SIZES)


def test_largest_remainder_when_shares_are_not_whole(sorted_dir):
    limit = 7  # shares 2.8 / 2.1 / 1.4 / 0.7 → 3 / 2 / 1 / 1 (largest remainders: d 0.7, a 0.8)
    labels = load_single(_ds(sorted_dir, val_limit=limit), None)["validation"].columns["label"]
    hist = Counter(labels)
    total = sum(SIZES.values())
    for i, n in enumerate(SIZES.values()):
        assert abs(hist[i] - limit * n / total) < 1
    assert sum(hist.values()) == limit


def test_sample_is_seeded_by_the_dataset_config_not_the_run(sorted_dir):
    ds = _ds(sorted_dir, val_limit=20)
    a = load_examples(ds, None)["validation"].columns["text"]
    b = load_examples({**ds, "seed": 123}, None)["validation"].columns["text"]  # run settings play no part
    assert a == b
    other = load_examples({**ds, "subset_seed": 1}, None)["validation"].columns["text"]
    assert other != a and len(other) == len(a)  # another dataset config: another (equally stratified) sample
    # rows stay in file order, and within a class the draw is random, not the class's first rows
    assert a == sorted(a, key=lambda t: (list(SIZES).index(t.split()[1]), int(t.split()[2])))
    firsts = {f"text {c} {i}" for c, n in SIZES.items() for i in range(n * 20 // 100)}
    assert set(a) != firsts


def test_sft_view_scores_the_same_rows(sorted_dir):
    """A classification set read as SFT (seed study 2) evaluates the very rows the classifier does."""
    ds = _ds(sorted_dir, val_limit=20)
    cls = load_examples(ds, None)["validation"].columns["text"]
    sft = load_examples({**ds, "as_sft": {"prompt": "T: {text}", "max_new_tokens": 4}}, None)["validation"]
    assert sft.columns["prompt"] == [f"T: {t}" for t in cls]


def test_unlimited_and_degenerate_limits():
    assert stratified_subset(["x", "y"], None, "s") == [0, 1]
    assert stratified_subset(["x", "y"], 5, "s") == [0, 1]
    assert len(stratified_subset(["x"] * 9 + ["y"], 3, "s")) == 3


def test_thucnews_subset_covers_every_class(data_dir):
    """The real case: THUCNews' test.txt is sorted by class; 100 of its rows hold 10 of each class."""
    from peftbench.config.paths import dataset_config

    ds = dataset_config("thucnews", option="dataset")
    if not (data_dir / ds["local"]["dir"]).is_dir():
        pytest.skip("no thucnews in the data dir")
    full = load_single(ds, str(data_dir))["validation"].columns["label"]
    sub = load_single({**ds, "val_limit": 100}, str(data_dir))["validation"].columns["label"]
    want = {k: round(100 * v / len(full)) for k, v in Counter(full).items()}
    assert dict(Counter(sub)) == want
