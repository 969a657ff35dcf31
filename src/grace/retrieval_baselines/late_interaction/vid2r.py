"""ViD2R (Ret-XKnow, MIRe): visual dialogues become retrieval training data.

1. Turns: a LLaVA-Instruct JSON (``[{"id", "image", "conversations": [{"from": "human", "value":
   "<image>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}]``) → one (image, question, response) per exchange.
2. Neural filtering with a text retriever: a turn is dropped when its question alone, without the image,
   retrieves (in its top ``filter_k``) the passage its response retrieves first: the image adds nothing.
3. Response-to-passage conversion: the response, as a query over the knowledge base (jsonl, one passage per
   line), retrieves the positives (its top ``positives``); the question's text-only hits that are not
   positives become hard negatives.
4. ``OUT/vid2r.json``: one entry per kept turn (image, question, response, positive and negative passage
   ids), ``OUT/report.json`` (counts) and ``OUT/config.json``.

``offline_instance`` writes such dialogues from the emoji benchmark (CLDR names and keywords) over a knowledge
base of WordNet glosses: per image, one question the image must answer ("What is this, and what is it
for?") and one its text answers alone ("What does the word 'hammer' mean?"), so the filter has work to do.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.faiss_device import import_faiss

log = logging.getLogger(__name__)
# the field names of the knowledge bases in use, first match wins: Wiki6M (OVEN / InfoSeek, Ret-XKnow's and
# MIRe's KB: wikidata_id, wikipedia_title, wikipedia_content, wikipedia_summary), M2KR's passages (passage_id,
# passage_content), pyserini/BEIR-style (id/_id, contents/text, title)
ID_KEYS = ("id", "passage_id", "wikidata_id", "wikipedia_id", "_id")
TEXT_KEYS = ("text", "passage_content", "wikipedia_content", "contents", "passage", "wikipedia_summary")
TITLE_KEYS = ("title", "wikipedia_title")


@dataclass
class Turn:
    """One exchange of a visual dialogue."""

    source_id: str
    image: str
    question: str
    response: str


def read_dialogues(path: str | Path) -> list[Turn]:
    """Every (human, gpt) exchange of a LLaVA-Instruct JSON, the ``<image>`` placeholder removed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the dialogues: {str(err).splitlines()[0]}", path=path) from None
    if not isinstance(data, list):
        raise InputError("expected a list of {id, image, conversations} (LLaVA-Instruct form)", path=path)
    turns = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or "image" not in entry or not isinstance(entry.get("conversations"), list):
            continue  # text-only dialogues have no image: nothing to retrieve with
        messages = entry["conversations"]
        for first, second in zip(messages[::2], messages[1::2]):
            if first.get("from") != "human" or second.get("from") != "gpt":
                raise InputError("conversations must alternate human / gpt", path=path, entry=index)
            question = re.sub(r"\s*<image>\s*", " ", str(first.get("value", ""))).strip()
            response = str(second.get("value", "")).strip()
            if question and response:
                turns.append(Turn(str(entry.get("id", index)), str(entry["image"]), question, response))
    return turns


def read_passages(path: str | Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a jsonl knowledge base (``.jsonl`` or ``.jsonl.gz``, e.g. Wiki6M_ver_1_0.jsonl.gz as
    published); ``title: text`` when a title is given. Which fields were read is logged (and counted when rows
    differ)."""
    import gzip
    from collections import Counter

    path = Path(path)
    if not path.is_file():
        raise InputError("knowledge base not found", path=path)
    ids, texts = [], []
    used: Counter = Counter()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise InputError("not JSON", path=path, entry=line_no) from None
                if not isinstance(row, dict):
                    raise InputError("a passage must be a JSON object", path=path, entry=line_no)
                text_key = next((k for k in TEXT_KEYS if row.get(k)), None)
                if text_key is None:
                    raise InputError(f"a passage needs one of {TEXT_KEYS}", path=path, entry=line_no)
                title_key = next((k for k in TITLE_KEYS if row.get(k)), None)
                id_key = next((k for k in ID_KEYS if k in row), None)
                used[(id_key or "line number", text_key, title_key or "none")] += 1
                ids.append(str(row[id_key] if id_key else line_no))
                text = row[text_key]
                texts.append(f"{row[title_key]}: {text}" if title_key else str(text))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the knowledge base: {str(err).splitlines()[0]}", path=path) from None
    if not ids:
        raise InputError("the knowledge base is empty", path=path)
    for (id_key, text_key, title_key), count in used.most_common():
        log.info("%s: %d passages with ids from %r, texts from %r, titles from %r", path.name, count, id_key,
                 text_key, title_key)
    return ids, texts


class TextRetriever:
    """Dense text retrieval over the knowledge base (a sentence encoder + an exact inner-product FAISS index)."""

    def __init__(self, passages: Sequence[str], encoder: str = "minilm", batch_size: int = 256):
        from grace.data_process.encoders import create_text_encoder

        faiss = import_faiss()
        self.encoder, self.batch_size = create_text_encoder(encoder), batch_size
        vectors = self._encode(passages)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised vectors (``TextEncoder.encode`` normalises), so inner product = cosine."""
        return np.ascontiguousarray(self.encoder.encode(list(texts), batch_size=self.batch_size).float().cpu().numpy(),
                                    dtype=np.float32)

    def search(self, texts: Sequence[str], k: int) -> np.ndarray:
        """(len(texts), k) passage rows, best first."""
        return self.index.search(self._encode(texts), min(k, self.index.ntotal))[1]


def build_vid2r(turns: Sequence[Turn], passage_ids: Sequence[str], passages: Sequence[str], *,
                retriever: TextRetriever | None = None, filter_k: int = 10, positives: int = 3,
                negatives: int = 3, encoder: str = "minilm") -> tuple[list[dict], dict]:
    """(entries, report): filtered turns with their positive / negative passage ids."""
    retriever = retriever or TextRetriever(passages, encoder)
    by_response = retriever.search([t.response for t in turns], max(positives, 1))
    by_question = retriever.search([t.question for t in turns], max(filter_k, negatives + positives))
    entries, dropped = [], 0
    for turn, r_rows, q_rows in zip(turns, by_response, by_question):
        if filter_k and r_rows[0] in q_rows[:filter_k]:
            dropped += 1
            continue
        pos = [int(r) for r in r_rows[:positives]]
        neg = [int(r) for r in q_rows if int(r) not in pos][:negatives]
        entries.append({"source_id": turn.source_id, "image": turn.image, "question": turn.question,
                        "response": turn.response, "positives": [passage_ids[r] for r in pos],
                        "negatives": [passage_ids[r] for r in neg]})
    report = {"turns": len(turns), "kept": len(entries), "dropped_by_filter": dropped, "passages": len(passages),
              "filter_k": filter_k, "positives": positives, "negatives": negatives}
    log.info("ViD2R: %d turns → %d kept (%d answerable from the question alone)", len(turns), len(entries), dropped)
    return entries, report


def offline_instance(dataset, wordnet, out: Path, *, kb_size: int = 5_000, seed: int = 0) -> tuple[Path, Path]:
    """Write ``OUT/dialogues.json`` (LLaVA-Instruct form, the *training* images only: a model pre-trained on them
    is then scored on KB-VQA test images it never saw) and ``OUT/kb.jsonl`` (WordNet glosses: every answer
    synset plus random others up to ``kb_size``)."""
    rng = np.random.default_rng(seed)
    dialogues, answers = [], []
    for record in dataset.split("train"):
        name = record.meta.get("name") or record.texts[0]
        found = wordnet.head_noun(name)
        if not found:
            continue
        word, offset = found
        gloss = wordnet.passages[offset].partition(": ")[2]
        keywords = ", ".join(str(k) for k in record.meta.get("keywords", [])[:3])
        answer = f"It is {name}{f' ({keywords})' if keywords else ''}. A {word} is {gloss}."
        answers.append(offset)
        dialogues.append({"id": record.image_id, "image": str(record.path), "conversations": [
            {"from": "human", "value": "<image>\nWhat is this, and what is it for?"},
            {"from": "gpt", "value": answer},
            {"from": "human", "value": f"What does the word '{word}' mean?"},
            {"from": "gpt", "value": answer}]})
    if not dialogues:
        raise InputError("no image name has a WordNet head noun", path=getattr(dataset, "name", None))
    needed = list(dict.fromkeys(answers))
    others = sorted(set(wordnet.passages) - set(needed))
    extra = min(max(0, kb_size - len(needed)), len(others))
    chosen = needed + [others[i] for i in sorted(rng.choice(len(others), size=extra, replace=False))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "dialogues.json").write_text(json.dumps(dialogues, ensure_ascii=False, indent=1), encoding="utf-8")
    with (out / "kb.jsonl").open("w", encoding="utf-8") as handle:
        for offset in chosen:
            handle.write(json.dumps({"id": offset, "text": wordnet.passages[offset]}, ensure_ascii=False) + "\n")
    return out / "dialogues.json", out / "kb.jsonl"


def run_vid2r(config) -> dict:
    """``vid2r``: (offline instance →) turns → filter → positives / negatives → OUT/vid2r.json."""
    from grace.io_utils import save_config, write_json

    out = Path(config.out)
    dialogues, kb = config.dialogues, config.kb
    if config.offline:
        from grace.data_process.dataset import load_karpathy
        from grace.retrieval_baselines.late_interaction.wordnet import WordNet

        dataset = load_karpathy(Path(config.emoji_dir) / "dataset.json")
        if config.limit:
            dataset = dataset.subset(dataset.image_ids()[: config.limit])
        dialogues, kb = offline_instance(dataset, WordNet.read(config.wordnet_dir), out, kb_size=config.kb_size,
                                         seed=config.seed)
    if dialogues is None or kb is None:
        raise InputError("give --dialogues (LLaVA-Instruct JSON) and --kb (passages jsonl), or --offline")
    turns = read_dialogues(dialogues)
    if config.limit and not config.offline:
        turns = turns[: config.limit]
    if not turns:
        raise InputError("no (image, question, response) turn in the dialogues", path=dialogues)
    ids, passages = read_passages(kb)
    entries, report = build_vid2r(turns, ids, passages, filter_k=config.filter_k, positives=config.positives,
                                  negatives=config.negatives, encoder=config.text_encoder)
    for entry in entries:
        entry["image"] = str(Path(config.image_root) / entry["image"]) if config.image_root else entry["image"]
    write_json(out / "vid2r.json", entries)
    write_json(out / "report.json", report)
    save_config(out, config)
    return report
