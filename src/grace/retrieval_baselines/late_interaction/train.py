"""Contrastive training of late-interaction models: MaxSim scores, in-batch negatives (+ hard negatives).

Each step takes ``batch_size`` (query, positive document) pairs; the candidate documents are the union
of the positives and the hard negatives of the batch (deduplicated, so two queries with the same answer
never see it as a negative), and the loss is cross-entropy over MaxSim scores (ColBERT).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.maxsim import maxsim

log = logging.getLogger(__name__)


def _batch_docs(positives: np.ndarray, rng: np.random.Generator, n_docs: int, hard: int,
                negatives: Sequence[Sequence[int]] | None, rows: np.ndarray) -> tuple[list[int], torch.Tensor]:
    """(unique document rows of the batch, target column of every query)."""
    wanted = list(positives[rows])
    for row in rows:
        pool = negatives[row] if negatives is not None and len(negatives[row]) else None
        for _ in range(hard):
            wanted.append(int(rng.choice(pool)) if pool is not None else int(rng.integers(n_docs)))
    unique = list(dict.fromkeys(int(d) for d in wanted))
    where = {d: i for i, d in enumerate(unique)}
    return unique, torch.tensor([where[int(positives[r])] for r in rows])


def fit(model, *, query_texts: Sequence[str | None], positives: Sequence[int], docs,
        query_visual: np.ndarray | None = None, steps: int = 300, batch_size: int = 32, lr: float = 3e-3,
        hard_negatives: int = 0, negatives: Sequence[Sequence[int]] | None = None, weight_decay: float = 0.01,
        seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``model`` so query i ranks document ``positives[i]`` of ``docs`` first; returns the step losses.

    ``query_visual`` (N, T, Dv) holds the query images (None: text-only queries); ``negatives[i]`` are hard
    negatives of query i (default: random documents when ``hard_negatives`` > 0).
    """
    from tqdm import tqdm

    positives = np.asarray(positives, dtype=np.int64)
    if len(positives) == 0 or len(query_texts) != len(positives):
        raise InputError(f"need one positive per query: {len(query_texts)} queries, {len(positives)} positives")
    if query_visual is not None and len(query_visual) != len(positives):
        raise InputError(f"{len(query_visual)} query images for {len(positives)} queries")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    history, order, cursor = [], rng.permutation(len(positives)), 0
    for _ in tqdm(range(steps), desc=f"train {model.config.fusion}", disable=not progress):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(positives)), 0
        rows = order[cursor:cursor + batch_size]
        cursor += batch_size
        unique, target = _batch_docs(positives, rng, len(docs), hard_negatives, negatives, rows)
        vis = None
        if query_visual is not None:
            vis = torch.as_tensor(np.asarray(query_visual[rows], dtype=np.float32))
        q, q_mask = model.encode_queries([query_texts[r] for r in rows], vis)
        d, d_mask = docs.encode(model, unique)
        loss = F.cross_entropy(maxsim(q, d, d_mask, q_mask), target.to(q.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.item()))
    model.eval()
    return history


def pretrained_model_dir(init_from: str | Path, fusion: str) -> Path:
    """The model folder for ``fusion`` under ``init_from``: DIR/<fusion>/model, DIR/<fusion>, or DIR itself."""
    root = Path(init_from)
    for candidate in (root / fusion / "model", root / fusion, root):
        if (candidate / "config.json").is_file():
            return candidate
    raise InputError(f"--init-from: no {fusion} model (looked for {fusion}/model/, {fusion}/ and the folder itself)",
                     path=root)


def load_initial_model(model_dir: str | Path, *, fusion: str, visual_dim: int):
    """A trained model to continue from; its fusion style and visual token size must be this run's."""
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    model_dir = pretrained_model_dir(model_dir, fusion)
    model = LateInteractionModel.load(model_dir)
    if model.config.fusion != fusion:
        raise InputError(f"--init-from holds a {model.config.fusion!r} model; this run trains {fusion!r}", path=model_dir)
    if model.config.visual_dim != visual_dim:
        raise InputError(f"--init-from was trained on {model.config.visual_dim}-d visual tokens, these are "
                         f"{visual_dim}-d (another image encoder)", path=model_dir)
    return model


def initial_model(config, visual_dim: int, *, truncate_docs: bool):
    """The model a ``train`` run starts from: ``config.init_from`` when given, else a new one from its settings."""
    from grace.retrieval_baselines.late_interaction.configs import ModelConfig
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    if config.init_from:
        return load_initial_model(config.init_from, fusion=config.fusion, visual_dim=visual_dim)
    return LateInteractionModel(config=ModelConfig(
        text_encoder=config.text_encoder, image_encoder=config.image_encoder, fusion=config.fusion, dim=config.dim,
        visual_dim=visual_dim, visual_grid=config.visual_grid, train_backbone=config.train_backbone,
        truncate_docs=truncate_docs, seed=config.seed))


class _PairImages:
    """Row ``i`` = the visual tokens of pair ``i``'s image, without copying them per pair."""

    def __init__(self, visual, owners: Sequence[int]):
        self.visual, self.owners = np.asarray(visual), np.asarray(owners)

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, rows):
        return self.visual[self.owners[rows]]


def _vid2r_kb(config) -> Path:
    """The knowledge base of a vid2r.json: ``--kb``, else the one its ``vid2r`` run read or wrote."""
    from grace.io_utils import read_json

    if config.kb:
        return Path(config.kb)
    folder = Path(config.vid2r).parent
    if (folder / "kb.jsonl").is_file():
        return folder / "kb.jsonl"
    built_from = read_json(folder / "config.json").get("kb") if (folder / "config.json").is_file() else None
    if not built_from:
        raise InputError("no knowledge base found beside vid2r.json: give --kb", path=folder)
    return Path(built_from)


def train_vid2r(config, *, model=None, progress: bool = True) -> dict:
    """``train --direction vid2r``: every (image, question) of ``--vid2r`` retrieves each of its positive passages
    among the knowledge base, against in-batch negatives and its own hard negatives."""
    from tqdm import tqdm

    from grace.data_process.encoders import create_image_encoder
    from grace.io_utils import read_json, save_config, seed_everything
    from grace.retrieval_baselines.late_interaction.collection import (
        CachedTextDocs,
        TextDocs,
        encode_image_files,
    )
    from grace.retrieval_baselines.late_interaction.vid2r import read_passages

    if config.vid2r is None or not Path(config.vid2r).is_file():
        raise InputError("--direction vid2r needs --vid2r (the vid2r.json of `late-interaction vid2r`)",
                         path=config.vid2r)
    seed_everything(config.seed)
    entries = read_json(config.vid2r)
    ids, passages = read_passages(_vid2r_kb(config))
    where = {pid: row for row, pid in enumerate(ids)}
    unknown = sorted({p for e in entries for p in e["positives"] + e["negatives"] if p not in where})
    if unknown:
        raise InputError(f"{len(unknown)} passage ids of vid2r.json are not in the knowledge base, e.g. {unknown[0]!r}",
                         path=config.vid2r)
    images = list(dict.fromkeys(e["image"] for e in entries))
    start, encoder = time.perf_counter(), create_image_encoder(config.image_encoder)
    visual = np.concatenate([encode_image_files(images[i:i + 64], encoder)
                             for i in tqdm(range(0, len(images), 64), desc="query images", disable=not progress)])
    encode_s = time.perf_counter() - start
    image_row = {path: row for row, path in enumerate(images)}
    pairs = [(e, p) for e in entries for p in e["positives"]]  # one training pair per positive passage
    if not pairs:
        raise InputError("vid2r.json holds no (query, positive passage) pair", path=config.vid2r)
    if model is None:
        model = initial_model(config, int(visual.shape[-1]), truncate_docs=True)
    docs = TextDocs(passages) if config.train_backbone else CachedTextDocs.build(model, passages, progress=progress)
    start = time.perf_counter()
    history = fit(model, query_texts=[e["question"] for e, _ in pairs],
                  query_visual=_PairImages(visual, [image_row[e["image"]] for e, _ in pairs]),
                  positives=[where[p] for _, p in pairs], docs=docs,
                  negatives=[[where[n] for n in e["negatives"]] for e, _ in pairs], steps=config.steps,
                  batch_size=config.batch_size, lr=config.lr, hard_negatives=config.hard_negatives, seed=config.seed,
                  progress=progress)
    stats = {"direction": "vid2r", "init_from": str(config.init_from) if config.init_from else None,
             "num_entries": len(entries), "num_pairs": len(pairs), "num_passages": len(passages),
             "encode_s": encode_s, "train_s": time.perf_counter() - start, "loss_first": history[0],
             "loss_last": float(np.mean(history[-10:])), "loss_history": history}
    model.save(config.out, extra={"train_stats": stats})
    save_config(config.out, config, name="train_config.json")
    log.info("late interaction (ViD2R): loss %.3f → %.3f", history[0], stats["loss_last"])
    return stats


def train_t2i(config, *, model=None, progress: bool = True) -> dict:
    """``train``: the (caption, image) pairs of ``config.split`` → model folder ``config.out``: captions
    retrieve images (``t2i``), or images with an instruction retrieve their captions (``i2t``, pre-training);
    from ``config.init_from`` when given."""
    from grace.data_process.dataset import load_karpathy
    from grace.io_utils import save_config, seed_everything
    from grace.retrieval_baselines.late_interaction.collection import CachedTextDocs, ImageDocs, visual_tokens

    if config.direction == "vid2r":
        return train_vid2r(config, model=model, progress=progress)
    if config.direction == "i2t" and (config.fusion == "none" or config.train_backbone):
        raise InputError("--direction i2t trains the image side of a fusion (flmr, retxknow, mire) over the frozen "
                         "text backbone's cached caption states: not with --fusion none or --train-backbone")
    seed_everything(config.seed)
    dataset = load_karpathy(config.dataset, config.image_root)
    records = dataset.split(config.split)
    if not records:
        raise InputError(f"split {config.split!r} has no images", path=config.dataset)
    texts, owners = [], []
    for row, record in enumerate(records):
        texts += record.texts
        owners += [row] * len(record.texts)
    start = time.perf_counter()
    visual = visual_tokens(dataset, config.image_encoder, config.cache_dir or Path(config.out) / "cache",
                           image_ids=[r.image_id for r in records], progress=progress)
    encode_s = time.perf_counter() - start
    if model is None:
        model = initial_model(config, int(visual.shape[-1]), truncate_docs=config.direction == "i2t")
    start = time.perf_counter()
    common = {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
              "hard_negatives": config.hard_negatives, "seed": config.seed, "progress": progress}
    if config.direction == "i2t":  # query = (instruction, image), document = one of its captions
        history = fit(model, query_texts=[config.instruction] * len(texts), query_visual=_PairImages(visual, owners),
                      positives=list(range(len(texts))), docs=CachedTextDocs.build(model, texts, progress=progress),
                      **common)
    else:
        history = fit(model, query_texts=texts, positives=owners, docs=ImageDocs(visual), **common)
    train_s = time.perf_counter() - start
    stats = {"direction": config.direction, "init_from": str(config.init_from) if config.init_from else None,
             "num_images": len(records), "num_pairs": len(texts), "encode_s": encode_s, "train_s": train_s,
             "loss_first": history[0], "loss_last": float(np.mean(history[-10:])), "loss_history": history}
    model.save(config.out, extra={"train_stats": stats})
    save_config(config.out, config, name="train_config.json")
    log.info("late interaction: loss %.3f → %.3f in %.1fs", history[0], stats["loss_last"], train_s)
    return stats
