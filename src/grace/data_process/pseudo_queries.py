"""Pseudo-queries: the texts GRACE trains "learning to retrieve" (t2id) on for images whose real captions
are held out (the val and test splits). A generator is pluggable; which ones a run may use is its protocol's
choice (:mod:`grace.data_process.protocol`):

- ``knn-captions`` (:class:`KnnCaptionPseudoQueries`, image-only): the captions of the image's nearest
  *training* images in the features cache — from the pixels alone, never from the image's own annotation;
- ``captioner:MODEL_ID`` (:class:`CaptionerPseudoQueries`, image-only): an image-text-to-text model, a hub id
  (online, e.g. ``captioner:Salesforce/blip-image-captioning-base``, as GRACE did) or a saved folder;
- ``self-caption`` (:mod:`grace.train.self_caption`, image-only): the project's own Flamingo, trained to caption
  the training images, captions each held-out image from its features; installed as an entry point
  (``GENERATOR_ENTRY_POINTS``), since it trains a model and this stage comes before the model;
- ``lit-captions`` (:mod:`grace.retrieval_baselines.clip_faiss.pseudo_queries`, image-only): the training
  captions nearest to the image in the dense retriever's joint space (LiT heads); an entry point too;
- ``keywords`` (:class:`KeywordPseudoQueries`, tagged): the image's own metadata (``meta["keywords"]``, e.g.
  CLDR keywords of an emoji, tags of a clip-art), optionally templated.

:func:`build_pseudo_queries` passes every text through the leak filter (:mod:`grace.data_process.leak_filter`):
none repeats a held-out query, even reworded. :func:`save_pseudo_queries` writes the texts with their
provenance (protocol, generator, the dataset's digest, the filter's counts) and :func:`load_pseudo_queries`
refuses a file made for another dataset.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grace.data_process.dataset import TRAIN_SPLITS, Dataset, ImageRecord, dataset_digest
from grace.data_process.features import unit_rows
from grace.data_process.leak_filter import LeakCounts, LeakFilter
from grace.errors import GraceError, InputError

log = logging.getLogger(__name__)


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form used to compare queries."""
    return re.sub(r"\s+", " ", str(text).strip().lower())


def held_out_queries(dataset: Dataset) -> set[str]:
    """Normalised texts of every image outside the training splits (the evaluation queries)."""
    return {normalise(t) for r in dataset.images if r.split not in TRAIN_SPLITS for t in r.texts}


def held_out_splits(dataset: Dataset) -> list[str]:
    """The splits whose images are held out (their texts are queries): val and test where present."""
    return sorted({r.split for r in dataset.images if r.split not in TRAIN_SPLITS})


def leak_filter(dataset: Dataset) -> LeakFilter:
    """A :class:`LeakFilter` over every held-out query of ``dataset`` (val and test)."""
    return LeakFilter((t, r.image_id) for r in dataset.images if r.split not in TRAIN_SPLITS for t in r.texts)


def pseudo_queries_digest(pseudo_queries: dict[str, list[str]]) -> str:
    """A short fingerprint of pseudo-queries (ids, indexes and result files record the one they read)."""
    import hashlib

    text = json.dumps({k: list(v) for k, v in sorted(pseudo_queries.items())}, ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class PseudoQueryGenerator(ABC):
    """Makes query-like texts for one image without looking at its held-out captions."""

    name: str = "generator"

    @abstractmethod
    def generate(self, record: ImageRecord) -> list[str]:
        """Candidate pseudo-queries for ``record`` (may be filtered afterwards)."""

    def generate_batch(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        """Override for generators that batch (models); the default loops over :meth:`generate`."""
        return [self.generate(r) for r in records]


class KeywordPseudoQueries(PseudoQueryGenerator):
    """The image's non-query texts (``meta["keywords"]``), each optionally filled into templates; with
    ``joined`` the keywords joined into one phrase come first (closer to a caption than any single word);
    with ``pairs`` every two of the keywords' words follow as a phrase in both orders (query-length texts,
    e.g. "face wink" and "wink face" for the keywords face, wink). ``max_queries`` caps the texts kept."""

    name = "keywords"

    def __init__(self, *, max_queries: int = 8, templates: Sequence[str] = ("{}",), joined: bool = True,
                 pairs: bool = False):
        if max_queries < 1:
            raise GraceError("max_queries must be at least 1")
        bad = [t for t in templates if t.count("{}") != 1]
        if not templates or bad:
            raise GraceError(f"each pseudo-query template needs exactly one '{{}}', got {list(templates) or '[]'}")
        self.max_queries = max_queries
        self.templates = tuple(templates)
        self.joined = joined
        self.pairs = pairs

    def generate(self, record: ImageRecord) -> list[str]:
        keywords = [str(k).strip() for k in record.meta.get("keywords", []) if str(k).strip()]
        words = list(dict.fromkeys(" ".join(keywords).split()))  # each word once, first-seen order
        phrases = [" ".join(words)] if self.joined and len(keywords) > 1 else []
        phrases += keywords
        if self.pairs:
            phrases += [f"{a} {b}" for i, a in enumerate(words) for b in words[i + 1:]]
            phrases += [f"{b} {a}" for i, a in enumerate(words) for b in words[i + 1:]]
        phrases = list(dict.fromkeys(phrases))
        return [template.format(k) for k in phrases for template in self.templates][: self.max_queries]


class KnnCaptionPseudoQueries(PseudoQueryGenerator):
    """The captions of the ``k`` training images nearest to the image (cosine over a features cache): one
    caption from each neighbour in turn, nearest first, then their next ones, up to ``max_queries`` texts.
    Only the held-out image's pixels (through its features) and the training split's captions are read."""

    name = "knn-captions"

    def __init__(self, dataset: Dataset, features, *, k: int = 5, max_queries: int = 8):
        import numpy as np

        if k < 1 or max_queries < 1:
            raise GraceError(f"knn-captions needs k >= 1 and max_queries >= 1, got k={k}, max_queries={max_queries}")
        self.k, self.max_queries = k, max_queries
        self.train = [r for r in dataset.split("train") if r.texts]
        if not self.train:
            raise GraceError("knn-captions needs captioned training images; the dataset has none")
        self.features = features
        self._train_rows = self._unit(np.asarray(features.rows([r.image_id for r in self.train]), np.float32))

    @staticmethod
    def _unit(rows):
        return unit_rows(rows.reshape(len(rows), -1))

    def neighbours(self, records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
        """The ``k`` nearest training images of each record, nearest first (never the image itself)."""
        import numpy as np

        queries = self._unit(np.asarray(self.features.rows([r.image_id for r in records]), np.float32))
        scores = queries @ self._train_rows.T
        for row, record in enumerate(records):  # a training image is never its own neighbour
            scores[row, [i for i, t in enumerate(self.train) if t.image_id == record.image_id]] = -np.inf
        k = min(self.k, len(self.train))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[self.train[i] for i in row] for row in top]

    def generate(self, record: ImageRecord) -> list[str]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        out = []
        for near in self.neighbours(records):
            texts: list[str] = []
            for depth in range(max(len(r.texts) for r in near)):
                texts += [r.texts[depth] for r in near if depth < len(r.texts)]
            out.append(list(dict.fromkeys(t.strip() for t in texts if t.strip()))[: self.max_queries])
        return out


class CaptionCache:
    """Captions by image id in a JSONL file ``{"image_id", "captions"}`` appended after every batch, so a
    killed captioning run resumes where it stopped. A line cut short by a crash (it can only be the last) is
    cut off the file when it is opened, so later lines never land on it. ``path=None``: memory only."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.captions: dict[str, list[str]] = {}
        if self.path and self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            complete = text[:text.rfind("\n") + 1]
            if complete != text:
                self.path.write_text(complete, encoding="utf-8")
            for line in complete.splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.captions[row["image_id"]] = row["captions"]

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.captions

    def __getitem__(self, image_id: str) -> list[str]:
        return list(self.captions[image_id])

    def add(self, image_ids: Sequence[str], captions: Sequence[list[str]]) -> None:
        """Remember (and append to the file) each image's captions."""
        self.captions.update(zip(image_ids, captions))
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"image_id": i, "captions": c}, ensure_ascii=False) + "\n"
                                  for i, c in zip(image_ids, captions))


class CaptionerPseudoQueries(PseudoQueryGenerator):
    """Captions from a Hugging Face image-text-to-text model, as GRACE generated pseudo-queries for its test
    images: BLIP / BLIP-2 / Florence-2 / SmolVLM class models (``AutoModelForImageTextToText``), by hub id
    (online) or from a saved folder. ``num_captions`` beams are kept per image, decoded in batches; a chat
    model gets ``prompt`` through its chat template, a captioner a plain text prefix (BLIP: none).

    ``cache``: a JSONL file ``{"image_id", "captions"}`` appended after every batch; images already in it
    are never captioned again, so a killed run resumes where it stopped.
    """

    def __init__(self, model_id: str, *, num_captions: int = 3, batch_size: int = 8, device: str | None = None,
                 prompt: str | None = None, max_new_tokens: int = 30, cache: str | Path | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = f"captioner:{model_id}"
        self.num_captions, self.batch_size, self.max_new_tokens = num_captions, batch_size, max_new_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.processor = AutoProcessor.from_pretrained(model_id)
        self.model = AutoModelForImageTextToText.from_pretrained(model_id).eval().to(self.device)
        self.prompt = prompt
        self.cache = CaptionCache(cache)

    def _text_inputs(self, count: int) -> list[str] | None:
        if self.prompt is None:
            return None
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            return [self.processor.apply_chat_template(messages, add_generation_prompt=True)] * count
        return [self.prompt] * count

    def _caption(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        import torch

        from grace.data_process.features import open_image

        images = [open_image(r.path).convert("RGB") for r in records]
        text = self._text_inputs(len(images))
        inputs = self.processor(images=images, text=text, return_tensors="pt", padding=text is not None)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model.generate(**inputs, num_beams=self.num_captions, num_return_sequences=self.num_captions,
                                      max_new_tokens=self.max_new_tokens, do_sample=False)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and not self.model.config.is_encoder_decoder and \
                out.shape[1] > prompt_ids.shape[1]:  # a decoder-only VLM echoes its prompt: keep the new tokens
            out = out[:, prompt_ids.shape[1]:]
        texts = [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        if self.prompt and not getattr(self.processor, "chat_template", None):  # BLIP-style prefix echoed
            texts = [t[len(self.prompt):].strip() if t.lower().startswith(self.prompt.lower()) else t for t in texts]
        n = self.num_captions
        return [texts[i * n:(i + 1) * n] for i in range(len(records))]

    def generate(self, record: ImageRecord) -> list[str]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        todo = [r for r in records if r.image_id not in self.cache]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            self.cache.add([r.image_id for r in batch], self._caption(batch))
        return [self.cache[r.image_id] for r in records]


GENERATORS = ("knn-captions", "keywords", "captioner:MODEL_ID")
#: entry-point group through which installed packages add generators (a class taking ``dataset``,
#: ``features``, ``workdir`` and its options), e.g. ``self-caption`` (grace.train.self_caption), which trains
#: a model and so lives in a later stage than this one
GENERATOR_ENTRY_POINTS = "grace.pseudo_query_generators"


def plugin_generators() -> dict:
    """``{name: entry point}`` of the generators installed packages declare (see GENERATOR_ENTRY_POINTS)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GENERATOR_ENTRY_POINTS)}


def create_pseudo_query_generator(name: str, *, dataset: Dataset | None = None, features=None,
                                  workdir: str | Path | None = None, **kwargs) -> PseudoQueryGenerator:
    """``knn-captions`` (needs ``dataset`` and its ``features``), ``keywords``, ``captioner:MODEL_ID``, or an
    installed generator (``self-caption``: gets ``dataset``, ``features`` and ``workdir``, the folder where it
    keeps its model and its resumable output)."""
    if name == "knn-captions":
        if dataset is None or features is None:
            raise GraceError("the knn-captions generator needs the dataset and its features cache")
        return KnnCaptionPseudoQueries(dataset, features, **kwargs)
    if name == "keywords":
        return KeywordPseudoQueries(**kwargs)
    if name.startswith("captioner:"):
        return CaptionerPseudoQueries(name.removeprefix("captioner:"), **kwargs)
    plugins = plugin_generators()
    if name in plugins:
        return plugins[name].load()(dataset, features, workdir=workdir, **kwargs)
    raise GraceError(f"unknown pseudo-query generator {name!r}; known: {', '.join([*GENERATORS, *plugins])} (installed "
                     f"ones are the {GENERATOR_ENTRY_POINTS!r} entry points: after an update, `pip install -e .` "
                     f"registers new ones)")


@dataclass
class PseudoQuerySet:
    """Pseudo-queries ``{image_id: [texts]}`` with what the leak filter dropped on the way."""

    queries: dict[str, list[str]]
    generator: str
    splits: list[str]
    leak: LeakCounts = field(default_factory=LeakCounts)

    def summary(self) -> str:
        empty = sum(not t for t in self.queries.values())
        return (f"pseudo-queries ({self.generator}, {'+'.join(self.splits)}): {len(self.queries)} images, "
                f"{sum(map(len, self.queries.values()))} texts; leak filter dropped {self.leak.dropped} of "
                f"{self.leak.checked} ({self.leak.dropped_equal} same words as a held-out query, "
                f"{self.leak.dropped_contains} containing one, {self.leak.dropped_variant} a qualifier variant of one; "
                f"{self.leak.dropped_own_image} the image's own); "
                f"{empty} images without any")


def build_pseudo_queries(dataset: Dataset, generator: PseudoQueryGenerator, *, splits: Sequence[str] | None = None,
                         batch_size: int = 32) -> PseudoQuerySet:
    """Pseudo-queries for the images of ``splits`` (default: every held-out split). Each text passes the leak filter against every held-out query; duplicates within an image are
    dropped. Images left with none get only i2id samples."""
    splits = list(splits or held_out_splits(dataset))
    guard = leak_filter(dataset)
    records = dataset.split(*splits)
    out: dict[str, list[str]] = {}
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        for record, candidates in zip(batch, generator.generate_batch(batch)):
            kept, seen = [], set()
            for text in candidates:
                key = normalise(text)
                if key and key not in seen and guard.keep(text, record.image_id):
                    seen.add(key)
                    kept.append(text.strip())
            out[record.image_id] = kept
    result = PseudoQuerySet(out, generator.name, splits, guard.counts)
    log.info(result.summary())
    return result


def config_path(path: str | Path) -> Path:
    """The provenance file beside a pseudo-query file: ``F.json`` → ``F.config.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.config.json")


def generator_workdir(path: str | Path, generator: str) -> Path:
    """Where ``generator`` keeps its state (a trained captioner, resumable captions) beside the pseudo-query
    file ``path``: ``F.json`` → ``F.<generator>/``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{generator.replace(':', '-').replace('/', '-')}")


def save_pseudo_queries(path: str | Path, result: PseudoQuerySet, dataset: Dataset, *, protocol: str,
                        options: dict | None = None) -> dict:
    """Write ``path`` (``{image_id: [texts]}``) and, last, its provenance beside it; returns the provenance."""
    from grace.io_utils import write_json

    provenance = {"protocol": protocol, "generator": result.generator, "options": options or {},
                  "splits": result.splits, "dataset": dataset.name, "dataset_digest": dataset_digest(dataset),
                  "digest": pseudo_queries_digest(result.queries), "leak_filter": result.leak.as_dict()}
    write_json(path, result.queries)
    write_json(config_path(path), provenance)
    return provenance


def load_pseudo_queries(path: str | Path, dataset: Dataset) -> tuple[dict[str, list[str]], dict]:
    """``(queries, provenance)`` of a file written by :func:`save_pseudo_queries`; a file made for another
    dataset (or without its provenance, or edited since) is a one-line error naming it."""
    from grace.io_utils import read_json

    path = Path(path)
    if not config_path(path).is_file():
        raise InputError(f"no provenance file {config_path(path).name} beside it; write pseudo-queries with "
                         f"`grace data pseudo-queries`", path=path)
    provenance = read_json(config_path(path))
    queries = read_json(path)
    if not isinstance(queries, dict) or not all(isinstance(v, list) for v in queries.values()):
        raise InputError("expected an object {image_id: [texts]}", path=path)
    if provenance.get("dataset_digest") != dataset_digest(dataset):
        raise InputError(f"made for another dataset (digest {provenance.get('dataset_digest')} from "
                         f"{provenance.get('dataset')!r}, this one is {dataset_digest(dataset)}); rebuild it for "
                         f"this dataset", path=path)
    if provenance.get("digest") != pseudo_queries_digest(queries):
        raise InputError("its texts changed since its provenance was written (digest mismatch)", path=path)
    return queries, provenance
