"""Image views for i2id augmentation: seeded, label-preserving crops and tone changes (PIL only).

View 0 is the image itself. View ``k > 0`` of the image at position ``i`` is drawn from a generator seeded
with ``(seed, k, i)``, so a view is the same whichever chunk, process or run computes it. No flips or hue
shifts: in icon corpora they change the meaning ("left arrow", "red heart").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from grace.errors import GraceError


@dataclass(frozen=True)
class ViewAugment:
    """A random resized crop (area ``scale``, aspect ``ratio``), a small rotation (``degrees``) and a
    brightness / contrast factor in ``1 ± tone``; the output keeps the input's size."""

    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (0.85, 1.18)
    degrees: float = 10.0
    tone: float = 0.15

    def __post_init__(self) -> None:
        if not (0 < self.scale[0] <= self.scale[1] <= 1) or not (0 < self.ratio[0] <= self.ratio[1]):
            raise GraceError(f"bad view augmentation {self}: need 0 < scale <= 1 and 0 < ratio")

    def describe(self) -> dict:
        """JSON form, recorded beside every view cache."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __call__(self, image, rng: np.random.Generator):
        """One random view of a PIL ``image``."""
        from PIL import Image, ImageEnhance

        image = image.convert("RGBA") if image.mode in ("P", "LA", "RGBA") else image.convert("RGB")
        width, height = image.size
        area = width * height * rng.uniform(*self.scale)
        aspect = float(np.exp(rng.uniform(np.log(self.ratio[0]), np.log(self.ratio[1]))))
        crop_w = round(min(width, float(np.sqrt(area * aspect))))
        crop_h = round(min(height, float(np.sqrt(area / aspect))))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        view = image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)
        angle = float(rng.uniform(-self.degrees, self.degrees))
        fill = (255, 255, 255, 0) if view.mode == "RGBA" else (255, 255, 255)
        view = view.rotate(angle, resample=Image.BICUBIC, fillcolor=fill)
        alpha = view.getchannel("A") if view.mode == "RGBA" else None
        rgb = view.convert("RGB")
        rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(1 - self.tone, 1 + self.tone)))
        rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(1 - self.tone, 1 + self.tone)))
        if alpha is not None:
            rgb.putalpha(alpha)
        return rgb


def view_rng(seed: int, view: int, index: int) -> np.random.Generator:
    """The generator of view ``view`` of the image at dataset position ``index``."""
    return np.random.default_rng([seed, view, index])
