"""``TrainConfig`` (what ``grace train`` reads) and ``TrainResult`` (what ``train()`` returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grace.errors import GraceError, InputError


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainConfig:
    """One GRACE training run: i2id + t2id shards → DeepSpeed ZeRO-3 → checkpoints + ``export/``."""

    shards_dir: Path | None = field(default=None, metadata=_help("folder with i2id-*.tar and t2id-*.tar shards"))
    ids_dir: Path | None = field(default=None, metadata=_help("identifier map folder (ids.json, tokenizer/)"))
    trie_dir: Path | None = field(default=None, metadata=_help("trie folder, copied into export/ (optional)"))
    features_cache: Path | None = field(
        default=None, metadata=_help("cached image features (pooled.npy|tokens.npy + meta.json); else encode images"))
    image_encoder: str = field(default="efficientnet-lite0", metadata=_help("frozen encoder when no features cache"))
    i2id_views: int = field(default=1, metadata=_help(
        "views per image for i2id: the image itself plus N-1 augmented views (crop, rotation, tone), one drawn "
        "per sample and step; cached ones come from FEATURES/views/<k> (`grace data features --views N`)"))
    t2id_media: Path | None = field(default=None, metadata=_help(
        "a text-embedding cache (grace.train.data.TextMedia: a FeatureSet keyed by text, encoder KIND:PATH): t2id "
        "rows read their text's embedding in the joint space as their visual input instead of the null image "
        "(GENIUS), and queries are embedded by the same text tower at inference; the features cache must hold the "
        "images' embeddings in that space"))
    t2id_media_mix: float = field(default=0.0, metadata=_help(
        "GENIUS query augmentation: a t2id row sees (1-w)*text + w*gold image, w ~ U[0, MIX] per sample"))
    model: str = field(default="tiny", metadata=_help("model config name (tiny, smollm2-effnet, ...) or JSON path"))
    trust_remote_code: bool = field(default=False, metadata=_help(
        "let a hub LM run its own modelling code (e.g. OpenFlamingo's MPT-1B); only this flag allows it, never a "
        "model config file"))
    output_head: str | None = field(default=None, metadata=_help(
        "the model's output head: full (the whole vocabulary) or ids (the identifier head: the loss and the beam "
        "scores over the identifier tokens only; grace.model.id_head); None: the model config's",
        choices=["full", "ids"]))
    output_dir: Path = field(default=Path("runs/train"), metadata=_help("checkpoints/ and export/ go here"))
    steps: int = field(default=100, metadata=_help("optimizer steps in total"))
    lr: float = field(default=1e-4, metadata=_help("peak learning rate"))
    warmup_steps: int = field(default=10, metadata=_help("linear warmup steps"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    batch_size_i2id: int = field(default=8, metadata=_help("i2id (memorise) samples per micro-batch per process"))
    batch_size_t2id: int = field(default=8, metadata=_help("t2id (retrieve) samples per micro-batch per process"))
    grad_accum: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    max_length: int = field(default=64, metadata=_help("truncate token sequences to this length"))
    checkpoint_every: int = field(default=0, metadata=_help("save a resumable checkpoint every N steps (0: end only)"))
    keep_checkpoints: int = field(default=2, metadata=_help("how many checkpoints to keep (0: all)"))
    seed: int = field(default=0, metadata=_help("seed for init, data order and dropout"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("recompute activations in backward"))
    deepspeed_config: Path | None = field(default=None, metadata=_help("DeepSpeed JSON overriding the packaged one"))
    zero_stage: int = field(default=-1, metadata=_help(
        "ZeRO stage 0-3; -1 = auto: 3 with several processes (as GRACE), 0 with one (no partitioning cost), "
        "or the stage of --deepspeed-config when given", choices=[-1, 0, 1, 2, 3]))
    device: str = field(default="auto", metadata=_help("auto|cpu|cuda", choices=["auto", "cpu", "cuda"]))
    report_to: str = field(default="none", metadata=_help("none|wandb", choices=["none", "wandb"]))
    resume: bool = field(default=True, metadata=_help("continue from output_dir/checkpoints/latest when present"))
    resume_from: Path | None = field(default=None, metadata=_help("a checkpoint folder (…/checkpoints/stepN) to start from"))
    init_from: str | None = field(default=None, metadata=_help(
        "initial weights (not a resume: fresh optimiser and step 0): one of our exports (memorise a new corpus "
        "without starting over), an OpenFlamingo checkpoint.pt, or its hub repo id "
        "(openflamingo/OpenFlamingo-3B-vitl-mpt1b); embedding rows matched by token"))
    stop_after: int | None = field(default=None, metadata=_help("stop (after checkpointing) at this step, as if killed"))
    export: bool = field(default=True, metadata=_help("write the consolidated export/ at the end"))
    log_every: int = field(default=1, metadata=_help("update the progress bar / wandb (and sync the loss) every N steps"))
    data_loader: str = field(default="indexed", metadata=_help(
        "indexed: every sample's text in memory, exact seeded order and resume; stream: webdataset shards "
        "under a DataLoader (resampled, shuffle buffer, workers), memory independent of the corpus size",
        choices=["indexed", "stream"]))
    num_workers: int = field(default=2, metadata=_help("DataLoader workers per process (data_loader=stream)"))
    shuffle_buffer: int = field(default=1000, metadata=_help("samples in each worker's shuffle buffer (stream)"))

    def validate(self) -> None:
        """Raise a one-line error for a config that cannot train."""
        if self.shards_dir is None:
            raise GraceError("train: shards_dir is required (the folder with i2id-*.tar / t2id-*.tar)")
        shards_dir = Path(self.shards_dir)
        if not shards_dir.is_dir():
            raise InputError("shards folder not found", path=shards_dir)
        if self.ids_dir is not None and not Path(self.ids_dir).is_dir():
            raise InputError("ids folder not found", path=self.ids_dir)
        if self.features_cache is not None and not Path(self.features_cache).is_dir():
            raise InputError("features cache folder not found", path=self.features_cache)
        if self.t2id_media is not None and not Path(self.t2id_media).is_dir():
            raise InputError("t2id_media (text-embedding cache) folder not found", path=self.t2id_media)
        if not 0.0 <= self.t2id_media_mix <= 1.0:
            raise GraceError(f"train: t2id_media_mix must be in [0, 1] (got {self.t2id_media_mix})")
        if self.t2id_media_mix > 0 and (self.t2id_media is None or self.features_cache is None):
            raise GraceError("train: t2id_media_mix mixes a text's embedding with its image's: it needs t2id_media "
                             "and a features_cache in the same space")
        if self.deepspeed_config is not None and not Path(self.deepspeed_config).is_file():
            raise InputError("DeepSpeed config not found", path=self.deepspeed_config)
        if self.resume_from is not None and not Path(self.resume_from).is_dir():
            raise InputError("checkpoint folder not found", path=self.resume_from)
        for name in ("steps", "grad_accum", "max_length", "log_every", "shuffle_buffer", "i2id_views"):
            if getattr(self, name) < 1:
                raise GraceError(f"train: {name} must be >= 1 (got {getattr(self, name)})")
        if self.batch_size_i2id < 0 or self.batch_size_t2id < 0 or self.batch_size_i2id + self.batch_size_t2id == 0:
            raise GraceError("train: batch_size_i2id and batch_size_t2id must be >= 0 and not both 0")
        if self.num_workers < 0:
            raise GraceError(f"train: num_workers must be >= 0 (got {self.num_workers})")
        if self.lr <= 0:
            raise GraceError(f"train: lr must be > 0 (got {self.lr})")


@dataclass
class TrainResult:
    """What a run did: per-step mean loss (global, over all processes) for the steps run *now*."""

    losses: list[float]
    steps: list[int]
    seconds_per_step: float
    export_dir: Path | None
    checkpoint_dir: Path | None = None
    start_step: int = 0
