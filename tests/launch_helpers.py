"""How tests launch ``torchrun``: on a free port, so parallel or back-to-back launches never collide."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_prefix(nproc: int) -> list[str]:
    """``torchrun --nproc_per_node N --master_port <free>``; append a script (or ``-m module``) and its args."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(free_port())]


#: what an in-process run of this pytest process may have set in os.environ (its MASTER_PORT stays bound here)
PROCESS_GROUP_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def without_process_group(env: dict) -> dict:
    """``env`` for a child process, without this process's process-group variables."""
    return {k: v for k, v in env.items() if k not in PROCESS_GROUP_VARIABLES}
