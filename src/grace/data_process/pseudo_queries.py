"""Pseudo-queries: the texts GRACE trains "learning to retrieve" (t2id) on for images whose real captions
are held out (the test split). A generator is pluggable:

- ``keywords`` (offline default, :class:`KeywordPseudoQueries`): the image's non-query texts
  (``meta["keywords"]``, e.g. CLDR keywords of an emoji, tags of a clip-art), optionally templated;
- ``captioner:MODEL_ID`` (:class:`CaptionerPseudoQueries`): an image-to-text model from the hub
  (e.g. ``captioner:Salesforce/blip-image-captioning-base``), as GRACE did — needs internet.

:func:`build_pseudo_queries` never returns a text equal (case/space-normalised) to any held-out query of
the dataset, so no test query can leak into the training shards.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from typing import Sequence

from grace.data_process.dataset import TRAIN_SPLITS, Dataset, ImageRecord
from grace.errors import GraceError

log = logging.getLogger(__name__)


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form used to compare queries."""
    return re.sub(r"\s+", " ", str(text).strip().lower())


def held_out_queries(dataset: Dataset) -> set[str]:
    """Normalised texts of every image outside the training splits (the evaluation queries)."""
    return {normalise(t) for r in dataset.images if r.split not in TRAIN_SPLITS for t in r.texts}


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
    ``joined`` the keywords joined into one phrase come first (closer to a caption than any single word)."""

    name = "keywords"

    def __init__(self, *, max_queries: int = 8, templates: Sequence[str] = ("{}",), joined: bool = True):
        if max_queries < 1:
            raise GraceError("max_queries must be at least 1")
        self.max_queries = max_queries
        self.templates = tuple(templates)
        self.joined = joined

    def generate(self, record: ImageRecord) -> list[str]:
        keywords = [str(k).strip() for k in record.meta.get("keywords", []) if str(k).strip()]
        words = list(dict.fromkeys(" ".join(keywords).split()))  # each word once, first-seen order
        phrases = [" ".join(words)] if self.joined and len(keywords) > 1 else []
        phrases += keywords
        return [template.format(k) for k in phrases for template in self.templates][: self.max_queries]


class CaptionerPseudoQueries(PseudoQueryGenerator):
    """Captions from a Hugging Face image-to-text model (online; GRACE used a captioner for test images)."""

    def __init__(self, model_id: str, *, num_captions: int = 3, batch_size: int = 8, device: str | None = None):
        from transformers import pipeline

        self.name = f"captioner:{model_id}"
        self.num_captions, self.batch_size = num_captions, batch_size
        self.pipe = pipeline("image-to-text", model=model_id, device=device)

    def generate(self, record: ImageRecord) -> list[str]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        from grace.data_process.features import open_image

        images = [open_image(r.path).convert("RGB") for r in records]
        outputs = self.pipe(images, batch_size=self.batch_size,
                            generate_kwargs={"num_beams": self.num_captions, "num_return_sequences": self.num_captions})
        return [[o["generated_text"].strip() for o in (out if isinstance(out, list) else [out])] for out in outputs]


def create_pseudo_query_generator(name: str = "keywords", **kwargs) -> PseudoQueryGenerator:
    """``keywords`` (offline default) or ``captioner:MODEL_ID``."""
    if name == "keywords":
        return KeywordPseudoQueries(**kwargs)
    if name.startswith("captioner:"):
        return CaptionerPseudoQueries(name.removeprefix("captioner:"), **kwargs)
    raise GraceError(f"unknown pseudo-query generator {name!r}; use keywords or captioner:MODEL_ID")


def build_pseudo_queries(dataset: Dataset, generator: PseudoQueryGenerator | None = None, *,
                         split: str = "test", batch_size: int = 32) -> dict[str, list[str]]:
    """``{image_id: [pseudo-queries]}`` for the images of ``split``; held-out queries are removed, and
    duplicates within an image dropped. Images left with none are logged (they get only i2id samples)."""
    generator = generator or KeywordPseudoQueries()
    banned = held_out_queries(dataset)
    records = dataset.split(split)
    out: dict[str, list[str]] = {}
    removed = empty = 0
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        for record, candidates in zip(batch, generator.generate_batch(batch)):
            kept, seen = [], set()
            for text in candidates:
                key = normalise(text)
                if not key or key in seen:
                    continue
                if key in banned:
                    removed += 1
                    continue
                seen.add(key)
                kept.append(text.strip())
            out[record.image_id] = kept
            empty += not kept
    log.info("pseudo-queries (%s, %s): %d images, %d texts; %d equal to a held-out query removed; %d images "
             "without any", generator.name, split, len(out), sum(map(len, out.values())), removed, empty)
    return out
