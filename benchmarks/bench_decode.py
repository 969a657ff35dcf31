"""Decoding benchmarks (not timed tests): ``python benchmarks/bench_decode.py --out runs/bench_decode``.

P1 — same model, same prompts, ``num_beams`` beams: wall time of trie-constrained vs unconstrained beam
search (target ratio <= 1.10), and the vectorised processor vs the GENRE-style reference per step
(target >= 10x). P2 — per-query latency with 1K … 1M synthetic numeric identifiers in the trie (target
flat: 1M <= 1.3x 1K), plus trie build time and memory. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import gc
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grace.infer.beam_search import CausalLMAdapter, beam_search
from grace.infer.constraint import PrefixAllowedReference, TrieLogitsProcessor
from grace.io_utils import atomic_write_text, save_config, seed_everything, write_json

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts
from bench_decode_loop import bench_loop, plot_latency_vs_corpus
from decode_fixtures import load_lm, numeric_sequences, synchronize, timed_trie

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """P1: constrained vs unconstrained beam search and vectorised vs reference processor; P2: latency vs trie size."""

    out: Path = field(default=Path("runs/bench_decode"), metadata={"help": "output folder (results.json, results.md)"})
    model: str = field(default="smollm2", metadata={"help": "smollm2 (offline SmolLM2-135M) or tiny-llama"})
    num_beams: int = field(default=10, metadata={"help": "beams"})
    batch_size: int = field(default=8, metadata={"help": "queries per search"})
    id_digits: int = field(default=6, metadata={"help": "digits of the synthetic numeric ids (P1)"})
    p1_ids: int = field(default=10000, metadata={"help": "identifiers in the P1 trie"})
    p1_repeats: int = field(default=5, metadata={"help": "timed repeats (P1)"})
    sizes: list[int] = field(default_factory=lambda: [1000, 10000, 100000, 1000000], metadata={"help": "trie sizes (P2)"})
    p2_queries: int = field(default=16, metadata={"help": "queries timed per size (P2)"})
    loop_models: list[str] = field(default_factory=lambda: ["smollm2", "tiny-effnet"], metadata={
        "help": "models of the loop benchmark (new loop vs the reference loop): smollm2, tiny-llama, or a "
                "Flamingo model config (random weights, e.g. tiny-effnet, smollm2-effnet)"})
    loop_batch: int = field(default=32, metadata={"help": "queries per search in the loop benchmark (and a 2nd P1 batch)"})
    loop_repeats: int = field(default=3, metadata={"help": "timed repeats per loop variant"})
    bf16: bool = field(default=True, metadata={"help": "also time the new loop with the model in bfloat16"})
    id_head: bool = field(default=True, metadata={
        "help": "also time the new loop with the identifier head (grace.model.id_head: logits over the identifier "
                "tokens only), against the same loop with the full head"})
    compile: bool = field(default=False, metadata={"help": "also time the new loop with its step compiled (CUDA only)"})
    dense: bool = field(default=True, metadata={"help": "time CLIP-FAISS Flat and IVF-PQ at the P2 sizes for the plot"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    seed: int = field(default=0, metadata={"help": "seed"})


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
    trie, table, _ = timed_trie(seqs)
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
        trie, table, stats = timed_trie(seqs)
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


def run_bench(config: BenchConfig, argv: list[str] | None = None) -> dict:
    """Every section of the decoding benchmark (gradients off inside, restored after); ``argv``: the command's
    arguments for the result's provenance (None: this process's)."""
    with torch.no_grad():
        return _run_bench(config, argv)


def _run_bench(config: BenchConfig, argv: list[str] | None) -> dict:
    from grace.experiments.report import markdown_table
    from grace.provenance import provenance_lines, script_provenance

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
               "fallbacks": recorded_fallbacks(), **script_provenance(__file__, argv)}
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
            + f"\n![latency vs corpus size]({plot.name})\n\n" + "\n".join(provenance_lines(results)) + "\n")
    atomic_write_text(out / "results.md", text)
    print((out / "results.md").read_text())
    return results


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/bench_decode.py [--flags of BenchConfig]``."""
    from grace.config import command_line, dataclass_from_args

    parser = command_line(BenchConfig, __doc__.splitlines()[0])
    run_bench(dataclass_from_args(BenchConfig, parser.parse_args(argv)), argv)


if __name__ == "__main__":
    main()
