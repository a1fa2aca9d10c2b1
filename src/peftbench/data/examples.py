"""Turn raw rows into task examples (texts + label ids, prompt/response pairs, plain text),
checking labels and columns row by row before anything is tokenized."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

from peftbench.data.sources import at, column, load_hub, local_dir, read_rows, split_file
from peftbench.errors import ConfigError, DataError

log = logging.getLogger("peftbench")

SPLITS = ("train", "validation", "test")


@dataclass
class SplitExamples:
    split: str
    source: str  # file path or hub name: used in messages and recorded in results.json
    columns: dict[str, list[Any]] = field(default_factory=dict)
    truncated: int | None = None  # examples cut to dataset.max_length (set by tokenization)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _label_ids(values: list[Any], names: list[str] | None, path: str, option: str,
               rows: list[dict[str, Any]]) -> list[int]:
    """Labels may be indices (0, 1, "1") or names ("Sci/Tech"); refuse anything outside the set,
    naming the file line."""
    names = list(names or [])
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i, v in enumerate(values):
        s = str(v).strip()
        if s in index:
            out.append(index[s])
            continue
        try:
            k = int(s)
        except ValueError:
            raise DataError(f"{path} {at(rows, i)}: label '{s}' is not in the label set {names}", option=option) from None
        if names and not 0 <= k < len(names):
            raise DataError(f"{path} {at(rows, i)}: label {k} is outside 0..{len(names) - 1} ({names})", option=option)
        out.append(k)
    return out


def _warn_degenerate(train: SplitExamples, src: str) -> None:
    """Valid but hopeless training data is said out loud (it would train, and score the majority)."""
    labels = train.columns["label"]
    if len(labels) < 2:
        log.warning("%s: only %d training example(s): the run can learn next to nothing", src, len(labels))
    elif len(set(labels)) == 1:
        log.warning("%s: every training label is %s: the run can only learn to answer it always", src, labels[0])


def _subset(n: int, limit: int | None, seed: int) -> list[int]:
    """A uniform sample of ``limit`` row indices out of ``n`` (in file order), seeded by ``seed``."""
    idx = list(range(n))
    if limit is not None and limit < n:
        random.Random(seed).shuffle(idx)
        idx = sorted(idx[:limit])
    return idx


def stratified_subset(labels: list[Any], limit: int | None, seed: Any) -> list[int]:
    """``limit`` row indices (in file order) drawn so each label keeps its share of the whole file.

    Each class gets ``limit × n_class / n`` rows, rounded by largest remainder (ties to the larger
    class, then the label), drawn at random within the class. A file sorted by class (THUCNews'
    test.txt) so yields every class in proportion, not the classes its first rows happen to hold.
    ``seed`` must come from the dataset config, never the run seed: every method and seed of one
    dataset config then scores the very same examples, and runs can be paired example by example.
    """
    n = len(labels)
    if limit is None or limit >= n:
        return list(range(n))
    by_class: dict[str, list[int]] = {}
    for i, v in enumerate(labels):
        by_class.setdefault(str(v).strip(), []).append(i)
    share = {c: limit * len(ix) / n for c, ix in by_class.items()}
    take = {c: int(s) for c, s in share.items()}
    order = sorted(by_class, key=lambda c: (-(share[c] - take[c]), -len(by_class[c]), c))
    for c in order[: limit - sum(take.values())]:
        take[c] += 1
    rng = random.Random(seed)
    keep: list[int] = []
    for c in sorted(by_class):  # a fixed class order: the draw does not depend on the file's order of classes
        keep += rng.sample(by_class[c], take[c])
    return sorted(keep)


def eval_seed(ds: Mapping[str, Any], split: str) -> str:
    """The seed of a dataset's limited split: its name, the split and ``subset_seed`` (dataset config
    only, so the sample is the same for every method and run seed)."""
    name = str(ds.get("name"))
    if ds.get("source_task") and name.endswith("_sft"):  # a classification set read as SFT: the same file, the same rows
        name = name[: -len("_sft")]
    return f"{name}:{split}:{int(ds.get('subset_seed', 0))}"


def _keep(ds: Mapping[str, Any], split: str, rows: list[dict[str, Any]], loc: Mapping[str, Any], src: str) -> list[int]:
    """Which rows a split keeps under its limit: training a uniform sample (``subset_seed``); a
    held-out classification split a stratified one (``stratified_subset``), so a limited evaluation
    set has the file's class balance."""
    limit = ds.get(f"{split}_limit") if split != "validation" else ds.get("val_limit")
    if limit is None or limit >= len(rows):
        return list(range(len(rows)))
    if split != "train" and ds["task"] == "classification":
        labels = column(rows, loc.get("label", "label"), src, "dataset.local.label")
        return stratified_subset(labels, limit, eval_seed(ds, split))
    return _subset(len(rows), limit, int(ds.get("subset_seed", 0)))


def load_split(ds: Mapping[str, Any], split: str, data_dir: str | None) -> SplitExamples:
    task = ds["task"]
    folder = local_dir(ds, data_dir)
    loc = ds.get("local") or {}
    if folder is not None:
        path = split_file(ds, folder, split)
        rows = read_rows(path, loc.get("format"), header=loc.get("header", True), sep=loc.get("sep"),
                         columns=loc.get("columns"))
        src = str(path)
    else:
        rows, src = load_hub(ds, split), f"hub:{(ds.get('hub') or {}).get('path')}/{split}"
        loc = {**loc, **(ds.get("hub") or {}).get("columns", {})}
    if not rows:
        raise DataError(f"{src}: no rows", option=f"dataset.local.files.{split}")
    rows = [rows[i] for i in _keep(ds, split, rows, loc, src)]
    out = SplitExamples(split, src)
    if task == "classification":
        out.columns["text"] = [str(x) for x in column(rows, loc.get("text", "text"), src, "dataset.local.text")]
        if loc.get("text_pair") is not None:
            out.columns["text_pair"] = [str(x) for x in column(rows, loc["text_pair"], src, "dataset.local.text_pair")]
        labels = column(rows, loc.get("label", "label"), src, "dataset.local.label")
        out.columns["label"] = _label_ids(labels, ds.get("label_names"), src, "dataset.label_names", rows)
        if split == "train":
            _warn_degenerate(out, src)
    elif task == "causal_lm":
        fmt = ds.get("format", "alpaca")
        if fmt == "text":
            key = str(loc.get("text", "text"))
            out.columns["text"] = [str(x) for x in column(rows, key, src, "dataset.local.text")]
        elif fmt == "messages":
            msgs = column(rows, loc.get("messages", "messages"), src, "dataset.local.messages")
            for i, m in enumerate(msgs):
                if not isinstance(m, list) or not all(isinstance(t, dict) and "role" in t and "content" in t for t in m):
                    raise DataError(f"{src} {at(rows, i)}: 'messages' must be a list of {{role, content}}", option="dataset.format")
                bad = sorted({str(t["role"]) for t in m} - {"system", "user", "assistant"})
                if bad:
                    raise DataError(f"{src} {at(rows, i)}: unknown role(s) {bad} (system | user | assistant)", option="dataset.format")
                if not any(t["role"] == "assistant" for t in m):
                    raise DataError(f"{src} {at(rows, i)}: no assistant turn, so nothing to train on", option="dataset.format")
            out.columns["messages"] = msgs
        elif fmt in ("alpaca", "prompt_response"):
            if fmt == "alpaca":
                ins = column(rows, loc.get("instruction", "instruction"), src, "dataset.local.instruction")
                inp = [r.get(loc.get("input", "input")) or "" for r in rows]
                out.columns["prompt"] = [f"{a}\n\n{b}".strip() if b else str(a) for a, b in zip(ins, inp)]
                out.columns["response"] = [str(x) for x in column(rows, loc.get("output", "output"), src, "dataset.local.output")]
            else:
                out.columns["prompt"] = [str(x) for x in column(rows, loc.get("prompt", "prompt"), src, "dataset.local.prompt")]
                out.columns["response"] = [str(x) for x in column(rows, loc.get("response", "response"), src, "dataset.local.response")]
        else:
            raise ConfigError(f"unknown causal_lm format '{fmt}' (alpaca | prompt_response | messages | text)", option="dataset.format")
    else:
        raise ConfigError(f"unknown task '{task}'", option="dataset.task")
    return out


def load_single(ds: Mapping[str, Any], data_dir: str | None) -> dict[str, SplitExamples]:
    """All configured splits of one source (mixes: data/load.py). A split the files do not provide is
    cut from the end of the train file: ``validation`` by ``val_fraction``, ``test`` by ``test_fraction``
    (the very end, after validation), so a benchmark can select on one held-out part and report on
    another (a one-document text is cut by characters)."""
    files = (ds.get("local") or {}).get("files") or {}
    splits = [s for s in SPLITS if s in files] or ["train", "validation"]
    fracs = {name: float(ds.get(key) or 0) for name, key in (("validation", "val_fraction"), ("test", "test_fraction"))}
    derived = [name for name, f in fracs.items() if f > 0 and name not in files]
    # cut the whole file first, then apply the limits, so train_limit never shrinks the held-out tails
    src = {**ds, "train_limit": None} if derived else ds
    out = {s: load_split(src, s, data_dir) for s in splits if s not in derived}
    if not derived:
        return out
    tr = out["train"]
    one_doc = "text" in tr.columns and len(tr) == 1
    n = len(tr.columns["text"][0]) if one_doc else len(tr)
    # [train | validation | test], cut at fractions of the whole file (validation alone: the cut is
    # int(n × (1 − val_fraction)), as before test_fraction existed, so earlier splits are unchanged)
    if "test" in derived:
        lo_test = n - round(n * fracs["test"])
        lo_val = lo_test - round(n * fracs["validation"]) if "validation" in derived else lo_test
    else:
        lo_test, lo_val = n, int(n * (1 - fracs["validation"]))
    if not one_doc:
        lo_val = max(1, lo_val)
        lo_test = max(lo_val, lo_test)
    if "test" in derived and not 0 < lo_val <= lo_test - ("validation" in derived) < n:
        unit = "characters" if one_doc else "rows"
        raise DataError(f"{tr.source}: {n} {unit} are too few to cut validation ({fracs['validation']}) and test "
                        f"({fracs['test']}) from the end and keep training data: every part needs at least one",
                        option="dataset.test_fraction")
    hi_test = n
    bounds = {"train": (0, lo_val), "validation": (lo_val, lo_test), "test": (lo_test, hi_test)}
    if one_doc:
        text = tr.columns["text"][0]
        for name in ("train", *derived):
            lo, hi = bounds[name]
            out[name] = SplitExamples(name, tr.source, {"text": [text[lo:hi]]})
        return out
    seed = int(ds.get("subset_seed", 0))
    limits = {"train": ds.get("train_limit"), "validation": ds.get("val_limit"), "test": ds.get("test_limit")}
    for name in ("train", *derived):
        lo, hi = bounds[name]
        if name != "train" and "label" in tr.columns:  # held out: stratified, as a file's would be
            keep = [lo + i for i in stratified_subset(tr.columns["label"][lo:hi], limits[name], eval_seed(ds, name))]
        else:
            keep = [lo + i for i in _subset(hi - lo, limits[name], seed)]
        out[name] = SplitExamples(name, tr.source, {k: [v[i] for i in keep] for k, v in tr.columns.items()})
    return out
