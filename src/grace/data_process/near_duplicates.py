"""Near-duplicates across splits (``grace data check``): what a held-out query could be answered by without
retrieval — a training image named the same once qualifiers go ("man pilot" in train for the test query
"woman pilot"), or a training image that looks the same (feature cosine ≥ 0.95).

Pairs are between a held-out (val / test) image and an image of another split. The *variant groups* are the
connected components of those pairs; a group with images in more than one split is a cross-split group, and a
split made by :mod:`grace.data_process.groups` has none.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from grace.data_process.dataset import TRAIN_SPLITS, Dataset
from grace.data_process.groups import IMAGE_COSINE, connected_groups, name_key, similar_pairs


def image_names(record) -> list[str]:
    """The texts that name an image: the builders' ``meta["name"]``, else every caption (Karpathy JSONs)."""
    name = record.meta.get("name") if isinstance(record.meta, dict) else None
    return [name] if isinstance(name, str) and name else list(record.texts)


def _split_kind(split: str) -> str:
    return "train" if split in TRAIN_SPLITS else split


def text_pairs(dataset: Dataset) -> list[dict]:
    """Held-out image × image of another split whose names are the same without qualifiers
    (:func:`~grace.data_process.groups.name_key`: an equal word bag, or one that differs by gender / person /
    family / skin-tone words). Sorted, one row per pair of images."""
    by_key: dict[str, list] = defaultdict(list)
    for record in dataset.images:
        for key in dict.fromkeys(name_key(t) for t in image_names(record)):
            by_key[key].append(record)
    pairs: dict[tuple[str, str], dict] = {}
    for key, records in sorted(by_key.items()):
        held_out = [r for r in records if _split_kind(r.split) != "train"]
        for a in held_out:
            for b in records:
                if _split_kind(a.split) == _split_kind(b.split) or (b.image_id, a.image_id) in pairs:
                    continue
                pairs[(a.image_id, b.image_id)] = {
                    "kind": "text", "a": a.image_id, "a_split": _split_kind(a.split), "b": b.image_id,
                    "b_split": _split_kind(b.split), "a_text": image_names(a)[0], "b_text": image_names(b)[0],
                    "key": key}
    return [pairs[k] for k in sorted(pairs)]


def image_pairs(dataset: Dataset, features, *, threshold: float = IMAGE_COSINE, block: int = 1024) -> list[dict]:
    """Held-out image × image of another split whose pooled features (a :class:`FeatureSet`) have cosine ≥
    ``threshold``; compared in blocks of held-out rows, so memory is ``block × N``."""
    from grace.data_process.features import unit_rows

    ids = [r.image_id for r in dataset.images]
    array = np.asarray(features.rows(ids), dtype=np.float32)
    if array.ndim == 3:
        array = array.mean(axis=1)
    vectors = unit_rows(array)
    splits = np.array([_split_kind(r.split) for r in dataset.images])
    pairs: dict[tuple[str, str], dict] = {}
    for a, b, cosine in similar_pairs(vectors, threshold, rows=np.flatnonzero(splits != "train"), block=block):
        if splits[a] == splits[b] or (ids[b], ids[a]) in pairs:
            continue
        pairs[(ids[a], ids[b])] = {"kind": "image", "a": ids[a], "a_split": str(splits[a]), "b": ids[b],
                                   "b_split": str(splits[b]), "cosine": round(cosine, 4)}
    return [pairs[k] for k in sorted(pairs)]


def near_duplicate_report(dataset: Dataset, features=None, *, threshold: float = IMAGE_COSINE,
                          show: int = 5) -> dict:
    """The cross-split pairs (text, and image when ``features`` are given), counted per kind and pair of
    splits, and the cross-split variant groups they form (connected components; their count is the check)."""
    pairs = text_pairs(dataset) + (image_pairs(dataset, features, threshold=threshold) if features is not None else [])
    table: dict[tuple[str, str, str], dict] = {}
    for pair in pairs:
        row = table.setdefault((pair["kind"], pair["a_split"], pair["b_split"]),
                               {"kind": pair["kind"], "held_out": pair["a_split"], "other": pair["b_split"],
                                "pairs": 0, "examples": []})
        row["pairs"] += 1
        if len(row["examples"]) < show:
            row["examples"].append(pair)
    keys: dict[str, list[str]] = defaultdict(list)
    for n, pair in enumerate(pairs):
        keys[pair["a"]].append(f"pair:{n}")
        keys[pair["b"]].append(f"pair:{n}")
    groups = connected_groups(keys) if keys else {}
    members: dict[str, list[str]] = defaultdict(list)
    for image_id, group in groups.items():
        members[group].append(image_id)
    return {"image_cosine": threshold if features is not None else None,
            "features": getattr(features, "encoder", None), "pairs": len(pairs),
            "table": sorted(table.values(), key=lambda r: (r["kind"], r["held_out"], r["other"])),
            "cross_split_groups": len(members),
            "groups": [sorted(ids) for _, ids in sorted(members.items())][:50]}


def format_near_duplicates(report: dict, show: int = 3) -> str:
    """One table: kind, held-out split, other split, pairs, a few examples; then the number of groups."""
    lines = ["near-duplicates across splits (text: same name without qualifiers"
             + (f"; image: {report['features']} cosine >= {report['image_cosine']}" if report["image_cosine"] else
                "; image pairs not checked: --no-image-pairs") + "):"]
    if not report["table"]:
        lines.append("  none")
    else:
        lines.append(f"  {'kind':<6} {'held out':<9} {'other':<6} {'pairs':>6}  examples")
        for row in report["table"]:
            examples = "; ".join(_example(p) for p in row["examples"][:show])
            lines.append(f"  {row['kind']:<6} {row['held_out']:<9} {row['other']:<6} {row['pairs']:>6}  {examples}")
    lines.append(f"cross-split variant groups: {report['cross_split_groups']}")
    return "\n".join(lines)


def _example(pair: dict) -> str:
    if pair["kind"] == "text":
        return f"{pair['a_text']!r} ~ {pair['b_text']!r}"
    return f"{pair['a']} ~ {pair['b']} ({pair['cosine']})"

