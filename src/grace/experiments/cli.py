"""``grace eval``, ``ablate``, ``demo``, ``search``, ``serve`` — thin drivers over dataclasses."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys


def _eval(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.distributed import rank_and_world
    from grace.experiments.eval_run import EvalConfig, run_eval
    from grace.experiments.report import markdown_table, recall_rows

    config = dataclass_from_args(EvalConfig, args)
    results = run_eval(config)
    if config.checkpoints:
        if rank_and_world()[0] == 0:
            print((config.out / "checkpoints.md").read_text(), end="")
        return 0
    if rank_and_world()[0] == 0:
        pseudo = [f"PR@{k}" for k in config.ks] if config.m2kr and config.pseudo_recall else []
        columns = ["retriever"] + [f"R@{k}" for k in config.ks] + pseudo + ["latency_ms", "num_queries", "corpus_size"]
        print(markdown_table(recall_rows(results, config.ks), columns), end="")
        print(f"wrote {config.out}/results.json, table.md, recall.png, latency.png")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.experiments.ablate import AblateConfig, run_ablation

    run_ablation(dataclass_from_args(AblateConfig, args))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.experiments.demo import DemoConfig, run_demo

    run_demo(dataclass_from_args(DemoConfig, args))
    return 0


def _load_service(config):
    """The SearchService a ``RetrieversConfig`` names (each retriever loaded once)."""
    from grace.experiments.retrievers import load_service

    return load_service(config.retriever, run=config.run, dataset=config.dataset, split=config.split,
                        num_beams=config.num_beams, compile=config.compile, image_root=config.image_root,
                        trust_remote_code=config.trust_remote_code)


def _search(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.experiments.configs import SearchConfig
    from grace.infer.search import read_queries, run_search

    config = dataclass_from_args(SearchConfig, args)
    texts = read_queries(args.queries, config.queries_file, image=config.image)
    with contextlib.redirect_stdout(sys.stderr):  # libraries print while loading; stdout carries the results
        rendered = run_search(_load_service(config), texts, k=config.k, image=config.image, as_json=config.json)
    print(rendered)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from grace.config import dataclass_from_args
    from grace.experiments.configs import ServeConfig
    from grace.infer.server import serve

    config = dataclass_from_args(ServeConfig, args)
    service = _load_service(config)
    print(f"grace serve: {', '.join(service.retrievers)} on http://{config.host}:{config.port}/", flush=True)
    serve(service, host=config.host, port=config.port, max_batch=config.max_batch, window_ms=config.window_ms,
          max_k=config.max_k, timeout_s=config.timeout_s, max_pending=config.max_pending)
    return 0


def _add_retriever_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--retriever is repeatable: `--retriever generative:A --retriever clip_faiss:B` (or several after one flag)."""
    parser.add_argument("--retriever", dest="retriever", action="extend", nargs="+", default=argparse.SUPPRESS,
                        help=help_text)


class _ForceAction(argparse.Action):
    """``--force [STAGE ...]``: the stages named, or every stage (``all``) when the flag stands alone."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, list(values) or ["all"])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the experiment floor's subcommands (dataclasses imported lazily for their flags)."""
    from grace.config import add_command
    from grace.experiments.configs import AblateConfig, DemoConfig, EvalConfig, SearchConfig, ServeConfig

    p = add_command(subparsers, "eval", EvalConfig, _eval, conflict_handler="resolve",
                    help="Recall@K + latency of retrievers (KIND:PATH); works under torchrun")
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (the random baseline is always added)")
    p = add_command(subparsers, "search", SearchConfig, _search, conflict_handler="resolve",
                    help="ranked images for text (or image) queries from loaded retrievers")
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (default: every retriever of --run)")
    p.add_argument("queries", nargs="*", help="query texts")
    p = add_command(subparsers, "serve", ServeConfig, _serve, conflict_handler="resolve",
                    help="web page + JSON API over a run's retrievers (FastAPI, uvicorn)")
    _add_retriever_flag(p, "KIND:PATH of a retriever, repeatable (default: every retriever of --run)")
    p = add_command(subparsers, "ablate", AblateConfig, _ablate, conflict_handler="resolve",
                    help="identifier schemes: ids → shards → trie → train → eval, one table")
    p.add_argument("--force", dest="force", nargs="*", action=_ForceAction, default=argparse.SUPPRESS,
                   metavar="STAGE", help={f.name: f for f in dataclasses.fields(AblateConfig)}["force"].metadata["help"])
    add_command(subparsers, "demo", DemoConfig, _demo,
                help="the whole pipeline on the embedded emoji benchmark (--quick on CPU)")
