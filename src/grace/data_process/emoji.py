"""Offline emoji benchmark: Noto Color Emoji glyphs described by Unicode CLDR English annotations.

Also home of the helpers every offline builder shares (splits, query/keyword texts, atomic PNG
writes, the summary), so :mod:`grace.data_process.openclipart` imports them from here.

Texts per image: the CLDR name (the ``tts`` annotation, e.g. "grinning face") and the keywords
(the ``|``-separated default annotation). Held-out images (``test`` and the small ``val`` split) keep
only the name as their query in ``texts``; the other keywords go to ``meta["keywords"]`` for the
pseudo-query generator, and no string (case/space-normalised) is in both.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from grace.data_process.dataset import Dataset, ImageRecord, save_karpathy
from grace.data_process.groups import (
    IMAGE_COSINE,
    VAL_FRACTION,
    assign_group_splits,
    connected_groups,
    look_alike_keys,
    name_key,
    write_groups,
)
from grace.errors import GraceError
from grace.io_utils import atomic_path, write_json

log = logging.getLogger(__name__)

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR_DIR = Path("/usr/share/unicode/cldr")
EMOJI_INSTALL_HINT = "install it with: apt-get install fonts-noto-color-emoji unicode-cldr-core"
FONT_SIZE = 109  # the only size of the CBDT bitmap strikes in Noto Color Emoji
HELD_OUT = ("test", "val")
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
# joiners, selectors, keycap, tags: not glyphs of their own, so not looked up in the font's cmap
_COMBINING = frozenset([0x200D, 0xFE0E, 0xFE0F, 0x20E3, *range(0xE0020, 0xE0080)]) | SKIN_TONES


# ---------------------------------------------------------------- helpers shared by the builders
def norm_key(text: str) -> str:
    """Case- and space-normalised form used to compare texts."""
    return " ".join(text.casefold().split())


def clean_text(text: str | None) -> str:
    """Strip and collapse whitespace."""
    return " ".join((text or "").split())


def unique_texts(texts: Iterable[str]) -> list[str]:
    """Non-empty cleaned texts, first occurrence kept, compared case/space-insensitively."""
    seen, out = set(), []
    for text in texts:
        text = clean_text(text)
        if text and norm_key(text) not in seen:
            seen.add(norm_key(text))
            out.append(text)
    return out


def assign_splits(ids: list[str], *, test_fraction: float, seed: int,
                  val_fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Deterministic ``{id: split}``, every id a group of its own (:func:`~grace.data_process.groups.
    assign_group_splits`): ids ordered by a seeded hash; the first ``round(n*test_fraction)`` are test (at least
    one when ``test_fraction > 0`` and n >= 2), the next ``round(n*val_fraction)`` val, the rest train."""
    return assign_group_splits({i: i for i in ids}, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction)


def split_texts(queries: list[str], keywords: list[str], split: str) -> tuple[list[str], list[str]]:
    """``(texts, meta_keywords)`` of one image.

    Held-out splits keep only ``queries`` as texts; train images use every text. ``meta_keywords`` is
    always ``keywords`` minus anything equal (normalised) to a query, so the two never overlap.
    """
    queries = unique_texts(queries)
    query_keys = {norm_key(q) for q in queries}
    others = [k for k in unique_texts(keywords) if norm_key(k) not in query_keys]
    texts = queries if split in HELD_OUT else queries + others
    return texts, others


def even_subset(items: list, limit: int | None) -> list:
    """A deterministic, evenly spread subset of ``limit`` items (all items when ``limit`` is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    return [items[i * len(items) // limit] for i in range(limit)]


def save_png(image, path: Path) -> None:
    """Write a PIL image as PNG atomically (a killed run never leaves a truncated file)."""
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG", optimize=False)


def reusable_png(path: Path, size: int) -> bool:
    """True when ``path`` is an already-written PNG of ``size`` x ``size`` pixels."""
    if not path.is_file():
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size == (size, size)
    except Exception:  # noqa: BLE001 - any unreadable file is simply re-rendered
        return False


def pixel_digest(path: Path) -> str:
    """A digest of an image's decoded RGB pixels: equal for images drawn alike (flags that share a design)."""
    from PIL import Image

    with Image.open(path) as image:
        return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()[:16]


def fit_square(image, size: int, *, margin: float = 0.0):
    """Crop an RGBA image to its visible content, fit it into a ``size`` square on white, as RGB."""
    from PIL import Image

    image = image.convert("RGBA")
    bbox = image.getchannel("A").getbbox()
    if bbox is None:
        return None
    image = image.crop(bbox)
    inner = max(1, round(size * (1.0 - 2 * margin)))
    scale = inner / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(new_size, Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(image, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas.convert("RGB")


def progress_bar(iterable, *, total: int, desc: str, enabled: bool):
    """A tqdm bar over ``iterable`` (a no-op wrapper when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit="img", file=sys.stderr)


def grouped_splits(out_dir: Path, keys: dict[str, list[str]], paths: dict[str, Path], rule: str, *,
                   test_fraction: float, seed: int, encoder: str, image_cosine: float,
                   progress: bool) -> tuple[dict[str, str], dict[str, str]]:
    """``(groups, splits)`` of a built benchmark: ``keys`` joined with the images' pixel digests and, when
    ``image_cosine`` > 0, with the images that look alike under ``encoder`` (features cached in
    OUT/features/<encoder>); written to OUT/groups.json with the rule."""
    from grace.data_process.features import encoder_folder

    keys = {i: [*k, f"pixels:{pixel_digest(paths[i])}"] for i, k in keys.items()}
    if image_cosine > 0:
        records = [ImageRecord(i, paths[i], "train") for i in keys]
        looks = look_alike_keys(Dataset(records, root=out_dir / "images"), encoder=encoder, threshold=image_cosine,
                                cache_dir=out_dir / "features" / encoder_folder(encoder), progress=progress)
        keys = {i: k + looks[i] for i, k in keys.items()}
    groups = connected_groups(keys)
    splits = assign_group_splits(groups, test_fraction=test_fraction, seed=seed)
    write_groups(out_dir, groups, splits, {"rule": rule, "test_fraction": test_fraction, "seed": seed,
                                           "encoder": encoder if image_cosine > 0 else None,
                                           "image_cosine": image_cosine or None})
    return groups, splits


def finish_build(out_dir: Path, records: list[ImageRecord], name: str, skipped: dict[str, int],
                 started: float, *, progress: bool) -> Dataset:
    """Write ``build_summary.json`` then ``dataset.json`` (last, atomically) and report the counts."""
    if not records:
        raise GraceError(f"{name}: no image could be built (skipped: {skipped})")
    dataset = Dataset(records, name=name, root=out_dir / "images")
    summary = {"dataset": name, "images": len(records), "texts": sum(len(r.texts) for r in records),
               "splits": dataset.split_counts(), "skipped": skipped,
               "seconds": round(time.perf_counter() - started, 1)}
    write_json(out_dir / "build_summary.json", summary)
    save_karpathy(dataset, out_dir / "dataset.json")
    line = (f"{name}: {summary['images']} images, {summary['texts']} texts, splits {summary['splits']}, "
            f"skipped {skipped}, {summary['seconds']} s -> {out_dir / 'dataset.json'}")
    log.info(line)
    if progress:
        print(line, file=sys.stderr)
    return dataset


# ---------------------------------------------------------------- emoji
@dataclass(frozen=True)
class EmojiEntry:
    """One CLDR-annotated character sequence (``FE0F`` removed, as CLDR stores it)."""

    chars: str
    name: str
    keywords: tuple[str, ...]

    @property
    def codepoints(self) -> list[str]:
        return [f"U+{ord(c):04X}" for c in self.chars]

    @property
    def image_id(self) -> str:
        return "emoji-" + "-".join(f"{ord(c):x}" for c in self.chars)

    @property
    def has_skin_tone(self) -> bool:
        return any(ord(c) in SKIN_TONES for c in self.chars)

    @property
    def is_flag(self) -> bool:
        """A country or subdivision flag (regional-indicator pair, or a black flag with tag characters)."""
        return all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in self.chars) or (
            len(self.chars) > 1 and self.chars[0] == "\U0001F3F4" and 0xE0020 <= ord(self.chars[1]) < 0xE0080)

    @property
    def is_keycap(self) -> bool:
        return "\u20e3" in self.chars

    @property
    def zwj_base(self) -> str:
        """The sequence's first element without skin tones (the entry itself when it has no joiner)."""
        return "".join(c for c in self.chars.split("\u200d")[0] if ord(c) not in SKIN_TONES)


#: how ``build_emoji`` groups its images (written into groups.json)
EMOJI_GROUP_RULE = ("one group per name without gender, person, family-member and skin-tone qualifiers; a ZWJ "
                    "sequence with its base (unless the base is a person); flags each a group of their own; keycaps "
                    "one group; images with identical pixels, or whose features have cosine >= image_cosine, joined")


def emoji_group_keys(entries: list[EmojiEntry]) -> dict[str, list[str]]:
    """``{image id: keys}`` for :func:`~grace.data_process.groups.connected_groups` (:data:`EMOJI_GROUP_RULE`,
    less the pixels, which :func:`build_emoji` adds)."""
    by_chars = {e.chars: e for e in entries}
    keys: dict[str, list[str]] = {}
    for entry in entries:
        if entry.is_flag:
            keys[entry.image_id] = [f"flag:{entry.image_id}"]
        elif entry.is_keycap:
            keys[entry.image_id] = ["keycap"]
        else:
            base = by_chars.get(entry.zwj_base)
            own = [name_key(entry.name), f"seq:{entry.image_id}"]
            if base is not None and base is not entry and not base.is_flag and name_key(base.name) != "name:(person)":
                own.append(f"seq:{base.image_id}")
            keys[entry.image_id] = own
    return keys


def _find_cldr_file(cldr_dir: Path, folder: str) -> Path | None:
    for candidate in (cldr_dir / "common" / folder / "en.xml", cldr_dir / folder / "en.xml"):
        if candidate.is_file():
            return candidate
    found = sorted(cldr_dir.rglob(f"{folder}/en.xml")) if cldr_dir.is_dir() else []
    return found[0] if found else None


def read_cldr_annotations(cldr_dir: str | Path | None = None) -> list[EmojiEntry]:
    """English CLDR annotations (``annotations`` then ``annotationsDerived``), in file order.

    Entries without a ``tts`` name are dropped. Raises :class:`GraceError` when the files are missing.
    """
    cldr_dir = Path(cldr_dir) if cldr_dir is not None else CLDR_DIR
    base = _find_cldr_file(cldr_dir, "annotations")
    if base is None:
        raise GraceError(f"CLDR annotations (annotations/en.xml) not found under {cldr_dir}; {EMOJI_INSTALL_HINT}")
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    order: dict[str, None] = {}  # first-seen order over both files
    for path in (base, _find_cldr_file(cldr_dir, "annotationsDerived")):
        if path is None:
            continue
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise GraceError(f"{path}: malformed CLDR XML: {exc}") from None
        for node in root.iter("annotation"):
            chars, text = node.get("cp"), clean_text(node.text)
            if not chars or not text:
                continue
            order.setdefault(chars)
            if node.get("type") == "tts":
                names.setdefault(chars, text)
            elif chars not in keywords:
                keywords[chars] = [k for k in (clean_text(p) for p in text.split("|")) if k]
    return [EmojiEntry(c, names[c], tuple(keywords.get(c, ()))) for c in order if c in names]


def _font_cmap(font_path: Path) -> set[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path), lazy=True) as font:
        return set(font.getBestCmap())


def emoji_entries(cldr_dir: str | Path | None = None, font_path: str | Path | None = None, *,
                  drop_skin_tones: bool = True) -> tuple[list[EmojiEntry], int]:
    """CLDR entries whose base characters are all in the font; returns ``(entries, n_not_in_font)``.

    Most entries outside the font are plain symbols (arrows, maths, currency) that CLDR also names.
    """
    font_path = _check_font(font_path)
    cmap = _font_cmap(font_path)
    entries = [e for e in read_cldr_annotations(cldr_dir) if not (drop_skin_tones and e.has_skin_tone)]
    kept = [e for e in entries if any(ord(c) >= 0x80 for c in e.chars)  # plain ASCII '#', '*' are text
            and all(ord(c) in cmap for c in e.chars if ord(c) not in _COMBINING)]
    return kept, len(entries) - len(kept)


def _check_font(font_path: str | Path | None) -> Path:
    font_path = Path(font_path) if font_path is not None else FONT_PATH
    if not font_path.is_file():
        raise GraceError(f"emoji font not found: {font_path}; {EMOJI_INSTALL_HINT}")
    return font_path


def render_emoji(chars: str, font, image_size: int):
    """Render one emoji sequence as an RGB ``image_size`` square on white, or None when the font has
    no single glyph for it (blank, or a sequence drawn as several separate glyphs)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(chars)
    em = font.getbbox("\U0001F600")[2]  # advance of one colour glyph
    if right - left <= 0 or bottom - top <= 0 or right - left > 1.5 * em:
        return None
    canvas = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), chars, font=font, embedded_color=True)
    return fit_square(canvas, image_size, margin=0.02)


def build_emoji(out_dir: str | Path, *, drop_skin_tones: bool = True, image_size: int = 72,
                test_fraction: float = 0.12, seed: int = 0, limit: int | None = None,
                font_path: str | Path | None = None, cldr_dir: str | Path | None = None,
                encoder: str = "efficientnet-lite0", image_cosine: float = IMAGE_COSINE,
                progress: bool = True) -> Dataset:
    """Render the CLDR-annotated emoji of Noto Color Emoji to ``out_dir/images/*.png`` and write
    ``out_dir/dataset.json`` (Karpathy form) last.

    ``limit`` keeps an evenly spread deterministic subset of the candidates. Already-written PNGs of
    the right size are reused, so an interrupted build can simply be re-run. Splits are group-aware
    (:data:`EMOJI_GROUP_RULE`; ``image_cosine`` 0 leaves out the look-alike images, and the encoder).
    """
    from PIL import ImageFont

    started = time.perf_counter()
    out_dir = Path(out_dir)
    font_path = _check_font(font_path)
    entries, not_in_font = emoji_entries(cldr_dir, font_path, drop_skin_tones=drop_skin_tones)
    entries = even_subset(entries, limit)
    font = ImageFont.truetype(str(font_path), FONT_SIZE)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rendered: list[tuple[EmojiEntry, Path]] = []
    blank = 0
    for entry in progress_bar(entries, total=len(entries), desc="emoji", enabled=progress):
        path = out_dir / "images" / f"{entry.image_id}.png"
        if not reusable_png(path, image_size):
            image = render_emoji(entry.chars, font, image_size)
            if image is None:
                blank += 1
                continue
            save_png(image, path)
        rendered.append((entry, path))
    groups, splits = grouped_splits(out_dir, emoji_group_keys([e for e, _ in rendered]),
                                    {e.image_id: path for e, path in rendered}, EMOJI_GROUP_RULE,
                                    test_fraction=test_fraction, seed=seed, encoder=encoder,
                                    image_cosine=image_cosine, progress=progress)
    records = []
    for entry, path in rendered:
        split = splits[entry.image_id]
        texts, keywords = split_texts([entry.name], list(entry.keywords), split)
        meta = {"name": entry.name, "keywords": keywords, "codepoints": entry.codepoints,
                "emoji": entry.chars, "group": groups[entry.image_id]}
        records.append(ImageRecord(entry.image_id, path, split, texts, meta))
    skipped = {"not_in_font": not_in_font, "unrenderable": blank}
    return finish_build(out_dir, records, "noto-emoji", skipped, started, progress=progress)
