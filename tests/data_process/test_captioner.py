"""Model-generated pseudo-queries (``captioner:MODEL``) on the image-text-to-text API: a tiny random BLIP,
saved and loaded from disk exactly as a hub checkpoint is; batched, cached per image, resumable, and the
held-out-query leak check still applies."""

from __future__ import annotations

import json

import pytest

from grace.data_process.dataset import save_karpathy
from grace.data_process.pseudo_queries import CaptionerPseudoQueries, build_pseudo_queries

WORDS = ["a", "red", "green", "blue", "square", "circle", "on", "white", "small", "big", "picture", "of", "the", "with", "and"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """BlipForConditionalGeneration (1-layer vision and text towers) + BlipProcessor, saved to a folder."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny-blip")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(folder / "vocab.txt")))
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = BlipConfig(text_config={**small, "vocab_size": len(vocab), "bos_token_id": 2, "eos_token_id": 3,
                                     "sep_token_id": 3, "pad_token_id": 0, "encoder_hidden_size": 32},
                        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_captions_are_batched_cached_and_resumable(tiny_blip, tiny_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "captions.jsonl"
    generator = CaptionerPseudoQueries(str(tiny_blip), num_captions=3, batch_size=3, max_new_tokens=6, cache=cache,
                                       device="cpu")
    calls = []
    real = generator._caption
    monkeypatch.setattr(generator, "_caption", lambda batch: calls.append(len(batch)) or real(batch))
    test_ids = [r.image_id for r in tiny_dataset.split("test")]
    queries = build_pseudo_queries(tiny_dataset, generator).queries
    assert sorted(queries) == sorted(test_ids) and calls == [3, 1]  # 4 test images in batches of 3
    assert all(1 <= len(texts) <= 3 for texts in queries.values())
    assert all(set(t.split()) <= set(WORDS) for texts in queries.values() for t in texts)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["image_id"] for r in rows] == test_ids and all(len(r["captions"]) == 3 for r in rows)

    with cache.open("a") as handle:
        handle.write('{"image_id": "cut mid-wri')  # a crash while appending
    resumed = CaptionerPseudoQueries(str(tiny_blip), num_captions=3, cache=cache, device="cpu")
    monkeypatch.setattr(resumed, "_caption", lambda batch: pytest.fail("a cached image was captioned again"))
    assert build_pseudo_queries(tiny_dataset, resumed).queries == queries

    # the leak check: a caption equal to a held-out query is dropped
    leaked = queries[test_ids[0]][0]
    tiny_dataset.split("test")[1].texts.append(leaked.upper())
    after = build_pseudo_queries(tiny_dataset, resumed).queries
    assert all(leaked not in texts for texts in after.values())


def test_cli_generates_captions_from_a_saved_model(tiny_blip, tiny_dataset, tmp_path):
    from grace.cli import main

    dataset_json = tmp_path / "data" / "dataset.json"
    save_karpathy(tiny_dataset, dataset_json)
    out = tmp_path / "pq.json"
    assert main(["data", "pseudo-queries", "--dataset", str(dataset_json), "--generator", f"captioner:{tiny_blip}",
                 "--num-captions", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert len(written) == 4 and all(1 <= len(v) <= 2 for v in written.values())
    assert len(out.with_suffix(".captions.jsonl").read_text().splitlines()) == 4
