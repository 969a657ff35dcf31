"""The M2KR benchmark layout (PreFLMR): image + question queries against a task's passage corpus.

M2KR is one Hugging Face dataset (``BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR``)
with two subsets per task: ``<TASK>_data`` (splits ``train``/``valid``/``test``; per query ``question_id``,
``question``, ``instruction``, ``img_path``, ``pos_item_ids``, ``answers``) and ``<TASK>_passages``
(splits ``<split>_passages``; ``passage_id``, ``passage_content``). ``source`` is that hub id, or a local
folder with the same layout as files: ``<TASK>_data/<split>[-*].parquet|.jsonl`` and
``<TASK>_passages/<split>_passages[-*].parquet|.jsonl`` (what the hub repository holds).

A query's text is PreFLMR's: the instruction (ending in ``:``), a space, the question. Images are found
under ``image_root`` (M2KR ships them apart, e.g. ``BByrneLab/M2KR_Images``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grace.errors import GraceError, InputError

QUERY_FIELDS = ("question_id", "question", "pos_item_ids")


@dataclass
class M2KRQuery:
    question_id: str
    question: str
    instruction: str = ""
    image: Path | None = None
    pos_item_ids: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return query_text(self.instruction, self.question)


@dataclass
class M2KRTask:
    """One task's split: its queries and the passage corpus they are scored against."""

    name: str
    split: str
    queries: list[M2KRQuery]
    passage_ids: list[str]
    passage_texts: list[str]

    def passage_text(self) -> dict[str, str]:
        return dict(zip(self.passage_ids, self.passage_texts))


def query_text(instruction: str, question: str) -> str:
    """PreFLMR's query string: ``"<instruction ending in ':'> <question>"`` (just the question without one)."""
    instruction = (instruction or "").strip()
    if not instruction:
        return question
    return f"{instruction if instruction.endswith(':') else instruction + ':'} {question}"


def _files(folder: Path, stem: str) -> tuple[str, list[str]]:
    for pattern, kind in ((f"{stem}.parquet", "parquet"), (f"{stem}-*.parquet", "parquet"),
                          (f"{stem}.jsonl", "json"), (f"{stem}-*.jsonl", "json")):
        found = sorted(str(p) for p in folder.glob(pattern))
        if found:
            return kind, found
    raise InputError(f"no {stem}.parquet / {stem}-*.parquet / {stem}.jsonl here (M2KR layout)", path=folder)


def load_table(source: str | Path, subset: str, split: str):
    """A ``datasets.Dataset`` of one M2KR subset split, from a local folder or the hub."""
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise GraceError("M2KR needs the `datasets` package (pip install 'grace[baselines]')") from exc
    local = Path(source)
    if local.is_dir():
        kind, files = _files(local / subset, split)
        return load_dataset(kind, data_files=files, split="train")
    try:
        return load_dataset(str(source), subset, split=split)
    except Exception as exc:  # noqa: BLE001 - offline or unknown: one line naming what was asked for
        raise GraceError(f"cannot load M2KR {source}/{subset} split {split!r} (not a local folder; hub: "
                         f"{type(exc).__name__}: {exc})".splitlines()[0]) from None


def load_m2kr(source: str | Path, task: str, split: str = "test", *, image_root: str | Path | None = None,
              limit: int = 0) -> M2KRTask:
    """Queries of ``<task>_data[split]`` and the corpus of ``<task>_passages[split_passages]``."""
    data = load_table(source, f"{task}_data", split)
    missing = [f for f in QUERY_FIELDS if f not in data.column_names]
    if missing:
        raise InputError(f"M2KR {task}_data lacks {missing} (columns: {data.column_names})", path=source)
    passage_ids, passage_texts = load_passages(source, task, split)
    if limit:
        data = data.select(range(min(limit, len(data))))
    queries = []
    for n, row in enumerate(data):
        image = row.get("img_path")
        if image and image_root is not None and not Path(image).is_absolute():
            image = Path(image_root) / image
        positives = [str(p) for p in (row.get("pos_item_ids") or [])]
        if not positives:
            raise InputError("query has no pos_item_ids", path=source, entry=n)
        queries.append(M2KRQuery(question_id=str(row["question_id"]), question=str(row["question"]),
                                 instruction=str(row.get("instruction") or ""),
                                 image=Path(image) if image else None, pos_item_ids=positives,
                                 answers=[str(a) for a in (row.get("answers") or row.get("gold_answers") or [])]))
    return M2KRTask(task, split, queries, passage_ids, passage_texts)


def load_passages(source: str | Path, task: str, split: str = "test") -> tuple[list[str], list[str]]:
    """(passage ids, passage texts) of ``<task>_passages[<split>_passages]``."""
    passages = load_table(source, f"{task}_passages", f"{split}_passages")
    for column in ("passage_id", "passage_content"):
        if column not in passages.column_names:
            raise InputError(f"M2KR {task}_passages lacks {column!r}", path=source)
    return [str(p) for p in passages["passage_id"]], [str(t) for t in passages["passage_content"]]


def pseudo_rank(ranked_texts: Sequence[str], answers: Sequence[str]) -> int:
    """1-based rank of the first passage containing an answer (case-insensitive substring); 0 when none —
    PreFLMR's pseudo-recall for OKVQA / E-VQA / Infoseek, whose positives are incomplete."""
    needles = [a.strip().lower() for a in answers if a and a.strip()]
    for rank, text in enumerate(ranked_texts, start=1):
        low = text.lower()
        if any(n in low for n in needles):
            return rank
    return 0
