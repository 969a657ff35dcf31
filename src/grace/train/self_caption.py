"""``self-caption`` pseudo-queries (image-only protocol): the project's own Flamingo, trained here to caption
(image → caption) on the *training* split's images and texts, writes several captions for every held-out
image — GRACE's "model-generated pseudo-queries", with a model that needs no hub. Only the held-out images'
features are read, never their texts.

Training is a plain seeded torch loop (one process; AdamW with a short linear warm-up, gradient clipping)
over the pooled features cache: each step draws ``batch_size`` (train image, one of its texts) pairs; the
sequence is ``<image> caption: {text}<|endofchunk|>``, with the loss on the text and the end token. Decoding
is beam search, ``num_captions`` beams kept.

Everything lives in ``workdir``:

- ``model/``: the captioner's export; ``model/captioner.json`` (its settings) is written last, so a model
  without it is incomplete and is trained again;
- ``captions.jsonl``: one line per captioned image, appended after every batch, so a killed run resumes
  where it stopped; it is deleted whenever the model is (re)trained, so one model's captions are never
  mixed with another's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grace.data_process.pseudo_queries import CaptionCache, PseudoQueryGenerator
from grace.errors import GraceError

log = logging.getLogger(__name__)

CAPTION_CUE = "caption:"


@dataclass
class SelfCaptionConfig:
    """How the captioner is built, trained and decoded (saved beside the model as ``captioner.json``)."""

    model: str = "tiny-effnet"
    tokenizer: str = "smollm2"
    steps: int = 600
    lr: float = 2e-3
    batch_size: int = 32
    warmup_steps: int = 30
    num_captions: int = 3
    max_new_tokens: int = 12
    seed: int = 0


def _settings(settings: dict) -> SelfCaptionConfig:
    known = [f.name for f in dataclasses.fields(SelfCaptionConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise GraceError(f"unknown self-caption settings {unknown}; known: {known}")
    return SelfCaptionConfig(**settings)


class SelfCaptionPseudoQueries(PseudoQueryGenerator):
    """Trains (or reloads) the captioner on ``dataset``'s training split in ``workdir``, then captions images
    from their ``features`` (a FeatureSet of pooled features)."""

    name = "self-caption"

    def __init__(self, dataset, features, *, workdir: str | Path | None = None, **settings):
        self.config = _settings(settings)
        if workdir is None:
            raise GraceError("the self-caption generator needs a working folder (for its model and captions)")
        if dataset is None or features is None:
            raise GraceError("the self-caption generator needs the dataset and its features cache")
        self.features = features
        self.workdir = Path(workdir)
        self.model_dir = self.workdir / "model"
        cache_path = self.workdir / "captions.jsonl"
        saved = self.model_dir / "captioner.json"
        if saved.is_file() and json.loads(saved.read_text()) == dataclasses.asdict(self.config):
            self.model, self.tokenizer = self._load()
        else:
            cache_path.unlink(missing_ok=True)  # captions of another model: never mixed with this one's
            self.model, self.tokenizer = self._train(dataset)
        self.cache = CaptionCache(cache_path)

    # ------------------------------------------------------------------------------------------ training
    def _train(self, dataset):
        from grace.identifiers.tokenization import IdentifierTokenizer
        from grace.io_utils import write_json
        from grace.model import create_model
        from grace.model.prompt import IGNORE_INDEX, left_pad

        cfg = self.config
        pairs = [(r.image_id, t) for r in dataset.split("train") for t in r.texts if t.strip()]
        if not pairs:
            raise GraceError("self-caption needs captioned training images; the dataset's train split has none")
        tokenizer = IdentifierTokenizer.create(cfg.tokenizer)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, tokenizer=tokenizer, seed=cfg.seed).train()
        params = model.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        warmup = max(1, cfg.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        rng = np.random.default_rng(cfg.seed)
        prompt = self._prompt(tokenizer)
        losses: list[float] = []
        for step in range(cfg.steps):
            batch = [pairs[i] for i in rng.integers(0, len(pairs), cfg.batch_size)]
            targets = [list(tokenizer.encode_text(" " + text)) + [tokenizer.eoc_token_id] for _, text in batch]
            inputs = left_pad([prompt + t for t in targets], tokenizer.pad_token_id,
                              labels=[[IGNORE_INDEX] * len(prompt) + t for t in targets])
            out = model(lang_x=inputs["lang_x"], attention_mask=inputs["attention_mask"],
                        position_ids=inputs["position_ids"], labels=inputs["labels"],
                        vision_features=self._vision([image_id for image_id, _ in batch]))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(out.loss.detach()))
            if step % 100 == 0 or step == cfg.steps - 1:
                log.info("self-caption step %d/%d: loss %.3f", step + 1, cfg.steps, losses[-1])
        model.eval()
        model.save_pretrained(self.model_dir, tokenizer)
        write_json(self.model_dir / "losses.json", losses)
        write_json(self.model_dir / "captioner.json", dataclasses.asdict(cfg))  # last: the model is complete
        return model, tokenizer

    def _load(self):
        from grace.model import load_pretrained

        model, tokenizer = load_pretrained(self.model_dir)
        return model.eval(), tokenizer

    @staticmethod
    def _prompt(tokenizer) -> list[int]:
        return [tokenizer.image_token_id] + list(tokenizer.encode_text(CAPTION_CUE))

    def _vision(self, image_ids: Sequence[str]) -> torch.Tensor:
        rows = np.asarray(self.features.rows(list(image_ids)), np.float32).reshape(len(image_ids), -1)
        return torch.from_numpy(rows).view(len(image_ids), 1, 1, -1)

    # ---------------------------------------------------------------------------------------- captioning
    def _caption(self, image_ids: Sequence[str]) -> list[list[str]]:
        from grace.model.prompt import left_pad

        cfg, tok = self.config, self.tokenizer
        prompt = self._prompt(tok)
        inputs = left_pad([prompt] * len(image_ids), tok.pad_token_id)
        out = self.model.generate(inputs["lang_x"], inputs["attention_mask"], vision_features=self._vision(image_ids),
                                  num_beams=cfg.num_captions, num_return_sequences=cfg.num_captions,
                                  max_new_tokens=cfg.max_new_tokens, eos_token_id=tok.eoc_token_id, do_sample=False)
        texts = [tok.hf.decode(row[inputs["lang_x"].shape[1]:], skip_special_tokens=True).strip()
                 for row in out.tolist()]
        n = cfg.num_captions
        return [[t for t in texts[i * n:(i + 1) * n] if t] for i in range(len(image_ids))]

    def generate(self, record) -> list[str]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records) -> list[list[str]]:
        todo = [r.image_id for r in records if r.image_id not in self.cache]
        if todo:
            self.cache.add(todo, self._caption(todo))
        return [self.cache[r.image_id] for r in records]
