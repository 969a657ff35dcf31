"""What the decoding benchmarks share: synthetic numeric identifiers, their trie (timed), the bare LMs, and a
GPU-aware timer stop. ``bench_decode.py`` (P1, P2) and ``bench_decode_loop.py`` (the decode loop) import it."""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np
import torch


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


def timed_trie(seqs: np.ndarray) -> tuple[Any, Any, dict]:
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
