"""Baseline stages of ``grace ablate`` / ``grace demo``: build each baseline retriever on the run's data
(RUN/baselines/<kind>/, next to its configs) and score it with the same harness, on the same test queries
and over the same corpus (the test images) as the generative schemes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from grace.errors import GraceError
from grace.infer.pipeline import features_dir, folder_bytes, test_split_queries
from grace.retriever import Retriever


def build_clip_faiss(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0", seed: int = 0,
                     progress: bool = True) -> Retriever:
    """LiT heads on the train pairs → LiT features of the test images → exact (Flat) FAISS index."""
    from grace.retrieval_baselines.clip_faiss.configs import BuildIndexConfig, ExtractConfig, TrainHeadsConfig
    from grace.retrieval_baselines.clip_faiss.extract import extract_chunk, merge_chunks
    from grace.retrieval_baselines.clip_faiss.heads import train_heads
    from grace.retrieval_baselines.clip_faiss.index import build_index
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever

    root = run / "baselines" / "clip_faiss"
    heads, features, index = root / "heads", root / "features", root / "index"
    if not (heads / "train_config.json").is_file():  # written last
        train_heads(TrainHeadsConfig(dataset=dataset_json, out=heads, split="train", image_encoder=encoder,
                                     cache_dir=features_dir(run, encoder), seed=seed, progress=progress))
    if not (index / "config.json").is_file():  # written last
        extract_chunk(ExtractConfig(source=dataset_json, out=features, model=f"lit:{heads}", split="test",
                                    progress=progress))
        merge_chunks(features)
        build_index(BuildIndexConfig(features=features, out=index, index="Flat", seed=seed))
    return ClipFaissRetriever.load(index)


def build_late_interaction(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0", seed: int = 0,
                           progress: bool = True) -> Retriever:
    """ColBERT-style text encoder trained against visual-token documents of the train images, then an
    index over the test images (``grace.retrieval_baselines.late_interaction``)."""
    from grace.retrieval_baselines.late_interaction.retriever import build_text_to_image

    return build_text_to_image(dataset_json, run / "baselines" / "late_interaction", seed=seed, progress=progress,
                               cache_dir=features_dir(run, encoder))


BASELINES: dict[str, Callable[..., Retriever]] = {
    "clip_faiss": build_clip_faiss,
    "late_interaction": build_late_interaction,
}


def stage_baseline(run: Path, kind: str, dataset_json: Path, dataset, timer, *, encoder: str, seed: int = 0,
                   max_queries: int = 0) -> dict:
    """Build (or reuse) one baseline and evaluate it on the test queries → RUN/results/<kind>.json."""
    from grace.infer.evaluate import evaluate
    from grace.io_utils import write_json

    if kind not in BASELINES:
        raise GraceError(f"unknown baseline {kind!r}; known: {sorted(BASELINES)}")
    queries, gold = test_split_queries(dataset, max_queries)
    index_dir = Path(run) / "baselines" / kind / "index"

    def build() -> Retriever:  # each builder reuses what its folder already holds
        return BASELINES[kind](Path(run), Path(dataset_json), encoder=encoder, seed=seed)

    retriever = timer.run(f"build/{kind}", (index_dir / "config.json").is_file(), build, build)  # written last

    def score() -> dict:
        result = evaluate(retriever, queries, gold)
        result["retriever"] = retriever.name  # what actually ran, e.g. late_interaction[flmr,exact]
        result["index_bytes"] = folder_bytes(index_dir)
        result["corpus_size"] = len(dataset.split("test"))
        write_json(Path(run) / "results" / f"{kind}.json", result)
        return result

    return timer.run(f"eval/{kind}", False, score, lambda: None)
