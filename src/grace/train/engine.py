"""DeepSpeed plumbing: process group, ZeRO-3 config, model/tokenizer, resumable state, consolidated export."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grace.errors import GraceError, InputError
from grace.io_utils import read_json, save_config, write_json

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"
STATE_NAME = "trainer_state_rank{rank}.json"


# ---------------------------------------------------------------- process group
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_libraries() -> None:
    """Silence torch.distributed deprecation warnings and DeepSpeed's info logs (once per step otherwise)."""
    import warnings

    import deepspeed

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    deepspeed.utils.logger.setLevel(logging.WARNING)


def init_deepspeed(device: str) -> tuple[int, int, int]:
    """Start (or join) the process group through DeepSpeed and return ``(rank, world size, local rank)``; a plain
    ``python`` run becomes a 1-process group (``grace.distributed.init_distributed`` is the one without DeepSpeed).

    Without RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT DeepSpeed would look for mpi4py, so set them.
    """
    import deepspeed
    import torch.distributed as dist

    quiet_libraries()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GraceError("train: device=cuda but no CUDA GPU is visible")
    return device


# ---------------------------------------------------------------- DeepSpeed config
def zero_stage(cfg: Any, world_size: int, file_stage: int | None = None) -> int:
    """The ZeRO stage a run uses: ``cfg.zero_stage`` when set (0-3); else the stage of a user's DeepSpeed
    JSON; else 3 across several processes (GRACE's setting) and 0 for one, where partitioning only costs."""
    stage = getattr(cfg, "zero_stage", -1)
    if stage is not None and stage >= 0:
        return int(stage)
    if getattr(cfg, "deepspeed_config", None) and file_stage is not None:
        return int(file_stage)
    return 3 if world_size > 1 else 0


def deepspeed_config(cfg: Any, device: str, world_size: int = 1) -> dict:
    """The packaged ZeRO JSON (or ``cfg.deepspeed_config``) with its "auto" values filled from ``cfg`` and
    the stage chosen by :func:`zero_stage`."""
    default = CONFIG_DIR / ("deepspeed_gpu.json" if device == "cuda" else "deepspeed_cpu.json")
    path = Path(cfg.deepspeed_config) if cfg.deepspeed_config else default
    config = copy.deepcopy(read_json(path))
    auto = {"train_micro_batch_size_per_gpu": cfg.batch_size_i2id + cfg.batch_size_t2id,
            "gradient_accumulation_steps": cfg.grad_accum, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "warmup_max_lr": cfg.lr, "warmup_num_steps": max(1, cfg.warmup_steps),
            "total_num_steps": max(cfg.steps, cfg.warmup_steps + 1)}

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (auto[k] if v == "auto" and k in auto else fill(v)) for k, v in node.items()}
        return node

    config = fill(config)
    zero = config.setdefault("zero_optimization", {})
    zero["stage"] = zero_stage(cfg, world_size, zero.get("stage"))
    if zero["stage"] < 3:  # stage-3-only keys would be ignored with a warning
        for key in [k for k in zero if k.startswith("stage3_")]:
            zero.pop(key)
    config.pop("train_batch_size", None)  # derived from micro batch × accumulation × world size
    leftover = [k for k, v in _walk(config) if v == "auto"]
    if leftover:
        raise InputError(f"unsupported 'auto' values {leftover}", path=path)
    if device == "cpu":
        if config.get("bf16", {}).get("enabled") not in (None, False):
            from grace.fallbacks import record_fallback

            record_fallback("training precision", "bf16", "fp32", "bf16 is switched off on a CPU")
        config.setdefault("bf16", {})["enabled"] = False
        config.setdefault("fp16", {})["enabled"] = False
    return config


def _walk(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node


def skip_lone_allreduce(engine: Any, world_size: int) -> None:
    """One process at ZeRO stage 0 has nothing to all-reduce, yet DeepSpeed's backward still flattens every
    gradient into buckets, reduces them over the 1-process group and copies them back, each step. Turn that
    off there (the update is the same: the mean over one process is the gradient)."""
    if world_size == 1 and engine.zero_optimization_stage() == 0:
        engine.enable_backward_allreduce = False


# ---------------------------------------------------------------- model and tokenizer
def load_tokenizer(cfg: Any) -> Any:
    """The ONE tokenizer saved with the identifiers (``ids_dir/tokenizer``)."""
    from grace.identifiers import IdentifierTokenizer

    if cfg.ids_dir is None:
        raise GraceError("train: ids_dir is required (its tokenizer/ is the one used for training and inference)")
    tok_dir = Path(cfg.ids_dir) / "tokenizer"
    if not tok_dir.is_dir():
        raise InputError("no tokenizer/ folder in the ids folder", path=cfg.ids_dir)
    return IdentifierTokenizer.load(tok_dir)


def create_model(spec: str, tokenizer: Any, ds_config: dict | None = None, world_size: int = 1, *,
                 with_encoder: bool = True, trust_remote_code: bool = False,
                 output_head: str | None = None) -> tuple[Any, Any]:
    """``(model, frozen vision encoder or None)``: a grace.model Flamingo from a config name or JSON path,
    its encoder built apart so ZeRO neither partitions nor optimises it (and only ``with_encoder``: a run on
    a features cache never calls it). ``output_head`` (full|ids) overrides the config's.

    Under ZeRO-3 across several processes the model is built inside ``deepspeed.zero.Init`` (transformers is
    told, so ``from_pretrained``/``from_config`` and the embedding resize work on partitions): no rank ever
    holds all of it. One process holds it all anyway, and is built as at stage 0 (same init, same loss
    curve). LoRA is the exception: peft's injection reads full base weights, so that model is partitioned by
    ``deepspeed.initialize`` instead (its LM is frozen, so only the parameters' memory is at stake).
    """
    from grace.model import create_model as build_model
    from grace.model.config import resolve_config

    config = resolve_config(spec, **({"output_head": output_head} if output_head else {}))
    encoder = None
    if config.vision_encoder and with_encoder:
        from grace.model.vision import create_vision_encoder

        encoder = create_vision_encoder(config.vision_encoder).requires_grad_(False).eval()
    stage = (ds_config or {}).get("zero_optimization", {}).get("stage", 0)
    if stage != 3 or world_size == 1 or config.lm_training == "lora":
        return build_model(config, tokenizer=tokenizer, vision_encoder=None,
                           trust_remote_code=trust_remote_code), encoder
    import deepspeed
    import torch._dynamo  # noqa: F401 -- imported under zero.Init (lazily, by transformers) it fails on the
    from transformers import GenerationMixin  # noqa: F401 -- patched tensor constructors; import both first
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    hf_config = HfDeepSpeedConfig(ds_config)  # noqa: F841 (transformers keeps only a weak reference)
    try:  # transformers builds (and loads) the LM under its own zero.Init; ours covers the Flamingo modules
        model = build_model(config, tokenizer=tokenizer, vision_encoder=None, trust_remote_code=trust_remote_code,
                            init_context=lambda: deepspeed.zero.Init(config_dict_or_path=ds_config))
    finally:
        unset_hf_deepspeed_config()
    whole = [n for n, p in model.named_parameters() if not _is_partitioned(p)]
    if whole:  # e.g. a GGUF LM: transformers dequantises it in full, outside zero.Init; partition it now
        log.info("ZeRO-3: partitioning %d parameters built outside zero.Init (%s, ...)", len(whole), whole[0])
        deepspeed.zero.Init(module=model, config_dict_or_path=ds_config)
    return model, encoder


def _is_partitioned(param: torch.Tensor) -> bool:
    """A ZeRO-3 parameter (converted by ``zero.Init``): its data is this rank's partition only."""
    return hasattr(param, "ds_id")


def partitioned(model: Any) -> bool:
    """Whether ZeRO-3 holds this model's parameters in partitions (built under ``zero.Init``)."""
    return any(_is_partitioned(p) for p in model.parameters())


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    params = model.trainable_parameters() if hasattr(model, "trainable_parameters") else model.parameters()
    params = [p for p in params if isinstance(p, torch.nn.Parameter) and p.requires_grad]
    if not params:
        raise GraceError("train: the model has no trainable parameters")
    return params


# ---------------------------------------------------------------- resumable state
def rng_state() -> dict:
    state = {"python": _jsonable(random.getstate()), "torch": torch.get_rng_state().tolist()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], np_state[1].tolist(), *[_jsonable(x) for x in np_state[2:]]]
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def save_checkpoint(engine: Any, ckpt_root: Path, step: int, micro_step: int, rank: int, keep: int) -> Path:
    """DeepSpeed checkpoint ``ckpt_root/stepNNNNNNNN`` + per-rank trainer state (step, data position, RNG).

    The per-rank JSON is written before DeepSpeed updates ``latest``, so ``latest`` never names a
    checkpoint without it; a run killed mid-save resumes from the previous one.
    """
    import torch.distributed as dist

    tag = f"step{step:08d}"
    write_json(ckpt_root / tag / STATE_NAME.format(rank=rank),
               {"step": step, "micro_step": micro_step, "world_size": dist.get_world_size(), "rng": rng_state()})
    dist.barrier()
    engine.save_checkpoint(str(ckpt_root), tag=tag)
    dist.barrier()
    if rank == 0 and keep > 0:
        old = sorted(p for p in ckpt_root.glob("step*") if p.is_dir() and p.name != tag)
        for stale in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    return ckpt_root / tag


def find_resume_point(cfg: Any, ckpt_root: Path) -> Path | None:
    """The checkpoint folder to resume from: ``resume_from``, else ``ckpt_root/latest`` when resuming."""
    if cfg.resume_from is not None:
        return Path(cfg.resume_from)
    latest = ckpt_root / "latest"
    if cfg.resume and latest.is_file():
        tag_dir = ckpt_root / latest.read_text().strip()
        if tag_dir.is_dir():
            return tag_dir
    return None


def load_checkpoint(engine: Any, tag_dir: Path, rank: int) -> dict:
    """Restore model, optimizer, scheduler (DeepSpeed) and this rank's trainer state; returns the state."""
    import torch.distributed as dist

    state_path = tag_dir / STATE_NAME.format(rank=rank)
    if not state_path.is_file():
        raise InputError(f"no trainer state for rank {rank} (was the checkpoint written with another "
                         f"number of processes than {dist.get_world_size()}?)", path=tag_dir)
    state = read_json(state_path)
    if state.get("world_size", dist.get_world_size()) != dist.get_world_size():
        raise InputError(f"checkpoint written by {state['world_size']} processes, now {dist.get_world_size()}",
                         path=tag_dir)
    path, _ = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    if path is None:
        raise InputError("DeepSpeed could not load this checkpoint", path=tag_dir)
    set_rng_state(state["rng"])
    return state


# ---------------------------------------------------------------- export
def export_model(engine: Any, tokenizer: Any, cfg: Any, export_dir: Path, rank: int,
                 feature_layout: dict | None = None, copies: dict[str, Path] | None = None) -> Path:
    """Gather the parameters on rank 0 (ZeRO-3 partitions, when partitioned) and write an HF-style folder that
    ``grace.model.load_pretrained`` reads (the frozen vision encoder is rebuilt from its name there).

    ``export/`` holds the model's safetensors + config.json, ``tokenizer/``, and copies of ``ids/``
    and ``trie/`` so inference needs nothing else, and ``feature_layout.json`` (the visual features it was
    trained on, checked against the model config when loaded), plus ``copies`` (export sub-folder → source
    folder, e.g. the text tower that embeds queries); written to a temp folder, then renamed.
    """
    import torch.distributed as dist

    from grace.model.export import save_pretrained

    tmp = export_dir.with_name(f".{export_dir.name}.tmp")
    state = gathered_state_dict(engine.module, rank)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_pretrained(engine.module, tmp, tokenizer=tokenizer, state=state)
        for name, src in (("ids", cfg.ids_dir), ("trie", cfg.trie_dir), *(copies or {}).items()):
            if src is not None and Path(src).is_dir():
                shutil.copytree(src, tmp / name)
        save_config(tmp, cfg, name="train_config.json")
        if feature_layout is not None:
            from grace.model.export import FEATURE_LAYOUT_NAME

            write_json(tmp / FEATURE_LAYOUT_NAME, feature_layout)
        shutil.rmtree(export_dir, ignore_errors=True)
        os.replace(tmp, export_dir)
        log.info("exported %s", export_dir)
    dist.barrier()
    return export_dir


def gathered_state_dict(module: Any, rank: int) -> dict[str, torch.Tensor] | None:
    """The full state dict on rank 0 (CPU), ``None`` elsewhere. ZeRO-3 partitions are gathered one module
    at a time, so no rank's device ever holds more than one module's parameters in full."""
    import deepspeed

    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for prefix, sub in module.named_modules():
        params = [(n, p) for n, p in sub.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in params)
        zero3 = any(_is_partitioned(p) for _, p in params)
        with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None, enabled=zero3):
            if rank == 0:
                buffers = [(n, b) for n, b in sub.named_buffers(recurse=False)
                           if n not in sub._non_persistent_buffers_set]
                for name, tensor in [*params, *buffers]:
                    if tensor is not None:
                        state[f"{prefix}.{name}" if prefix else name] = tensor.detach().to("cpu", copy=True)
    return state if rank == 0 else None


def write_metrics(path: Path, losses: list[float], steps: list[int], seconds_per_step: float) -> None:
    """``metrics.json`` beside the checkpoints, appended across resumed runs (with this run's fallbacks)."""
    from grace.fallbacks import recorded_fallbacks

    old = json.loads(path.read_text()) if path.is_file() else {"steps": [], "losses": []}
    keep = [(s, l) for s, l in zip(old["steps"], old["losses"]) if s not in set(steps)]
    merged = sorted(keep + list(zip(steps, losses)))
    write_json(path, {"steps": [s for s, _ in merged], "losses": [l for _, l in merged],
                      "seconds_per_step_last_run": seconds_per_step, "fallbacks": recorded_fallbacks()})
