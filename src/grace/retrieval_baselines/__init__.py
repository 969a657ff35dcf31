"""Classic retrievers GRACE is compared with, behind the same :class:`grace.retriever.Retriever`."""
