"""One factory for every Flamingo config, and reloading an export without DeepSpeed."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grace.errors import GraceError, InputError
from grace.model.config import FlamingoConfig, resolve_config
from grace.model.export import (  # noqa: F401  (save_pretrained and the names are re-exported here)
    FEATURE_LAYOUT_NAME,
    LM_CONFIG_DIR,
    TOKENIZER_DIR,
    WEIGHTS_NAME,
    save_pretrained,
    storage_key,
)
from grace.model.flamingo import FlamingoModel

log = logging.getLogger(__name__)
_KEEP = object()


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise GraceError(f"unknown dtype {name!r} (use float32, bfloat16 or float16)")
    return dtype


def build_lm(config: FlamingoConfig, *, pretrained: bool = True, lm_config: Any = None,
             trust_remote_code: bool = False) -> nn.Module:
    """The causal LM: pretrained (SmolLM2 GGUF offline, or a hub id/dir) or randomly initialised from
    ``lm_config`` (a transformers config object, or the config's ``{'model_type': ..., ...}`` dict).
    ``trust_remote_code`` (the user's flag only) lets a hub LM run its own modelling code (e.g. MPT)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = _dtype(config.dtype)
    if lm_config is None and (not pretrained or config.lm == "random"):
        if not config.lm_config:
            raise GraceError(f"model config {config.name!r} has no lm_config for a randomly initialised LM")
        values = dict(config.lm_config)
        model_type = values.pop("model_type", None)
        if model_type is None:
            raise GraceError(f"model config {config.name!r}: lm_config needs a 'model_type' (e.g. llama)")
        lm_config = AutoConfig.for_model(model_type, **values)
    if lm_config is not None:
        return AutoModelForCausalLM.from_config(lm_config, dtype=dtype, trust_remote_code=trust_remote_code)
    source, gguf = config.lm, config.lm_gguf
    if source == "smollm2":
        from grace.data_process.encoders import smollm2_gguf

        directory, gguf = smollm2_gguf()
        source = str(directory)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise GraceError(f"cannot load language model {source!r} (offline? use lm='smollm2' or "
                         f"pretrained_lm=False): {str(exc).splitlines()[0]}") from None


def _token_fields(tokenizer: Any, vocab_size: int | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if tokenizer is not None:
        fields = {"vocab_size": len(tokenizer), "image_token_id": tokenizer.image_token_id,
                  "eoc_token_id": tokenizer.eoc_token_id, "pad_token_id": getattr(tokenizer, "pad_token_id", None)}
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return fields


def _vocab_rows(lm: nn.Module) -> int:
    """Rows of the input embedding (its full shape also when ZeRO-3 has partitioned it: ``ds_shape``)."""
    weight = lm.get_input_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def create_model(name_or_config: "str | Path | dict | FlamingoConfig" = "tiny", *, tokenizer: Any = None,
                 vocab_size: int | None = None, pretrained_lm: bool = True, vision_encoder: Any = _KEEP,
                 lm_config: Any = None, init_context: Any = None, trust_remote_code: bool = False,
                 **overrides: Any) -> FlamingoModel:
    """Build a :class:`FlamingoModel` from a packaged config name, JSON path, dict or config.

    ``tokenizer`` (an ``IdentifierTokenizer``) sets the vocabulary size and media token ids;
    ``pretrained_lm=False`` builds the LM from ``lm_config`` with random weights; ``vision_encoder``
    passes a ready module (or None) instead of the config's encoder; ``init_context()`` is entered while the
    new Flamingo modules are built (e.g. ``deepspeed.zero.Init``); ``trust_remote_code`` is the user's flag
    (:func:`build_lm`); ``overrides`` are config fields.
    """
    config = resolve_config(name_or_config, **overrides, **_token_fields(tokenizer, vocab_size))
    if config.image_token_id is None:
        raise GraceError("create_model needs tokenizer= (an IdentifierTokenizer) or image_token_id=")
    if config.output_head == "ids" and not config.identifier_token_ids:
        if tokenizer is None:
            raise GraceError("output_head ids needs the identifier tokens: pass tokenizer= (an IdentifierTokenizer) "
                             "or identifier_token_ids=")
        config = dataclasses.replace(config, identifier_token_ids=tokenizer.identifier_token_ids())
    if vision_encoder is _KEEP:
        vision_encoder = None
        if config.vision_encoder:
            from grace.model.vision import create_vision_encoder

            vision_encoder = create_vision_encoder(config.vision_encoder)
    if vision_encoder is not None and getattr(vision_encoder, "dim", config.vis_dim) != config.vis_dim:
        raise GraceError(f"vision encoder {config.vision_encoder!r} gives {vision_encoder.dim}-d tokens but "
                         f"vis_dim is {config.vis_dim}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        lm = build_lm(config, pretrained=pretrained_lm, lm_config=lm_config, trust_remote_code=trust_remote_code)
        if config.vocab_size is not None and config.vocab_size != _vocab_rows(lm):
            resize_embeddings(lm, config.vocab_size, seed=config.seed)
        config = dataclasses.replace(config, vocab_size=_vocab_rows(lm))
        if config.image_token_id >= config.vocab_size:
            raise GraceError(f"image_token_id {config.image_token_id} is outside the vocabulary ({config.vocab_size})")
        if config.lm_training == "lora":
            add_lora_adapters(lm, config)
        torch.manual_seed(config.seed + 1)  # the new modules' init must not depend on how the LM used the RNG
        with init_context() if init_context is not None else contextlib.nullcontext():
            model = FlamingoModel(config, lm, vision_encoder)
    if any(p.dtype != _dtype(config.dtype) for p in model.parameters()):
        model.to(_dtype(config.dtype))
    apply_trainable_parts(model)
    return model


def resize_embeddings(lm: nn.Module, rows: int, *, seed: int) -> None:
    """Resize the LM's token embeddings (and an untied output head) to ``rows``; new rows (the identifier and
    media tokens) are drawn from N(0, initializer_range) by a seeded generator, the same with or without
    ZeRO-3 partitions (gathered on rank 0 here, where transformers would leave them at N(0, 1))."""
    old = _vocab_rows(lm)
    lm.resize_token_embeddings(rows, mean_resizing=False)
    if rows <= old:
        return
    std = float(getattr(lm.config.get_text_config(), "initializer_range", 0.02))
    weights = {id(m.weight): m.weight for m in (lm.get_input_embeddings(), lm.get_output_embeddings())
               if m is not None and getattr(m, "weight", None) is not None}
    generator = torch.Generator().manual_seed(seed)
    for weight in weights.values():
        zero3 = hasattr(weight, "ds_id")
        gather = contextlib.nullcontext()
        if zero3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters([weight], modifier_rank=0)
        with gather, torch.no_grad():
            if not zero3 or torch.distributed.get_rank() == 0:
                new = torch.randn(rows - old, weight.shape[1], generator=generator) * std
                weight[old:].copy_(new.to(weight.dtype))


def add_lora_adapters(lm: nn.Module, config: FlamingoConfig) -> None:
    """Inject peft LoRA adapters (``lora_A``/``lora_B``) into the bare LM's linear layers, in place and before
    the cross-attention is inserted, so ``all-linear`` never wraps our own layers."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise GraceError("lm_training=lora needs peft: pip install 'grace[train]' (or pip install peft)") from None
    targets = config.lora_target_modules
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets if isinstance(targets, str) else list(targets), bias="none")
    try:
        inject_adapter_in_model(lora, lm)
    except ValueError as exc:  # e.g. target modules not found in this LM
        raise GraceError(f"model config {config.name!r}: cannot add LoRA adapters: {exc}") from None


def merge_lora_adapters(model: nn.Module) -> int:
    """Fold every LoRA adapter into its base weight (inference: no extra matmuls); returns how many merged."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return 0
    merged = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            module.merge()
            merged += 1
    return merged


def apply_trainable_parts(model: FlamingoModel) -> None:
    """Set ``requires_grad`` by ``lm_training``. Perceiver and cross-attention always train, the vision
    encoder never; ``full`` trains the whole LM; ``frozen`` (OpenFlamingo) and ``lora`` freeze its weights but
    train the token embeddings (``train_embeddings``: they hold the identifier tokens) and the LoRA adapters."""
    cfg = model.config
    model.requires_grad_(True)
    if model.vision_encoder is not None:
        model.vision_encoder.requires_grad_(False)
    if cfg.lm_training == "full":
        return
    model.lang_encoder.requires_grad_(False)
    model.gated_cross_attn_layers.requires_grad_(True)
    if cfg.train_embeddings:
        model.lang_encoder.get_input_embeddings().requires_grad_(True)
        out = model.lang_encoder.get_output_embeddings()
        if out is not None:
            out.requires_grad_(True)
    if cfg.lm_training == "lora":
        for name, param in model.lang_encoder.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)


def check_feature_layout(config: FlamingoConfig, layout: dict, source: Any) -> None:
    """One-line error when the visual features a model was trained on (``layout``: ``n_visual_tokens``,
    ``vis_dim``) differ from its config: its null image would differ between training and inference."""
    for key in ("n_visual_tokens", "vis_dim"):
        if key in layout and int(layout[key]) != int(getattr(config, key)):
            raise InputError(f"the model was trained on features with {key}={layout[key]} but its config says "
                             f"{key}={getattr(config, key)}: the export is inconsistent", path=source)


def load_pretrained(directory: "str | Path", *, device: "str | torch.device" = "cpu",
                    vision_encoder: Any = _KEEP, merge_lora: bool = True,
                    trust_remote_code: bool = False) -> tuple[FlamingoModel, Any]:
    """Reload an export: ``(model, IdentifierTokenizer or None)``; no DeepSpeed, no hub access for the LM.
    A LoRA-trained export is loaded with its adapters, then (``merge_lora``) folded into the LM weights.
    Its LM config runs code from the export only under ``trust_remote_code`` (the user's flag, never the file's)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from grace.io_utils import read_json

    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"no {WEIGHTS_NAME}: not a grace model export", path=directory)
    if not (directory / "config.json").is_file():
        raise InputError("no config.json: not a grace model export", path=directory)
    config = resolve_config(directory / "config.json")
    if (directory / FEATURE_LAYOUT_NAME).is_file():
        check_feature_layout(config, read_json(directory / FEATURE_LAYOUT_NAME), directory / FEATURE_LAYOUT_NAME)
    lm_config = AutoConfig.from_pretrained(directory / LM_CONFIG_DIR, trust_remote_code=trust_remote_code)
    model = create_model(config, pretrained_lm=False, lm_config=lm_config, vision_encoder=vision_encoder,
                         trust_remote_code=trust_remote_code)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise InputError(f"cannot read weights: {str(exc).splitlines()[0]}", path=weights) from None
    load_state(model, state, source=weights)
    if merge_lora:
        merge_lora_adapters(model)
    tokenizer = None
    if (directory / TOKENIZER_DIR).is_dir():
        try:
            from grace.identifiers.tokenization import IdentifierTokenizer
        except ImportError as exc:
            raise GraceError(f"{directory / TOKENIZER_DIR}: cannot load the tokenizer ({exc})") from None
        tokenizer = IdentifierTokenizer.load(directory / TOKENIZER_DIR)
    return model.to(device).eval(), tokenizer


def load_state(model: FlamingoModel, state: dict[str, torch.Tensor], *, source: Any = "state dict") -> None:
    """Load our export or an OpenFlamingo checkpoint (same key layout; aliases and the frozen vision
    encoder may be absent). Raises on unexpected keys or on any missing non-alias parameter."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise InputError(f"unexpected keys {result.unexpected_keys[:5]} (of {len(result.unexpected_keys)})",
                         path=source)
    current = model.state_dict()
    covered = {storage_key(t) for n, t in current.items() if n in state}
    missing = [n for n in result.missing_keys
               if not n.startswith("vision_encoder.") and storage_key(current[n]) not in covered]
    if missing:
        raise InputError(f"missing weights {missing[:5]} (of {len(missing)})", path=source)
