"""Process-group teardown shared by every stage that may run under ``torchrun`` (train, eval)."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


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
