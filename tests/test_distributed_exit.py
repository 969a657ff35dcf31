"""exit_process: a torchrun worker leaves with its code and its output flushed, skipping interpreter teardown."""

import os
import subprocess
import sys

import pytest

from grace.distributed import exit_process

CHILD = """
import sys, threading
from grace.distributed import exit_process
print("result line", end="")  # no newline: only an explicit flush writes it to the pipe
sys.stderr.write("log line")
threading.Thread(target=threading.Event().wait, daemon=False).start()  # a thread that never ends
exit_process(3)
"""


def test_torchrun_worker_exits_with_its_code_flushed_and_without_joining_threads():
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3  # not a hang on the non-daemon thread, not an abort
    assert proc.stdout == "result line" and proc.stderr == "log line"


def test_outside_torchrun_it_is_sys_exit(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    with pytest.raises(SystemExit) as exited:
        exit_process(2)
    assert exited.value.code == 2
