"""Dataclass configs of ``grace baselines clip-faiss …`` (light imports: the CLI builds flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grace.config import IMAGE_ROOT_HELP

FEATURE_MODES = ("image", "text")
SOURCE_KINDS = ("auto", "karpathy", "folder", "webdataset")


@dataclass
class ExtractConfig:
    """Extract image and text features of an image-text collection, one chunk at a time."""

    source: Path = field(default=Path("runs/emoji/data/dataset.json"),
                         metadata={"help": "dataset.json (Karpathy), a folder of images (+ .txt), or a folder/glob of .tar shards"})
    out: Path = field(default=Path("runs/emoji/clip_faiss/features"), metadata={"help": "feature folder"})
    model: str = field(default="lit:runs/emoji/clip_faiss/heads",
                       metadata={"help": "dual encoder: lit:HEADS_DIR or open_clip:ARCH/PRETRAINED"})
    source_kind: str = field(default="auto", metadata={"help": "input layout", "choices": SOURCE_KINDS})
    split: str = field(default="", metadata={"help": "Karpathy split to extract ('' = all images)"})
    chunks: int = field(default=1, metadata={"help": "number of chunks the collection is cut into"})
    chunk_idx: int = field(default=0, metadata={"help": "which chunk this process extracts"})
    batch_size: int = field(default=64, metadata={"help": "images/texts per encoder call"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})


@dataclass
class MergeConfig:
    """Concatenate the extracted chunks (in chunk order) into one feature set."""

    features: Path = field(default=Path("runs/emoji/clip_faiss/features"), metadata={"help": "feature folder of extract"})


@dataclass
class TrainHeadsConfig:
    """Train LiT projection heads (InfoNCE) over frozen image and text encoders on a train split."""

    dataset: Path = field(default=Path("runs/emoji/data/dataset.json"), metadata={"help": "Karpathy-form dataset.json"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    out: Path = field(default=Path("runs/emoji/clip_faiss/heads"), metadata={"help": "heads folder"})
    split: str = field(default="train", metadata={"help": "split whose (image, caption) pairs train the heads"})
    image_encoder: str = field(default="efficientnet-lite0", metadata={"help": "frozen image encoder"})
    text_encoder: str = field(default="minilm", metadata={"help": "frozen text encoder"})
    dim: int = field(default=256, metadata={"help": "joint embedding size"})
    hidden: int = field(default=512, metadata={"help": "MLP hidden size (0 = linear heads)"})
    epochs: int = field(default=30, metadata={"help": "passes over the (image, caption) pairs"})
    batch_size: int = field(default=256, metadata={"help": "pairs per step (in-batch negatives)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    init_temperature: float = field(default=0.07, metadata={"help": "initial softmax temperature (learnable)"})
    cache_dir: Path | None = field(default=None, metadata={"help": "cache of frozen image features (default OUT/cache)"})
    seed: int = field(default=0, metadata={"help": "seed"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})


@dataclass
class BuildIndexConfig:
    """Train and populate a FAISS inner-product index over image or text features."""

    features: Path = field(default=Path("runs/emoji/clip_faiss/features"), metadata={"help": "merged feature folder"})
    out: Path = field(default=Path("runs/emoji/clip_faiss/index"), metadata={"help": "index folder"})
    index: str = field(default="Flat", metadata={"help": "Flat or IVF{n}_PQ{m} (e.g. IVF256_PQ32)"})
    feature_mode: str = field(default="image", metadata={"help": "index keys", "choices": FEATURE_MODES})
    train_size: int = field(default=100_000, metadata={"help": "vectors sampled to train IVF-PQ"})
    add_batch_size: int = field(default=65_536, metadata={"help": "vectors added per batch"})
    nprobe: int = field(default=16, metadata={"help": "IVF lists probed per query"})
    use_gpu: bool = field(default=True, metadata={"help": "use GPU FAISS when faiss.get_num_gpus() > 0"})
    seed: int = field(default=0, metadata={"help": "seed of the training sample"})
    expansion: Path | None = field(default=None, metadata={
        "help": "document expansion (image keys only): JSON {image_id: [texts]} (tags, or pseudo-queries); each "
                "image key becomes the normalised sum of its image vector and WEIGHT x the mean of its texts' "
                "vectors (the dual encoder's text tower)"})
    expansion_weight: float = field(default=1.0, metadata={"help": "weight of the texts in an expanded key"})


@dataclass
class SearchConfig:
    """Top-K search: text → image (--texts) or image → text/image (--images) against an index folder."""

    index: Path = field(default=Path("runs/emoji/clip_faiss/index"), metadata={"help": "index folder"})
    texts: list[str] = field(default_factory=list, metadata={"help": "text queries"})
    images: list[Path] = field(default_factory=list, metadata={"help": "image queries (files)"})
    k: int = field(default=10, metadata={"help": "hits per query"})
    out: Path | None = field(default=None, metadata={"help": "write the hits as JSON here (default: print)"})


@dataclass
class RetrievePairsConfig:
    """REACT: retrieve image-text pairs per class prompt and write them per class (+ webdataset shards)."""

    index: Path = field(default=Path("runs/emoji/clip_faiss/index"), metadata={"help": "index folder"})
    classes: list[str] = field(default_factory=list, metadata={"help": "class names"})
    classes_file: Path | None = field(default=None, metadata={"help": "file with one class name per line"})
    dataset: str | None = field(default=None, metadata={
        "help": "a shipped class set instead of --classes: imagenet-1k (its 1,000 class names and CLIP's 80 templates)"})
    templates: list[str] = field(default_factory=list, metadata={
        "help": "prompt templates with {} (default: the dataset's, else 'a photo of a {}.')"})
    prompt_mode: str = field(default="averaged", metadata={
        "help": "averaged: one query per class (mean of its prompts); separate: one query per prompt, hits "
                "interleaved by rank (REACT's sep_prompts)", "choices": ["averaged", "separate"]})
    images_per_class: int = field(default=10, metadata={"help": "distinct images kept per class"})
    out: Path = field(default=Path("runs/emoji/clip_faiss/pairs"), metadata={"help": "output folder"})
    folders: bool = field(default=True, metadata={"help": "write OUT/<class>/NNNN.png + .txt"})
    shards: bool = field(default=False, metadata={"help": "also write OUT/shards/pairs-NNNNNN.tar"})
    max_per_shard: int = field(default=1000, metadata={"help": "samples per shard"})


@dataclass
class BenchLatencyConfig:
    """Search latency vs corpus size for Flat and IVF-PQ on synthetic vectors."""

    sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000], metadata={"help": "corpus sizes"})
    indexes: list[str] = field(default_factory=lambda: ["Flat", "IVF1024_PQ32"], metadata={"help": "index types"})
    dim: int = field(default=256, metadata={"help": "vector size"})
    num_queries: int = field(default=256, metadata={"help": "queries timed per point"})
    k: int = field(default=10, metadata={"help": "hits per query"})
    batch_size: int = field(default=1, metadata={"help": "queries per search call (1 = per-query latency)"})
    nprobe: int = field(default=16, metadata={"help": "IVF lists probed"})
    out: Path = field(default=Path("runs/bench/clip_faiss_latency"), metadata={"help": "output folder (rows.json + table.md)"})
    seed: int = field(default=0, metadata={"help": "seed"})
