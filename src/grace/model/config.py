"""``FlamingoConfig``: one dataclass describing a Flamingo model; named configs live in ``configs/*.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grace.config import dataclass_from_dict
from grace.errors import GraceError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class FlamingoConfig:
    """Architecture + LM/vision sources of a Flamingo model (OpenFlamingo's defaults where they apply)."""

    name: str = "custom"
    lm: str = field(default="smollm2", metadata={"help": "'smollm2' (offline GGUF), 'random' (lm_config), or a HF id/dir"})
    lm_gguf: str | None = field(default=None, metadata={"help": "GGUF file inside `lm` (set automatically for smollm2)"})
    lm_config: dict | None = field(default=None, metadata={"help": "{'model_type': ..., **kwargs} for random init"})
    trust_remote_code: bool = False
    decoder_layers_attr: str | None = field(default=None, metadata={"help": "e.g. model.layers; found when None"})
    vision_encoder: str | None = field(default="efficientnet-lite0", metadata={"help": "image encoder name or None"})
    vis_dim: int = 1280
    n_visual_tokens: int = 49
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_dim_head: int = 64
    perceiver_latents: int = 64
    perceiver_ff_mult: float = 4
    max_num_media: int | None = None
    max_num_frames: int | None = None
    cross_attn_every_n_layers: int = 1
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: float = 4
    only_attend_immediate_media: bool = True
    freeze_lm: bool = False
    train_embeddings: bool = True
    vocab_size: int | None = None
    image_token_id: int | None = None
    eoc_token_id: int | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"
    seed: int = 0

    def replace(self, **changes: Any) -> "FlamingoConfig":
        """A copy with ``changes`` (unknown keys → one-line error)."""
        values = dataclasses.asdict(self)
        values.update(changes)
        return dataclass_from_dict(FlamingoConfig, values, source=f"model config {self.name!r}")


def available_configs() -> list[str]:
    """Names of the packaged configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def resolve_config(spec: "str | Path | dict | FlamingoConfig", **overrides: Any) -> FlamingoConfig:
    """A packaged name (``tiny``), a JSON path, a dict or a config; then ``overrides`` on top."""
    if isinstance(spec, FlamingoConfig):
        return spec.replace(**overrides)
    if isinstance(spec, dict):
        values, source = dict(spec), "model config dict"
    else:
        path = Path(spec)
        if not path.suffix and (CONFIG_DIR / f"{spec}.json").is_file():
            path = CONFIG_DIR / f"{spec}.json"
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise GraceError(f"unknown model config {str(spec)!r}; packaged: {', '.join(available_configs())} "
                             "(or a JSON file / export folder)")
        from grace.io_utils import read_json

        values, source = read_json(path), str(path)
        if not isinstance(values, dict):
            raise GraceError(f"{path}: model config must be a JSON object")
        values = values.get("model", values)  # an export's config.json nests the model config
    values.update(overrides)
    return dataclass_from_dict(FlamingoConfig, values, source=source)

