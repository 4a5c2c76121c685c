"""Core utilities: key paths, ``where=`` selection, tree statistics, error types."""

from jaxcompress._core._errors import (
    ArtifactError,
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
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

__all__ = [
    "ArtifactError",
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
    "LeafStats",
    "TreeStats",
    "Where",
    "check_pytree",
    "is_floating",
    "key_path_str",
    "map_selected",
    "named_leaves",
    "selected_paths",
    "selection_mask",
    "tree_stats",
]
