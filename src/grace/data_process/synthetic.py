"""A tiny synthetic benchmark of coloured shapes, for tests and smoke runs (no packages needed).

Each image is one shape of one colour at one size; its texts name the three attributes, so text → image
retrieval is learnable. Test images keep ``meta["keywords"]`` (non-query texts) for pseudo-queries.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from grace.data_process.dataset import Dataset, ImageRecord, save_karpathy

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "purple": (140, 60, 170), "orange": (245, 140, 30), "black": (20, 20, 20), "pink": (240, 130, 180)}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")


def _draw(shape: str, rgb: tuple[int, int, int], size: str, px: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (px, px), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    margin = px // 8 if size == "large" else px // 3
    box = (margin, margin, px - margin, px - margin)
    if shape == "circle":
        draw.ellipse(box, fill=rgb + (255,))
    elif shape == "square":
        draw.rectangle(box, fill=rgb + (255,))
    elif shape == "triangle":
        draw.polygon([(px // 2, margin), (px - margin, px - margin), (margin, px - margin)], fill=rgb + (255,))
    else:
        w = max(2, (px - 2 * margin) // 4)
        draw.rectangle((px // 2 - w, margin, px // 2 + w, px - margin), fill=rgb + (255,))
        draw.rectangle((margin, px // 2 - w, px - margin, px // 2 + w), fill=rgb + (255,))
    return image


def build_synthetic(out_dir: str | Path, *, n_images: int = 24, image_size: int = 32,
                    test_every: int = 6, val_every: int = 0) -> Dataset:
    """Write ``out_dir/dataset.json`` + ``out_dir/images/*.png`` with up to 64 distinct shapes.

    Every ``test_every``-th image is a test image (every ``val_every``-th a val image, when > 0).
    Held-out (test, val) images hold their query ("a small red circle") as the caption and synonyms as keywords.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    combos = list(itertools.product(SHAPES, COLOURS, SIZES))
    if n_images > len(combos):
        raise ValueError(f"at most {len(combos)} synthetic images")
    # interleave so the first images already cover many colours and shapes
    combos = sorted(combos, key=lambda c: (SIZES.index(c[2]), list(COLOURS).index(c[1]) % 4, c))[:n_images]
    records = []
    for index, (shape, colour, size) in enumerate(combos):
        image_id = f"{size}-{colour}-{shape}"
        path = out_dir / "images" / f"{image_id}.png"
        _draw(shape, COLOURS[colour], size, image_size).save(path)
        split = "train"
        if test_every and index % test_every == test_every - 1:
            split = "test"
        elif val_every and index % val_every == val_every - 1:
            split = "val"
        texts = [f"a {size} {colour} {shape}", f"{colour} {shape}, {size}"]
        meta = {"keywords": [f"{colour} {shape}", f"{size} {shape}", colour, shape]}
        if split in ("test", "val"):  # held out: the query is its only text
            texts = [f"a {size} {colour} {shape}"]
        records.append(ImageRecord(image_id=image_id, path=path, split=split, texts=texts, meta=meta))
    dataset = Dataset(records, name="synthetic-shapes", root=out_dir / "images")
    save_karpathy(dataset, out_dir / "dataset.json")
    return dataset
