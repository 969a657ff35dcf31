"""Group-aware splits: variant families never straddle train / val / test.

A *group* is a set of images that must share a split: the emoji "man pilot", "woman pilot" and "pilot"; a
clip-art series "rocket_04", "rocket_05"; whatever a user's ``--group-by`` rule puts together. Groups are the
connected components of shared *keys* (an image has several: its name's variant bag, its series stem, ...), so
two images sharing any key, directly or through others, are one group.

Splits are drawn per group: groups ordered by a seeded hash of their name, each placed in test while it fits
the test quota, then in val, the rest in train (the same groups and seed always give the same splits, and an
image keeps its split when unrelated images are added). The rule and the group counts are written beside the
dataset (``groups.json``), and every image's group is in its ``meta["group"]``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from grace.data_process.leak_filter import variant_bag
from grace.errors import GraceError, InputError
from grace.io_utils import write_json

#: two images whose pooled features have this cosine or more look alike: one group (and a near-duplicate pair)
IMAGE_COSINE = 0.95
#: a group over this share of a held-out split's quota is held out only when smaller groups cannot fill it
MAX_GROUP_SHARE = 0.1
VAL_FRACTION = 0.12  # val as large as test (as Karpathy's Flickr30K/COCO splits): choices are made on it
GROUPS_FILE = "groups.json"


def name_key(text: str) -> str:
    """The key of a name's variant family: its qualifier-free stemmed bag (":func:`variant_bag`), or ``person``
    for a name that says only who ("man", "older person")."""
    bag = variant_bag(text)
    return "name:" + (" ".join(sorted(bag)) if bag else "(person)")


def connected_groups(keys: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """``{image id: group}`` for ``{image id: its keys}``: images sharing a key (transitively) are one group,
    named by the smallest key among its members (an image with no key is a group of its own, named by its id)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = list(keys)
    key_index: dict[str, int] = {}
    rows, cols = [], []
    for row, image_id in enumerate(ids):
        for key in sorted(set(keys[image_id])):
            rows.append(row)
            cols.append(len(ids) + key_index.setdefault(key, len(key_index)))
    size = len(ids) + len(key_index)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    names: dict[int, str] = {}
    for key, index in sorted(key_index.items()):
        names.setdefault(int(labels[len(ids) + index]), key)
    return {image_id: names.get(int(labels[row]), f"id:{image_id}") for row, image_id in enumerate(ids)}


def similar_pairs(vectors, threshold: float = IMAGE_COSINE, *, rows=None, block: int = 1024):
    """``(i, j, cosine)`` for every row ``i`` of ``rows`` (default: all) and column ``j != i`` of the unit-norm
    ``vectors`` with cosine ≥ ``threshold``, compared ``block`` rows at a time (memory ``block × N``)."""
    import numpy as np

    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        cosine = vectors[chunk] @ vectors.T
        for i, j in zip(*np.nonzero(cosine >= threshold)):
            if int(chunk[i]) != int(j):
                yield int(chunk[i]), int(j), float(cosine[i, j])


def look_alike_keys(dataset, *, encoder: str, cache_dir: str | Path, threshold: float = IMAGE_COSINE,
                    progress: bool = True) -> dict[str, list[str]]:
    """``{image id: keys}`` joining images whose ``encoder`` features (cached in ``cache_dir``, the folder
    ``grace data check`` and ``pseudo-queries`` read by default) have cosine ≥ ``threshold``."""
    import numpy as np

    from grace.data_process.features import image_features, unit_rows

    features = image_features(dataset, encoder=encoder, cache_dir=cache_dir, progress=progress)
    ids = [r.image_id for r in dataset.images]
    array = np.asarray(features.rows(ids), dtype=np.float32)
    vectors = unit_rows(array.mean(axis=1) if array.ndim == 3 else array)
    keys: dict[str, list[str]] = {i: [] for i in ids}
    for i, j, _ in similar_pairs(vectors, threshold):
        if i < j:
            keys[ids[i]].append(f"look:{ids[i]}")
            keys[ids[j]].append(f"look:{ids[i]}")
    return keys


def _rank(seed: int, name: str) -> str:
    return hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()


def assign_group_splits(groups: Mapping[str, str], *, test_fraction: float, seed: int,
                        val_fraction: float = VAL_FRACTION, max_share: float = MAX_GROUP_SHARE) -> dict[str, str]:
    """Deterministic ``{id: split}`` with every group in one split.

    Groups are ordered by a seeded hash of their name; each goes to test while it fits the test quota
    (``round(n * test_fraction)`` images, at least one when ``test_fraction > 0`` and n >= 2), then to val
    (``round(n * val_fraction)``), else to train. A group over ``max_share`` of a quota (a long clip-art series)
    is held out only when the smaller groups cannot fill it (a second pass), so no single family dominates a
    held-out split. With one image per group this is a plain seeded split."""
    if not 0.0 <= test_fraction < 1.0:
        raise GraceError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(groups)
    members: dict[str, list[str]] = defaultdict(list)
    for image_id, group in groups.items():
        members[group].append(image_id)
    n_test = round(n * test_fraction)
    if test_fraction > 0 and n >= 2:
        n_test = max(1, n_test)
    n_val = min(round(n * val_fraction), max(0, n - n_test - 1))
    quota = {"test": n_test, "val": n_val}
    filled = {"test": 0, "val": 0}
    placed: dict[str, str] = {}
    order = sorted(members, key=lambda g: _rank(seed, g))
    for capped in (True, False):
        for group in order:
            size = len(members[group])
            if group in placed:
                continue
            split = next((s for s in ("test", "val") if filled[s] + size <= quota[s]
                          and not (capped and size > max(1.0, max_share * quota[s]))), None)
            if split is not None:
                filled[split] += size
                placed[group] = split
    return {image_id: placed.get(group, "train") for image_id, group in groups.items()}


def group_summary(groups: Mapping[str, str], splits: Mapping[str, str], rule: dict) -> dict:
    """What ``groups.json`` holds: the rule, the counts of images and groups per split, the largest groups,
    the groups found in more than one split (none, for a split made by :func:`assign_group_splits`), and the
    members of every group of two or more."""
    members: dict[str, list[str]] = defaultdict(list)
    for image_id, group in groups.items():
        members[group].append(image_id)
    per_split: dict[str, dict[str, int]] = {}
    for split in sorted(set(splits.values())):
        ids = [i for i in groups if splits[i] == split]
        per_split[split] = {"images": len(ids), "groups": len({groups[i] for i in ids})}
    straddling = sorted(g for g, ids in members.items() if len({splits[i] for i in ids}) > 1)
    sizes = Counter({g: len(ids) for g, ids in members.items()})
    return {"rule": rule, "images": len(groups), "groups": len(members), "per_split": per_split,
            "cross_split_groups": straddling,
            "largest": [[g, size] for g, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
            "members": {g: sorted(ids) for g, ids in sorted(members.items()) if len(ids) > 1}}


def write_groups(out_dir: str | Path, groups: Mapping[str, str], splits: Mapping[str, str], rule: dict) -> Path:
    """``OUT/groups.json`` (:func:`group_summary`), beside ``dataset.json``."""
    return write_json(Path(out_dir) / GROUPS_FILE, group_summary(groups, splits, rule))


# ---------------------------------------------------------------- a user's own Karpathy JSON: --group-by
def group_by_rule(rule: str) -> Callable[[object], str]:
    """``--group-by`` as a function of an :class:`ImageRecord`: ``re:REGEX`` over the file name (the first
    capture group, else the whole match; no match: the image is a group of its own), else an entry field (the
    Karpathy JSON's own key, e.g. ``group``, ``cocoid`` or ``author``; a missing field is an error)."""
    if rule.startswith("re:"):
        try:
            pattern = re.compile(rule[3:])
        except re.error as err:
            raise GraceError(f"--group-by {rule!r}: not a regular expression ({err})") from None

        def by_regex(record) -> str:
            found = pattern.search(Path(record.path).name)
            if found is None:
                return f"id:{record.image_id}"
            return "re:" + (found.group(1) if pattern.groups else found.group(0))

        return by_regex
    if not rule:
        raise GraceError("--group-by needs a field name or re:REGEX")

    def by_field(record) -> str:
        if rule not in record.meta:
            raise InputError(f"--group-by {rule}: image {record.image_id!r} has no field {rule!r}")
        return f"{rule}:{record.meta[rule]}"

    return by_field


def regroup(dataset, rule: str, *, test_fraction: float = 0.12, seed: int = 0,
            val_fraction: float = VAL_FRACTION):
    """``dataset`` re-split group-aware by ``--group-by rule``: a new :class:`Dataset` (the same images and texts,
    each in its group's split, its group in ``meta["group"]``) and the ``groups.json`` summary.

    Held-out images keep every caption as a query, as Karpathy's splits do."""
    from grace.data_process.dataset import Dataset, ImageRecord

    key_of = group_by_rule(rule)
    groups = connected_groups({r.image_id: [key_of(r)] for r in dataset.images})
    splits = assign_group_splits(groups, test_fraction=test_fraction, seed=seed, val_fraction=val_fraction)
    records = [ImageRecord(r.image_id, r.path, splits[r.image_id], list(r.texts),
                           {**r.meta, "group": groups[r.image_id]}) for r in dataset.images]
    rule_record = {"group_by": rule, "test_fraction": test_fraction, "val_fraction": val_fraction, "seed": seed}
    return Dataset(records, name=dataset.name, root=dataset.root), group_summary(groups, splits, rule_record)


def regroup_karpathy(source: str | Path, out_dir: str | Path, rule: str, *, image_root: str | Path | None = None,
                     test_fraction: float = 0.12, seed: int = 0):
    """A user's Karpathy JSON re-split by ``--group-by rule`` into ``OUT/dataset.json`` (absolute image paths),
    with ``OUT/groups.json`` (the rule, the source and the group counts) written first."""
    from grace.data_process.dataset import load_karpathy, save_karpathy

    out_dir = Path(out_dir)
    dataset, summary = regroup(load_karpathy(source, image_root), rule, test_fraction=test_fraction, seed=seed)
    summary["rule"]["source"] = str(Path(source).resolve())
    write_json(out_dir / GROUPS_FILE, summary)
    save_karpathy(dataset, out_dir / "dataset.json")
    return dataset
