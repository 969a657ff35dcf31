"""The leak filter: no pseudo-query may say what a held-out query says.

A pseudo-query trains the generative model (t2id) and fills the lexical control's documents, so one that
repeats a held-out (val or test) query — even reworded — turns retrieval into string matching. Texts are
compared as *word bags*: lower-cased, punctuation stripped, English stop words dropped, each word
Snowball-stemmed (PyStemmer, the stemmer bm25s uses). A pseudo-query is dropped when its bag equals a
held-out query's bag or contains all of its words ("kneeling man" for the query "man kneeling", "cat face
oh surprised weary" for "weary cat"), or when the two are the same once *qualifiers* are removed: the
gender, person, family-member and skin-tone words that make variant families ("woman pilot" for the query
"man pilot", "kneeling" for "person kneeling"; :func:`variant_bag`).

Every choice is made in a fixed order (sorted words, queries in the order given), so the counts are the same
under any ``PYTHONHASHSEED``: when a text repeats several queries, the one counted is an equal bag before a
superset before a variant, the text's own image before another, then the first given.
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


#: words that only say who an emoji / clip shows (gender, person, family member, age): a name without them
#: names the same variant family ("man pilot", "woman pilot", "pilot"; "family: man, woman, boy", "family")
QUALIFIERS = frozenset(
    "man men woman women person people boy boys girl girls adult adults child children kid kids baby babies "
    "male female gentleman gentlemen lady ladies guy guys mr mrs ms mx prince princess king queen santa "
    "old older elderly young".split())
#: gendered compounds reduced to their stem before the qualifiers go ("merman", "mermaid", "merperson" → "mer")
_GENDERED_COMPOUND = re.compile(r"^(\w+?)(?:man|men|woman|women|maid|maids|person|people)$")
_COMPOUND_STEMS = frozenset({"mer"})
#: "medium-dark skin tone", "light skin tone", … (removed as a phrase: "light" alone is a content word)
_SKIN_TONE = re.compile(r"\b(?:(?:medium|light|dark)(?:[-\s](?:light|dark))?|medium)[-\s]skin[-\s]tones?\b",
                        re.IGNORECASE)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("english")


def word_bag(text: str) -> frozenset[str]:
    """The stemmed content words of ``text`` ("Men Kneeling!" → {"men", "kneel"})."""
    words = [w for w in _WORD.findall(str(text).casefold()) if w not in STOP_WORDS]
    return frozenset(_stemmer().stemWords(words)) if words else frozenset()


def _without_qualifiers(words: list[str]) -> list[str]:
    out = []
    for word in words:
        compound = _GENDERED_COMPOUND.match(word)
        if compound and compound.group(1) in _COMPOUND_STEMS:
            word = compound.group(1)
        if word not in QUALIFIERS:
            out.append(word)
    return out


def variant_bag(text: str) -> frozenset[str]:
    """The stemmed content words of ``text`` without qualifiers: the key of its variant family ("man pilot",
    "woman pilot" and "pilot" → {"pilot"}; "kiss: woman, man, light skin tone" → {"kiss"}). Empty when the
    text names only a person ("man", "older person")."""
    words = [w for w in _WORD.findall(_SKIN_TONE.sub(" ", str(text)).casefold()) if w not in STOP_WORDS]
    words = _without_qualifiers(words)
    return frozenset(_stemmer().stemWords(words)) if words else frozenset()


@dataclass
class LeakCounts:
    """What the filter saw: texts checked, dropped as equal bags, as containing a held-out query's words or
    as its qualifier variant (``own``: the held-out query is one of the same image's), and the first examples."""

    checked: int = 0
    dropped_equal: int = 0
    dropped_contains: int = 0
    dropped_variant: int = 0
    dropped_own_image: int = 0
    examples: list[dict] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_equal + self.dropped_contains + self.dropped_variant

    def as_dict(self) -> dict:
        return {"checked": self.checked, "dropped": self.dropped, "dropped_equal": self.dropped_equal,
                "dropped_contains": self.dropped_contains, "dropped_variant": self.dropped_variant,
                "dropped_own_image": self.dropped_own_image, "examples": self.examples}


#: how a text repeats a held-out query, in the order a match is preferred
MATCH_KINDS = ("equal", "contains", "variant")


class LeakFilter:
    """Checks texts against a fixed set of held-out queries (``{query text: its image id}``, or pairs)."""

    max_examples = 20

    def __init__(self, held_out: dict[str, str] | Iterable[tuple[str, str]]):
        pairs = held_out.items() if isinstance(held_out, dict) else held_out
        self._queries: list[tuple[frozenset[str], str, str]] = []
        self._by_variant: dict[frozenset[str], list[int]] = defaultdict(list)
        for text, image_id in pairs:
            bag = word_bag(text)
            if bag:
                self._queries.append((bag, text, image_id))
                variant = variant_bag(text)
                if variant:
                    self._by_variant[variant].append(len(self._queries) - 1)
        # index every query by its rarest word: a text can contain the query only if it has that word
        frequency = Counter(w for bag, _, _ in self._queries for w in bag)
        self._by_word: dict[str, list[int]] = defaultdict(list)
        for index, (bag, _, _) in enumerate(self._queries):
            self._by_word[min(bag, key=lambda w: (frequency[w], w))].append(index)
        self.counts = LeakCounts()

    def matches(self, text: str, image_id: str | None = None) -> list[tuple[str, str, str]]:
        """Every ``(kind, held-out query, its image id)`` that ``text`` repeats, in the order of preference (an
        equal bag, then a superset, then a qualifier variant; the text's own image first; then as given)."""
        bag = word_bag(text)
        found: dict[int, str] = {}
        for word in sorted(bag):
            for index in self._by_word.get(word, ()):
                query_bag = self._queries[index][0]
                if query_bag <= bag:
                    found[index] = "equal" if query_bag == bag else "contains"
        variant = variant_bag(text)
        for index in self._by_variant.get(variant, ()) if variant else ():
            found.setdefault(index, "variant")
        order = sorted(found, key=lambda i: (MATCH_KINDS.index(found[i]), self._queries[i][2] != image_id, i))
        return [(found[i], self._queries[i][1], self._queries[i][2]) for i in order]

    def leaked_query(self, text: str, image_id: str | None = None) -> tuple[str, str, str] | None:
        """``(kind, held-out query, its image id)`` that ``text`` repeats first (:meth:`matches`), or None."""
        found = self.matches(text, image_id)
        return found[0] if found else None

    def keep(self, text: str, image_id: str | None = None) -> bool:
        """False (and counted) when ``text`` leaks a held-out query; ``image_id``: whose pseudo-query it is."""
        self.counts.checked += 1
        found = self.leaked_query(text, image_id)
        if found is None:
            return True
        kind, query, query_image = found
        setattr(self.counts, f"dropped_{kind}", getattr(self.counts, f"dropped_{kind}") + 1)
        self.counts.dropped_own_image += query_image == image_id
        if len(self.counts.examples) < self.max_examples:
            self.counts.examples.append({"text": text, "image_id": image_id, "query": query,
                                         "query_image_id": query_image, "kind": kind, "equal": kind == "equal"})
        return False
