"""``grace eval``, ``ablate``, ``demo``, ``search``, ``serve``, ``bench decode`` — thin drivers over dataclasses."""

from __future__ import annotations

import argparse
import contextlib
import sys


class _Extend(argparse.Action):
    """Like action="extend", starting from an empty list when the default is config's unset sentinel."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (current if isinstance(current, list) else []) + list(values))


def _eval(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.eval_run import EvalConfig, run_eval
    from grace.infer.evaluate import _world
    from grace.infer.report import markdown_table, recall_rows

    config = dataclass_from_args(EvalConfig, args)
    results = run_eval(config)
    if config.checkpoints:
        if _world()[1] == 0:
            print((config.out / "checkpoints.md").read_text(), end="")
        return 0
    if _world()[1] == 0:
        pseudo = [f"PR@{k}" for k in config.ks] if config.m2kr and config.pseudo_recall else []
        columns = ["retriever"] + [f"R@{k}" for k in config.ks] + pseudo + ["latency_ms", "num_queries", "corpus_size"]
        print(markdown_table(recall_rows(results, config.ks), columns), end="")
        print(f"wrote {config.out}/results.json, table.md, recall.png, latency.png")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.ablate import AblateConfig, run_ablation

    run_ablation(dataclass_from_args(AblateConfig, args))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.demo import DemoConfig, run_demo

    run_demo(dataclass_from_args(DemoConfig, args))
    return 0


def _bench_decode(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.bench import BenchConfig, run_bench

    run_bench(dataclass_from_args(BenchConfig, args))
    return 0


def _load_service(config):
    """The SearchService a ``RetrieversConfig`` names (each retriever loaded once)."""
    from grace.infer.search import SearchService

    return SearchService.load(config.retriever, run=config.run, dataset=config.dataset, split=config.split,
                              num_beams=config.num_beams, compile=config.compile, image_root=config.image_root,
                              trust_remote_code=config.trust_remote_code)


def _search(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.configs import SearchConfig
    from grace.infer.search import read_queries, run_search

    config = dataclass_from_args(SearchConfig, args)
    texts = read_queries(args.queries, config.queries_file, image=config.image)
    with contextlib.redirect_stdout(sys.stderr):  # libraries print while loading; stdout carries the results
        rendered = run_search(_load_service(config), texts, k=config.k, image=config.image, as_json=config.json)
    print(rendered)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.infer.configs import ServeConfig
    from grace.infer.server import serve

    config = dataclass_from_args(ServeConfig, args)
    service = _load_service(config)
    print(f"grace serve: {', '.join(service.retrievers)} on http://{config.host}:{config.port}/", flush=True)
    serve(service, host=config.host, port=config.port, max_batch=config.max_batch, window_ms=config.window_ms,
          max_k=config.max_k, timeout_s=config.timeout_s, max_pending=config.max_pending)
    return 0


def _add_retriever_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--retriever is repeatable: `--retriever generative:A --retriever clip_faiss:B` (or several after one flag)."""
    from grace.config import _UNSET

    parser.add_argument("--retriever", dest="retriever", action=_Extend, nargs="+", default=_UNSET, help=help_text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the infer stage's subcommands (dataclasses imported lazily for their flags)."""
    from grace.config import add_command, add_dataclass_args
    from grace.infer.configs import (
        AblateConfig,
        BenchConfig,
        DemoConfig,
        EvalConfig,
        SearchConfig,
        ServeConfig,
    )

    p = subparsers.add_parser("eval", help="Recall@K + latency of retrievers (KIND:PATH); works under torchrun",
                              conflict_handler="resolve")
    add_dataclass_args(p, EvalConfig)
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (the random baseline is always added)")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("search", help="ranked images for text (or image) queries from loaded retrievers",
                              conflict_handler="resolve")
    add_dataclass_args(p, SearchConfig)
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (default: every retriever of --run)")
    p.add_argument("queries", nargs="*", help="query texts")
    p.set_defaults(func=_search)

    p = subparsers.add_parser("serve", help="web page + JSON API over a run's retrievers (FastAPI, uvicorn)",
                              conflict_handler="resolve")
    add_dataclass_args(p, ServeConfig)
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (default: every retriever of --run)")
    p.set_defaults(func=_serve)

    add_command(subparsers, "ablate", AblateConfig, _ablate, help="identifier schemes: ids → shards → trie → train → eval, one table")

    add_command(subparsers, "demo", DemoConfig, _demo, help="the whole pipeline on the embedded emoji benchmark (--quick on CPU)")

    bench = subparsers.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    add_command(bench, "decode", BenchConfig, _bench_decode,
                help="P1 constrained vs unconstrained beam search; P2 latency vs trie size")
