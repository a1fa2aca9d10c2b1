"""Issue 6 studies: gpt2_local pretraining path, text-classification SFT, image-text LoRA, the suite grid."""

from __future__ import annotations

import json

import pytest

# the 3-step smoke-run overrides of tests/conftest.py
FAST = ["trainer.max_steps=3", "dataset.train_limit=64", "dataset.val_limit=32", "data.batch_size=8",
        "measure.inference_overhead=false"]


def test_gpt2_local_refused_until_pretrained_then_loads(compose_run, tmp_path):
    from peftbench.train import train

    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    small = ["model.sizes.s.arch.n_embd=32", "model.sizes.s.arch.n_layer=1", "model.sizes.s.arch.n_head=2",
             "model.arch_defaults.vocab_size=512"]
    rec = train(compose_run("model=gpt2_local", "model_size=s", "method=lora", "dataset=wiki_demo", cache, *small, *FAST))
    assert rec["status"] == "refused"
    assert "experiment=pretrain_gpt2_local model_size=s" in rec["error"]

    pre = train(compose_run("experiment=pretrain_gpt2_local", "model_size=s", cache, *small, "trainer.max_steps=2",
                            "data.batch_size=4", "measure.inference_overhead=false"))
    assert pre["status"] == "ok", pre["error"]
    out = tmp_path / "cache" / "pretrained" / "gpt2_local-s"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert pre["params"]["trainable"] == pre["params"]["total"] > 0

    rec = train(compose_run("model=gpt2_local", "model_size=s", "method=lora", "dataset=wiki_demo", cache, *small, *FAST))
    assert rec["status"] == "ok", rec["error"]
    assert rec["model"]["checkpoint"] == str(out)
    assert rec["model"]["total"] == pre["params"]["total"]  # the pretrained weights, not a new init
    assert 0 < rec["params"]["trainable"] < rec["params"]["total"]


def test_text_cls_sft_accuracy_from_generated_labels(compose_run):
    from peftbench.train import train

    rec = train(compose_run("experiment=seed_textcls_sst2", "model=qwen2", "model_size=tiny", "trainer.max_steps=2",
                            "dataset.train_limit=16", "dataset.val_limit=8", "textcls.eval_limit=8",
                            "textcls.max_new_tokens=3", "data.batch_size=4"))
    assert rec["status"] == "ok", rec["error"]
    m = rec["metrics"]
    assert 0.0 <= m["val/acc"] <= 1.0 and m["val/n_generated"] == 8
    assert m["val/acc"] <= m["val/valid_label_rate"]
    assert 0.0 <= m["val/acc_zero_shot"] <= m["val/valid_label_rate_zero_shot"] <= 1.0  # the base model, same prompts


def test_parse_label():
    from peftbench.studies.text_cls_sft import parse_label

    names = ["negative", "positive"]
    assert parse_label(" Positive.\nmore", names) == 1
    assert parse_label("negative sentiment", names) == 0
    assert parse_label("no idea", names) is None


def test_image_text_generator_and_lora_bleu(compose_run, tmp_path):
    from peftbench.data.image_text import make_shapes_dataset, read_annotations
    from peftbench.train import train

    folder = make_shapes_dataset(tmp_path / "shapes", n=12, size=16)
    assert len(read_annotations(folder)) == 12
    rec = train(compose_run("experiment=seed_image_text", f"image_text.data_dir={folder}", "image_text.image_size=16",
                            "trainer.max_steps=2", "data.batch_size=4"))
    assert rec["status"] == "ok", rec["error"]
    assert 0.0 <= rec["metrics"]["val/bleu"] <= 1.0
    assert 0 < rec["params"]["trainable"] == rec["params"]["added"] < rec["params"]["total"]


def test_image_text_missing_image_names_file_and_row(tmp_path):
    from peftbench.data.image_text import make_shapes_dataset, read_annotations
    from peftbench.errors import DataError

    folder = make_shapes_dataset(tmp_path / "shapes", n=3, size=8)
    rows = json.loads((folder / "annotations.json").read_text())
    rows[2]["image_path"] = "images/nope.png"
    (folder / "annotations.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"annotations.json row 2: image 'images/nope.png' not found"):
        read_annotations(folder)


def test_suite_dry_run_lists_grid(capsys):
    from peftbench.studies.suite import available_methods, grids, main

    assert main(["--quick", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [x for x in lines if not x.startswith(("#", "pretrain"))]
    g = grids()["standard_quick"]
    methods, skipped = available_methods(g.methods)
    assert methods and f"skipped: {skipped}" in lines[0]
    expected = sum(len(t.models) * len(g.lr_grid(m, t)) for t in g.tasks for m in methods
                   if t.methods is None or m in t.methods)  # phase 1: the lr grid on the first seed
    assert len(runs) == expected
    assert any(x.startswith("pretrain gpt2_local-s") for x in lines)
    sst2 = next(x for x in runs if x.startswith("sst2/"))
    assert "dataset.local.files.validation=dev.tsv" in sst2 and "+dataset.local.files.test=validation.tsv" in sst2


def test_suite_second_seeds_run_only_at_the_selected_lr():
    from peftbench.studies.suite import Cell, Grid, Task, seed_cells, select

    t = Task("lm", (), "val/loss", "val/ppl", (("gpt2_local", "s"),))
    g = Grid("g", [t], ["lora"], seeds=[1, 2, 3], lrs={"default": [1e-3, 3e-3]})
    recs = {Cell(t, "gpt2_local", "s", "lora", 1e-3, 1): {"status": "ok", "metrics": {"val/loss": 2.0}},
            Cell(t, "gpt2_local", "s", "lora", 3e-3, 1): {"status": "ok", "metrics": {"val/loss": 1.5}}}
    sel = select(g, recs)
    assert sel[0]["best_lr"] == 3e-3  # lower loss wins
    more = list(seed_cells(sel, list(recs), g))
    assert [(c.lr, c.seed) for c in more] == [(3e-3, 2), (3e-3, 3)]
    recs[Cell(t, "gpt2_local", "s", "lora", 1e-3, 1)]["status"] = "failed"
    recs[Cell(t, "gpt2_local", "s", "lora", 3e-3, 1)]["status"] = "failed"
    assert list(seed_cells(select(g, recs), list(recs), g)) == []  # nothing selected, nothing more to run


def test_bleu_scores_the_synthetic_captions():
    """Seven-word captions: identical → 1, one wrong word → between 0 and 1 (3-word captions scored 0)."""
    from peftbench.studies.image_text import bleu

    refs = ["a red circle in the top left", "a blue square in the bottom right"]
    assert bleu(refs, refs) == pytest.approx(1.0)
    assert 0.0 < bleu(["a red circle in the top right", "a blue square in the bottom right"], refs) < 1.0


def test_shapes_captions_name_colour_shape_and_position(tmp_path):
    import json

    from peftbench.data.image_text import make_shapes_dataset

    rows = json.loads((make_shapes_dataset(tmp_path / "s", n=8, size=16) / "annotations.json").read_text())
    for r in rows:
        w = r["text"].split()
        assert len(w) == 7 and w[3:5] == ["in", "the"] and w[5] in ("top", "bottom") and w[6] in ("left", "right")


def test_every_standard_cell_is_hashable():
    """Cells key the run records: a task field that is a dict (a per-task lr grid) must not break that."""
    from peftbench.studies.suite import cells, grids

    g = grids()["standard_cpu"]
    cs = list(cells(g, g.methods))
    assert len({c: None for c in cs}) == len(cs)
