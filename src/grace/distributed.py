"""Process-group teardown shared by every stage that may run under ``torchrun`` (train, eval)."""

from __future__ import annotations


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
