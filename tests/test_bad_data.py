"""Bad dataset files are refused before tokenization with a message naming the file and the row;
over-long sequences are truncated and the count is stated (warning + results.json)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from peftbench.config.plan import make_plan
from peftbench.errors import DataError

GOOD_VAL = "sentence\tlabel\na fine film\t1\na dull film\t0\n"


def _sst2_dir(tmp_path: Path, train: bytes | str, val: str = GOOD_VAL) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.tsv").write_bytes(train.encode() if isinstance(train, str) else train)
    (d / "validation.tsv").write_text(val)
    return d


def _refusal(compose_run, d: Path, *extra: str) -> DataError:
    cfg = compose_run("model=bert", "dataset=sst2", f"dataset.local.dir={d}", *extra)
    with pytest.raises(DataError) as e:
        make_plan(cfg)  # reads and checks the files; no weights loaded, nothing tokenized
    return e.value


def test_empty_file(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, b"")
    err = _refusal(compose_run, d)
    assert f"{d / 'train.tsv'} is empty" in str(err)
    assert err.option == "dataset.local.files.train"


def test_header_without_rows(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "sentence\tlabel\n")
    assert "has a header but no rows" in str(_refusal(compose_run, d))


def test_missing_column(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "text\tlabel\ngood\t1\n")
    err = _refusal(compose_run, d)
    assert str(d / "train.tsv") in str(err) and "no column 'sentence'" in str(err)
    assert err.option == "dataset.local.text"


def test_missing_cell_names_row(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "sentence\tlabel\ngood\t1\nno label here\nbad\t0\n")
    err = _refusal(compose_run, d)
    assert f"{d / 'train.tsv'} row 2: column 'label' is missing" in str(err)


@pytest.mark.parametrize("label, expect", [("7", "label 7 is outside 0..1"), ("maybe", "label 'maybe' is not in the label set")])
def test_label_outside_label_set(tmp_path, compose_run, label, expect):
    d = _sst2_dir(tmp_path, f"sentence\tlabel\ngood\t1\nbad\t0\nodd\t{label}\n")
    err = _refusal(compose_run, d)
    assert f"{d / 'train.tsv'} row 3: {expect}" in str(err)
    assert err.option == "dataset.label_names"


def test_non_utf8_bytes_name_line(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, b"sentence\tlabel\ngood\t1\nbad \xff\xfe bytes\t0\n")
    err = _refusal(compose_run, d)
    assert f"{d / 'train.tsv'} line 3: not valid UTF-8" in str(err)


def test_invalid_jsonl_line(tmp_path, compose_run):
    d = tmp_path / "data"
    d.mkdir()
    (d / "c4.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    cfg = compose_run("model=gpt2", "dataset=c4_demo", f"dataset.local.dir={d}", "dataset.local.files.train=c4.jsonl")
    with pytest.raises(DataError, match=r"c4\.jsonl line 2: invalid JSON"):
        make_plan(cfg)


def test_truncation_is_counted_and_warned(tmp_path, compose_run, caplog):
    """Rows longer than max_length are cut; results.json says how many, and a warning says so."""
    from peftbench.train import train

    long_row = " ".join(["word"] * 200)
    rows = ["good film\t1", f"{long_row}\t0", "bad film\t0", f"{long_row} again\t1", "fine\t1", "meh\t0"]
    d = _sst2_dir(tmp_path, "sentence\tlabel\n" + "\n".join(rows) + "\n", GOOD_VAL + f"{long_row}\t1\n")
    cfg = compose_run("model=bert", "model_size=tiny", "method=lora", "dataset=sst2", f"dataset.local.dir={d}",
                      "dataset.max_length=16", "trainer.max_steps=1", "data.batch_size=2",
                      "measure.inference_overhead=false", "measure.changed=false")
    with caplog.at_level(logging.WARNING):
        rec = train(cfg)
    assert rec["status"] == "ok", rec["error"]
    assert rec["dataset"]["truncated"] == {"train": 2, "validation": 1}
    on_disk = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert on_disk["dataset"]["truncated"] == {"train": 2, "validation": 1}
    assert any("2 of 6 examples are longer than dataset.max_length=16" in r.getMessage() for r in caplog.records)


def test_missing_image_path_names_file_and_row(tmp_path):
    """The image–text reader refuses a caption whose image file does not exist."""
    from peftbench.data.image_text import make_shapes_dataset, read_annotations

    d = make_shapes_dataset(tmp_path / "shapes", n=4)
    assert len(read_annotations(d)) == 4
    rows = json.loads((d / "annotations.json").read_text())
    rows[2]["image_path"] = "images/missing.png"
    (d / "annotations.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"annotations\.json row 2: image 'images/missing\.png' not found"):
        read_annotations(d)
