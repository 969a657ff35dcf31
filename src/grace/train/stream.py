"""Streaming training data: the i2id and t2id shards as webdataset pipelines under a torch DataLoader.

For corpora too large to index in memory (``data_loader: stream``). Each (rank, worker) resamples shards
with its own deterministic seed (ResampledShards: the split by node and worker, endless for multi-epoch
runs), shuffles through a bounded buffer, decodes and tokenises in the worker, and left-pads each
task's rows there; the main process only merges the two tasks' tensors. Memory is bounded by the
shuffle buffer and the prefetch depth, not by the number of shards.

A resumed run re-seeds the streams with its start step: it continues with fresh random draws, not the
exact sample order an uninterrupted run would have seen (the ``indexed`` loader is exact).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from grace.errors import InputError
from grace.model.prompt import IGNORE_INDEX, training_sequence
from grace.train.data import _IMAGE_KEYS, TASKS, Sample, collate, shard_files


def _decode(raw: dict, *, task: str, keep_images: bool) -> Sample:
    """A webdataset sample (``json`` + image bytes) → :class:`Sample`; one-line errors for bad members."""
    key = raw.get("__key__")
    if "json" not in raw:
        raise InputError("sample has no json member", path=raw.get("__url__"), entry=key)
    try:
        meta = json.loads(raw["json"])
        image = next((raw[k] for k in _IMAGE_KEYS if k in raw), None) if keep_images else None
        sample = Sample(key, str(meta["image_id"]), str(meta["identifier"]), str(meta.get("text", "")), task, image)
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"malformed sample json ({exc})", path=raw.get("__url__"), entry=key) from None
    if keep_images and task == "i2id" and sample.image is None:
        raise InputError("i2id sample has no image bytes (png/jpg)", path=raw.get("__url__"), entry=key)
    return sample


def _collate_task(samples: list[Sample], *, tokenizer: Any, max_length: int) -> tuple[dict, list[Sample]]:
    """In the worker: token sequences of one task's samples, left-padded (+ the samples, for their images)."""
    seqs = [training_sequence(tokenizer, s.identifier, s.text if s.task == "t2id" else None) for s in samples]
    return collate(seqs, tokenizer.pad_token_id, max_length), samples


def _worker_shuffle(src: Iterator, *, bufsize: int, seed: int) -> Iterator:
    """Shuffle through a ``bufsize`` buffer with a seed distinct per (rank, worker)."""
    import webdataset as wds

    rng = random.Random(f"{seed}-{wds.utils.pytorch_worker_seed()}")
    buf: list = []
    for sample in src:
        buf.append(sample)
        if len(buf) >= bufsize:
            yield buf.pop(rng.randrange(len(buf)))
    rng.shuffle(buf)
    yield from buf


def task_pipeline(shards_dir: Path, task: str, tokenizer: Any, batch_size: int, *, seed: int, max_length: int,
                  keep_images: bool, shuffle_buffer: int):
    """The endless webdataset pipeline of one task: batches of (padded tensors, samples)."""
    import webdataset as wds

    urls = [str(p) for p in shard_files(shards_dir, task)]
    if not urls:
        raise InputError(f"no {task}-*.tar shards but batch_size_{task} = {batch_size}", path=shards_dir)
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        partial(_worker_shuffle, bufsize=max(1, shuffle_buffer), seed=seed),
        wds.map(partial(_decode, task=task, keep_images=keep_images)),
        wds.batched(batch_size, collation_fn=partial(_collate_task, tokenizer=tokenizer, max_length=max_length),
                    partial=False),
    )


def merge_left_padded(parts: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack left-padded batches of different widths into one (more left padding on the narrower ones)."""
    width = max(p["lang_x"].shape[1] for p in parts)
    fill = {"lang_x": pad_token_id, "attention_mask": 0, "position_ids": 0, "labels": IGNORE_INDEX}
    out = {}
    for key, value in fill.items():
        rows = [torch.nn.functional.pad(p[key], (width - p[key].shape[1], 0), value=value) for p in parts]
        out[key] = torch.cat(rows)
    return out


class StreamingBatches:
    """Per micro-step: ``batch_size_i2id`` i2id + ``batch_size_t2id`` t2id rows, streamed (same interface
    as :class:`grace.train.data.MixedBatches`: ``batch(micro_step) -> (tensors, every row's sample)``)."""

    def __init__(self, shards_dir: Path, tokenizer: Any, *, batch_size_i2id: int, batch_size_t2id: int,
                 seed: int, start_step: int, max_length: int, keep_images: bool, num_workers: int = 2,
                 shuffle_buffer: int = 1000, pin_memory: bool = False):
        import webdataset as wds

        self.pad_token_id = tokenizer.pad_token_id
        sizes = {"i2id": batch_size_i2id, "t2id": batch_size_t2id}
        self.loaders: dict[str, Iterator] = {}
        for stream, task in enumerate(TASKS):
            if not sizes[task]:
                continue
            pipeline = task_pipeline(Path(shards_dir), task, tokenizer, sizes[task],
                                     seed=(seed * 1_000_003 + stream * 7_919 + start_step) % 2**31, max_length=max_length,
                                     keep_images=keep_images and task == "i2id", shuffle_buffer=shuffle_buffer)
            loader = wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                   persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers else None)
            self.loaders[task] = iter(loader)
        self.next_step = start_step

    def batch(self, micro_step: int) -> tuple[dict[str, torch.Tensor], list[Sample]]:
        if micro_step != self.next_step:
            raise ValueError(f"streaming batches are read in order: expected micro-step {self.next_step}, "
                             f"got {micro_step}")
        self.next_step += 1
        parts, rows = [], []
        for task in TASKS:  # i2id rows first, then t2id: each row's sample, in row order
            if task in self.loaders:
                tensors, samples = next(self.loaders[task])
                parts.append(tensors)
                rows += list(samples)
        return merge_left_padded(parts, self.pad_token_id), rows
