"""GRACE training: i2id/t2id shards → DeepSpeed ZeRO-3 → resumable checkpoints → self-contained ``export/``.

``train(TrainConfig(...)) -> TrainResult`` works in-process (1 process) and in every ``torchrun`` process;
``grace train --config run.yaml`` is the CLI over it.
"""

from grace.train.config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult", "train"]


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) one run; see :func:`grace.train.trainer.train`."""
    from grace.train.trainer import train as _train

    return _train(config)
