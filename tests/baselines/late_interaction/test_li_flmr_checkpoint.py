"""Released FLMR / PreFLMR checkpoints: loading the published format, same embeddings as FLMR's forward,
zero-shot indexing of the three document forms, instruction-prefixed search through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flmr_fixture import INSTRUCTION, PREFIX, QUERY_MAXLEN, VISION, write_flmr_checkpoint
from PIL import Image

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.flmr_checkpoint import FLMRCheckpointModel, is_flmr_checkpoint

TEXTS = ["What is the capital of France?", "which bird is this"]
PASSAGES = ["paris is the capital of france", "a robin is a small red breasted bird", "volcanoes erupt molten lava",
            "the violin has four strings", "penguins live in antarctica", "tea grows on green hills"]


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, VISION["image_size"], VISION["image_size"], generator=g)


@pytest.mark.parametrize("keep,fmt", [("query", "safetensors"), ("context", "bin")])
def test_flmr_checkpoint_matches_reference_forward(tmp_path, keep, fmt):
    ref = write_flmr_checkpoint(tmp_path / "flmr", keep=keep, fmt=fmt)
    assert is_flmr_checkpoint(tmp_path / "flmr")
    model = FLMRCheckpointModel.from_pretrained(tmp_path / "flmr")
    assert model.config.fusion == "flmr" and model.query_maxlen == QUERY_MAXLEN
    assert model.query_text_encoder is model.context_text_encoder  # tied, saved once
    pixels = _pixels(2)
    with torch.no_grad():
        q, mask = model.encode_queries(TEXTS, pixels)
        want = ref.query(model.query_tokenizer, TEXTS, pixels=pixels)
        assert q.shape == (2, QUERY_MAXLEN + PREFIX, 16) and bool(mask.all())
        torch.testing.assert_close(q, want, atol=1e-5, rtol=1e-4)
        features = ref.clip(pixel_values=pixels).last_hidden_state[:, 0]  # pre-extracted [CLS] features
        torch.testing.assert_close(model.encode_queries(TEXTS, features)[0], want, atol=1e-5, rtol=1e-4)
        d, dmask = model.encode_docs(PASSAGES[:3])
        want_d, want_mask = ref.doc(model.context_tokenizer, PASSAGES[:3])
        assert torch.equal(dmask, want_mask)
        torch.testing.assert_close(d, want_d, atol=1e-5, rtol=1e-4)
        d, dmask = model.encode_docs(PASSAGES[:2], features)
        want_d, want_mask = ref.doc(model.context_tokenizer, PASSAGES[:2], features)
        assert torch.equal(dmask, want_mask)
        torch.testing.assert_close(d, want_d, atol=1e-5, rtol=1e-4)


def test_preflmr_checkpoint_transformer_mapping_and_instruction_mask(tmp_path):
    ref = write_flmr_checkpoint(tmp_path / "preflmr", preflmr=True, keep="context", seed=1)
    model = FLMRCheckpointModel.from_pretrained(tmp_path / "preflmr")
    assert model.config.fusion == "preflmr"
    texts = [f"{INSTRUCTION} {t}" for t in TEXTS]
    pixels = _pixels(2, seed=1)
    patches = (VISION["image_size"] // VISION["patch_size"]) ** 2
    with torch.no_grad():
        q, mask = model.encode_queries(texts, pixels)
        sep = model.query_tokenizer.convert_tokens_to_ids(":")
        want = ref.query(model.query_tokenizer, texts, pixels=pixels, instruction_id=sep)
    assert q.shape == (2, QUERY_MAXLEN + PREFIX + patches, 16)
    torch.testing.assert_close(q, want, atol=1e-5, rtol=1e-4)
    ids = model.tokenize_queries(texts)["input_ids"]
    first_sep = int((ids[0] == sep).int().argmax())
    assert not mask[0, 2:first_sep + 1].any() and mask[0, :2].all() and mask[0, first_sep + 1:].all()
    assert float(q[0, 2:first_sep + 1].abs().sum()) == 0.0  # the instruction does not score
    with pytest.raises(InputError, match="PreFLMR queries need pixels"):
        model.encode_queries(texts, torch.zeros(2, VISION["hidden_size"]))


def test_flmr_checkpoint_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    write_flmr_checkpoint(tmp_path / "ok")
    state = load_file(str(tmp_path / "ok" / "model.safetensors"))
    bad = tmp_path / "ok"
    save_file({**state, "stray.weight": torch.zeros(2)}, str(bad / "model.safetensors"))
    with pytest.raises(InputError, match="stray.weight"):
        FLMRCheckpointModel.from_pretrained(bad)
    save_file({k: v for k, v in state.items() if "text_encoder_linear" not in k}, str(bad / "model.safetensors"))
    with pytest.raises(InputError, match="missing"):
        FLMRCheckpointModel.from_pretrained(bad)
    (tmp_path / "notflmr").mkdir()
    (tmp_path / "notflmr" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not is_flmr_checkpoint(tmp_path / "notflmr")
    with pytest.raises(InputError, match="not an FLMR checkpoint"):
        FLMRCheckpointModel.from_pretrained(tmp_path / "notflmr")


def test_flmr_checkpoint_saved_by_the_official_code_with_its_text_model_alias_loads(tmp_path):
    """The official FLMRTextModel keeps ``text_model`` as an alias of ``bert_model``; a .bin save holds both
    copies of every BERT weight. They load as one when equal, and two different copies are an error."""
    ref = write_flmr_checkpoint(tmp_path / "flmr", fmt="bin")
    path = tmp_path / "flmr" / "pytorch_model.bin"
    state = torch.load(path)
    alias = {k.replace("_text_encoder.bert_model.", "_text_encoder.text_model."): v.clone()
             for k, v in state.items() if "_text_encoder.bert_model." in k}
    assert alias
    torch.save({**state, **alias}, path)
    model = FLMRCheckpointModel.from_pretrained(tmp_path / "flmr")
    with torch.no_grad():
        q, _ = model.encode_queries(TEXTS, _pixels(2))
        torch.testing.assert_close(q, ref.query(model.query_tokenizer, TEXTS, pixels=_pixels(2)), atol=1e-5, rtol=1e-4)
    first = next(iter(alias))
    torch.save({**state, **alias, first: alias[first] + 1}, path)
    with pytest.raises(InputError, match="two different copies"):
        FLMRCheckpointModel.from_pretrained(tmp_path / "flmr")


def test_zero_shot_index_three_document_forms_and_search_cli(tmp_path, capsys):
    from grace.cli import main
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever
    from grace.retriever import Query

    write_flmr_checkpoint(tmp_path / "flmr")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    lines = [{"id": f"p{i}", "text": t} for i, t in enumerate(PASSAGES)]
    lines[1]["image_features"] = rng.normal(size=VISION["hidden_size"]).tolist()  # text + features
    lines[2]["image"] = "0.png"  # text + image path (under --image-root)
    (tmp_path / "kb.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert main(["baselines", "late-interaction", "index", "--checkpoint", str(tmp_path / "flmr"),
                 "--passages", str(tmp_path / "kb.jsonl"), "--image-root", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "index"), "--backend", "exact"]) == 0
    capsys.readouterr()
    retriever = LateInteractionRetriever.load(tmp_path / "index")
    assert retriever.name.startswith("late_interaction[flmr,")
    # zero-shot sanity: a passage's own words retrieve it (query and document share the text encoder)
    hits = retriever.search([Query(text=t) for t in PASSAGES], k=1)
    assert [h[0].image_id for h in hits] == [f"p{i}" for i in range(len(PASSAGES))]
    assert main(["baselines", "late-interaction", "search", "--index", str(tmp_path / "index"),
                 "--texts", "where do penguins live", "--images", str(tmp_path / "imgs" / "1.png"),
                 "--instruction", INSTRUCTION, "--k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out[0]["hits"]) == 3 and all("text" in h for h in out[0]["hits"])
    assert main(["baselines", "late-interaction", "index", "--checkpoint", str(tmp_path / "flmr"),
                 "--out", str(tmp_path / "index2")]) != 0
    assert "give --passages" in capsys.readouterr().err
