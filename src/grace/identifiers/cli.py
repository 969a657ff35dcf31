"""``grace ids build``, ``grace trie build`` and ``grace shards build``: thin drivers over :class:`IdsBuildConfig`,
:class:`TrieBuildConfig` and :class:`ShardsBuildConfig`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from grace.config import IMAGE_ROOT_HELP
from grace.identifiers.idmap import SCHEME_MODES

SCHEME_NAMES = tuple(SCHEME_MODES)


@dataclass
class IdsBuildConfig:
    """Build an IdentifierMap (+ its tokenizer) for one scheme."""

    dataset: Optional[Path] = field(default=None, metadata={"help": "Karpathy-form dataset JSON"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    scheme: str = field(default="numeric", metadata={"help": "identifier scheme", "choices": SCHEME_NAMES})
    out: Optional[Path] = field(default=None, metadata={"help": "output folder (ids.json, config.json, tokenizer/)"})
    features_cache: Optional[Path] = field(default=None, metadata={
        "help": "structured / rq: image feature cache folder (rq quantises it: any embedding cache in that layout)"})
    features_file: Optional[Path] = field(default=None, metadata={
        "help": "structured (--cluster-on image) / rq: an (N, D) float16 or float32 .npy, one row per image in the "
                "dataset's order, read in chunks: for corpora whose features do not fit in memory"})
    encoder: str = field(default="efficientnet-lite0", metadata={"help": "structured: image encoder"})
    k: int = field(default=30, metadata={"help": "structured: clusters per level"})
    c: int = field(default=30, metadata={"help": "structured: max images per leaf"})
    kmeans: str = field(default="faiss", metadata={"help": "structured: k-means backend", "choices": ("faiss", "sklearn")})
    cluster_on: str = field(default="image", metadata={
        "help": "structured: cluster image features, the texts training sees (train captions, held-out images' "
                "pseudo-queries), or both", "choices": ("image", "text", "both")})
    text_encoder: str = field(default="minilm", metadata={"help": "structured: text encoder of --cluster-on text"})
    levels: int = field(default=3, metadata={"help": "rq: residual quantisation levels (+ one that makes ids unique)"})
    codebook: int = field(default=64, metadata={"help": "rq: codes per level"})
    reserve_first: str = field(default="", metadata={"help": "rq: a reserved first token <M_NAME> (e.g. image)"})
    pseudo_queries: Path | None = field(default=None, metadata={
        "help": "held-out images' texts for semantic / text-clustered ids: JSON from `grace data pseudo-queries` "
                "(required by those schemes)"})
    seed: int = field(default=0, metadata={"help": "seed"})
    tokenizer: str = field(default="smollm2", metadata={"help": "base tokenizer: smollm2, byte, a folder or HF id"})


@dataclass
class TrieBuildConfig:
    """Build the constraint trie over the identifiers of one split."""

    ids: Optional[Path] = field(default=None, metadata={"help": "folder written by `grace ids build`"})
    dataset: Optional[Path] = field(default=None, metadata={"help": "dataset JSON (needed unless --split all)"})
    split: str = field(default="test", metadata={"help": "images in the trie", "choices": ("test", "val", "train", "all")})
    out: Optional[Path] = field(default=None, metadata={"help": "output folder"})


@dataclass
class ShardsBuildConfig:
    """Write i2id + t2id webdataset shards for one identifier scheme."""

    dataset: Optional[Path] = field(default=None, metadata={"help": "Karpathy-form dataset JSON"})
    image_root: Path | None = field(default=None, metadata=IMAGE_ROOT_HELP)
    ids: Optional[Path] = field(default=None, metadata={"help": "folder written by `grace ids build`"})
    out: Optional[Path] = field(default=None, metadata={"help": "output folder"})
    pseudo_queries: Optional[Path] = field(default=None, metadata={
        "help": "JSON from `grace data pseudo-queries` (the held-out images' t2id texts; none without it)"})
    max_per_shard: int = field(default=1000, metadata={"help": "samples per shard"})


def register(subparsers: argparse._SubParsersAction) -> None:
    from grace.config import add_command

    ids = subparsers.add_parser("ids", help="identifier schemes").add_subparsers(dest="ids_command", required=True)
    add_command(ids, "build", IdsBuildConfig, _ids_build,
                help="give every image an identifier (numeric|string|semantic|structured|atomic)")
    trie = subparsers.add_parser("trie", help="constraint tries").add_subparsers(dest="trie_command", required=True)
    add_command(trie, "build", TrieBuildConfig, _trie_build, help="trie over the identifiers of a split")
    shards = subparsers.add_parser("shards", help="i2id / t2id webdataset shards")
    add_command(shards.add_subparsers(dest="shards_command", required=True, metavar="VERB"), "build",
                ShardsBuildConfig, _shards_build)


def _ids_build(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from grace.config import dataclass_from_args, require
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.pseudo_queries import load_pseudo_queries
    from grace.errors import GraceError
    from grace.identifiers import create_scheme
    from grace.identifiers.schemes import reads_held_out_texts

    cfg = dataclass_from_args(IdsBuildConfig, args)
    require(cfg, "dataset", "out")
    start = time.perf_counter()
    needs_images = (cfg.scheme == "structured" and cfg.cluster_on != "text") or cfg.scheme == "rq"
    dataset = load_karpathy(cfg.dataset, cfg.image_root, check_files=needs_images and cfg.features_file is None)
    features = None
    if cfg.features_file is not None:
        from grace.identifiers.out_of_core import VectorFile

        if not needs_images:
            raise GraceError(f"--features-file is read by structured (--cluster-on image) and rq ids, not {cfg.scheme}")
        features = VectorFile(cfg.features_file)
    elif needs_images:
        from grace.data_process.features import image_features

        cache = cfg.features_cache or Path(cfg.out) / "features"
        features = image_features(dataset, encoder=cfg.encoder, cache_dir=cache)
    scheme = create_scheme(cfg.scheme, seed=cfg.seed, tokenizer=cfg.tokenizer, k=cfg.k, c=cfg.c,
                           kmeans=cfg.kmeans, encoder=cfg.encoder, cluster_on=cfg.cluster_on,
                           text_encoder=cfg.text_encoder,
                           **({"levels": cfg.levels, "codebook": cfg.codebook, "reserve_first": cfg.reserve_first}
                              if cfg.scheme == "rq" else {}))
    pseudo_queries = load_pseudo_queries(cfg.pseudo_queries, dataset)[0] if cfg.pseudo_queries is not None else None
    if pseudo_queries is None and reads_held_out_texts(cfg.scheme, cfg.cluster_on):
        raise GraceError(f"--scheme {cfg.scheme}{' --cluster-on ' + cfg.cluster_on if cfg.scheme == 'structured' else ''}"
                         f" reads the held-out images' pseudo-queries: give --pseudo-queries F "
                         f"(from `grace data pseudo-queries`)")
    idmap = scheme.build(dataset, features, pseudo_queries=pseudo_queries)
    idmap.save(cfg.out)
    tok = idmap.tokenizer()
    lengths = np.array([len(tok.encode_identifier(i)) for i in idmap.identifiers()])
    print(f"scheme {cfg.scheme}: {len(dataset)} images, {len(set(idmap.identifiers()))} unique ids, "
          f"{len(tok.new_tokens)} new tokens, id length in tokens max {lengths.max()} mean {lengths.mean():.2f}, "
          f"{time.perf_counter() - start:.1f} s -> {cfg.out}")
    return 0


def _trie_build(args: argparse.Namespace) -> int:
    import time

    from grace.config import dataclass_from_args, require
    from grace.data_process.dataset import load_karpathy
    from grace.identifiers import IdentifierMap
    from grace.identifiers.trie import build_trie

    cfg = dataclass_from_args(TrieBuildConfig, args)
    require(cfg, "ids", "out")
    start = time.perf_counter()
    idmap = IdentifierMap.load(cfg.ids)
    tokenizer = idmap.load_tokenizer(cfg.ids)
    image_ids = None
    if cfg.split != "all":
        require(cfg, "dataset")
        dataset = load_karpathy(cfg.dataset, check_files=False)
        image_ids = [r.image_id for r in dataset.split(cfg.split)]
    trie = build_trie(idmap, tokenizer, image_ids=image_ids)
    trie.save(cfg.out, config={"ids": str(cfg.ids), "split": cfg.split, "scheme": idmap.scheme})
    table = trie.transitions()
    print(f"trie over {len(trie)} identifiers ({cfg.split}): {table.num_nodes} nodes, {table.num_edges} edges, "
          f"{time.perf_counter() - start:.1f} s -> {cfg.out}")
    return 0


def _shards_build(args: argparse.Namespace) -> int:
    import time

    from grace.config import dataclass_from_args, require
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.pseudo_queries import load_pseudo_queries
    from grace.data_process.shards import write_shards
    from grace.identifiers.idmap import IdentifierMap
    from grace.io_utils import save_config

    cfg = dataclass_from_args(ShardsBuildConfig, args)
    require(cfg, "dataset", "ids", "out")
    start = time.perf_counter()
    dataset = load_karpathy(cfg.dataset, cfg.image_root)
    idmap = IdentifierMap.load(cfg.ids)
    queries = load_pseudo_queries(cfg.pseudo_queries, dataset)[0] if cfg.pseudo_queries is not None else {}
    save_config(cfg.out, cfg)
    summary = write_shards(dataset, idmap, cfg.out, pseudo_queries=queries, max_per_shard=cfg.max_per_shard)
    counts = ", ".join(f"{t} {v['samples']} samples in {len(v['shards'])} shards" for t, v in summary["tasks"].items())
    print(f"shards: {counts}; {time.perf_counter() - start:.1f} s -> {cfg.out}")
    return 0
