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
from grace.experiments.stage import RunContext, Stage
from grace.io_utils import folder_bytes, read_json, write_json
from grace.retriever import Retriever
from grace.run_layout import RunLayout, split_suffix

#: training steps of the late-interaction baseline's text encoder
LATE_INTERACTION_STEPS = 300


def _stage_name(kind: str, part: str, split: str = "test") -> str:
    """``build/<kind>/<part>`` (``index`` and ``features`` over another split: ``<part>-<split>``)."""
    return f"build/{kind}/{split_suffix(part, split)}"


def heads_stage(run: Path, dataset_json: Path, *, encoder: str, seed: int, progress: bool) -> Stage:
    """RUN/baselines/clip_faiss/heads: LiT heads trained on the train pairs of the run's features (shared by
    CLIP-FAISS, its expanded index, the joint space and ``rq`` over the dense embedding)."""
    from grace.retrieval_baselines.clip_faiss.configs import TrainHeadsConfig
    from grace.retrieval_baselines.clip_faiss.heads import train_heads

    def build(folder: Path) -> Path:
        train_heads(TrainHeadsConfig(dataset=dataset_json, out=folder, split="train", image_encoder=encoder,
                                     cache_dir=features_dir(run, encoder), seed=seed, progress=progress))
        return folder

    return Stage("build/clip_faiss/heads", RunLayout(run).baseline("clip_faiss") / "heads", build, lambda f: f,
                 settings={"encoder": encoder, "seed": seed}, inputs={"dataset": dataset_json})


def lit_heads(ctx: RunContext, dataset_json: Path, *, encoder: str) -> Path:
    """The LiT heads' folder (:func:`heads_stage`, built or reused)."""
    return ctx.stage(heads_stage(ctx.run, dataset_json, encoder=encoder, seed=ctx.seed, progress=ctx.progress))


def _clip_faiss_features(ctx: RunContext, dataset_json: Path, *, encoder: str, split: str) -> Path:
    """LiT heads → LiT features of the ``split`` images (RUN/baselines/clip_faiss/features[-split])."""
    from grace.retrieval_baselines.clip_faiss.configs import ExtractConfig
    from grace.retrieval_baselines.clip_faiss.extract import extract_chunk, merge_chunks

    heads = lit_heads(ctx, dataset_json, encoder=encoder)

    def build(folder: Path) -> Path:
        extract_chunk(ExtractConfig(source=dataset_json, out=folder, model=f"lit:{heads}", split=split,
                                    progress=ctx.progress))
        merge_chunks(folder)
        return folder

    folder = ctx.layout.baseline("clip_faiss") / split_suffix("features", split)
    return ctx.stage(Stage(_stage_name("clip_faiss", "features", split), folder, build, lambda f: f,
                           settings={"split": split}, inputs={"heads": heads, "dataset": dataset_json}))


def dense_image_embedding(ctx: RunContext, dataset_json: Path, dataset, features, *, encoder: str):
    """The dense retriever's image embedding of every image (LiT's image head over the run's image features:
    the space CLIP-FAISS searches), as a FeatureSet in dataset order, for ids that live in that space (``rq``
    with ``embedding: clip_faiss``). Trains the LiT heads on the train pairs first when the run has none."""
    import numpy as np
    import torch

    from grace.data_process.features import FeatureSet
    from grace.retrieval_baselines.clip_faiss.heads import LitHeads

    heads = lit_heads(ctx, dataset_json, encoder=encoder)
    ids = [r.image_id for r in dataset.images]
    base = np.asarray(features.rows(ids), dtype=np.float32)
    if base.ndim == 3:  # token features: LiT's heads read the pooled vector
        base = base.mean(axis=1)
    with torch.no_grad():
        embedded = LitHeads.load(heads).eval().embed_images(torch.as_tensor(base)).numpy()
    return FeatureSet(ids, embedded, f"lit:{heads}")


def _dense_index(ctx: RunContext, kind: str, dataset_json: Path, *, encoder: str, split: str,
                 expanded: bool) -> Retriever:
    """An exact (Flat) FAISS index over the ``split`` images' LiT features (keys expanded with the run's
    pseudo-queries when ``expanded``), in RUN/baselines/<kind>/index[-split]."""
    from grace.retrieval_baselines.clip_faiss.configs import BuildIndexConfig
    from grace.retrieval_baselines.clip_faiss.index import build_index
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever

    features = _clip_faiss_features(ctx, dataset_json, encoder=encoder, split=split)
    inputs = {"features": features}
    if expanded:
        inputs["pseudo_queries"] = ctx.layout.pseudo_queries.parent

    def build(folder: Path) -> Retriever:
        build_index(BuildIndexConfig(features=features, out=folder, index="Flat", seed=ctx.seed,
                                     expansion=ctx.layout.pseudo_queries if expanded else None))
        if expanded:  # which pseudo-queries the keys hold, for the reader of the index
            _, source = run_pseudo_queries(ctx.run, load_karpathy(dataset_json, check_files=False), split)
            config = read_json(folder / "index_config.json")
            config["expansion"]["source"] = source
            write_json(folder / "index_config.json", config)
        return ClipFaissRetriever.load(folder)

    return ctx.stage(Stage(_stage_name(kind, "index", split), ctx.layout.baseline_index(kind, split), build,
                           ClipFaissRetriever.load, settings={"index": "Flat", "seed": ctx.seed}, inputs=inputs))


def build_clip_faiss(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *,
                     encoder: str = "efficientnet-lite0", split: str = "test") -> Retriever:
    """LiT heads on the train pairs → LiT features of the ``split`` images → exact (Flat) FAISS index."""
    return _dense_index(ctx, "clip_faiss", dataset_json, encoder=encoder, split=split, expanded=False)


def build_clip_faiss_expanded(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *,
                              encoder: str = "efficientnet-lite0", split: str = "test") -> Retriever:
    """CLIP-FAISS given what the generative rows are given: each ``split`` image's key is expanded with the
    run's pseudo-queries for it (its tags, under ``tagged``), embedded by the same text tower; rebuilt when
    those pseudo-queries changed."""
    return _dense_index(ctx, "clip_faiss_expanded", dataset_json, encoder=encoder, split=split, expanded=True)


def late_interaction_model(ctx: RunContext, dataset_json: Path, *, encoder: str) -> Path:
    """RUN/baselines/late_interaction/model: the ColBERT-style text encoder trained against the visual-token
    documents of the train images (shared by the expanded index)."""
    from grace.retrieval_baselines.late_interaction.configs import TrainConfig
    from grace.retrieval_baselines.late_interaction.train import train_t2i

    def build(folder: Path) -> Path:
        train_t2i(TrainConfig(dataset=Path(dataset_json), out=folder, steps=LATE_INTERACTION_STEPS,
                              cache_dir=features_dir(ctx.run, encoder), seed=ctx.seed), progress=ctx.progress)
        return folder

    return ctx.stage(Stage("build/late_interaction/model", ctx.layout.baseline("late_interaction") / "model",
                           build, lambda f: f, inputs={"dataset": dataset_json},
                           settings={"encoder": encoder, "seed": ctx.seed, "steps": LATE_INTERACTION_STEPS}))


def _late_interaction_index(ctx: RunContext, kind: str, dataset_json: Path, *, encoder: str, split: str,
                            expanded: bool) -> Retriever:
    """The ``split`` images indexed as multi-vector documents by the trained model (their visual tokens, plus
    the document tokens of the run's pseudo-queries for them when ``expanded``), exact search."""
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever, index_images

    model = late_interaction_model(ctx, dataset_json, encoder=encoder)
    inputs = {"model": model, "dataset": dataset_json}
    if expanded:
        inputs["pseudo_queries"] = ctx.layout.pseudo_queries.parent

    def build(folder: Path) -> Retriever:
        dataset = load_karpathy(dataset_json)
        queries, source = run_pseudo_queries(ctx.run, dataset, split) if expanded else (None, None)
        index_images(model, dataset, folder, split=split, backend="exact", cache_dir=features_dir(ctx.run, encoder),
                     seed=ctx.seed, expansion=queries, expansion_source=source)
        return LateInteractionRetriever.load(folder)

    return ctx.stage(Stage(_stage_name(kind, "index", split), ctx.layout.baseline_index(kind, split), build,
                           LateInteractionRetriever.load, settings={"backend": "exact", "seed": ctx.seed},
                           inputs=inputs))


def build_late_interaction(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *,
                           encoder: str = "efficientnet-lite0", split: str = "test") -> Retriever:
    """ColBERT-style text encoder trained against visual-token documents of the train images, then an
    index over the ``split`` images (``grace.retrieval_baselines.late_interaction``)."""
    return _late_interaction_index(ctx, "late_interaction", dataset_json, encoder=encoder, split=split,
                                   expanded=False)


def build_late_interaction_expanded(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *,
                                    encoder: str = "efficientnet-lite0", split: str = "test") -> Retriever:
    """Late interaction given what the generative rows are given: the same trained model
    (RUN/baselines/late_interaction/model), each ``split`` image's document = its visual tokens + the document
    tokens of the run's pseudo-queries for it; rebuilt when those pseudo-queries changed."""
    return _late_interaction_index(ctx, "late_interaction_expanded", dataset_json, encoder=encoder, split=split,
                                   expanded=True)


def run_pseudo_queries(run: Path, dataset, split: str) -> tuple[dict[str, list[str]], dict]:
    """The run's pseudo-queries (RUN/pseudo_queries/pseudo_queries.json, checked against ``dataset``) and a record of
    where they came from, for the baselines that read them (``source``: file, digest, protocol, generator,
    split)."""
    from grace.data_process.pseudo_queries import load_pseudo_queries

    queries, provenance = load_pseudo_queries(RunLayout(run).pseudo_queries, dataset)
    return queries, {"pseudo_queries": "pseudo_queries/pseudo_queries.json", "digest": provenance["digest"],
                     "protocol": provenance["protocol"], "generator": provenance["generator"], "split": split}


def build_bm25(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *, encoder: str = "",
               split: str = "test") -> Retriever:
    """The lexical control: BM25 over the run's pseudo-queries (RUN/pseudo_queries/pseudo_queries.json), one document per
    ``split`` image; rebuilt when those pseudo-queries changed."""
    from grace.retrieval_baselines.lexical.bm25 import BM25Retriever

    def build(folder: Path) -> Retriever:
        data = dataset or load_karpathy(dataset_json, check_files=False)
        queries, source = run_pseudo_queries(ctx.run, data, split)
        corpus = [r.image_id for r in data.split(split)]
        return BM25Retriever.load(BM25Retriever.from_pseudo_queries(queries, corpus, seed=ctx.seed,
                                                                    source=source).save(folder))

    return ctx.stage(Stage(_stage_name("bm25", "index", split), ctx.layout.baseline_index("bm25", split), build,
                           BM25Retriever.load, settings={"seed": ctx.seed},
                           inputs={"dataset": dataset_json, "pseudo_queries": ctx.layout.pseudo_queries.parent}))


def build_sibling(ctx: RunContext, dataset_json: Path, dataset=None, features=None, *,
                  encoder: str = "efficientnet-lite0", split: str = "test") -> Retriever:
    """The no-training control over the ``split`` images: BM25 over the training images' own texts picks the
    query's sibling, and the images nearest to it by the run's pooled image ``features`` (RUN/features/<encoder>)
    are the answer (:class:`~grace.retrieval_baselines.sibling.SiblingRetriever`), saved in
    RUN/baselines/sibling/index[-split]."""
    from grace.retrieval_baselines.sibling import SiblingRetriever

    if features is None:
        raise GraceError("the sibling control is built from the run's image features: pass features=")

    def build(folder: Path) -> Retriever:
        data = dataset or load_karpathy(dataset_json, check_files=False)
        built = SiblingRetriever.from_dataset(data, features, corpus_split=split, seed=ctx.seed,
                                              source={"features": features.encoder})
        return SiblingRetriever.load(built.save(folder))

    return ctx.stage(Stage(_stage_name("sibling", "index", split), ctx.layout.baseline_index("sibling", split),
                           build, SiblingRetriever.load, settings={"seed": ctx.seed},
                           inputs={"dataset": dataset_json, "features": features_dir(ctx.run, encoder)}))


#: every baseline and control, by kind: ``builder(ctx, dataset_json, dataset, features, *, encoder, split)``
BASELINES: dict[str, Callable[..., Retriever]] = {
    "clip_faiss": build_clip_faiss,
    "late_interaction": build_late_interaction,
    "bm25": build_bm25,
    "sibling": build_sibling,
    "clip_faiss_expanded": build_clip_faiss_expanded,
    "late_interaction_expanded": build_late_interaction_expanded,
}


def stage_baseline(ctx: RunContext, kind: str, dataset_json: Path, dataset, *, encoder: str, sets: list,
                   features=None) -> dict[str, dict]:
    """Build (or reuse) one baseline over each query set's corpus and score it on those queries (RUN/evals/<kind>,
    :func:`~grace.experiments.scoring.score_sets`) → ``{set name: result}``. ``features``: the run's image
    features (the sibling control's answers)."""
    from grace.experiments.scoring import score_sets

    if kind not in BASELINES:
        raise GraceError(f"unknown baseline {kind!r}; known: {sorted(BASELINES)}")
    retrievers = {}
    for split in dict.fromkeys(query_set.split for query_set in sets):
        with ctx.timer.group(f"build/{kind}" if split == "test" else f"build/{kind}/{split}"):
            retrievers[split] = BASELINES[kind](ctx, Path(dataset_json), dataset, features, encoder=encoder,
                                                split=split)

    def extra(split: str, retriever) -> dict:
        return {"index_bytes": folder_bytes(ctx.layout.baseline_index(kind, split)),
                "corpus_size": len(dataset.split(split))}

    return score_sets(ctx, kind, sets, retrievers.__getitem__, extra=extra,
                      inputs={f"index-{split}": ctx.layout.baseline_index(kind, split) for split in retrievers})
