"""``grace eval --checkpoints RUN/ckpt/<scheme>``: every saved checkpoint of one training, scored as GRACE picks
its model — Recall@K with intervals per step on the run's val and test queries, the best step chosen on val,
and a recall-vs-step plot.

Each checkpoint is consolidated (:mod:`grace.train.consolidate`; ZeRO-3 partitions reassembled) into the
training's export model (its config and tokenizer), so no export is written per step. Under torchrun every
rank scores its share of the queries (:func:`grace.infer.evaluate.evaluate`); rank 0 writes
``OUT/checkpoints.{json,md,png}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grace.errors import InputError
from grace.io_utils import atomic_write_text, write_json
from grace.run_layout import RunLayout


def run_checkpoint_eval(config: Any, rank: int = 0) -> dict:
    """Score every checkpoint under ``config.checkpoints`` (RUN/ckpt/<scheme>); returns the report."""
    from grace.data_process.dataset import load_karpathy
    from grace.experiments.query_sets import split_queries
    from grace.identifiers import IdentifierMap, Trie
    from grace.infer.evaluate import evaluate
    from grace.infer.retriever import GenerativeRetriever
    from grace.model import load_pretrained, load_state
    from grace.stats import add_intervals
    from grace.train.consolidate import checkpoint_folders, checkpoint_step, consolidated_state_dict

    ckpt = Path(config.checkpoints)
    run, scheme = ckpt.parent.parent, ckpt.name
    if not (ckpt / "export").is_dir():
        raise InputError("no export/ beside the checkpoints (the model config and tokenizer come from it)", path=ckpt)
    from grace.experiments.retrievers import query_encoder

    model, tokenizer = load_pretrained(ckpt / "export", trust_remote_code=config.trust_remote_code)
    query_media = query_encoder(ckpt / "export")
    idmap = IdentifierMap.load(RunLayout(run).ids(scheme))
    dataset = load_karpathy(RunLayout(run).dataset, check_files=False)
    sets = [split_queries(dataset, split, config.max_queries) for split in ("val", "test") if dataset.split(split)]
    tries = {s.split: Trie.load(RunLayout(run).trie(scheme, s.split)) for s in sets}
    ks = list(config.ks)
    rows = []
    for tag in checkpoint_folders(ckpt / "checkpoints"):
        load_state(model, consolidated_state_dict(tag), source=tag)
        step = checkpoint_step(tag)
        for query_set in sets:
            retriever = GenerativeRetriever(model, tokenizer, idmap, tries[query_set.split], num_beams=config.num_beams,
                                            batch_size=config.batch_size, query_media=query_media)
            result = evaluate(retriever, query_set.texts, query_set.gold, ks, batch_size=config.batch_size,
                              progress=config.progress and rank == 0)
            rows.append({"step": step, "set": query_set.name, **add_intervals(result, ks, clusters=query_set.gold)})
    choose_on = "val" if any(r["set"] == "val" for r in rows) else "test"
    candidates = [r for r in rows if r["set"] == choose_on]
    best = max(candidates, key=lambda r: (r[f"recall@{ks[0]}"], r[f"recall@{ks[-1]}"], -r["step"]))["step"]
    report = {"checkpoints": str(ckpt), "scheme": scheme, "ks": ks, "num_beams": config.num_beams,
              "chosen_on": choose_on, "best_step": best, "rows": rows,
              "queries": {s.name: s.provenance() for s in sets}}
    if rank == 0:
        _write(Path(config.out), report)
    return report


def _write(out: Path, report: dict) -> None:
    from grace.experiments.report import markdown_table
    from grace.provenance import git_state

    report["git"] = git_state()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "checkpoints.json", report)
    ks = report["ks"]
    table = [{"step": r["step"] if r["step"] != report["best_step"] else f"{r['step']} (best on {report['chosen_on']})",
              "queries": r["set"],
              **{f"R@{k}": f"{100 * r[f'recall@{k}']:.1f} [{100 * r[f'recall@{k}_ci'][0]:.1f}, "
                           f"{100 * r[f'recall@{k}_ci'][1]:.1f}]" for k in ks}} for r in report["rows"]]
    text = (f"# Checkpoints of {report['checkpoints']}\n\n"
            + markdown_table(table, ["step", "queries", *[f"R@{k}" for k in ks]])
            + f"\nBest step on {report['chosen_on']} (R@{ks[0]}, then R@{ks[-1]}, then the earlier step): "
              f"{report['best_step']}. Recall in % [95% bootstrap interval over gold images]; {report['num_beams']} "
              f"beams; commit {report['git'].get('commit')} (dirty: {report['git'].get('dirty')}).\n\n"
              "![recall vs step](checkpoints.png)\n")
    atomic_write_text(out / "checkpoints.md", text)
    _plot(report, out / "checkpoints.png")


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in dict.fromkeys(r["set"] for r in report["rows"]):
        for k, style in zip(report["ks"], ("-", "--", ":")):
            rows = [r for r in report["rows"] if r["set"] == name]
            ax.plot([r["step"] for r in rows], [100 * r[f"recall@{k}"] for r in rows], style, marker="o",
                    label=f"{name} R@{k}")
    ax.axvline(report["best_step"], color="grey", alpha=0.5)
    ax.set_xlabel("training step")
    ax.set_ylabel("recall (%)")
    ax.set_title(f"{report['scheme']}: recall vs step (best on {report['chosen_on']}: {report['best_step']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
