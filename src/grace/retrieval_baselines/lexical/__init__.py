"""Lexical retrieval: the BM25 control of every results table."""
