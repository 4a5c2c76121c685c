"""Sparse matmul ``y = x @ W (+ bias)`` for CSR, N:M (2:4, 1:4) and block-sparse (BSR) weights.

All three are parallel over output channels (no write conflicts, no atomics). The containers
(`CSRMatrix`, `NMSparse`, `BSRMatrix`) were validated when built, so the kernels index without
bounds checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jaxcompress_kernels._validate import check_array
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.formats import NM_LANES, BSRMatrix, CSRMatrix, NMSparse
from jaxcompress_kernels.quantized import _rows_dot4x4

__all__ = ["spmm_csr", "spmm_nm", "spmm_bsr"]

_FM = {"reassoc", "contract"}

# N:M batches below this use the lane kernel (select per row); larger ones decode 16-channel tiles.
NM_LANE_MAX_BATCH = 16


def _prep(x, k: int, n: int, bias):
    check_array("x", x, dtype=np.float32, ndim=(1, 2))
    if x.shape[-1] != k:
        raise JaxCompressValueError(f"x.shape={x.shape} must end in K={k} (W is (K, N))")
    if bias is not None:
        check_array("bias", bias, dtype=np.float32, shape=(n,))
    squeeze = x.ndim == 1
    return (x.reshape(1, -1) if squeeze else x), squeeze


def _finish(out, bias, squeeze):
    if bias is not None:
        out += bias
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------------------------
# CSR


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmv_csr_kernel(x, indptr, indices, values, out):
    xr = x[0]
    nn = indptr.shape[0] - 1
    for n in prange(nn):
        lo = indptr[n]
        hi = indptr[n + 1]
        vs = values[lo:hi]
        ix = indices[lo:hi]
        acc = np.float32(0.0)
        for p in range(hi - lo):
            acc += vs[p] * xr[ix[p]]
        out[0, n] = acc


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmv_csr_q_kernel(x, indptr, indices, values, scales, out):
    xr = x[0]
    nn = indptr.shape[0] - 1
    for n in prange(nn):
        lo = indptr[n]
        hi = indptr[n + 1]
        vs = values[lo:hi]
        ix = indices[lo:hi]
        acc = np.float32(0.0)
        for p in range(hi - lo):
            acc += np.float32(vs[p]) * xr[ix[p]]
        out[0, n] = acc * scales[n]


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmm_csr_kernel(xt, indptr, indices, values, scales, quantized, out_t):
    """out_t[n, :] = sum_p v[p] * xt[indices[p], :]  (xt is x transposed, (K, M))."""
    nn = indptr.shape[0] - 1
    mm = xt.shape[1]
    for n in prange(nn):
        o = out_t[n]
        lo = indptr[n]
        hi = indptr[n + 1]
        vs = values[lo:hi]
        ix = indices[lo:hi]
        for p in range(hi - lo):
            v = np.float32(vs[p])
            xrow = xt[ix[p]]
            for m in range(mm):
                o[m] += v * xrow[m]
        if quantized:
            s = scales[n]
            for m in range(mm):
                o[m] *= s


def spmm_csr(x: np.ndarray, w: CSRMatrix, bias: np.ndarray | None = None) -> np.ndarray:
    """CSR sparse matmul ``y = x @ W + bias``; W float32 or int8 codes x per-channel scales.

    Args:
      x: ``(M, K)`` or ``(K,)`` float32, C-contiguous.
      w: a `CSRMatrix` of logical shape ``(K, N)``.
      bias: optional ``(N,)`` float32.

    Returns:
      ``(M, N)`` (or ``(N,)``) float32.
    """
    if not isinstance(w, CSRMatrix):
        raise JaxCompressTypeError(f"w must be a CSRMatrix, got {type(w).__name__}")
    k, n = w.shape
    x2, squeeze = _prep(x, k, n, bias)
    m = x2.shape[0]
    if m == 0 or n == 0:
        return _finish(np.zeros((m, n), np.float32), bias, squeeze)
    q = w.scales is not None
    if m == 1:
        out = np.empty((1, n), np.float32)
        if q:
            _spmv_csr_q_kernel(x2, w.indptr, w.indices, w.values, w.scales, out)
        else:
            _spmv_csr_kernel(x2, w.indptr, w.indices, w.values, out)
        return _finish(out, bias, squeeze)
    xt = np.ascontiguousarray(x2.T)
    out_t = np.zeros((n, m), np.float32)
    sc = w.scales if q else np.ones(1, np.float32)
    _spmm_csr_kernel(xt, w.indptr, w.indices, w.values, sc, q, out_t)
    return _finish(np.ascontiguousarray(out_t.T), bias, squeeze)


# ----------------------------------------------------------------------------------------------
# N:M


@njit(cache=True, nogil=True, inline="always")
def _sel4(q, x0, x1, x2, x3):
    # q is a float in {0, 1, 2, 3}: compares + blends, which vectorise across lanes
    return x0 if q == 0.0 else (x1 if q == 1.0 else (x2 if q == 2.0 else x3))


@njit(cache=True, nogil=True, inline="always")
def _sel_lo(q, x0, x1, x2):
    # first slot of a 2:4 group: position in {0, 1, 2} (positions strictly increase)
    return x0 if q == 0.0 else (x1 if q == 1.0 else x2)


@njit(cache=True, nogil=True, inline="always")
def _sel_hi(q, x1, x2, x3):
    # second slot of a 2:4 group: position in {1, 2, 3}
    return x1 if q == 1.0 else (x2 if q == 2.0 else x3)


@njit(cache=True, nogil=True, inline="always")
def _split4(pb):
    # a position byte -> its four 2-bit fields as floats. The integer ops are truncated back to
    # uint8 so LLVM keeps them 8-bit wide (Numba would otherwise widen them to int64 and the loop
    # would not vectorise).
    q0 = np.float32(np.uint8(pb & 3))
    q1 = np.float32(np.uint8((pb >> 2) & 3))
    q2 = np.float32(np.uint8((pb >> 4) & 3))
    q3 = np.float32(np.uint8(pb >> 6))
    return q0, q1, q2, q3


@njit(cache=True, nogil=True, inline="always")
def _nibbles(cb):
    lo = np.float32(np.uint8(cb & 15))
    hi = np.float32(np.uint8(cb >> 4))
    return lo - np.float32(8.0), hi - np.float32(8.0)


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmv_nm_kernel(xg, positions, v4, c4, scales, n_keep, q4, out):
    """Small batches, lanes = 16 interleaved output channels.

    positions (T, nq, 16): one byte = the 2-bit positions of 4 consecutive slots.
    v4 (T, nq, 4, 16) float32 values or c4 (T, nq, 2, 16) two 4-bit codes per byte.
    xg (M, nq, 4 // n_keep, 4): the x values of the groups those 4 slots belong to.
    """
    ntiles = positions.shape[0]
    nq = positions.shape[1]
    mm = xg.shape[0]
    nout = out.shape[1]
    for t in prange(ntiles):
        acc = np.zeros((mm, 16), np.float32)
        for qi in range(nq):
            pb = positions[t, qi]
            for m in range(mm):
                am = acc[m]
                if n_keep == 2:
                    a0 = xg[m, qi, 0, 0]
                    a1 = xg[m, qi, 0, 1]
                    a2 = xg[m, qi, 0, 2]
                    a3 = xg[m, qi, 0, 3]
                    b0 = xg[m, qi, 1, 0]
                    b1 = xg[m, qi, 1, 1]
                    b2 = xg[m, qi, 1, 2]
                    b3 = xg[m, qi, 1, 3]
                    for lane in range(16):
                        q0, q1, q2, q3 = _split4(pb[lane])
                        if q4:
                            v0, v1 = _nibbles(c4[t, qi, 0, lane])
                            v2, v3 = _nibbles(c4[t, qi, 1, lane])
                        else:
                            v0 = v4[t, qi, 0, lane]
                            v1 = v4[t, qi, 1, lane]
                            v2 = v4[t, qi, 2, lane]
                            v3 = v4[t, qi, 3, lane]
                        am[lane] += (
                            v0 * _sel_lo(q0, a0, a1, a2)
                            + v1 * _sel_hi(q1, a1, a2, a3)
                            + v2 * _sel_lo(q2, b0, b1, b2)
                            + v3 * _sel_hi(q3, b1, b2, b3)
                        )
                else:
                    xq = xg[m, qi]
                    for lane in range(16):
                        q0, q1, q2, q3 = _split4(pb[lane])
                        if q4:
                            v0, v1 = _nibbles(c4[t, qi, 0, lane])
                            v2, v3 = _nibbles(c4[t, qi, 1, lane])
                        else:
                            v0 = v4[t, qi, 0, lane]
                            v1 = v4[t, qi, 1, lane]
                            v2 = v4[t, qi, 2, lane]
                            v3 = v4[t, qi, 3, lane]
                        am[lane] += (
                            v0 * _sel4(q0, xq[0, 0], xq[0, 1], xq[0, 2], xq[0, 3])
                            + v1 * _sel4(q1, xq[1, 0], xq[1, 1], xq[1, 2], xq[1, 3])
                            + v2 * _sel4(q2, xq[2, 0], xq[2, 1], xq[2, 2], xq[2, 3])
                            + v3 * _sel4(q3, xq[3, 0], xq[3, 1], xq[3, 2], xq[3, 3])
                        )
        for lane in range(16):
            c = t * 16 + lane
            if c < nout:
                sc = scales[c] if q4 else np.float32(1.0)
                for m in range(mm):
                    out[m, c] = acc[m, lane] * sc


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmm_nm_small_kernel(x, positions, values, codes, scales, n_keep, q4, out):
    """Small batches: decode a 16-channel tile to a per-thread buffer, then dot every row."""
    ntiles = positions.shape[0]
    kp = x.shape[1]
    nout = out.shape[1]
    for t in prange(ntiles):
        buf = np.empty((16, kp), np.float32)
        _nm_decode_one(positions, values, codes, scales, n_keep, q4, t, buf)
        if t * 16 + 16 <= nout:
            for q in range(4):
                _rows_dot4x4(x, buf[4 * q : 4 * q + 4], out, t * 16 + 4 * q)
        else:
            for lane in range(16):
                c = t * 16 + lane
                if c < nout:
                    _rows_dot_nm(x, buf[lane], out, c)


@njit(cache=True, nogil=True, fastmath=_FM)
def _nm_decode_one(positions, values, codes, scales, n_keep, q4, t, buf):
    nq = positions.shape[1]
    for lane in range(16):
        r = buf[lane]
        r[:] = 0.0
        sc = scales[t * 16 + lane] if q4 else np.float32(1.0)
        for qi in range(nq):
            pb = positions[t, qi, lane]
            for sub in range(4):
                s = qi * 4 + sub
                g = s // n_keep
                p = (pb >> (2 * sub)) & 3
                if q4:
                    v = sc * (
                        np.float32((codes[t, s >> 1, lane] >> (4 * (s & 1))) & 15) - np.float32(8.0)
                    )
                else:
                    v = values[t, s, lane]
                r[4 * g + p] += v


@njit(cache=True, nogil=True, fastmath=_FM)
def _rows_dot_nm(x, w, out, n):
    mm = x.shape[0]
    kk = w.shape[0]
    m = 0
    while m + 4 <= mm:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for k in range(kk):
            wk = w[k]
            a0 += x[m, k] * wk
            a1 += x[m + 1, k] * wk
            a2 += x[m + 2, k] * wk
            a3 += x[m + 3, k] * wk
        out[m, n] = a0
        out[m + 1, n] = a1
        out[m + 2, n] = a2
        out[m + 3, n] = a3
        m += 4
    while m < mm:
        a0 = np.float32(0.0)
        for k in range(kk):
            a0 += x[m, k] * w[k]
        out[m, n] = a0
        m += 1


def spmm_nm(x: np.ndarray, w: NMSparse, bias: np.ndarray | None = None) -> np.ndarray:
    """N:M structured-sparse matmul ``y = x @ W + bias`` (2:4 or 1:4; float32 or 4-bit values).

    Batch 1 selects, for 16 output channels at once, the x value each kept weight multiplies
    (2-bit position -> one of the group's four x values) and accumulates; larger batches decode
    a 16-channel tile into a per-thread buffer and dot it with every row of x.

    Args:
      x: ``(M, K)`` or ``(K,)`` float32, C-contiguous.
      w: an `NMSparse` of logical shape ``(K, N)``.
      bias: optional ``(N,)`` float32.

    Returns:
      ``(M, N)`` (or ``(N,)``) float32.
    """
    if not isinstance(w, NMSparse):
        raise JaxCompressTypeError(f"w must be an NMSparse, got {type(w).__name__}")
    k, n = w.shape
    x2, squeeze = _prep(x, k, n, bias)
    m = x2.shape[0]
    out = np.zeros((m, n), np.float32)
    if m == 0 or n == 0 or k == 0:
        return _finish(out, bias, squeeze)
    kp = w.positions.shape[1] * 4 // w.n * w.m
    if kp != k:
        xp = np.zeros((m, kp), np.float32)
        xp[:, :k] = x2
    else:
        xp = x2
    q4 = w.bits == 4
    values = w.values if not q4 else np.zeros((1, 1, 1), np.float32)
    codes = w.values if q4 else np.zeros((1, 1, 1), np.uint8)
    scales = w.scales if q4 else np.ones(1, np.float32)
    if m < NM_LANE_MAX_BATCH:
        t, nq, _ = w.positions.shape
        xg = xp.reshape(m, nq, 4 // w.n, 4)
        v4 = (
            values.reshape(t, nq, 4, NM_LANES)
            if not q4
            else np.zeros((1, 1, 4, NM_LANES), np.float32)
        )
        c4 = codes.reshape(t, nq, 2, NM_LANES) if q4 else np.zeros((1, 1, 2, NM_LANES), np.uint8)
        _spmv_nm_kernel(xg, w.positions, v4, c4, scales, w.n, q4, out)
    else:
        _spmm_nm_small_kernel(xp, w.positions, values, codes, scales, w.n, q4, out)
    return _finish(out, bias, squeeze)


# ----------------------------------------------------------------------------------------------
# BSR


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _spmm_bsr_kernel(x3, indptr, indices, blocks, out):
    """out[m, br*r + i] = sum_blocks sum_j blocks[p, i, j] * x3[m, bc, j]  (x3 = x as (M, K/c, c)).

    Each block row accumulates into an (r, c) lane array (no reduction per block), reduced once.
    """
    nbr = indptr.shape[0] - 1
    r = blocks.shape[1]
    c = blocks.shape[2]
    mm = x3.shape[0]
    for br in prange(nbr):
        acc = np.empty((r, c), np.float32)
        lo = indptr[br]
        hi = indptr[br + 1]
        for m in range(mm):
            for i in range(r):
                for j in range(c):
                    acc[i, j] = 0.0
            for p in range(lo, hi):
                xv = x3[m, indices[p]]
                bp = blocks[p]
                for i in range(r):
                    for j in range(c):
                        acc[i, j] += bp[i, j] * xv[j]
            for i in range(r):
                t = np.float32(0.0)
                for j in range(c):
                    t += acc[i, j]
                out[m, br * r + i] = t


def spmm_bsr(x: np.ndarray, w: BSRMatrix, bias: np.ndarray | None = None) -> np.ndarray:
    """Block-sparse matmul ``y = x @ W + bias`` with W a `BSRMatrix` of ``(r, c)`` blocks.

    Args:
      x: ``(M, K)`` or ``(K,)`` float32, C-contiguous.
      w: a `BSRMatrix` of logical shape ``(K, N)``.
      bias: optional ``(N,)`` float32.

    Returns:
      ``(M, N)`` (or ``(N,)``) float32.
    """
    if not isinstance(w, BSRMatrix):
        raise JaxCompressTypeError(f"w must be a BSRMatrix, got {type(w).__name__}")
    k, n = w.shape
    x2, squeeze = _prep(x, k, n, bias)
    m = x2.shape[0]
    out = np.zeros((m, n), np.float32)
    if m and n and k:
        c = w.block[1]
        _spmm_bsr_kernel(x2.reshape(m, k // c, c), w.indptr, w.indices, w.blocks, out)
    return _finish(out, bias, squeeze)
