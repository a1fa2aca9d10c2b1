"""Image–caption pairs from a local folder: ``images/`` + ``annotations.json`` or ``.csv`` with
columns ``image_path`` (relative to the folder) and ``text``; plus a generator for a synthetic
shapes-and-colours caption set so the image–text path runs offline and in tests.

``python -m peftbench.data.image_text OUT_DIR --n 96`` writes such a folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

from peftbench.errors import DataError

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (230, 210, 30)}
SHAPES = ("circle", "square", "triangle")


def read_annotations(folder: str | Path) -> list[tuple[Path, str]]:
    """(image file, caption) pairs; a missing column or image is refused naming the file and row."""
    folder = Path(folder)
    js, cs = folder / "annotations.json", folder / "annotations.csv"
    if js.exists():
        src, rows = js, json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise DataError(f"{js}: expected a JSON list of {{image_path, text}} objects", option="image_text.data_dir")
    elif cs.exists():
        src = cs
        with cs.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        raise DataError(f"{folder} has neither annotations.json nor annotations.csv", option="image_text.data_dir")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("image_path") or row.get("text") in (None, ""):
            raise DataError(f"{src} row {i}: needs non-empty 'image_path' and 'text'", option="image_text.data_dir")
        img = folder / str(row["image_path"])
        if not img.is_file():
            raise DataError(f"{src} row {i}: image '{row['image_path']}' not found ({img})", option="image_text.data_dir")
        out.append((img, str(row["text"])))
    if not out:
        raise DataError(f"{src} lists no examples", option="image_text.data_dir")
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
