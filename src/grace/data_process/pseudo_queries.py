"""Pseudo-queries: the texts GRACE trains "learning to retrieve" (t2id) on for images whose real captions
are held out (the test split). A generator is pluggable:

- ``keywords`` (offline default, :class:`KeywordPseudoQueries`): the image's non-query texts
  (``meta["keywords"]``, e.g. CLDR keywords of an emoji, tags of a clip-art), optionally templated;
- ``captioner:MODEL_ID`` (:class:`CaptionerPseudoQueries`): an image-text-to-text model, a hub id (online,
  e.g. ``captioner:Salesforce/blip-image-captioning-base``, as GRACE did) or a saved folder.

:func:`build_pseudo_queries` never returns a text equal (case/space-normalised) to any held-out query of
the dataset, so no test query can leak into the training shards.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

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
        self.cache_path = Path(cache) if cache else None
        self.cached: dict[str, list[str]] = {}
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                if line.strip():  # a line cut by a crash is the last one: skip it
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    self.cached[row["image_id"]] = row["captions"]

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
        todo = [r for r in records if r.image_id not in self.cached]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            captions = self._caption(batch)
            for record, texts in zip(batch, captions):
                self.cached[record.image_id] = texts
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as handle:
                    handle.writelines(json.dumps({"image_id": r.image_id, "captions": t}, ensure_ascii=False) + "\n"
                                      for r, t in zip(batch, captions))
        return [list(self.cached[r.image_id]) for r in records]


def create_pseudo_query_generator(name: str = "keywords", **kwargs) -> PseudoQueryGenerator:
    """``keywords`` (offline default) or ``captioner:MODEL_ID``."""
    if name == "keywords":
        return KeywordPseudoQueries(**kwargs)
    if name.startswith("captioner:"):
        return CaptionerPseudoQueries(name.removeprefix("captioner:"), **kwargs)
    raise GraceError(f"unknown pseudo-query generator {name!r}; use keywords or captioner:MODEL_ID")


def build_pseudo_queries(dataset: Dataset, generator: PseudoQueryGenerator | None = None, *,
                         split: str = "test", batch_size: int = 32,
                         image_ids: set[str] | None = None) -> dict[str, list[str]]:
    """``{image_id: [pseudo-queries]}`` for the images of ``split`` (only those in ``image_ids`` if given);
    held-out queries are removed, and duplicates within an image dropped. Images left with none are logged
    (they get only i2id samples)."""
    generator = generator or KeywordPseudoQueries()
    banned = held_out_queries(dataset)
    records = [r for r in dataset.split(split) if image_ids is None or r.image_id in image_ids]
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
