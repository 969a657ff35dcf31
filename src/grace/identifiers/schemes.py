"""Identifier schemes: ``numeric | string | semantic | structured | atomic | rq`` → an :class:`IdentifierMap`.

``create_scheme(name, **cfg).build(dataset, features)``; every scheme is deterministic under ``seed``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np

import grace.identifiers.out_of_core as on_disk
from grace.data_process.dataset import TRAIN_SPLITS
from grace.data_process.features import unit_rows
from grace.data_process.pseudo_queries import held_out_queries, leak_filter, normalise, pseudo_queries_digest
from grace.errors import GraceError, InputError
from grace.identifiers.idmap import SCHEME_MODES, IdentifierMap
from grace.identifiers.kmeans import BACKENDS, hierarchical_kmeans, kmeans_device, residual_kmeans
from grace.identifiers.out_of_core import VectorFile

log = logging.getLogger(__name__)
SCHEMES = tuple(SCHEME_MODES)
CLUSTER_ON = ("image", "text", "both")


@dataclass
class SchemeConfig:
    """Settings of an identifier scheme (saved as the IdentifierMap's ``config.json``)."""

    scheme: str = field(default="numeric", metadata={"help": "identifier scheme", "choices": SCHEMES})
    seed: int = field(default=0, metadata={"help": "seed of the random permutation / k-means"})
    tokenizer: str = field(default="smollm2", metadata={"help": "base LM tokenizer: smollm2, byte, folder or HF id"})
    k: int = field(default=30, metadata={"help": "structured: clusters per level"})
    c: int = field(default=30, metadata={"help": "structured: max images per leaf"})
    kmeans: str = field(default="faiss", metadata={"help": "structured: k-means backend", "choices": BACKENDS})
    niter: int = field(default=20, metadata={"help": "structured: k-means iterations"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "structured: image feature encoder"})
    cluster_on: str = field(default="image", metadata={
        "help": "structured: what k-means clusters — image features, the text embedding of each image's "
                "training-visible texts (train captions; held-out images' pseudo-queries), or both concatenated",
        "choices": CLUSTER_ON})
    text_encoder: str = field(default="minilm", metadata={"help": "structured: text encoder of cluster_on text/both"})
    levels: int = field(default=3, metadata={"help": "rq: residual quantisation levels (then one level that makes "
                                                     "every id unique)"})
    codebook: int = field(default=64, metadata={"help": "rq: codes per level (also the most images one code can hold)"})
    reserve_first: str = field(default="", metadata={
        "help": "rq: a reserved first token <M_NAME> before the codes (GENIUS's modality code), e.g. 'image'"})
    embedding: str = field(default="features", metadata={
        "help": "rq: what is quantised: the image features cache ('features'), or the dense retriever's image "
                "embedding ('clip_faiss': LiT's image tower, so queries and images share code prefixes; grace "
                "ablate computes it)"})


def _check_dataset(dataset) -> None:
    if dataset is None or len(dataset) == 0:
        raise InputError("the dataset has no images", path=getattr(dataset, "name", None))


def _check_rows(features: VectorFile, dataset) -> None:
    if len(features) != len(dataset):
        raise InputError(f"{len(features)} feature rows for {len(dataset)} images (a features file holds one row per "
                         "image, in the dataset's order)", path=features.path)


def _feature_matrix(dataset, features) -> np.ndarray:
    """(N, D) float32 aligned with ``dataset.images`` from an array or a FeatureSet (reordered by ids)."""
    if features is None:
        raise InputError("the structured scheme needs image features (an (N, D) array or a FeatureSet)",
                         path=dataset.name)
    ids = getattr(features, "ids", None)
    array = np.asarray(getattr(features, "array", features))
    if ids is not None:
        where = {image_id: i for i, image_id in enumerate(ids)}
        missing = [r.image_id for r in dataset.images if r.image_id not in where]
        if missing:
            raise InputError(f"{len(missing)} images have no features, e.g. {missing[0]!r}", path=dataset.name)
        array = array[[where[r.image_id] for r in dataset.images]]
    if array.ndim == 3:  # token features: mean-pool
        array = array.mean(axis=1)
    if array.ndim != 2 or len(array) != len(dataset):
        raise InputError(f"features have shape {tuple(array.shape)} but the dataset has {len(dataset)} images; "
                         "expected (N, D) aligned with dataset.images", path=dataset.name)
    if not np.isfinite(array).all():
        raise InputError("features contain NaN or inf", path=dataset.name)
    return array.astype(np.float32, copy=False)


def _text_matrix(dataset, text_encoder: str, pseudo: dict[str, list[str]]) -> np.ndarray:
    """(N, D) mean of the L2-normalised embeddings of each image's training-visible texts: a train image's
    captions, a held-out image's pseudo-queries (never its held-out captions); zeros for an image with none."""
    from grace.data_process.encoders import create_text_encoder

    texts = [list(r.texts) if r.split in TRAIN_SPLITS else pseudo.get(r.image_id, []) for r in dataset.images]
    missing = sum(not t for t in texts)
    if missing:
        log.warning("%d images have no training-visible text; their text embedding is zero", missing)
    flat = [t for group in texts for t in group]
    embedded = create_text_encoder(text_encoder).encode(flat).numpy() if flat else np.zeros((0, 1), np.float32)
    out = np.zeros((len(texts), embedded.shape[1]), np.float32)
    start = 0
    for row, group in enumerate(texts):
        if group:
            out[row] = embedded[start:start + len(group)].mean(axis=0)
        start += len(group)
    return out




def _permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def _disambiguate(names: list[str]) -> list[str]:
    """Make names unique by suffixing repeats with " 2", " 3", … (never colliding with another name)."""
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            n = 2
            while f"{name} {n}" in taken:
                n += 1
            name = f"{name} {n}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def held_out_texts(dataset, pseudo_queries: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The texts that ids read for held-out images: the run's ``pseudo_queries`` only (an image without any
    has none: nothing falls back to its annotations); a text that leaks a held-out query is dropped."""
    guard = leak_filter(dataset)
    held_out = {r.image_id for r in dataset.images if r.split not in TRAIN_SPLITS}
    return {image_id: [t for t in texts if guard.keep(t, image_id)]
            for image_id, texts in (pseudo_queries or {}).items() if image_id in held_out}


def reads_held_out_texts(scheme: str, cluster_on: str = "image") -> bool:
    """Whether ids of ``scheme`` depend on the held-out images' pseudo-queries (semantic; structured on text)."""
    return scheme == "semantic" or (scheme == "structured" and cluster_on in ("text", "both"))


class Scheme:
    """Base: ``build(dataset, features) -> IdentifierMap``."""

    name = ""

    def __init__(self, config: SchemeConfig):
        self.config = config

    def build(self, dataset, features=None, pseudo_queries: dict[str, list[str]] | None = None) -> IdentifierMap:
        """Identifiers of every image. ``pseudo_queries`` (the run's, e.g. captions) are the held-out images'
        texts for ``cluster_on`` text/both (:func:`held_out_texts`); held-out queries among them are never used."""
        _check_dataset(dataset)
        self.pseudo_queries = held_out_texts(dataset, pseudo_queries) if self.uses_texts else {}
        ids, aliases = self.assign(dataset, features)
        config = dataclasses.asdict(self.config) | {"images": len(dataset), "dataset": dataset.name}
        if self.name in ("structured", "rq"):
            config["kmeans_device"] = kmeans_device(self.config.kmeans)
        if self.uses_texts:
            config["pseudo_queries_digest"] = pseudo_queries_digest(self.pseudo_queries)
        return IdentifierMap(self.name, dict(zip(dataset.image_ids(), ids)), config, aliases=aliases)

    @property
    def uses_texts(self) -> bool:
        """Whether the identifiers depend on the held-out images' pseudo-queries."""
        return reads_held_out_texts(self.name, self.config.cluster_on)

    def assign(self, dataset, features) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError


class NumericScheme(Scheme):
    """A random permutation of image indices, one digit per token: ``"3 5 1 7"``."""

    name = "numeric"

    def assign(self, dataset, features):
        return [" ".join(str(int(i))) for i in _permutation(len(dataset), self.config.seed)], {}


class StringScheme(Scheme):
    """The same permuted index as plain text (``"3517"``), tokenised by the LM's own tokenizer."""

    name = "string"

    def assign(self, dataset, features):
        return [str(int(i)) for i in _permutation(len(dataset), self.config.seed)], {}


class AtomicScheme(Scheme):
    """One new token per image: ``<img_123>`` (dataset order)."""

    name = "atomic"

    def assign(self, dataset, features):
        return [f"<img_{i}>" for i in range(len(dataset))], {}


class SemanticScheme(Scheme):
    """A text as identifier: train images their first caption (avoiding held-out query texts), other
    images a pseudo-query (never a held-out caption); repeats get " 2", " 3"…; other train captions become aliases."""

    name = "semantic"

    def assign(self, dataset, features):
        pseudo = self.pseudo_queries
        held_out = held_out_queries(dataset)
        names, fallback = [], 0
        for record in dataset.images:
            if record.split in TRAIN_SPLITS:  # first caption that is not also some held-out query
                fresh = [t for t in record.texts if normalise(t) not in held_out]
                names.append((fresh or record.texts)[0].strip())
            elif pseudo.get(record.image_id):
                names.append(pseudo[record.image_id][0].strip())
            else:
                fallback += 1
                names.append(f"image {record.image_id}")
        if fallback:
            log.warning("%d held-out images have no pseudo-query; their identifier is 'image <id>'", fallback)
        ids = _disambiguate(names)
        taken = set(ids)
        counts: dict[str, int] = {}
        for record in dataset.split("train"):
            for text in record.texts[1:]:
                counts[text.strip()] = counts.get(text.strip(), 0) + 1
        aliases = {text.strip(): record.image_id for record in dataset.split("train") for text in record.texts[1:]
                   if counts[text.strip()] == 1 and text.strip() not in taken}
        return ids, aliases


class StructuredScheme(Scheme):
    """Hierarchical k-means: ``<L0_12><L1_3><L2_7>`` (last level = leaf position), over image features,
    the images' training-visible texts embedded (``cluster_on="text"``: prefixes group images a query's words
    point to), or both (each part L2-normalised, so they weigh the same)."""

    name = "structured"

    def assign(self, dataset, features):
        cfg = self.config
        if cfg.cluster_on not in CLUSTER_ON:
            raise GraceError(f"cluster_on must be one of {list(CLUSTER_ON)}, got {cfg.cluster_on!r}")
        if isinstance(features, VectorFile):  # a features file too large for memory: split out of core
            if cfg.cluster_on != "image":
                raise GraceError("a features file (--features-file) clusters image features only: --cluster-on image")
            _check_rows(features, dataset)
            paths = on_disk.hierarchical_kmeans(features, k=cfg.k, c=cfg.c, seed=cfg.seed, niter=cfg.niter,
                                                    backend=cfg.kmeans)
            return ["".join(f"<L{level}_{j}>" for level, j in enumerate(row[row >= 0].tolist())) for row in paths], {}
        parts = []
        if cfg.cluster_on in ("image", "both"):
            parts.append(unit_rows(_feature_matrix(dataset, features)) if cfg.cluster_on == "both"
                         else _feature_matrix(dataset, features))
        if cfg.cluster_on in ("text", "both"):
            parts.append(unit_rows(_text_matrix(dataset, cfg.text_encoder, self.pseudo_queries)))
        matrix = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        paths = hierarchical_kmeans(matrix, k=cfg.k, c=cfg.c, seed=cfg.seed,
                                    niter=cfg.niter, backend=cfg.kmeans)
        return ["".join(f"<L{level}_{j}>" for level, j in enumerate(path)) for path in paths], {}


class RqScheme(Scheme):
    """Residual quantisation of an embedding (IRGen, GENIUS): ``<Q0_12><Q1_3><Q2_7><Q3_0>`` — one code per level
    (each level clusters the previous levels' residual), then the image's position among those sharing its codes,
    so every id is unique; optionally a reserved first token (``<M_image>``). Rows are L2-normalised first."""

    name = "rq"

    def assign(self, dataset, features):
        cfg = self.config
        if isinstance(features, VectorFile):  # read in chunks: the same codes as in memory
            _check_rows(features, dataset)
            codes = on_disk.residual_kmeans(features, levels=cfg.levels, codebook=cfg.codebook, seed=cfg.seed,
                                                niter=cfg.niter, backend=cfg.kmeans)
        else:
            codes = residual_kmeans(unit_rows(_feature_matrix(dataset, features)), levels=cfg.levels,
                                    codebook=cfg.codebook, seed=cfg.seed, niter=cfg.niter, backend=cfg.kmeans)
        groups: dict[tuple, int] = {}
        positions = []
        for row in map(tuple, codes.tolist()):
            positions.append(groups.get(row, 0))
            groups[row] = positions[-1] + 1
        crowded = max(groups.values())
        if crowded > cfg.codebook:
            raise GraceError(f"rq ids: {crowded} images share one code path, more than the last level's "
                             f"{cfg.codebook} positions: levels x codebook ({cfg.levels} x {cfg.codebook}) is too "
                             "small to make every id unique; raise --levels or --codebook")
        first = f"<M_{cfg.reserve_first}>" if cfg.reserve_first else ""
        return [first + "".join(f"<Q{level}_{c}>" for level, c in enumerate(row)) + f"<Q{cfg.levels}_{pos}>"
                for row, pos in zip(codes.tolist(), positions)], {}


_CLASSES = {cls.name: cls for cls in (NumericScheme, StringScheme, SemanticScheme, StructuredScheme, AtomicScheme,
                                      RqScheme)}


def create_scheme(name: str, **cfg) -> Scheme:
    """A scheme by name with :class:`SchemeConfig` settings (unknown settings are an error)."""
    if name not in _CLASSES:
        raise GraceError(f"unknown identifier scheme {name!r}; expected one of {list(_CLASSES)}")
    known = {f.name for f in dataclasses.fields(SchemeConfig)} - {"scheme"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise GraceError(f"unknown settings {unknown} for scheme {name!r}; known: {sorted(known)}")
    return _CLASSES[name](SchemeConfig(scheme=name, **cfg))
