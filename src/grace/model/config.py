"""``FlamingoConfig``: one dataclass describing a Flamingo model; named configs live in ``configs/*.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grace.config import dataclass_from_dict
from grace.errors import GraceError

CONFIG_DIR = Path(__file__).parent / "configs"
LM_TRAINING = ("full", "frozen", "lora")


@dataclass
class FlamingoConfig:
    """Architecture + LM/vision sources of a Flamingo model (OpenFlamingo's defaults where they apply)."""

    name: str = "custom"
    lm: str = field(default="smollm2", metadata={"help": "'smollm2' (offline GGUF), 'random' (lm_config), or a HF id/dir"})
    lm_gguf: str | None = field(default=None, metadata={"help": "GGUF file inside `lm` (set automatically for smollm2)"})
    lm_config: dict | None = field(default=None, metadata={"help": "{'model_type': ..., **kwargs} for random init"})
    decoder_layers_attr: str | None = field(default=None, metadata={"help": "e.g. model.layers; found when None"})
    vision_encoder: str | None = field(default="efficientnet-lite0", metadata={"help": "image encoder name or None"})
    vis_dim: int = 1280
    n_visual_tokens: int = 49
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_dim_head: int = 64
    perceiver_latents: int = 64
    perceiver_ff_mult: float = 4
    perceiver_latents_in_keys: bool = field(default=True, metadata={
        "help": "the perceiver's latents attend to [image tokens; latents] (Flamingo, OpenFlamingo's checkpoints) "
                "or to the image tokens only (Perceiver; a model over one pooled token needs it to read the image)"})
    max_num_media: int | None = None
    max_num_frames: int | None = None
    cross_attn_every_n_layers: int = 1
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: float = 4
    only_attend_immediate_media: bool = True
    lm_training: str = field(default="full", metadata={
        "help": "which LM weights train: full (fine-tune all), frozen (OpenFlamingo: only perceiver, "
                "cross-attention and embeddings), lora (frozen LM + peft LoRA adapters on its linear layers)",
        "choices": list(LM_TRAINING)})
    train_embeddings: bool = field(default=True, metadata={
        "help": "with frozen/lora: the token embeddings (which hold the new identifier tokens) still train"})
    lora_rank: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = field(default="all-linear", metadata={
        "help": "peft target_modules: 'all-linear' (every linear layer but the output head) or names (q_proj, ...)"})
    output_head: str = field(default="full", metadata={
        "help": "full: the LM head over the whole vocabulary, log-softmax over it (masked by the trie); ids: the "
                "identifier head (grace.model.id_head), which scores and normalises over the identifier tokens "
                "only, in training and in decoding",
        "choices": ["full", "ids"]})
    identifier_token_ids: list[int] | None = field(default=None, metadata={
        "help": "output_head ids: the tokens it scores (set from the identifier tokenizer when None)"})
    vocab_size: int | None = None
    image_token_id: int | None = None
    eoc_token_id: int | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lm_training not in LM_TRAINING:
            raise GraceError(f"model config {self.name!r}: lm_training must be one of {', '.join(LM_TRAINING)} "
                             f"(got {self.lm_training!r})")
        if self.output_head not in ("full", "ids"):
            raise GraceError(f"model config {self.name!r}: output_head must be full or ids (got {self.output_head!r})")
        if self.lm_training == "lora" and self.lora_rank < 1:
            raise GraceError(f"model config {self.name!r}: lora_rank must be >= 1 (got {self.lora_rank})")

    def replace(self, **changes: Any) -> "FlamingoConfig":
        """A copy with ``changes`` (unknown keys → one-line error)."""
        values = dataclasses.asdict(self)
        values.update(changes)
        _upgrade_legacy_keys(values)
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
    _upgrade_legacy_keys(values)
    _drop_trust(values, source)
    return dataclass_from_dict(FlamingoConfig, values, source=source)


def _drop_trust(values: dict, source: str) -> None:
    """``trust_remote_code`` is the user's flag (``--trust-remote-code``), never a file's: a config or export
    that asks for it (older exports saved it) is read without it, and says so once."""
    if values.pop("trust_remote_code", False):
        import logging

        logging.getLogger(__name__).warning(
            "%s asks for trust_remote_code; ignored: a loaded file never runs its own code "
            "(pass --trust-remote-code to allow it)", source)


def _upgrade_legacy_keys(values: dict) -> None:
    """Exports written before ``lm_training`` existed carry ``freeze_lm`` (OpenFlamingo's flag): map it."""
    if "freeze_lm" in values:
        frozen = values.pop("freeze_lm")
        values.setdefault("lm_training", "frozen" if frozen else "full")

