"""The image-feature cache: real EfficientNet-Lite0 features, reuse, resume, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from grace.data_process.features import CHUNK, FeatureSet, image_features
from grace.errors import InputError


@pytest.fixture(scope="module")
def cached(shared_tiny_dataset, tmp_path_factory):
    cache = tmp_path_factory.mktemp("features") / "effnet"
    return cache, image_features(shared_tiny_dataset, cache_dir=cache, tokens=True, progress=False)


def test_tokens_and_pooled_are_cached_and_consistent(shared_tiny_dataset, cached):
    cache, tokens = cached
    assert tokens.array.shape == (len(shared_tiny_dataset), 49, 1280)
    pooled = FeatureSet.load(cache)
    assert pooled.ids == shared_tiny_dataset.image_ids()
    np.testing.assert_allclose(pooled.array, np.asarray(tokens.array, np.float32).mean(1), atol=2e-2)
    # different images give different features (a real encoder, not zeros)
    assert np.linalg.norm(pooled.array[0] - pooled.array[1]) > 1e-3
    assert not (cache / ".partial").exists()


def test_cache_is_reused_without_loading_the_encoder(shared_tiny_dataset, cached, monkeypatch):
    cache, _ = cached
    import grace.data_process.encoders as encoders

    monkeypatch.setattr(encoders, "create_image_encoder", lambda *a, **k: pytest.fail("encoder was rebuilt"))
    again = image_features(shared_tiny_dataset, cache_dir=cache, progress=False)
    assert again.array.shape == (len(shared_tiny_dataset), 1280)
    assert again.rows([shared_tiny_dataset.images[2].image_id]).shape == (1, 1280)
    with pytest.raises(InputError, match="no features"):
        again.rows(["nope"])
    subset = shared_tiny_dataset.subset(shared_tiny_dataset.image_ids()[5:1:-1])
    part = image_features(subset, cache_dir=cache, progress=False)  # served from the full cache
    assert part.ids == subset.image_ids()
    np.testing.assert_array_equal(part.array, again.rows(subset.image_ids()))


def test_finished_chunks_are_reused_after_a_crash(tiny_dataset, tmp_path, monkeypatch):
    import grace.data_process.features as features

    monkeypatch.setattr(features, "CHUNK", 8)
    real = features._encode_chunk
    calls = []

    def crash_on_third(encoder, paths, batch_size, tokens, *view):
        calls.append(len(paths))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(encoder, paths, batch_size, tokens, *view)

    monkeypatch.setattr(features, "_encode_chunk", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        image_features(tiny_dataset, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "meta.json").exists()
    assert len(list((tmp_path / "c" / ".partial").glob("chunk-*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(features, "_encode_chunk", real)
    done = image_features(tiny_dataset, cache_dir=tmp_path / "c", progress=False)
    assert done.array.shape == (24, 1280) and CHUNK == 512


def test_corrupt_image_is_named(tiny_dataset, tmp_path):
    tiny_dataset.images[1].path.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=tiny_dataset.images[1].path.name):
        image_features(tiny_dataset, cache_dir=tmp_path / "c", progress=False)


def test_cli_builds_data_features_ids_and_shards(tmp_path, capsys):
    from grace.cli import main

    data = tmp_path / "syn"
    assert main(["data", "build", "synthetic", "--out", str(data), "--n-images", "12"]) == 0
    assert "12 images" in capsys.readouterr().out
    assert main(["ids", "build", "--dataset", str(data / "dataset.json"), "--scheme", "numeric",
                 "--tokenizer", "byte", "--out", str(tmp_path / "ids")]) == 0
    assert main(["shards", "build", "--dataset", str(data / "dataset.json"), "--ids", str(tmp_path / "ids"),
                 "--out", str(tmp_path / "shards")]) == 0
    out = capsys.readouterr().out
    assert "i2id 12 samples" in out
    assert (tmp_path / "shards" / "config.json").is_file() and (tmp_path / "shards" / "shards.json").is_file()
    assert main(["data", "features", "--dataset", str(tmp_path / "missing.json"), "--out", str(tmp_path / "f")]) == 2


def test_augmented_views_are_seeded_cached_and_chunk_independent(tiny_dataset, tmp_path, monkeypatch):
    from grace.data_process import encoders, features
    from grace.data_process.features import view_cache_dir

    cache = tmp_path / "c"
    original = image_features(tiny_dataset, cache_dir=cache, progress=False)
    view1 = image_features(tiny_dataset, cache_dir=cache, view=1, progress=False)
    assert (view_cache_dir(cache, 1) / "pooled.npy").is_file() and view1.ids == original.ids
    meta = view1.meta
    assert meta["view"] == 1 and meta["seed"] == 0 and meta["augment"]["scale"] == [0.6, 1.0]
    shift = np.linalg.norm(view1.array - original.array, axis=1)  # every image's view differs from it ...
    apart = np.linalg.norm(original.array[1:] - original.array[:-1], axis=1)
    assert shift.min() > 1e-3 and np.median(shift) < np.median(apart)  # ... but less than other images do
    assert np.linalg.norm(image_features(tiny_dataset, cache_dir=tmp_path / "s1", view=1, seed=1,
                                         progress=False).array - view1.array) > 1e-2
    monkeypatch.setattr(features, "CHUNK", 8)  # other chunks, other batches: the same views
    rechunked = image_features(tiny_dataset, cache_dir=tmp_path / "c8", view=1, progress=False)
    np.testing.assert_allclose(rechunked.array, view1.array, atol=1e-4)
    from grace.cli import main
    from grace.data_process.dataset import save_karpathy

    save_karpathy(tiny_dataset, tmp_path / "dataset.json")
    assert main(["data", "features", "--dataset", str(tmp_path / "dataset.json"), "--out", str(tmp_path / "cli"),
                 "--views", "2"]) == 0
    np.testing.assert_allclose(FeatureSet.load(view_cache_dir(tmp_path / "cli", 1)).array, view1.array, atol=1e-4)
    monkeypatch.setattr(encoders, "create_image_encoder", lambda *a, **k: pytest.fail("encoder was rebuilt"))
    np.testing.assert_array_equal(image_features(tiny_dataset, cache_dir=cache, view=1, progress=False).array,
                                  view1.array)


def test_view_augment_keeps_size_and_transparency_and_is_seeded():
    from PIL import Image

    from grace.data_process.augment import ViewAugment, view_rng

    image = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (16, 12, 48, 36))
    augment = ViewAugment()
    a, b = augment(image, view_rng(0, 1, 5)), augment(image, view_rng(0, 1, 5))
    assert a.size == (64, 48) and a.mode == "RGBA"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(augment(image, view_rng(0, 2, 5))))
    assert np.asarray(a)[0, 0, 3] == 0  # the background stays transparent (composited on white later)
    with pytest.raises(Exception, match="bad view augmentation"):
        ViewAugment(scale=(0.0, 1.0))
