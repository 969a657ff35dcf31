"""Training data: i2id/t2id shards → GRACE token sequences, in a seeded order that can fast-forward.

The sequences themselves (prompt, target, labels, left padding) are defined once in
:mod:`grace.model.prompt`, which inference uses too. The order is an endless stream of seeded
permutations (one per epoch); micro-step ``m`` of rank ``r`` reads stream positions
``(m * world + r) * b … + b``, so a resumed run jumps straight to its position.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grace.errors import InputError
from grace.model.prompt import left_pad, training_sequence

log = logging.getLogger(__name__)
TASKS = ("i2id", "t2id")
_IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Sample:
    """One shard sample (image bytes only kept when the encoder must see them)."""

    key: str
    image_id: str
    identifier: str
    text: str
    task: str
    image: bytes | None = None


def shard_files(shards_dir: Path, task: str) -> list[Path]:
    """Sorted ``{task}-*.tar`` files of a shards folder."""
    return sorted(Path(shards_dir).glob(f"{task}-*.tar"))


def _every_shard(urls):
    """Every rank reads every shard: ranks split the *sample stream* (see :class:`SampleOrder`)."""
    return urls


def load_samples(shards_dir: Path, task: str, *, keep_images: bool) -> list[Sample]:
    """Read every sample of the ``task`` shards (webdataset), in shard order."""
    import webdataset as wds

    samples: list[Sample] = []
    for path in shard_files(shards_dir, task):
        dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False, nodesplitter=_every_shard)
        for entry, raw in enumerate(dataset):
            if "json" not in raw:
                raise InputError("sample has no json member", path=path, entry=raw.get("__key__", entry))
            try:
                meta = json.loads(raw["json"])
                image = next((raw[k] for k in _IMAGE_KEYS if k in raw), None) if keep_images else None
                samples.append(Sample(raw["__key__"], str(meta["image_id"]), str(meta["identifier"]),
                                      str(meta.get("text", "")), task, image))
            except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"malformed sample json ({exc})", path=path, entry=raw.get("__key__")) from None
            if keep_images and samples[-1].image is None and task == "i2id":
                raise InputError("i2id sample has no image bytes (png/jpg)", path=path, entry=raw["__key__"])
    return samples


class SampleOrder:
    """Deterministic per-rank sample order: seeded permutation per epoch, O(1) fast-forward."""

    def __init__(self, num_samples: int, batch_size: int, *, rank: int, world_size: int, seed: int, stream: int):
        self.n, self.b, self.rank, self.world = num_samples, batch_size, rank, world_size
        self.seed, self.stream = seed, stream
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            self._perms[epoch] = rng.permutation(self.n)
        return self._perms[epoch]

    def indices(self, micro_step: int) -> list[int]:
        """Sample indices this rank reads at global micro-step ``micro_step``."""
        if self.b == 0 or self.n == 0:
            return []
        start = (micro_step * self.world + self.rank) * self.b
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.b)]


def collate(sequences: Sequence[tuple[list[int], list[int]]], pad_token_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Left-truncate the prompt of sequences over ``max_length`` (the target is kept), then left-pad them
    (:func:`grace.model.prompt.left_pad`) into lang_x / attention_mask / position_ids / labels."""
    rows = [(ids[-max_length:], labels[-max_length:]) if len(ids) > max_length else (ids, labels)
            for ids, labels in sequences]
    return left_pad([ids for ids, _ in rows], pad_token_id, labels=[labels for _, labels in rows])


class MixedBatches:
    """Per micro-step: ``batch_size_i2id`` i2id + ``batch_size_t2id`` t2id samples of this rank."""

    def __init__(self, shards_dir: Path, tokenizer: Any, *, batch_size_i2id: int, batch_size_t2id: int,
                 rank: int, world_size: int, seed: int, max_length: int, keep_images: bool):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.samples = {task: load_samples(shards_dir, task, keep_images=keep_images and task == "i2id")
                        for task in TASKS}
        sizes = {"i2id": batch_size_i2id, "t2id": batch_size_t2id}
        for task in TASKS:
            if sizes[task] and not self.samples[task]:
                raise InputError(f"no {task} samples ({task}-*.tar) but batch_size_{task} = {sizes[task]}",
                                 path=shards_dir)
        self.orders = {task: SampleOrder(len(self.samples[task]), sizes[task], rank=rank, world_size=world_size,
                                         seed=seed, stream=i) for i, task in enumerate(TASKS)}

    def batch(self, micro_step: int) -> tuple[dict[str, torch.Tensor], list[Sample]]:
        """Token tensors + every row's sample, in row order: the i2id rows first (their images fill the
        vision features), then the t2id rows (the null image, or their text's embedding: :class:`TextMedia`)."""
        i2id = [self.samples["i2id"][i] for i in self.orders["i2id"].indices(micro_step)]
        t2id = [self.samples["t2id"][i] for i in self.orders["t2id"].indices(micro_step)]
        seqs = [training_sequence(self.tokenizer, s.identifier, None) for s in i2id]
        seqs += [training_sequence(self.tokenizer, s.identifier, s.text) for s in t2id]
        return collate(seqs, self.tokenizer.pad_token_id, self.max_length), i2id + t2id


class VisionSource:
    """Image features by image id: from the cached FeatureSet, or the frozen encoder on shard bytes.

    With a cache, a model reading one visual token per image gets the pooled features, one reading
    several gets the cached tokens (``n_visual_tokens``; None: tokens when cached). With ``views`` > 1
    each i2id sample sees the image itself or one of ``views - 1`` augmented views (cached under
    ``views/<k>`` by ``grace data features --views``, or augmented on the fly without a cache), drawn
    per sample from ``(seed, rank, draw)`` so a resumed run sees the same views."""

    def __init__(self, *, features_cache: Path | None, encoder: Any = None, device: str = "cpu",
                 n_visual_tokens: int | None = None, views: int = 1, seed: int = 0, rank: int = 0):
        self.encoder, self.device = encoder, device
        self.views, self.seed, self.rank = views, seed, rank
        self.table: dict[str, int] = {}
        self.array: np.ndarray | None = None
        self.view_arrays: list[np.ndarray] = []
        self._encoded_shape: tuple[int, ...] | None = None
        if views < 1:
            raise InputError(f"i2id_views must be >= 1, got {views}")
        if features_cache is not None:
            from grace.data_process.features import view_cache_dir

            tokens = None if n_visual_tokens is None else n_visual_tokens > 1
            ids, array = load_feature_cache(Path(features_cache), tokens=tokens)
            self.table = {image_id: i for i, image_id in enumerate(ids)}
            self.array = _per_image_tokens(array)
            tokens = self.array.shape[1] > 1 if tokens is None else tokens
            for view in range(1, views):
                folder = view_cache_dir(features_cache, view)
                if not (folder / "meta.json").is_file():
                    raise InputError(f"i2id_views={views} but the features cache has no view {view} (cache the "
                                     f"views with `grace data features --views {views}`)", path=folder)
                view_ids, view_array = load_feature_cache(folder, tokens=tokens)
                if view_ids != ids:
                    raise InputError(f"view {view} lists other images than the features cache", path=folder)
                self.view_arrays.append(_per_image_tokens(view_array))
        elif encoder is None:
            raise InputError("no features cache and no image encoder to compute features")

    def draw_views(self, n: int, draw: int) -> np.ndarray:
        """Which view (0 = the image itself) each of ``n`` samples of draw ``draw`` sees."""
        if self.views == 1:
            return np.zeros(n, dtype=np.int64)
        return np.random.default_rng([self.seed, self.rank, draw]).integers(self.views, size=n)

    def check_layout(self, vis_dim: int | None, n_visual_tokens: int | None, source: str) -> None:
        """One-line error when the features' width or tokens per image differ from the model's: the null
        image of t2id rows has the model's ``n_visual_tokens`` × ``vis_dim``, at training as at inference."""
        dim = self.array.shape[-1] if self.array is not None else getattr(self.encoder, "dim", None)
        if vis_dim is not None and dim is not None and dim != vis_dim:
            raise InputError(f"image features are {dim}-d but the model expects vis_dim={vis_dim} "
                             f"(use a features cache / image_encoder of that width, or another model)", path=source)
        tokens = self.array.shape[1] if self.array is not None else None
        if n_visual_tokens is not None and tokens is not None and tokens != n_visual_tokens:
            raise InputError(f"the features cache has {tokens} visual token(s) per image but the model expects "
                             f"n_visual_tokens={n_visual_tokens} (cache token features with `grace data features "
                             f"--tokens`, or use a model config with n_visual_tokens={tokens})", path=source)

    @property
    def uses_images(self) -> bool:
        return self.array is None

    def layout(self, source: str) -> dict:
        """What the model was trained on: tokens per image and width (from the cache, or as last encoded)."""
        shape = self.array.shape[1:] if self.array is not None else self._encoded_shape
        out: dict = {"source": source}
        if shape is not None:
            out.update(n_visual_tokens=int(shape[0]), vis_dim=int(shape[1]))
        return out

    def features(self, samples: Sequence[Sample], draw: int = 0) -> torch.Tensor:
        """(len(samples), T, D) float32 visual tokens; ``draw`` (the micro-step) picks the views."""
        views = self.draw_views(len(samples), draw)
        if self.array is not None:
            missing = [s.image_id for s in samples if s.image_id not in self.table]
            if missing:
                raise InputError(f"image ids {missing[:3]} not in the features cache", entry=samples[0].key)
            arrays = [self.array, *self.view_arrays]
            rows = [arrays[v][self.table[s.image_id]] for s, v in zip(samples, views)]
            return torch.from_numpy(np.stack(rows).astype(np.float32))
        from PIL import Image

        from grace.data_process.augment import ViewAugment, view_rng

        augment = ViewAugment()
        images = [Image.open(io.BytesIO(s.image)) for s in samples]
        images = [augment(image, view_rng(self.seed, int(v), draw * len(samples) + i)) if v else image
                  for i, (image, v) in enumerate(zip(images, views))]
        feats = self.encoder.encode_tokens(images).float()
        self._encoded_shape = tuple(feats.shape[1:])
        return feats


class TextMedia:
    """The t2id rows' visual input in a joint image-text space (GENIUS: the generator reads the query's
    embedding in the space its identifiers come from) instead of the null image: each text's embedding from a
    cache keyed by text (a :class:`~grace.data_process.features.FeatureSet` whose ids are the texts, and whose
    encoder ``KIND:PATH`` names the text tower that embeds queries at inference).

    ``mix`` > 0 is GENIUS's query augmentation: a row sees ``(1 - w) * text + w * gold image`` (rescaled to
    the text's norm), ``w ~ U[0, mix]`` drawn per sample from ``(seed, rank, draw)``, so a resumed run
    sees the same mixes. The images' embeddings are the i2id features (view 0), in the same space."""

    def __init__(self, cache: Path, *, mix: float = 0.0, seed: int = 0, rank: int = 0):
        from grace.data_process.features import FeatureSet

        if not 0.0 <= mix <= 1.0:
            raise InputError(f"t2id_media_mix must be in [0, 1], got {mix}")
        self.cache, self.mix, self.seed, self.rank = Path(cache), mix, seed, rank
        features = FeatureSet.load(self.cache)
        self.table = {text: i for i, text in enumerate(features.ids)}
        self.array = np.asarray(features.array, dtype=np.float32)
        self.encoder = features.encoder
        self.dim = int(self.array.shape[1])
        kind, _, path = self.encoder.partition(":")
        if not kind or not path:
            raise InputError(f"the text media cache names no text tower (encoder {self.encoder!r}; "
                             "expected KIND:PATH, e.g. lit:RUN/baselines/clip_faiss/heads)", path=self.cache)
        self.kind, self.tower = kind, Path(path)

    def features(self, samples: Sequence[Sample], draw: int = 0, images: VisionSource | None = None) -> torch.Tensor:
        """(len(samples), 1, D) float32: each sample's text embedding (mixed with its image's when ``mix``)."""
        missing = [s.text for s in samples if s.text not in self.table]
        if missing:
            raise InputError(f"{len(missing)} t2id texts have no embedding in the text media cache, e.g. "
                             f"{missing[0]!r} (rebuild it for these shards)", path=self.cache)
        rows = self.array[[self.table[s.text] for s in samples]]
        if self.mix > 0 and len(samples):
            if images is None or images.array is None or images.array.shape[1:] != (1, self.dim):
                raise InputError("t2id_media_mix needs the i2id images' embeddings in the same space: a pooled "
                                 f"{self.dim}-d features cache", path=self.cache)
            gold = images.array[[images.table[s.image_id] for s in samples], 0].astype(np.float32)
            weight = np.random.default_rng([self.seed, self.rank, draw, 1]).uniform(0, self.mix, size=(len(rows), 1))
            mixed = (1 - weight) * rows + weight * gold
            norms = np.linalg.norm(rows, axis=1, keepdims=True) / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
            rows = mixed * norms
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))[:, None, :]

    def describe(self) -> dict:
        """What inference needs to embed queries the same way (written into the export's feature layout)."""
        from grace.model.export import QUERY_ENCODER_DIR

        return {"encoder": self.kind, "dir": QUERY_ENCODER_DIR, "dim": self.dim, "mix": self.mix}


def _per_image_tokens(array: np.ndarray) -> np.ndarray:
    """(N, T, D) from cached tokens, or pooled (N, D) features as one token per image."""
    return array if array.ndim == 3 else array[:, None, :]


def load_feature_cache(cache_dir: Path, tokens: bool | None = None) -> tuple[list[str], np.ndarray]:
    """(ids, array) of a ``grace.data_process.features`` cache: visual tokens (``tokens=True``), pooled
    features (``False``), or tokens when cached else pooled (``None``)."""
    from grace.data_process.features import FeatureSet

    cache_dir = Path(cache_dir)
    if tokens is None:
        tokens = (cache_dir / "tokens.npy").is_file()
    elif tokens and not (cache_dir / "tokens.npy").is_file():
        raise InputError("the model reads visual tokens but this features cache has only pooled features "
                         "(cache them with `grace data features --tokens`)", path=cache_dir)
    fs = FeatureSet.load(cache_dir, tokens=tokens)
    return list(fs.ids), fs.array
