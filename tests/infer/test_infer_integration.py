"""The generative retriever over the real stages: identifiers (ids, tokenizer, trie) + the tiny Flamingo."""

from __future__ import annotations

import shutil

import pytest
import torch

from grace.identifiers import create_scheme
from grace.identifiers.tokenization import IdentifierTokenizer
from grace.identifiers.trie import build_trie
from grace.infer.beam_search import beam_search
from grace.infer.constraint import PrefixAllowedReference, TrieLogitsProcessor
from grace.infer.retriever import GenerativeRetriever, make_adapter
from grace.model import create_model
from grace.model.prompt import left_pad, prompt_ids
from grace.retriever import Query
from launch_helpers import torchrun_prefix


@pytest.fixture(scope="module")
def parts(shared_tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("integration")
    idmap = create_scheme("numeric", tokenizer="byte").build(shared_tiny_dataset, None)
    idmap.save(root / "ids")
    tok = IdentifierTokenizer.load(root / "ids" / "tokenizer")
    trie = build_trie(idmap, tok)  # every image of the corpus
    torch.manual_seed(0)
    model = create_model("tiny", tokenizer=tok).eval()
    return root, idmap, tok, trie, model


def test_vectorised_equals_reference_on_flamingo(parts):
    _, _, tok, trie, model = parts
    inputs = left_pad([prompt_ids(tok, q) for q in ["a red circle", "blue", "large pink cross now"]], tok.pad_token_id)
    ids, mask = inputs["lang_x"], inputs["attention_mask"]
    depth = max(len(s) for s in trie)
    outs = []
    for constraint in (TrieLogitsProcessor(trie.transitions()), PrefixAllowedReference(trie, ids.shape[1])):
        outs.append(beam_search(make_adapter(model), ids, mask, num_beams=6,
                                max_new_tokens=depth, eos_token_id=tok.eoc_token_id, constraint=constraint,
                                pad_token_id=tok.pad_token_id))
    for row in range(3):
        assert [h[0] for h in outs[0].hypotheses(row)] == [h[0] for h in outs[1].hypotheses(row)]
        assert all(h[0] in trie for h in outs[0].hypotheses(row))


def test_all_results_are_real_images_and_export_reloads(parts, shared_tiny_dataset):
    root, idmap, tok, trie, model = parts
    retriever = GenerativeRetriever(model, tok, idmap, trie, num_beams=5, batch_size=32)
    queries = [Query(text=f"{w} shape {i}") for i, w in enumerate(["red", "blue", "tiny", "huge"] * 50)]
    results = retriever.search(queries, k=5)
    corpus = set(shared_tiny_dataset.image_ids())
    assert all(len(r) == 5 and len({h.image_id for h in r}) == 5 and {h.image_id for h in r} <= corpus
               for r in results)
    export = root / "export"
    model.save_pretrained(export, tokenizer=tok)
    shutil.copytree(root / "ids", export / "ids")
    trie.save(export / "trie")
    reloaded = GenerativeRetriever.load(export, num_beams=5, device="cpu")
    again = reloaded.search(queries[:8], k=5)
    assert [[h.image_id for h in r] for r in again] == [[h.image_id for h in r] for r in results[:8]]


@pytest.mark.multiproc
def test_grace_eval_cli_under_torchrun_equals_single_process(parts, shared_tiny_dataset, tmp_path):
    """`grace eval --retriever generative:EXPORT` with 2 gloo processes == 1 process (generative metrics)."""
    import json
    import os
    import subprocess
    import sys

    root, _, tok, trie, model = parts
    export = root / "export_cli"
    if not export.is_dir():
        model.save_pretrained(export, tokenizer=tok)
        shutil.copytree(root / "ids", export / "ids")
        trie.save(export / "trie")
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    args = ["-m", "grace.cli", "eval", "--dataset", str(dataset_json), "--retriever", f"generative:{export}",
            "--split", "train", "--num-beams", "5", "--batch-size", "3", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"out{nproc}"
        launcher = [sys.executable] if nproc == 1 else torchrun_prefix(2)
        proc = subprocess.run(launcher + args + ["--out", str(out)], check=False, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[nproc] = json.loads((out / "results.json").read_text())
    one, two = results[1]["generative"], results[2]["generative"]
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("recall@1", "recall@5", "recall@10", "num_queries"):
        assert one[key] == two[key]
    assert one["num_queries"] == sum(len(r.texts) for r in shared_tiny_dataset.split("train"))
    assert "random" in results[2]
