"""Dataclass configs of ``grace baselines late-interaction …`` (light imports: the CLI builds flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grace.config import IMAGE_ROOT_HELP

FUSIONS = ("none", "flmr", "retxknow", "mire")
BACKENDS = ("plaid", "exact")
NBITS = (1, 2, 4, 8)


@dataclass
class ModelConfig:
    """A ColBERT-style late-interaction model: text encoder + linear head + one vision fusion style."""

    text_encoder: str = field(default="minilm", metadata={
        "help": "backbone: minilm (offline), any HF encoder id / ColBERTv2 checkpoint, or random:HIDDEN (tests)"})
    image_encoder: str = field(default="efficientnet-lite0", metadata={"help": "frozen image encoder"})
    fusion: str = field(default="flmr", metadata={"help": "how query images become query tokens", "choices": FUSIONS})
    dim: int = field(default=128, metadata={"help": "token embedding size"})
    query_maxlen: int = field(default=32, metadata={"help": "query tokens (padded with [MASK])"})
    doc_maxlen: int = field(default=180, metadata={"help": "document tokens"})
    truncate_docs: bool = field(default=False, metadata={"help": "truncate docs over doc_maxlen (else: error)"})
    attend_to_mask_tokens: bool = field(default=False, metadata={"help": "let query [MASK] tokens be attended to"})
    mask_punctuation: bool = field(default=True, metadata={"help": "drop punctuation tokens from documents"})
    visual_dim: int = field(default=1280, metadata={"help": "size of the image encoder's tokens"})
    visual_grid: int = field(default=7, metadata={"help": "visual tokens are pooled to GRID×GRID (7 = all 49)"})
    mapping_tokens: int = field(default=8, metadata={"help": "flmr: tokens the mapping network makes"})
    patch_tokens: bool = field(default=True, metadata={"help": "flmr: add PreFLMR-style projected patch tokens"})
    compressed_tokens: int = field(default=8, metadata={"help": "retxknow: compressed visual query tokens"})
    heads: int = field(default=4, metadata={"help": "mire: cross-attention heads"})
    train_backbone: bool = field(default=False, metadata={"help": "fine-tune the text backbone (slow on CPU)"})
    seed: int = field(default=0, metadata={"help": "seed of the new layers (and of random:HIDDEN backbones)"})


@dataclass
class TrainConfig:
    """Contrastive training (in-batch + hard negatives) on a Karpathy dataset: captions → image documents."""

    dataset: Path = field(default=Path("runs/emoji/data/dataset.json"), metadata={"help": "Karpathy dataset.json"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    out: Path = field(default=Path("runs/emoji/late_interaction/model"), metadata={"help": "model folder"})
    split: str = field(default="train", metadata={"help": "split whose (caption, image) pairs train the model"})
    text_encoder: str = field(default="minilm", metadata={"help": "see ModelConfig"})
    image_encoder: str = field(default="efficientnet-lite0", metadata={"help": "frozen image encoder"})
    fusion: str = field(default="none", metadata={"help": "query fusion (text → image queries carry no image)",
                                                  "choices": FUSIONS})
    dim: int = field(default=128, metadata={"help": "token embedding size"})
    visual_grid: int = field(default=7, metadata={"help": "visual tokens pooled to GRID×GRID"})
    train_backbone: bool = field(default=False, metadata={"help": "fine-tune the text backbone (slow on CPU)"})
    steps: int = field(default=300, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=32, metadata={"help": "queries per step (in-batch negatives)"})
    hard_negatives: int = field(default=0, metadata={"help": "random hard negatives per query (0 = in-batch only)"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate of the new layers"})
    cache_dir: Path | None = field(default=None, metadata={"help": "visual token cache (default OUT/cache)"})
    direction: str = field(default="t2i", metadata={
        "help": "t2i: captions retrieve their images; i2t: images (with --instruction) retrieve their captions, "
                "the mapping-network pre-training of FLMR / PreFLMR; vid2r: (image, question) retrieves the "
                "knowledge-base passages of --vid2r triples (Ret-XKnow / MIRe pre-training)",
        "choices": ["t2i", "i2t", "vid2r"]})
    vid2r: Path | None = field(default=None, metadata={"help": "vid2r: the vid2r.json of `late-interaction vid2r`"})
    kb: Path | None = field(default=None, metadata={
        "help": "vid2r: the knowledge base jsonl (default: the one that vid2r.json was built from)"})
    instruction: str = field(default="Utilize the given image to generate a caption.", metadata={
        "help": "i2t: the query text every image goes with (PreFLMR-style instruction)"})
    init_from: Path | None = field(default=None, metadata={
        "help": "a trained model folder to continue from (pre-train, then fine-tune); same fusion and encoders"})
    seed: int = field(default=0, metadata={"help": "seed"})


@dataclass
class IndexConfig:
    """Encode a collection with a trained model and index it (PLAID via colbert-ai, or exact MaxSim)."""

    model: Path = field(default=Path("runs/emoji/late_interaction/model"), metadata={"help": "model folder"})
    checkpoint: str = field(default="", metadata={
        "help": "instead of --model: a released FLMR / PreFLMR checkpoint (hub id such as "
                "LinWeizheDragon/PreFLMR_ViT-L, or its folder), zero-shot; indexes --passages"})
    out: Path = field(default=Path("runs/emoji/late_interaction/index"), metadata={"help": "index folder"})
    dataset: Path | None = field(default=Path("runs/emoji/data/dataset.json"),
                                 metadata={"help": "Karpathy dataset.json: its images become documents"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    split: str = field(default="test", metadata={"help": "split indexed ('' = all images)"})
    passages: Path | None = field(default=None, metadata={
        "help": "instead: a .tsv (id<TAB>text) or .jsonl of passages: {id, text} and, with --checkpoint, "
                "optionally image_features (a list) or image (a path, under --image-root if relative)"})
    m2kr: str = field(default="", metadata={
        "help": "instead: the passages of an M2KR task (hub id or a folder in its layout; --m2kr-task, --split)"})
    m2kr_task: str = field(default="EVQA", metadata={"help": "M2KR task whose <split>_passages are indexed"})
    backend: str = field(default="plaid", metadata={"help": "index type", "choices": BACKENDS})
    nbits: int = field(default=2, metadata={"help": "PLAID residual bits", "choices": NBITS})
    kmeans_niters: int = field(default=4, metadata={"help": "PLAID k-means iterations"})
    cache_dir: Path | None = field(default=None, metadata={"help": "visual token cache (default OUT/cache)"})
    expansion: Path | None = field(default=None, metadata={
        "help": "images of --dataset: document expansion, JSON {image_id: [texts]} (tags, or pseudo-queries) whose "
                "document tokens join each image's own"})
    seed: int = field(default=0, metadata={"help": "seed"})


@dataclass
class SearchConfig:
    """Search an index: text and/or image queries → top-k documents."""

    index: Path = field(default=Path("runs/emoji/late_interaction/index"), metadata={"help": "index folder"})
    texts: list[str] = field(default_factory=list, metadata={"help": "text queries"})
    images: list[Path] = field(default_factory=list, metadata={"help": "query images (paired with --texts when both)"})
    k: int = field(default=10, metadata={"help": "hits per query"})
    instruction: str = field(default="", metadata={
        "help": "prefix every query text (PreFLMR: 'Using the provided image, obtain documents that address the "
                "subsequent question:'; its checkpoints mask the instruction's tokens)"})
    backend: str = field(default="", metadata={"help": "override the index backend (plaid|exact)"})
    out: Path | None = field(default=None, metadata={"help": "write the hits as JSON here (default: print)"})


@dataclass
class KBVQAConfig:
    """Native task: (emoji image + question) → WordNet gloss; trains and scores every fusion style."""

    out: Path = field(default=Path("runs/kbvqa/late_interaction"), metadata={"help": "output folder"})
    emoji_dir: Path = field(default=Path("runs/emoji/data"), metadata={"help": "emoji dataset folder (built if absent)"})
    dataset: Path | None = field(default=None, metadata={"help": "use this Karpathy dataset.json instead of emoji"})
    wordnet_dir: Path = field(default=Path("/usr/share/wordnet"), metadata={"help": "WordNet data.* files"})
    kb_size: int = field(default=10_000, metadata={"help": "passages (every answer + random distractors; 0 = all)"})
    fusions: list[str] = field(default_factory=lambda: ["none", "flmr", "retxknow", "mire"],
                               metadata={"help": "styles to train and score (none = text-only ColBERT)"})
    text_encoder: str = field(default="minilm", metadata={"help": "see ModelConfig"})
    image_encoder: str = field(default="efficientnet-lite0", metadata={"help": "frozen image encoder"})
    dim: int = field(default=128, metadata={"help": "token embedding size"})
    visual_grid: int = field(default=7, metadata={"help": "visual tokens pooled to GRID×GRID"})
    steps: int = field(default=400, metadata={"help": "optimiser steps per model"})
    batch_size: int = field(default=32, metadata={"help": "queries per step"})
    hard_negatives: int = field(default=1, metadata={"help": "random hard negatives per query"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    init_from: Path | None = field(default=None, metadata={
        "help": "pre-trained models to fine-tune: DIR/<fusion>/model, DIR/<fusion>, or DIR itself (one fusion), "
                "e.g. from `train --direction i2t`"})
    compare_with: Path | None = field(default=None, metadata={
        "help": "results.json of another kbvqa run on the same task (e.g. from scratch): paired ΔR@k / ΔPR@k "
                "per fusion in results.md"})
    backend: str = field(default="exact", metadata={"help": "index used for scoring", "choices": BACKENDS})
    nbits: int = field(default=2, metadata={"help": "PLAID residual bits", "choices": NBITS})
    plaid_nbits: list[int] = field(default_factory=lambda: [2, 4, 8],
                                   metadata={"help": "PLAID indexes benchmarked (size, latency, recall) for bench_fusion"})
    bench_fusion: str = field(default="flmr", metadata={"help": "model whose KB index PLAID is benchmarked on"})
    ncells: int | None = field(default=None, metadata={"help": "PLAID cells probed per query token (None: colbert's)"})
    ndocs: int | None = field(default=None, metadata={"help": "PLAID candidates kept after centroid scoring"})
    doc_maxlen: int = field(default=96, metadata={"help": "passage tokens (longer glosses are truncated)"})
    dedupe_answers: bool = field(default=True, metadata={"help": "score one test query per answer passage"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N emoji (smoke runs)"})
    seed: int = field(default=0, metadata={"help": "seed"})


@dataclass
class ViD2RConfig:
    """ViD2R (Ret-XKnow, MIRe): visual dialogues → (image, question, positive / negative passages) triples."""

    dialogues: Path | None = field(default=None, metadata={"help": "LLaVA-Instruct JSON (id, image, conversations)"})
    kb: Path | None = field(default=None, metadata={"help": "knowledge base jsonl (id + text [+ title] per line)"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    out: Path = field(default=Path("runs/vid2r"), metadata={"help": "output folder (vid2r.json, report.json)"})
    offline: bool = field(default=False, metadata={
        "help": "build the dialogues and the KB offline: emoji images (CLDR names, keywords) + WordNet glosses"})
    emoji_dir: Path = field(default=Path("runs/emoji/data"), metadata={"help": "offline: emoji dataset folder"})
    wordnet_dir: Path = field(default=Path("/usr/share/wordnet"), metadata={"help": "offline: WordNet data.* files"})
    kb_size: int = field(default=5_000, metadata={"help": "offline: WordNet passages in the KB"})
    text_encoder: str = field(default="minilm", metadata={"help": "the text retriever's sentence encoder"})
    filter_k: int = field(default=10, metadata={
        "help": "drop a turn whose question alone retrieves its response's best passage in the top K (0: no filter)"})
    positives: int = field(default=3, metadata={"help": "passages the response retrieves = positives"})
    negatives: int = field(default=3, metadata={"help": "hard negatives: the question's own hits, not positives"})
    limit: int = field(default=0, metadata={"help": "use only the first N turns (offline: images; 0 = all)"})
    seed: int = field(default=0, metadata={"help": "seed (offline KB sample)"})
