"""``FlamingoModel``: frozen vision encoder → perceiver resampler → gated cross-attention inserted before
every N-th decoder layer of any Hugging Face causal LM, laid out like OpenFlamingo's ``Flamingo``.

Media masking follows OpenFlamingo: each text token sees only the visual latents of the most recent
preceding ``<image>`` token (tokens before any image see none). The LM's decoder-layer list is replaced by
``FlamingoLayer`` wrappers (``.gated_cross_attn_layer`` + ``.decoder_layer``) and the LM also registers
``gated_cross_attn_layers`` and ``old_decoder_blocks``, so state-dict keys match OpenFlamingo checkpoints.

Conditioning is per call: ``forward``/``generate`` set the visual latents on a shared state; a forward
pre-hook on the LM derives every token's image index from its ``input_ids`` plus the image count carried
on the KV cache (attribute ``_grace_media_count``), so incremental decoding — ours, or HF ``generate`` with
greedy/beam search — keeps attending to the last ``<image>`` of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from grace.errors import GraceError
from grace.hf_compat import cache_from_kwargs, cache_kwarg, output_cache, takes_logits_to_keep
from grace.model.config import FlamingoConfig
from grace.model.export import save_pretrained
from grace.model.id_head import IdentifierHead, identifier_head, install_identifier_head
from grace.model.modules import GatedCrossAttentionBlock, PerceiverResampler

MEDIA_COUNT_ATTR = "_grace_media_count"
_LAYER_PATHS = ("model.layers", "transformer.h", "transformer.blocks", "gpt_neox.layers", "model.decoder.layers",
                "transformer.layers", "model.language_model.layers")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set_path(obj: Any, path: str, value: Any) -> None:
    head, _, last = path.rpartition(".")
    setattr(_get_path(obj, head) if head else obj, last, value)


def find_decoder_layers(lm: nn.Module, attr: str | None = None) -> str:
    """Dotted path of the LM's decoder-layer ``ModuleList`` (known names first, then the first ModuleList
    whose length is the config's layer count)."""
    candidates = [attr] if attr else list(_LAYER_PATHS)
    for path in candidates:
        try:
            layers = _get_path(lm, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path
    if attr:
        raise GraceError(f"decoder_layers_attr {attr!r} is not a ModuleList of {type(lm).__name__}")
    n_layers = getattr(lm.config.get_text_config(), "num_hidden_layers", None)
    for name, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and name:
            return name
    raise GraceError(f"cannot find the decoder layers of {type(lm).__name__}; set decoder_layers_attr")


class CrossAttentionCache:
    """Keys and values of every gated cross-attention layer, computed from the visual latents on the first
    call and reused after: a decoder that keeps each row's image fixed across steps (beam search: beams of
    one query share its image) passes one through ``FlamingoModel.forward(xattn_cache=...)``."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, layer: nn.Module, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = id(layer)
        if key not in self.kv:
            self.kv[key] = layer.attn.media_kv(media)
        return self.kv[key]

    def repeat_interleave(self, repeats: int) -> None:
        """Expand every entry from one row per query to ``repeats`` contiguous rows (the beams)."""
        self.kv = {key: (k.repeat_interleave(repeats, 0), v.repeat_interleave(repeats, 0))
                   for key, (k, v) in self.kv.items()}


@dataclass
class _MediaState:
    """What the wrapped layers read during one LM call."""

    media: torch.Tensor | None = None  # (B, T_img, n_latents, vis_dim)
    text_time: torch.Tensor | None = None  # (B, L) 1-based image index per token, 0 = none
    xattn_cache: CrossAttentionCache | None = None


class FlamingoLayer(nn.Module):
    """Gated cross-attention (when present) then the original decoder layer (OpenFlamingo's names)."""

    def __init__(self, gated_cross_attn_layer: GatedCrossAttentionBlock | None, decoder_layer: nn.Module,
                 state: _MediaState):
        super().__init__()
        self.gated_cross_attn_layer = gated_cross_attn_layer
        self.decoder_layer = decoder_layer
        self._state = state
        self.checkpoint_xattn = False

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        state = self._state
        if self.gated_cross_attn_layer is not None and state.media is not None:
            media = state.media.to(hidden_states.dtype)
            if self.checkpoint_xattn and self.training and torch.is_grad_enabled():
                hidden_states = checkpoint(self.gated_cross_attn_layer, hidden_states, media, state.text_time,
                                           use_reentrant=False)
            else:
                kv = state.xattn_cache.get(self.gated_cross_attn_layer, media) if state.xattn_cache else None
                hidden_states = self.gated_cross_attn_layer(hidden_states, media, state.text_time, kv)
        return self.decoder_layer(hidden_states, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # LMs may read per-layer attributes (e.g. attention_type)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("decoder_layer", "_modules"):
                raise
            return getattr(self._modules["decoder_layer"], name)


def _labelled_tail(labels: torch.Tensor) -> int:
    """How many last positions hold every label (+1 for the shift); 0 when that is the whole row."""
    labelled = (labels != -100).any(0).nonzero()
    if labelled.numel() == 0:
        return 0
    keep = labels.shape[1] - int(labelled[0]) + 1
    return keep if keep < labels.shape[1] else 0


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` (B, K, V) against ``labels`` (B, K), mean over labelled tokens
    (what transformers computes with ``labels=``)."""
    return nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                                       ignore_index=-100)


def _expand_rows(x: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    """Repeat-interleave a per-query tensor to ``rows`` (beam/sample expansion keeps queries contiguous)."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise GraceError(f"{what} has batch {x.shape[0]} but the text batch is {rows}")
    return x.repeat_interleave(rows // x.shape[0], dim=0)


class FlamingoModel(nn.Module):
    """Flamingo over a Hugging Face causal LM. ``config`` is the :class:`FlamingoConfig` (``vocab_size`` set)."""

    def __init__(self, config: FlamingoConfig, lang_encoder: nn.Module, vision_encoder: nn.Module | None = None):
        super().__init__()
        if config.image_token_id is None:
            raise GraceError("FlamingoConfig.image_token_id is required (pass tokenizer= or image_token_id=)")
        self.config = config
        self.vision_encoder = vision_encoder.eval().requires_grad_(False) if vision_encoder is not None else None
        self.perceiver = PerceiverResampler(
            dim=config.vis_dim, depth=config.perceiver_depth, dim_head=config.perceiver_dim_head,
            heads=config.perceiver_heads, num_latents=config.perceiver_latents, max_num_media=config.max_num_media,
            max_num_frames=config.max_num_frames, ff_mult=config.perceiver_ff_mult,
            latents_in_keys=config.perceiver_latents_in_keys)
        self.lang_encoder = lang_encoder
        self.decoder_layers_attr = find_decoder_layers(lang_encoder, config.decoder_layers_attr)
        self._state = _MediaState()
        self._checkpoint_perceiver = False
        self._wrap_layers()
        if config.output_head == "ids":
            if not config.identifier_token_ids:
                raise GraceError("output_head ids needs identifier_token_ids (create_model sets them from the tokenizer)")
            install_identifier_head(lang_encoder, config.identifier_token_ids)
        lang_encoder.register_forward_pre_hook(self._before_lm, with_kwargs=True)
        lang_encoder.register_forward_hook(self._after_lm, with_kwargs=True)

    # ----------------------------------------------------------------------------------------- structure
    def _wrap_layers(self) -> None:
        lm, cfg = self.lang_encoder, self.config
        old = _get_path(lm, self.decoder_layers_attr)
        dim = lm.config.get_text_config().hidden_size
        every = cfg.cross_attn_every_n_layers
        xattn = nn.ModuleList(
            GatedCrossAttentionBlock(dim=dim, dim_visual=cfg.vis_dim, dim_head=cfg.xattn_dim_head,
                                     heads=cfg.xattn_heads, ff_mult=cfg.xattn_ff_mult,
                                     only_attend_immediate_media=cfg.only_attend_immediate_media)
            if (i + 1) % every == 0 else None
            for i in range(len(old)))
        lm.add_module("old_decoder_blocks", old)
        lm.add_module("gated_cross_attn_layers", xattn)
        _set_path(lm, self.decoder_layers_attr,
                  nn.ModuleList(FlamingoLayer(x, layer, self._state) for x, layer in zip(xattn, old)))

    @property
    def gated_cross_attn_layers(self) -> nn.ModuleList:
        return self.lang_encoder.gated_cross_attn_layers

    @property
    def identifier_head(self) -> IdentifierHead | None:
        """The LM's identifier head (``output_head`` ids), or None: its logits span the whole vocabulary."""
        return identifier_head(self.lang_encoder)

    @property
    def device(self) -> torch.device:
        return self.perceiver.latents.device

    # ------------------------------------------------------------------------------------------- vision
    def null_vision_features(self, batch_size: int, num_images: int = 1) -> torch.Tensor:
        """The *null image*: zero features (B, num_images, n_visual_tokens, vis_dim) for text-only queries."""
        return torch.zeros(batch_size, num_images, self.config.n_visual_tokens, self.config.vis_dim,
                           device=self.device, dtype=self.perceiver.latents.dtype)

    def encode_vision(self, *, vision_x: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                      batch_size: int | None = None) -> torch.Tensor:
        """Pixels (B, T, F, 3, H, W) or encoder tokens (B, T, n, D) → perceiver latents (B, T, n_latents, D).
        Without either, the null image's latents: computed on one row and expanded to ``batch_size``."""
        if vision_features is not None:
            if vision_features.dim() != 4 or vision_features.shape[-1] != self.config.vis_dim:
                raise GraceError(f"vision_features must be (B, T_img, n_tokens, {self.config.vis_dim}); "
                                 f"got {tuple(vision_features.shape)}")
            feats = vision_features.unsqueeze(2)
        elif vision_x is not None:
            if self.vision_encoder is None:
                raise GraceError("this model has no vision encoder: pass vision_features (precomputed tokens)")
            if vision_x.dim() != 6:
                raise GraceError(f"vision_x must be (B, T_img, F, 3, H, W); got {tuple(vision_x.shape)}")
            b, t, f = vision_x.shape[:3]
            with torch.no_grad():
                tokens = self.vision_encoder(vision_x.flatten(0, 2))
            feats = tokens.reshape(b, t, f, *tokens.shape[1:])
        else:
            feats = self.null_vision_features(1).unsqueeze(2)
        feats = feats.to(device=self.device, dtype=self.perceiver.latents.dtype)
        if vision_features is None and vision_x is None:
            return self._resample(feats).expand(batch_size or 1, -1, -1, -1)
        return self._resample(feats)

    def _resample(self, feats: torch.Tensor) -> torch.Tensor:
        if self._checkpoint_perceiver and self.training and torch.is_grad_enabled():
            return checkpoint(self.perceiver, feats, use_reentrant=False)
        return self.perceiver(feats)

    # ------------------------------------------------------------------------------- conditioning hooks
    def _before_lm(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        state = self._state
        if state.media is None:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = cache_from_kwargs(kwargs)
        if input_ids is None:
            embeds = kwargs["inputs_embeds"]
            rows, length, new_images = embeds.shape[0], embeds.shape[1], None
        else:
            rows, length = input_ids.shape
            new_images = (input_ids == self.config.image_token_id).long().cumsum(-1)
        state.media = _expand_rows(state.media, rows, "vision input")
        prior = getattr(cache, MEDIA_COUNT_ATTR, None) if cache is not None else None  # set by our last call
        if prior is not None:
            prior = _expand_rows(prior, rows, "cache")
        elif cache is not None and cache.get_seq_length() > 0:
            # a cache we did not fill: OpenFlamingo's rule, continue after the last image
            prior = torch.full((rows,), state.media.shape[1], dtype=torch.long)
        text_time = torch.zeros(rows, length, dtype=torch.long, device=state.media.device)
        if prior is not None:
            text_time += prior.to(text_time.device)[:, None]
        if new_images is not None:
            text_time += new_images.to(text_time.device)
        state.text_time = text_time.clamp(max=state.media.shape[1])

    def _after_lm(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        cache = output_cache(output)
        if cache is not None and self._state.text_time is not None:
            setattr(cache, MEDIA_COUNT_ATTR, self._state.text_time[:, -1].detach())

    def _condition(self, vision_x, vision_features, batch_size: int, media: torch.Tensor | None = None,
                   xattn_cache: CrossAttentionCache | None = None) -> None:
        if media is not None and (vision_x is not None or vision_features is not None):
            raise GraceError("pass the visual latents (media) or the vision inputs, not both")
        self._state.media = media if media is not None else self.encode_vision(
            vision_x=vision_x, vision_features=vision_features, batch_size=batch_size)
        self._state.text_time = None
        self._state.xattn_cache = xattn_cache

    def _clear(self) -> None:
        self._state.media = None
        self._state.text_time = None
        self._state.xattn_cache = None

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, *, lang_x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                vision_x: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, past_key_values: Any = None, use_cache: bool = False,
                position_ids: torch.Tensor | None = None, media: torch.Tensor | None = None,
                xattn_cache: CrossAttentionCache | None = None, **lm_kwargs: Any):
        """Logits (and loss with ``labels``) as a transformers ``CausalLMOutputWithPast``.

        Without vision inputs the null image is used. With ``past_key_values``, pass only the new tokens
        and the same vision inputs: they attend to the last ``<image>`` seen so far in their row. A decoder
        may pass the perceiver's output once computed (``media``, from :meth:`encode_vision`) and a
        :class:`CrossAttentionCache` that keeps every cross-attention layer's keys/values across calls.
        With the identifier head (``output_head`` ids) the logits are its columns (``identifier_head.token_ids``)
        and ``labels`` (token ids) must all be identifier tokens.
        """
        self._condition(vision_x, vision_features, lang_x.shape[0], media, xattn_cache)
        try:
            lm_kwargs[cache_kwarg(self.lang_encoder)] = past_key_values
            head = self.identifier_head
            if labels is not None and head is not None:  # the loss over the identifier columns
                labels = head.columns(labels)
            keep = _labelled_tail(labels) if labels is not None and takes_logits_to_keep(self.lang_encoder) else 0
            if keep or (labels is not None and head is not None):
                # logits (and the softmax) only where the loss needs them, and the loss computed here
                if keep:
                    lm_kwargs["logits_to_keep"] = keep
                output = self.lang_encoder(input_ids=lang_x, attention_mask=attention_mask, use_cache=use_cache,
                                           position_ids=position_ids, **lm_kwargs)
                output.loss = causal_lm_loss(output.logits, labels[:, -keep:] if keep else labels)
                return output
            return self.lang_encoder(input_ids=lang_x, attention_mask=attention_mask, labels=labels,
                                     use_cache=use_cache, position_ids=position_ids, **lm_kwargs)
        finally:
            self._clear()

    @torch.no_grad()
    def generate(self, lang_x: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 vision_x: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                 **generate_kwargs: Any) -> Any:
        """HF ``generate`` on the LM (greedy, beam search, logits processors, prefix_allowed_tokens_fn)."""
        from transformers import DynamicCache

        if self.identifier_head is not None:
            raise GraceError("generate() decodes over the whole vocabulary but this model has the identifier head "
                             "(output_head ids): decode with grace.infer.beam_search")
        self._condition(vision_x, vision_features, lang_x.shape[0])
        generate_kwargs.setdefault("pad_token_id", self.config.pad_token_id)
        if generate_kwargs.get("use_cache", True):
            if cache_from_kwargs(generate_kwargs) is None:
                generate_kwargs[cache_kwarg(self.lang_encoder)] = DynamicCache()
        try:
            return self.lang_encoder.generate(input_ids=lang_x, attention_mask=attention_mask, **generate_kwargs)
        finally:
            self._clear()

    # ---------------------------------------------------------------------------------------- training
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (each once; the vision encoder is never among them)."""
        return [p for p in self.parameters() if p.requires_grad]

    def gradient_checkpointing_enable(self) -> None:
        """Checkpoint the LM's decoder layers, the cross-attention blocks and the perceiver."""
        lm = self.lang_encoder
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x name
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._checkpoint_perceiver = True
        for layer in _get_path(self.lang_encoder, self.decoder_layers_attr):
            layer.checkpoint_xattn = True

    def save_pretrained(self, directory: Any, tokenizer: Any = None) -> Any:
        """Export safetensors + config.json (+ lm/ config, + tokenizer/); see :func:`grace.model.save_pretrained`."""
        return save_pretrained(self, directory, tokenizer=tokenizer)

    def train(self, mode: bool = True) -> "FlamingoModel":
        """Train mode everywhere except the (frozen) vision encoder."""
        super().train(mode)
        if self.vision_encoder is not None:
            self.vision_encoder.eval()
        return self


def language_model(model: Any) -> Any:
    """The language model a decoder steps and whose head it reads: a :class:`FlamingoModel`'s ``lang_encoder``,
    or ``model`` itself (any Hugging Face causal LM)."""
    return model.lang_encoder if isinstance(model, FlamingoModel) else model
