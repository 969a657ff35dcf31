"""Datasets in the Karpathy JSON form, offline benchmark builders, pseudo-queries, shard writers."""

from grace.data_process.dataset import Dataset, ImageRecord, load_karpathy, save_karpathy

__all__ = ["Dataset", "ImageRecord", "load_karpathy", "save_karpathy"]
