"""The export layout (``model.safetensors``, ``config.json``, ``lm/``, ``tokenizer/``) and its writer.

Below both :mod:`grace.model.flamingo` (whose ``FlamingoModel.save_pretrained`` calls it) and
:mod:`grace.model.factory` (which reloads exports), so it never imports either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_NAME = "model.safetensors"
LM_CONFIG_DIR = "lm"
TOKENIZER_DIR = "tokenizer"
FEATURE_LAYOUT_NAME = "feature_layout.json"
#: a model whose t2id rows read their text's embedding (``grace.train.data.TextMedia``): the feature layout's
#: key naming the text tower, and the export folder that holds its copy (queries are embedded by it)
QUERY_MEDIA_KEY = "query_media"
QUERY_ENCODER_DIR = "query_encoder"


def storage_key(tensor: torch.Tensor) -> tuple:
    """Identifies tensors that alias one parameter (OpenFlamingo registers each layer twice)."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)


def unique_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """State dict without the vision encoder (rebuilt from its name) and without aliases of one tensor."""
    seen: set[tuple] = set()
    out = {}
    for name, tensor in (model.state_dict() if state is None else state).items():
        if name.startswith("vision_encoder."):
            continue
        key = storage_key(tensor)
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def save_pretrained(model: nn.Module, directory: str | Path, tokenizer: Any = None,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Export a ``FlamingoModel`` to ``directory/{model.safetensors, config.json, lm/config.json, tokenizer/}``,
    each written atomically; ``state`` replaces ``model.state_dict()`` (e.g. one gathered from ZeRO-3 partitions)."""
    from safetensors.torch import save_file

    from grace.io_utils import atomic_path, save_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(unique_state(model, state), str(tmp), metadata={"format": "pt"})
    model.lang_encoder.config.save_pretrained(directory / LM_CONFIG_DIR)
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_DIR)
    save_config(directory, model.config)
    return directory
