"""A training checkpoint (``OUT/checkpoints/stepNNNNNNNN``, DeepSpeed's layout) → the model's full state dict,
in one process and without a process group: what ``grace eval --checkpoints`` loads into the export's model.

At ZeRO stages 0-2 ``mp_rank_00_model_states.pt`` holds the whole module; at stage 3 the parameters live in
the per-rank optimizer partitions (beside ``zero_pp_rank_*_mp_rank_00_model_states.pt``), which DeepSpeed's
``zero_to_fp32`` reassembles. Both
files are the run's own (``torch.load`` with pickles, as DeepSpeed itself reads them): evaluate checkpoints you
trained, not downloaded ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from grace.errors import InputError

MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # stages 0-2, 3


def _model_states(tag_dir: Path) -> Path | None:
    return next((tag_dir / name for name in MODEL_STATES if (tag_dir / name).is_file()), None)


def checkpoint_step(tag_dir: Path) -> int:
    """The optimizer step of a ``stepNNNNNNNN`` checkpoint folder."""
    match = re.fullmatch(r"step(\d+)", Path(tag_dir).name)
    if not match:
        raise InputError("not a training checkpoint folder (stepNNNNNNNN)", path=tag_dir)
    return int(match.group(1))


def checkpoint_folders(ckpt_root: Path) -> list[Path]:
    """Every complete checkpoint under ``OUT/checkpoints`` (its model states written), oldest first."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        raise InputError("no checkpoints folder (train with --checkpoint-every N --keep-checkpoints 0 to keep "
                         "them)", path=ckpt_root)
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and re.fullmatch(r"step\d+", p.name)
             and _model_states(p) is not None]
    if not found:
        raise InputError("no complete checkpoint (stepNNNNNNNN/ with model states)", path=ckpt_root)
    return sorted(found, key=checkpoint_step)


def consolidated_state_dict(tag_dir: Path) -> dict[str, torch.Tensor]:
    """The full state dict of the model saved in ``tag_dir`` (ZeRO-3 partitions reassembled), on the CPU."""
    tag_dir = Path(tag_dir)
    path = _model_states(tag_dir)
    if path is None:
        raise InputError("no model states in this checkpoint", path=tag_dir)
    try:
        states = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise InputError(f"cannot read the model states: {str(err).splitlines()[0]}", path=tag_dir) from None
    stage = int((states.get("ds_config") or {}).get("zero_optimization", {}).get("stage", 0))
    if stage < 3:
        return {name: tensor for name, tensor in states["module"].items() if tensor is not None}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        return get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot reassemble the ZeRO-3 partitions: {str(err).splitlines()[0]}", path=tag_dir) from None
