"""``--init-from``: an OpenFlamingo checkpoint written by OpenFlamingo's own classes (its trainable tensors,
as its training saves them), and one of our exports for a new corpus, load into our Flamingo model with the
embedding rows matched by token; a model loaded from OpenFlamingo's weights computes OpenFlamingo's logits."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from grace.errors import InputError
from grace.identifiers.tokenization import IdentifierTokenizer
from grace.model import create_model
from grace.model.init_from import init_from

LM = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 128,
      "tie_word_embeddings": True}  # as MPT-1B, OpenFlamingo-3B's LM
# OpenFlamingo's module sizes (PerceiverResampler and GatedCrossAttentionBlock defaults), a 32-d vision side
OPENFLAMINGO_SHAPE = {"name": "of-tiny", "lm": "random", "lm_config": LM, "vision_encoder": None, "vis_dim": 32,
                      "n_visual_tokens": 4, "perceiver_depth": 6, "perceiver_heads": 8, "perceiver_dim_head": 64,
                      "perceiver_latents": 64, "perceiver_ff_mult": 4, "cross_attn_every_n_layers": 1,
                      "xattn_heads": 8, "xattn_dim_head": 64, "xattn_ff_mult": 4}


class TokensVisual(torch.nn.Module):
    """Stands in for open_clip's ``visual`` with ``output_tokens``: (pooled, tokens) from the pixels."""

    def forward(self, pixels: torch.Tensor):
        tokens = pixels.reshape(pixels.shape[0], 4, 32)
        return tokens.mean(1), tokens


def _openflamingo_model(base_tokenizer):
    """OpenFlamingo's Flamingo exactly as its factory assembles it (tokens added, LM extended, embeddings
    resized, only the perceiver / cross-attention / embeddings trainable), on a tiny random Llama."""
    sys.modules.setdefault("open_clip", types.ModuleType("open_clip"))  # the factory imports it; unused here
    from open_flamingo.src.flamingo import Flamingo
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from open_flamingo.src.utils import extend_instance
    from transformers import LlamaConfig, LlamaForCausalLM

    base_tokenizer.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
    if base_tokenizer.pad_token is None:
        base_tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    torch.manual_seed(1)
    config = {k: v for k, v in LM.items() if k != "model_type"}
    lang_encoder = LlamaForCausalLM(LlamaConfig(**config))
    extend_instance(lang_encoder, FlamingoLMMixin)
    lang_encoder.set_decoder_layers_attr_name("model.layers")
    lang_encoder.resize_token_embeddings(len(base_tokenizer))
    vision = types.SimpleNamespace(visual=TokensVisual())
    model = Flamingo(vision, lang_encoder, base_tokenizer.encode("<|endofchunk|>")[-1],
                     base_tokenizer.encode("<image>")[-1], vis_dim=32, cross_attn_every_n_layers=1)
    model.requires_grad_(False)
    model.perceiver.requires_grad_(True)
    model.lang_encoder.gated_cross_attn_layers.requires_grad_(True)
    model.lang_encoder.get_input_embeddings().requires_grad_(True)
    with torch.no_grad():  # trained-looking values: open gates, distinct media-token rows
        for block in model.lang_encoder.gated_cross_attn_layers:
            block.attn_gate.fill_(0.7)
            block.ff_gate.fill_(-0.4)
        for p in model.perceiver.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, base_tokenizer


def _save_like_openflamingo(model, path):
    """OpenFlamingo's get_checkpoint: the state dict minus frozen parameters."""
    state = model.state_dict()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            del state[name]
    torch.save(state, path)


@pytest.fixture
def byte_tokenizer():
    from grace.identifiers.tokenization import load_base_tokenizer

    return load_base_tokenizer("byte")


def test_openflamingo_checkpoint_loads_and_computes_openflamingos_logits(tmp_path, byte_tokenizer):
    of_model, of_tok = _openflamingo_model(byte_tokenizer)
    _save_like_openflamingo(of_model, tmp_path / "checkpoint.pt")
    ours_tok = IdentifierTokenizer.create("byte", new_tokens=["<c0>", "<c1>", "<c2>"])
    model = create_model(dict(OPENFLAMINGO_SHAPE), tokenizer=ours_tok).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = init_from(model, tmp_path / "checkpoint.pt", ours_tok)
    assert report["kind"] == "openflamingo" and report["rows_new"] >= 3  # the identifier tokens start fresh

    emb, of_emb = model.lang_encoder.get_input_embeddings().weight, of_model.lang_encoder.get_input_embeddings().weight
    for token in ("<image>", "<|endofchunk|>", "a", "z"):  # media rows moved to our ids; base rows in place
        ours_id, of_id = ours_tok.hf.convert_tokens_to_ids(token), of_tok.convert_tokens_to_ids(token)
        torch.testing.assert_close(emb[ours_id], of_emb[of_id])
    assert ours_tok.image_token_id != of_tok.convert_tokens_to_ids("<image>")  # the mapping did real work
    new_row = ours_tok.hf.convert_tokens_to_ids("<c1>")
    torch.testing.assert_close(emb[new_row], before["lang_encoder.model.embed_tokens.weight"][new_row])
    torch.testing.assert_close(model.perceiver.latents, of_model.perceiver.latents)
    torch.testing.assert_close(model.gated_cross_attn_layers[1].attn.to_kv.weight,
                               of_model.lang_encoder.gated_cross_attn_layers[1].attn.to_kv.weight)
    # OpenFlamingo deletes its frozen parameters by their first name only: the LM's decoder weights stay in the
    # file under their aliases (old_decoder_blocks.*, *.decoder_layer.*), and load with everything else
    mlp = "lang_encoder.old_decoder_blocks.0.mlp.up_proj.weight"
    torch.testing.assert_close(dict(model.named_parameters(remove_duplicate=False))[mlp],
                               of_model.lang_encoder.old_decoder_blocks[0].mlp.up_proj.weight)
    assert not torch.equal(dict(model.named_parameters(remove_duplicate=False))[mlp],
                           before["lang_encoder.model.layers.0.decoder_layer.mlp.up_proj.weight"])
    text = "a <image>red square<|endofchunk|>"
    pixels = torch.randn(1, 1, 1, 4, 4, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        of_logits = of_model(vision_x=pixels, lang_x=torch.tensor([of_tok.encode(text)])).logits
        ours = model(lang_x=torch.tensor([ours_tok.hf.encode(text)]), vision_features=pixels.reshape(1, 1, 4, 32)).logits
    shared = [(i, ours_tok.hf.convert_tokens_to_ids(of_tok.convert_ids_to_tokens(i))) for i in range(len(of_tok))]
    of_ids, ours_ids = (torch.tensor(x) for x in zip(*[(i, j) for i, j in shared if j is not None]))
    assert len(of_ids) == len(of_tok) - 1  # every token but OpenFlamingo's <PAD> (ours is <|pad|>)
    torch.testing.assert_close(ours[..., ours_ids], of_logits[..., of_ids], atol=1e-4, rtol=1e-4)


def test_our_export_starts_a_new_corpus(tmp_path):
    old_tok = IdentifierTokenizer.create("byte", new_tokens=["<c0>", "<c1>", "<c2>"])
    torch.manual_seed(0)
    old = create_model("tiny", tokenizer=old_tok)
    old.save_pretrained(tmp_path / "export", tokenizer=old_tok)
    new_tok = IdentifierTokenizer.create("byte", new_tokens=["<c2>", "<c3>"])  # a new corpus: <c2> shared
    torch.manual_seed(5)
    model = create_model("tiny", tokenizer=new_tok)
    fresh = model.lang_encoder.get_input_embeddings().weight.detach().clone()
    report = init_from(model, tmp_path / "export", new_tok)
    assert report["kind"] == "export" and report["copied"] > 10
    emb, old_emb = model.lang_encoder.get_input_embeddings().weight, old.lang_encoder.get_input_embeddings().weight
    for token in ("<c2>", "<image>", "q"):
        torch.testing.assert_close(emb[new_tok.hf.convert_tokens_to_ids(token)],
                                   old_emb[old_tok.hf.convert_tokens_to_ids(token)])
    c3 = new_tok.hf.convert_tokens_to_ids("<c3>")
    torch.testing.assert_close(emb[c3], fresh[c3])
    for name, p in old.named_parameters():
        if "embed_tokens" not in name:
            torch.testing.assert_close(dict(model.named_parameters())[name], p, msg=name)


def test_init_from_errors(tmp_path):
    tok = IdentifierTokenizer.create("byte")
    model = create_model("tiny", tokenizer=tok)
    with pytest.raises(InputError, match="no such export folder or checkpoint"):
        init_from(model, tmp_path / "nope.pt", tok)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read the checkpoint"):
        init_from(model, tmp_path / "junk.pt", tok)
    torch.save({"perceiver.latents": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="a different model config"):
        init_from(model, tmp_path / "other.pt", tok)
    torch.save({"lang_encoder.model.embed_tokens.weight": torch.zeros(7, 64)}, tmp_path / "vocab.pt")
    with pytest.raises(InputError, match="another LM"):
        init_from(model, tmp_path / "vocab.pt", tok)
