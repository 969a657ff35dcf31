"""The leak filter: no pseudo-query may say what a held-out query says.

A pseudo-query trains the generative model (t2id) and fills the lexical control's documents, so one that
repeats a held-out (val or test) query — even reworded — turns retrieval into string matching. Texts are
compared as *word bags*: lower-cased, punctuation stripped, English stop words dropped, each word
Snowball-stemmed (PyStemmer, the stemmer bm25s uses). A pseudo-query is dropped when its bag equals a
held-out query's bag or contains all of its words ("kneeling man" for the query "man kneeling", "cat face
oh surprised weary" for "weary cat").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: small function words that carry no content (a bag of only these is empty and never matches)
STOP_WORDS = frozenset(
    "a an the of on in at to for with and or by from as is are be its it this that into over under "
    "up down out off".split())


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("english")


def word_bag(text: str) -> frozenset[str]:
    """The stemmed content words of ``text`` ("Men Kneeling!" → {"men", "kneel"})."""
    words = [w for w in _WORD.findall(str(text).casefold()) if w not in STOP_WORDS]
    return frozenset(_stemmer().stemWords(words)) if words else frozenset()


@dataclass
class LeakCounts:
    """What the filter saw: texts checked, dropped as equal bags or as containing a held-out query's
    words (``own``: the held-out query is one of the same image's), and the first examples."""

    checked: int = 0
    dropped_equal: int = 0
    dropped_contains: int = 0
    dropped_own_image: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_equal + self.dropped_contains

    def as_dict(self) -> dict:
        return {"checked": self.checked, "dropped": self.dropped, "dropped_equal": self.dropped_equal,
                "dropped_contains": self.dropped_contains, "dropped_own_image": self.dropped_own_image,
                "examples": self.examples}


class LeakFilter:
    """Checks texts against a fixed set of held-out queries (``{query text: its image id}``)."""

    max_examples = 20

    def __init__(self, held_out: dict[str, str] | Iterable[tuple[str, str]]):
        pairs = held_out.items() if isinstance(held_out, dict) else held_out
        self._queries: list[tuple[frozenset[str], str, str]] = []
        for text, image_id in pairs:
            bag = word_bag(text)
            if bag:
                self._queries.append((bag, text, image_id))
        # index every query by its rarest word: a text can contain the query only if it has that word
        frequency = Counter(w for bag, _, _ in self._queries for w in bag)
        self._by_word: dict[str, list[int]] = defaultdict(list)
        for index, (bag, _, _) in enumerate(self._queries):
            self._by_word[min(bag, key=lambda w: (frequency[w], w))].append(index)
        self.counts = LeakCounts()

    def leaked_query(self, text: str) -> tuple[str, str, bool] | None:
        """``(held-out query, its image id, equal)`` that ``text`` repeats, or None when it is clean."""
        bag = word_bag(text)
        for word in bag:
            for index in self._by_word.get(word, ()):
                query_bag, query, image_id = self._queries[index]
                if query_bag <= bag:
                    return query, image_id, query_bag == bag
        return None

    def keep(self, text: str, image_id: str | None = None) -> bool:
        """False (and counted) when ``text`` leaks a held-out query; ``image_id``: whose pseudo-query it is."""
        self.counts.checked += 1
        found = self.leaked_query(text)
        if found is None:
            return True
        query, query_image, equal = found
        if equal:
            self.counts.dropped_equal += 1
        else:
            self.counts.dropped_contains += 1
        self.counts.dropped_own_image += query_image == image_id
        if len(self.counts.examples) < self.max_examples:
            self.counts.examples.append({"text": text, "image_id": image_id, "query": query,
                                         "query_image_id": query_image, "equal": equal})
        return False
