"""The Flamingo MLLM: pluggable vision encoder → perceiver resampler → gated cross-attention in any HF
causal LM (OpenFlamingo parameter layout; works with transformers 5 ``generate``)."""

from grace.model.config import FlamingoConfig, available_configs
from grace.model.factory import create_model, load_pretrained, load_state, save_pretrained
from grace.model.flamingo import FlamingoModel

__all__ = ["FlamingoConfig", "FlamingoModel", "available_configs", "create_model", "load_pretrained",
           "load_state", "save_pretrained"]
