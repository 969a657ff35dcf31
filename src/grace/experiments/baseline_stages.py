"""Baseline stages of ``grace ablate`` / ``grace demo``: build each baseline retriever on the run's data
(RUN/baselines/<kind>/, next to its configs) and score it with the same harness, on the same test queries
and over the same corpus (the test images) as the generative schemes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grace.data_process.dataset import load_karpathy
from grace.errors import GraceError
from grace.experiments.pipeline import features_dir
from grace.experiments.stage_record import reusable, save_record, stage_record
from grace.io_utils import folder_bytes, read_json, write_json
from grace.retriever import Retriever
from grace.run_layout import RunLayout, split_suffix


def index_name(split: str) -> str:
    """``index`` over the test images, ``index-<split>`` over another split's."""
    return split_suffix("index", split)


def lit_heads(run: Path, dataset_json: Path, *, encoder: str, seed: int, progress: bool) -> Path:
    """RUN/baselines/clip_faiss/heads: LiT heads trained on the train pairs (once; reused when present)."""
    from grace.retrieval_baselines.clip_faiss.configs import TrainHeadsConfig
    from grace.retrieval_baselines.clip_faiss.heads import train_heads

    heads = RunLayout(run).baseline("clip_faiss") / "heads"
    if not (heads / "train_config.json").is_file():  # written last
        train_heads(TrainHeadsConfig(dataset=dataset_json, out=heads, split="train", image_encoder=encoder,
                                     cache_dir=features_dir(run, encoder), seed=seed, progress=progress))
    return heads


def _clip_faiss_features(run: Path, dataset_json: Path, *, encoder: str, seed: int, progress: bool,
                         split: str) -> Path:
    """LiT heads on the train pairs (RUN/baselines/clip_faiss/heads) → LiT features of the ``split`` images;
    returns the features folder."""
    from grace.retrieval_baselines.clip_faiss.configs import ExtractConfig
    from grace.retrieval_baselines.clip_faiss.extract import extract_chunk, merge_chunks

    root = RunLayout(run).baseline("clip_faiss")
    heads = lit_heads(run, dataset_json, encoder=encoder, seed=seed, progress=progress)
    features = root / ("features" if split == "test" else f"features-{split}")
    if not (features / "meta.json").is_file():
        extract_chunk(ExtractConfig(source=dataset_json, out=features, model=f"lit:{heads}", split=split,
                                    progress=progress))
        merge_chunks(features)
    return features


def dense_image_embedding(run: Path, dataset_json: Path, dataset, features, *, encoder: str, seed: int = 0,
                          progress: bool = True):
    """The dense retriever's image embedding of every image (LiT's image head over the run's image features:
    the space CLIP-FAISS searches), as a FeatureSet in dataset order, for ids that live in that space (``rq``
    with ``embedding: clip_faiss``). Trains the LiT heads on the train pairs first when the run has none."""
    import numpy as np
    import torch

    from grace.data_process.features import FeatureSet
    from grace.retrieval_baselines.clip_faiss.heads import LitHeads

    heads = lit_heads(run, dataset_json, encoder=encoder, seed=seed, progress=progress)
    ids = [r.image_id for r in dataset.images]
    base = np.asarray(features.rows(ids), dtype=np.float32)
    if base.ndim == 3:  # token features: LiT's heads read the pooled vector
        base = base.mean(axis=1)
    with torch.no_grad():
        embedded = LitHeads.load(heads).eval().embed_images(torch.as_tensor(base)).numpy()
    return FeatureSet(ids, embedded, f"lit:{heads}")


def build_clip_faiss(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0", seed: int = 0,
                     progress: bool = True, split: str = "test") -> Retriever:
    """LiT heads on the train pairs → LiT features of the ``split`` images → exact (Flat) FAISS index."""
    from grace.retrieval_baselines.clip_faiss.configs import BuildIndexConfig
    from grace.retrieval_baselines.clip_faiss.index import build_index
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever

    index = RunLayout(run).baseline_index("clip_faiss", split)
    if not (index / "config.json").is_file():  # written last
        features = _clip_faiss_features(run, dataset_json, encoder=encoder, seed=seed, progress=progress, split=split)
        build_index(BuildIndexConfig(features=features, out=index, index="Flat", seed=seed))
    return ClipFaissRetriever.load(index)


def build_clip_faiss_expanded(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0", seed: int = 0,
                              progress: bool = True, split: str = "test") -> Retriever:
    """CLIP-FAISS given what the generative rows are given: each ``split`` image's key is expanded with the
    run's pseudo-queries for it (its tags, under ``tagged``), embedded by the same text tower; rebuilt when
    those pseudo-queries changed."""
    from grace.retrieval_baselines.clip_faiss.configs import BuildIndexConfig
    from grace.retrieval_baselines.clip_faiss.index import build_index
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever

    index = RunLayout(run).baseline_index("clip_faiss_expanded", split)
    _, source = run_pseudo_queries(run, load_karpathy(dataset_json, check_files=False), split)
    built = read_json(index / "index_config.json") if (index / "config.json").is_file() else {}
    if (built.get("expansion") or {}).get("source") != source:
        features = _clip_faiss_features(run, dataset_json, encoder=encoder, seed=seed, progress=progress, split=split)
        build_index(BuildIndexConfig(features=features, out=index, index="Flat", seed=seed,
                                     expansion=RunLayout(run).pseudo_queries))
        config = read_json(index / "index_config.json")
        config["expansion"]["source"] = source
        write_json(index / "index_config.json", config)
    return ClipFaissRetriever.load(index)


def build_late_interaction(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0", seed: int = 0,
                           progress: bool = True, split: str = "test") -> Retriever:
    """ColBERT-style text encoder trained against visual-token documents of the train images, then an
    index over the ``split`` images (``grace.retrieval_baselines.late_interaction``)."""
    from grace.retrieval_baselines.late_interaction.retriever import build_text_to_image

    return build_text_to_image(dataset_json, RunLayout(run).baseline("late_interaction"), seed=seed, progress=progress,
                               cache_dir=features_dir(run, encoder), split=split, index=index_name(split))


def build_late_interaction_expanded(run: Path, dataset_json: Path, *, encoder: str = "efficientnet-lite0",
                                    seed: int = 0, progress: bool = True, split: str = "test") -> Retriever:
    """Late interaction given what the generative rows are given: the same trained model
    (RUN/baselines/late_interaction/model), each ``split`` image's document = its visual tokens + the document
    tokens of the run's pseudo-queries for it; rebuilt when those pseudo-queries changed."""
    from grace.retrieval_baselines.late_interaction.retriever import build_text_to_image

    queries, source = run_pseudo_queries(run, load_karpathy(dataset_json, check_files=False), split)
    return build_text_to_image(dataset_json, RunLayout(run).baseline("late_interaction_expanded"), seed=seed,
                               progress=progress, cache_dir=features_dir(run, encoder), split=split,
                               index=index_name(split), model_dir=RunLayout(run).baseline("late_interaction") / "model",
                               expansion=queries, expansion_source=source)


def run_pseudo_queries(run: Path, dataset, split: str) -> tuple[dict[str, list[str]], dict]:
    """The run's pseudo-queries (RUN/data/pseudo_queries.json, checked against ``dataset``) and a record of
    where they came from, for the baselines that read them (``source``: file, digest, protocol, generator,
    split)."""
    from grace.data_process.pseudo_queries import load_pseudo_queries

    queries, provenance = load_pseudo_queries(RunLayout(run).pseudo_queries, dataset)
    return queries, {"pseudo_queries": "data/pseudo_queries.json", "digest": provenance["digest"],
                     "protocol": provenance["protocol"], "generator": provenance["generator"], "split": split}


def build_bm25(run: Path, dataset_json: Path, *, encoder: str = "", seed: int = 0, progress: bool = True,
               split: str = "test") -> Retriever:
    """The lexical control: BM25 over the run's pseudo-queries (RUN/data/pseudo_queries.json), one document per
    ``split`` image; rebuilt when those pseudo-queries changed."""
    from grace.retrieval_baselines.lexical.bm25 import BM25Retriever

    index = RunLayout(run).baseline_index("bm25", split)
    dataset = load_karpathy(dataset_json, check_files=False)
    queries, source = run_pseudo_queries(run, dataset, split)
    if (index / "config.json").is_file() and read_json(index / "config.json").get("source") == source:
        return BM25Retriever.load(index)
    corpus = [r.image_id for r in dataset.split(split)]
    return BM25Retriever.load(BM25Retriever.from_pseudo_queries(queries, corpus, seed=seed, source=source).save(index))


def build_sibling(run: Path, dataset, features, *, seed: int = 0, split: str = "test") -> Retriever:
    """The no-training control over the ``split`` images: BM25 over the training images' own texts picks the
    query's sibling, and the images nearest to it by the run's pooled image ``features`` are the answer
    (:class:`~grace.retrieval_baselines.sibling.SiblingRetriever`), saved in RUN/baselines/sibling/index[-split]."""
    from grace.retrieval_baselines.sibling import SiblingRetriever

    built = SiblingRetriever.from_dataset(dataset, features, corpus_split=split, seed=seed,
                                          source={"features": features.encoder})
    return SiblingRetriever.load(built.save(RunLayout(run).baseline_index("sibling", split)))


def features_digest(features) -> str:
    """A short fingerprint of a FeatureSet's ids and rows (what a stage built from it depends on)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha1("\n".join(features.ids).encode())
    digest.update(np.ascontiguousarray(np.asarray(features.array, dtype=np.float32)).tobytes())
    return digest.hexdigest()[:16]


BASELINES: dict[str, Callable[..., Retriever]] = {
    "clip_faiss": build_clip_faiss,
    "late_interaction": build_late_interaction,
    "bm25": build_bm25,
    "clip_faiss_expanded": build_clip_faiss_expanded,
    "late_interaction_expanded": build_late_interaction_expanded,
}


def stage_baseline(run: Path, kind: str, dataset_json: Path, dataset, timer, *, encoder: str, sets: list,
                   seed: int = 0, features=None) -> dict[str, dict]:
    """Build (or reuse) one baseline over each query set's corpus and evaluate it on those queries →
    ``{set name: result}``, each written to ``RunLayout.result``. ``sibling`` is built from ``features`` (the
    run's pooled image features), every other kind by its :data:`BASELINES` builder."""
    from grace.infer.evaluate import evaluate
    from grace.io_utils import write_json

    if kind not in BASELINES and kind != "sibling":
        raise GraceError(f"unknown baseline {kind!r}; known: {sorted([*BASELINES, 'sibling'])}")
    if kind == "sibling" and features is None:
        raise GraceError("the sibling control is built from the run's image features: pass features=")
    out: dict[str, dict] = {}
    for split in dict.fromkeys(query_set.split for query_set in sets):
        index_dir = RunLayout(run).baseline_index(kind, split)

        inputs = {"dataset": dataset_json}
        if kind.endswith("_expanded"):  # the index holds the run's pseudo-queries too
            inputs["pseudo_queries"] = RunLayout(run).pseudo_queries
        settings = {"encoder": encoder, "seed": seed, "split": split}
        if kind == "sibling":  # its answers are the run's image features
            settings["features"] = features_digest(features)
        record = stage_record(settings, inputs)

        def build(split=split, index_dir=index_dir, record=record) -> Retriever:  # reuses what its folder holds
            if kind == "sibling":
                built = build_sibling(Path(run), dataset, features, seed=seed, split=split)
            else:
                built = BASELINES[kind](Path(run), Path(dataset_json), encoder=encoder, seed=seed, split=split)
            save_record(index_dir, record)
            return built

        stage = f"build/{kind}" if split == "test" else f"build/{kind}/{split}"
        done = reusable(index_dir, (index_dir / "config.json").is_file(), record, stage=stage)  # config: written last
        retriever = timer.run(stage, done, build, build)

        def score(retriever=retriever, split=split, index_dir=index_dir) -> dict:
            scored = {}
            for query_set in (s for s in sets if s.split == split):
                result = evaluate(retriever, query_set.texts, query_set.gold)
                result["retriever"] = retriever.name  # what actually ran, e.g. late_interaction[flmr,exact]
                result["index_bytes"] = folder_bytes(index_dir)
                result["corpus_size"] = len(dataset.split(split))
                write_json(RunLayout(run).result(query_set.name, kind), result)
                scored[query_set.name] = result
            return scored

        out.update(timer.run(f"eval/{kind}" if split == "test" else f"eval/{kind}/{split}", False, score, lambda: None))
    return out
