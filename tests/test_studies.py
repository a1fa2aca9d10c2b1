"""Issue 6 studies: gpt2_local pretraining path, text-classification SFT and image-text LoRA (both
configurations of the one pipeline since issue 19), the suite grid."""

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


# ---- seed study 2: a classification set read as SFT, scored by generated labels ------------------
# The tiny llama is built from config (random weights): the numbers are noise, the path is real.
TEXTCLS = ["experiment=seed_textcls_sst2", "model_size=tiny", "dataset.train_limit=16", "dataset.val_limit=8",
           "dataset.as_sft.max_new_tokens=3", "data.eval_batch_size=8", "trainer.max_steps=2",
           "measure.inference_overhead=false", "forgetting.enabled=false"]


def test_text_cls_as_sft_runs_through_the_pipeline(compose_run):
    """No study code: the run trains under the shared budget (2 micro-batches of 2 per update) with the
    causal-LM SFT loss, and the task scores greedy answers before (measure.before) and after fit."""
    from peftbench.train import train

    rec = train(compose_run(*TEXTCLS, "data.batch_size=2", "data.effective_batch_size=4"))
    assert rec["status"] == "ok", rec["error"]
    m = rec["metrics"]
    assert m["val/n_generated"] == m["val/n_generated_before"] == 8
    for sfx in ("", "_before"):
        assert 0.0 <= m[f"val/acc{sfx}"] <= m[f"val/valid_label_rate{sfx}"] <= 1.0
    assert {"val/loss", "val/ppl", "val/token_acc"} <= set(m)
    assert (rec["dataset"]["name"], rec["dataset"]["task"]) == ("sst2_sft", "causal_lm")
    assert rec["budget"]["accumulate_grad_batches"] == 2 and rec["budget"]["optimizer_steps"] == 2
    assert rec["method"]["name"] == "lora" and rec["method"]["optim"]["lr"] == 1e-3
    assert 0 < rec["params"]["trainable"] == rec["params"]["added"] < rec["params"]["total"]


def test_as_sft_turns_labelled_texts_into_prompt_and_answer():
    from peftbench.data.examples import SplitExamples
    from peftbench.data.sft import run_dataset, to_sft

    view = run_dataset({"name": "s", "task": "classification", "label_names": ["negative", "positive"],
                        "as_sft": {"max_new_tokens": 4}})
    assert (view["task"], view["format"], view["name"]) == ("causal_lm", "prompt_response", "s_sft")
    assert run_dataset(view) == view  # the run's view is read once more by the loaders: unchanged
    ex = to_sft(SplitExamples("train", "f.tsv", {"text": ["a great film", "dull"], "label": [1, 0]}), view)
    assert ex.columns["response"] == ["positive", "negative"]
    assert ex.columns["prompt"][0] == ("Classify the text into one of these labels: negative, positive.\n"
                                       "Text: a great film\nAnswer with the label only.")


@pytest.mark.parametrize("change,option", [
    ({"task": "causal_lm"}, "dataset.as_sft"),
    ({"label_names": None}, "dataset.as_sft"),
    ({"as_sft": {"prompt": "no placeholder"}}, "dataset.as_sft.prompt"),
    ({"as_sft": {"max_new_tokens": 0}}, "dataset.as_sft.max_new_tokens"),
])
def test_as_sft_refusals_name_the_option(change, option):
    from peftbench.data.sft import run_dataset
    from peftbench.errors import ConfigError

    ds = {"name": "s", "task": "classification", "label_names": ["a", "b"], "as_sft": {"max_new_tokens": 4}, **change}
    with pytest.raises(ConfigError) as e:
        run_dataset(ds)
    assert e.value.option == option


def test_sft_rows_split_into_left_padded_prompts_and_answers():
    """Generation continues each row's prompt (its -100-labelled head); a row cut before its answer is dropped."""
    import torch

    from peftbench.lit.generation import split_sft_rows

    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 0], [5, 9, 3, 0, 0], [4, 4, 4, 4, 4]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
             "labels": torch.tensor([[-100, -100, 7, 8, -100], [-100, 9, 3, -100, -100], [-100] * 5])}
    ids, mask, answers = split_sft_rows(batch, pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 5]] and mask.tolist() == [[1, 1], [0, 1]]
    assert answers == [[7, 8], [9, 3]]


@pytest.mark.parametrize("name,apart", [("prompt_tuning", True), ("p_tuning", True), ("prefix_tuning", False),
                                       ("lora", False)])
def test_generated_answers_do_not_depend_on_padding(name, apart):
    """peft's prompt tuning and P-Tuning generate without position ids, so a left-padded prompt sits
    further from its virtual tokens than when alone (logits move ~1e-3 on a tiny Llama): such models
    generate each prompt length as its own unpadded batch. Every method's batched answers equal the
    answers each row gets alone."""
    import torch
    import yaml

    from peftbench.config.paths import conf_dir
    from peftbench.lit.generation import generate_continuations, positions_ignore_padding
    from peftbench.methods.registry import get_method
    from peftbench.models import build_context, load_model, load_tokenizer, resolve_spec

    spec = resolve_spec(yaml.safe_load((conf_dir() / "model" / "llama.yaml").read_text()), "tiny")
    tok = load_tokenizer(spec)
    ctx = build_context(spec, "causal_lm")
    method = get_method(name)()
    method.check(ctx)
    model = method.apply(load_model(spec, "causal_lm", 0, tok), ctx).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    assert positions_ignore_padding(model) is apart
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [9, 10, 11, 12, 13, 14], [0, 0, 0, 8, 9, 10], [0, 0, 0, 0, 0, 4]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6, [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    seen, scores = [], {}
    generate = model.generate

    def spy(**kw):  # each row's scores at every step, keyed by its unpadded prompt
        seen.append(kw["attention_mask"].clone())
        out = generate(**kw, output_scores=True, return_dict_in_generate=True)
        for i, (row, m) in enumerate(zip(kw["input_ids"], kw["attention_mask"])):
            scores.setdefault(tuple(row[m.bool()].tolist()), []).append(torch.stack([s[i] for s in out.scores]))
        return out.sequences

    model.generate = spy
    gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        batched = generate_continuations(model, ids, mask, **gen)
        alone = [generate_continuations(model, i[m.bool()][None], m[m.bool()][None], **gen)[0]
                 for i, m in zip(ids, mask)]
    assert batched.shape == (4, 4)
    assert [r.tolist() for r in batched] == [a.tolist() for a in alone]
    for prompt, (in_batch, by_itself) in scores.items():  # the old batched path moved them by ~1e-3
        torch.testing.assert_close(in_batch, by_itself, rtol=0, atol=1e-5, msg=lambda m: f"{prompt}: {m}")
    batched_calls = seen[:len(seen) - 4]
    if apart:  # one call per prompt length (3, 6, 1), none padded
        assert len(batched_calls) == 3 and all(bool(m.all()) for m in batched_calls)
    else:
        assert len(batched_calls) == 1 and not bool(batched_calls[0].all())


def test_parse_label():
    from peftbench.lit.generation import parse_label

    names = ["negative", "positive"]
    assert parse_label(" Positive.\nmore", names) == 1
    assert parse_label("negative sentiment", names) == 0
    assert parse_label("no idea", names) is None


# ---- seed study 4: image–text, a task of the normal path ---------------------------------------------
def test_image_text_runs_through_the_pipeline(compose_run, tmp_path):
    """model=tiny_vlm, dataset=shapes (a local folder here), LoRA from the registry on the decoder's
    attention; BLEU and attribute accuracy of greedy captions, before and after fit."""
    from peftbench.data.image_text import make_shapes_dataset
    from peftbench.train import train

    folder = make_shapes_dataset(tmp_path / "shapes", n=12, size=16)
    rec = train(compose_run("experiment=seed_image_text", f"dataset.local.dir={folder}", "dataset.image_size=16",
                            "model.sizes.tiny.arch.encoder.image_size=16", "trainer.max_steps=2", "data.batch_size=4",
                            "measure.before=true", "measure.inference_overhead=false"))
    assert rec["status"] == "ok", rec["error"]
    m = rec["metrics"]
    for key in ("val/bleu", "val/colour_acc", "val/shape_acc", "val/position_acc", "val/bleu_before",
                "val/all_attr_acc", "val/const_bleu", "val/const_colour_acc", "val/const_all_attr_acc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert rec["dataset"]["sizes"] == {"train": 9, "validation": 3} and rec["model"]["family"] == "tiny_vlm"
    assert 0 < rec["params"]["trainable"] == rec["params"]["added"] < rec["params"]["total"]
    adapted = sorted(rec["params"]["delta_rank"])  # ΔW = merged − base: the decoder's attention only
    assert adapted and all(".attn.c_attn" in n or ".crossattention." in n for n in adapted)
    assert rec["budget"]["optimizer_steps"] == 2 and rec["method"]["optim"]["lr"] == 3e-3


@pytest.mark.parametrize("override,option", [
    ("dataset.image_size=16", "dataset.image_size"),        # the ViT takes 32x32
    ("method=prefix_tuning", "method"),                     # no virtual tokens for a captioner
    ("dataset.local.dir=/nonexistent/shapes", "dataset.local.dir"),
])
def test_image_text_refusals_before_weights(compose_run, override, option):
    from peftbench.config.plan import make_plan
    from peftbench.errors import PeftbenchError

    with pytest.raises(PeftbenchError) as e:
        make_plan(compose_run("experiment=seed_image_text", override))
    assert e.value.option == option


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
    from peftbench.cli.suite import available_methods, grids, main

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
    from peftbench.cli.suite import Cell, Grid, Task, seed_cells, select

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


def test_bleu_is_sacrebleu_corpus_bleu_summed_over_batches():
    """Seven-word captions: identical → 1, one wrong word → between 0 and 1; batch by batch = one corpus."""
    import sacrebleu

    from peftbench.lit.generation import CorpusBLEU

    refs = ["a red circle in the top left", "a blue square in the bottom right", "a green triangle in the top right"]
    preds = ["a red circle in the top right", "a blue square in the bottom right", "a green circle"]
    m = CorpusBLEU()
    m.update(preds[:1], refs[:1])
    m.update(preds[1:], refs[1:])
    assert float(m.compute()) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert 0.0 < float(m.compute()) < 1.0
    same = CorpusBLEU()
    same.update(refs, refs)
    assert float(same.compute()) == pytest.approx(1.0)


def test_attribute_accuracy_reads_the_named_value():
    from peftbench.lit.generation import attribute_hits, named_value

    where = ["top left", "top right", "bottom left", "bottom right"]
    assert named_value("a red circle in the  Top Left", where) == "top left"
    assert named_value("a reddish circle", ["red"]) is None  # whole words only
    refs = ["a red circle in the top left", "a blue square in the bottom right", "no position here"]
    assert attribute_hits(["a red circle in the top left", "a blue blob", "x"], refs, where).tolist() == [1.0, 0.0]
    assert attribute_hits(["a red square", "a red square", "x"], refs, ["red", "blue"]).tolist() == [1.0, 0.0]


def test_shapes_captions_name_colour_shape_and_position(tmp_path):
    import json

    from peftbench.data.image_text import make_shapes_dataset

    rows = json.loads((make_shapes_dataset(tmp_path / "s", n=8, size=16) / "annotations.json").read_text())
    for r in rows:
        w = r["text"].split()
        assert len(w) == 7 and w[3:5] == ["in", "the"] and w[5] in ("top", "bottom") and w[6] in ("left", "right")


def test_every_standard_cell_is_hashable():
    """Cells key the run records: a task field that is a dict (a per-task lr grid) must not break that."""
    from peftbench.cli.suite import cells, grids

    g = grids()["standard_cpu"]
    cs = list(cells(g, g.methods))
    assert len({c: None for c in cs}) == len(cs)


def _every_cell(g, shared):
    """Phase 1 and every later seed at every lr of the grid: all the cells a run of ``g`` can make."""
    from peftbench.cli.suite import Cell, cells

    return {(c.rel_dir(), *c.overrides(g, shared)) for c1 in cells(g, g.methods) for s in g.seeds_of(c1.task)
            for c in [Cell(c1.task, c1.model, c1.size, c1.method, c1.lr, s)]}


def test_grid_reusing_another_grids_runs_makes_the_same_shared_cells():
    """``runs_from``: a cell both grids make must have the same overrides (same run id, same folder),
    or each grid would re-run, and overwrite, the other's run."""
    from pathlib import Path

    from peftbench.cli.suite import Grid, Task

    shared = Path("/pretrained")
    lm = Task("wiki_lm", ("dataset=wiki_demo",), "val/loss", "test/ppl", (("gpt2_local", "s"),))
    owner = Grid("owner", [lm], ["full", "lora"], seeds=[1, 2], lrs={"default": [1e-3, 3e-3]}, pretrain={"s": 40})
    borrower = Grid("borrower", [lm], ["lora", "qlora"], seeds=[1, 2], lrs={"default": [1e-3, 3e-3]},
                    pretrain={"s": 40}, runs_from="owner")
    mine = {c[0]: c[1:] for c in _every_cell(borrower, shared)}
    theirs = {c[0]: c[1:] for c in _every_cell(owner, shared)}
    common = mine.keys() & theirs.keys()
    assert common and {k: mine[k] for k in common} == {k: theirs[k] for k in common}


def test_grid_yaml_with_an_unknown_key_is_refused(tmp_path):
    from peftbench.cli.suite import load_grid
    from peftbench.errors import ConfigError

    f = tmp_path / "mine.yaml"
    f.write_text("methods: [lora]\nseeds: [1]\nlrs: {default: [1e-3]}\n"
                 "tasks: [{name: t, overrides: [], select: val/loss, report: val/ppl, models: {gpt2_local: [s]},"
                 " seed: [1]}]\n")
    with pytest.raises(ConfigError, match=r"mine.yaml tasks\[0\]: unknown key\(s\) \['seed'\]"):
        load_grid(f)
    f.write_text("methods: [lora]\nseeds: [1]\nlrs: {default: [1e-3]}\ntasks: []\ngrid: x\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['grid'\]"):
        load_grid(f)
    f.write_text("methods: [lora]\nlrs: {default: [1e-3]}\ntasks: []\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: missing key\(s\) \['seeds'\]"):
        load_grid(f)
    f.write_text("methods: [lora]\nseeds: [1]\nlrs: {default: [1e-3]}\n"
                 "tasks: [{name: t, overrides: [a=1], select: val/loss, report: val/ppl, models: {gpt2_local: [s]}}]\n")
    g = load_grid(f)
    assert (g.name, g.tasks[0].models, g.lr_grid("lora")) == ("mine", (("gpt2_local", "s"),), [1e-3])
