"""``grace bench decode``: decoding benchmarks (not timed tests).

P1 — same model, same prompts, ``num_beams`` beams: wall time of trie-constrained vs unconstrained beam
search (target ratio <= 1.10), and the vectorised processor vs the GENRE-style reference per step
(target >= 10x). P2 — per-query latency with 1K … 1M synthetic numeric identifiers in the trie (target
flat: 1M <= 1.3x 1K), plus trie build time and memory. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grace.infer.beam_search import CausalLMAdapter, beam_search
from grace.infer.configs import BenchConfig
from grace.infer.constraint import PrefixAllowedReference, TrieLogitsProcessor
from grace.io_utils import atomic_write_text, save_config, seed_everything, write_json

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def numeric_sequences(n: int, digits: int, digit_tokens: list[int], eoc: int, seed: int) -> np.ndarray:
    """``n`` distinct random ``digits``-digit numbers as digit-token sequences + eoc, (n, digits+1)."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(10**digits, size=n, replace=False)
    table = np.asarray(digit_tokens, dtype=np.int64)
    cols = [(numbers // 10**p) % 10 for p in range(digits - 1, -1, -1)]
    return np.concatenate([table[np.stack(cols, 1)], np.full((n, 1), eoc, dtype=np.int64)], axis=1)


def build_trie(seqs: np.ndarray) -> tuple[Any, Any, dict]:
    """(trie, transition table, {"build_s", "rss_mb", "table_mb", "impl"})."""
    gc.collect()
    rss0, t0 = _rss_mb(), time.perf_counter()
    from grace.identifiers.trie import Trie

    trie, impl = Trie(seqs.tolist()), "grace.identifiers.Trie (marisa-trie)"
    table = trie.transitions()
    build_s = time.perf_counter() - t0
    table_mb = sum(np.asarray(getattr(table, k)).nbytes for k in ("offsets", "tokens", "children")) / 2**20
    return trie, table, {"build_s": build_s, "rss_mb": _rss_mb() - rss0, "table_mb": table_mb, "impl": impl}


def load_lm(name: str, device: str) -> tuple[Any, list[int], int]:
    """(model, digit token ids, eoc id): SmolLM2-135M offline, or a tiny random Llama."""
    if name == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from grace.data_process.encoders import smollm2_gguf

        folder, gguf = smollm2_gguf()
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
        digits = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
        return model.eval().to(device), digits, int(tok.eos_token_id)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval().to(device), list(range(32, 42)), 2


def synchronize() -> None:
    """Wait for queued GPU work (a no-op on CPU), so a timer stops when the work is done."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _prompts(batch: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 5000, (batch, 12), generator=gen)
    return ids.to(device), torch.ones_like(ids)


def bench_p1(model, digits, eoc, config: BenchConfig, batch_size: int | None = None) -> dict:
    batch_size = batch_size or config.batch_size
    seqs = numeric_sequences(config.p1_ids, config.id_digits, digits, eoc, config.seed)
    trie, table, _ = build_trie(seqs)
    proc = TrieLogitsProcessor(table, device=config.device)
    ids, mask = _prompts(batch_size, config.device, config.seed)
    steps = seqs.shape[1]

    def run(constraint, eos):
        return beam_search(CausalLMAdapter(model), ids, mask, num_beams=config.num_beams, max_new_tokens=steps,
                           eos_token_id=eos, constraint=constraint)

    constrained = _time(lambda: run(proc, eoc), config.p1_repeats)
    unconstrained = _time(lambda: run(None, -1), config.p1_repeats)  # never finishes early: same step count
    # per-step processor cost on realistic states: rows at every depth of random trie paths
    rows = batch_size * config.num_beams
    vocab = model.config.vocab_size
    scores = torch.randn(rows, vocab, device=config.device)
    paths = torch.as_tensor(seqs[np.random.default_rng(1).integers(0, len(seqs), rows)], device=config.device)
    ref = PrefixAllowedReference(trie, prompt_len=0)
    fast_t, ref_t = [], []
    for depth in range(steps):
        state = proc.init_state(rows)
        for d in range(depth):
            state = proc.advance(state, paths[:, d])
        prefix, chosen = paths[:, :depth], paths[:, depth]
        # one step's constraint work: mask the scores, then move every row to its child for the chosen token
        fast_t.append(_time(lambda st=state, ch=chosen: (proc.apply(None, scores, st), proc.advance(st, ch)), 20))
        ref_t.append(_time(lambda pre=prefix: ref.apply(pre, scores), 5))
    fast_ms, ref_ms = 1000 * float(np.mean(fast_t)), 1000 * float(np.mean(ref_t))
    return {"ids": config.p1_ids, "id_tokens": steps, "beams": config.num_beams, "batch": batch_size,
            "constrained_s": constrained, "unconstrained_s": unconstrained, "ratio": constrained / unconstrained,
            "processor_ms_per_step": fast_ms, "reference_ms_per_step": ref_ms, "speedup": ref_ms / fast_ms}


def bench_p2(model, digits, eoc, config: BenchConfig) -> list[dict]:
    digits_needed = max(len(str(max(config.sizes))), config.id_digits)
    ids, mask = _prompts(config.p2_queries, config.device, config.seed + 1)
    rows = []
    for size in config.sizes:
        seqs = numeric_sequences(size, digits_needed, digits, eoc, config.seed)
        trie, table, stats = build_trie(seqs)
        proc = TrieLogitsProcessor(table, device=config.device)
        steps = seqs.shape[1]
        del seqs
        seconds = _time(lambda p=proc, n=steps: beam_search(CausalLMAdapter(model), ids, mask, num_beams=config.num_beams,
                                                            max_new_tokens=n, eos_token_id=eoc, constraint=p), 3)
        row = {"ids": size, "latency_ms": 1000 * seconds / config.p2_queries, "trie_build_s": stats["build_s"],
               "trie_rss_mb": stats["rss_mb"], "table_mb": stats["table_mb"], "impl": stats["impl"]}
        log.info("P2 %s", row)
        rows.append(row)
        del trie, table, proc
        gc.collect()
    base = rows[0]["latency_ms"]
    for row in rows:
        row["vs_smallest"] = row["latency_ms"] / base
    return rows


def run_bench(config: BenchConfig) -> dict:
    """Every section of ``grace bench decode`` (gradients off inside, restored after)."""
    with torch.no_grad():
        return _run_bench(config)


def _run_bench(config: BenchConfig) -> dict:
    from grace.infer.bench_loop import bench_loop, plot_latency_vs_corpus
    from grace.infer.report import markdown_table

    seed_everything(config.seed)
    model, digits, eoc = load_lm(config.model, config.device)
    env = {"device": config.device, "cpu": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "model": config.model}
    p1_all = [bench_p1(model, digits, eoc, config, batch) for batch in dict.fromkeys([config.batch_size, config.loop_batch])]
    for p1 in p1_all:
        print(f"P1 batch {p1['batch']}: constrained/unconstrained = {p1['ratio']:.3f}; processor "
              f"{p1['processor_ms_per_step']:.3f} ms/step vs reference {p1['reference_ms_per_step']:.3f} ms/step "
              f"({p1['speedup']:.1f}x)")
    p2 = bench_p2(model, digits, eoc, config)
    del model
    loop = [bench_loop(name, config) for name in config.loop_models]
    dense = []
    if config.dense:
        from grace.retrieval_baselines.clip_faiss.latency import latency_rows

        dense = latency_rows(config.sizes, dim=256, num_queries=config.p2_queries, batch_size=config.p2_queries,
                             seed=config.seed, use_gpu=config.device != "cpu", progress=False)
    from grace.fallbacks import recorded_fallbacks

    results = {"env": env, "p1": p1_all[0], "p1_batches": p1_all, "p2": p2, "loop": loop, "dense": dense,
               "fallbacks": recorded_fallbacks()}
    out = Path(config.out)
    write_json(out / "results.json", results)
    save_config(out, config)
    plot = plot_latency_vs_corpus(p2, dense, out / "latency_vs_corpus.png",
                                  note=f"{config.model}, {config.num_beams} beams; {config.p2_queries} queries per batch")
    p1_keys = [k for k in p1_all[0] if k != "batch"]
    p1_rows = [{"metric": k, **{f"batch {p['batch']}": p[k] for p in p1_all}} for k in p1_keys]
    loop_cols = (["model", "batch", "beams", "reference_qps", "new_dynamic_qps", "new_qps", "speedup", "static_cache_speedup",
                  "new_top1_equal", "new_max_score_diff"]
                 + (["new_bf16_qps", "bf16_speedup", "bf16_top1_equal"] if config.bf16 else [])
                 + (["new_id_head_qps", "id_head_speedup", "id_head_top1_equal"] if config.id_head else [])
                 + (["new_compiled_qps", "compiled_ran", "compiled_speedup", "compiled_top1_equal"] if config.compile else []))
    text = (f"# Decoding benchmarks\n\nEnvironment: {env}.\n\n## P1 (targets: ratio <= 1.10, speedup >= 10)\n\n"
            + markdown_table(p1_rows, ["metric"] + [f"batch {p['batch']}" for p in p1_all])
            + "\n## Loop: new vs reference loop, queries/s (target: speedup >= 2 at beam 10, batch 32)\n\n"
            + markdown_table(loop, loop_cols)
            + "\n## P2: latency vs trie size (target: 1M <= 1.3x 1K)\n\n"
            + markdown_table(p2, ["ids", "latency_ms", "vs_smallest", "trie_build_s", "trie_rss_mb", "table_mb", "impl"])
            + (("\n## Dense retrieval at the same sizes (CLIP-FAISS, synthetic 256-d vectors, same batch)\n\n"
                + markdown_table(dense, ["index", "faiss", "corpus_size", "latency_ms", "recall_vs_flat"])) if dense else "")
            + f"\n![latency vs corpus size]({plot.name})\n")
    atomic_write_text(out / "results.md", text)
    print((out / "results.md").read_text())
    return results
