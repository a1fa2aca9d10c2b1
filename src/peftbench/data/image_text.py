"""Image–caption pairs (task ``image_text``) from a local folder: ``images/`` + ``annotations.json`` or
``.csv`` with columns ``image_path`` (relative to the folder) and ``text``; plus a generator for a
synthetic shapes-and-colours caption set so the image–text path runs offline and in tests.

``dataset.local.dir`` names the folder (absolute, or under the data dir); when it is null the
synthetic set (``dataset.synthetic: {n, seed}``) is generated once into the cache. The last
``val_fraction`` of the pairs is the validation split. Images are read and resized to
``dataset.image_size`` when the DataModule sets up; batches are ``pixel_values`` + caption
``labels`` (caption ids + EOS, padded with -100).

``python -m peftbench.data.image_text OUT_DIR --n 96`` writes such a folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from peftbench.config.checks import positive_int
from peftbench.config.paths import cache_dir, data_root
from peftbench.data.examples import SplitExamples, _subset
from peftbench.data.tokenize import IGNORE
from peftbench.errors import ConfigError, DataError

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (230, 210, 30)}
SHAPES = ("circle", "square", "triangle")
OPTION = "dataset.local.dir"


def read_annotations(folder: str | Path) -> list[tuple[Path, str]]:
    """(image file, caption) pairs; a missing column or image is refused naming the file and row."""
    folder = Path(folder)
    js, cs = folder / "annotations.json", folder / "annotations.csv"
    if js.exists():
        src, rows = js, json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise DataError(f"{js}: expected a JSON list of {{image_path, text}} objects", option=OPTION)
    elif cs.exists():
        src = cs
        with cs.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        raise DataError(f"{folder} has neither annotations.json nor annotations.csv", option=OPTION)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("image_path") or row.get("text") in (None, ""):
            raise DataError(f"{src} row {i}: needs non-empty 'image_path' and 'text'", option=OPTION)
        img = folder / str(row["image_path"])
        if not img.is_file():
            raise DataError(f"{src} row {i}: image '{row['image_path']}' not found ({img})", option=OPTION)
        out.append((img, str(row["text"])))
    if not out:
        raise DataError(f"{src} lists no examples", option=OPTION)
    return out


def make_shapes_dataset(out: str | Path, n: int = 96, seed: int = 0, size: int = 32) -> Path:
    """``n`` images of one coloured shape on white, captioned "a <colour> <shape> in the <top|bottom>
    <left|right>" (seven words, so BLEU-4 has 4-grams, and the position must be read off the image)."""
    from PIL import Image, ImageDraw

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        img = Image.new("RGB", (size, size), "white")
        d = ImageDraw.Draw(img)
        r = rng.randint(size // 5, size // 3)
        cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            d.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            d.rectangle(box, fill=COLOURS[colour])
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
        name = f"images/{i:04d}.png"
        img.save(out / name)
        where = f"{'top' if cy < size / 2 else 'bottom'} {'left' if cx < size / 2 else 'right'}"
        rows.append({"image_path": name, "text": f"a {colour} {shape} in the {where}"})
    (out / "annotations.json").write_text(json.dumps(rows, indent=1))
    return out


def load_pixels(paths: list[Path], image_size: int):
    """Images → a float tensor (N, 3, S, S) normalised to [-1, 1] (ViT's default processor values)."""
    import numpy as np
    import torch
    from PIL import Image

    arrs = [np.asarray(Image.open(p).convert("RGB").resize((image_size, image_size)), dtype=np.float32) for p in paths]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 255.0
    return (x - 0.5) / 0.5


def image_folder(ds: Mapping[str, Any], data_dir: str | None) -> Path:
    """The named folder (refused when missing), or the synthetic set, generated once into the cache
    (atomically: parallel runs of a sweep may ask at the same time)."""
    sub = (ds.get("local") or {}).get("dir")
    if sub:
        p = Path(str(sub)).expanduser()
        root = data_root(data_dir)
        p = p if p.is_absolute() or root is None else root / p
        if not p.is_dir():
            raise DataError(f"image folder {p} does not exist", option=OPTION)
        return p
    syn = ds.get("synthetic") or {}
    n = positive_int(syn.get("n", 96), "dataset.synthetic.n")
    seed, size = int(syn.get("seed", 0)), positive_int(ds.get("image_size", 32), "dataset.image_size")
    out = cache_dir() / "image_text" / f"shapes-v2-n{n}-s{size}-seed{seed}"
    if not (out / "annotations.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        make_shapes_dataset(tmp, n, seed, size)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


_WORD = r"[\w'-]+"


def _words(text: str) -> str:
    """Lower-cased words separated by single spaces: case and punctuation do not change the value named."""
    return " ".join(re.findall(_WORD, text.lower()))


def value_pattern(value: str) -> re.Pattern:
    """The value as whole words in original text (any case, any separator between its words)."""
    return re.compile(r"(?<![\w'-])" + r"[^\w'-]+".join(map(re.escape, value.split())) + r"(?![\w'-])", re.IGNORECASE)


def named_value(text: str, values: list[str]) -> str | None:
    """The one value of ``values`` that the text names as whole words (longest first, a match consumes
    its words, so "top left" is not also "top"); None when it names none, or several (a caption
    hedging "red blue circle" is not right about its colour)."""
    padded, found = f" {_words(text)} ", set()
    for v in sorted(values, key=len, reverse=True):
        key = f" {_words(v)} "
        if key.strip() and key in padded:
            found.add(v)
            padded = padded.replace(key, " | ")
    return found.pop() if len(found) == 1 else None


ATTR_OPTION = "dataset.attributes"


def check_attributes(attributes: Any, captions: list[str]) -> dict[str, list[str]]:
    """``dataset.attributes`` ({name: [values]}) checked against the captions: each an identifier
    (it names the metric ``<name>_acc``) with distinct non-empty values, and named by at least one
    caption — an attribute no caption names would score nothing and read as a missing metric."""
    if attributes in (None, {}):
        return {}
    if not isinstance(attributes, Mapping):
        raise ConfigError(f"expected a mapping {{name: [values]}}, got {type(attributes).__name__}", option=ATTR_OPTION)
    out = {}
    for name, values in attributes.items():
        if not str(name).isidentifier() or name == "all_attr":
            raise ConfigError(f"attribute name '{name}' must be an identifier other than 'all_attr' "
                              "(it names the metric <name>_acc)", option=ATTR_OPTION)
        if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"attribute '{name}' needs a non-empty list of values, got {values!r}", option=ATTR_OPTION)
        vals = [str(v).strip() for v in values]
        if any(not v for v in vals) or len({v.lower() for v in vals}) < len(vals):
            raise ConfigError(f"attribute '{name}': values must be non-empty and distinct, got {vals}", option=ATTR_OPTION)
        if not any(named_value(c, vals) is not None for c in captions):
            raise ConfigError(f"attribute '{name}': no caption names exactly one of {vals}", option=ATTR_OPTION)
        out[str(name)] = vals
    return out


def load_image_text(ds: Mapping[str, Any], data_dir: str | None) -> dict[str, SplitExamples]:
    """train/validation splits of (image path, caption); missing files refused by row, before any
    weight loads. The last ``val_fraction`` of the pairs is held out; limits apply after the cut."""
    folder = image_folder(ds, data_dir)
    pairs = read_annotations(folder)
    n_val = max(2, int(len(pairs) * float(ds.get("val_fraction") or 0.25)))
    if len(pairs) < n_val + 2:
        raise ConfigError(f"{folder} has {len(pairs)} examples; need at least {n_val + 2} (train + validation)",
                          option=OPTION)
    check_attributes(ds.get("attributes"), [t for _, t in pairs])  # refused before any weight loads
    src = str(folder / ("annotations.json" if (folder / "annotations.json").exists() else "annotations.csv"))
    seed, out = int(ds.get("subset_seed", 0)), {}
    for name, part, limit in (("train", pairs[:-n_val], ds.get("train_limit")),
                              ("validation", pairs[-n_val:], ds.get("val_limit"))):
        keep = [part[i] for i in _subset(len(part), limit, seed)]
        out[name] = SplitExamples(name, src, {"image_path": [str(p) for p, _ in keep], "text": [t for _, t in keep]})
    return out


def encode_split(ex: SplitExamples, tok: Any, ds: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``pixel_values`` (3, S, S) and caption ``labels`` (ids cut to max_length - 1, + EOS);
    captions cut short are counted in ``ex.truncated`` (results.json ``dataset.truncated``)."""
    size, max_len = int(ds.get("image_size", 32)), int(ds.get("max_length", 16))
    pixels = load_pixels([Path(p) for p in ex.columns["image_path"]], size)
    ids = tok(list(ex.columns["text"]), add_special_tokens=False)["input_ids"]
    ex.truncated = sum(len(x) >= max_len for x in ids)
    return [{"pixel_values": px, "labels": x[: max_len - 1] + [tok.eos_token_id]} for px, x in zip(pixels, ids)]


class CaptionCollator:
    """Stack the images; pad the captions to the batch's longest with -100 (ignored by the loss)."""

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(r["labels"]) for r in rows)
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] + [IGNORE] * (n - len(r["labels"])) for r in rows])}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write a synthetic shapes-and-colours image–caption folder")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=32)
    a = p.parse_args(argv)
    print(make_shapes_dataset(a.out, a.n, a.seed, a.size))


if __name__ == "__main__":
    main()
