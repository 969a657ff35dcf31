"""grace: generative cross-modal retrieval.

Stages, in pipeline order: ``data_process`` → ``identifiers`` → ``model`` → ``train`` → ``infer``;
``retrieval_baselines`` hold the dense and late-interaction retrievers scored by the same harness.
"""

__version__ = "0.1.0"
