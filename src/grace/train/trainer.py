"""``train(config) -> TrainResult``: the GRACE training loop under DeepSpeed ZeRO-3 (1 or N processes)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

import grace.train.engine as E
from grace.errors import InputError
from grace.io_utils import save_config, seed_everything
from grace.model.export import QUERY_ENCODER_DIR, QUERY_MEDIA_KEY
from grace.train.config import TrainConfig, TrainResult
from grace.train.data import MixedBatches, TextMedia, VisionSource

log = logging.getLogger(__name__)


def vision_batch(module: Any, vision: VisionSource, rows: list, batch_size: int, device: str,
                 dtype: torch.dtype, draw: int = 0, text_media: TextMedia | None = None) -> torch.Tensor:
    """(B, 1, T, D) for a batch whose ``rows`` are its samples in row order (i2id first): the i2id images'
    features (views of draw ``draw``) in the first rows; after them the model's null image, or with
    ``text_media`` each t2id row's text embedding (the query's view in the joint space)."""
    out = module.null_vision_features(batch_size).to(device=device, dtype=dtype)
    i2id = [s for s in rows if s.task == "i2id"]
    t2id = [s for s in rows if s.task != "i2id"]
    parts = [(0, i2id, lambda: vision.features(i2id, draw))]
    if text_media is not None:
        parts.append((len(i2id), t2id, lambda: text_media.features(t2id, draw, vision)))
    for first, samples, features in parts:
        if not samples:
            continue
        feats = features()  # (b, T, D)
        if feats.shape[1:] != out.shape[2:]:
            raise InputError(f"{samples[0].task} features of shape {tuple(feats.shape[1:])} per row, but the model's "
                             f"visual input is {tuple(out.shape[2:])} (n_visual_tokens, vis_dim)", entry=samples[0].key)
        out[first: first + len(samples), 0] = feats.to(device=device, dtype=dtype)
    return out


def training_batches(cfg: TrainConfig, tokenizer: Any, *, rank: int, world: int, micro_step: int, keep_images: bool,
                     pin_memory: bool = False) -> Any:
    """The batch source ``cfg.data_loader`` names, positioned at ``micro_step`` (``batch(m) -> (tensors, rows)``)."""
    if cfg.data_loader == "stream":
        from grace.train.stream import StreamingBatches

        return StreamingBatches(Path(cfg.shards_dir), tokenizer, batch_size_i2id=cfg.batch_size_i2id,
                                batch_size_t2id=cfg.batch_size_t2id, seed=cfg.seed + 1000 * rank, start_step=micro_step,
                                max_length=cfg.max_length, keep_images=keep_images, num_workers=cfg.num_workers,
                                shuffle_buffer=cfg.shuffle_buffer, pin_memory=pin_memory)
    return MixedBatches(Path(cfg.shards_dir), tokenizer, batch_size_i2id=cfg.batch_size_i2id,
                        batch_size_t2id=cfg.batch_size_t2id, rank=rank, world_size=world, seed=cfg.seed,
                        max_length=cfg.max_length, keep_images=keep_images)


def _mean_step_time(times: list[float]) -> float:
    """Mean seconds per step, leaving out the first (warm-up) step when there are more."""
    timed = times[1:] if len(times) > 1 else times
    return sum(timed) / len(timed) if timed else 0.0


def _reporter(cfg: TrainConfig, rank: int):
    if cfg.report_to != "wandb" or rank != 0:
        return None
    try:
        import wandb
    except ImportError:
        from grace.errors import GraceError

        raise GraceError("train: report_to=wandb needs `pip install wandb`") from None
    from grace.io_utils import to_jsonable

    return wandb.init(project="grace", config=to_jsonable(cfg), dir=str(cfg.output_dir))


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) one run; call it in-process (1 process) or in every ``torchrun`` process."""
    import deepspeed
    import torch.distributed as dist
    from tqdm.auto import tqdm

    cfg.validate()
    device = E.resolve_device(cfg.device)
    rank, world, local_rank = E.init_deepspeed(device)
    dev = f"cuda:{local_rank}" if device == "cuda" else "cpu"
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(out, cfg)

    tokenizer = E.load_tokenizer(cfg)
    ds_config = E.deepspeed_config(cfg, device, world)
    model, encoder = E.create_model(cfg.model, tokenizer, ds_config, world,
                                    with_encoder=cfg.features_cache is None, trust_remote_code=cfg.trust_remote_code,
                                    output_head=cfg.output_head)
    if cfg.features_cache is None and encoder is None:
        from grace.data_process.encoders import create_image_encoder

        encoder = create_image_encoder(cfg.image_encoder)
    if encoder is not None:
        encoder.to(dev)
    n_tokens, vis_dim = model.config.n_visual_tokens, model.config.vis_dim
    vision = VisionSource(features_cache=cfg.features_cache, encoder=encoder, n_visual_tokens=n_tokens,
                          views=cfg.i2id_views, seed=cfg.seed, rank=rank)
    vision.check_layout(vis_dim, n_tokens, str(cfg.features_cache or cfg.image_encoder))
    text_media = None
    if cfg.t2id_media is not None:
        text_media = TextMedia(cfg.t2id_media, mix=cfg.t2id_media_mix, seed=cfg.seed, rank=rank)
        if (n_tokens, vis_dim) != (1, text_media.dim):
            raise InputError(f"t2id_media holds {text_media.dim}-d text embeddings, one per row, but the model reads "
                             f"n_visual_tokens={n_tokens} x vis_dim={vis_dim}", path=cfg.t2id_media)
    resume_dir = E.find_resume_point(cfg, ckpt_root)
    if cfg.init_from and resume_dir is None:  # a resumed run restores its own weights instead
        from grace.model.init_from import init_from

        report = init_from(model, cfg.init_from, tokenizer, rank=rank)
        if rank == 0:
            save_config(out, report, name="init_from.json")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    engine, *_ = deepspeed.initialize(model=model, model_parameters=E.trainable_parameters(model), config=ds_config)
    E.skip_lone_allreduce(engine, world)
    engine.train()

    step, micro_step = 0, 0
    if resume_dir is not None:
        state = E.load_checkpoint(engine, resume_dir, rank)
        step, micro_step = int(state["step"]), int(state["micro_step"])
        if rank == 0:
            log.info("resumed from %s at step %d", resume_dir, step)
    start_step = step
    data = training_batches(cfg, tokenizer, rank=rank, world=world, micro_step=micro_step,
                            keep_images=vision.uses_images, pin_memory=device == "cuda")
    end_step = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    reporter = _reporter(cfg, rank)
    samples_per_step = (cfg.batch_size_i2id + cfg.batch_size_t2id) * cfg.grad_accum * world
    losses, steps, times = [], [], []
    last_ckpt = None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=rank != 0, dynamic_ncols=True)
    pending: list[torch.Tensor] = []  # per-step loss sums, kept on the device until the next flush

    def flush() -> None:
        """One all-reduce and one host sync for every step since the last flush."""
        if pending:
            stacked = torch.stack(pending).double()
            dist.all_reduce(stacked)
            losses.extend((stacked / (world * cfg.grad_accum)).tolist())
            pending.clear()

    while step < end_step:
        t0 = time.perf_counter()
        total = torch.zeros((), dtype=torch.float32, device=dev)
        for _ in range(cfg.grad_accum):
            batch, rows = data.batch(micro_step)
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            feats = vision_batch(engine.module, vision, rows, batch["lang_x"].shape[0], dev, dtype, micro_step,
                                 text_media)
            output = engine(lang_x=batch["lang_x"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], vision_features=feats, labels=batch["labels"])
            engine.backward(output.loss)
            engine.step()
            total += output.loss.detach().float()
            micro_step += 1
        step += 1
        pending.append(total)
        steps.append(step)
        times.append(time.perf_counter() - t0)
        checkpoint_now = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == end_step
        if step % cfg.log_every == 0 or checkpoint_now:
            flush()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", samples_s=f"{samples_per_step / times[-1]:.1f}")
            if reporter is not None:
                reporter.log({"loss": losses[-1], "lr": engine.get_lr()[0],
                              "samples_per_s": samples_per_step / times[-1]}, step=step)
        bar.update(1)
        if checkpoint_now:
            if rank == 0:  # before the checkpoint: a run killed between the two would lose this step's loss
                # (a kill before the checkpoint completes leaves a step that the resumed run recomputes and
                # write_metrics replaces)
                E.write_metrics(out / "metrics.json", losses, steps, _mean_step_time(times))
            last_ckpt = E.save_checkpoint(engine, ckpt_root, step, micro_step, rank, cfg.keep_checkpoints)
    bar.close()

    seconds_per_step = _mean_step_time(times)
    if rank == 0:
        E.write_metrics(out / "metrics.json", losses, steps, seconds_per_step)
    export_dir = None
    if cfg.export and step >= cfg.steps:
        layout = vision.layout(str(cfg.features_cache or cfg.image_encoder))
        copies = {}
        if text_media is not None:  # inference embeds queries with the same text tower: a copy travels with it
            layout[QUERY_MEDIA_KEY] = text_media.describe()
            copies[QUERY_ENCODER_DIR] = text_media.tower
        export_dir = E.export_model(engine, tokenizer, cfg, out / "export", rank, feature_layout=layout,
                                    copies=copies)
    if reporter is not None:
        reporter.finish()
    return TrainResult(losses=losses, steps=steps, seconds_per_step=seconds_per_step, export_dir=export_dir,
                       checkpoint_dir=last_ckpt, start_step=start_step)
