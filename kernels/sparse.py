"""Sparse matmul ``y = x @ W (+ bias)`` for CSR, N:M (2:4, 1:4) and block-sparse (BSR) weights.

All three are parallel over output channels (no write conflicts, no atomics). The containers
(`CSRMatrix`, `NMSparse`, `BSRMatrix`) were validated when built, so the kernels index without
bounds checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jaxcompress_kernels import _nm_gemv
from jaxcompress_kernels._nm_tile import nm_tile_dot, nm_tile_dot4, nm_tile_dot_pair
from jaxcompress_kernels._validate import check_array
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.formats import BSRMatrix, CSRMatrix, NMSparse

__all__ = ["spmm_csr", "spmm_nm", "spmm_bsr"]

_FM = {"reassoc", "contract"}


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


@njit(cache=True, nogil=True, parallel=True)
def _spmm_nm_tiles(x, positions, values, scales, q4, out):
    """Pairs of 16-channel tiles, each dotted with 4 (then 1) rows of x at a time.

    Parallel over tile pairs; rows past the first four re-read the tile from L1/L2, not DRAM.
    Single rows of float32 weights run both tiles in one loop (`nm_tile_dot_pair`).
    """
    ntiles = positions.shape[0]
    mm = x.shape[0]
    for tp in prange((ntiles + 1) // 2):
        t = 2 * tp
        nt = 2 if t + 1 < ntiles else 1
        buf = np.empty((4, 16), np.float32)
        m = 0
        while m < mm:
            if m + 4 <= mm:
                for u in range(nt):
                    nm_tile_dot4(x, m, positions, values, t + u, buf)
                    _nm_store(buf, 4, m, t + u, scales, q4, out)
                m += 4
            else:
                if nt == 2 and not q4:
                    nm_tile_dot_pair(x, m, positions, values, t, buf)
                    _nm_store(buf[0:1], 1, m, t, scales, q4, out)
                    _nm_store(buf[1:2], 1, m, t + 1, scales, q4, out)
                else:
                    for u in range(nt):
                        nm_tile_dot(x, m, positions, values, t + u, buf)
                        _nm_store(buf, 1, m, t + u, scales, q4, out)
                m += 1


@njit(cache=True, nogil=True, inline="always")
def _nm_store(buf, r, m, t, scales, q4, out):
    nout = out.shape[1]
    for lane in range(16):
        c = t * 16 + lane
        if c < nout:
            sc = scales[c] if q4 else np.float32(1.0)
            for i in range(r):
                out[m + i, c] = buf[i, lane] * sc


_G1, _G2, _G3, _G4 = _nm_gemv.GEMVS


@njit(cache=True, nogil=True)
def _spmv_nm24(x1, positions, values, buf, scale, bias, act, out):
    """out = act(x1 @ W + bias) for one row (x1 zero-padded to Kp) of a float32 2:4 `NMSparse`,
    `_nm_gemv` over groups of up to four tiles; act 0 none, 1 relu, 2 relu6."""
    ntiles = positions.shape[0]
    t = 0
    while t < ntiles:
        r = min(ntiles - t, 4)
        if r == 4:
            _G4(x1, positions, values, t, buf[16 * t :])
        elif r == 3:
            _G3(x1, positions, values, t, buf[16 * t :])
        elif r == 2:
            _G2(x1, positions, values, t, buf[16 * t :])
        else:
            _G1(x1, positions, values, t, buf[16 * t :])
        t += r
    for i in range(out.shape[0]):
        v = buf[i] * scale[i] + bias[i]
        if act != 0 and v < np.float32(0.0):
            v = np.float32(0.0)
        if act == 2 and v > np.float32(6.0):
            v = np.float32(6.0)
        out[i] = v


def nm24_gemv_ok(w: NMSparse) -> bool:
    """True if `bind_nm24_gemv` serves `w` here: float32 2:4 values on an AVX-512 host."""
    return w.bits is None and w.n == 2 and w.m == 4 and _nm_gemv.available()


def bind_nm24_gemv(
    w: NMSparse, x1: np.ndarray, out: np.ndarray, bias=None, act: int = 0, *, scale=None
):
    """A closure computing ``out[:] = act((x1 @ W) * scale + bias)`` for one row (`scale`: an
    optional ``(N,)`` per-channel factor, e.g. a folded batch norm): ``x1`` ``(K,)`` and
    ``out`` ``(N,)`` float32 C-contiguous buffers the caller owns (read/written on each call).
    Checked here once (`nm24_gemv_ok` must hold); the closure does no checks."""
    if not nm24_gemv_ok(w):
        raise JaxCompressValueError("bind_nm24_gemv needs float32 2:4 values and an AVX-512 host")
    k, n = w.shape
    check_array("x1", x1, dtype=np.float32, shape=(k,))
    check_array("out", out, dtype=np.float32, shape=(n,))
    b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    check_array("bias", b, dtype=np.float32, shape=(n,))
    if act not in (0, 1, 2):
        raise JaxCompressValueError(f"act={act!r} must be 0, 1 or 2")
    sc = np.ones(n, np.float32) if scale is None else scale
    check_array("scale", sc, dtype=np.float32, shape=(n,))
    kp = w.positions.shape[1] * 8
    buf = np.zeros(w.positions.shape[0] * 16, np.float32)
    pos, vals = w.positions, w.values
    if kp == k:
        return lambda: _spmv_nm24(x1, pos, vals, buf, sc, b, act, out)
    xp = np.zeros(kp, np.float32)
    head = xp[:k]

    def run():
        head[...] = x1
        _spmv_nm24(xp, pos, vals, buf, sc, b, act, out)

    return run


def spmm_nm(x: np.ndarray, w: NMSparse, bias: np.ndarray | None = None) -> np.ndarray:
    """N:M structured-sparse matmul ``y = x @ W + bias`` (2:4 or 1:4; float32 or 4-bit values).

    For 16 output channels at once (one vector of lanes) it selects the x value each kept
    weight multiplies (2-bit position -> one of the group's four x values, by vector selects on
    position bits) and accumulates in registers; a 4-bit value enters as ``code - 8`` and the
    channel scale is applied once at the end. Four rows of x share one pass over a tile, so a
    batch reads W from DRAM once. Never builds a dense copy of W.

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
    if m == 1 and nm24_gemv_ok(w):  # batch 1: the AVX-512 permute GEMV (`_nm_gemv`)
        buf = np.zeros(w.positions.shape[0] * 16, np.float32)
        one, zero = np.ones(n, np.float32), np.zeros(n, np.float32)
        _spmv_nm24(xp[0], w.positions, w.values, buf, one, zero, 0, out[0])
        return _finish(out, bias, squeeze)
    scales = w.scales if q4 else np.ones(1, np.float32)
    _spmm_nm_tiles(xp, w.positions, w.values, scales, q4, out)
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
