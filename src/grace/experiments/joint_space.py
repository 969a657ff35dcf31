"""``grace ablate --vision-space clip_faiss``: the generator reads the dense retriever's joint space (GENIUS).

By default the generator's visual input is the image encoder's features for i2id rows and the null image for
t2id rows and queries: a query reaches an image through its words alone. In the joint space, i2id rows read
each image's LiT embedding (the side of CLIP-FAISS that indexes images), and t2id rows and queries read their
text's LiT embedding (the side that embeds queries), so the generator learns to map a point of the space
CLIP-FAISS searches to an identifier, as GENIUS does; with ``--query-mix W`` a t2id row's embedding is mixed
with its gold image's (GENIUS's query augmentation, ``grace.train.data.TextMedia``). With ``rq`` ids over the
same embedding (``--scheme-overrides embedding=clip_faiss``) a query and its image share a code prefix.

What this writes (each folder with the ``stage.json`` it was built from):
``RUN/features/joint_clip_faiss`` (the images' LiT embeddings: the training run's ``features_cache``),
``RUN/features/joint_clip_faiss_texts`` (every t2id text's LiT embedding: ``t2id_media``) and
``RUN/ckpt/<name>.model_config.json`` (the model config reading one ``dim``-wide token per row, beside the
training's folder: an input of its stage).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from grace.experiments.stage import RunContext, Stage
from grace.io_utils import to_jsonable, write_json

VISION_SPACES = ("features", "clip_faiss")
IMAGE_FOLDER = "joint_clip_faiss"
TEXT_FOLDER = "joint_clip_faiss_texts"


@dataclass(frozen=True)
class JointSpace:
    """What a generator in the joint space trains on: the images' LiT embeddings (its ``features_cache``), every
    t2id text's (``t2id_media``) and the model config reading one such embedding per row."""

    images: Path
    texts: Path
    model_config: Path


def joint_space_inputs(ctx: RunContext, scheme: str, *, encoder: str, model: str, name: str) -> JointSpace:
    """The joint-space artefacts of ``scheme``'s generator (trained into RUN/ckpt/<name>), built or reused: the
    LiT heads first when the run has none (the same heads CLIP-FAISS uses), then the two embeddings, and
    RUN/ckpt/<name>.model_config.json (``ablate.train_config`` maps them onto the training config)."""
    from grace.data_process.features import FeatureSet
    from grace.experiments.baseline_stages import lit_heads

    heads = lit_heads(ctx, ctx.layout.dataset, encoder=encoder)
    images = _image_embeddings(ctx, heads, encoder)
    texts = _text_embeddings(ctx, scheme, heads)
    dim = int(FeatureSet.load(images).array.shape[1])
    model_json = ctx.layout.ckpt(name).with_name(f"{name}.model_config.json")
    write_json(model_json, joint_model_config(model, dim))
    return JointSpace(images, texts, model_json)


def joint_model_config(model: str, dim: int) -> dict:
    """``model``'s config reading one ``dim``-wide visual token per row, with no image encoder of its own
    (the perceiver's latents attend to that token only: over one pooled token they must, to read it)."""
    from grace.model.config import resolve_config

    config = resolve_config(model, vis_dim=dim, n_visual_tokens=1, vision_encoder=None,
                            perceiver_latents_in_keys=False)
    values = to_jsonable(dataclasses.asdict(config))
    values["name"] = f"{config.name}-joint{dim}"
    return values


def _image_embeddings(ctx: RunContext, heads: Path, encoder: str) -> Path:
    """RUN/features/joint_clip_faiss: every image's LiT embedding (a :class:`Stage` on the heads' record)."""
    from grace.data_process.dataset import load_karpathy
    from grace.data_process.features import FeatureSet
    from grace.experiments.baseline_stages import dense_image_embedding
    from grace.experiments.pipeline import features_dir

    def build(folder: Path) -> Path:
        dataset = load_karpathy(ctx.layout.dataset, check_files=False)
        features = FeatureSet.load(features_dir(ctx.run, encoder))
        dense_image_embedding(ctx, ctx.layout.dataset, dataset, features, encoder=encoder).save(folder)
        return folder

    return ctx.stage(Stage(f"features/{IMAGE_FOLDER}", ctx.layout.features(IMAGE_FOLDER), build, lambda f: f,
                           settings={"encoder": encoder}, inputs={"heads": heads, "dataset": ctx.layout.dataset}))


def _text_embeddings(ctx: RunContext, scheme: str, heads: Path) -> Path:
    """RUN/features/joint_clip_faiss_texts: the LiT embedding of every t2id text of ``scheme``'s shards, keyed by
    text (the t2id texts are the train captions and the held-out images' pseudo-queries, whatever the scheme:
    one stage over the dataset, the pseudo-queries and the heads serves every scheme)."""
    import numpy as np

    from grace.data_process.features import FeatureSet
    from grace.retrieval_baselines.clip_faiss.dual_encoder import LitDualEncoder
    from grace.train.data import load_samples

    def build(folder: Path) -> Path:
        texts = sorted({s.text for s in load_samples(ctx.layout.shards(scheme), "t2id", keep_images=False)})
        embedded = LitDualEncoder(heads).encode_texts(texts).astype(np.float32)
        FeatureSet(texts, embedded, f"lit:{heads}").save(folder)
        return folder

    return ctx.stage(Stage(f"features/{TEXT_FOLDER}", ctx.layout.features(TEXT_FOLDER), build, lambda f: f,
                           inputs={"heads": heads, "dataset": ctx.layout.dataset,
                                   "pseudo_queries": ctx.layout.pseudo_queries.parent}))
