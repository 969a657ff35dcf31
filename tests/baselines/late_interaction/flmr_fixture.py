"""A tiny random FLMR / PreFLMR checkpoint written in the published ``FLMRModelForRetrieval`` layout, and an
independent reference of its query / document encoders built from plain transformers modules.

The weights are made here (plain ``BertModel`` / ``CLIPVisionModel`` / ``BertEncoder`` / ``nn.Linear``) and
saved under the published parameter names: the CLIP tower nested as ``vision_model.vision_model.`` (as
transformers 4.x saved it), tied query/context modules saved once, ``query_tokenizer/`` and
``context_tokenizer/`` subfolders with a BERT ``vocab.txt``.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

DIM, PREFIX, QUERY_MAXLEN, CROSS_LEN = 16, 4, 16, 8
TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VISION = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
              "patch_size": 8, "projection_dim": 16}
INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question:"


class Reference(nn.Module):
    """The modules of one checkpoint, and FLMR's forward written out step by step."""

    def __init__(self, vocab_size: int, preflmr: bool, seed: int):
        super().__init__()
        from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel
        from transformers.models.bert.modeling_bert import BertEncoder

        torch.manual_seed(seed)
        self.text_config = BertConfig(vocab_size=vocab_size, **TEXT)
        self.bert = BertModel(self.text_config, add_pooling_layer=True).eval()
        self.linear = nn.Linear(TEXT["hidden_size"], DIM, bias=False)
        self.clip = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
        hid = VISION["hidden_size"]
        self.mlp = nn.Sequential(nn.Linear(hid, DIM * PREFIX // 2), nn.Tanh(), nn.Linear(DIM * PREFIX // 2, DIM * PREFIX))
        self.preflmr = preflmr
        if preflmr:
            mapping = BertConfig(vocab_size=vocab_size, **{**TEXT, "num_hidden_layers": 1}, is_decoder=True,
                                 add_cross_attention=True)
            self.map_in = nn.Linear(hid, TEXT["hidden_size"])
            self.map_net = BertEncoder(mapping).eval()
            self.map_out = nn.Linear(TEXT["hidden_size"], DIM)

    def published_state(self, keep: str) -> dict[str, torch.Tensor]:
        """State dict under the published names; tied modules only under ``keep`` (query or context)."""
        state = {}
        parts = {"text_encoder.bert_model": self.bert, "text_encoder_linear": self.linear,
                 "vision_encoder.vision_model.vision_model": self.clip, "vision_projection.model": self.mlp}
        for name, module in parts.items():
            for key, value in module.state_dict().items():
                state[f"{keep}_{name}.{key}"] = value.clone()
        if self.preflmr:
            for name, module in (("transformer_mapping_input_linear", self.map_in),
                                 ("transformer_mapping_network", self.map_net),
                                 ("transformer_mapping_output_linear", self.map_out)):
                for key, value in module.state_dict().items():
                    state[f"{name}.{key}"] = value.clone()
        return state

    @torch.no_grad()
    def query(self, tokenizer, texts, pixels=None, features=None, instruction_id=None):
        ids = tokenizer([". " + t for t in texts], padding="max_length", truncation=True, max_length=QUERY_MAXLEN,
                        return_tensors="pt")
        ids, att = ids["input_ids"], ids["attention_mask"]
        ids[:, 1] = tokenizer.convert_tokens_to_ids("[unused0]")
        ids[ids == tokenizer.pad_token_id] = tokenizer.mask_token_id
        hidden = self.bert(input_ids=ids, attention_mask=att).last_hidden_state
        mask = ids != 0
        if instruction_id is not None:
            sep = (ids == instruction_id).int().argmax(1)
            pos = torch.arange(ids.shape[1])[None]
            mask &= (pos > sep[:, None]) | (pos < 2)
        q = self.linear(hidden) * mask[..., None]
        if pixels is not None or features is not None:
            out = self.clip(pixel_values=pixels, output_hidden_states=True) if pixels is not None else None
            cls = out.last_hidden_state[:, 0] if out is not None else features
            v = self.mlp(cls).view(len(texts), -1, DIM)
            if self.preflmr:
                p = self.map_in(out.hidden_states[-2][:, 1:])
                enc = hidden[:, :CROSS_LEN]
                m = self.map_net(p, attention_mask=torch.zeros(len(texts), 1, p.shape[1], p.shape[1]),
                                 encoder_hidden_states=enc,
                                 encoder_attention_mask=torch.zeros(len(texts), 1, 1, enc.shape[1])).last_hidden_state
                v = torch.cat([v, self.map_out(m)], 1)
            q = torch.cat([q, v], 1)
        return F.normalize(q, dim=-1)

    @torch.no_grad()
    def doc(self, tokenizer, texts, features=None):
        batch = tokenizer([". " + t for t in texts], padding="longest", truncation=True, max_length=512,
                          return_tensors="pt")
        ids = batch["input_ids"]
        ids[:, 1] = tokenizer.convert_tokens_to_ids("[unused1]")
        skip = {tokenizer.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
        keep = torch.tensor([[x != 0 and x not in skip for x in row] for row in ids.tolist()])
        d = self.linear(self.bert(input_ids=ids, attention_mask=batch["attention_mask"]).last_hidden_state)
        d = d * keep[..., None]
        if features is not None:
            d = torch.cat([self.mlp(features).view(len(texts), -1, DIM), d], 1)
            keep = torch.cat([torch.ones(len(texts), PREFIX, dtype=torch.bool), keep], 1)
        return F.normalize(d, dim=-1), keep


def write_flmr_checkpoint(folder: Path, *, preflmr: bool = False, keep: str = "query", seed: int = 0,
                          fmt: str = "safetensors") -> Reference:
    """Write the checkpoint under ``folder`` and return its reference modules."""
    from safetensors.torch import save_file

    from grace.data_process.encoders import minilm_dir

    folder.mkdir(parents=True, exist_ok=True)
    vocab = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ref = Reference(len(vocab), preflmr, seed)
    for sub, extra in (("query_tokenizer", {"query_maxlen": QUERY_MAXLEN, "tokenizer_class": "FLMRQueryEncoderTokenizer"}),
                       ("context_tokenizer", {"doc_maxlen": 512, "tokenizer_class": "FLMRContextEncoderTokenizer"})):
        (folder / sub).mkdir(exist_ok=True)
        shutil.copy(minilm_dir() / "vocab.txt", folder / sub / "vocab.txt")
        (folder / sub / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, **extra}))
    base = folder / "mapping_base"  # stands in for transformer_mapping_config_base (bert-base-uncased online)
    ref.text_config.save_pretrained(base)
    config = {
        "model_type": "flmr", "architectures": ["FLMRModelForRetrieval"], "dim": DIM,
        "mapping_network_prefix_length": PREFIX, "mask_punctuation": True, "use_vision_encoder": True,
        "separate_query_and_context_text_encoder": False, "separate_query_and_context_vision_encoder": False,
        "query_concat_output_from_vision_encoder": True, "query_concat_output_from_text_encoder": True,
        "context_concat_output_from_vision_encoder": False, "context_concat_output_from_text_encoder": True,
        "use_transformer_mapping_network": preflmr,
        "transformer_mapping_config_base": str(base) if preflmr else None,
        "transformer_mapping_num_hidden_layers": 1 if preflmr else None,
        "transformer_mapping_cross_attention_length": CROSS_LEN,
        "mask_instruction_token": ":" if preflmr else None,
        "vision_model_version": "openai/clip-vit-base-patch32",
        "text_config": {"model_type": "flmr_text_model", "vocab_size": len(vocab), **TEXT, "query_maxlen": QUERY_MAXLEN,
                        "projection_dim": 0, "text_encoder_base_model": "bert-base-uncased"},
        "vision_config": {"model_type": "flmr_vision_model", **VISION},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = ref.published_state(keep)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return ref
