"""The one identifier tokenizer: context-free encoding, exact decoding, identical ids after save/load."""

from __future__ import annotations

import pytest
from ids_helpers import random_features

from grace.errors import GraceError
from grace.identifiers import IdentifierMap, IdentifierTokenizer, create_scheme
from grace.identifiers.tokenization import EOC_TOKEN, IMAGE_TOKEN

SCHEMES = ("numeric", "string", "semantic", "structured", "atomic")


def _check_save_load(idmap, tmp_path):
    tok = idmap.tokenizer()
    ids = idmap.identifiers()
    encoded = [tok.encode_identifier(i) for i in ids]
    assert [tok.decode_identifier(e) for e in encoded] == ids  # exact inverse
    assert len({tuple(e) for e in encoded}) == len(ids)  # injective
    idmap.save(tmp_path / "ids")  # as `grace ids build` does; training and inference each reload it
    for _ in range(2):
        again = IdentifierTokenizer.load(tmp_path / "ids" / "tokenizer")
        assert [again.encode_identifier(i) for i in ids] == encoded
        assert (again.image_token_id, again.eoc_token_id, again.pad_token_id, len(again)) == (
            tok.image_token_id, tok.eoc_token_id, tok.pad_token_id, len(tok))
    for piece in tok.new_tokens:  # new tokens are single ids
        assert len(again.encode_text(piece)) == 1
    return tok, encoded


@pytest.mark.parametrize("name", SCHEMES)
def test_byte_tokenizer_save_load_identity(name, shared_tiny_dataset, tmp_path):
    idmap = create_scheme(name, tokenizer="byte", k=3, c=4).build(shared_tiny_dataset, random_features(24))
    tok, encoded = _check_save_load(idmap, tmp_path)
    if name in ("structured", "atomic"):
        assert tok.new_tokens and all(e[0] >= len(tok) - len(tok.new_tokens) for e in encoded)
    if name == "atomic":
        assert all(len(e) == 1 for e in encoded)
    if name == "numeric":  # one token per digit
        assert all(len(e) == len(i.split()) for e, i in zip(encoded, idmap.identifiers()))


def test_smollm2_tokenizer_all_schemes(shared_tiny_dataset, tmp_path):
    """The real default tokenizer (SmolLM2 from GGUF; cached after the first conversion)."""
    feats = random_features(24)
    for name in SCHEMES:
        idmap = create_scheme(name, k=3, c=4).build(shared_tiny_dataset, feats)
        tok, encoded = _check_save_load(idmap, tmp_path / name)
        assert len(tok) > 49000
        assert len(tok.encode_text(IMAGE_TOKEN)) == 1 and len(tok.encode_text(EOC_TOKEN)) == 1
        assert len({tok.image_token_id, tok.eoc_token_id, tok.pad_token_id}) == 3
        if name == "numeric":
            assert tok.encode_identifier("3 5 1 7") == [tok.hf.convert_tokens_to_ids(d) for d in "3517"]
        if name == "structured":
            text = tok.encode_text("find " + idmap.identifiers()[0])
            assert text[-len(encoded[0]):] == encoded[0]  # context-free: same ids inside text


def test_context_free_concatenation(shared_tiny_dataset):
    idmap = create_scheme("numeric", tokenizer="byte").build(shared_tiny_dataset)
    tok = idmap.tokenizer()
    prompt = tok.encode_text("a query") + [tok.image_token_id]
    seq = prompt + tok.encode_identifier("1 2") + [tok.eoc_token_id]
    assert tok.decode_identifier(seq[len(prompt):-1]) == "1 2"


def test_tokenizer_errors(shared_tiny_dataset, tmp_path):
    tok = create_scheme("atomic", tokenizer="byte").build(shared_tiny_dataset).tokenizer()
    with pytest.raises(GraceError, match="not a token"):
        tok.encode_identifier("<img_999>")
    with pytest.raises(GraceError, match="not a sequence"):
        tok.encode_identifier("img_1")
    with pytest.raises(GraceError, match="file not found"):
        IdentifierTokenizer.load(tmp_path / "nothing")
    with pytest.raises(GraceError, match="cannot load tokenizer"):
        create_scheme("numeric", tokenizer=str(tmp_path / "no-such-tokenizer")).build(shared_tiny_dataset).tokenizer()


def test_reload_detects_lost_tokens(shared_tiny_dataset, tmp_path):
    """The GRACE bug: a tokenizer reloaded without its new tokens must fail loudly, not shift ids."""
    import json

    idmap = create_scheme("atomic", tokenizer="byte").build(shared_tiny_dataset)
    idmap.save(tmp_path / "ids")
    meta_path = tmp_path / "ids" / "tokenizer" / "grace_tokenizer.json"
    meta = json.loads(meta_path.read_text())
    meta["token_ids"]["<img_0>"] += 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GraceError, match="differs from the saved one"):
        IdentifierMap.load(tmp_path / "ids").load_tokenizer(tmp_path / "ids")
