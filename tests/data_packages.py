"""Tests that read the Debian data packages (Noto emoji font, CLDR, openclipart-svg): skipped where they are
missing, but failed when ``GRACE_REQUIRE_DATA`` is set (CI: ``scripts/setup_env.sh`` installs them), so a
broken set-up cannot pass as green."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from grace.data_process.emoji import CLDR_DIR, FONT_PATH
from grace.data_process.openclipart import SVG_ROOT

EMOJI = ((FONT_PATH, CLDR_DIR), "apt-get install fonts-noto-color-emoji unicode-cldr-core")
CLDR = ((CLDR_DIR,), "apt-get install unicode-cldr-core")
OPENCLIPART = ((SVG_ROOT,), "apt-get install openclipart-svg")


def missing(packages: tuple) -> list[str]:
    """The paths of ``packages`` (``(paths, install hint)``) that are not on this machine."""
    return [str(path) for path in packages[0] if not Path(path).exists()]


def require(packages: tuple) -> None:
    """Inside a test or fixture: skip (or, under GRACE_REQUIRE_DATA, fail) when ``packages`` are missing."""
    absent = missing(packages)
    if absent and os.environ.get("GRACE_REQUIRE_DATA"):
        pytest.fail(f"GRACE_REQUIRE_DATA is set but {', '.join(absent)} are missing ({packages[1]})")
    if absent:
        pytest.skip(packages[1])


def needs(packages: tuple):
    """Decorator form of :func:`require` for a test function."""
    def decorate(test):
        if not missing(packages):
            return test

        @functools.wraps(test)
        def run(*args, **kwargs):
            require(packages)

        return run
    return decorate
