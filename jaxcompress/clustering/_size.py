"""Honest size accounting: bits per weight including scales, zero points, codebooks, Huffman tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxcompress._core import check_pytree, key_path_str
from jaxcompress.clustering._clustered import ClusteredArray
from jaxcompress.clustering._huffman import huffman_bits
from jaxcompress.quantization._qarray import QuantizedArray

__all__ = ["LeafSize", "SizeReport", "size_report"]

SCALE_BITS = 32  # float32 scales and centroids
ZERO_POINT_BITS = 8  # int8 zero points (only stored for affine)


@dataclasses.dataclass(frozen=True)
class LeafSize:
    """Storage of one leaf, in bits.

    ``code_bits`` = ``n * bits`` for fixed-width codes/indices (or the measured Huffman stream plus
    its table when ``huffman=True``), ``side_bits`` = scales + zero points + codebooks, and plain
    float leaves (biases) count ``n * dtype bits`` in ``code_bits``.
    """

    path: str
    encoding: str
    n: int
    code_bits: int
    side_bits: int

    @property
    def total_bits(self) -> int:
        return self.code_bits + self.side_bits

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.n if self.n else 0.0


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """Per-leaf sizes and totals; ``ratio`` is float32 bytes over compressed bytes."""

    leaves: tuple[LeafSize, ...]

    @property
    def n(self) -> int:
        return sum(x.n for x in self.leaves)

    @property
    def total_bits(self) -> int:
        return sum(x.total_bits for x in self.leaves)

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.n if self.n else 0.0

    @property
    def nbytes(self) -> float:
        return self.total_bits / 8

    @property
    def ratio(self) -> float:
        return 32 * self.n / self.total_bits if self.total_bits else float("inf")

    def table(self) -> str:
        rows = [
            "| leaf | encoding | weights | code bits | side bits (scales/zp/codebook) | bits/weight |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for x in self.leaves:
            rows.append(
                f"| {x.path} | {x.encoding} | {x.n} | {x.code_bits} | {x.side_bits} | "
                f"{x.bits_per_weight:.3f} |"
            )
        rows.append(
            f"| total | | {self.n} | {sum(x.code_bits for x in self.leaves)} | "
            f"{sum(x.side_bits for x in self.leaves)} | {self.bits_per_weight:.3f} |"
        )
        return "\n".join(rows)


def _is_enc(x: Any) -> bool:
    return isinstance(x, (QuantizedArray, ClusteredArray))


def _leaf_size(path: str, x: Any, huffman: bool) -> LeafSize:
    if isinstance(x, QuantizedArray):
        n = x.size
        side = int(np.size(x.scale)) * SCALE_BITS
        if x.scheme == "affine":
            side += int(np.size(x.zero_point)) * ZERO_POINT_BITS
        enc = f"int{x.bits} {x.scheme}" + (
            "" if x.axis is None else (f" g{x.group_size}" if x.group_size else " per-channel")
        )
        if huffman:
            code = huffman_bits(
                np.asarray(x.codes()).reshape(-1) - int(np.asarray(x.codes()).min())
            )
            enc += " +huffman"
        else:
            code = n * x.bits
        return LeafSize(path, enc, n, int(code), side)
    if isinstance(x, ClusteredArray):
        n = x.size
        side = int(np.size(x.codebook)) * SCALE_BITS
        enc = f"{x.bits}-bit clusters" + ("" if x.axis is None else " per-channel")
        if huffman:
            code = huffman_bits(np.asarray(x.indices), alphabet_size=x.n_clusters)
            enc += " +huffman"
        else:
            code = n * x.bits
        return LeafSize(path, enc, n, int(code), side)
    arr = np.asarray(x)
    return LeafSize(path, f"dense {arr.dtype}", int(arr.size), int(arr.size * arr.itemsize * 8), 0)


def size_report(tree: Any, *, huffman: bool = False) -> SizeReport:
    """Count the storage of a (partly) compressed pytree, leaf by leaf.

    Args:
      tree: params pytree whose leaves are arrays, :class:`QuantizedArray` or
        :class:`ClusteredArray`.
      huffman: code the integer codes / indices with a real canonical Huffman coder and count the
        measured stream plus the 8-bit-per-symbol length table instead of ``n * bits``.

    Returns:
      A :class:`SizeReport` (``.bits_per_weight``, ``.nbytes``, ``.ratio`` vs float32, ``.table()``).
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_enc)
    if not flat:
        check_pytree(tree, name="tree")
    return SizeReport(tuple(_leaf_size(key_path_str(p), x, huffman) for p, x in flat))
