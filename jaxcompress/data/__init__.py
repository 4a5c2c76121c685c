"""Datasets: real (Fashion-)MNIST from IDX files and MNIST-1D generated offline."""

from jaxcompress.data._datasets import (
    DATASETS,
    Dataset,
    cache_dir,
    load_dataset,
    load_idx_dataset,
    load_mnist1d,
)
from jaxcompress.data._idx import CHECKSUMS, IDX_FILES, MIRRORS, download_idx, read_idx, write_idx

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "Dataset",
    "IDX_FILES",
    "MIRRORS",
    "cache_dir",
    "download_idx",
    "load_dataset",
    "load_idx_dataset",
    "load_mnist1d",
    "read_idx",
    "write_idx",
]
