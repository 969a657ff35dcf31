"""The rows of an ablation table, typed: what each row is, not what its name looks like."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from grace.experiments.configs import CONTROLS

#: the kinds of row, in the order the table groups them
KINDS = ("generative", "hybrid", "baseline", "control", "random")


@dataclass(frozen=True)
class Row:
    """One table row: a ``generative`` scheme (retrained under ``seed`` when given), a ``hybrid`` (that scheme's
    candidates re-scored by the ``rescorer`` baseline), a ``baseline``, a ``control`` (bm25, sibling) or the
    ``random`` ranking; ``retriever`` is the scheme or the retriever kind. ``name`` is the row's name in the
    table and its folders (``rq``, ``rq@seed1``, ``rq+clip_faiss``, ``clip_faiss``)."""

    kind: str
    retriever: str
    seed: int | None = None
    rescorer: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"row kind {self.kind!r}: one of {', '.join(KINDS)}")
        if bool(self.rescorer) != (self.kind == "hybrid"):
            raise ValueError(f"a {self.kind} row {'needs' if self.kind == 'hybrid' else 'takes no'} rescorer")

    @property
    def name(self) -> str:
        base = self.retriever if self.seed is None else f"{self.retriever}@seed{self.seed}"
        return f"{base}+{self.rescorer}" if self.rescorer else base

    @property
    def generator(self) -> Row:
        """The generative row whose checkpoint a hybrid (or a generative row) reads."""
        return Row("generative", self.retriever, self.seed)


def generative(scheme: str, seed: int | None = None) -> Row:
    return Row("generative", scheme, seed)


def hybrid(scheme: str, rescorer: str, seed: int | None = None) -> Row:
    return Row("hybrid", scheme, seed, rescorer)


def baseline(kind: str) -> Row:
    """A baseline row, or a control's (bm25, sibling)."""
    return Row("control" if kind in CONTROLS else "baseline", kind)


def names(rows: Iterable[Row], *kinds: str) -> list[str]:
    """The names of the ``rows`` of ``kinds``, in order."""
    return [row.name for row in rows if row.kind in kinds]
