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
    assert f"{d / 'train.tsv'} line 3: column 'label' is missing" in str(err)  # the file's line, header included


@pytest.mark.parametrize("label, expect", [("7", "label 7 is outside 0..1"), ("maybe", "label 'maybe' is not in the label set")])
def test_label_outside_label_set(tmp_path, compose_run, label, expect):
    d = _sst2_dir(tmp_path, f"sentence\tlabel\ngood\t1\nbad\t0\nodd\t{label}\n")
    err = _refusal(compose_run, d)
    assert f"{d / 'train.tsv'} line 4: {expect}" in str(err)
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


# ---- valid data that used to be refused with the wrong message, or silently cut ----------------------
def _plan(compose_run, d: Path, *extra: str):
    return make_plan(compose_run("model=bert", "dataset=sst2", f"dataset.local.dir={d}", *extra))


def test_line_separators_and_form_feeds_are_text_not_line_breaks(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "sentence\tlabel\na fine\u2028film\t1\na dull\x0cfilm\t0\n")
    texts = _plan(compose_run, d).examples["train"].columns["text"]
    assert texts == ["a fine\u2028film", "a dull\x0cfilm"]


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "\ufeffsentence\tlabel\na fine film\t1\na dull film\t0\n".encode())
    assert _plan(compose_run, d).examples["train"].columns["label"] == [1, 0]


def test_a_two_megabyte_line_is_read(tmp_path, compose_run):
    long = "word " * 400_000
    d = _sst2_dir(tmp_path, f"sentence\tlabel\n{long}\t1\na dull film\t0\n")
    assert len(_plan(compose_run, d).examples["train"].columns["text"][0]) == len(long)


def test_an_extra_tab_is_refused_not_cut(tmp_path, compose_run):
    d = _sst2_dir(tmp_path, "sentence\tlabel\na fine film\t1\na dull\tfilm\t0\n")
    err = _refusal(compose_run, d)
    assert "train.tsv line 3: 3 fields where the file has 2" in str(err)


def test_refusals_name_the_file_line_even_in_a_subsample(tmp_path, compose_run):
    rows = "".join(f"film {i}\t{i % 2}\n" for i in range(40)) + "bad film\t7\n"
    d = _sst2_dir(tmp_path, "sentence\tlabel\n" + rows)
    err = _refusal(compose_run, d, "dataset.train_limit=41")  # all rows, subsampled order-preserving
    assert "train.tsv line 42: label 7 is outside" in str(err)


def test_hopeless_training_sets_are_warned_about(tmp_path, compose_run, caplog):
    d = _sst2_dir(tmp_path, "sentence\tlabel\na fine film\t1\nanother fine film\t1\n")
    with caplog.at_level(logging.WARNING, logger="peftbench"):
        _plan(compose_run, d)
    assert "every training label is 1" in caplog.text


def test_headerless_rows_wider_than_the_file_are_refused_and_empty_tails_are_not(tmp_path, compose_run):
    from peftbench.data.sources import read_rows

    f = tmp_path / "mr.tsv"  # label first, text second, no header (like mr / mpqa / cola / agnews)
    f.write_text("1\ta good movie\n0\ta dull one\n1\tgood\tmovie\n")
    with pytest.raises(DataError, match="line 3: 3 fields where the file has 2"):
        read_rows(f, "tsv", header=False)
    g = tmp_path / "trailing.tsv"
    g.write_text("sentence\tlabel\nhello\t1\t\nbye\t0\n")  # a trailing tab: an empty field, harmless
    assert [r["sentence"] for r in read_rows(g, "tsv")] == ["hello", "bye"]
