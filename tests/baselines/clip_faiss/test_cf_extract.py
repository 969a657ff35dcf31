"""Chunked extraction (karpathy and webdataset sources), merge equality, resumability."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from grace.retrieval_baselines.clip_faiss.configs import ExtractConfig
from grace.retrieval_baselines.clip_faiss.extract import chunk_dir, extract_chunk, load_features, merge_chunks


def _extract_all(source, out, encoder, chunks, **kw):
    for idx in range(chunks):
        extract_chunk(ExtractConfig(source=source, out=out, model=encoder.spec, chunks=chunks, chunk_idx=idx,
                                    batch_size=16, progress=False, **kw), encoder=encoder)
    return merge_chunks(out)


def test_two_chunks_merged_equal_one(shared_tiny_dataset, lit_encoder, lit_features, tmp_path):
    one = lit_features[1]
    two = _extract_all(shared_tiny_dataset.root.parent / "dataset.json", tmp_path, lit_encoder, 2)
    assert two.ids == one.ids == shared_tiny_dataset.image_ids()
    assert two.meta["texts"] == one.meta["texts"] and two.meta["text_owner"] == one.meta["text_owner"]
    assert two.image.dtype == np.float16 and two.image.shape == (24, lit_encoder.dim)
    np.testing.assert_allclose(two.image.astype(np.float32), one.image.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(two.text.astype(np.float32), one.text.astype(np.float32), atol=2e-3)
    reloaded = load_features(tmp_path)
    assert reloaded.ids == two.ids and len(reloaded.text) == len(two.meta["texts"])


def test_finished_chunk_is_skipped(shared_tiny_dataset, lit_encoder, tmp_path):
    config = ExtractConfig(source=shared_tiny_dataset.root.parent / "dataset.json", out=tmp_path,
                           model=lit_encoder.spec, chunks=3, chunk_idx=1, progress=False)
    folder = extract_chunk(config, encoder=lit_encoder)
    stamp = (folder / "image.npy").stat().st_mtime_ns

    class Exploding:
        def __getattr__(self, name):
            raise AssertionError("a finished chunk must not be re-encoded")

    assert extract_chunk(config, encoder=Exploding()) == chunk_dir(tmp_path, 3, 1)
    assert (folder / "image.npy").stat().st_mtime_ns == stamp


def _write_shard(path, records):
    with tarfile.open(path, "w") as tar:
        for r in records:
            members = {"png": r.path.read_bytes(), "txt": r.texts[0].encode(),
                       "json": json.dumps({"image_id": r.image_id}).encode()}
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{r.image_id}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_chunked_by_shard(shared_tiny_dataset, lit_encoder, lit_features, tmp_path):
    records = shared_tiny_dataset.images[:9]
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        _write_shard(shards / f"{i:05d}.tar", records[3 * i:3 * i + 3])
    merged = _extract_all(shards, tmp_path / "feat", lit_encoder, 2)
    assert merged.ids == [r.image_id for r in records]
    assert merged.meta["texts"] == [r.texts[0] for r in records]
    assert merged.meta["sources"][4].endswith("00001.tar#" + records[4].image_id + ".png")
    one = lit_features[1]
    np.testing.assert_allclose(merged.image.astype(np.float32), one.image[:9].astype(np.float32), atol=2e-3)


def test_folder_source_with_captions(shared_tiny_dataset, lit_encoder, lit_features, tmp_path):
    import shutil

    from grace.errors import InputError

    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    records = shared_tiny_dataset.images[:3]
    for i, r in enumerate(records):
        dest = (root / "sub" if i == 2 else root) / r.path.name
        shutil.copy(r.path, dest)
        if i != 1:
            dest.with_suffix(".txt").write_text(f"{r.texts[0]}\nsecond line\n")
    merged = _extract_all(root, tmp_path / "feat", lit_encoder, 1)
    assert merged.ids == [records[0].image_id, records[1].image_id, "sub/" + records[2].image_id]
    assert merged.meta["texts"] == [records[0].texts[0], "second line", records[2].texts[0], "second line"]
    assert merged.meta["text_owner"] == [0, 0, 2, 2]
    with pytest.raises(InputError, match="chunk_idx=2 chunks=2"):
        extract_chunk(ExtractConfig(source=root, out=tmp_path / "x", model=lit_encoder.spec, chunks=2, chunk_idx=2),
                      encoder=lit_encoder)
