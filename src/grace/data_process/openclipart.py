"""Offline clip-art benchmark: the Debian ``openclipart-svg`` drawings rendered with cairosvg.

Texts come from each SVG's RDF metadata: ``dc:title`` (the name, the held-out query of test/val
images), ``dc:description`` (a second query when short and distinct) and the ``dc:subject`` bag of
tags (keywords; the author's name and generic tags such as "clip art" are dropped). Titles shared
by many files name a collection, not a drawing: those clips use their file name as the query and
each collection is capped (see :func:`collect_clips`). The package holds the same drawing under
several category folders (copies and symlinks); each is built once. Split and text semantics are
those of :mod:`grace.data_process.emoji`.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from grace.data_process.dataset import Dataset, ImageRecord
from grace.data_process.emoji import (
    clean_text,
    even_subset,
    finish_build,
    fit_square,
    grouped_splits,
    norm_key,
    progress_bar,
    reusable_png,
    save_png,
    split_texts,
    unique_texts,
)
from grace.data_process.groups import IMAGE_COSINE, name_key
from grace.data_process.leak_filter import word_bag
from grace.errors import GraceError

SVG_ROOT = Path("/usr/share/openclipart/svg")
INSTALL_HINT = "install it with: apt-get install openclipart-svg"
MAX_SVG_BYTES = 2_000_000  # larger files are skipped (slow to render, mostly scanned bitmaps)
RENDER_TIMEOUT_S = 60  # cairosvg needs ~20 s for the slowest package files
MAX_DESCRIPTION_WORDS = 25
MAX_SHARED_QUERY = 3  # a title/description on more files names a collection, not a drawing
MAX_PER_COLLECTION = 40  # e.g. "gramastar" alone has 1375 generated stars
GENERIC_TAGS = frozenset({"clip art", "clipart", "clip-art", "openclipart", "open clip art", "svg", "image",
                          "media", "png", "public domain", "externalsource", "remix", "drawing",
                          "picture", "illustration", "untitled", "unsorted", "hash",
                          "created with inkscape"})
_NS = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
       "cc": "http://web.resource.org/cc/", "cc2": "http://creativecommons.org/ns#"}


@dataclass
class ClipMeta:
    """Texts found in one SVG's metadata."""

    title: str
    description: str
    tags: list[str]
    creator: str


def _text(node) -> str:
    return clean_text("".join(node.itertext())) if node is not None else ""


def _work_node(root):
    for prefix in ("cc", "cc2"):
        work = root.find(f".//{{{_NS[prefix]}}}Work")
        if work is not None:
            return work
    return root.find(f".//{{{_NS['rdf']}}}RDF")


def parse_svg_metadata(data: bytes) -> ClipMeta:
    """Title, description, tags and creator from an SVG's ``<metadata>`` (ParseError when malformed)."""
    root = ET.fromstring(data)
    work = _work_node(root)
    if work is None:
        return ClipMeta("", "", [], "")
    dc = f"{{{_NS['dc']}}}"
    title = _text(work.find(f"{dc}title"))
    description = _text(work.find(f"{dc}description"))
    creator = _text(work.find(f"{dc}creator"))
    tags = []
    subject = work.find(f"{dc}subject")
    if subject is not None:
        items = subject.findall(f".//{{{_NS['rdf']}}}li")
        tags = [clean_text(li.text) for li in items] if items else re.split(r"[,;]", _text(subject))
    return ClipMeta(title, description, [t for t in (clean_text(t) for t in tags) if t], creator)


def _short_description(description: str) -> str:
    """The first sentence of a description, or "" when it is long prose or a URL."""
    first = re.split(r"(?<=[.!?])\s", description, maxsplit=1)[0].rstrip(".")
    if not first or "http" in first.lower() or len(first.split()) > MAX_DESCRIPTION_WORDS:
        return ""
    return first


def _tidy(text: str) -> str:
    """Underscores to spaces, and the "Clipart by AUTHOR - " prefix some titles carry removed."""
    text = re.sub(r"^clip ?art by [^-]{1,40} - ", "", clean_text(text), flags=re.IGNORECASE)
    return clean_text(text.replace("_", " "))


def _file_name_text(path: Path) -> str:
    """The file name as words ("falling_rocks" -> "falling rocks"); "" for codes such as "fc01"."""
    text = clean_text(re.sub(r"[_\-.]+", " ", path.stem))
    return text if re.search(r"[^\W\d_]{3,}", text) else ""


@dataclass
class Clip:
    """One SVG chosen for the build, with its candidate query texts and its tags."""

    path: Path
    queries: list[str]
    keywords: list[str]
    creator: str = ""


def _useful(text: str, drop: set[str] | frozenset[str]) -> bool:
    return bool(text) and norm_key(text) not in drop and not text.isdigit() and not re.search(r"@|https?:", text)


#: a trailing series number: "rocket_04", "Rocket 05", "star-3b", "tree (2)"
_SERIES_NUMBER = re.compile(r"[\s_\-.#]*\(?\d+\)?[a-z]?$", re.IGNORECASE)
#: how ``build_openclipart`` groups its clips (written into groups.json)
CLIP_GROUP_RULE = ("one group per series stem (a query or file name less its trailing number) and per query word "
                   "bag without qualifiers (near-identical titles, by one author or several; the author is kept in "
                   "meta.creator); images with identical "
                   "pixels, or whose features have cosine >= image_cosine, joined")


def series_stem(text: str) -> str:
    """``text`` less a trailing series number, separators as spaces ("rocket_04" → "rocket")."""
    return clean_text(re.sub(r"[_\-]+", " ", _SERIES_NUMBER.sub("", clean_text(text))))


def clip_group_keys(clip: Clip) -> list[str]:
    """The keys that put ``clip`` in a group (:data:`CLIP_GROUP_RULE`): its queries' variant bags, with and
    without a series number, and its file name's series stem (under 3 letters: no key). A collection's shared
    title is no key: it names an icon set, not a family."""
    texts = [t for t in dict.fromkeys([*clip.queries, *map(series_stem, clip.queries)]) if word_bag(t)]
    keys = [name_key(t) for t in texts]
    stem = series_stem(clip.path.stem).casefold()
    if len(re.sub(r"\W", "", stem)) >= 3:
        keys.append(f"file:{stem}")
    return list(dict.fromkeys(keys))


def clip_texts(meta: ClipMeta) -> tuple[list[str], list[str]]:
    """``(queries, keywords)``: the title (plus a short distinct description) and the useful tags
    (no generic tags, numbers, e-mail addresses, URLs or the author's name)."""
    drop = GENERIC_TAGS | {norm_key(meta.creator)}
    queries = [t for t in (_tidy(meta.title), _tidy(_short_description(meta.description))) if _useful(t, drop)]
    keywords = [t for t in (_tidy(k) for k in meta.tags) if _useful(t, drop)]
    return unique_texts(queries), unique_texts(keywords)


def collect_clips(svg_root: Path) -> tuple[list[Clip], dict[str, int]]:
    """Read every SVG's metadata once and choose the clips to build (sorted by path).

    Symlinks and category copies (same file name and title) collapse to one clip. A title or
    description shared by more than :data:`MAX_SHARED_QUERY` files names a collection ("Lemon SVG
    theme", "gramastar"), not a drawing: it becomes a keyword (when short) and, for a shared title,
    the file name becomes the query and the collection keeps at most :data:`MAX_PER_COLLECTION`
    files. Returns ``(clips, skipped counts)``.
    """
    skipped = {"unreadable": 0, "no_text": 0, "duplicate": 0, "collection_cap": 0}
    seen: set[tuple[str, str]] = set()
    parsed: list[tuple[Path, list[str], list[str], ClipMeta]] = []
    for path in sorted({p.resolve(): p for p in svg_root.rglob("*.svg")}.values()):
        try:
            meta = parse_svg_metadata(path.read_bytes())
            queries, keywords = clip_texts(meta)
        except Exception:  # noqa: BLE001 - unreadable file or malformed XML
            skipped["unreadable"] += 1
            continue
        key = (path.name.lower(), norm_key(queries[0]) if queries else "")
        if key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(key)
        if not queries:
            skipped["no_text"] += 1
            continue
        parsed.append((path, queries, keywords, meta))
    shared = Counter(k for _, queries, _, _ in parsed for k in {norm_key(q) for q in queries})
    groups: dict[str, list[Clip]] = {}
    for path, queries, keywords, meta in parsed:
        own = [q for q in queries if shared[norm_key(q)] <= MAX_SHARED_QUERY]
        collection = [q for q in queries if shared[norm_key(q)] > MAX_SHARED_QUERY]
        in_collection = shared[norm_key(queries[0])] > MAX_SHARED_QUERY
        if in_collection:
            own = [t for t in [_file_name_text(path)] if t] + own
        if not own:
            skipped["no_text"] += 1
            continue
        named = [c for c in collection if len(c.split()) <= 4]  # "Lemon SVG theme", not "Part of ... 2004)"
        group = norm_key(queries[0]) if in_collection else f"file:{path}"
        groups.setdefault(group, []).append(Clip(path, own, named + keywords, clean_text(meta.creator)))
    clips = []
    for members in groups.values():
        kept = even_subset(members, MAX_PER_COLLECTION)
        skipped["collection_cap"] += len(members) - len(kept)
        clips.extend(kept)
    return sorted(clips, key=lambda c: str(c.path)), skipped


def _source(path: Path, svg_root: Path) -> str:
    root = svg_root.resolve()
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def _clip_id(path: Path) -> str:
    return "clip-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "unnamed")


def _unique_ids(clips: list[Clip]) -> dict[Path, str]:
    """Filename-safe ids from the file names; a repeated name gets "-2", "-3", ... in path order."""
    ids: dict[Path, str] = {}
    taken: set[str] = set()
    for clip in clips:
        image_id, n = _clip_id(clip.path), 2
        while image_id in taken:
            image_id, n = f"{_clip_id(clip.path)}-{n}", n + 1
        ids[clip.path] = image_id
        taken.add(image_id)
    return ids


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):  # pragma: no cover - only fires on pathological files
    raise _Timeout()


def _render_one(job: tuple[str, str, int]) -> tuple[str, str]:
    """Worker: render one SVG to a PNG -> ``(status, svg)``, status "ok", "reused", "too_large",
    "render_failed" or "blank". Every cairosvg exception is caught; SIGALRM bounds the time."""
    svg, png, size = job
    svg_path, png_path = Path(svg), Path(png)
    if reusable_png(png_path, size):
        return "reused", svg
    use_alarm = hasattr(signal, "setitimer") and multiprocessing.current_process().name != "MainProcess"
    try:
        if svg_path.stat().st_size > MAX_SVG_BYTES:
            return "too_large", svg
        import cairosvg
        from PIL import Image

        if use_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, RENDER_TIMEOUT_S)
        raw = cairosvg.svg2png(url=str(svg_path), output_width=max(256, 2 * size), unsafe=False)
        image = fit_square(Image.open(io.BytesIO(raw)), size, margin=0.04)
    except Exception:  # noqa: BLE001 - cairosvg raises anything on broken files (and _Timeout)
        return "render_failed", svg
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if image is None:
        return "blank", svg
    save_png(image, png_path)
    return "ok", svg


def build_openclipart(out_dir: str | Path, *, image_size: int = 128, test_fraction: float = 0.12,
                      seed: int = 0, limit: int | None = None, svg_root: str | Path | None = None,
                      encoder: str = "efficientnet-lite0", image_cosine: float = IMAGE_COSINE,
                      progress: bool = True) -> Dataset:
    """Render the openclipart SVGs to ``out_dir/images/*.png`` and write ``out_dir/dataset.json`` last.

    Files over :data:`MAX_SVG_BYTES`, without a title or description, that cairosvg cannot render
    (or not within :data:`RENDER_TIMEOUT_S`) or that render blank are skipped and counted in
    ``build_summary.json``. ``limit`` keeps an evenly spread subset of the usable clips (the
    metadata-stage counts - unreadable, no_text, duplicate, collection_cap - always cover the whole
    folder). Rendering uses every CPU core for large builds; already-written PNGs are reused. Splits are
    group-aware (:data:`CLIP_GROUP_RULE`; ``image_cosine`` 0 leaves out the look-alike images).
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    svg_root = Path(svg_root) if svg_root is not None else SVG_ROOT
    if not svg_root.is_dir():
        raise GraceError(f"openclipart SVG folder not found: {svg_root}; {INSTALL_HINT}")
    clips, skipped = collect_clips(svg_root)
    ids = _unique_ids(clips)  # over every clip, so a file keeps its id (and PNG) under any limit
    clips = even_subset(clips, limit)
    if not clips:
        raise GraceError(f"no usable .svg files under {svg_root}; {INSTALL_HINT}")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(c.path), str(out_dir / "images" / f"{ids[c.path]}.png"), image_size) for c in clips]
    workers = min(os.cpu_count() or 1, 8) if len(jobs) > 32 else 1
    skipped.update({"too_large": 0, "render_failed": 0, "blank": 0})
    done: set[str] = set()
    pool = multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=200) if workers > 1 else None
    try:
        stream = pool.imap_unordered(_render_one, jobs, chunksize=4) if pool else map(_render_one, jobs)
        for status, svg in progress_bar(stream, total=len(jobs), desc="openclipart", enabled=progress):
            if status in skipped:
                skipped[status] += 1
            else:
                done.add(svg)
    finally:
        if pool is not None:
            pool.terminate()
    kept = [c for c in clips if str(c.path) in done]
    groups, splits = grouped_splits(out_dir, {ids[c.path]: clip_group_keys(c) for c in kept},
                                    {ids[c.path]: out_dir / "images" / f"{ids[c.path]}.png" for c in kept},
                                    CLIP_GROUP_RULE, test_fraction=test_fraction, seed=seed, encoder=encoder,
                                    image_cosine=image_cosine, progress=progress)
    records = []
    for clip in kept:
        image_id = ids[clip.path]
        texts, meta_keywords = split_texts(clip.queries, clip.keywords, splits[image_id])
        meta = {"name": clip.queries[0], "keywords": meta_keywords, "source": _source(clip.path, svg_root),
                "creator": clip.creator, "group": groups[image_id]}
        records.append(ImageRecord(image_id, out_dir / "images" / f"{image_id}.png", splits[image_id], texts, meta))
    return finish_build(out_dir, records, "openclipart", skipped, started, progress=progress)
