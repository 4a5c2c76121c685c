"""``QuantizedArray``: integer codes plus the scales that turn them back into reals."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import CompressedArray, JaxCompressTypeError, JaxCompressValueError
from jaxcompress.quantization._numerics import SCHEMES, code_range, stored_offset

__all__ = ["QuantizedArray", "validate_quantized_array", "to_rows", "from_rows", "row_shape"]

SCALE_BITS = 32  # float32 scales
ZERO_POINT_BITS = 8  # int8 zero points (stored for affine only)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray(CompressedArray):
    """A quantized tensor: ``x ~= scale * (qvalue - zero_point)`` (see ``_numerics`` for the grid).

    Array leaves (seen by ``jax.tree`` / ``jit``):
      qvalue: int8, shape ``shape``. Stored codes; for ``scheme="affine"`` the real code ``u`` in
        ``[0, 2^bits - 1]`` is stored as ``u - 2^(bits-1)`` so every width fits int8 (for 8 bits
        this is ONNX's int8 asymmetric layout); otherwise the real code itself, in
        ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``.
      scale: float32, positive and finite. Shape by granularity:
        per-tensor ``()``; per-channel ``(C,)`` with ``C = shape[axis]``; per-group
        ``(K // group_size, C)`` where ``K = prod(shape) // C`` is the flattened reduction extent
        (all axes but ``axis``, in C order after moving ``axis`` last).
      zero_point: int8, the shape of ``scale``, stored with the same offset as ``qvalue`` (so
        ``qvalue - zero_point`` is the real ``q - Z``). Always 0 for symmetric and fixed point.

    Static metadata (part of the treedef, hashable):
      bits: 2..8. scheme: ``"symmetric" | "affine" | "fixed_point"``. axis: the channel axis
      (non-negative) or ``None`` for per-tensor. group_size: ``None`` or a divisor of ``K``.
      shape, dtype: of the original array (``dequantize`` returns this dtype).

    Invariants (checked by :func:`validate_quantized_array`):
      1. ``qvalue.dtype == int8`` and ``qvalue.shape == shape``.
      2. ``scale.dtype == float32``, ``zero_point.dtype == int8``, both of the granularity shape.
      3. stored codes and zero points lie in ``[qmin + off, qmax + off]`` (``off = -2^(bits-1)``
         for affine, else 0); symmetric and fixed-point zero points are 0.
      4. every scale is finite and > 0; fixed-point scales are exact powers of two.
      5. ``group_size`` requires ``axis`` and divides ``K``.
    """

    qvalue: jax.Array
    scale: jax.Array
    zero_point: jax.Array
    bits: int = dataclasses.field(metadata=dict(static=True))
    scheme: str = dataclasses.field(metadata=dict(static=True))
    axis: int | None = dataclasses.field(metadata=dict(static=True))
    group_size: int | None = dataclasses.field(metadata=dict(static=True))
    shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    def codes(self) -> jax.Array:
        """The real integer codes (int32): affine ``[0, 2^b - 1]``, else signed."""
        return self.qvalue.astype(jnp.int32) - stored_offset(self.bits, self.scheme)

    def dequantize(self) -> jax.Array:
        """``scale * (qvalue - zero_point)`` in the original shape and dtype."""
        return _dequantize_jit(self)

    # -- the CompressedArray size protocol ---------------------------------------------------
    @property
    def side_bits(self) -> int:
        """float32 scales, plus int8 zero points for ``affine`` (the others store none)."""
        side = int(np.size(self.scale)) * SCALE_BITS
        if self.scheme == "affine":
            side += int(np.size(self.zero_point)) * ZERO_POINT_BITS
        return side

    @property
    def encoding(self) -> str:
        gran = (
            ""
            if self.axis is None
            else (f" g{self.group_size}" if self.group_size else " per-channel")
        )
        return f"int{self.bits} {self.scheme}{gran}"

    def symbols(self) -> tuple[np.ndarray, None]:
        """The real codes shifted to start at 0 (``codes() - min``); alphabet from the data."""
        c = np.asarray(self.codes()).reshape(-1)
        return c - (int(c.min()) if c.size else 0), None

    def _dequantize_impl(self) -> jax.Array:
        rows = to_rows(self.qvalue.astype(jnp.int32), self.axis, self.group_size)
        s = self.scale.reshape(-1, 1)
        z = self.zero_point.astype(jnp.int32).reshape(-1, 1)
        out = (rows - z).astype(jnp.float32) * s
        return from_rows(out, self.shape, self.axis, self.group_size).astype(self.dtype)


@jax.jit
def _dequantize_jit(q: QuantizedArray) -> jax.Array:
    return q._dequantize_impl()


def row_shape(shape: tuple[int, ...], axis: int | None, group_size: int | None) -> tuple[int, ...]:
    """Shape of ``scale`` / ``zero_point`` for this granularity (see :class:`QuantizedArray`)."""
    if axis is None:
        return ()
    c = shape[axis]
    if group_size is None:
        return (c,)
    k = int(np.prod(shape, dtype=np.int64)) // c
    return (k // group_size, c)


def to_rows(x: jax.Array, axis: int | None, group_size: int | None) -> jax.Array:
    """View ``x`` as ``(units, n)``: one row per scale, in the order of ``scale.reshape(-1)``."""
    if axis is None:
        return x.reshape(1, -1)
    xm = jnp.moveaxis(x, axis, -1)
    c = xm.shape[-1]
    if group_size is None:
        return xm.reshape(-1, c).T
    k = xm.size // c
    return xm.reshape(k // group_size, group_size, c).transpose(0, 2, 1).reshape(-1, group_size)


def from_rows(
    rows: jax.Array, shape: tuple[int, ...], axis: int | None, group_size: int | None
) -> jax.Array:
    """Inverse of :func:`to_rows`."""
    if axis is None:
        return rows.reshape(shape)
    moved = tuple(np.delete(np.array(shape), axis)) + (shape[axis],)
    c = shape[axis]
    if group_size is None:
        xm = rows.T.reshape(moved)
    else:
        k = int(np.prod(shape, dtype=np.int64)) // c
        xm = rows.reshape(k // group_size, c, group_size).transpose(0, 2, 1).reshape(moved)
    return jnp.moveaxis(xm, -1, axis)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_quantized_array(q: QuantizedArray) -> None:
    """Check every invariant in the :class:`QuantizedArray` docstring.

    Static invariants are always checked; value invariants (code ranges, positive finite scales,
    power-of-two fixed-point scales) only when the leaves are concrete (not under ``jit``).

    Raises:
      JaxCompressTypeError: ``q`` is not a QuantizedArray or a leaf has the wrong dtype.
      JaxCompressValueError: any other invariant fails; the message says which.
    """
    if not isinstance(q, QuantizedArray):
        raise JaxCompressTypeError(f"q must be a QuantizedArray, got {type(q).__name__}")
    if not (isinstance(q.bits, int) and 2 <= q.bits <= 8):
        raise JaxCompressValueError(f"{q.bits=} must be in 2..8")
    if q.scheme not in SCHEMES:
        raise JaxCompressValueError(f"{q.scheme=} must be one of {SCHEMES}")
    if q.qvalue.dtype != jnp.int8:
        raise JaxCompressTypeError(f"qvalue must be int8, got {q.qvalue.dtype}")
    if tuple(q.qvalue.shape) != tuple(q.shape):
        raise JaxCompressValueError(f"qvalue.shape={q.qvalue.shape} != shape={q.shape}")
    if q.axis is not None and not 0 <= q.axis < len(q.shape):
        raise JaxCompressValueError(f"{q.axis=} out of range for shape {q.shape}")
    if q.group_size is not None:
        if q.axis is None:
            raise JaxCompressValueError("group_size requires axis")
        k = q.size // q.shape[q.axis]
        if q.group_size <= 0 or k % q.group_size:
            raise JaxCompressValueError(f"{q.group_size=} does not divide K={k}")
    want = row_shape(q.shape, q.axis, q.group_size)
    if q.scale.dtype != jnp.float32:
        raise JaxCompressTypeError(f"scale must be float32, got {q.scale.dtype}")
    if q.zero_point.dtype != jnp.int8:
        raise JaxCompressTypeError(f"zero_point must be int8, got {q.zero_point.dtype}")
    if tuple(q.scale.shape) != want or tuple(q.zero_point.shape) != want:
        raise JaxCompressValueError(
            f"scale/zero_point shapes {q.scale.shape}/{q.zero_point.shape} != {want} for "
            f"axis={q.axis}, group_size={q.group_size}, shape={q.shape}"
        )
    if not all(_is_concrete(a) for a in (q.qvalue, q.scale, q.zero_point)):
        return
    off = stored_offset(q.bits, q.scheme)
    lo, hi = code_range(q.bits, q.scheme)
    qv = np.asarray(q.qvalue, dtype=np.int32)
    zp = np.asarray(q.zero_point, dtype=np.int32)
    if qv.size and (qv.min() < lo + off or qv.max() > hi + off):
        raise JaxCompressValueError(
            f"qvalue outside [{lo + off}, {hi + off}] for {q.bits}-bit {q.scheme}"
        )
    if q.scheme == "affine":
        if zp.size and (zp.min() < lo + off or zp.max() > hi + off):
            raise JaxCompressValueError("zero_point outside the stored code range")
    elif np.any(zp != 0):
        raise JaxCompressValueError(f"zero_point must be 0 for scheme={q.scheme!r}")
    s = np.asarray(q.scale)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise JaxCompressValueError("scale must be finite and > 0")
    if q.scheme == "fixed_point":
        m, _ = np.frexp(s)
        if np.any(m != 0.5):
            raise JaxCompressValueError("fixed_point scales must be powers of two")
