"""The process group of a ``torchrun`` launch, shared by every stage that may run under it (train, eval):
joining it, this process's rank, its teardown and the process exit."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when ``torchrun`` launched several processes (gloo on CPU, nccl on a GPU) and
    return ``(rank, world size)``; one process stays without a group. (Training joins through DeepSpeed:
    ``grace.train.engine.init_deepspeed``.)"""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return rank_and_world()


def close_distributed() -> None:
    """Wait for every rank, then tear the process group down (no-op without one).

    A rank that exits while its gloo group is alive can abort at interpreter shutdown ("terminate called without
    an active exception") after its work is done, so a command that started the group closes it before it returns.
    Never call it after a failure: the other ranks may never reach the barrier.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    """True in a worker that ``torchrun`` (``torch.distributed.run``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``; a torchrun worker skips the interpreter's teardown.

    Even after :func:`close_distributed`, a gloo or DeepSpeed background thread can still be joinable when the
    interpreter destroys it at exit, and ``std::terminate`` then turns a finished, successful rank into a SIGABRT
    (about one run in 50 on 2 CPU cores). A torchrun worker therefore flushes its streams and logs and leaves with
    ``os._exit``: every result is already written and closed by then. Outside torchrun this is ``sys.exit``.
    """
    if not launched_by_torchrun():
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe must not change the exit code
            pass
    os._exit(code)
