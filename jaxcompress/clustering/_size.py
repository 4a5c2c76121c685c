"""Honest size accounting: bits per weight including scales, zero points, codebooks, Huffman tables."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxcompress._core import CompressedArray, check_pytree, is_compressed, key_path_str
from jaxcompress.clustering._huffman import huffman_bits

__all__ = ["LeafSize", "SizeReport", "size_report"]


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


def _leaf_size(path: str, x: Any, huffman: bool) -> LeafSize:
    if isinstance(x, CompressedArray):  # QuantizedArray, ClusteredArray: the shared protocol
        enc = x.encoding
        if huffman:
            symbols, alphabet = x.symbols()
            code = huffman_bits(symbols, alphabet_size=alphabet)
            enc += " +huffman"
        else:
            code = x.code_bits
        return LeafSize(path, enc, x.size, int(code), int(x.side_bits))
    arr = np.asarray(x)
    return LeafSize(path, f"dense {arr.dtype}", int(arr.size), int(arr.size * arr.itemsize * 8), 0)


def size_report(tree: Any, *, huffman: bool = False) -> SizeReport:
    """Count the storage of a (partly) compressed pytree, leaf by leaf.

    Args:
      tree: params pytree whose leaves are arrays or compressed leaves (any
        ``jaxcompress._core.CompressedArray``: :class:`QuantizedArray`, :class:`ClusteredArray`;
        each reports its code width, side information and symbols).
      huffman: code the integer codes / indices with a real canonical Huffman coder and count the
        measured stream plus the 8-bit-per-symbol length table instead of ``n * bits``.

    Returns:
      A :class:`SizeReport` (``.bits_per_weight``, ``.nbytes``, ``.ratio`` vs float32, ``.table()``).
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_compressed)
    if not flat:
        check_pytree(tree, name="tree")
    return SizeReport(tuple(_leaf_size(key_path_str(p), x, huffman) for p, x in flat))
