"""Identifier schemes, the one identifier tokenizer, and the constraint trie (see docs/DESIGN.md)."""

from grace.identifiers.idmap import IdentifierMap
from grace.identifiers.schemes import SCHEMES, SchemeConfig, create_scheme
from grace.identifiers.tokenization import IdentifierTokenizer
from grace.identifiers.trie import TransitionTable, Trie, build_trie

__all__ = ["IdentifierMap", "IdentifierTokenizer", "SCHEMES", "SchemeConfig", "TransitionTable", "Trie",
           "build_trie", "create_scheme"]
