"""Vision encoders for the Flamingo model: the project's encoders plus open_clip patch tokens
(``open_clip_tokens:ARCH/PRETRAINED``, the visual tokens OpenFlamingo feeds its perceiver)."""

from __future__ import annotations

import torch

from grace.data_process.encoders import ImageEncoder, create_image_encoder, load_open_clip


class OpenClipTokenEncoder(ImageEncoder):
    """open_clip ViT tower returning its (B, n_patches, width) tokens, as OpenFlamingo uses them (online)."""

    def __init__(self, *, arch: str, pretrained: str):
        super().__init__()
        model, self.image_size, self.mean, self.std = load_open_clip(arch, pretrained)
        self.visual = model.visual
        self.visual.output_tokens = True
        self.name = f"open_clip_tokens:{arch}/{pretrained}"
        self.dim = self.visual.transformer.width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)[1]


def create_vision_encoder(name: str) -> ImageEncoder:
    """``open_clip_tokens:ARCH/PRETRAINED`` here; every other name via ``create_image_encoder``."""
    if name.startswith("open_clip_tokens:"):
        arch, _, pretrained = name.removeprefix("open_clip_tokens:").partition("/")
        return OpenClipTokenEncoder(arch=arch, pretrained=pretrained or "openai")
    return create_image_encoder(name)
