"""Our FLMR / PreFLMR checkpoint loader against the official FLMR modelling code, on tiny random checkpoints
that the official code itself builds and saves (``FLMRModelForRetrieval.save_pretrained``).

The official code is not part of grace and is not copied into it: point ``--official-pythonpath`` at a checkout
of https://github.com/LinWeizheDragon/FLMR (its ``flmr/models/flmr`` package imports alone) and at a transformers
4.x it runs on (it needs ``tokenization_bert_fast``, gone in transformers 5), e.g.

    pip install --target /tmp/tf4 "transformers==4.46.3"
    python benchmarks/flmr_official_parity.py --official-pythonpath /tmp/tf4:/path/to/FLMR \\
        --out docs/results/flmr-official-parity

A subprocess on that path builds each checkpoint (FLMR; PreFLMR with its transformer mapping network and the
instruction mask), encodes queries (text + pixels) and passages with the official ``query`` / ``doc``, and
saves both; this process loads each checkpoint with ``FLMRCheckpointModel`` (transformers 5 here) and reports
the largest absolute difference of the embeddings over the positions both models keep.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

TEXTS = ["What is the capital of France?", "which bird is this", "how many strings does a violin have"]
PASSAGES = ["paris is the capital of france", "a robin is a small red breasted bird",
            "the violin has four strings, tuned in fifths"]
INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question:"
TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VISION = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8, "projection_dim": 16}
DIM, PREFIX, QUERY_MAXLEN = 16, 4, 24


def official_side(folder: Path, vocab: Path, preflmr: bool, seed: int) -> None:
    """(Runs on the official code's path.) Build, save and encode one checkpoint into ``folder``."""
    import torch
    from flmr.models.flmr import FLMRConfig, FLMRModelForRetrieval
    from flmr.models.flmr.tokenization_flmr import (
        FLMRBertContextEncoderTokenizer,
        FLMRBertQueryEncoderTokenizer,
    )
    from transformers import BertConfig

    n_vocab = len(vocab.read_text(encoding="utf-8").splitlines())
    qtok = FLMRBertQueryEncoderTokenizer(vocab_file=str(vocab), query_maxlen=QUERY_MAXLEN, do_lower_case=True)
    ctok = FLMRBertContextEncoderTokenizer(vocab_file=str(vocab), doc_maxlen=512, do_lower_case=True)
    base = folder / "mapping_base"
    BertConfig(vocab_size=n_vocab, **TEXT).save_pretrained(base)
    config = FLMRConfig(text_config={"vocab_size": n_vocab, "query_maxlen": QUERY_MAXLEN, **TEXT},
                        vision_config=VISION, dim=DIM, mapping_network_prefix_length=PREFIX,
                        use_transformer_mapping_network=preflmr, transformer_mapping_config_base=str(base),
                        transformer_mapping_num_hidden_layers=1, transformer_mapping_cross_attention_length=8,
                        mask_instruction_token=":" if preflmr else None)
    torch.manual_seed(seed)
    model = FLMRModelForRetrieval(config, query_tokenizer=qtok, context_tokenizer=ctok).eval()
    with torch.no_grad():  # random init is small; spread the weights so differences would show
        for p in model.parameters():
            p.normal_(0, 0.2)
    checkpoint = folder / "checkpoint"
    model.save_pretrained(checkpoint, safe_serialization=False)  # its aliased BERT (bert_model = text_model) stops safetensors
    qtok.save_pretrained(checkpoint / "query_tokenizer")
    ctok.save_pretrained(checkpoint / "context_tokenizer")
    texts = [f"{INSTRUCTION} {t}" for t in TEXTS] if preflmr else TEXTS
    pixels = torch.randn(len(texts), 3, VISION["image_size"], VISION["image_size"],
                         generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        q = qtok(texts)
        query = model.query(q["input_ids"], q["attention_mask"], pixel_values=pixels).late_interaction_output
        d = ctok(PASSAGES, padding="longest")
        doc = model.doc(d["input_ids"], d["attention_mask"])
    torch.save({"texts": texts, "pixels": pixels, "query": query, "doc": doc.late_interaction_output,
                "doc_mask": doc.context_mask}, folder / "official.pt")


def compare(folder: Path) -> dict:
    """Load ``folder``'s checkpoint with our loader and compare with what the official code computed."""
    import torch

    from grace.retrieval_baselines.late_interaction.flmr_checkpoint import FLMRCheckpointModel

    official = torch.load(folder / "official.pt")
    model = FLMRCheckpointModel.from_pretrained(folder / "checkpoint")
    with torch.no_grad():
        query, _ = model.encode_queries(official["texts"], official["pixels"])
        doc, doc_mask = model.encode_docs(PASSAGES)
    want_mask = official["doc_mask"].squeeze(-1).bool()
    n = doc.shape[1]
    if query.shape != official["query"].shape or bool(want_mask[:, n:].any()):
        raise SystemExit(f"{folder.name}: shapes differ: query {tuple(query.shape)} vs "
                         f"{tuple(official['query'].shape)}, documents {tuple(doc.shape)} vs {tuple(official['doc'].shape)}")
    keep = want_mask[:, :n]
    return {"fusion": model.config.fusion, "query_shape": list(query.shape), "doc_shape": list(doc.shape),
            "query_max_abs_diff": float((query - official["query"]).abs().max()),
            "doc_max_abs_diff": float(((doc - official["doc"][:, :n]) * keep[..., None]).abs().max()),
            "doc_mask_equal": bool(torch.equal(doc_mask.bool(), keep)),
            "query_max_abs_value": float(official["query"].abs().max())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-pythonpath", required=True,
                        help="PYTHONPATH for the official side: a transformers 4.x and a checkout of FLMR")
    parser.add_argument("--work", type=Path, default=Path("/tmp/flmr-official-parity"))
    parser.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    parser.add_argument("--official-side", nargs=4, metavar=("FOLDER", "VOCAB", "PREFLMR", "SEED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.official_side:
        folder, vocab, preflmr, seed = args.official_side
        official_side(Path(folder), Path(vocab), preflmr == "1", int(seed))
        return {}

    from grace.data_process.encoders import minilm_dir
    from grace.io_utils import atomic_write_text, write_json
    from grace.provenance import script_provenance

    report = {"models": {}}
    env = {**os.environ, "PYTHONPATH": args.official_pythonpath}
    for name, preflmr, seed in (("FLMR", False, 0), ("PreFLMR", True, 1)):
        folder = args.work / name
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--official-pythonpath", args.official_pythonpath, "--out",
                               str(args.out), "--official-side", str(folder), str(minilm_dir() / "vocab.txt"),
                               str(int(preflmr)), str(seed)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the official side failed for {name}: {proc.stderr.strip().splitlines()[-1:]}")
        report["models"][name] = compare(folder)
    official_versions = subprocess.run(
        [sys.executable, "-c", "import transformers, torch; print(transformers.__version__, torch.__version__)"],
        env=env, capture_output=True, text=True).stdout.split()
    import transformers

    report.update(official_transformers=official_versions[0] if official_versions else "?",
                  ours_transformers=transformers.__version__, **script_provenance(__file__, argv))
    write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), render(report))
    print(render(report))
    return report


def render(r: dict) -> str:
    from grace.provenance import provenance_lines

    lines = ["# FLMR / PreFLMR: our checkpoint loader against the official modelling code\n",
             f"Tiny random checkpoints built and saved by the official `FLMRModelForRetrieval` (transformers "
             f"{r['official_transformers']}), loaded by `FLMRCheckpointModel` (transformers {r['ours_transformers']}); "
             "queries are text + pixels (PreFLMR's with the instruction prefix, masked), documents text.\n",
             "| model | query shape | max abs diff, queries | document shape | max abs diff, documents (kept tokens) "
             "| document masks equal |", "|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        lines.append(f"| {name} ({m['fusion']}) | {tuple(m['query_shape'])} | {m['query_max_abs_diff']:.2e} | "
                     f"{tuple(m['doc_shape'])} | {m['doc_max_abs_diff']:.2e} | {'yes' if m['doc_mask_equal'] else 'NO'} |")
    lines += ["", "- embeddings are L2-normalised (entries up to "
              f"{max(m['query_max_abs_value'] for m in r['models'].values()):.2f} in absolute value)",
              *provenance_lines(r)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
