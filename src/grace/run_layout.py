"""The run folder: every path that ``grace ablate`` / ``grace demo`` write and ``grace search``, ``serve`` and
``eval`` read, in one place (docs/DESIGN.md, "Run layout").

    RUN/data/dataset.json   RUN/pseudo_queries/pseudo_queries.json   RUN/features/<encoder>
    RUN/ids/<scheme>    RUN/trie/<scheme>[-<split>]  RUN/shards/<scheme>
    RUN/ckpt/<name>/export                         RUN/baselines/<kind>/index[-<split>]
    RUN/hybrid/<scheme>+<kind>                     RUN/evals/<row>/<query set>.json
    RUN/results/[<query set>/]<row>.json (the report's copy of each row's scores)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the query set whose corpus and results carry no suffix
TEST = "test"


def split_suffix(name: str, split: str) -> str:
    """``name`` for the test split, ``name-<split>`` for another (e.g. the val corpus's trie or index)."""
    return name if split == TEST else f"{name}-{split}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder ``root``; nothing is created or read here."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # data
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dataset(self) -> Path:
        return self.data / "dataset.json"

    @property
    def pseudo_queries(self) -> Path:
        """RUN/pseudo_queries/pseudo_queries.json (its provenance and any generator's state beside it)."""
        return self.root / "pseudo_queries" / "pseudo_queries.json"

    def features(self, encoder_folder: str) -> Path:
        """RUN/features/<encoder_folder> (the encoder's folder-safe name, ``data_process.features.encoder_folder``)."""
        return self.root / "features" / encoder_folder

    # generative stages
    def ids(self, scheme: str) -> Path:
        return self.root / "ids" / scheme

    def trie(self, scheme: str, split: str = TEST) -> Path:
        """The trie over the ``split`` corpus's identifiers: RUN/trie/<scheme> (test) or <scheme>-<split>."""
        return self.root / "trie" / split_suffix(scheme, split)

    def shards(self, scheme: str) -> Path:
        return self.root / "shards" / scheme

    def ckpt(self, name: str) -> Path:
        """RUN/ckpt/<name>: a scheme's training (name = scheme, or <scheme>-seed<k> for a retraining)."""
        return self.root / "ckpt" / name

    def export(self, name: str) -> Path:
        return self.ckpt(name) / "export"

    # baselines and hybrids
    def baseline(self, kind: str) -> Path:
        return self.root / "baselines" / kind

    def baseline_index(self, kind: str, split: str = TEST) -> Path:
        return self.baseline(kind) / split_suffix("index", split)

    def hybrid(self, name: str) -> Path:
        return self.root / "hybrid" / name

    # results
    def evaluation(self, row: str) -> Path:
        """RUN/evals/<row>: one table row's scores on every query set (``<set>.json``) and their record."""
        return self.root / "evals" / row

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def ablation(self) -> Path:
        """RUN/results/ablation.json: the run's table (every row, comparisons, selection, provenance)."""
        return self.results / "ablation.json"

    def result(self, query_set: str, row: str) -> Path:
        """RUN/results/<row>.json for the test queries, RUN/results/<query set>/<row>.json for the others."""
        return self.results / (f"{row}.json" if query_set == TEST else f"{query_set}/{row}.json")

    # what a run built
    def retrievers(self) -> dict[str, str]:
        """Display name → ``KIND:PATH`` of every retriever built here: ``generative/<scheme>`` for each export
        (its ``config.json`` exists), ``<kind>`` for each baseline test index (``config.json``, written last)
        and ``hybrid/<name>`` for each hybrid (``hybrid.json``)."""
        specs = [f"generative:{export}" for export in sorted(self.root.glob("ckpt/*/export"))
                 if (export / "config.json").is_file()]
        specs += [f"{index.parent.name}:{index}" for index in sorted(self.root.glob("baselines/*/index"))
                  if (index / "config.json").is_file()]
        specs += [f"hybrid:{folder}" for folder in sorted(self.root.glob("hybrid/*"))
                  if (folder / "hybrid.json").is_file()]
        return {retriever_name(spec): spec for spec in specs}

    @classmethod
    def of_export(cls, export: Path) -> tuple[RunLayout, str] | None:
        """``(layout, name)`` when ``export`` is RUN/ckpt/<name>/export, else None."""
        export = Path(export)
        if export.name == "export" and export.parent.parent.name == "ckpt":
            return cls(export.parent.parent.parent), export.parent.name
        return None


def retriever_name(spec: str) -> str:
    """The display name of ``KIND:PATH``: ``generative/<scheme>`` for a run's export, ``hybrid/<name>`` for a
    run's hybrid, else the kind (the names :meth:`RunLayout.retrievers` gives)."""
    kind, _, path = spec.partition(":")
    path_ = Path(path)
    if kind == "generative" and RunLayout.of_export(path_) is not None:
        return f"generative/{path_.parent.name}"
    if kind == "hybrid" and path_.parent.name == "hybrid":
        return f"hybrid/{path_.name}"
    return kind
