"""CLIP + FAISS dense retrieval (the retrieval stage of REACT), the dense baseline of every GRACE table.

Pipeline: ``extract`` (chunked, resumable image/text features) → ``merge`` → ``build-index`` (FAISS
``Flat`` or ``IVF{n}_PQ{m}``) → ``search`` / ``retrieve-pairs`` / :class:`ClipFaissRetriever`. Offline, the
dual encoder is a LiT-style model (``train-heads``): frozen EfficientNet-Lite0 + all-MiniLM-L6-v2 with
trained projection heads; online, any ``open_clip:ARCH/PRETRAINED`` model.
"""
