"""``grace baselines late-interaction {train,index,search,kbvqa,vid2r}``."""

from __future__ import annotations

import json

from grace.config import add_command_group, dataclass_from_args
from grace.retrieval_baselines.late_interaction import configs as C


def _train(args) -> int:
    from grace.retrieval_baselines.late_interaction.train import train_t2i

    stats = train_t2i(dataclass_from_args(C.TrainConfig, args))
    print(json.dumps({k: v for k, v in stats.items() if k != "loss_history"}, indent=2))
    return 0


def _passages(path, image_root=None):
    """(ids, texts, image features, images) of a .tsv (id<TAB>text) or .jsonl passage file; a .jsonl line may
    add ``image_features`` (a list of floats) or ``image`` (a path, relative to ``image_root``)."""
    from pathlib import Path

    from grace.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("passage file not found", path=path)
    ids, texts, features, images = [], [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if path.suffix == ".tsv":
                (pid, text), obj = line.split("\t", 1), {}
            else:
                obj = json.loads(line)
                pid, text = obj["id"], obj["text"]
            feature = [float(x) for x in obj["image_features"]] if obj.get("image_features") is not None else None
        except (ValueError, KeyError, TypeError):
            raise InputError("expected id<TAB>text (.tsv) or {\"id\", \"text\"[, \"image_features\" | \"image\"]} "
                             "(.jsonl)", path=path, entry=n) from None
        image = obj.get("image")
        if image is not None and image_root is not None and not Path(image).is_absolute():
            image = Path(image_root) / image
        ids.append(str(pid))
        texts.append(text)
        features.append(feature)
        images.append(image)
    return ids, texts, features, images


def _index(args) -> int:
    from pathlib import Path

    from grace.data_process.dataset import load_karpathy
    from grace.errors import InputError
    from grace.io_utils import read_json, save_config, seed_everything
    from grace.retrieval_baselines.late_interaction.collection import MultimodalDocs, TextDocs
    from grace.retrieval_baselines.late_interaction.index import Indexer
    from grace.retrieval_baselines.late_interaction.retriever import index_images

    config = dataclass_from_args(C.IndexConfig, args)
    seed_everything(config.seed)
    if config.checkpoint:
        from grace.retrieval_baselines.late_interaction.flmr_checkpoint import (
            FLMRCheckpointModel,
            resolve_checkpoint,
        )

        if config.passages is None and not config.m2kr:
            raise InputError("an FLMR / PreFLMR checkpoint indexes passages: give --passages or --m2kr")
        model_dir = resolve_checkpoint(config.checkpoint)
        model = FLMRCheckpointModel.from_pretrained(model_dir)
    else:
        from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

        model_dir, model = config.model, LateInteractionModel.load(config.model)
    if config.m2kr:
        from grace.data_process.m2kr import load_passages

        ids, texts = load_passages(config.m2kr, config.m2kr_task, config.split or "test")
        out = Indexer(model=model, model_dir=model_dir, backend=config.backend, nbits=config.nbits,
                      kmeans_niters=config.kmeans_niters, seed=config.seed).index_custom_collection(
            config.out, TextDocs(texts), ids)
    elif config.passages is not None:
        ids, texts, features, images = _passages(config.passages, config.image_root)
        multimodal = any(f is not None for f in features) or any(i is not None for i in images)
        source = MultimodalDocs(texts, features, images) if multimodal else TextDocs(texts)
        out = Indexer(model=model, model_dir=model_dir, backend=config.backend, nbits=config.nbits,
                      kmeans_niters=config.kmeans_niters, seed=config.seed).index_custom_collection(
            config.out, source, ids)
    else:
        expansion = read_json(config.expansion) if config.expansion is not None else None
        if expansion is not None and not isinstance(expansion, dict):
            raise InputError("expected an object {image_id: [texts]}", path=config.expansion)
        out = index_images(config.model, load_karpathy(config.dataset, config.image_root), config.out, split=config.split,
                           backend=config.backend, nbits=config.nbits, kmeans_niters=config.kmeans_niters,
                           cache_dir=config.cache_dir or Path(config.out) / "cache", seed=config.seed, model=model,
                           expansion=expansion,
                           expansion_source={"file": str(config.expansion)} if expansion is not None else None)
    save_config(out, config, name="index_config.json")
    print(json.dumps(read_json(out / "config.json"), indent=2))
    return 0


def _search(args) -> int:
    from grace.errors import InputError
    from grace.io_utils import write_json
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever
    from grace.retriever import Query

    config = dataclass_from_args(C.SearchConfig, args)
    if not config.texts and not config.images:
        raise InputError("empty query: give --texts and/or --images")
    if config.texts and config.images and len(config.texts) != len(config.images):
        raise InputError(f"{len(config.texts)} texts but {len(config.images)} images: pair them one to one")
    n = max(len(config.texts), len(config.images))
    queries = [Query(text=config.texts[i] if config.texts else None, image=config.images[i] if config.images else None)
               for i in range(n)]
    retriever = LateInteractionRetriever.load(config.index, backend=config.backend or None,
                                              instruction=config.instruction)
    texts = retriever.searcher.collection.get("texts")
    results = []
    for query, hits in zip(queries, retriever.search(queries, config.k)):
        rows = [{"id": h.image_id, "score": round(h.score, 4)} for h in hits]
        if texts:
            where = {pid: i for i, pid in enumerate(retriever.searcher.ids)}
            for row in rows:
                row["text"] = texts[where[row["id"]]]
        results.append({"text": query.text, "image": str(query.image) if query.image else None, "hits": rows})
    if config.out:
        write_json(config.out, results)
    else:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def _vid2r(args) -> int:
    from grace.retrieval_baselines.late_interaction.vid2r import run_vid2r

    config = dataclass_from_args(C.ViD2RConfig, args)
    report = run_vid2r(config)
    print(f"ViD2R: {report['turns']} turns → {report['kept']} kept ({report['dropped_by_filter']} answerable from "
          f"the question alone), {report['passages']} passages → {config.out / 'vid2r.json'}")
    return 0


def _kbvqa(args) -> int:
    from grace.retrieval_baselines.late_interaction.kbvqa import run_kbvqa

    summary = run_kbvqa(dataclass_from_args(C.KBVQAConfig, args))
    print(json.dumps(summary, indent=2))
    return 0


COMMANDS = {
    "train": (C.TrainConfig, _train),
    "index": (C.IndexConfig, _index),
    "search": (C.SearchConfig, _search),
    "kbvqa": (C.KBVQAConfig, _kbvqa),
    "vid2r": (C.ViD2RConfig, _vid2r),
}


def register(subparsers) -> None:
    """Add ``late-interaction`` and its subcommands to ``grace baselines``."""
    add_command_group(subparsers, "late-interaction", "ColBERT-style late interaction (FLMR/Ret-XKnow/MIRe) + PLAID", COMMANDS)
