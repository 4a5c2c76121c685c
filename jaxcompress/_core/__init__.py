"""Core utilities: key paths, ``where=`` selection, tree statistics, error types, atomic writes and
the machine description."""

from jaxcompress._core._compressed import (
    CompressedArray,
    dequantize,
    dequantize_params,
    is_compressed,
)
from jaxcompress._core._errors import (
    ArtifactError,
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
    StageInterrupted,
)
from jaxcompress._core._selection import (
    Where,
    check_pytree,
    is_floating,
    key_path_str,
    map_selected,
    named_leaves,
    selected_paths,
    selection_mask,
)
from jaxcompress._core._stats import LeafStats, TreeStats, tree_stats
from jaxcompress._core._system import atomic_write, cpu_model, default_file_mode, machine_info

__all__ = [
    "CompressedArray",
    "dequantize",
    "dequantize_params",
    "is_compressed",
    "ArtifactError",
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
    "LeafStats",
    "StageInterrupted",
    "TreeStats",
    "Where",
    "atomic_write",
    "cpu_model",
    "default_file_mode",
    "machine_info",
    "check_pytree",
    "is_floating",
    "key_path_str",
    "map_selected",
    "named_leaves",
    "selected_paths",
    "selection_mask",
    "tree_stats",
]
