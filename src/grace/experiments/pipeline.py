"""Idempotent pipeline stages shared by ``grace ablate`` and ``grace demo`` (run layout of DESIGN.md).

Each stage writes one folder under RUN/ next to the config that made it and is skipped when that
folder is complete and its ``stage.json`` (settings and input digests: :mod:`grace.experiments.stage_record`)
matches what it would be built from now (``force`` rebuilds): RUN/data, RUN/features/<enc>, RUN/ids/<scheme>,
RUN/trie/<scheme>, RUN/shards/<scheme>, RUN/ckpt/<scheme> (+ export/), RUN/results. A stale derived stage
(ids, trie, shards, a baseline index) is rebuilt; stale data, or a trained model whose inputs changed, stops
the run with a one-line error naming the difference.
"""

from __future__ import annotations

import dataclasses
import json
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
from grace.data_process.features import encoder_folder, image_features, view_cache_dir
from grace.data_process.openclipart import build_openclipart
from grace.data_process.protocol import DEFAULT_PROTOCOL, get_protocol
from grace.data_process.pseudo_queries import (
    build_pseudo_queries,
    config_path,
    create_pseudo_query_generator,
    generator_workdir,
    load_pseudo_queries,
    pseudo_queries_digest,
    save_pseudo_queries,
)
from grace.data_process.shards import write_shards
from grace.errors import GraceError
from grace.experiments.stage import StageTimer
from grace.experiments.stage_record import reusable, save_record, stage_record
from grace.identifiers.idmap import IdentifierMap
from grace.identifiers.schemes import SchemeConfig, create_scheme, held_out_texts, reads_held_out_texts
from grace.identifiers.tokenization import IdentifierTokenizer
from grace.identifiers.trie import Trie, build_trie
from grace.infer.evaluate import DEFAULT_KS, evaluate
from grace.infer.retriever import GenerativeRetriever
from grace.io_utils import folder_bytes, read_json, save_config, write_json
from grace.model.config import resolve_config
from grace.model.factory import load_pretrained
from grace.retrieval_baselines.random import RandomRetriever
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


def stage_dataset(run: Path, timer: StageTimer, *, dataset: Path | None = None, limit: int = 0, seed: int = 0,
                  benchmark: str = "emoji", image_root: Path | None = None, force: bool = False,
                  group_by: str = ""):
    """RUN/data/dataset.json: the offline ``benchmark`` (emoji or openclipart) built there when no dataset is
    given; else a copy of ``dataset`` whose image paths are resolved against ``image_root`` (absolute), so
    every later stage and command reads the run's copy without an image root (its source in
    RUN/data/source.json). ``group_by`` (a field or ``re:REGEX``) re-splits that copy group-aware
    (:func:`grace.data_process.groups.regroup_karpathy`, RUN/data/groups.json) under ``seed``."""
    layout = RunLayout(run)
    target = layout.dataset
    if dataset is not None:
        source = {"dataset": str(Path(dataset).resolve()),
                  "image_root": str(Path(image_root).resolve()) if image_root else None}
        if group_by:
            source |= {"group_by": group_by, "split_seed": seed}
        source_file = layout.data / "source.json"
        done = target.is_file() and source_file.is_file() and read_json(source_file) == source

        def copy():
            if group_by:
                from grace.data_process.groups import regroup_karpathy

                regroup_karpathy(source["dataset"], layout.data, group_by, image_root=source["image_root"], seed=seed)
            else:
                save_karpathy(load_karpathy(source["dataset"], source["image_root"]), target)
            save_config(layout.data, source, name="source.json")
            return load_karpathy(target, check_files=False)  # the copy just checked every image

        return timer.run("data", done, copy, lambda: load_karpathy(target))
    if benchmark not in BENCHMARK_BUILDERS:
        raise GraceError(f"unknown benchmark {benchmark!r}; offline benchmarks: {sorted(BENCHMARK_BUILDERS)}")

    record = stage_record({"benchmark": benchmark, "limit": limit, "seed": seed}, {})

    def build():
        built = BENCHMARK_BUILDERS[benchmark](layout.data, seed=seed, limit=limit or None)
        save_record(layout.data, record)
        return built

    done = not force and reusable(layout.data, target.is_file(), record, stage="data", on_change="error")
    return timer.run("data", done, build, lambda: load_karpathy(target))


def stage_features(run: Path, dataset, encoder: str, timer: StageTimer, tokens: bool = False, views: int = 1,
                   seed: int = 0, *, stages: StageFunctions = REAL_STAGES):
    """RUN/features/<encoder>: pooled image features, plus visual tokens when ``tokens`` (a model reading
    several tokens per image), plus ``views - 1`` augmented views under views/<k>; cached and reused by
    data_process.features. Returns the pooled FeatureSet (of the images themselves)."""
    cache = features_dir(run, encoder)
    folders = [view_cache_dir(cache, view) for view in range(views)]
    done = all((f / "meta.json").is_file() and (not tokens or (f / "tokens.npy").is_file()) for f in folders)

    def build():
        for view in range(views):
            stages.image_features(dataset, encoder=encoder, cache_dir=cache, tokens=tokens, view=view, seed=seed)
        return stages.image_features(dataset, encoder=encoder, cache_dir=cache)

    return timer.run("features", done, build, lambda: stages.image_features(dataset, encoder=encoder, cache_dir=cache))


def stage_ids(run: Path, scheme: str, dataset, features, timer: StageTimer, force: bool = False,
              pseudo_queries: dict | None = None, *, stages: StageFunctions = REAL_STAGES, **cfg):
    """RUN/ids/<scheme>: IdentifierMap (+ its tokenizer); rebuilt when its saved settings differ from ``cfg``,
    or, for ids read from texts (semantic; structured on text), when it was built from other ``pseudo_queries``
    (the run's; None: keywords)."""
    layout = RunLayout(run)
    out = layout.ids(scheme)
    record = stage_record({}, {"dataset": layout.dataset})

    def build():
        idmap = stages.create_scheme(scheme, **cfg).build(dataset, features, pseudo_queries=pseudo_queries)
        idmap.save(out)
        save_record(out, record)
        return idmap

    saved = read_json(out / "config.json") if (out / "config.json").is_file() else {}
    wanted = dataclasses.asdict(SchemeConfig(scheme=scheme, **cfg))
    same = all(saved.get(key) == value for key, value in wanted.items() if key in saved or key in cfg)
    if same and reads_held_out_texts(scheme, wanted["cluster_on"]):
        same = saved.get("pseudo_queries_digest") == pseudo_queries_digest(held_out_texts(dataset, pseudo_queries))
    done = not force and reusable(out, (out / "ids.json").is_file() and same, record, stage=f"ids/{scheme}")
    return timer.run(f"ids/{scheme}", done, build, lambda: stages.load_idmap(out))


def stage_trie(run: Path, scheme: str, dataset, idmap, tokenizer, timer: StageTimer, split: str = "test",
               force: bool = False, *, stages: StageFunctions = REAL_STAGES):
    """The trie over the identifiers of the ``split`` images (that split's retrieval corpus)."""
    layout = RunLayout(run)
    out = layout.trie(scheme, split)
    image_ids = [r.image_id for r in dataset.split(split)]
    record = stage_record({"split": split, "images": len(image_ids)},
                          {"ids": layout.ids(scheme) / "ids.json", "dataset": layout.dataset})

    def build():
        trie = stages.build_trie(idmap, tokenizer, image_ids=image_ids)
        trie.save(out)
        save_config(out, {"scheme": scheme, "split": split, "images": len(image_ids)}, name="corpus.json")
        save_record(out, record)
        return trie

    done = not force and reusable(out, (out / "corpus.json").is_file(), record, stage=f"trie/{out.name}")
    return timer.run(f"trie/{out.name}", done, build, lambda: stages.load_trie(out))


def stage_pseudo_queries(run: Path, dataset, features, timer: StageTimer, *, protocol: str = "",
                         generator: str = "", options: dict | None = None) -> tuple[dict[str, list[str]], dict]:
    """RUN/data/pseudo_queries.json (+ its provenance, pseudo_queries.config.json): t2id texts for every
    held-out (val and test) image from the ``protocol``'s ``generator`` (default: the protocol's) with
    ``options``, through the leak filter. A run folder whose pseudo-queries were made under another protocol,
    generator or options is an error (its shards and models were trained on them); one made for another
    dataset too. Returns ``(queries, provenance)``."""
    chosen = get_protocol(protocol or DEFAULT_PROTOCOL)
    generator = chosen.check_generator(generator or chosen.default_generator)
    options = dict(options or {})
    path = RunLayout(run).pseudo_queries
    wanted = {"protocol": chosen.name, "generator": generator, "options": options}
    if path.is_file() and config_path(path).is_file():
        built = read_json(config_path(path))
        have = {key: built.get(key) for key in wanted}
        if have != wanted:
            raise GraceError(f"{path} was made with {have}, not {wanted}; use another --run folder (its shards and "
                             f"models depend on them)")

    def build():
        try:  # bad options fail before anything is built
            made = create_pseudo_query_generator(generator, dataset=dataset, features=features, **options,
                                                 workdir=generator_workdir(path, generator))
        except TypeError as err:
            raise GraceError(f"bad pseudo-query options {options} for {generator} ({err})") from None
        result = build_pseudo_queries(dataset, made)
        print(result.summary())
        return result.queries, save_pseudo_queries(path, result, dataset, protocol=chosen.name, options=options)

    return timer.run("pseudo-queries", path.is_file() and config_path(path).is_file(), build,
                     lambda: load_pseudo_queries(path, dataset))


def stage_shards(run: Path, scheme: str, dataset, idmap, pseudo_queries, timer: StageTimer, force: bool = False,
                 *, stages: StageFunctions = REAL_STAGES):
    """RUN/shards/<scheme>: i2id + t2id webdataset shards (write_shards resumes by itself)."""
    layout = RunLayout(run)
    out = layout.shards(scheme)
    record = stage_record({}, {"dataset": layout.dataset, "ids": layout.ids(scheme) / "ids.json",
                               "pseudo_queries": layout.pseudo_queries})

    def build():
        written = stages.write_shards(dataset, idmap, out, pseudo_queries=pseudo_queries)
        save_record(out, record)
        return written

    done = not force and reusable(out, (out / "shards.json").is_file(), record, stage=f"shards/{scheme}")
    return timer.run(f"shards/{scheme}", done, build, lambda: out)


def train_config_values(run: Path, scheme: str, *, model: str, steps: int, lr: float, batch_size_i2id: int,
                        batch_size_t2id: int, encoder: str, seed: int, overrides: dict | None = None,
                        name: str | None = None) -> dict:
    """The ``grace train`` config of one scheme in the run layout (into RUN/ckpt/<name or scheme>), with the
    user's ``overrides`` on top. An override that is not a TrainConfig field is an error (a typo would
    otherwise change nothing)."""
    layout = RunLayout(run)
    values = {"shards_dir": layout.shards(scheme), "ids_dir": layout.ids(scheme), "trie_dir": layout.trie(scheme),
              "features_cache": features_dir(run, encoder), "image_encoder": encoder, "model": model,
              "steps": steps, "lr": lr, "batch_size_i2id": batch_size_i2id, "batch_size_t2id": batch_size_t2id,
              "output_dir": layout.ckpt(name or scheme), "seed": seed}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise GraceError(f"train overrides {unknown} are not TrainConfig fields; known: {sorted(known)}")
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    values.update(overrides or {})
    return values


def model_visual_tokens(model: str) -> int:
    """Visual tokens per image that a model config reads (1: pooled features; more: the encoder's tokens)."""
    return int(resolve_config(model).n_visual_tokens)


def stage_train(run: Path, scheme: str, values: dict, timer: StageTimer, nproc: int = 1, force: bool = False,
                name: str | None = None, *, stages: StageFunctions = REAL_STAGES) -> Path:
    """RUN/ckpt/<name or scheme>/export via ``grace train`` (in-process with ``stages.train``, or torchrun with
    ``nproc`` > 1)."""
    name = name or scheme
    layout = RunLayout(run)
    out, export = layout.ckpt(name), layout.export(name)
    config_path = out / "train_request.json"
    inputs = {"shards": Path(values["shards_dir"]) / "shards.json", "ids": Path(values["ids_dir"]) / "ids.json"}
    if values.get("features_cache"):
        inputs["features"] = Path(values["features_cache"]) / "meta.json"
    if values.get("t2id_media"):  # its texts may grow (schemes share it); its stage record names the embedding
        inputs["t2id_media"] = Path(values["t2id_media"]) / "stage.json"
    record = stage_record({}, inputs)

    def build():
        write_json(config_path, values)
        save_record(out, record)  # before training: a resumed run continues from the same inputs
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "grace.cli",
                   "train", "--config", str(config_path)]
            subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
        else:
            result = stages.train(dataclass_from_dict(TrainConfig, dict(values), source=str(config_path)))
            if Path(result.export_dir) != export and Path(result.export_dir).is_dir():
                return Path(result.export_dir)
        return export

    done = export.is_dir() and config_path.is_file() and not force and json.loads(config_path.read_text()) == values
    done = done and reusable(out, True, record, stage=f"train/{name}", on_change="error")
    return timer.run(f"train/{name}", done, build, lambda: export)


def stage_eval(run: Path, scheme: str, export: Path, dataset, idmap, tokenizer, timer: StageTimer, *,
               sets: list, tries: dict, num_beams: int = 10, name: str | None = None,
               stages: StageFunctions = REAL_STAGES) -> dict[str, dict]:
    """Evaluate the trained model on every query set (``sets``: QuerySets; ``tries``: split → the trie of its
    corpus) → ``{set name: result}``, each in ``RunLayout.result`` under ``name`` (default: the scheme).
    The model is loaded once."""
    name = name or scheme

    def build():
        from grace.experiments.retrievers import query_encoder

        model, tok = stages.load_pretrained(export)
        query_media = query_encoder(export)
        out = {}
        for query_set in sets:
            retriever = GenerativeRetriever(model, tok or tokenizer, idmap, tries[query_set.split], num_beams=num_beams,
                                            query_media=query_media)
            res = evaluate(retriever, query_set.texts, query_set.gold)
            res["index_bytes"] = folder_bytes(RunLayout(run).trie(scheme, query_set.split))  # the generative "index"
            res["corpus_size"] = len(dataset.split(query_set.split))
            write_json(RunLayout(run).result(query_set.name, name), res)
            out[query_set.name] = res
        return out

    return timer.run(f"eval/{name}", False, build, lambda: None)


def random_baseline(dataset, query_set, *, seed: int = 0) -> dict:
    """Recall of the random ranking over the query set's corpus (+ its analytic expectation K/N)."""
    corpus = [r.image_id for r in dataset.split(query_set.split)]
    res = evaluate(RandomRetriever(corpus, seed=seed), query_set.texts, query_set.gold, progress=False)
    res["expected"] = {f"recall@{k}": min(1.0, k / len(corpus)) for k in DEFAULT_KS}
    return res
