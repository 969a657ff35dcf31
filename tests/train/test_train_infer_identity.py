"""Training and inference feed the model the same t2id input: prompt tokens, positions, null image, and
so the same next-token logits; an export or a features cache that disagrees with the model is an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import build_tiny_run, train_tokenizer

from grace.errors import InputError
from grace.identifiers import IdentifierMap, Trie
from grace.infer.retriever import GenerativeRetriever
from grace.model import create_model, load_pretrained
from grace.model.prompt import IGNORE_INDEX
from grace.train.data import MixedBatches, VisionSource
from grace.train.trainer import vision_batch


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_tiny_dataset):
    values = build_tiny_run(tmp_path_factory.mktemp("identity"), shared_tiny_dataset)
    tok = train_tokenizer(values)
    torch.manual_seed(0)
    model = create_model({"name": "tiny", "lm": "random", "vis_dim": 32, "n_visual_tokens": 1, "vision_encoder": None,
                          "lm_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                        "max_position_embeddings": 512}}, tokenizer=tok).eval()
    with torch.no_grad():  # gates start at 0 (tanh): open them so the vision input changes the logits
        for layer in model.gated_cross_attn_layers:
            if layer is not None:
                layer.attn_gate.fill_(1.0)
                layer.ff_gate.fill_(1.0)
    return values, tok, model


def test_training_and_inference_inputs_and_logits_are_identical(run):
    values, tok, model = run
    data = MixedBatches(Path(values["shards_dir"]), tok, batch_size_i2id=1, batch_size_t2id=2, rank=0, world_size=1,
                        seed=0, max_length=64, keep_images=False)
    batch, rows = data.batch(0)
    vision = VisionSource(features_cache=Path(values["features_cache"]), n_visual_tokens=1)
    feats = vision_batch(model, vision, rows, 3, "cpu", torch.float32)
    t2id = rows[1:]
    assert [s.key for s in t2id] == [data.samples["t2id"][i].key for i in data.orders["t2id"].indices(0)]
    retriever = GenerativeRetriever(model, tok, IdentifierMap.load(Path(values["ids_dir"])),
                                    Trie.load(Path(values["trie_dir"])))
    for row, sample in zip((1, 2), t2id):
        real = batch["attention_mask"][row] == 1
        prompt = real & (batch["labels"][row] == IGNORE_INDEX)
        first_target = int(prompt.nonzero().max())  # the last prompt position predicts the first id token
        inputs = retriever.prompt_inputs([sample.text])
        assert inputs["lang_x"][0].tolist() == batch["lang_x"][row][prompt].tolist()
        assert inputs["position_ids"][0].tolist() == batch["position_ids"][row][prompt].tolist()
        assert torch.equal(inputs["vision_features"][0], feats[row])  # the null image, same shape and values
        with torch.no_grad():
            train_logits = model(lang_x=batch["lang_x"], attention_mask=batch["attention_mask"],
                                 position_ids=batch["position_ids"], vision_features=feats).logits[row, first_target]
            infer_logits = model(**inputs).logits[0, -1]
        torch.testing.assert_close(train_logits, infer_logits, atol=1e-4, rtol=1e-4)
    # the i2id row's image does change the logits (so the identity above is not vacuous)
    with torch.no_grad():
        other = model(lang_x=batch["lang_x"][:1], attention_mask=batch["attention_mask"][:1],
                      position_ids=batch["position_ids"][:1], vision_features=torch.zeros_like(feats[:1])).logits
        same = model(lang_x=batch["lang_x"][:1], attention_mask=batch["attention_mask"][:1],
                     position_ids=batch["position_ids"][:1], vision_features=feats[:1]).logits
    assert not torch.allclose(other[0, -1], same[0, -1], atol=1e-4)


def test_features_cache_that_disagrees_with_the_model_is_an_error(run, tmp_path):
    import shutil

    values, _, _ = run
    vision = VisionSource(features_cache=Path(values["features_cache"]), n_visual_tokens=4)  # the cached tokens
    assert vision.array.shape[1:] == (4, 32)
    with pytest.raises(InputError, match="has 4 visual token"):
        vision.check_layout(32, 49, "cache")
    with pytest.raises(InputError, match="vis_dim=64"):
        vision.check_layout(64, 4, "cache")
    pooled_only = tmp_path / "pooled"
    shutil.copytree(values["features_cache"], pooled_only, ignore=shutil.ignore_patterns("tokens.npy"))
    with pytest.raises(InputError, match="only pooled features"):
        VisionSource(features_cache=pooled_only, n_visual_tokens=4)
    assert VisionSource(features_cache=pooled_only, n_visual_tokens=1).array.shape[1:] == (1, 32)


def test_export_whose_model_disagrees_with_its_feature_layout_is_an_error(run, tmp_path):
    _, tok, model = run
    model.save_pretrained(tmp_path / "export", tokenizer=tok)
    (tmp_path / "export" / "feature_layout.json").write_text(json.dumps({"n_visual_tokens": 1, "vis_dim": 32}))
    load_pretrained(tmp_path / "export")  # consistent: loads
    (tmp_path / "export" / "feature_layout.json").write_text(json.dumps({"n_visual_tokens": 49, "vis_dim": 32}))
    with pytest.raises(InputError, match="n_visual_tokens=49"):
        load_pretrained(tmp_path / "export")


def _write_views(cache: Path, views: int) -> None:
    """Views 1..views-1 of a features cache: its arrays + k (so a row tells which view it came from)."""
    import shutil

    meta = json.loads((cache / "meta.json").read_text())
    for view in range(1, views):
        folder = cache / "views" / str(view)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in ("tokens.npy", "pooled.npy"):
            np.save(folder / name, np.load(cache / name) + view)
        (folder / "meta.json").write_text(json.dumps({**meta, "view": view}))


def test_i2id_views_are_drawn_per_sample_and_reproducible(run, tmp_path):
    import shutil

    values, tok, _ = run
    cache = tmp_path / "features"
    shutil.copytree(values["features_cache"], cache)
    _write_views(cache, 3)
    base = VisionSource(features_cache=cache, n_visual_tokens=4)
    vision = VisionSource(features_cache=cache, n_visual_tokens=4, views=3, seed=0)
    data = MixedBatches(Path(values["shards_dir"]), tok, batch_size_i2id=4, batch_size_t2id=1, rank=0, world_size=1,
                        seed=0, max_length=64, keep_images=False)
    seen = set()
    for draw in range(12):
        i2id = [s for s in data.batch(draw)[1] if s.task == "i2id"]
        feats, plain = vision.features(i2id, draw), base.features(i2id, draw)
        offset = (feats - plain).mean(dim=(1, 2))  # which view each row came from
        torch.testing.assert_close(offset, offset.round(), atol=1e-2, rtol=0)
        assert torch.equal(feats, vision.features(i2id, draw))  # the same draw: the same views (resume)
        assert torch.equal(offset.round().long(), torch.from_numpy(vision.draw_views(len(i2id), draw)))
        seen |= set(offset.round().long().tolist())
    assert seen == {0, 1, 2}
    assert not torch.equal(torch.from_numpy(vision.draw_views(64, 0)),
                           torch.from_numpy(VisionSource(features_cache=cache, n_visual_tokens=4, views=3,
                                                         rank=1).draw_views(64, 0)))  # ranks draw apart
    with pytest.raises(InputError, match="no view 3"):
        VisionSource(features_cache=cache, n_visual_tokens=4, views=4)
