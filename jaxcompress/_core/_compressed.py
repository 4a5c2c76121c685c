"""The protocol every compressed pytree leaf follows (`QuantizedArray`, `ClusteredArray`).

Consumers (``dequantize_params``, size accounting, export, run folders) work through this base
class, so none of them needs to know the concrete types and no package registers its type in
another's list: ``isinstance(x, CompressedArray)`` is the whole test, whatever was imported first.

A subclass is a frozen dataclass registered as a pytree, with these members:

* ``shape``, ``dtype``: the original array's (``dequantize`` returns that shape and dtype);
* ``bits``: width in bits of each stored code or index;
* ``dequantize() -> jax.Array``: the float array the leaf stands for;
* ``side_bits``: bits of side information (scales, zero points, codebooks);
* ``encoding``: a short description for size tables (``"int4 symmetric per-channel"``);
* ``symbols() -> (codes, alphabet_size)``: the stored codes as non-negative integers (NumPy), and
  the alphabet size or ``None``, for entropy coding.

Derived here: ``size``, ``ndim``, ``code_bits = size * bits`` (fixed-width storage),
``storage_bits = code_bits + side_bits`` and ``nbytes = ceil(storage_bits / 8)``.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import jax
import numpy as np

from jaxcompress._core._errors import JaxCompressTypeError

__all__ = ["CompressedArray", "dequantize", "dequantize_params", "is_compressed"]


class CompressedArray(abc.ABC):
    """Base class of compressed leaves: ``dequantize``, ``bits``, ``side_bits``, ``nbytes``.

    ``bits``, ``shape`` and ``dtype`` are dataclass fields or properties of the subclass (not
    declared here: a property on the base would shadow a subclass's frozen field).
    """

    __slots__ = ()

    @abc.abstractmethod
    def dequantize(self) -> jax.Array:
        """The float array of ``shape`` and ``dtype`` that this leaf encodes."""

    @property
    @abc.abstractmethod
    def side_bits(self) -> int:
        """Bits of side information stored beside the codes (scales, zero points, codebooks)."""

    @property
    @abc.abstractmethod
    def encoding(self) -> str:
        """A short description of the encoding, for size tables."""

    @abc.abstractmethod
    def symbols(self) -> tuple[np.ndarray, int | None]:
        """``(codes, alphabet_size)``: the stored codes as non-negative ints, for entropy coding."""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def code_bits(self) -> int:
        """Fixed-width code storage: ``size * bits``."""
        return self.size * int(self.bits)

    @property
    def storage_bits(self) -> int:
        """``code_bits + side_bits``."""
        return self.code_bits + self.side_bits

    @property
    def nbytes(self) -> int:
        """Bytes of fixed-width storage, codes and side information: ``ceil(storage_bits / 8)``."""
        return math.ceil(self.storage_bits / 8)


def is_compressed(x: Any) -> bool:
    """True for compressed leaves (instances of `CompressedArray`).

    An ``isinstance`` test, not ``hasattr``: ``nnx.Variable`` forwards attribute access to its
    value.
    """
    return isinstance(x, CompressedArray)


def dequantize(q: Any) -> jax.Array:
    """Turn a compressed leaf (`QuantizedArray`: ``scale * (qvalue - zero_point)``,
    `ClusteredArray`: ``codebook[indices]``) back into a float array of its shape and dtype.

    Raises:
      JaxCompressTypeError: ``q`` is not a compressed leaf.
    """
    if not is_compressed(q):
        raise JaxCompressTypeError(
            f"dequantize expects a QuantizedArray or ClusteredArray, got {type(q).__name__}"
        )
    return q.dequantize()


def dequantize_params(tree: Any) -> Any:
    """Replace every compressed leaf of ``tree`` by its dequantized array."""
    return jax.tree.map(
        lambda x: dequantize(x) if is_compressed(x) else x, tree, is_leaf=is_compressed
    )
