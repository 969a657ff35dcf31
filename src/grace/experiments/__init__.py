"""The experiments floor: run orchestration above the library.

``grace ablate`` / ``grace demo`` (the pipeline's idempotent stages in a run folder, :class:`grace.run_layout.RunLayout`),
the baselines' stages, the hybrids, ``grace eval`` (any retriever kind, by ``KIND:PATH``: :mod:`.retrievers`),
the query sets and the choice on val, and the reports. It imports every stage below it; nothing imports it
except the ``grace`` command and the scripts in ``benchmarks/``.
"""
