"""Small Numba kernels the runtime's plan binds into steps: im2col, depthwise conv, max pooling,
codebook (lookup-table) matmul.

They assume valid, C-contiguous input: the runtime's plan validated every shape at load, and the
public wrappers below (`lut_matmul`) validate for other callers.
"""

from __future__ import annotations

import numba
import numpy as np

from jaxcompress_kernels._validate import check_array
from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = ["im2col_nhwc", "depthwise_conv_nhwc", "max_pool2d_into", "lut_matmul"]


@numba.njit(cache=True, nogil=True)
def _im2col_kernel(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):
    """cols[(b, i, j), (u, v, c)] = x[b, i*sh + u*dh - ph, j*sw + v*dw - pw, c] (0 outside)."""
    nb, h, w, c = x.shape
    r = 0
    for b in range(nb):
        for i in range(oh):
            for j in range(ow):
                col = 0
                for u in range(kh):
                    y = i * sh + u * dh - ph
                    for v in range(kw):
                        z = j * sw + v * dw - pw
                        if 0 <= y < h and 0 <= z < w:
                            for ch in range(c):
                                cols[r, col + ch] = x[b, y, z, ch]
                        else:
                            for ch in range(c):
                                cols[r, col + ch] = 0.0
                        col += c
                r += 1


def im2col_nhwc(x, cols, kernel_hw, strides, dilation, pads_lo, out_hw) -> None:
    """im2col of a ``(B, H, W, C)`` float32 array into ``cols`` ``(B*OH*OW, KH*KW*C)`` (C order
    of the kernel's ``(KH, KW, C)``, the reduction order of a Flax conv kernel). Unchecked."""
    _im2col_kernel(
        x, cols, kernel_hw[0], kernel_hw[1], strides[0], strides[1], dilation[0], dilation[1],
        pads_lo[0], pads_lo[1], out_hw[0], out_hw[1],
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _depthwise_kernel(x, w, bias, out, sh, sw, dh, dw, ph, pw, mult, act):
    """out[b, i, j, c*mult + m] = sum_{u,v} x[b, y, z, c] * w[u, v, 0, c*mult + m] (+ bias, act)."""
    nb, h, wd, cin = x.shape
    _, oh, ow, cout = out.shape
    kh, kw = w.shape[0], w.shape[1]
    acc = np.empty(cout, np.float32)
    for b in range(nb):
        for i in range(oh):
            for j in range(ow):
                for o in range(cout):
                    acc[o] = bias[o]
                for u in range(kh):
                    y = i * sh + u * dh - ph
                    if y < 0 or y >= h:
                        continue
                    for v in range(kw):
                        z = j * sw + v * dw - pw
                        if z < 0 or z >= wd:
                            continue
                        for o in range(cout):
                            acc[o] += x[b, y, z, o // mult] * w[u, v, 0, o]
                for o in range(cout):
                    a = acc[o]
                    if act >= 1 and a < 0.0:
                        a = 0.0
                    if act == 2 and a > 6.0:
                        a = 6.0
                    out[b, i, j, o] = a


def depthwise_conv_nhwc(x, w, bias, out, strides, dilation, pads_lo, act: int) -> None:
    """Depthwise conv (``groups == C_in``): x ``(B, H, W, C)``, w ``(KH, KW, 1, C * mult)``,
    bias ``(C * mult,)`` (zeros for none), act 0 none / 1 ReLU / 2 ReLU6. Unchecked."""
    mult = w.shape[3] // x.shape[3]
    _depthwise_kernel(
        x, w, bias, out, strides[0], strides[1], dilation[0], dilation[1], pads_lo[0], pads_lo[1],
        mult, act,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _max_pool_kernel(x, out, kh, kw, sh, sw):
    nb, _, _, c = x.shape
    _, oh, ow, _ = out.shape
    for b in range(nb):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    out[b, i, j, ch] = x[b, i * sh, j * sw, ch]
                for u in range(kh):
                    for v in range(kw):
                        if u == 0 and v == 0:
                            continue
                        y = i * sh + u
                        z = j * sw + v
                        for ch in range(c):
                            t = x[b, y, z, ch]
                            # NaN propagates as in lax.max
                            if t > out[b, i, j, ch] or t != t:
                                out[b, i, j, ch] = t


def max_pool2d_into(x, out, kh: int, kw: int, sh: int, sw: int) -> None:
    """Valid (unpadded) max pooling of ``(B, H, W, C)`` float32 into ``out``. Unchecked."""
    _max_pool_kernel(x, out, kh, kw, sh, sw)


@numba.njit(cache=True, nogil=True)
def _lut_kernel(x, idx_t, table, bias, out):
    m, k = x.shape
    n = idx_t.shape[0]
    row = np.empty(k, np.float32)
    for j in range(n):
        for t in range(k):  # decode one output channel through the table, then dot
            row[t] = table[idx_t[j, t]]
        for i in range(m):
            acc = np.float32(0.0)
            for t in range(k):
                acc += x[i, t] * row[t]
            out[i, j] = acc + bias[j]


def lut_matmul(x, idx_t, table, bias=None) -> np.ndarray:
    """Codebook matmul ``y = x @ table[idx_t.T] + bias`` without a float copy of W.

    Args:
      x: ``(M, K)`` float32, C-contiguous.
      idx_t: ``(N, K)`` uint8 codebook indices (channel-major), each ``< len(table)``.
      table: ``(C,)`` float32 codebook.
      bias: optional ``(N,)`` float32.

    Returns:
      ``(M, N)`` float32.
    """
    check_array("x", x, dtype=np.float32, ndim=2)
    check_array("idx_t", idx_t, dtype=np.uint8, ndim=2)
    check_array("table", table, dtype=np.float32, ndim=1)
    n, k = idx_t.shape
    if x.shape[1] != k:
        raise JaxCompressValueError(f"x.shape={x.shape} does not match K={k} of idx_t")
    if idx_t.size and int(idx_t.max()) >= table.shape[0]:
        raise JaxCompressValueError("idx_t holds an index outside the table")
    if bias is None:
        bias = np.zeros(n, np.float32)
    else:
        check_array("bias", bias, dtype=np.float32, shape=(n,))
    out = np.empty((x.shape[0], n), np.float32)
    _lut_kernel(x, idx_t, table, bias, out)
    return out


def lut_matmul_unchecked(x, idx_t, table, bias) -> np.ndarray:
    """`lut_matmul` for the runtime's plan (indices validated once at load)."""
    n = idx_t.shape[0]
    out = np.empty((x.shape[0], n), np.float32)
    _lut_kernel(x, idx_t, table, np.zeros(n, np.float32) if bias is None else bias, out)
    return out
