"""WordNet noun synsets as a knowledge base, read from Debian ``wordnet-base`` (``data.noun``, ``index.noun``).

One passage per synset, ``"lemma, lemma: gloss"``, and a small head-noun finder for emoji CLDR names
("hammer and wrench" → hammer). Shared by the KB-VQA task (:mod:`.kbvqa`) and the offline ViD2R
instance (:mod:`.vid2r`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from grace.errors import InputError

_CUT = re.compile(r"\b(with|of|in|on|for|and|without|from|at)\b|[:,(]")


@dataclass
class WordNet:
    """Noun synsets (``offset → passage``) and the lemma index (``lemma → offsets``, most frequent first)."""

    passages: dict[str, str]
    index: dict[str, list[str]]

    @classmethod
    def read(cls, wordnet_dir: str | Path = "/usr/share/wordnet") -> WordNet:
        """Parse ``data.noun`` and ``index.noun`` of ``wordnet_dir``."""
        wordnet_dir = Path(wordnet_dir)
        data, idx = wordnet_dir / "data.noun", wordnet_dir / "index.noun"
        if not data.is_file() or not idx.is_file():
            raise InputError("WordNet data.noun/index.noun not found (apt-get install wordnet-base)", path=wordnet_dir)
        passages = {}
        for line in data.read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            parts = head.split()
            words = [parts[4 + 2 * i].replace("_", " ") for i in range(int(parts[3], 16))]
            words = [re.sub(r"\(.*\)$", "", w) for w in words]
            passages[parts[0]] = f"{', '.join(dict.fromkeys(words[:4]))}: {gloss.strip()}"
        index = {}
        for line in idx.read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue
            parts = line.split()
            count = int(parts[2])
            index[parts[0]] = parts[-count:]
        return cls(passages, index)

    def lemma(self, word: str) -> str | None:
        """``word`` or a de-pluralised form found in the noun index (a small morphy)."""
        word = word.lower().replace(" ", "_")
        candidates = [word]
        for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("men", "man")):
            if word.endswith(suffix):
                candidates.append(word[: -len(suffix)] + repl)
        return next((c for c in candidates if c in self.index), None)

    def head_noun(self, name: str) -> tuple[str, str] | None:
        """(head noun, synset offset of its first sense) of an emoji name, or None."""
        phrase = _CUT.split(name.lower())[0]
        words = re.findall(r"[a-z]+(?:-[a-z]+)?", phrase)
        for i in range(len(words) - 1, -1, -1):  # last two-word compound, then last word, backwards
            for span in ((words[i - 1:i + 1]) if i > 0 else [], [words[i]]):
                lemma = self.lemma(" ".join(span)) if span else None
                if lemma:
                    return lemma.replace("_", " "), self.index[lemma][0]
        return None
