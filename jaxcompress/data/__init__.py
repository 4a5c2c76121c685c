"""Datasets: real (Fashion-)MNIST from IDX files and MNIST-1D generated offline."""

from jaxcompress.data._datasets import (
    DATASETS,
    Dataset,
    cache_dir,
    load_dataset,
    load_idx_dataset,
    load_mnist1d,
)
from jaxcompress.data._idx import IDX_FILES, download_idx, read_idx, write_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "IDX_FILES",
    "cache_dir",
    "download_idx",
    "load_dataset",
    "load_idx_dataset",
    "load_mnist1d",
    "read_idx",
    "write_idx",
]
