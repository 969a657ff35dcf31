"""The ``grace`` console command: one subcommand per pipeline stage.

Each stage package has a ``cli.py`` with ``register(subparsers)`` that adds its subcommands; handlers
import their heavy dependencies lazily so ``grace --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from grace.errors import GraceError

STAGE_CLIS = (
    "grace.data_process.cli",
    "grace.identifiers.cli",
    "grace.train.cli",
    "grace.experiments.cli",
    "grace.retrieval_baselines.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from grace.config import CommandParser  # every subcommand's parser is one (grace.config.add_command)

    parser = CommandParser(prog="grace", description="Generative cross-modal retrieval.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in STAGE_CLIS:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except GraceError as exc:
        print(f"grace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("grace: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The console script: :func:`main`, then an exit that a torchrun worker cannot turn into an abort."""
    from grace.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":  # pragma: no cover
    run()
