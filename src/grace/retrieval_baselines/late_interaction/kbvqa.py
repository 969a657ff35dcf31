"""Native task, offline KB-VQA: (image + question) → knowledge passage, on WordNet glosses and emoji.

Knowledge base: WordNet noun synsets (Debian ``wordnet-base``, ``data.noun``), one passage each,
``"lemma, lemma: gloss"``. Queries: an emoji image with a generic question ("What is this used for?");
the answer is the passage of the first WordNet sense of the head noun of the emoji's CLDR name
("hammer and wrench" → hammer, "face with tears of joy" → face). The question never names the
object, so the image must supply it. Metrics: Recall@k (the answer passage is in the top k) and
Pseudo-Recall@k (the head noun appears as a word in one of the top-k passages), as in FLMR's OK-VQA.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.wordnet import WordNet

log = logging.getLogger(__name__)
QUESTIONS = ("What is this used for?", "What is this?", "What is shown in the picture?",
             "Can you tell me about this thing?", "What does this image show?", "Explain what this is.")


@dataclass
class KBVQA:
    """A KB-VQA instance: passages + queries (question, image row, answer passage row, answer word) per split."""

    passage_ids: list[str]
    passages: list[str]
    queries: dict[str, list[tuple[str, int, int, str]]] = field(default_factory=dict)

    def split(self, name: str) -> tuple[list[str], list[int], list[int], list[str]]:
        rows = self.queries.get(name, [])
        return [q[0] for q in rows], [q[1] for q in rows], [q[2] for q in rows], [q[3] for q in rows]


def build_kbvqa(dataset, wordnet: WordNet, *, kb_size: int = 10_000, dedupe_answers: bool = True,
                questions_per_train_image: int = 2, seed: int = 0) -> KBVQA:
    """Queries from the images of ``dataset`` (name = ``meta["name"]`` or the first text); the KB is every
    answer synset plus random other noun synsets up to ``kb_size`` (0 = all)."""
    rng = np.random.default_rng(seed)
    answers = []
    for row, record in enumerate(dataset.images):
        found = wordnet.head_noun(record.meta.get("name") or record.texts[0])
        if found:
            answers.append((row, record.split, *found))
    if not answers:
        raise InputError("no image name has a WordNet head noun", path=getattr(dataset, "name", None))
    needed = list(dict.fromkeys(a[3] for a in answers))
    others = sorted(set(wordnet.passages) - set(needed))
    extra = max(0, (kb_size or len(wordnet.passages)) - len(needed))
    chosen = needed + [others[i] for i in sorted(rng.choice(len(others), size=min(extra, len(others)), replace=False))]
    where = {offset: i for i, offset in enumerate(chosen)}
    instance = KBVQA(passage_ids=chosen, passages=[wordnet.passages[o] for o in chosen])
    seen: set[tuple[str, int]] = set()
    for row, split, word, offset in answers:
        split = "train" if split in ("train", "restval") else split
        n = questions_per_train_image if split == "train" else 1
        if split != "train" and dedupe_answers and (split, where[offset]) in seen:
            continue
        seen.add((split, where[offset]))
        for question in rng.choice(QUESTIONS, size=n, replace=False):
            instance.queries.setdefault(split, []).append((str(question), row, where[offset], word))
    return instance


def kbvqa_ranks(results: Sequence[Sequence[tuple[int, float]]], gold: Sequence[int], words: Sequence[str],
                passages: Sequence[str]) -> tuple[list[int], list[int]]:
    """Per query, 1-based: the rank of its gold passage, and of the first passage naming its answer (0: none)."""
    gold_ranks, pseudo_ranks = [], []
    for res, g, word in zip(results, gold, words):
        rows = [r for r, _ in res]
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        gold_ranks.append(rows.index(g) + 1 if g in rows else 0)
        pseudo_ranks.append(next((i for i, r in enumerate(rows, start=1) if pattern.search(passages[r])), 0))
    return gold_ranks, pseudo_ranks


def kbvqa_metrics(results: Sequence[Sequence[tuple[int, float]]], gold: Sequence[int], words: Sequence[str],
                  passages: Sequence[str], ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Recall@k and Pseudo-Recall@k (answer word in a retrieved passage) in percent."""
    return recall_from_ranks(*kbvqa_ranks(results, gold, words, passages), ks)


def recall_from_ranks(gold_ranks: Sequence[int], pseudo_ranks: Sequence[int], ks: Sequence[int] = (5, 10)
                      ) -> dict[str, float]:
    """R@k / PR@k in percent from per-query ranks (1-based, 0 = not retrieved)."""
    out = {}
    for k in ks:
        for name, ranks in (("R", gold_ranks), ("PR", pseudo_ranks)):
            out[f"{name}@{k}"] = 100.0 * float(np.mean([0 < r <= k for r in ranks])) if ranks else 0.0
    return out


def _with_intervals(metrics: dict, gold_ranks: list[int], pseudo_ranks: list[int], ks=(5, 10), seed: int = 0) -> dict:
    """Add per-query ranks and the 95% bootstrap interval (percent) of every R@k / PR@k."""
    from grace.stats import recall_ci

    for name, ranks in (("R", gold_ranks), ("PR", pseudo_ranks)):
        for k in ks:
            _, low, high = recall_ci(ranks, k, seed=seed)
            metrics[f"{name}@{k}_ci"] = [100.0 * low, 100.0 * high]
    return {**metrics, "gold_ranks": gold_ranks, "pseudo_ranks": pseudo_ranks}


def compare_runs(summary: dict, other: dict, ks=(5, 10), seed: int = 0) -> dict:
    """Paired ΔR@k / ΔPR@k (points, 95% paired bootstrap interval, McNemar p) of every fusion that both runs
    scored on the same task (e.g. pre-trained vs from scratch)."""
    from grace.stats import paired_comparison

    if {k: other["task"].get(k) for k in ("passages", "test_queries")} != \
            {k: summary["task"].get(k) for k in ("passages", "test_queries")}:
        raise InputError("--compare-with holds a run on another task (passages / test queries differ)")
    out = {}
    for fusion, mine in summary["models"].items():
        theirs = other["models"].get(fusion)
        if not theirs or "gold_ranks" not in theirs:
            continue
        out[fusion] = {f"{name}@{k}": paired_comparison(mine[key], theirs[key], k, seed=seed).as_dict()
                       for name, key in (("R", "gold_ranks"), ("PR", "pseudo_ranks")) for k in ks}
    return out


def _write_report(out: Path, summary: dict, ks=(5, 10)) -> None:
    """OUT/results.md: recall and pseudo-recall with intervals per fusion, then the paired comparison."""
    from grace.io_utils import atomic_write_text

    def cell(m: dict, key: str) -> str:
        return f"{m[key]:.1f} [{m[key + '_ci'][0]:.1f}, {m[key + '_ci'][1]:.1f}]"

    cols = [f"{n}@{k}" for n in ("R", "PR") for k in ks]
    title = (f"# KB-VQA (WordNet glosses): {summary['task']['test_queries']} test queries, "
             f"{summary['task']['passages']} passages")
    lines = [title, "", "| fusion | init_from | " + " | ".join(cols) + " | train_s |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for fusion, m in summary["models"].items():
        lines.append(f"| {fusion} | {m.get('init_from') or 'scratch'} | " + " | ".join(cell(m, c) for c in cols)
                     + f" | {m['train_s']:.0f} |")
    if summary.get("compared_with"):
        heading = (f"Paired vs {summary['compared_with']['path']} (Δ in points [95% paired bootstrap], "
                   "McNemar p):")
        lines += ["", heading, "", "| fusion | " + " | ".join(f"Δ{c}" for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for fusion, comp in summary["compared_with"]["by_fusion"].items():
            lines.append(f"| {fusion} | " + " | ".join(
                f"{100 * comp[c]['diff']:+.1f} [{100 * comp[c]['low']:+.1f}, {100 * comp[c]['high']:+.1f}] "
                f"p {comp[c]['p_mcnemar']:.2g}" for c in cols) + " |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def load_kbvqa_dataset(config):
    """The image dataset of the task: ``config.dataset``, or the emoji benchmark (built when absent)."""
    from grace.data_process.dataset import load_karpathy

    if config.dataset is not None:
        return load_karpathy(config.dataset)
    if (Path(config.emoji_dir) / "dataset.json").is_file():
        return load_karpathy(Path(config.emoji_dir) / "dataset.json")
    from grace.data_process.emoji import build_emoji

    return build_emoji(config.emoji_dir, limit=config.limit, seed=config.seed)


def _bench_plaid(config, model, docs, packed, task, queries, gold, words, exact) -> list[dict]:
    """PLAID indexes of one model's KB embeddings per nbits: size, build time, latency, recall, overlap."""
    from grace.retrieval_baselines.late_interaction.index import Indexer, Searcher, topk_overlap

    rows = []
    for nbits in config.plaid_nbits:
        folder = Path(config.out) / config.bench_fusion / f"plaid-{nbits}bit"
        index_config = Indexer(model=model, model_dir=Path(config.out) / config.bench_fusion / "model", backend="plaid",
                               nbits=nbits, seed=config.seed).index_custom_collection(folder, docs, task.passage_ids,
                                                                                      packed=packed)
        searcher = Searcher(folder, ncells=config.ncells, ndocs=config.ndocs)
        if searcher.backend != "plaid":
            rows.append({"nbits": nbits, "error": "PLAID unavailable, fell back to exact"})
            continue
        searcher.search_custom_collection(queries[:2], 10)  # warm-up
        results, latency = searcher.timed_search(queries, 10)
        from grace.io_utils import read_json

        built = read_json(index_config / "config.json")
        rows.append({"nbits": nbits, "plaid_mb": built["plaid_bytes"] / 2**20, "build_s": built["plaid_build_s"],
                     "partitions": built["num_partitions"], "latency_ms": 1000 * latency,
                     "overlap@10": topk_overlap(results, exact),
                     **kbvqa_metrics(results, gold, words, task.passages)})
        log.info("PLAID %d-bit: %s", nbits, rows[-1])
    return rows


def run_kbvqa(config, *, progress: bool = True) -> dict:
    """``kbvqa``: build the task, train + index + score every fusion style; writes ``results.json``."""
    import time

    from grace.io_utils import save_config, seed_everything, write_json
    from grace.retrieval_baselines.late_interaction.collection import (
        CachedTextDocs,
        encode_collection,
        encode_query_set,
        visual_tokens,
    )
    from grace.retrieval_baselines.late_interaction.configs import ModelConfig
    from grace.retrieval_baselines.late_interaction.index import Indexer, Searcher
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel
    from grace.retrieval_baselines.late_interaction.train import fit, load_initial_model

    seed_everything(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, config)
    dataset = load_kbvqa_dataset(config)
    if config.limit:
        dataset = dataset.subset(dataset.image_ids()[: config.limit])
    task = build_kbvqa(dataset, WordNet.read(config.wordnet_dir), kb_size=config.kb_size,
                       dedupe_answers=config.dedupe_answers, seed=config.seed)
    visual = np.asarray(visual_tokens(dataset, config.image_encoder, out / "cache", progress=progress))
    train_q, train_rows, train_gold, _ = task.split("train")
    test_q, test_rows, test_gold, test_words = task.split("test")
    if not train_q or not test_q:
        raise InputError("the dataset needs train and test images whose names have WordNet head nouns")
    summary = {"task": {"passages": len(task.passages), "train_queries": len(train_q), "test_queries": len(test_q),
                        "images": len(dataset)}, "models": {}}
    docs = None
    for fusion in config.fusions:
        if config.init_from:  # fine-tune a pre-trained model (e.g. `train --direction i2t`) on the task
            model = load_initial_model(config.init_from, fusion=fusion, visual_dim=int(visual.shape[-1]))
            model.config.doc_maxlen, model.config.truncate_docs = config.doc_maxlen, True
        else:
            model = LateInteractionModel(config=ModelConfig(
                text_encoder=config.text_encoder, image_encoder=config.image_encoder, fusion=fusion, dim=config.dim,
                visual_dim=int(visual.shape[-1]), visual_grid=config.visual_grid, doc_maxlen=config.doc_maxlen,
                truncate_docs=True, seed=config.seed))
        if docs is None:  # the frozen backbone is shared: its passage states are computed once
            start = time.perf_counter()
            docs = CachedTextDocs.build(model, task.passages, progress=progress)
            summary["task"]["backbone_passages_s"] = time.perf_counter() - start
        start = time.perf_counter()
        history = fit(model, query_texts=train_q, query_visual=visual[train_rows], positives=train_gold, docs=docs,
                      steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                      hard_negatives=config.hard_negatives, seed=config.seed, progress=progress)
        train_s = time.perf_counter() - start
        model_dir = model.save(out / fusion / "model", extra={"loss_history": history})
        packed = encode_collection(model, docs, batch_size=256)
        Indexer(model=model, model_dir=model_dir, backend=config.backend, nbits=config.nbits,
                seed=config.seed).index_custom_collection(out / fusion / "index", docs, task.passage_ids, packed=packed)
        searcher = Searcher(out / fusion / "index", ncells=config.ncells, ndocs=config.ndocs)
        queries = encode_query_set(model, test_q, visual[test_rows])
        results, latency = searcher.timed_search(queries, 10)
        ranks = kbvqa_ranks(results, test_gold, test_words, task.passages)
        metrics = _with_intervals(recall_from_ranks(*ranks), *ranks, seed=config.seed)
        summary["models"][fusion] = {**metrics,
                                     "init_from": str(config.init_from) if config.init_from else None,
                                     "train_s": train_s, "loss_first": history[0],
                                     "loss_last": float(np.mean(history[-20:])), "backend": searcher.backend,
                                     "latency_ms": 1000 * latency}
        log.info("%s: %s", fusion, summary["models"][fusion])
        if fusion == config.bench_fusion and config.plaid_nbits:
            exact = results if searcher.backend == "exact" else Searcher(out / fusion / "index", backend="exact"
                                                                          ).search_custom_collection(queries, 10)
            summary["plaid"] = _bench_plaid(config, model, docs, packed, task, queries, test_gold, test_words, exact)
        if config.compare_with:
            from grace.io_utils import read_json

            summary["compared_with"] = {"path": str(config.compare_with), "by_fusion": compare_runs(
                summary, read_json(config.compare_with), seed=config.seed)}
        write_json(out / "results.json", summary)
        _write_report(out, summary)
    return summary
