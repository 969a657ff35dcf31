"""PLAID through colbert-ai 0.2.22's own components, fed with our precomputed token embeddings.

colbert-ai's ``Indexer``/``Searcher`` load a ColBERT checkpoint (with transformers 5 its ``HF_ColBERT``
dies in the forked indexing process and the parent hangs). We compute embeddings ourselves, so we reuse
the PLAID machinery only:

- indexing: :class:`colbert.indexing.collection_indexer.CollectionIndexer` (plan → faiss k-means
  centroids → :class:`ResidualCodec` with ``nbits`` residuals → chunks → centroid→passage IVF), with
  its checkpoint replaced by a lookup of our embeddings; in-process, no fork, no saver thread;
- search: :class:`colbert.search.index_storage.IndexScorer` (centroid candidate generation, centroid
  pruning, residual decompression, exact MaxSim on the survivors).

CPU search needs colbert's C++ extensions, JIT-compiled by torch (ninja + g++). They are compiled in a
subprocess with a timeout first (a stale torch-extensions lock would otherwise block forever);
:func:`plaid_available` is False when that fails, and callers fall back to exact search (logged).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from grace.errors import GraceError, InputError

log = logging.getLogger(__name__)
MIN_EMBEDDINGS = 64
_WARMUP = ("from colbert.search.index_storage import IndexScorer\n"
           "from colbert.modeling.colbert import ColBERT\n"
           "IndexScorer.try_load_torch_extensions(False)\nColBERT.try_load_torch_extensions(False)\n")
_STATE: dict[str, object] = {}


def plaid_available(timeout: float = 900.0) -> bool:
    """True when colbert-ai imports and its CPU extensions build/load (checked once per process)."""
    if "ok" not in _STATE:
        try:
            import colbert  # noqa: F401
            import faiss  # noqa: F401
        except ImportError as exc:
            _STATE["ok"], _STATE["why"] = False, f"{exc.name} is not installed (pip install grace[baselines])"
            return False
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        try:
            proc = subprocess.run([sys.executable, "-c", _WARMUP], capture_output=True, text=True, timeout=timeout,
                                  env=env, check=False)
            ok, why = proc.returncode == 0, (proc.stderr.strip().splitlines() or ["?"])[-1]
        except subprocess.TimeoutExpired:
            ok, why = False, (f"building colbert's C++ extensions took over {timeout:.0f}s "
                              "(stale lock in ~/.cache/torch_extensions?)")
        _STATE["ok"], _STATE["why"] = ok, why
    return bool(_STATE["ok"])


def unavailable_reason() -> str:
    return str(_STATE.get("why", ""))


@contextlib.contextmanager
def _quiet():
    """colbert prints progress to stdout; send it to the debug log instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        log.debug("colbert: %s", line)


def _precomputed_indexer(config, packed: torch.Tensor, doclens: list[int]):
    """A CollectionIndexer whose 'checkpoint' is a lookup into our packed embeddings."""
    from colbert.data.collection import Collection
    from colbert.indexing.collection_indexer import CollectionIndexer
    from colbert.indexing.index_saver import IndexSaver

    offsets = np.concatenate([[0], np.cumsum(doclens)])

    class _Encoder:
        def encode_passages(self, pids):
            pids = list(pids)
            rows = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in pids]) if pids else np.zeros(0, int)
            return packed[torch.as_tensor(rows, dtype=torch.long)].float(), [doclens[p] for p in pids]

    class _Indexer(CollectionIndexer):
        def __init__(self):  # no checkpoint, no GPU
            self.verbose, self.config = 0, config
            self.rank, self.nranks, self.use_gpu = 0, 1, False
            self.collection = Collection(data=list(range(len(doclens))))
            self.encoder, self.saver = _Encoder(), IndexSaver(config)

        def index(self):  # the parent saves through a thread that can block forever on errors
            codec = self.saver.load_codec()
            for chunk_idx, offset, pids in self.collection.enumerate_batches(rank=0):
                embs, lengths = self.encoder.encode_passages(pids)
                self.saver._write_chunk_to_disk(chunk_idx, offset, codec.compress(embs.half()), lengths)

    return _Indexer()


def build_plaid(out_dir: str | Path, packed: torch.Tensor, doclens: list[int], *, nbits: int = 2,
                kmeans_niters: int = 4, seed: int = 0) -> dict:
    """Write a colbert-ai PLAID index of packed (ΣL, dim) embeddings into ``out_dir``; returns its metadata."""
    if len(doclens) == 0:
        raise InputError("the collection is empty: nothing to index")
    if len(packed) < MIN_EMBEDDINGS:
        raise InputError(f"PLAID needs at least {MIN_EMBEDDINGS} token embeddings, got {len(packed)}; use --backend exact")
    dim = int(packed.shape[1])
    if dim % (8 * nbits):
        raise GraceError(f"PLAID with nbits={nbits} needs dim divisible by {8 * nbits}, got {dim}")
    from colbert.infra.config import ColBERTConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = ColBERTConfig(dim=dim, nbits=nbits, kmeans_niters=kmeans_niters, index_path=str(out_dir),
                           doc_maxlen=max(doclens), avoid_fork_if_possible=True, rank=0, nranks=1, gpus=0)
    random.seed(seed)
    torch.manual_seed(seed)
    with _quiet():
        _precomputed_indexer(config, packed.half(), list(map(int, doclens))).run(shared_lists=[[None]])
    from grace.io_utils import read_json

    return read_json(out_dir / "metadata.json")


class PlaidSearcher:
    """colbert-ai's IndexScorer over a PLAID folder; ``search`` takes one query's valid tokens."""

    def __init__(self, plaid_dir: str | Path, *, ncells: int | None = None, centroid_score_threshold: float | None = None,
                 ndocs: int | None = None):
        if not plaid_available():
            raise GraceError(f"PLAID search is unavailable: {unavailable_reason()}")
        from colbert.infra.config import ColBERTConfig
        from colbert.modeling.colbert import ColBERT
        from colbert.search.index_storage import IndexScorer

        plaid_dir = Path(plaid_dir)
        if not (plaid_dir / "metadata.json").is_file():
            raise InputError("no PLAID index here (metadata.json missing)", path=plaid_dir)
        with _quiet():
            ColBERT.try_load_torch_extensions(False)
            self.scorer = IndexScorer(str(plaid_dir), use_gpu=False)
        self.config = ColBERTConfig.load_from_index(str(plaid_dir))
        self.num_docs = len(self.scorer.doclens)
        self.overrides = {"ncells": ncells, "centroid_score_threshold": centroid_score_threshold, "ndocs": ndocs}

    def _settings(self, k: int) -> dict:
        """colbert's Searcher.dense_search defaults by k, with our overrides."""
        base = (1, 0.5, 256) if k <= 10 else (2, 0.45, 1024) if k <= 100 else (4, 0.4, max(k * 4, 4096))
        chosen = dict(zip(("ncells", "centroid_score_threshold", "ndocs"), base))
        chosen.update({key: v for key, v in self.overrides.items() if v is not None})
        return chosen

    def search(self, q: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        """Top-``k`` (document rows, scores) for one query (Lq, dim)."""
        self.config.configure(query_maxlen=int(q.shape[0]), **self._settings(k))
        with torch.inference_mode(), _quiet():
            pids, scores = self.scorer.rank(self.config, q.float()[None].contiguous())
        return [int(p) for p in pids[:k]], [float(s) for s in scores[:k]]
