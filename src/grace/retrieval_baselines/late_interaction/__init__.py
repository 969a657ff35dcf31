"""Baseline 2: late-interaction multimodal retrieval (ColBERT-style; FLMR/PreFLMR, Ret-XKnow and MIRe
query fusion) with a PLAID index through colbert-ai, or exact MaxSim.

Modules: ``configs`` (CLI dataclasses), ``maxsim``, ``fusion``, ``modeling`` (the model), ``collection``
(document sources, bulk encoding), ``train``, ``plaid`` (colbert-ai adapter), ``index`` (Indexer /
Searcher), ``retriever`` (:class:`LateInteractionRetriever`), ``wordnet`` (the WordNet
knowledge base), ``kbvqa`` (WordNet KB-VQA task), ``cli``.
"""
