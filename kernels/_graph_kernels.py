"""Small Numba kernels the runtime's plan binds into steps: im2col (a compressed conv weight's own
kernel runs on the im2col rows) and the codebook (lookup-table) matmul.

They assume valid, C-contiguous input: the runtime's plan validated every shape at load, and the
public wrappers below (`lut_matmul`) validate for other callers.
"""

from __future__ import annotations

import numba
import numpy as np

from jaxcompress_kernels._validate import check_array
from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = ["im2col_nhwc", "lut_matmul", "add_relu"]


@numba.njit(cache=True, nogil=True)
def _im2col_kernel(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):
    """cols[(b, i, j), (u, v, c)] = x[b, i*sh + u*dh - ph, j*sw + v*dw - pw, c] (0 outside).

    A window row that lies inside x with ``dw == 1`` is one contiguous run of ``kw * C`` floats
    (copied in one vectorised loop); other rows go tap by tap."""
    nb, h, w, c = x.shape
    xf = x.reshape(nb * h * w * c)
    seg = kw * c
    r = 0
    for b in range(nb):
        for i in range(oh):
            for j in range(ow):
                z0 = j * sw - pw
                row_in = dw == 1 and z0 >= 0 and z0 + kw <= w
                for u in range(kh):
                    y = i * sh + u * dh - ph
                    col = u * seg
                    if y < 0 or y >= h:
                        for t in range(seg):
                            cols[r, col + t] = 0.0
                    elif row_in:
                        base = ((b * h + y) * w + z0) * c
                        for t in range(seg):
                            cols[r, col + t] = xf[base + t]
                    else:
                        for v in range(kw):
                            z = z0 + v * dw
                            if 0 <= z < w:
                                base = ((b * h + y) * w + z) * c
                                for ch in range(c):
                                    cols[r, col + v * c + ch] = xf[base + ch]
                            else:
                                for ch in range(c):
                                    cols[r, col + v * c + ch] = 0.0
                r += 1


@numba.njit(cache=True, nogil=True)
def _im2col_t_kernel(x, cols_t, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):
    """cols_t[(u, v, c), (b, i, j)]: the transposed im2col (pixels contiguous per tap), the
    layout a sparse kernel streams with one vector over the pixels per nonzero weight."""
    nb, h, w, c = x.shape
    npix = nb * oh * ow
    for b in range(nb):
        for i in range(oh):
            for j in range(ow):
                r = (b * oh + i) * ow + j
                for u in range(kh):
                    y = i * sh + u * dh - ph
                    for v in range(kw):
                        z = j * sw + v * dw - pw
                        base = (u * kw + v) * c
                        if 0 <= y < h and 0 <= z < w:
                            for ch in range(c):
                                cols_t[base + ch, r] = x[b, y, z, ch]
                        else:
                            for ch in range(c):
                                cols_t[base + ch, r] = 0.0
    return npix


def im2col_t_nhwc(x, cols_t, kernel_hw, strides, dilation, pads_lo, out_hw) -> None:
    """`im2col_nhwc` transposed: ``cols_t`` is ``(KH*KW*C, B*OH*OW)``. Unchecked."""
    _im2col_t_kernel(
        x, cols_t, kernel_hw[0], kernel_hw[1], strides[0], strides[1], dilation[0], dilation[1],
        pads_lo[0], pads_lo[1], out_hw[0], out_hw[1],
    )  # fmt: skip


def im2col_nhwc(x, cols, kernel_hw, strides, dilation, pads_lo, out_hw) -> None:
    """im2col of a ``(B, H, W, C)`` float32 array into ``cols`` ``(B*OH*OW, KH*KW*C)`` (C order
    of the kernel's ``(KH, KW, C)``, the reduction order of a Flax conv kernel). Unchecked."""
    _im2col_kernel(
        x, cols, kernel_hw[0], kernel_hw[1], strides[0], strides[1], dilation[0], dilation[1],
        pads_lo[0], pads_lo[1], out_hw[0], out_hw[1],
    )  # fmt: skip


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


@numba.njit(cache=True, nogil=True)
def _add_relu_kernel(a, b, out):
    for i in range(a.size):
        v = a[i] + b[i]
        out[i] = v if v > 0.0 or v != v else np.float32(0.0)


def add_relu(a, b, out) -> None:
    """``out = max(a + b, 0)`` (NaN propagates, as ``lax.max``) for same-shape C-contiguous
    float32 arrays (a residual connection). Unchecked."""
    _add_relu_kernel(a.reshape(-1), b.reshape(-1), out.reshape(-1))


@numba.njit(cache=True, nogil=True)
def _bias_act_kernel(y, bias, act):
    m, n = y.shape
    for i in range(m):
        for j in range(n):
            v = y[i, j] + bias[j]
            if act >= 1 and v < 0.0:
                v = np.float32(0.0)
            if act == 2 and v > 6.0:
                v = np.float32(6.0)
            y[i, j] = v


def bias_act(y, bias, act: int) -> None:
    """In place ``y = act(y + bias)``: y ``(M, N)`` float32 C-contiguous, bias ``(N,)``, act 0
    none / 1 ReLU / 2 ReLU6 (NaN passes through, as ``lax.max``). Unchecked: one call for the
    epilogue of a BLAS matmul instead of two NumPy ufunc calls."""
    _bias_act_kernel(y, bias, act)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _chain_layer(src, wt, b, act, dst):
    """dst[j] = act(b[j] + sum_k src[k] * wt[j, k]) (one dense layer, W transposed): four
    outputs per pass share each load of src (four independent vectorised reductions)."""
    n, k = wt.shape
    j = 0
    while j + 4 <= n:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for kk in range(k):
            s = src[kk]
            a0 += s * wt[j, kk]
            a1 += s * wt[j + 1, kk]
            a2 += s * wt[j + 2, kk]
            a3 += s * wt[j + 3, kk]
        dst[j] = a0 + b[j]
        dst[j + 1] = a1 + b[j + 1]
        dst[j + 2] = a2 + b[j + 2]
        dst[j + 3] = a3 + b[j + 3]
        j += 4
    while j < n:
        acc = np.float32(0.0)
        for kk in range(k):
            acc += src[kk] * wt[j, kk]
        dst[j] = acc + b[j]
        j += 1
    if act >= 1:
        for j in range(n):
            v = dst[j]
            if v < 0.0:
                v = np.float32(0.0)
            if act == 2 and v > 6.0:
                v = np.float32(6.0)
            dst[j] = v


@numba.njit(cache=True, nogil=True)
def _mlp_chain_kernel(x, ws, bs, acts, buf, out):
    nl = len(ws)
    for m in range(x.shape[0]):
        for li in range(nl):
            if li == 0:
                src = x[m]
            else:
                src = buf[(li - 1) % 2]
            if li == nl - 1:
                _chain_layer(src, ws[li], bs[li], acts[li], out[m])
            else:
                _chain_layer(src, ws[li], bs[li], acts[li], buf[li % 2])


def mlp_chain(layers, x2, y2):
    """A closure running dense layers ``[(W (K, N) float32, bias (N,) | None, act 0/1/2)]`` from
    ``x2`` ``(M, K_0)`` into ``y2`` ``(M, N_last)`` in one compiled call: each layer a dot
    product per output over ``W^T`` rows, intermediate rows in a two-row buffer. The runtime
    fuses runs of small float linear steps with it (one dispatch instead of one per layer, no
    separate epilogue) when it measures it faster."""
    ws = tuple(np.ascontiguousarray(w.T, np.float32) for w, _, _ in layers)
    bs = tuple(
        np.zeros(w.shape[1], np.float32) if b is None else np.ascontiguousarray(b, np.float32)
        for w, b, _ in layers
    )
    acts = np.array([a for _, _, a in layers], np.int64)
    buf = np.zeros((2, max(w.shape[0] for w in ws)), np.float32)
    return lambda: _mlp_chain_kernel(x2, ws, bs, acts, buf, y2)
