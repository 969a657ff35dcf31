"""Released FLMR / PreFLMR checkpoints, in their published format, as late-interaction models.

A checkpoint folder (or hub id, e.g. ``LinWeizheDragon/PreFLMR_ViT-L``) is what ``FLMRModelForRetrieval``
saves: ``config.json`` (``model_type: flmr`` with ``text_config``, ``vision_config``, ``dim``,
``mapping_network_prefix_length``, the ``transformer_mapping_*`` settings of PreFLMR,
``mask_instruction_token``), ``model.safetensors`` (or ``pytorch_model.bin``, either possibly sharded), and
the ``query_tokenizer/`` and ``context_tokenizer/`` BERT tokenizers. The modules below carry the
published parameter names, so the weights load by name:

- ``{query,context}_text_encoder.bert_model``: BERT; ``..._text_encoder_linear``: hidden → ``dim``.
- ``{query,context}_vision_encoder.vision_model``: the CLIP vision tower; ``..._vision_projection``: the
  mapping network (Linear–Tanh–Linear) from the [CLS] state to ``mapping_network_prefix_length`` tokens.
- PreFLMR: ``transformer_mapping_input_linear`` → ``transformer_mapping_network`` (BERT layers whose
  cross-attention reads the first 32 query text states) → ``transformer_mapping_output_linear``, over the
  vision tower's second-last layer patch states.

Queries: ``[CLS] [unused0] text [SEP]`` padded with ``[MASK]`` to ``query_maxlen``; tokens up to the
instruction separator (``mask_instruction_token``) are zeroed; text tokens then mapped (then PreFLMR)
vision tokens. Documents: ``[CLS] [unused1] text [SEP]`` without punctuation; a document with an image
puts its mapped vision tokens first. Everything is L2-normalised, as in the published model.
"""

from __future__ import annotations

import copy
import json
import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from grace.errors import GraceError, InputError

log = logging.getLogger(__name__)
CHECKPOINT_FILES = ["config.json", "*.safetensors", "*.bin", "*.index.json", "query_tokenizer/*",
                    "context_tokenizer/*"]
TIED = ("text_encoder", "text_encoder_linear", "vision_encoder", "vision_projection")
#: saved names → ours: older transformers' nested CLIP tower; the official text encoder's alias of its BERT
ALIASES = ((".vision_model.vision_model.", ".vision_model."), ("_text_encoder.text_model.", "_text_encoder.bert_model."))


@dataclass
class FLMRSettings:
    """What the rest of grace reads from a checkpoint (``model.config``)."""

    fusion: str
    image_encoder: str
    dim: int
    query_maxlen: int
    doc_maxlen: int
    checkpoint: str


def _read_config(folder: Path) -> dict | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def is_flmr_checkpoint(path: str | Path | None) -> bool:
    """Whether ``path`` is a local folder holding an FLMR-format ``config.json``."""
    config = _read_config(Path(path)) if path else None
    return bool(config) and config.get("model_type") == "flmr"


def resolve_checkpoint(name: str | Path) -> Path:
    """A local checkpoint folder, or the hub snapshot of ``name`` (weights + both tokenizers)."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), allow_patterns=CHECKPOINT_FILES))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, bad id: one line naming it
        raise GraceError(f"cannot fetch FLMR checkpoint {str(name)!r} (not a local folder; hub: "
                         f"{type(exc).__name__}: {exc})".splitlines()[0]) from None


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` / ``pytorch_model.bin``, single file or sharded."""
    from safetensors.torch import load_file

    for single, index, loader in (("model.safetensors", "model.safetensors.index.json", load_file),
                                  ("pytorch_model.bin", "pytorch_model.bin.index.json",
                                   lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        if (folder / single).is_file():
            return loader(str(folder / single))
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(str(folder / shard)))
            return state
    raise InputError("no model.safetensors or pytorch_model.bin (sharded or not)", path=folder)


class _TextEncoder(nn.Module):
    """``FLMRTextModel``: BERT (+ the optional ``encode_proj`` of the pooled state, unused here)."""

    def __init__(self, config):
        super().__init__()
        from transformers import BertModel

        self.bert_model = BertModel(config, add_pooling_layer=True)
        if getattr(config, "projection_dim", 0) > 0:
            self.encode_proj = nn.Linear(config.hidden_size, config.projection_dim)

    def forward(self, input_ids, attention_mask):
        return self.bert_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _VisionEncoder(nn.Module):
    """``FLMRVisionModel``: the CLIP vision tower."""

    def __init__(self, config):
        super().__init__()
        from transformers import CLIPVisionModel

        self.vision_model = CLIPVisionModel(config)

    def forward(self, pixel_values):
        return self.vision_model(pixel_values=pixel_values, output_hidden_states=True)


class _MappingNetwork(nn.Module):
    """``FLMRMultiLayerPerceptron``: Linear–Tanh–Linear, [CLS] state → prefix tokens."""

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def _mapping_config(config: dict, text_config):
    """PreFLMR's shallow cross-attending BERT; its base config from the hub, else the text encoder's."""
    from transformers import BertConfig

    base = config.get("transformer_mapping_config_base") or "bert-base-uncased"
    try:
        mapping = BertConfig.from_pretrained(base)
    except OSError:
        from grace.fallbacks import record_fallback

        record_fallback("PreFLMR transformer-mapping config", base, "the text encoder's BERT config",
                        "cannot load it (offline?); the published checkpoints share it")
        mapping = BertConfig(**text_config.to_dict())
    if mapping.hidden_size != text_config.hidden_size:
        raise InputError(f"transformer mapping hidden size {mapping.hidden_size} != text encoder "
                         f"{text_config.hidden_size}: cross-attention needs them equal")
    mapping.num_hidden_layers = int(config["transformer_mapping_num_hidden_layers"])
    mapping.is_decoder, mapping.add_cross_attention = True, True
    return mapping


class FLMRCheckpointModel(nn.Module):
    """``FLMRModelForRetrieval`` weights behind grace's late-interaction model interface."""

    def __init__(self, config: dict, query_tokenizer, context_tokenizer, *, checkpoint: str = "",
                 query_maxlen: int | None = None, doc_maxlen: int | None = None):
        super().__init__()
        from transformers import BertConfig, CLIPVisionConfig

        self.raw_config = config
        base = config.get("text_config", {}).get("text_encoder_base_model", "bert-base-uncased")
        if base != "bert-base-uncased":
            raise InputError(f"text_encoder_base_model {base!r}: only FLMR's BERT text encoder (that of every "
                             "released checkpoint) is supported")
        text_config = BertConfig(**{k: v for k, v in config.get("text_config", {}).items() if k != "model_type"})
        vision_config = CLIPVisionConfig(**{k: v for k, v in config.get("vision_config", {}).items()
                                            if k != "model_type"})
        self.dim = int(config.get("dim", 128))
        self.prefix_length = int(config.get("mapping_network_prefix_length", 32))
        self.preflmr = bool(config.get("use_transformer_mapping_network", False))
        self.cross_attention_length = int(config.get("transformer_mapping_cross_attention_length", 32))

        self.context_text_encoder = _TextEncoder(text_config)
        self.context_text_encoder_linear = nn.Linear(text_config.hidden_size, self.dim, bias=False)
        self.context_vision_projection = _MappingNetwork(
            (vision_config.hidden_size, self.dim * self.prefix_length // 2, self.dim * self.prefix_length))
        self.has_vision_encoder = bool(config.get("use_vision_encoder", True))
        if self.has_vision_encoder:
            self.context_vision_encoder = _VisionEncoder(vision_config)
            if self.preflmr:
                mapping = _mapping_config(config, text_config)
                from transformers.models.bert.modeling_bert import BertEncoder

                self.transformer_mapping_input_linear = nn.Linear(vision_config.hidden_size, mapping.hidden_size)
                self.transformer_mapping_network = BertEncoder(mapping)
                self.transformer_mapping_output_linear = nn.Linear(mapping.hidden_size, self.dim)
        elif self.preflmr:
            raise InputError("a PreFLMR checkpoint (transformer mapping network) needs its vision encoder")
        for names, separate in ((("text_encoder", "text_encoder_linear"), "separate_query_and_context_text_encoder"),
                                (("vision_encoder", "vision_projection"), "separate_query_and_context_vision_encoder")):
            for name in names:
                if hasattr(self, f"context_{name}"):
                    module = getattr(self, f"context_{name}")
                    setattr(self, f"query_{name}", copy.deepcopy(module) if config.get(separate) else module)

        self.query_tokenizer, self.context_tokenizer = query_tokenizer, context_tokenizer
        # FLMR's BERT query tokenizer takes query_maxlen from its own tokenizer_config.json (default 32)
        self.query_maxlen = int(query_maxlen or getattr(query_tokenizer, "query_maxlen", 0) or 32)
        self.doc_maxlen = int(doc_maxlen or getattr(context_tokenizer, "doc_maxlen", 0) or 512)
        vocab = context_tokenizer.get_vocab()
        self.q_marker, self.d_marker = vocab["[unused0]"], vocab["[unused1]"]
        self.skiplist = torch.tensor(sorted({context_tokenizer.encode(s, add_special_tokens=False)[0]
                                             for s in string.punctuation}))
        token = config.get("mask_instruction_token")
        self.instruction_token_id = (query_tokenizer.encode(token, add_special_tokens=False)[0]
                                     if token else None)
        self.config = FLMRSettings(fusion="preflmr" if self.preflmr else "flmr",
                                   image_encoder=config.get("vision_model_version", "openai/clip-vit-base-patch32"),
                                   dim=self.dim, query_maxlen=self.query_maxlen, doc_maxlen=self.doc_maxlen,
                                   checkpoint=checkpoint)
        self._image_processor = None

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str | Path, **kw) -> FLMRCheckpointModel:
        """Load a released checkpoint (hub id or folder) with both tokenizers; unknown weights are an error."""
        from transformers import BertTokenizerFast

        folder = resolve_checkpoint(name)
        config = _read_config(folder)
        if not config or config.get("model_type") != "flmr":
            raise InputError("not an FLMR checkpoint (config.json lacks model_type 'flmr')", path=folder)
        tokenizers = []
        for sub in ("query_tokenizer", "context_tokenizer"):
            if not (folder / sub).is_dir():
                raise InputError(f"checkpoint has no {sub}/ folder", path=folder)
            extra = json.loads((folder / sub / "tokenizer_config.json").read_text()) \
                if (folder / sub / "tokenizer_config.json").is_file() else {}
            tokenizer = BertTokenizerFast.from_pretrained(str(folder / sub))
            tokenizer.query_maxlen, tokenizer.doc_maxlen = extra.get("query_maxlen"), extra.get("doc_maxlen")
            tokenizer.attend_to_mask_tokens = bool(extra.get("attend_to_mask_tokens", False))
            tokenizers.append(tokenizer)
        model = cls(config, *tokenizers, checkpoint=str(name), **kw)
        model.load_published_state(_load_weights(folder), source=folder)
        return model.eval()

    def load_published_state(self, state: dict[str, torch.Tensor], source: str | Path = "") -> None:
        """Copy published weights by name: tied query/context copies may be saved once, the
        ``vision_model.vision_model.`` nesting of older transformers maps onto the current CLIP tower, and the
        official ``FLMRTextModel``'s alias ``text_model`` (the same module as ``bert_model``, saved twice by
        ``save_pretrained(safe_serialization=False)``) is read as ``bert_model`` when the two copies agree."""
        own = self.state_dict()
        renamed: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.endswith("position_ids") or key.startswith("cls."):
                continue
            for old, new in ALIASES:
                key = key.replace(old, new) if key not in own and old in key else key
            if key not in own:
                raise InputError(f"checkpoint weight {key!r} has no place in this FLMR architecture", path=source)
            if key in renamed and not torch.equal(renamed[key], value):
                raise InputError(f"checkpoint holds two different copies of {key!r} (text_model and bert_model?)",
                                 path=source)
            renamed[key] = value
        for key in own:
            if key in renamed:
                continue
            head, _, rest = key.partition("_")
            twin, module = {"query": "context", "context": "query"}.get(head), rest.split(".")[0]
            if (twin and module in TIED and f"{twin}_{rest}" in renamed
                    and getattr(self, f"query_{module}") is getattr(self, f"context_{module}")):
                renamed[key] = renamed[f"{twin}_{rest}"]  # one tied module, saved under one name
        missing = [k for k in own if k not in renamed]
        if missing:
            raise InputError(f"{len(missing)} weights missing from the checkpoint, e.g. {missing[:3]}", path=source)
        for key, value in renamed.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise InputError(f"{key}: checkpoint {tuple(value.shape)} vs config {tuple(own[key].shape)}",
                                 path=source)
        self.load_state_dict(renamed, strict=True)

    # ---- tokenisation -------------------------------------------------------------------------------
    def tokenize_queries(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """``[CLS] [unused0] text [SEP]`` padded with ``[MASK]`` to ``query_maxlen``."""
        tok = self.query_tokenizer
        batch = tok([". " + (t or "") for t in texts], padding="max_length", truncation=True,
                    max_length=self.query_maxlen, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        ids[:, 1] = self.q_marker
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        if getattr(tok, "attend_to_mask_tokens", False):
            mask = torch.ones_like(mask)
        return {"input_ids": ids, "attention_mask": mask}

    def tokenize_docs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``[CLS] [unused1] text [SEP]`` truncated to ``doc_maxlen``; ``doc_mask`` drops punctuation/padding."""
        batch = self.context_tokenizer([". " + t for t in texts], padding="longest", truncation=True,
                                       max_length=self.doc_maxlen, return_tensors="pt")
        ids = batch["input_ids"]
        ids[:, 1] = self.d_marker
        keep = (ids != 0) & ~torch.isin(ids, self.skiplist)
        return {"input_ids": ids, "attention_mask": batch["attention_mask"], "doc_mask": keep}

    def query_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Tokens that score: not padding, and (PreFLMR) not the instruction before its separator."""
        keep = ids != 0
        if self.instruction_token_id is not None:
            found = ids == self.instruction_token_id
            sep = found.int().argmax(dim=1).clamp(min=1)
            if not bool(found.any(dim=1).all()):
                log.warning("a query has no instruction separator %r: nothing is masked but [CLS] [Q]",
                            self.raw_config.get("mask_instruction_token"))
            pos = torch.arange(ids.shape[1])[None]
            keep &= (pos > sep[:, None]) | (pos < 2)
        return keep

    # ---- images -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.context_text_encoder_linear.weight.device

    @property
    def image_processor(self):
        """The CLIP processor of ``vision_model_version`` (offline: CLIP's defaults at the tower's size)."""
        if self._image_processor is None:
            from transformers import CLIPImageProcessor

            try:
                self._image_processor = CLIPImageProcessor.from_pretrained(self.config.image_encoder)
            except (OSError, ValueError):
                size = self.context_vision_encoder.vision_model.config.image_size if self.has_vision_encoder else 224
                from grace.fallbacks import record_fallback

                record_fallback("FLMR image processor", str(self.config.image_encoder), f"CLIP defaults at {size} px",
                                "no image processor could be loaded (offline?)")
                self._image_processor = CLIPImageProcessor(size={"shortest_edge": size},
                                                           crop_size={"height": size, "width": size})
        return self._image_processor

    def prepare_images(self, images: Sequence) -> torch.Tensor:
        """(B, 3, H, W) pixel values of image paths or PIL images."""
        from grace.data_process.features import open_image

        pil = [open_image(i) if isinstance(i, (str, Path)) else i for i in images]
        return self.image_processor([p.convert("RGB") for p in pil], return_tensors="pt")["pixel_values"]

    def _vision_tokens(self, visual: torch.Tensor, text_hidden: torch.Tensor | None, projection, encoder
                       ) -> torch.Tensor:
        """Mapped (and, PreFLMR queries, transformer-mapped) vision tokens of pixels (B,3,H,W) or
        pre-extracted [CLS] features (B, Dv)."""
        visual = torch.as_tensor(visual).to(self.device, torch.float32)
        outputs = None
        if visual.dim() == 4:
            if not self.has_vision_encoder:
                raise InputError("this checkpoint has no vision encoder: give pre-extracted image features")
            outputs = encoder(visual)
            cls_state = outputs.last_hidden_state[:, 0]
        else:
            cls_state = visual.reshape(visual.shape[0], -1)
        mapped = projection(cls_state).view(visual.shape[0], -1, self.dim)
        if not (self.preflmr and text_hidden is not None):
            return mapped
        if outputs is None:
            raise InputError("PreFLMR queries need pixels (its mapping network reads the tower's patch states), "
                             "not pre-extracted features")
        patches = self.transformer_mapping_input_linear(outputs.hidden_states[-2][:, 1:])
        text_hidden = text_hidden[:, :self.cross_attention_length]
        zeros = patches.new_zeros
        mapped_patches = self.transformer_mapping_network(
            patches, attention_mask=zeros(patches.shape[0], 1, patches.shape[1], patches.shape[1]),
            encoder_hidden_states=text_hidden,
            encoder_attention_mask=zeros(patches.shape[0], 1, 1, text_hidden.shape[1])).last_hidden_state
        return torch.cat([mapped, self.transformer_mapping_output_linear(mapped_patches)], dim=1)

    # ---- encoders -----------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str | None], visual: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q (B, Lq, dim) normalised, mask): text tokens, then the image's (pixels or [CLS] features)."""
        batch = self.tokenize_queries(texts)
        ids = batch["input_ids"].to(self.device)
        hidden = self.query_text_encoder(ids, batch["attention_mask"].to(self.device))
        keep = self.query_mask(ids)
        q = self.query_text_encoder_linear(hidden) * keep[..., None]
        if visual is not None:
            v = self._vision_tokens(visual, hidden, self.query_vision_projection,
                                    getattr(self, "query_vision_encoder", None))
            q = torch.cat([q, v], dim=1)
            keep = torch.cat([keep, keep.new_ones(v.shape[:2])], dim=1)
        return F.normalize(q, dim=-1), keep

    def encode_docs(self, texts: Sequence[str], visual: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(D (B, Ld, dim) normalised, mask): the image's mapped tokens first (if any), then the text's."""
        batch = self.tokenize_docs(texts)
        hidden = self.context_text_encoder(batch["input_ids"].to(self.device),
                                           batch["attention_mask"].to(self.device))
        keep = batch["doc_mask"].to(self.device)
        d = self.context_text_encoder_linear(hidden) * keep[..., None]
        if visual is not None:
            v = self._vision_tokens(visual, None, self.context_vision_projection,
                                    getattr(self, "context_vision_encoder", None))
            d = torch.cat([v, d], dim=1)
            keep = torch.cat([keep.new_ones(v.shape[:2]), keep], dim=1)
        return F.normalize(d, dim=-1), keep
