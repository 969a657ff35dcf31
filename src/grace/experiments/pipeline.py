"""The pipeline's stages shared by ``grace ablate`` and ``grace demo`` (run layout of DESIGN.md), each a
:class:`~grace.experiments.stage.Stage` of one :class:`~grace.experiments.stage.RunContext`.

Each stage writes one folder under RUN/ with the record it was built from (``stage.json``: its settings and its
inputs' records) and is reused only when that record matches what it would be built from now; otherwise it is
rebuilt, and so is everything downstream of it: RUN/data, RUN/features/<enc>, RUN/pseudo_queries,
RUN/ids/<scheme>, RUN/trie/<scheme>[-<split>], RUN/shards/<scheme>, RUN/ckpt/<name> (+ export/) and
RUN/evals/<name> (each row's scores, copied to RUN/results for the report).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grace.config import dataclass_from_dict
from grace.data_process.dataset import load_karpathy, save_karpathy
from grace.data_process.emoji import build_emoji
from grace.data_process.features import encoder_folder, image_features
from grace.data_process.openclipart import build_openclipart
from grace.data_process.protocol import DEFAULT_PROTOCOL, get_protocol
from grace.data_process.pseudo_queries import (
    build_pseudo_queries,
    create_pseudo_query_generator,
    generator_workdir,
    load_pseudo_queries,
    pseudo_queries_digest,
    save_pseudo_queries,
)
from grace.data_process.shards import write_shards
from grace.errors import GraceError
from grace.experiments.scoring import score_sets
from grace.experiments.stage import RunContext, Stage
from grace.identifiers.idmap import IdentifierMap
from grace.identifiers.schemes import SchemeConfig, create_scheme, held_out_texts, reads_held_out_texts
from grace.identifiers.tokenization import IdentifierTokenizer
from grace.identifiers.trie import Trie, build_trie
from grace.infer.retriever import GenerativeRetriever
from grace.io_utils import folder_bytes, save_config, write_json
from grace.model.config import resolve_config
from grace.model.factory import load_pretrained
from grace.run_layout import RunLayout
from grace.train import TrainConfig, train

log = logging.getLogger(__name__)


def features_dir(run: Path, encoder: str) -> Path:
    """RUN/features/<encoder>, the encoder name made folder-safe."""
    return RunLayout(run).features(encoder_folder(encoder))


@dataclass(frozen=True)
class StageFunctions:
    """The lower stages' entry points the pipeline calls (:data:`REAL_STAGES`); a test passes stand-ins with
    the same signatures (``run_ablation(config, stages=...)``)."""

    image_features: Callable[..., Any]
    create_scheme: Callable[..., Any]
    load_idmap: Callable[[Path], Any]
    build_trie: Callable[..., Any]
    load_trie: Callable[[Path], Any]
    write_shards: Callable[..., Any]
    load_tokenizer: Callable[[Path], Any]
    train: Callable[[TrainConfig], Any]
    load_pretrained: Callable[[Path], tuple[Any, Any]]


#: the real data_process, identifiers, train and model entry points
REAL_STAGES = StageFunctions(image_features=image_features, create_scheme=create_scheme,
                             load_idmap=IdentifierMap.load, build_trie=build_trie, load_trie=Trie.load,
                             write_shards=write_shards, load_tokenizer=IdentifierTokenizer.load, train=train,
                             load_pretrained=load_pretrained)


BENCHMARK_BUILDERS: dict[str, Callable[..., Any]] = {"emoji": build_emoji, "openclipart": build_openclipart}


def stage_dataset(ctx: RunContext, *, dataset: Path | None = None, limit: int = 0, split_seed: int = 0,
                  benchmark: str = "emoji", image_root: Path | None = None, group_by: str = ""):
    """RUN/data/dataset.json: the offline ``benchmark`` (emoji or openclipart) built there when no dataset is
    given; else a copy of ``dataset`` whose image paths are resolved against ``image_root`` (absolute), so
    every later stage and command reads the run's copy without an image root (its source in
    RUN/data/source.json). ``group_by`` (a field or ``re:REGEX``) re-splits that copy group-aware
    (:func:`grace.data_process.groups.regroup_karpathy`, RUN/data/groups.json) under ``split_seed``."""
    folder = ctx.layout.data
    if dataset is None:
        if benchmark not in BENCHMARK_BUILDERS:
            raise GraceError(f"unknown benchmark {benchmark!r}; offline benchmarks: {sorted(BENCHMARK_BUILDERS)}")
        settings, inputs = {"benchmark": benchmark, "limit": limit, "seed": split_seed}, {}

        def build(out: Path):
            return BENCHMARK_BUILDERS[benchmark](out, seed=split_seed, limit=limit or None)
    else:
        source = Path(dataset).resolve()
        if source.is_relative_to(folder.resolve()):
            raise GraceError(f"--dataset {dataset} is the run's own copy: leave --dataset out to use it")
        settings = {"dataset": str(source), "image_root": str(Path(image_root).resolve()) if image_root else None}
        if group_by:
            settings |= {"group_by": group_by, "split_seed": split_seed}
        inputs = {"source": source}

        def build(out: Path):
            if group_by:
                from grace.data_process.groups import regroup_karpathy

                regroup_karpathy(source, out, group_by, image_root=settings["image_root"], seed=split_seed)
            else:
                save_karpathy(load_karpathy(source, settings["image_root"]), out / "dataset.json")
            save_config(out, settings, name="source.json")  # grace search finds the images' root here
            return load_karpathy(out / "dataset.json", check_files=False)  # the copy just checked every image

    return ctx.stage(Stage("data", folder, build, lambda out: load_karpathy(out / "dataset.json"), settings, inputs,
                           resumable=dataset is None))  # a benchmark's renders resume


def stage_features(ctx: RunContext, dataset, encoder: str, *, tokens: bool = False, views: int = 1,
                   stages: StageFunctions = REAL_STAGES):
    """RUN/features/<encoder>: pooled image features, plus visual tokens when ``tokens`` (a model reading
    several tokens per image), plus ``views - 1`` augmented views (seeded by the run's seed) under views/<k>;
    encoding resumes chunk by chunk. Returns the pooled FeatureSet (of the images themselves)."""
    cache = features_dir(ctx.run, encoder)

    def build(out: Path):
        for view in range(views):
            stages.image_features(dataset, encoder=encoder, cache_dir=out, tokens=tokens, view=view, seed=ctx.seed)
        return stages.image_features(dataset, encoder=encoder, cache_dir=out)

    settings = {"encoder": encoder, "tokens": tokens, "views": views} | ({"seed": ctx.seed} if views > 1 else {})
    return ctx.stage(Stage("features", cache, build, lambda out: stages.image_features(dataset, encoder=encoder,
                                                                                       cache_dir=out),
                           settings, {"dataset": ctx.layout.dataset}, resumable=True))


def stage_pseudo_queries(ctx: RunContext, dataset, features, *, encoder: str, protocol: str = "",
                         generator: str = "", options: dict | None = None) -> tuple[dict[str, list[str]], dict]:
    """RUN/pseudo_queries/pseudo_queries.json (+ its provenance, pseudo_queries.config.json): t2id texts for every
    held-out (val and test) image from the ``protocol``'s ``generator`` (default: the protocol's) with
    ``options``, through the leak filter; a generator's own state (a trained captioner, resumable captions) is
    kept beside them. Returns ``(queries, provenance)``."""
    chosen = get_protocol(protocol or DEFAULT_PROTOCOL)
    generator = chosen.check_generator(generator or chosen.default_generator)
    options = dict(options or {})
    path = ctx.layout.pseudo_queries

    def build(out: Path):
        try:  # bad options fail before anything is built
            made = create_pseudo_query_generator(generator, dataset=dataset, features=features, **options,
                                                 workdir=generator_workdir(path, generator))
        except TypeError as err:
            raise GraceError(f"bad pseudo-query options {options} for {generator} ({err})") from None
        result = build_pseudo_queries(dataset, made)
        print(result.summary())
        return result.queries, save_pseudo_queries(path, result, dataset, protocol=chosen.name, options=options)

    settings = {"protocol": chosen.name, "generator": generator, "options": options}
    return ctx.stage(Stage("pseudo-queries", path.parent, build, lambda out: load_pseudo_queries(path, dataset),
                           settings, {"dataset": ctx.layout.dataset, "features": features_dir(ctx.run, encoder)},
                           resumable=True))


def stage_ids(ctx: RunContext, scheme: str, dataset, features, *, features_stage: Path | None = None,
              pseudo_queries: dict | None = None, stages: StageFunctions = REAL_STAGES, **cfg):
    """RUN/ids/<scheme>: IdentifierMap (+ its tokenizer) under the scheme settings ``cfg``, built from
    ``features`` (made by the stage in ``features_stage``; None: no features) and, for ids read from texts (semantic; structured on
    text), from the held-out images' ``pseudo_queries`` (the run's; None: keywords)."""
    out = ctx.layout.ids(scheme)
    settings = dataclasses.asdict(SchemeConfig(scheme=scheme, **cfg))
    if reads_held_out_texts(scheme, settings["cluster_on"]):
        settings["pseudo_queries_digest"] = pseudo_queries_digest(held_out_texts(dataset, pseudo_queries))

    def build(folder: Path):
        idmap = stages.create_scheme(scheme, **cfg).build(dataset, features, pseudo_queries=pseudo_queries)
        idmap.save(folder)
        return idmap

    inputs = {"dataset": ctx.layout.dataset} | ({"features": features_stage} if features_stage else {})
    return ctx.stage(Stage(f"ids/{scheme}", out, build, stages.load_idmap, settings, inputs))


def stage_trie(ctx: RunContext, scheme: str, dataset, idmap, tokenizer, *, split: str = "test",
               stages: StageFunctions = REAL_STAGES):
    """RUN/trie/<scheme>[-<split>]: the trie over the identifiers of the ``split`` images (that split's
    retrieval corpus)."""
    out = ctx.layout.trie(scheme, split)
    image_ids = [r.image_id for r in dataset.split(split)]

    def build(folder: Path):
        trie = stages.build_trie(idmap, tokenizer, image_ids=image_ids)
        trie.save(folder)
        save_config(folder, {"scheme": scheme, "split": split, "images": len(image_ids)}, name="corpus.json")
        return trie

    return ctx.stage(Stage(f"trie/{out.name}", out, build, stages.load_trie, {"split": split},
                           {"ids": ctx.layout.ids(scheme), "dataset": ctx.layout.dataset}))


def stage_shards(ctx: RunContext, scheme: str, dataset, idmap, pseudo_queries, *,
                 stages: StageFunctions = REAL_STAGES) -> Path:
    """RUN/shards/<scheme>: i2id + t2id webdataset shards (an interrupted write resumes)."""
    def build(folder: Path) -> Path:
        stages.write_shards(dataset, idmap, folder, pseudo_queries=pseudo_queries)
        return folder

    return ctx.stage(Stage(f"shards/{scheme}", ctx.layout.shards(scheme), build, lambda folder: folder, {},
                           {"dataset": ctx.layout.dataset, "ids": ctx.layout.ids(scheme),
                            "pseudo_queries": ctx.layout.pseudo_queries.parent}, resumable=True))


def model_visual_tokens(model: str) -> int:
    """Visual tokens per image that a model config reads (1: pooled features; more: the encoder's tokens)."""
    return int(resolve_config(model).n_visual_tokens)


def stage_train(ctx: RunContext, scheme: str, values: dict, *, nproc: int = 1, name: str | None = None,
                stages: StageFunctions = REAL_STAGES) -> Path:
    """RUN/ckpt/<name or scheme>/export via ``grace train`` (in-process with ``stages.train``, or torchrun with
    ``nproc`` > 1) on the train config ``values`` (``ablate.train_config``); an interrupted training resumes
    from its last checkpoint."""
    name = name or scheme
    export = ctx.layout.export(name)
    inputs = {"shards": Path(values["shards_dir"]), "ids": Path(values["ids_dir"])}
    if values.get("features_cache"):
        inputs["features"] = Path(values["features_cache"])
    if values.get("t2id_media"):
        inputs["t2id_media"] = Path(values["t2id_media"])
    if str(values["model"]).endswith(".json"):  # a model config the run wrote (the joint space's)
        inputs["model_config"] = Path(values["model"])

    def build(out: Path) -> Path:
        config_path = write_json(out / "train_request.json", values)
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "grace.cli",
                   "train", "--config", str(config_path)]
            subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
        else:
            result = stages.train(dataclass_from_dict(TrainConfig, dict(values), source=str(config_path)))
            if Path(result.export_dir) != export and Path(result.export_dir).is_dir():
                return Path(result.export_dir)
        return export

    return ctx.stage(Stage(f"train/{name}", ctx.layout.ckpt(name), build, lambda out: export, values, inputs,
                           resumable=True))


def stage_eval(ctx: RunContext, scheme: str, export: Path, dataset, idmap, tokenizer, *, sets: list, tries: dict,
               num_beams: int = 10, name: str | None = None, stages: StageFunctions = REAL_STAGES) -> dict[str, dict]:
    """RUN/evals/<name or scheme>: the trained model scored on every query set (``sets``: QuerySets; ``tries``:
    split → the trie of its corpus) → ``{set name: result}`` (:func:`~grace.experiments.scoring.score_sets`);
    the model is loaded once, and only when the row is (re)scored."""
    from grace.experiments.retrievers import query_encoder

    name = name or scheme

    @functools.cache
    def trained() -> tuple:  # (model, tokenizer, query encoder): loaded once, for the first split scored
        return (*stages.load_pretrained(export), query_encoder(export))

    def retriever_for(split: str) -> GenerativeRetriever:
        model, tok, query_media = trained()
        return GenerativeRetriever(model, tok or tokenizer, idmap, tries[split], num_beams=num_beams,
                                   query_media=query_media)

    def extra(split: str, retriever) -> dict:  # the trie is the generative "index"
        return {"index_bytes": folder_bytes(ctx.layout.trie(scheme, split)), "corpus_size": len(dataset.split(split))}

    inputs = {"train": ctx.layout.ckpt(name)} | {f"trie-{split}": ctx.layout.trie(scheme, split)
                                                 for split in sorted({s.split for s in sets})}
    return score_sets(ctx, name, sets, retriever_for, inputs=inputs, settings={"num_beams": num_beams}, extra=extra)
