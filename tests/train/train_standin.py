"""Stand-ins with the grace.model / grace.identifiers interfaces, used until (or where) the real ones are absent.

``StandinTokenizer``: one id per character (+ <image>, <|endofchunk|>, pad); ``create_model(tokenizer=)``
builds a 1-layer GRU "Flamingo" that adds projected vision features to the tokens after ``<image>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 :,-_<>|"
VIS_DIM = 16


class StandinTokenizer:
    def __init__(self):
        self.vocab = {c: i for i, c in enumerate(CHARS)}
        self.image_token_id, self.eoc_token_id, self.pad_token_id = len(CHARS), len(CHARS) + 1, len(CHARS) + 2

    def __len__(self) -> int:
        return len(CHARS) + 3

    def encode_text(self, text: str) -> list[int]:
        return [self.vocab[c] for c in text.lower() if c in self.vocab]

    def encode_identifier(self, identifier: str) -> list[int]:
        return self.encode_text(identifier)

    def save(self, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "standin_tokenizer.json").write_text(json.dumps({"chars": CHARS}))

    @classmethod
    def load(cls, directory) -> StandinTokenizer:
        assert (Path(directory) / "standin_tokenizer.json").is_file(), directory
        return cls()


def load_tokenizer(directory) -> StandinTokenizer:
    return StandinTokenizer.load(directory)


class StandinFlamingo(nn.Module):
    def __init__(self, vocab_size: int, image_token_id: int, hidden: int = 32):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "image_token_id": image_token_id, "hidden": hidden}
        self.image_token_id = image_token_id
        self.vision_encoder = None
        self.embed = nn.Embedding(vocab_size, hidden)
        self.vis_proj = nn.Linear(VIS_DIM, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def null_vision_features(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 1, 1, VIS_DIM)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def gradient_checkpointing_enable(self):
        pass

    def forward(self, *, lang_x, attention_mask=None, vision_x=None, vision_features=None, labels=None,
                past_key_values=None, use_cache=False):
        h = self.embed(lang_x)
        vis = self.vis_proj(vision_features.mean(dim=(1, 2)))  # (B, H)
        after_image = (lang_x == self.image_token_id).cumsum(1).clamp(max=1).unsqueeze(-1).to(h.dtype)
        h = h + after_image * vis[:, None, :]
        logits = self.head(self.rnn(h)[0])
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                               labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        Path(directory).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(directory) / "model.safetensors"))
        (Path(directory) / "config.json").write_text(json.dumps(self.config))


def create_model(tokenizer=None, **_):
    torch.manual_seed(0)
    return StandinFlamingo(len(tokenizer), tokenizer.image_token_id)


def load_pretrained(directory):
    from safetensors.torch import load_file

    config = json.loads((Path(directory) / "config.json").read_text())
    model = StandinFlamingo(config["vocab_size"], config["image_token_id"], config["hidden"])
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
    return model.eval(), StandinTokenizer.load(Path(directory) / "tokenizer")
