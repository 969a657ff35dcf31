"""LiT-style projection heads: frozen image/text features → a joint space trained with InfoNCE.

Loss: symmetric in-batch InfoNCE (CLIP) with a learnable temperature; pairs of the same image in one
batch (several captions) are masked out of each other's negatives. Saved as ``heads.safetensors`` +
``config.json``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grace.errors import InputError
from grace.io_utils import atomic_path, read_json, write_json

log = logging.getLogger(__name__)
WEIGHTS_NAME = "heads.safetensors"


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class LitHeads(nn.Module):
    """Image and text projection heads + log-scale of the logits (1 / temperature)."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.image_head = _mlp(c["image_dim"], c.get("hidden", 512), c["dim"])
        self.text_head = _mlp(c["text_dim"], c.get("hidden", 512), c["dim"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.get("init_temperature", 0.07))))

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image_head(x.float()), dim=-1)

    def embed_texts(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text_head(x.float()), dim=-1)

    def loss(self, image_x: torch.Tensor, text_x: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE; ``owners[i]`` = image index of pair i (same-image off-diagonals masked)."""
        logits = self.logit_scale.clamp(max=math.log(100.0)).exp() * self.embed_images(image_x) @ self.embed_texts(text_x).T
        same = owners[:, None] == owners[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(len(owners), device=logits.device)
        return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        write_json(out_dir / "config.json", {**self.config, **(extra or {})})
        return out_dir

    @classmethod
    def load(cls, heads_dir: str | Path) -> LitHeads:
        from safetensors.torch import load_file

        heads_dir = Path(heads_dir)
        weights = heads_dir / WEIGHTS_NAME
        if not weights.is_file():
            raise InputError(f"no {WEIGHTS_NAME}: train heads first (grace baselines clip-faiss train-heads)", path=heads_dir)
        model = cls(read_json(heads_dir / "config.json"))
        model.load_state_dict(load_file(str(weights)))
        return model


def train_pairs(dataset, split: str) -> tuple[list[str], list[str], list[int]]:
    """(image ids, captions, owner index per caption) of every caption of every image in ``split``."""
    records = dataset.split(split)
    if not records:
        raise InputError(f"split {split!r} has no images", path=dataset.name)
    texts, owners = [], []
    for index, record in enumerate(records):
        for text in record.texts:
            texts.append(text)
            owners.append(index)
    return [r.image_id for r in records], texts, owners


def dataset_image_features(dataset, encoder: str = "efficientnet-lite0", cache_dir: Path | None = None,
                           *, batch_size: int = 64, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Pooled frozen image features of every image of ``dataset`` → (ids, (N, D) float32).

    The shared ``grace.data_process.features`` cache, so the baseline sees exactly the features the
    generative model sees.
    """
    from grace.data_process.features import image_features

    fs = image_features(dataset, encoder=encoder, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    return list(fs.ids), np.asarray(fs.array, dtype=np.float32)


def fit_heads(image_x: np.ndarray, text_x: np.ndarray, owners: np.ndarray, config: dict, *, epochs: int,
              batch_size: int, lr: float, weight_decay: float = 0.01, seed: int = 0,
              progress: bool = True) -> tuple[LitHeads, list[float]]:
    """Train heads on (caption i ↔ image owners[i]) pairs; returns the heads and the mean loss per epoch."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    heads = LitHeads({**config, "image_dim": int(image_x.shape[1]), "text_dim": int(text_x.shape[1])})
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=weight_decay)
    images_t, texts_t = torch.from_numpy(image_x).float(), torch.from_numpy(text_x).float()
    owners_t = torch.as_tensor(owners, dtype=torch.long)
    steps_per_epoch = max(1, math.ceil(len(owners) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    history = []
    heads.train()
    for _ in tqdm(range(epochs), desc="train LiT heads", disable=not progress):
        order = torch.from_numpy(rng.permutation(len(owners)))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            own = owners_t[idx]
            loss = heads.loss(images_t[own], texts_t[idx], own)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)) if losses else float("nan"))
    return heads.eval(), history


def train_heads(config) -> dict:
    """``train-heads``: frozen features of ``config.split`` → trained heads saved in ``config.out``."""
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.encoders import create_text_encoder
    from grace.io_utils import save_config, seed_everything

    seed_everything(config.seed)
    dataset = load_karpathy(config.dataset, config.image_root)
    image_ids, texts, owners = train_pairs(dataset, config.split)
    start = time.perf_counter()
    cache_dir = config.cache_dir or Path(config.out) / "cache"
    ids, feats = dataset_image_features(dataset.subset(image_ids), config.image_encoder, cache_dir, progress=config.progress)
    by_id = {i: n for n, i in enumerate(ids)}
    image_x = feats[[by_id[i] for i in image_ids]]
    text_x = create_text_encoder(config.text_encoder).encode(texts).float().numpy()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    head_config = {"dim": config.dim, "hidden": config.hidden, "init_temperature": config.init_temperature,
                   "image_encoder": config.image_encoder, "text_encoder": config.text_encoder}
    heads, history = fit_heads(image_x, text_x, np.asarray(owners), head_config, epochs=config.epochs,
                               batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
                               seed=config.seed, progress=config.progress)
    train_s = time.perf_counter() - start
    stats = {"num_images": len(image_ids), "num_pairs": len(texts), "loss_history": history,
             "temperature": float(1.0 / heads.logit_scale.detach().exp()), "encode_s": encode_s, "train_s": train_s}
    heads.save(config.out, extra={"train_stats": stats})
    save_config(config.out, config, name="train_config.json")
    log.info("LiT heads: loss %.3f → %.3f in %.1fs (%d pairs)", history[0], history[-1], train_s, len(texts))
    return stats
