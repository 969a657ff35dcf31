"""Document expansion of CLIP-FAISS keys: an image key moves towards the mean of its texts' vectors, so a
query that matches only an image's texts finds it; images without texts keep their image vector."""

from __future__ import annotations

import numpy as np


def _encode_texts(texts):
    """A text tower for the test: each word is a fixed random direction, a text the sum of its words."""
    out = np.zeros((len(texts), 16), np.float32)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i] += np.random.default_rng(sum(map(ord, word))).standard_normal(16)
    return out


def test_expand_keys_moves_images_towards_their_texts():
    from grace.retrieval_baselines.clip_faiss.index import expand_keys

    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 16)).astype(np.float32)
    texts = {"a": ["zebra stripes", "zebra"], "c": ["banana"], "b": ["   "]}
    keys = expand_keys(images, ["a", "b", "c"], texts, _encode_texts, weight=1.0)
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(keys, axis=1), 1.0, atol=1e-5)
    assert np.allclose(keys[1], unit[1], atol=1e-6)  # no (non-blank) text: the image alone
    query = _encode_texts(["zebra"])[0]
    query /= np.linalg.norm(query)
    assert int(np.argmax(keys @ query)) == 0 and keys[0] @ query > unit[0] @ query
    heavier = expand_keys(images, ["a", "b", "c"], texts, _encode_texts, weight=4.0)
    assert heavier[0] @ query > keys[0] @ query  # the weight sets how far the key moves
    assert np.allclose(expand_keys(images, ["a", "b", "c"], {}, _encode_texts), unit, atol=1e-6)
