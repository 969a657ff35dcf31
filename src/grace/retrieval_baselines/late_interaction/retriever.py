"""``LateInteractionRetriever``: the late-interaction baseline behind :class:`grace.retriever.Retriever`.

``load(INDEX_DIR)`` reads an index folder of ``grace baselines late-interaction index`` and the model
named in its config. Text queries search image documents (text → image); queries with an image go
through the model's fusion (multimodal query → passage for passage indexes). Hits carry document ids
(image ids, or passage ids for passage collections), best first.
"""

from __future__ import annotations

from pathlib import Path

import torch

from grace.retriever import Hit, Query, Retriever


class LateInteractionRetriever(Retriever):
    """Late-interaction model + index (PLAID or exact MaxSim)."""

    name = "late_interaction"
    modalities = ("text", "image")

    def __init__(self, *, searcher, model, image_encoder=None, batch_size: int = 64, instruction: str = ""):
        self.searcher, self.model, self.batch_size = searcher, model.eval(), batch_size
        self._image_encoder = image_encoder
        self.instruction = instruction
        self.name = f"late_interaction[{model.config.fusion},{searcher.backend}]"

    @property
    def image_encoder(self):
        if self._image_encoder is None:
            from grace.data_process.encoders import create_image_encoder

            self._image_encoder = create_image_encoder(self.model.config.image_encoder)
        return self._image_encoder

    def embed(self, queries: list[Query]) -> list[torch.Tensor]:
        """One (Lq, dim) token matrix per query; queries with and without an image are encoded apart."""
        from grace.retrieval_baselines.late_interaction.collection import encode_image_files, encode_query_set

        if self.instruction:  # PreFLMR's "instruction: question" (its checkpoints mask the instruction)
            from grace.data_process.m2kr import query_text

            queries = [Query(text=query_text(self.instruction, q.text or "").rstrip(), image=q.image) for q in queries]
        out: list[torch.Tensor | None] = [None] * len(queries)
        with_image = [i for i, q in enumerate(queries) if q.image is not None]
        text_only = [i for i, q in enumerate(queries) if q.image is None]
        if text_only:
            for i, q in zip(text_only, encode_query_set(self.model, [queries[i].text for i in text_only],
                                                        batch_size=self.batch_size)):
                out[i] = q
        if with_image:
            paths = [queries[i].image for i in with_image]
            if hasattr(self.model, "prepare_images"):  # a released checkpoint: its own vision tower
                visual = self.model.prepare_images(paths)
            else:
                visual = encode_image_files(paths, self.image_encoder)
            encoded = encode_query_set(self.model, [queries[i].text for i in with_image], visual,
                                       batch_size=self.batch_size)
            for i, q in zip(with_image, encoded):
                out[i] = q
        return out

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        queries = [q if isinstance(q, Query) else Query(text=q) for q in queries]
        ids = self.searcher.ids
        results = self.searcher.search_custom_collection(self.embed(queries), k)
        return [[Hit(ids[row], float(score)) for row, score in hits] for hits in results]

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, model=None, image_encoder=None,
             instruction: str = "", **plaid_kw) -> LateInteractionRetriever:
        """``path`` = an index folder; ``backend`` overrides its plaid/exact choice; ``instruction``
        prefixes every query text."""
        from grace.retrieval_baselines.late_interaction.index import Searcher, load_index_model

        plaid_kw = {k: v for k, v in plaid_kw.items() if k in ("ncells", "centroid_score_threshold", "ndocs")}
        searcher = Searcher(path, backend=backend or None, **plaid_kw)
        return cls(searcher=searcher, model=load_index_model(path, model), image_encoder=image_encoder,
                   instruction=instruction)


def index_images(model_dir: str | Path, dataset, out: str | Path, *, split: str = "test", backend: str = "plaid",
                 nbits: int = 2, kmeans_niters: int = 4, cache_dir: str | Path | None = None, seed: int = 0,
                 model=None, expansion: dict[str, list[str]] | None = None, expansion_source: dict | None = None
                 ) -> Path:
    """Index the images of ``split`` ('' = all) as multi-vector documents (their projected visual tokens);
    with ``expansion`` ({image id: [texts]}), each image's texts' document tokens too (document expansion;
    ``expansion_source`` says where they came from, in the index's config)."""
    from grace.errors import InputError
    from grace.retrieval_baselines.late_interaction.collection import (
        ExpandedImageDocs,
        ImageDocs,
        visual_tokens,
    )
    from grace.retrieval_baselines.late_interaction.index import Indexer
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    model = model or LateInteractionModel.load(model_dir)
    ids = [r.image_id for r in dataset.split(split)] if split else dataset.image_ids()
    if not ids:
        raise InputError(f"no images to index (split {split!r} is empty)", path=dataset.name)
    visual = visual_tokens(dataset, model.config.image_encoder, cache_dir or Path(out) / "cache", image_ids=ids)
    source = ImageDocs(visual) if expansion is None else \
        ExpandedImageDocs(visual, [" ; ".join(expansion.get(i, [])) for i in ids])
    extra = {"expansion": expansion_source or {}} if expansion is not None else None
    return Indexer(model=model, model_dir=model_dir, backend=backend, nbits=nbits, kmeans_niters=kmeans_niters,
                   seed=seed).index_custom_collection(out, source, ids, extra=extra)


def build_text_to_image(dataset_json: str | Path, out: str | Path, *, steps: int = 300, backend: str = "exact",
                        cache_dir: str | Path | None = None, seed: int = 0, progress: bool = True,
                        split: str = "test", index: str = "index", model_dir: str | Path | None = None,
                        expansion: dict[str, list[str]] | None = None, expansion_source: dict | None = None
                        ) -> LateInteractionRetriever:
    """Text → image baseline in ``out``: train on the train captions (``model_dir``, default ``out/model``),
    index the ``split`` images (``out/<index>``, expanded with ``expansion`` texts when given), reusing both
    when present (an index expanded from another source is rebuilt); returns the retriever over that index."""
    from grace.data_process.dataset import load_karpathy
    from grace.io_utils import read_json
    from grace.retrieval_baselines.late_interaction.configs import TrainConfig
    from grace.retrieval_baselines.late_interaction.train import train_t2i

    out = Path(out)
    model_dir, index_dir = Path(model_dir or out / "model"), out / index
    if not (model_dir / "train_config.json").is_file():  # written last
        train_t2i(TrainConfig(dataset=Path(dataset_json), out=model_dir, steps=steps, cache_dir=cache_dir,
                              seed=seed), progress=progress)
    built = read_json(index_dir / "config.json") if (index_dir / "config.json").is_file() else None
    if built is None or (expansion is not None and built.get("expansion") != (expansion_source or {})):
        index_images(model_dir, load_karpathy(dataset_json), index_dir, split=split, backend=backend,
                     cache_dir=cache_dir, seed=seed, expansion=expansion, expansion_source=expansion_source)
    return LateInteractionRetriever.load(index_dir)
