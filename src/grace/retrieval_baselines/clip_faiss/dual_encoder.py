"""Dual encoders that map images and texts into one joint space (L2-normalised float32 vectors).

- :class:`LitDualEncoder` (offline default): LiT-style — frozen pretrained image features
  (EfficientNet-Lite0, the encoder the generative model sees) and frozen all-MiniLM-L6-v2 text features,
  each followed by a trained projection head (:mod:`.heads`). Spec ``lit:HEADS_DIR``.
- :class:`OpenClipDualEncoder` (online, zero-shot): ``open_clip:ARCH/PRETRAINED``; needs ``open_clip``,
  ``torchvision`` and hub access.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from grace.data_process.features import unit_rows
from grace.errors import GraceError

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        from grace.fallbacks import record_fallback

        record_fallback("dense encoder device", "auto (cuda when present)", "cpu", "no CUDA device")
        return "cpu"
    return device


def open_images(paths: Sequence[str | Path]) -> list:
    """Open image files as PIL images, with a one-line error naming an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    from grace.errors import InputError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.copy())
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image: {exc.__class__.__name__}", path=path) from None
    return images


def encode_pil_batches(encoder, images: Sequence, batch_size: int = 64, *, progress: bool = False) -> np.ndarray:
    """Pooled (N, D) float32 features of PIL images from a :class:`grace.data_process.encoders.ImageEncoder`."""
    from tqdm import tqdm

    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"encode {encoder.name}", disable=not progress):
        out.append(encoder.encode(images[start:start + batch_size]).numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return unit_rows(np.asarray(x, dtype=np.float32))


class DualEncoder:
    """Images and texts → L2-normalised joint-space vectors (float32 numpy)."""

    spec: str = "dual-encoder"
    dim: int

    def encode_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        raise NotImplementedError


class LitDualEncoder(DualEncoder):
    """Frozen image/text encoders + trained LiT projection heads loaded from ``heads_dir``."""

    def __init__(self, heads_dir: str | Path, device: str = "auto"):
        from grace.data_process.encoders import create_image_encoder, create_text_encoder
        from grace.retrieval_baselines.clip_faiss.heads import LitHeads

        self.device = resolve_device(device)
        self.heads = LitHeads.load(heads_dir).to(self.device).eval()
        self.spec = f"lit:{heads_dir}"
        self.dim = self.heads.config["dim"]
        self.image_encoder = create_image_encoder(self.heads.config["image_encoder"]).to(self.device)
        self.text_encoder = create_text_encoder(self.heads.config["text_encoder"]).to(self.device)

    @torch.no_grad()
    def encode_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        base = encode_pil_batches(self.image_encoder, images, batch_size)
        return self.project_images(base)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        base = self.text_encoder.encode(list(texts), batch_size=batch_size).float().cpu().numpy()
        return self.project_texts(base)

    @torch.no_grad()
    def project_images(self, base: np.ndarray) -> np.ndarray:
        out = self.heads.embed_images(torch.as_tensor(base, device=self.device))
        return out.float().cpu().numpy()

    @torch.no_grad()
    def project_texts(self, base: np.ndarray) -> np.ndarray:
        out = self.heads.embed_texts(torch.as_tensor(base, device=self.device))
        return out.float().cpu().numpy()


class OpenClipDualEncoder(DualEncoder):
    """A pretrained open_clip model (zero-shot); downloads weights from the hub on first use."""

    def __init__(self, arch: str, pretrained: str = "openai", device: str = "auto"):
        try:
            import open_clip
        except ImportError as exc:
            raise GraceError("open_clip models need `pip install open_clip_torch torchvision` and hub access "
                             f"({exc.__class__.__name__}: {exc})") from None
        self.device = resolve_device(device)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=self.device)
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.spec = f"open_clip:{arch}/{pretrained}"
        self.dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else model.visual.output_dim

    @torch.no_grad()
    def encode_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start:start + batch_size]])
            out.append(self.model.encode_image(pixels.to(self.device)).float().cpu().numpy())
        return _normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return _normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


def canonical_spec(spec: str) -> str:
    """``lit:`` specs with an absolute heads folder, so saved configs work from any directory."""
    kind, _, rest = spec.partition(":")
    return f"lit:{Path(rest).resolve()}" if kind == "lit" and rest else spec


def load_dual_encoder(spec: str, device: str = "auto") -> DualEncoder:
    """``lit:HEADS_DIR`` or ``open_clip:ARCH/PRETRAINED`` (e.g. ``open_clip:ViT-B-32/openai``)."""
    kind, _, rest = spec.partition(":")
    if kind == "lit" and rest:
        return LitDualEncoder(rest, device=device)
    if kind == "open_clip" and rest:
        arch, _, pretrained = rest.partition("/")
        return OpenClipDualEncoder(arch, pretrained or "openai", device=device)
    raise GraceError(f"unknown dual encoder {spec!r}; use lit:HEADS_DIR or open_clip:ARCH/PRETRAINED")
