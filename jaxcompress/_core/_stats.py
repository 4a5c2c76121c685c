"""Tree statistics: parameter count, bytes and zeros, per leaf and in total."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcompress._core._selection import check_pytree, named_leaves

__all__ = ["LeafStats", "TreeStats", "tree_stats"]


@dataclasses.dataclass(frozen=True)
class LeafStats:
    """Statistics of one leaf: ``path``, ``shape``, ``dtype`` name, ``size``, ``nbytes``, ``zeros``."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    size: int
    nbytes: int
    zeros: int

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros (0.0 for an empty leaf)."""
        return self.zeros / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class TreeStats:
    """Per-leaf statistics and their totals."""

    leaves: tuple[LeafStats, ...]

    @property
    def size(self) -> int:
        """Total number of parameters."""
        return sum(s.size for s in self.leaves)

    @property
    def nbytes(self) -> int:
        """Total bytes as stored (dense)."""
        return sum(s.nbytes for s in self.leaves)

    @property
    def zeros(self) -> int:
        """Total number of exact zeros."""
        return sum(s.zeros for s in self.leaves)

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros over all leaves."""
        return self.zeros / self.size if self.size else 0.0

    def table(self) -> str:
        """A Markdown table: one row per leaf and a total row."""
        rows = [
            "| leaf | shape | dtype | params | bytes | zeros | sparsity |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for s in self.leaves:
            rows.append(
                f"| {s.path} | {s.shape} | {s.dtype} | {s.size} | {s.nbytes} | {s.zeros} | "
                f"{s.sparsity:.2%} |"
            )
        rows.append(
            f"| total | | | {self.size} | {self.nbytes} | {self.zeros} | {self.sparsity:.2%} |"
        )
        return "\n".join(rows)


def tree_stats(tree: Any) -> TreeStats:
    """Count parameters, bytes and exact zeros of every leaf of ``tree``.

    Args:
      tree: a pytree of arrays (linen params, ``nnx.State``, nested containers).

    Returns:
      A :class:`TreeStats`; ``.size``, ``.nbytes``, ``.zeros`` and ``.sparsity`` are totals.

    Raises:
      JaxCompressTypeError: ``tree`` is not a pytree of arrays.

    Example:
      >>> import numpy as np
      >>> tree_stats({"w": np.array([[0.0, 1.0]]), "b": np.zeros(3)}).zeros
      4
    """
    check_pytree(tree, name="tree")
    out = []
    for path, leaf in named_leaves(tree):
        arr = np.asarray(leaf)
        out.append(
            LeafStats(
                path=path,
                shape=tuple(arr.shape),
                dtype=str(arr.dtype),
                size=int(arr.size),
                nbytes=int(arr.nbytes),
                zeros=int(arr.size - np.count_nonzero(arr)),
            )
        )
    return TreeStats(tuple(out))
