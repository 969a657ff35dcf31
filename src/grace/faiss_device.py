"""Where faiss runs: on its GPUs when the installed faiss is a GPU build (``grace[gpu]``: faiss-gpu) and sees a
device, else on the CPU (``grace[cpu]``: faiss-cpu). The k-means of structured and rq identifiers and the dense
index's build and search ask here, log the answer once per process, and write it into their config files.

The two faiss wheels install the same ``faiss`` package and must not be installed together, so neither is a
dependency of ``grace[train]`` or ``grace[baselines]``: an environment chooses one (setup_env.sh and the env
files choose ``cpu``; envs/*-gpu.yml choose ``gpu``).
"""

from __future__ import annotations

import logging

from grace.errors import GraceError

log = logging.getLogger(__name__)
_LOGGED: set[str] = set()


def import_faiss():
    """The faiss module, or a one-line error naming the two extras that install it."""
    try:
        import faiss
    except ImportError as exc:
        raise GraceError("faiss is not installed: pip install 'grace[cpu]' (faiss-cpu) or, with CUDA 12 GPUs, "
                         "'grace[gpu]' (faiss-gpu-cu12); never both") from exc
    return faiss


def faiss_gpus() -> int:
    """GPUs the installed faiss can use (0 for faiss-cpu, or a GPU build that sees no device)."""
    faiss = import_faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def faiss_device(what: str, use_gpu: bool = True) -> str:
    """``"gpu"`` or ``"cpu"``: where ``what`` (e.g. "k-means", "dense index") runs; logged once per process."""
    gpus = faiss_gpus() if use_gpu else 0
    device = "gpu" if gpus else "cpu"
    if (what, device) not in _LOGGED:
        _LOGGED.add((what, device))
        where = f"{gpus} GPU(s)" if gpus else ("the CPU (GPU use turned off)" if not use_gpu and faiss_gpus()
                                             else "the CPU")
        log.info("faiss %s %s on %s", import_faiss().__version__, what, where)
    return device
