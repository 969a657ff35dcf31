"""Where one trie-constrained beam search spends its time: torch.profiler's top operators, for the static beam
KV cache (the default) and transformers' DynamicCache, on the same model, prompts and trie as the loop
benchmark of ``benchmarks/bench_decode.py``.

    python benchmarks/profile_decode.py --model smollm2 --batch 32 --beams 10
"""

from __future__ import annotations

import argparse

import torch
from bench_decode_loop import _prompts, load_loop_model  # (run as a script: benchmarks/ is on sys.path)
from decode_fixtures import numeric_sequences, timed_trie
from torch.profiler import ProfilerActivity, profile

from grace.infer.beam_search import beam_search
from grace.infer.constraint import TrieLogitsProcessor
from grace.infer.retriever import make_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny-llama or a Flamingo config (tiny-effnet)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--ids", type=int, default=10_000, help="numeric identifiers in the trie")
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    args = parser.parse_args()
    model, digits, eoc, image_token = load_loop_model(args.model, "cpu")
    seqs = numeric_sequences(args.ids, 6, digits, eoc, 0)
    _, table, _ = timed_trie(seqs)
    ids, mask = _prompts(args.batch, image_token, "cpu", 0)
    constraint = TrieLogitsProcessor(table)
    for static in (True, False):
        def run(static=static):
            return beam_search(make_adapter(model, static_cache=static), ids, mask, num_beams=args.beams,
                               max_new_tokens=seqs.shape[1], eos_token_id=eoc, constraint=constraint)

        with torch.no_grad():
            run()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"## {'static beam cache' if static else 'DynamicCache'}: {total / 1e6:.3f} s self CPU")
        for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
            print(f"  {event.key:<48} {100 * event.self_cpu_time_total / total:5.1f}%  {event.count:6d} calls")


if __name__ == "__main__":
    main()
