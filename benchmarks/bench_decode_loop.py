"""``benchmarks/bench_decode.py``, second part: the decode loop against the reference loop, and the latency-vs-corpus plot.

Loop — same model, prompts and trie, ``num_beams`` beams, ``loop_batch`` queries per search: queries/s of
the new loop (fan-out table: top-k over K × F trie children; for a Flamingo model the perceiver latents and
every cross-attention K/V computed once per query, the null image once per search; the beams' KV in a
preallocated static cache) over the reference loop (the vocabulary-wide mask over K × V, vision recomputed on
every beam at every step, a growing DynamicCache), both fp32; the new loop on a DynamicCache (the static
cache's share); the new loop with the model in bfloat16, with how often its top-1 agrees with fp32; and the
new loop with the identifier head (logits and softmax over the identifier tokens only), with how often its
top-1 agrees with the full head's.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from decode_fixtures import load_lm, numeric_sequences, synchronize, timed_trie

from grace.infer.beam_search import beam_search, compile_for_decoding, early_stop_on, runs_compiled
from grace.infer.constraint import TrieLogitsProcessor
from grace.model.flamingo import language_model
from grace.model.id_head import install_identifier_head

log = logging.getLogger(__name__)
LM_MODELS = ("smollm2", "tiny-llama")


def load_loop_model(name: str, device: str) -> tuple[Any, list[int], int, int | None]:
    """(model, ten identifier tokens, end-of-identifier id, image token id or None). A bare LM from
    :func:`decode_fixtures.load_lm`, or a Flamingo model config with random new weights (its LM as the
    config says: random for ``tiny-effnet``, offline SmolLM2-135M for ``smollm2-effnet``), vision encoder off."""
    if name in LM_MODELS:
        model, digits, eoc = load_lm(name, device)
        return model, digits, eoc, None
    from grace.model import create_model

    vocab = 49152 + 2  # the SmolLM2 vocabulary + <image>, <|endofchunk|>
    torch.manual_seed(0)
    model = create_model(name, vocab_size=vocab, image_token_id=vocab - 2, eoc_token_id=vocab - 1, pad_token_id=0,
                         vision_encoder=None)
    return model.eval().to(device), list(range(32, 42)), vocab - 1, vocab - 2


def _prompts(batch: int, image_token: int | None, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (batch, 12), generator=gen)
    if image_token is not None:
        ids[:, -3] = image_token  # caption, <image>, id cue: the t2id prompt's layout
    return ids.to(device), torch.ones_like(ids).to(device)


def bench_loop(name: str, config: Any) -> dict:
    """Queries/s of the new and reference loops (and bf16) for one model; ``speedup`` = new / reference."""
    from grace.infer.retriever import make_adapter

    model, digits, eoc, image_token = load_loop_model(name, config.device)
    seqs = numeric_sequences(config.p1_ids, config.id_digits, digits, eoc, config.seed)
    _, table, _ = timed_trie(seqs)
    ids, mask = _prompts(config.loop_batch, image_token, config.device, config.seed)
    constraints = {"new": TrieLogitsProcessor(table, device=config.device),
                   "reference": TrieLogitsProcessor(table, device=config.device, max_fanout_entries=0)}
    # variant: (model, new loop, static beam cache); "new_dynamic" isolates the static cache's share
    variants = {"new": (model, True, True), "new_dynamic": (model, True, False), "reference": (model, False, False)}
    if config.bf16:
        variants["new_bf16"] = (copy.deepcopy(model).to(torch.bfloat16), True, True)
    if config.id_head:  # the new loop with the identifier head (ids normalisation): the ten digits and the eoc
        id_model = copy.deepcopy(model)
        install_identifier_head(language_model(id_model), [*digits, eoc])
        variants["new_id_head"] = (id_model, True, True)
    step_models = {}
    if config.compile:  # the fastest variant (bf16 when timed), its steps compiled
        variants["new_compiled"] = variants["new_bf16" if config.bf16 else "new"]
        step_models["new_compiled"] = compile_for_decoding(variants["new_compiled"][0], config.device)
    early_stop = early_stop_on(config.device)

    def run(variant: str):
        m, new, static = variants[variant]
        adapter = make_adapter(m, cache_vision=new, static_cache=static, step_model=step_models.get(variant))
        return beam_search(adapter, ids, mask, num_beams=config.num_beams, max_new_tokens=seqs.shape[1], eos_token_id=eoc,
                           constraint=constraints["new" if new else "reference"], early_stop=early_stop or not new)

    outputs = {v: run(v) for v in variants}  # warm-up, and the answers compared below
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(config.loop_repeats):  # interleaved, so drift hits every variant alike
        for variant in variants:
            start = time.perf_counter()
            run(variant)
            synchronize()
            times[variant].append(time.perf_counter() - start)
    row: dict[str, Any] = {"model": name, "batch": config.loop_batch, "beams": config.num_beams,
                           "id_tokens": int(seqs.shape[1]), "repeats": config.loop_repeats}
    for variant, ts in times.items():
        row[f"{variant}_qps"] = config.loop_batch / float(np.median(ts))
        row[f"{variant}_qps_range"] = [config.loop_batch / max(ts), config.loop_batch / min(ts)]
    row["speedup"] = row["new_qps"] / row["reference_qps"]
    row["static_cache_speedup"] = row["new_qps"] / row["new_dynamic_qps"]
    ref_top = outputs["reference"].sequences[:, 0]
    row["new_top1_equal"] = float((outputs["new"].sequences[:, 0] == ref_top).all(-1).float().mean())
    row["new_max_score_diff"] = float((outputs["new"].scores[:, 0] - outputs["reference"].scores[:, 0]).abs().max())
    if "new_compiled" in outputs:
        row["compiled_ran"] = runs_compiled(step_models["new_compiled"])  # False: the eager fallback was timed
        row["compiled_speedup"] = row["new_compiled_qps"] / row["reference_qps"]
        row["compiled_top1_equal"] = float((outputs["new_compiled"].sequences[:, 0] == ref_top).all(-1).float().mean())
    if "new_id_head" in outputs:  # against the same loop with the full head (full normalisation)
        row["id_head_speedup"] = row["new_id_head_qps"] / row["new_qps"]
        row["id_head_top1_equal"] = float((outputs["new_id_head"].sequences[:, 0] == outputs["new"].sequences[:, 0])
                                          .all(-1).float().mean())
    if "new_bf16" in outputs:
        row["bf16_speedup"] = row["new_bf16_qps"] / row["reference_qps"]
        row["bf16_top1_equal"] = float((outputs["new_bf16"].sequences[:, 0] == ref_top).all(-1).float().mean())
    log.info("loop %s", row)
    return row


def plot_latency_vs_corpus(p2: list[dict], dense: list[dict], path: Path, *, note: str = "") -> Path:
    """One log-log plot: generative (trie-constrained beam search) and dense (CLIP-FAISS) ms/query vs corpus size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r["ids"] for r in p2], [r["latency_ms"] for r in p2], "o-", label="generative (trie beam search)")
    for index in dict.fromkeys(r["index"] for r in dense):
        rows = [r for r in dense if r["index"] == index]
        ax.plot([r["corpus_size"] for r in rows], [r["latency_ms"] for r in rows], "s--", label=f"CLIP-FAISS {index}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("corpus size (images)")
    ax.set_ylabel("ms per query")
    ax.set_title("Query latency vs corpus size" + (f"\n{note}" if note else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
