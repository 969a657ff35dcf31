"""``grace train``: a thin driver over :class:`grace.train.TrainConfig` (run it under torchrun for N processes)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from grace.config import add_command
    from grace.train.config import TrainConfig

    add_command(subparsers, "train", TrainConfig, _run,
                help="train a GRACE model with DeepSpeed ZeRO-3 (torchrun --nproc_per_node N -m grace.cli train …)",
                description="Train on i2id/t2id shards; checkpoints in OUTPUT_DIR/checkpoints, model in "
                            "OUTPUT_DIR/export.")


def _run(args: argparse.Namespace) -> int:
    import os

    from grace.config import dataclass_from_args
    from grace.distributed import close_distributed
    from grace.train import TrainConfig, train

    cfg = dataclass_from_args(TrainConfig, args)
    cfg.validate()
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        print(f"trained steps {result.start_step}->{result.steps[-1] if result.steps else result.start_step}, "
              f"final loss {last}, {result.seconds_per_step:.3f} s/step, export: {result.export_dir}")
    close_distributed()  # the command started the group (train() does under torchrun or alone)
    return 0
