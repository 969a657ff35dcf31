"""``grace data build|check|features|pseudo-queries``: thin drivers over dataclasses
(``grace shards build`` reads identifiers, so it lives in :mod:`grace.identifiers.cli`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from grace.config import IMAGE_ROOT_HELP
from grace.data_process.protocol import DEFAULT_PROTOCOL

BENCHMARKS = ("emoji", "openclipart", "synthetic", "karpathy")


@dataclass
class DataBuildConfig:
    """Build an offline benchmark in the Karpathy form (``OUT/dataset.json`` + ``OUT/images/``)."""

    out: Optional[Path] = field(default=None, metadata={"help": "output folder"})
    seed: int = field(default=0, metadata={"help": "seed of the train/val/test split"})
    limit: int = field(default=0, metadata={"help": "keep at most this many images (0: all)"})
    image_size: int = field(default=0, metadata={"help": "rendered image size in pixels (0: the builder's default)"})
    test_fraction: float = field(default=0.12, metadata={"help": "share of images held out as test"})
    drop_skin_tones: bool = field(default=True, metadata={"help": "emoji: drop skin-tone variants"})
    n_images: int = field(default=64, metadata={"help": "synthetic: number of shapes (at most 64)"})
    source: Optional[Path] = field(default=None, metadata={
        "help": "karpathy: your own Karpathy-form JSON, re-split group-aware by --group-by into OUT/dataset.json"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    group_by: str = field(default="", metadata={
        "help": "karpathy: what puts images in one group (never split across train / val / test): an entry field "
                "(e.g. author, album) or re:REGEX over the file name (its first group, e.g. 're:^(.+?)_\\d+')"})
    image_cosine: float = field(default=0.95, metadata={
        "help": "emoji, openclipart: images whose features have this cosine or more share a group (0: off)"})


@dataclass
class DataCheckConfig:
    """Report a Karpathy-form dataset's missing and unreadable images (exit status 1 when any) before a run."""

    dataset: Optional[Path] = field(default=None, metadata={"help": "Karpathy-form dataset JSON (e.g. dataset_flickr30k.json)"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    decode: bool = field(default=True, metadata={"help": "open and decode every image (catches truncated files)"})
    workers: int = field(default=8, metadata={"help": "threads checking images"})
    report: Path | None = field(default=None, metadata={"help": "full JSON report (default: DATASET.check.json beside it)"})
    show: int = field(default=10, metadata={"help": "problems printed per kind"})
    near_duplicates: bool = field(default=True, metadata={
        "help": "also report near-duplicates across splits (exit status 1 when any cross-split variant group)"})
    image_pairs: bool = field(default=True, metadata={"help": "near-duplicates: also compare image features"})
    features: Path | None = field(default=None, metadata={
        "help": "near-duplicates: features cache folder (built there if absent; default DATASET_DIR/features/ENCODER)"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "near-duplicates: image encoder of the cache"})
    image_cosine: float = field(default=0.95, metadata={"help": "near-duplicates: feature cosine of an image pair"})


@dataclass
class FeaturesConfig:
    """Encode every image of a dataset with a frozen encoder into a reusable cache."""

    dataset: Optional[Path] = field(default=None, metadata={"help": "Karpathy-form dataset JSON"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    out: Optional[Path] = field(default=None, metadata={"help": "cache folder (meta.json, pooled.npy, tokens.npy)"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "efficientnet-lite0 | open_clip:A/P | hf:ID"})
    tokens: bool = field(default=False, metadata={"help": "also store the (N, T, D) visual tokens"})
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})
    views: int = field(default=1, metadata={
        "help": "also cache N-1 augmented views of every image under OUT/views/<k> (train --i2id-views N)"})
    seed: int = field(default=0, metadata={"help": "seed of the augmented views"})


@dataclass
class PseudoQueriesConfig:
    """Pseudo-queries for the held-out (val and test) images, from what the protocol allows; every text passes
    the leak filter (its counts are printed and saved in OUT's provenance file, F.config.json)."""

    dataset: Optional[Path] = field(default=None, metadata={"help": "Karpathy-form dataset JSON"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    out: Optional[Path] = field(default=None, metadata={"help": "output JSON {image_id: [texts]}"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={
        "help": "image-only (from the image alone: knn-captions, lit-captions, self-caption, captioner:MODEL) | "
                "tagged (keywords)"})
    generator: str = field(default="", metadata={
        "help": "knn-captions | lit-captions | self-caption | captioner:MODEL_ID (hub id or folder) | keywords "
                "(default: the protocol's)"})
    splits: list[str] = field(default_factory=list, metadata={"help": "splits whose images get pseudo-queries "
                                                                      "(default: every held-out split)"})
    max_queries: int = field(default=8, metadata={"help": "keywords / knn-captions / lit-captions: texts kept per image"})
    k: int = field(default=5, metadata={"help": "knn-captions: nearest training images whose captions are read"})
    features: Optional[Path] = field(default=None, metadata={
        "help": "knn-captions, lit-captions, self-caption: features cache folder (built there if absent; default "
                "DATASET_DIR/features/ENCODER)"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "knn-captions, lit-captions, self-caption: image encoder of the cache"})
    pairs: bool = field(default=False, metadata={"help": "keywords: also every two keyword words as a phrase"})
    templates: list[str] = field(default_factory=lambda: ["{}"], metadata={
        "help": "keywords: templates each text is filled into (one '{}' each, e.g. '{}' 'an emoji of {}')"})
    num_captions: int = field(default=3, metadata={"help": "captioner: beams kept per image"})
    batch_size: int = field(default=8, metadata={"help": "captioner: images per generate call"})
    prompt: Optional[str] = field(default=None, metadata={
        "help": "captioner: instruction for a chat VLM (e.g. 'Describe this image in one sentence.')"})
    device: Optional[str] = field(default=None, metadata={"help": "captioner: cpu | cuda (default: cuda if available)"})
    options: list[str] = field(default_factory=list, metadata={
        "help": "more generator options as KEY=VALUE (each value read as YAML), e.g. steps=600 lr=0.002 for "
                "self-caption (its model is trained and kept in OUT's folder, OUT_STEM.self-caption/)"})


def register(subparsers: argparse._SubParsersAction) -> None:
    from grace.config import add_command

    data = subparsers.add_parser("data", help="datasets, features, pseudo-queries")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="VERB")
    build = add_command(sub, "build", DataBuildConfig, _data_build,
                        help="build an offline benchmark: emoji | openclipart | synthetic")
    build.add_argument("benchmark", choices=BENCHMARKS)
    add_command(sub, "check", DataCheckConfig, _data_check,
                help="report missing / corrupt images of a Karpathy JSON (--image-root) before any stage reads it")
    add_command(sub, "features", FeaturesConfig, _features)
    add_command(sub, "pseudo-queries", PseudoQueriesConfig, _pseudo_queries)


def _data_build(args: argparse.Namespace) -> int:
    import time

    from grace.config import dataclass_from_args, require
    from grace.io_utils import save_config

    cfg = dataclass_from_args(DataBuildConfig, args)
    require(cfg, "out")
    start = time.perf_counter()
    size = {"image_size": cfg.image_size} if cfg.image_size else {}
    if args.benchmark == "emoji":
        from grace.data_process.emoji import build_emoji

        dataset = build_emoji(cfg.out, drop_skin_tones=cfg.drop_skin_tones, test_fraction=cfg.test_fraction,
                              seed=cfg.seed, limit=cfg.limit or None, image_cosine=cfg.image_cosine, **size)
    elif args.benchmark == "openclipart":
        from grace.data_process.openclipart import build_openclipart

        dataset = build_openclipart(cfg.out, test_fraction=cfg.test_fraction, seed=cfg.seed,
                                    limit=cfg.limit or None, image_cosine=cfg.image_cosine, **size)
    elif args.benchmark == "karpathy":
        from grace.data_process.groups import regroup_karpathy

        require(cfg, "source", "group_by")
        dataset = regroup_karpathy(cfg.source, cfg.out, cfg.group_by, image_root=cfg.image_root,
                                   test_fraction=cfg.test_fraction, seed=cfg.seed)
    else:
        from grace.data_process.synthetic import build_synthetic

        dataset = build_synthetic(cfg.out, n_images=cfg.n_images, **size)
    save_config(cfg.out, {"benchmark": args.benchmark, **vars(cfg), "out": str(cfg.out),
                          "source": str(cfg.source) if cfg.source else None,
                          "image_root": str(cfg.image_root) if cfg.image_root else None}, name="build_config.json")
    texts = sum(len(r.texts) for r in dataset.images)
    splits = ", ".join(f"{k} {v}" for k, v in sorted(dataset.split_counts().items()))
    print(f"{args.benchmark}: {len(dataset)} images ({splits}), {texts} texts, "
          f"{time.perf_counter() - start:.1f} s -> {Path(cfg.out) / 'dataset.json'}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args, require
    from grace.data_process.check import check_images, default_report_path, format_report, problems
    from grace.data_process.dataset import load_karpathy
    from grace.io_utils import write_json

    cfg = dataclass_from_args(DataCheckConfig, args)
    require(cfg, "dataset")
    dataset = load_karpathy(cfg.dataset, cfg.image_root, check_files=False)  # the JSON's own errors first
    report = check_images(dataset, decode=cfg.decode, workers=cfg.workers)
    if cfg.near_duplicates:
        from grace.data_process.near_duplicates import format_near_duplicates, near_duplicate_report

        features = None
        if cfg.image_pairs and not problems(report):
            from grace.data_process.features import encoder_folder, image_features

            cache = cfg.features or Path(cfg.dataset).parent / "features" / encoder_folder(cfg.encoder)
            features = image_features(dataset, encoder=cfg.encoder, cache_dir=cache)
        report["near_duplicates"] = near_duplicate_report(dataset, features, threshold=cfg.image_cosine)
    path = write_json(cfg.report or default_report_path(cfg.dataset), report)
    print(format_report(report, cfg.show))
    if cfg.near_duplicates:
        print(format_near_duplicates(report["near_duplicates"]))
    print(f"report -> {path}")
    leaks = report.get("near_duplicates", {}).get("cross_split_groups", 0)
    return 1 if problems(report) or leaks else 0


def _features(args: argparse.Namespace) -> int:
    import time

    from grace.config import dataclass_from_args, require
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.features import image_features, view_cache_dir
    from grace.errors import GraceError

    cfg = dataclass_from_args(FeaturesConfig, args)
    require(cfg, "dataset", "out")
    if cfg.views < 1:
        raise GraceError(f"--views must be >= 1, got {cfg.views}")
    start = time.perf_counter()
    dataset = load_karpathy(cfg.dataset, cfg.image_root)
    for view in range(cfg.views):
        fs = image_features(dataset, encoder=cfg.encoder, cache_dir=cfg.out, tokens=cfg.tokens,
                            batch_size=cfg.batch_size, view=view, seed=cfg.seed)
        print(f"features {cfg.encoder}{f' view {view}' if view else ''}: {tuple(fs.array.shape)} in "
              f"{time.perf_counter() - start:.1f} s -> {view_cache_dir(cfg.out, view)}")
    return 0


#: generators that read the images' features cache
FEATURE_GENERATORS = ("knn-captions", "lit-captions", "self-caption")


def generator_options(cfg: PseudoQueriesConfig, generator: str) -> dict:
    """The keyword arguments of ``generator``: from the command's flags, then ``--options`` on top."""
    from grace.config import key_values

    if generator == "keywords":
        options = {"max_queries": cfg.max_queries, "pairs": cfg.pairs, "templates": cfg.templates}
    elif generator == "knn-captions":
        options = {"k": cfg.k, "max_queries": cfg.max_queries}
    elif generator == "lit-captions":
        options = {"max_queries": cfg.max_queries}
    elif generator.startswith("captioner:"):
        options = {"num_captions": cfg.num_captions, "batch_size": cfg.batch_size, "prompt": cfg.prompt,
                   "device": cfg.device,  # resumable: captioned images are kept in the cache
                   "cache": str(Path(cfg.out).with_suffix(".captions.jsonl"))}
    else:
        options = {"num_captions": cfg.num_captions}
    return options | key_values(cfg.options, "--options")


def _pseudo_queries(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args, require
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.protocol import get_protocol
    from grace.data_process.pseudo_queries import (
        build_pseudo_queries,
        create_pseudo_query_generator,
        generator_workdir,
        save_pseudo_queries,
    )

    cfg = dataclass_from_args(PseudoQueriesConfig, args)
    require(cfg, "dataset", "out")
    protocol = get_protocol(cfg.protocol)
    generator = protocol.check_generator(cfg.generator or protocol.default_generator)
    dataset = load_karpathy(cfg.dataset, cfg.image_root, check_files=generator != "keywords")
    options = generator_options(cfg, generator)
    features = None
    if generator in FEATURE_GENERATORS:
        from grace.data_process.features import encoder_folder, image_features

        cache = cfg.features or Path(cfg.dataset).parent / "features" / encoder_folder(cfg.encoder)
        features = image_features(dataset, encoder=cfg.encoder, cache_dir=cache)
    workdir = generator_workdir(cfg.out, generator)
    made = build_pseudo_queries(dataset, create_pseudo_query_generator(generator, dataset=dataset, features=features,
                                                                       workdir=workdir, **options),
                                splits=cfg.splits or None)
    saved = save_pseudo_queries(cfg.out, made, dataset, protocol=protocol.name, options=options)
    print(made.summary())
    print(f"-> {cfg.out} (provenance, digest {saved['digest']}: {Path(cfg.out).stem}.config.json)")
    return 0
