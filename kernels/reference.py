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
    "conv2d",
    "depthwise_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
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


# ----------------------------------------------------------------------------------------------
# convolutions and pooling (NHWC; the Flax kernel layout (KH, KW, Cin, Cout))


def _pad_crop(x, pads, fill=0.0):
    """x (B, H, W, C) padded with `fill` by pads ((top, bottom), (left, right)); negative pads
    crop (lax semantics)."""
    (pt, pb), (pl, pr) = pads
    x = x[:, max(-pt, 0) : x.shape[1] - max(-pb, 0), max(-pl, 0) : x.shape[2] - max(-pr, 0)]
    widths = ((0, 0), (max(pt, 0), max(pb, 0)), (max(pl, 0), max(pr, 0)), (0, 0))
    return np.pad(x, widths, constant_values=fill)


def _taps(xp, kh, kw, strides, dilation, oh, ow):
    """Yields (i, j, view): view[b, oh, ow, c] = xp[b, oh*sh + i*dh, ow*sw + j*dw, c]."""
    sh, sw = strides
    dh, dw = dilation
    for i in range(kh):
        for j in range(kw):
            r0 = i * dh
            c0 = j * dw
            yield i, j, xp[:, r0 : r0 + (oh - 1) * sh + 1 : sh, c0 : c0 + (ow - 1) * sw + 1 : sw]


def _act(y, activation):
    if activation in ("relu", "relu6"):
        y = np.maximum(y, 0.0)
    if activation == "relu6":
        y = np.minimum(y, 6.0)
    return y


def _out_hw(x, kh, kw, strides, dilation, pads):
    h = x.shape[1] + pads[0][0] + pads[0][1]
    w = x.shape[2] + pads[1][0] + pads[1][1]
    oh = (h - ((kh - 1) * dilation[0] + 1)) // strides[0] + 1
    ow = (w - ((kw - 1) * dilation[1] + 1)) // strides[1] + 1
    return oh, ow


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
) -> np.ndarray:
    """``act(conv(x, W) + bias)``: a float64 sum over the kernel taps of the strided input views
    (one ``tensordot`` over Cin per tap), rounded to float32 once."""
    kh, kw, _, cout = w.shape
    oh, ow = _out_hw(x, kh, kw, strides, dilation, pads)
    xp = _pad_crop(np.asarray(x, np.float64), pads)
    y = np.zeros((x.shape[0], oh, ow, cout))
    for i, j, v in _taps(xp, kh, kw, strides, dilation, oh, ow):
        y += np.tensordot(v, w[i, j].astype(np.float64), axes=([3], [0]))
    if bias is not None:
        y += bias.astype(np.float64)
    return _act(y, activation).astype(np.float32)


def depthwise_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    multiplier: int | None = None,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
) -> np.ndarray:
    """Depthwise twin: ``y[., c*m + j] = sum_taps xpad[., c] * W[kh, kw, 0, c*m + j]`` in float64."""
    kh, kw, _, cout = w.shape
    m = 1 if multiplier is None else multiplier
    oh, ow = _out_hw(x, kh, kw, strides, dilation, pads)
    xp = _pad_crop(np.asarray(x, np.float64), pads)
    y = np.zeros((x.shape[0], oh, ow, cout))
    for i, j, v in _taps(xp, kh, kw, strides, dilation, oh, ow):
        y += np.repeat(v, m, axis=3) * w[i, j, 0].astype(np.float64)
    if bias is not None:
        y += bias.astype(np.float64)
    return _act(y, activation).astype(np.float32)


def max_pool2d(x: np.ndarray, window, *, strides=None, pads=((0, 0), (0, 0))) -> np.ndarray:
    """Max over the window taps of the ``-inf``-padded input (``np.maximum``: NaN propagates)."""
    kh, kw = window
    strides = (1, 1) if strides is None else tuple(strides)
    oh, ow = _out_hw(x, kh, kw, strides, (1, 1), pads)
    xp = _pad_crop(np.asarray(x, np.float32), pads, -np.inf)
    y = np.full((x.shape[0], oh, ow, x.shape[3]), -np.inf, np.float32)
    for _, _, v in _taps(xp, kh, kw, strides, (1, 1), oh, ow):
        y = np.maximum(y, v)
    return y


def avg_pool2d(
    x: np.ndarray, window, *, strides=None, pads=((0, 0), (0, 0)), count_include_pad: bool = True
) -> np.ndarray:
    """Window sum of the zero-padded input (float64) divided by ``KH * KW`` (padding included,
    Flax's default) or by the number of taps inside x (``count_include_pad=False``; 0 / 0 = NaN
    for a window entirely in the padding)."""
    kh, kw = window
    strides = (1, 1) if strides is None else tuple(strides)
    oh, ow = _out_hw(x, kh, kw, strides, (1, 1), pads)
    xp = _pad_crop(np.asarray(x, np.float64), pads)
    ones = _pad_crop(np.ones(x.shape[:3] + (1,)), pads)
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    n = np.zeros((x.shape[0], oh, ow, 1))
    for (_, _, v), (_, _, o) in zip(
        _taps(xp, kh, kw, strides, (1, 1), oh, ow),
        _taps(ones, kh, kw, strides, (1, 1), oh, ow),
        strict=True,
    ):
        y += v
        n += o
    with np.errstate(invalid="ignore", divide="ignore"):
        y = y / (kh * kw) if count_include_pad else y / n
    return y.astype(np.float32)


def global_avg_pool2d(x: np.ndarray, *, keepdims: bool = False) -> np.ndarray:
    """Mean over (H, W) in float64."""
    return np.asarray(x, np.float64).mean(axis=(1, 2), keepdims=keepdims).astype(np.float32)
