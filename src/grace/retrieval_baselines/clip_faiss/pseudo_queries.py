"""``lit-captions``: pseudo-queries from the dense retriever's view of an image (image-only protocol).

The training split's captions nearest to a held-out image in the LiT joint space, the space CLIP-FAISS searches:
image → text retrieval with the same heads (trained on the training pairs over the same frozen encoders), so
the generative model memorises, for each image, the texts the dense text tower places beside it. Only the
image's pixels (through its features) and the training split's captions are read, never the image's own
annotation; the leak filter then drops any caption that repeats a held-out query.

Installed as an entry point (``grace.pseudo_query_generators``) because it needs the LiT heads of this stage,
which comes after ``data_process``::

    grace data pseudo-queries --dataset D.json --out pq.json --generator lit-captions --options max_queries=8
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from grace.data_process.dataset import ImageRecord
from grace.data_process.pseudo_queries import PseudoQueryGenerator, normalise
from grace.errors import GraceError
from grace.io_utils import read_json
from grace.retrieval_baselines.clip_faiss.configs import TrainHeadsConfig
from grace.retrieval_baselines.clip_faiss.heads import LitHeads, fit_heads

log = logging.getLogger(__name__)


def _pooled(array) -> np.ndarray:
    """(N, D) float32: token features (N, T, D) are mean-pooled, as the LiT heads read them."""
    array = np.asarray(array, dtype=np.float32)
    return array.mean(axis=1) if array.ndim == 3 else array


class LitCaptionPseudoQueries(PseudoQueryGenerator):
    """The ``max_queries`` training captions with the highest LiT similarity to the image, best first, each text
    once and at most ``per_image`` from one training image (0: no cap).

    ``heads``: a LiT heads folder to use (e.g. a run's ``baselines/clip_faiss/heads``); otherwise heads are trained
    here on the training pairs with ``grace baselines clip-faiss train-heads``'s defaults and ``seed``, kept in
    ``workdir/heads`` and reused while the settings are the same (``epochs``, ``batch_size``: other than those
    defaults)."""

    name = "lit-captions"

    def __init__(self, dataset, features, *, workdir: str | Path | None = None, heads: str | None = None,
                 max_queries: int = 8, per_image: int = 0, seed: int = 0, epochs: int | None = None,
                 batch_size: int | None = None, progress: bool = False):
        if dataset is None or features is None:
            raise GraceError("the lit-captions generator needs the dataset and its features cache")
        if max_queries < 1 or per_image < 0:
            raise GraceError(f"lit-captions needs max_queries >= 1 and per_image >= 0, got {max_queries}, {per_image}")
        self.max_queries, self.per_image = max_queries, per_image
        self.features = features
        train = [(r.image_id, t.strip()) for r in dataset.split("train") for t in r.texts if t.strip()]
        if not train:
            raise GraceError("lit-captions needs captioned training images; the dataset's train split has none")
        defaults = TrainHeadsConfig()
        fit = {"seed": seed, "dim": defaults.dim, "hidden": defaults.hidden, "epochs": epochs or defaults.epochs,
               "batch_size": batch_size or defaults.batch_size, "lr": defaults.lr,
               "weight_decay": defaults.weight_decay, "init_temperature": defaults.init_temperature,
               "text_encoder": defaults.text_encoder, "image_encoder": features.encoder, "pairs": len(train)}
        self.heads = self._heads(train, heads, workdir, fit, progress)
        self.text_encoder = self.heads.config.get("text_encoder", TrainHeadsConfig.text_encoder)
        first: dict[str, int] = {}  # one candidate per distinct text (its first training image owns it)
        for n, (_, text) in enumerate(train):
            first.setdefault(normalise(text), n)
        self.candidates = [train[n] for n in first.values()]
        with torch.no_grad():
            self.text_keys = self.heads.embed_texts(self._encode([t for _, t in self.candidates])).numpy()

    def _encode(self, texts: list[str]) -> torch.Tensor:
        from grace.data_process.encoders import create_text_encoder

        return create_text_encoder(self.text_encoder).encode(texts).float()

    def _heads(self, train: list[tuple[str, str]], heads: str | None, workdir, fit: dict, progress: bool) -> LitHeads:
        """The given heads, the ones trained here before with the same ``fit`` settings, or new ones."""
        if heads is not None:
            return LitHeads.load(heads).eval()
        if workdir is None:
            raise GraceError("lit-captions needs heads=DIR or a working folder to train its heads in")
        folder = Path(workdir) / "heads"
        if (folder / "config.json").is_file() and read_json(folder / "config.json").get("settings") == fit:
            return LitHeads.load(folder).eval()
        owners_of = {image_id: n for n, image_id in enumerate(dict.fromkeys(i for i, _ in train))}
        image_x = _pooled(self.features.rows(list(owners_of)))
        self.text_encoder = fit["text_encoder"]
        text_x = self._encode([t for _, t in train]).numpy()
        config = {key: fit[key] for key in ("dim", "hidden", "init_temperature", "text_encoder")}
        model, history = fit_heads(image_x, text_x, np.asarray([owners_of[i] for i, _ in train]), config,
                                   epochs=fit["epochs"], batch_size=fit["batch_size"], lr=fit["lr"],
                                   weight_decay=fit["weight_decay"], seed=fit["seed"], progress=progress)
        model.save(folder, extra={"settings": fit, "loss_history": history})
        log.info("lit-captions: LiT heads trained on %d pairs, loss %.3f -> %.3f", len(train), history[0], history[-1])
        return model

    def generate(self, record: ImageRecord) -> list[str]:
        return self.generate_batch([record])[0]

    def generate_batch(self, records: Sequence[ImageRecord]) -> list[list[str]]:
        with torch.no_grad():
            keys = self.heads.embed_images(torch.from_numpy(_pooled(self.features.rows([r.image_id for r in records]))))
        scores = keys.numpy() @ self.text_keys.T
        out = []
        for row, record in zip(scores, records):
            kept: list[str] = []
            per_owner: dict[str, int] = {}
            for n in np.argsort(-row, kind="stable"):
                owner, text = self.candidates[n]
                if owner == record.image_id:  # never the image's own caption
                    continue
                if self.per_image and per_owner.get(owner, 0) >= self.per_image:
                    continue
                per_owner[owner] = per_owner.get(owner, 0) + 1
                kept.append(text)
                if len(kept) == self.max_queries:
                    break
            out.append(kept)
        return out
