"""NumPy twins of every kernel, with the same names and signatures (no Numba, no validation).

They are the executable specification the compiled kernels are tested against: integer paths
must match exactly, float paths within 1e-5 relative. They read the containers' internal layouts
with independent NumPy code (`formats.to_dense`), so a layout bug shows up as a mismatch.
Float results are computed in float64 and rounded to float32 once.
"""

from __future__ import annotations

import numpy as np

from jaxcompress_kernels.formats import (
    BSRMatrix,
    CSRMatrix,
    Int8Weight,
    NMSparse,
    PackedWeight,
    to_dense,
)
from jaxcompress_kernels.quantized import Requantization, int8_x_block

__all__ = [
    "pack_bits",
    "unpack_bits",
    "qmatmul",
    "quantize_x_int8",
    "qmatmul_int8",
    "spmm_csr",
    "spmm_nm",
    "spmm_bsr",
]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """LSB-first packing through an explicit bit array (``np.packbits(bitorder="little")``)."""
    codes = np.asarray(codes, np.uint8)
    bitarr = (codes[:, None] >> np.arange(bits, dtype=np.uint8)[None, :]) & 1
    return np.packbits(bitarr.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits` through ``np.unpackbits(bitorder="little")``."""
    bitarr = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: count * bits]
    bitarr = bitarr.reshape(count, bits).astype(np.uint8)
    return (bitarr << np.arange(bits, dtype=np.uint8)[None, :]).sum(1, dtype=np.uint8)


def _mm(x, wd, bias):
    x = np.asarray(x, np.float64)
    y = x @ wd.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64)
    return y.astype(np.float32)


def quantize_x_int8(x: np.ndarray, block: int) -> np.ndarray:
    """The ``compute="int8"`` rounding of x: per block of `block` values along the last axis
    (zero-padded to a multiple of it), ``scale = max|x| / 127`` in float32 and
    ``x -> scale * clip(rint(x / scale), -127, 127)`` (0 for an all-zero block)."""
    x = np.asarray(x, np.float32)
    k = x.shape[-1]
    kp = -(-k // block) * block
    xp = np.zeros(x.shape[:-1] + (kp,), np.float32)
    xp[..., :k] = x
    xb = xp.reshape(x.shape[:-1] + (kp // block, block))
    sc = np.abs(xb).max(axis=-1, keepdims=True) / np.float32(127.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(sc > 0, np.clip(np.rint(xb / sc), -127, 127), 0)
    return (q.astype(np.float64) * sc.astype(np.float64)).reshape(xp.shape)[..., :k]


def qmatmul(
    x: np.ndarray, w: PackedWeight, bias: np.ndarray | None = None, *, compute: str = "float32"
) -> np.ndarray:
    """``x @ to_dense(w) + bias`` in float64; with ``compute="int8"`` x is first rounded by
    `quantize_x_int8` per block of ``int8_x_block(w.group_len)``."""
    if compute == "int8":
        x = quantize_x_int8(x, int8_x_block(w.group_len))
    return _mm(x, to_dense(w), bias)


def qmatmul_int8(
    x: np.ndarray,
    w: Int8Weight,
    bias: np.ndarray | None = None,
    *,
    x_zero_point: int = 0,
    requant: Requantization | None = None,
) -> np.ndarray:
    """Exact int64 twin of the int8 kernel (int32 results wrap like the kernel's)."""
    k, n = w.shape
    wi = w.data[:, :k].T.astype(np.int64)
    xi = np.asarray(x).astype(np.int64) - x_zero_point
    acc = xi @ wi
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    acc = acc.astype(np.int32)  # wraps modulo 2**32 like int32 accumulation
    if requant is None:
        return acc
    r = 31 + requant.shift.astype(np.int64)
    v = acc.astype(np.int64) * requant.multiplier.astype(np.int64) + (np.int64(1) << (r - 1))
    v = (v >> r) + requant.out_zero_point
    return np.clip(v, -128, 127).astype(np.int8)


def spmm_csr(x: np.ndarray, w: CSRMatrix, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ to_dense(w) + bias`` in float64."""
    return _mm(x, to_dense(w), bias)


def spmm_nm(x: np.ndarray, w: NMSparse, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ to_dense(w) + bias`` in float64."""
    return _mm(x, to_dense(w), bias)


def spmm_bsr(x: np.ndarray, w: BSRMatrix, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ to_dense(w) + bias`` in float64."""
    return _mm(x, to_dense(w), bias)
