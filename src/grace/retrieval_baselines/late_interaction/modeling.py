"""ColBERT-style late-interaction model: text encoder → linear → L2-normalised tokens, plus vision fusion.

Queries are ``[CLS] [Q] text [SEP]`` padded to ``query_maxlen`` with ``[MASK]`` (query augmentation);
documents are ``[CLS] [D] text [SEP]`` with punctuation tokens dropped. ``[Q]``/``[D]`` are BERT's
``[unused0]``/``[unused1]`` as in ColBERT. Query images become extra/updated query tokens through the
fusion module (:mod:`.fusion`); images as documents go through :class:`~.fusion.ImageDocEncoder`.

Backbones: ``minilm`` (offline all-MiniLM-L6-v2), any Hugging Face encoder id or ColBERTv2 checkpoint
(its ``linear.weight`` initialises the projection), or ``random:HIDDEN`` (a small random BERT for tests).
Saved as ``model.safetensors`` + ``config.json``; a frozen pretrained backbone is reloaded by name.
"""

from __future__ import annotations

import dataclasses
import logging
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from grace.errors import GraceError, InputError
from grace.retrieval_baselines.late_interaction.configs import ModelConfig
from grace.retrieval_baselines.late_interaction.fusion import ImageDocEncoder, create_fusion, pool_grid

log = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
QUERY_MARKER, DOC_MARKER = "[unused0]", "[unused1]"


def load_backbone(name: str, seed: int = 0) -> tuple[object, nn.Module]:
    """(tokenizer, encoder) for ``minilm`` | ``random:HIDDEN`` | any Hugging Face encoder id."""
    from grace.data_process.encoders import create_text_encoder, minilm_dir

    if name.startswith("random:"):
        from transformers import AutoTokenizer, BertConfig, BertModel

        hidden = int(name.removeprefix("random:") or 32)
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2,
                            num_attention_heads=max(1, hidden // 16), intermediate_size=2 * hidden)
        return tokenizer, BertModel(config).eval()
    try:
        encoder = create_text_encoder(name)
    except OSError as exc:
        raise GraceError(f"cannot load text encoder {name!r} (offline? use minilm): {exc}".splitlines()[0]) from None
    return encoder.tokenizer, encoder.model


def pretrained_linear(source: str) -> torch.Tensor | None:
    """The ``linear.weight`` projection a ColBERT checkpoint (e.g. colbert-ir/colbertv2.0) ships, if any."""
    for file_name in ("model.safetensors", "pytorch_model.bin"):
        path = Path(source) / file_name
        if not path.is_file():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, file_name))
            except (OSError, ValueError) as exc:  # offline, missing file, not a hub id: no ColBERT head
                log.debug("no %s for %s: %s", file_name, source, exc)
                continue
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor("linear.weight") if "linear.weight" in set(handle.keys()) else None
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("linear.weight")
    return None


class LateInteractionModel(nn.Module):
    """Encodes queries (text + optional image) and documents (text or image) into normalised token sets."""

    def __init__(self, *, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tokenizer, self.backbone = load_backbone(config.text_encoder, config.seed)
        self.backbone.requires_grad_(config.train_backbone)
        torch.manual_seed(config.seed)
        hidden = self.backbone.config.hidden_size
        self.linear = nn.Linear(hidden, config.dim, bias=False)
        if not config.text_encoder.startswith("random:") and config.text_encoder != "minilm":
            weight = pretrained_linear(config.text_encoder)
            if weight is not None and tuple(weight.shape) == (config.dim, hidden):
                self.linear.weight.data.copy_(weight)
                log.info("initialised the projection from %s's linear.weight", config.text_encoder)
        self.fusion = create_fusion(config)
        self.image_docs = ImageDocEncoder(visual_dim=config.visual_dim, dim=config.dim)
        vocab = self.tokenizer.get_vocab()
        self.q_marker, self.d_marker = vocab.get(QUERY_MARKER), vocab.get(DOC_MARKER)
        mask_id = self.tokenizer.mask_token_id
        self.mask_id = mask_id if mask_id is not None else self.tokenizer.pad_token_id
        self.skiplist = torch.tensor(sorted({i for s in string.punctuation
                                             for i in self.tokenizer.encode(s, add_special_tokens=False)[:1]}))

    # ---- tokenisation -------------------------------------------------------------------------------
    def _with_marker(self, batch: dict, marker: int | None) -> dict:
        if marker is None:
            return batch
        ids, mask = batch["input_ids"], batch["attention_mask"]
        col = torch.full((ids.shape[0], 1), marker, dtype=ids.dtype)
        return {"input_ids": torch.cat([ids[:, :1], col, ids[:, 1:]], 1),
                "attention_mask": torch.cat([mask[:, :1], torch.ones_like(col), mask[:, 1:]], 1)}

    def tokenize_queries(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """Queries padded to ``query_maxlen`` with ``[MASK]`` (query augmentation)."""
        maxlen = self.config.query_maxlen - (self.q_marker is not None)
        batch = self.tokenizer([t or "" for t in texts], padding="max_length", truncation=True, max_length=maxlen,
                               return_tensors="pt")
        batch = self._with_marker({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
                                  self.q_marker)
        pad = batch["attention_mask"] == 0
        batch["input_ids"] = batch["input_ids"].masked_fill(pad, self.mask_id)
        if self.config.attend_to_mask_tokens:
            batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
        return batch

    def tokenize_docs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Documents; longer than ``doc_maxlen`` → :class:`InputError` unless ``truncate_docs``."""
        maxlen = self.config.doc_maxlen - (self.d_marker is not None)
        batch = self.tokenizer(list(texts), padding="longest", truncation=self.config.truncate_docs,
                               max_length=maxlen if self.config.truncate_docs else None, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1)
        if not self.config.truncate_docs and int(lengths.max()) > maxlen:
            bad = int(lengths.argmax())
            raise InputError(f"document has {int(lengths[bad]) + 1} tokens > doc_maxlen {self.config.doc_maxlen} "
                             "(raise doc_maxlen or set truncate_docs)", entry=repr(texts[bad][:60]))
        batch = self._with_marker({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
                                  self.d_marker)
        keep = batch["attention_mask"].bool()
        if self.config.mask_punctuation and len(self.skiplist):
            keep &= ~torch.isin(batch["input_ids"], self.skiplist)
        batch["doc_mask"] = keep
        return batch

    # ---- encoders -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.linear.weight.device

    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone token states (no gradient unless ``train_backbone``)."""
        inputs = {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}
        with torch.set_grad_enabled(self.config.train_backbone and torch.is_grad_enabled()):
            return self.backbone(**inputs).last_hidden_state

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype))

    def prep_visual(self, visual: torch.Tensor) -> torch.Tensor:
        visual = torch.as_tensor(visual).to(self.device, torch.float32)
        if visual.dim() == 2:
            visual = visual[:, None]
        if visual.shape[-1] != self.config.visual_dim:
            raise InputError(f"visual tokens are {visual.shape[-1]}-d, the model expects {self.config.visual_dim}-d "
                             f"({self.config.image_encoder})")
        return pool_grid(visual, self.config.visual_grid)

    def encode_queries(self, texts: Sequence[str | None], visual: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q (B, Lq', dim) normalised, mask); ``visual`` (B, T, Dv) adds the image through the fusion."""
        unique = list(dict.fromkeys(t or "" for t in texts))  # repeated questions: run the backbone once
        where = {text: i for i, text in enumerate(unique)}
        hidden = self.hidden(self.tokenize_queries(unique))[[where[t or ""] for t in texts]]
        t = self.project(hidden)
        t_mask = torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)  # [MASK] tokens score too
        if visual is not None and self.config.fusion != "none":
            t, t_mask = self.fusion(t, t_mask, self.prep_visual(visual))
        return F.normalize(t, dim=-1), t_mask

    def encode_docs(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(D (B, Ld, dim) normalised, mask) of text documents."""
        batch = self.tokenize_docs(texts)
        return F.normalize(self.project(self.hidden(batch)), dim=-1), batch["doc_mask"].to(self.device)

    def encode_image_docs(self, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D (B, 1 + T, dim) normalised, mask) of images as documents."""
        return self.image_docs(self.prep_visual(visual))

    # ---- persistence --------------------------------------------------------------------------------
    def _saved_state(self) -> dict[str, torch.Tensor]:
        keep_backbone = self.config.train_backbone or self.config.text_encoder.startswith("random:")
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if keep_backbone or not k.startswith("backbone.")}

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (the :class:`ModelConfig` and ``extra``)."""
        from safetensors.torch import save_file

        from grace.io_utils import atomic_path, write_json

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / WEIGHTS_NAME, suffix=".safetensors") as tmp:
            save_file(self._saved_state(), str(tmp))
        write_json(out_dir / "config.json", {**dataclasses.asdict(self.config), **(extra or {})})
        return out_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> LateInteractionModel:
        """Load a model folder written by :meth:`save`."""
        from safetensors.torch import load_file

        from grace.config import dataclass_from_dict
        from grace.io_utils import read_json

        model_dir = Path(model_dir)
        if not (model_dir / WEIGHTS_NAME).is_file():
            raise InputError(f"no {WEIGHTS_NAME} (train a model first)", path=model_dir)
        values = read_json(model_dir / "config.json")
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        model = cls(config=dataclass_from_dict(ModelConfig, {k: v for k, v in values.items() if k in names},
                                               source=str(model_dir)))
        missing, unexpected = model.load_state_dict(load_file(str(model_dir / WEIGHTS_NAME)), strict=False)
        bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
        if bad:
            raise InputError(f"weights do not match the config: {bad[:3]}", path=model_dir)
        return model.eval()
