"""Packed low-bit matmul ``y = x @ dequant(W) (+ bias)`` and int8 x int8 -> int32 matmul.

`qmatmul` never materialises a dense float copy of W. Which kernel runs (see docs/kernels.md):

- 4- and 8-bit weights with ``N >= 64`` carry a load-time "lanes" layout (`PackedWeight.lanes`).
  Batches 1-4 run the lanes tile (`_lanes_tile`, LLVM vector IR): 128 output channels per
  block, their accumulators in registers over all of K, codes and scales prefetched into L2.
  Batches above 4 run `_qgemm`: a panel of W decoded once per call into a per-thread L1 buffer,
  then an 8 x 32 register microkernel.
- Other widths (2-, 3-bit) and narrow layers: batch 1 runs a fused decode + dot per output
  channel (SIMD lanes across groups); larger batches decode four output channels at a time into
  a per-thread buffer and run a 4 x 4 register-blocked dot.

``compute="int8"`` rounds x per block to int8 codes first; on the lanes tile the code products
are then summed exactly in 16-/32-bit integer lanes. All paths are parallel regions over output
channels with no BLAS call (no hand-over between thread pools). Extra memory of a call: the
output plus small per-thread buffers (and O(M K) for the permuted / rounded x); never a dense W.

`qmatmul_int8` follows Jacob et al. 2018: int8 activations with a zero point, symmetric int8
weights, int32 accumulation (`_int8dot`, ``vpmaddwd``), an int32 bias, and requantization by a
fixed-point multiplier and a right shift.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange

from jaxcompress_kernels._int8dot import int8_matmul_kernel
from jaxcompress_kernels._int8x import _quantize_x_kernel, _rounded_x, int8_x_block
from jaxcompress_kernels._intrinsics import wide_vectors
from jaxcompress_kernels._lanes_tile import (
    lanes_dot,
    lanes_dot2,
    lanes_dot_int,
    lanes_dot_int2,
    lanes_dot_table,
)
from jaxcompress_kernels._qgemm import qgemm_accumulate
from jaxcompress_kernels._validate import check_array, check_int
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.formats import LANE_BLOCK, Int8Weight, PackedWeight, pack_weight

__all__ = [
    "codebook_matmul",
    "codebook_weight",
    "int8_x_block",
    "qmatmul",
    "qmatmul_int8",
    "Requantization",
    "requantization",
]


_FM = {"reassoc", "contract"}


# ----------------------------------------------------------------------------------------------
# Note on indexing: Numba wraps negative indices, so ``a[off + j]`` with an offset it cannot prove
# non-negative compiles to a select per element and LLVM falls back to gathers. Every hot loop
# below therefore indexes slices (views) with the bare loop counter.


@njit(cache=True, nogil=True, fastmath=_FM)
def _rows_dot4x4(x, w, out, n):
    """out[m, n + c] += dot(x[m], w[c]) for c < 4 and every row m: a 4 x 4 register block
    (8 loads per 16 FMAs), so x is streamed once per 4 output channels."""
    wide_vectors()
    mm = x.shape[0]
    kk = w.shape[1]
    w0 = w[0]
    w1 = w[1]
    w2 = w[2]
    w3 = w[3]
    m = 0
    while m + 4 <= mm:
        x0 = x[m]
        x1 = x[m + 1]
        x2 = x[m + 2]
        x3 = x[m + 3]
        a00 = np.float32(0.0)
        a01 = np.float32(0.0)
        a02 = np.float32(0.0)
        a03 = np.float32(0.0)
        a10 = np.float32(0.0)
        a11 = np.float32(0.0)
        a12 = np.float32(0.0)
        a13 = np.float32(0.0)
        a20 = np.float32(0.0)
        a21 = np.float32(0.0)
        a22 = np.float32(0.0)
        a23 = np.float32(0.0)
        a30 = np.float32(0.0)
        a31 = np.float32(0.0)
        a32 = np.float32(0.0)
        a33 = np.float32(0.0)
        for k in range(kk):
            v0 = w0[k]
            v1 = w1[k]
            v2 = w2[k]
            v3 = w3[k]
            u = x0[k]
            a00 += u * v0
            a01 += u * v1
            a02 += u * v2
            a03 += u * v3
            u = x1[k]
            a10 += u * v0
            a11 += u * v1
            a12 += u * v2
            a13 += u * v3
            u = x2[k]
            a20 += u * v0
            a21 += u * v1
            a22 += u * v2
            a23 += u * v3
            u = x3[k]
            a30 += u * v0
            a31 += u * v1
            a32 += u * v2
            a33 += u * v3
        out[m, n] += a00
        out[m, n + 1] += a01
        out[m, n + 2] += a02
        out[m, n + 3] += a03
        out[m + 1, n] += a10
        out[m + 1, n + 1] += a11
        out[m + 1, n + 2] += a12
        out[m + 1, n + 3] += a13
        out[m + 2, n] += a20
        out[m + 2, n + 1] += a21
        out[m + 2, n + 2] += a22
        out[m + 2, n + 3] += a23
        out[m + 3, n] += a30
        out[m + 3, n + 1] += a31
        out[m + 3, n + 2] += a32
        out[m + 3, n + 3] += a33
        m += 4
    while m < mm:
        x0 = x[m]
        a00 = np.float32(0.0)
        a01 = np.float32(0.0)
        a02 = np.float32(0.0)
        a03 = np.float32(0.0)
        for k in range(kk):
            u = x0[k]
            a00 += u * w0[k]
            a01 += u * w1[k]
            a02 += u * w2[k]
            a03 += u * w3[k]
        out[m, n] += a00
        out[m, n + 1] += a01
        out[m, n + 2] += a02
        out[m, n + 3] += a03
        m += 1


@njit(cache=True, nogil=True, fastmath=_FM)
def _rows_dot(x, w, out, n):
    """out[m, n] += dot(x[m], w) for every row m, four rows at a time (one load of w each)."""
    wide_vectors()
    mm = x.shape[0]
    kk = w.shape[0]
    m = 0
    while m + 4 <= mm:
        x0 = x[m]
        x1 = x[m + 1]
        x2 = x[m + 2]
        x3 = x[m + 3]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for k in range(kk):
            wk = w[k]
            a0 += x0[k] * wk
            a1 += x1[k] * wk
            a2 += x2[k] * wk
            a3 += x3[k] * wk
        out[m, n] += a0
        out[m + 1, n] += a1
        out[m + 2, n] += a2
        out[m + 3, n] += a3
        m += 4
    while m < mm:
        x0 = x[m]
        a0 = np.float32(0.0)
        for k in range(kk):
            a0 += x0[k] * w[k]
        out[m, n] += a0
        m += 1


# ----------------------------------------------------------------------------------------------
# qmatmul kernels
#
# Row n of a PackedWeight is stored as bytes (B, PL, G): byte plane b, position j within the plane,
# group gi (groups innermost; see formats.py). x is permuted once per call to the same order,
# (T, PL, G), with T the x planes each byte decodes to. The batch-1 kernel therefore runs its SIMD
# lanes across *groups*: acc[gi] += sum_t x[t, j, gi] * u_t, for every j, with long contiguous
# loops, no reduction and no scale per group inside the loop; the scales and zero points enter once
# per row: y[n] = sum_gi s[gi] * (acc[gi] - z[gi] * xsum[gi]). Codes are decoded in float
# arithmetic (floor splits), because Numba widens integer ops on bytes to int64, which would
# de-vectorise the loop.


@njit(cache=True, nogil=True, inline="always")
def _split2(f):
    q3 = np.floor(f * np.float32(1.0 / 64.0))
    r = f - np.float32(64.0) * q3
    q2 = np.floor(r * np.float32(1.0 / 16.0))
    r = r - np.float32(16.0) * q2
    q1 = np.floor(r * np.float32(0.25))
    return r - np.float32(4.0) * q1, q1, q2, q3


@njit(cache=True, nogil=True, inline="always")
def _split1(h):
    b7 = np.floor(h * np.float32(1.0 / 128.0))
    r = h - np.float32(128.0) * b7
    b6 = np.floor(r * np.float32(1.0 / 64.0))
    r = r - np.float32(64.0) * b6
    b5 = np.floor(r * np.float32(1.0 / 32.0))
    r = r - np.float32(32.0) * b5
    b4 = np.floor(r * np.float32(1.0 / 16.0))
    r = r - np.float32(16.0) * b4
    b3 = np.floor(r * np.float32(1.0 / 8.0))
    r = r - np.float32(8.0) * b3
    b2 = np.floor(r * np.float32(0.25))
    r = r - np.float32(4.0) * b2
    b1 = np.floor(r * np.float32(0.5))
    return r - np.float32(2.0) * b1, b1, b2, b3, b4, b5, b6, b7


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_row4(xt, d, n, acc):
    pl, ng = d.shape[2], d.shape[3]
    for gi in range(ng):
        acc[gi] = 0.0
    for j in range(pl):
        for gi in range(ng):
            f = np.float32(d[n, 0, j, gi])
            hi = np.floor(f * np.float32(0.0625))
            acc[gi] += xt[0, j, gi] * (f - np.float32(16.0) * hi) + xt[1, j, gi] * hi


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_row8(xt, d, n, acc):
    pl, ng = d.shape[2], d.shape[3]
    for gi in range(ng):
        acc[gi] = 0.0
    for j in range(pl):
        for gi in range(ng):
            acc[gi] += xt[0, j, gi] * np.float32(d[n, 0, j, gi])


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_row2(xt, d, n, acc):
    pl, ng = d.shape[2], d.shape[3]
    for gi in range(ng):
        acc[gi] = 0.0
    for j in range(pl):
        for gi in range(ng):
            q0, q1, q2, q3 = _split2(np.float32(d[n, 0, j, gi]))
            acc[gi] += xt[0, j, gi] * q0 + xt[1, j, gi] * q1 + xt[2, j, gi] * q2 + xt[3, j, gi] * q3


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_row3(xt, d, n, acc):
    # planes b0 (x planes 0, 2, 4, 6), b1 (1, 3, 5, 7), high bits h
    pl, ng = d.shape[2], d.shape[3]
    c4 = np.float32(4.0)
    for gi in range(ng):
        acc[gi] = 0.0
    for j in range(pl):
        for gi in range(ng):
            a0, a2, a4, a6 = _split2(np.float32(d[n, 0, j, gi]))
            a1, a3, a5, a7 = _split2(np.float32(d[n, 1, j, gi]))
            h0, h1, h2, h3, h4, h5, h6, h7 = _split1(np.float32(d[n, 2, j, gi]))
            acc[gi] += (
                xt[0, j, gi] * (a0 + c4 * h0)
                + xt[1, j, gi] * (a1 + c4 * h1)
                + xt[2, j, gi] * (a2 + c4 * h2)
                + xt[3, j, gi] * (a3 + c4 * h3)
                + xt[4, j, gi] * (a4 + c4 * h4)
                + xt[5, j, gi] * (a5 + c4 * h5)
                + xt[6, j, gi] * (a6 + c4 * h6)
                + xt[7, j, gi] * (a7 + c4 * h7)
            )


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_row_few(xt, d, n, acc):
    """As `_codes_dot_row` for few groups (e.g. per-channel, G = 1): reduce along j instead."""
    pl, ng = d.shape[2], d.shape[3]
    nt = xt.shape[0]
    for gi in range(ng):
        t = np.float32(0.0)
        if nt == 2:
            for j in range(pl):
                f = np.float32(d[n, 0, j, gi])
                hi = np.floor(f * np.float32(0.0625))
                t += xt[0, j, gi] * (f - np.float32(16.0) * hi) + xt[1, j, gi] * hi
        elif nt == 1:
            for j in range(pl):
                t += xt[0, j, gi] * np.float32(d[n, 0, j, gi])
        elif nt == 4:
            for j in range(pl):
                q0, q1, q2, q3 = _split2(np.float32(d[n, 0, j, gi]))
                t += xt[0, j, gi] * q0 + xt[1, j, gi] * q1 + xt[2, j, gi] * q2 + xt[3, j, gi] * q3
        else:
            for j in range(pl):
                a0, a2, a4, a6 = _split2(np.float32(d[n, 0, j, gi]))
                a1, a3, a5, a7 = _split2(np.float32(d[n, 1, j, gi]))
                h0, h1, h2, h3, h4, h5, h6, h7 = _split1(np.float32(d[n, 2, j, gi]))
                c4 = np.float32(4.0)
                t += (
                    xt[0, j, gi] * (a0 + c4 * h0)
                    + xt[1, j, gi] * (a1 + c4 * h1)
                    + xt[2, j, gi] * (a2 + c4 * h2)
                    + xt[3, j, gi] * (a3 + c4 * h3)
                    + xt[4, j, gi] * (a4 + c4 * h4)
                    + xt[5, j, gi] * (a5 + c4 * h5)
                    + xt[6, j, gi] * (a6 + c4 * h6)
                    + xt[7, j, gi] * (a7 + c4 * h7)
                )
        acc[gi] = t


@njit(cache=True, nogil=True, fastmath=_FM)
def _codes_dot_pc(xt, d, n):
    """Per-channel (one group): sum_{t, j} xt[t, j] * u[t, j] of channel n, with d (N, B, PL)
    and xt (T, PL) so the plane index is the contiguous one."""
    pl = d.shape[2]
    nt = xt.shape[0]
    t = np.float32(0.0)
    if nt == 2:
        for j in range(pl):
            f = np.float32(d[n, 0, j])
            hi = np.floor(f * np.float32(0.0625))
            t += xt[0, j] * (f - np.float32(16.0) * hi) + xt[1, j] * hi
    elif nt == 1:
        for j in range(pl):
            t += xt[0, j] * np.float32(d[n, 0, j])
    elif nt == 4:
        for j in range(pl):
            q0, q1, q2, q3 = _split2(np.float32(d[n, 0, j]))
            t += xt[0, j] * q0 + xt[1, j] * q1 + xt[2, j] * q2 + xt[3, j] * q3
    else:
        c4 = np.float32(4.0)
        for j in range(pl):
            a0, a2, a4, a6 = _split2(np.float32(d[n, 0, j]))
            a1, a3, a5, a7 = _split2(np.float32(d[n, 1, j]))
            h0, h1, h2, h3, h4, h5, h6, h7 = _split1(np.float32(d[n, 2, j]))
            t += (
                xt[0, j] * (a0 + c4 * h0)
                + xt[1, j] * (a1 + c4 * h1)
                + xt[2, j] * (a2 + c4 * h2)
                + xt[3, j] * (a3 + c4 * h3)
                + xt[4, j] * (a4 + c4 * h4)
                + xt[5, j] * (a5 + c4 * h5)
                + xt[6, j] * (a6 + c4 * h6)
                + xt[7, j] * (a7 + c4 * h7)
            )
    return t


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_gemv_pc_kernel(xt, xsum, d, scales, zps, out):
    """Batch 1, per-channel scales: out[0, n] += s[n] * (sum_k x[k] u[k, n] - z[n] * sum(x))."""
    for n in prange(d.shape[0]):
        wide_vectors()
        out[0, n] += scales[n, 0] * (_codes_dot_pc(xt, d, n) - zps[n, 0] * xsum)


_FEW_GROUPS = 8  # below this many groups per channel, reduce along the group instead


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_gemv_kernel(xt, xsum, d, scales, zps, nchunks, out):
    """Batch 1: out[0, n] += sum_gi s[n,gi] * (sum_{k in gi} x[k] u[k, n] - z[n,gi] xsum[gi])."""
    nn = d.shape[0]
    ng = d.shape[3]
    nt = xt.shape[0]
    per = (nn + nchunks - 1) // nchunks
    for c in prange(nchunks):
        wide_vectors()
        acc = np.empty(ng, np.float32)
        for n in range(c * per, min(nn, (c + 1) * per)):
            if ng < _FEW_GROUPS:
                _codes_dot_row_few(xt, d, n, acc)
            elif nt == 2:
                _codes_dot_row4(xt, d, n, acc)
            elif nt == 1:
                _codes_dot_row8(xt, d, n, acc)
            elif nt == 4:
                _codes_dot_row2(xt, d, n, acc)
            else:
                _codes_dot_row3(xt, d, n, acc)
            t = np.float32(0.0)
            for gi in range(ng):
                t += scales[n, gi] * (acc[gi] - zps[n, gi] * xsum[gi])
            out[0, n] += t


@njit(cache=True, nogil=True, fastmath=_FM)
def _decode_row_few(d, n, scales, zps, w):
    """`_decode_row` for few groups: the vectorised loop runs along the plane."""
    wide_vectors()
    pl, ng = d.shape[2], d.shape[3]
    nt = w.shape[0]
    c4 = np.float32(4.0)
    for gi in range(ng):
        s = scales[n, gi]
        z = zps[n, gi]
        if nt == 2:
            for j in range(pl):
                f = np.float32(d[n, 0, j, gi])
                hi = np.floor(f * np.float32(0.0625))
                w[0, j, gi] = s * (f - np.float32(16.0) * hi - z)
                w[1, j, gi] = s * (hi - z)
        elif nt == 1:
            for j in range(pl):
                w[0, j, gi] = s * (np.float32(d[n, 0, j, gi]) - z)
        elif nt == 4:
            for j in range(pl):
                q0, q1, q2, q3 = _split2(np.float32(d[n, 0, j, gi]))
                w[0, j, gi] = s * (q0 - z)
                w[1, j, gi] = s * (q1 - z)
                w[2, j, gi] = s * (q2 - z)
                w[3, j, gi] = s * (q3 - z)
        else:
            for j in range(pl):
                a0, a2, a4, a6 = _split2(np.float32(d[n, 0, j, gi]))
                a1, a3, a5, a7 = _split2(np.float32(d[n, 1, j, gi]))
                h0, h1, h2, h3, h4, h5, h6, h7 = _split1(np.float32(d[n, 2, j, gi]))
                w[0, j, gi] = s * (a0 + c4 * h0 - z)
                w[1, j, gi] = s * (a1 + c4 * h1 - z)
                w[2, j, gi] = s * (a2 + c4 * h2 - z)
                w[3, j, gi] = s * (a3 + c4 * h3 - z)
                w[4, j, gi] = s * (a4 + c4 * h4 - z)
                w[5, j, gi] = s * (a5 + c4 * h5 - z)
                w[6, j, gi] = s * (a6 + c4 * h6 - z)
                w[7, j, gi] = s * (a7 + c4 * h7 - z)


@njit(cache=True, nogil=True, fastmath=_FM)
def _decode_row(d, n, scales, zps, w):
    """w (T, PL, G) = dequantized output channel n, in the permuted (storage) order."""
    wide_vectors()
    pl, ng = d.shape[2], d.shape[3]
    nt = w.shape[0]
    if ng < _FEW_GROUPS:
        _decode_row_few(d, n, scales, zps, w)
        return
    for j in range(pl):
        if nt == 2:
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                f = np.float32(d[n, 0, j, gi])
                hi = np.floor(f * np.float32(0.0625))
                w[0, j, gi] = s * (f - np.float32(16.0) * hi - z)
                w[1, j, gi] = s * (hi - z)
        elif nt == 1:
            for gi in range(ng):
                w[0, j, gi] = scales[n, gi] * (np.float32(d[n, 0, j, gi]) - zps[n, gi])
        elif nt == 4:
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                q0, q1, q2, q3 = _split2(np.float32(d[n, 0, j, gi]))
                w[0, j, gi] = s * (q0 - z)
                w[1, j, gi] = s * (q1 - z)
                w[2, j, gi] = s * (q2 - z)
                w[3, j, gi] = s * (q3 - z)
        else:
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                a0, a2, a4, a6 = _split2(np.float32(d[n, 0, j, gi]))
                a1, a3, a5, a7 = _split2(np.float32(d[n, 1, j, gi]))
                h0, h1, h2, h3, h4, h5, h6, h7 = _split1(np.float32(d[n, 2, j, gi]))
                c4 = np.float32(4.0)
                w[0, j, gi] = s * (a0 + c4 * h0 - z)
                w[1, j, gi] = s * (a1 + c4 * h1 - z)
                w[2, j, gi] = s * (a2 + c4 * h2 - z)
                w[3, j, gi] = s * (a3 + c4 * h3 - z)
                w[4, j, gi] = s * (a4 + c4 * h4 - z)
                w[5, j, gi] = s * (a5 + c4 * h5 - z)
                w[6, j, gi] = s * (a6 + c4 * h6 - z)
                w[7, j, gi] = s * (a7 + c4 * h7 - z)


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_small_kernel(xp, d, scales, zps, nt, nchunks, out):
    """Batch > 1: decode 4 output channels (permuted order, like xp) into a per-thread buffer,
    then a 4 x 4 register-blocked dot with every row of xp."""
    nn = d.shape[0]
    pl, ng = d.shape[2], d.shape[3]
    kp = xp.shape[1]
    # chunks of a multiple of 4 channels: the same channels take the 4 x 4 path (and the same
    # summation order) whatever the thread count
    per = ((nn + nchunks - 1) // nchunks + 3) // 4 * 4
    for c in prange(nchunks):
        wide_vectors()
        buf = np.empty((4, kp), np.float32)
        n = c * per
        end = min(nn, (c + 1) * per)
        while n + 4 <= end:
            for i in range(4):
                _decode_row(d, n + i, scales, zps, buf[i].reshape((nt, pl, ng)))
            _rows_dot4x4(xp, buf, out, n)
            n += 4
        while n < end:
            _decode_row(d, n, scales, zps, buf[0].reshape((nt, pl, ng)))
            _rows_dot(xp, buf[0], out, n)
            n += 1


# ----------------------------------------------------------------------------------------------
# Small batches on the "lanes" layout (4- and 8-bit, see formats._lanes_layout): one parallel
# task per block of LANE_BLOCK output channels runs the LLVM vector IR tile of _lanes_tile.py over
# all of K (accumulators for the block's 128 channels in registers, codes and scales prefetched
# into L2), one or two rows of x per pass. Everything a call needs besides the output (group sums
# of x, the int8 rounding of x, the bias) is done inside the one kernel call: with the cache
# flushed, each extra NumPy call cost 30-80 us, i.e. 5-10% of a 4096 x 4096 4-bit GEMV.


@njit(cache=True, nogil=True, inline="always")
def _lanes_store(o, bias, b, out):
    """out[:, block b] = o (+ bias): the block's channels, cut at N."""
    n = out.shape[1]
    c0 = b * LANE_BLOCK
    for m in range(o.shape[0]):
        ob = out[m, c0 : min(n, c0 + LANE_BLOCK)]
        om = o[m]
        if bias.shape[0]:
            bb = bias[c0 : c0 + ob.shape[0]]
            for c in range(ob.shape[0]):
                ob[c] = om[c] + bb[c]
        else:
            for c in range(ob.shape[0]):
                ob[c] = om[c]


@njit(cache=True, nogil=True)
def _lanes_pad(x, kp):
    """x (M, K) -> (M, Kp) zero-padded (x itself when K = Kp)."""
    mm, k = x.shape
    if k == kp:
        return x
    xp = np.zeros((mm, kp), np.float32)
    for m in range(mm):
        xp[m, :k] = x[m]
    return xp


@njit(cache=True, nogil=True)
def _lanes_prep(x, d, n):
    """-> (padded x, its group sums (M, G), the output (M, n))."""
    _, ng, g, _ = d.shape
    mm = x.shape[0]
    xp = _lanes_pad(x, ng * g)
    xsum = np.empty((mm, ng), np.float32)
    for m in range(mm):
        for gi in range(ng):
            xg = xp[m, gi * g : (gi + 1) * g]
            t = np.float32(0.0)
            for j in range(g):
                t += xg[j]
            xsum[m, gi] = t
    return xp, xsum, np.empty((mm, n), np.float32)


# Two kernels per compute mode: one row per pass (batch 1), and rows in pairs sharing the decode
# (batches 2..4). A single kernel holding both tiles ran batch 1 ~20% slower with the cache
# flushed (0.82 -> 1.0 ms on 4096 x 4096 4-bit, same instructions in the hot loop).


@njit(cache=True, nogil=True, parallel=True)
def _lanes_kernel(x, d, s, zs, bias, n):
    """x (M, K) float32 -> x @ dequant(W) + bias (M, n) (bias empty: none), one row per pass.
    Padding, the group sums of x and the output are all made here: one kernel call per matmul
    (on a cold cache every extra NumPy call costs tens of microseconds)."""
    xp, xsum, out = _lanes_prep(x, d, n)
    for b in prange(d.shape[0]):
        o = np.zeros((x.shape[0], LANE_BLOCK), np.float32)
        for r in range(x.shape[0]):
            lanes_dot(xp, r, xsum, d, s, zs, b, o)
        _lanes_store(o, bias, b, out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _lanes_kernel_pairs(x, d, s, zs, bias, n):
    """As `_lanes_kernel`, rows in pairs that share each group's decode."""
    xp, xsum, out = _lanes_prep(x, d, n)
    mm = x.shape[0]
    for b in prange(d.shape[0]):
        o = np.zeros((mm, LANE_BLOCK), np.float32)
        for r in range(0, mm - 1, 2):
            lanes_dot2(xp, r, xsum, d, s, zs, b, o)
        if mm % 2:
            lanes_dot(xp, mm - 1, xsum, d, s, zs, b, o)
        _lanes_store(o, bias, b, out)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _lanes_table_kernel(x, d, s, zs, table, bias, n):
    """As `_lanes_kernel` with the 4-bit codes decoded through ``table`` (a 16-entry codebook)."""
    xp, xsum, out = _lanes_prep(x, d, n)
    for b in prange(d.shape[0]):
        o = np.zeros((x.shape[0], LANE_BLOCK), np.float32)
        for r in range(x.shape[0]):
            lanes_dot_table(xp, r, xsum, d, s, zs, b, o, table)
        _lanes_store(o, bias, b, out)
    return out


def codebook_weight(indices: np.ndarray, codebook: np.ndarray):
    """A 4-bit per-tensor codebook weight ``W = codebook[indices]`` prepared for
    `codebook_matmul` (the `qmatmul` lanes layout, codes = indices), or None where the table
    kernel does not run (no AVX-512, more than 16 centroids, a layout without lanes).

    Args:
      indices: ``(K, N)`` integer indices into `codebook`.
      codebook: ``(C,)`` float32, ``C <= 16``.
    """
    from jaxcompress_kernels._lanes_tile import _use_permvar

    check_array("indices", indices, kind="iu", ndim=2, contiguous=False)
    check_array("codebook", codebook, dtype=np.float32, ndim=1)
    c = codebook.shape[0]
    if not (1 <= c <= 16) or not _use_permvar():
        return None
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= c):
        raise JaxCompressValueError(f"indices must lie in 0..{c - 1}")
    k, n = indices.shape
    codes = (np.asarray(indices, np.int16) - 8).astype(np.int8)  # stored nibble u = index
    w = pack_weight(codes, np.ones((1, n), np.float32), bits=4)
    if w.lanes is None:
        return None
    table = np.zeros(16, np.float32)
    table[:c] = codebook
    table.flags.writeable = False
    return w, table


def codebook_matmul(x: np.ndarray, cw, bias: np.ndarray | None = None) -> np.ndarray:
    """``y = x @ codebook[indices] + bias`` for a `codebook_weight`, decoding each 4-bit index
    through the 16-entry table in registers (``vpermps``): no float copy of W, 1/8 of its bytes
    read. Batches of any size (rows one by one, the weight streamed once per row)."""
    w, table = cw
    k, n = w.shape
    _check_x(x, k)
    _check_bias(bias, n)
    squeeze = x.ndim == 1
    x2 = x.reshape(1, -1) if squeeze else x
    d, s, zs = w.lanes
    out = _lanes_table_kernel(x2, d, s, zs, table, _NO_BIAS if bias is None else bias, n)
    return out[0] if squeeze else out


@njit(cache=True, nogil=True, inline="always")
def _gemv1_prep(x1, xp, xsum, g):
    xr = xp[0]
    for i in range(x1.shape[0]):
        xr[i] = x1[i]
    for gi in range(xsum.shape[1]):
        t = np.float32(0.0)
        for j in range(gi * g, (gi + 1) * g):
            t += xr[j]
        xsum[0, gi] = t


@njit(cache=True, nogil=True, inline="always")
def _gemv1_store(o, scale, bias, act, b, out):
    c0 = b * LANE_BLOCK
    for c in range(min(LANE_BLOCK, out.shape[0] - c0)):
        v = o[0, c] * scale[c0 + c] + bias[c0 + c]
        if act != 0 and v < np.float32(0.0):
            v = np.float32(0.0)
        if act == 2 and v > np.float32(6.0):
            v = np.float32(6.0)
        out[c0 + c] = v


@njit(cache=True, nogil=True)
def _lanes_gemv1(x1, xp, xsum, d, s, zs, scale, bias, act, o, out):
    """out = act(x1 @ dequant(W) + bias) for one row on the lanes layout, serial, into buffers
    the caller owns (`bind_lanes_gemv`): xp (1, Kp) zero-padded, xsum (1, G), o (1, LANE_BLOCK);
    act 0 none, 1 relu, 2 relu6."""
    _gemv1_prep(x1, xp, xsum, d.shape[2])
    for b in range(d.shape[0]):
        o[0, :] = 0.0
        lanes_dot(xp, 0, xsum, d, s, zs, b, o)
        _gemv1_store(o, scale, bias, act, b, out)


@njit(cache=True, nogil=True)
def _lanes_gemv1_table(x1, xp, xsum, d, s, zs, table, scale, bias, act, o, out):
    """As `_lanes_gemv1`, the 4-bit codes decoded through ``table`` (a codebook)."""
    _gemv1_prep(x1, xp, xsum, d.shape[2])
    for b in range(d.shape[0]):
        o[0, :] = 0.0
        lanes_dot_table(xp, 0, xsum, d, s, zs, b, o, table)
        _gemv1_store(o, scale, bias, act, b, out)


def bind_lanes_gemv(
    w, x1: np.ndarray, out: np.ndarray, bias=None, act: int = 0, table=None, *, scale=None
):
    """A closure computing ``out[:] = act((x1 @ W) * scale + bias)`` for one row of x on the
    lanes layout (`scale`: optional ``(N,)`` per-channel factor, e.g. a folded batch norm),
    single-threaded, with every buffer allocated here: the batch-1 step of the runtime.

    Args:
      w: a `PackedWeight` with the lanes layout (4- or 8-bit; `qmatmul`'s batch-1 kernel), or
        the ``(PackedWeight, table)`` of `codebook_weight` (then `table` is taken from it).
      x1: ``(K,)`` float32, read on each call; out: ``(N,)`` float32, written on each call.
      bias: ``(N,)`` float32 or None; act: 0 none, 1 relu, 2 relu6.

    Checked once here; the closure does no checks.
    """
    if isinstance(w, tuple):
        w, table = w
    if not isinstance(w, PackedWeight) or w.lanes is None:
        raise JaxCompressValueError("bind_lanes_gemv needs a PackedWeight with the lanes layout")
    k, n = w.shape
    check_array("x1", x1, dtype=np.float32, shape=(k,))
    check_array("out", out, dtype=np.float32, shape=(n,))
    b = np.zeros(n, np.float32) if bias is None else bias
    check_array("bias", b, dtype=np.float32, shape=(n,))
    if act not in (0, 1, 2):
        raise JaxCompressValueError(f"act={act!r} must be 0, 1 or 2")
    sc = np.ones(n, np.float32) if scale is None else scale
    check_array("scale", sc, dtype=np.float32, shape=(n,))
    d, s, zs = w.lanes
    _, ng, g, _ = d.shape
    xp = np.zeros((1, ng * g), np.float32)
    xsum = np.zeros((1, ng), np.float32)
    o = np.zeros((1, LANE_BLOCK), np.float32)
    if table is None:
        return lambda: _lanes_gemv1(x1, xp, xsum, d, s, zs, sc, b, act, o, out)
    check_array("table", table, dtype=np.float32, shape=(16,))
    if w.bits != 4:
        raise JaxCompressValueError(f"a codebook table needs 4-bit codes, got {w.bits}-bit")
    return lambda: _lanes_gemv1_table(x1, xp, xsum, d, s, zs, table, sc, b, act, o, out)


# compute="int8": x is rounded per block by `_int8x` (its comment gives the exact integer-lane
# arithmetic of the kernels below).
@njit(cache=True, nogil=True)
def _lanes_int_prep(x, d, blk, n):
    """x padded and rounded per block of `blk` (`_quantize_x_kernel`) -> (ok, xq, xsq, sx, xs,
    out) with xs (M, G) = sum_blocks sx * xsq per group; ok False on a non-finite x."""
    _, ng, g, _ = d.shape
    mm = x.shape[0]
    kp = ng * g
    nsub = g // blk
    xp = _lanes_pad(x, kp)
    xq = np.empty((mm, kp), np.int16)
    xsq = np.empty((mm, kp // blk), np.int32)
    sx = np.empty((mm, kp // blk), np.float32)
    xs = np.empty((mm, ng), np.float32)
    ok = _quantize_x_kernel(xp, blk, xq, xsq, sx)
    for m in range(mm):
        for gi in range(ng):
            t = np.float32(0.0)
            for sb in range(nsub):
                t += sx[m, gi * nsub + sb] * np.float32(xsq[m, gi * nsub + sb])
            xs[m, gi] = t
    return ok, xq, xsq, sx, xs, np.empty((mm if ok else 0, n), np.float32)


@njit(cache=True, nogil=True, parallel=True)
def _lanes_int_kernel(x, d, s, zs, blk, bias, n):
    """compute="int8" on the lanes layout, one row per pass: x (M, K) float32 is padded and
    rounded here. Returns (False, empty) on a non-finite x, else (True, x @ dequant(W) + bias)."""
    ok, xq, xsq, sx, xs, out = _lanes_int_prep(x, d, blk, n)
    if not ok:
        return False, out
    for b in prange(d.shape[0]):
        o = np.zeros((x.shape[0], LANE_BLOCK), np.float32)
        for r in range(x.shape[0]):
            lanes_dot_int(xq, r, xsq, sx, xs, d, s, zs, blk, b, o)
        _lanes_store(o, bias, b, out)
    return True, out


@njit(cache=True, nogil=True, parallel=True)
def _lanes_int_kernel_pairs(x, d, s, zs, blk, bias, n):
    """As `_lanes_int_kernel`, rows in pairs that share each block's decode."""
    ok, xq, xsq, sx, xs, out = _lanes_int_prep(x, d, blk, n)
    if not ok:
        return False, out
    mm = x.shape[0]
    for b in prange(d.shape[0]):
        o = np.zeros((mm, LANE_BLOCK), np.float32)
        for r in range(0, mm - 1, 2):
            lanes_dot_int2(xq, r, xsq, sx, xs, d, s, zs, blk, b, o)
        if mm % 2:
            lanes_dot_int(xq, mm - 1, xsq, sx, xs, d, s, zs, blk, b, o)
        _lanes_store(o, bias, b, out)
    return True, out


def _qmatmul_lanes(x2, w, bias, compute):
    """qmatmul of 1..4 rows on the lanes layout: one kernel call, which allocates the output."""
    d, s, zs = w.lanes
    b = _NO_BIAS if bias is None else bias
    n = w.shape[1]
    pairs = x2.shape[0] > 1
    if compute == "int8":
        kern = _lanes_int_kernel_pairs if pairs else _lanes_int_kernel
        ok, out = kern(x2, d, s, zs, int8_x_block(w.group_len), b, n)
        if not ok:
            raise JaxCompressValueError('x must be finite for compute="int8"')
        return out
    return (_lanes_kernel_pairs if pairs else _lanes_kernel)(x2, d, s, zs, b, n)


def _layout(w: PackedWeight):
    """-> (data view shape (N, B, PL, G), T): see formats.py."""
    g = w.group_len
    G = w.padded_k // g
    T = {8: 1, 4: 2, 2: 4, 3: 8}[w.bits]
    B = 3 if w.bits == 3 else 1
    return (w.shape[1], B, g // T, G), T


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def _check_x(x, k: int):
    check_array("x", x, dtype=np.float32, ndim=(1, 2))
    if x.shape[-1] != k:
        raise JaxCompressValueError(f"x.shape={x.shape} must end in K={k} (W is (K, N))")


def _check_bias(bias, n: int, dtype=np.float32):
    if bias is not None:
        check_array("bias", bias, dtype=dtype, shape=(n,))


_NO_BIAS = np.zeros(0, np.float32)
_LANES_MAX_M = 4  # batches up to this many rows run on the lanes layout (measured: M = 8 is
# faster on the decode-and-dot kernel)
_COMPUTE = ("float32", "int8")


def qmatmul(
    x: np.ndarray,
    w: PackedWeight,
    bias: np.ndarray | None = None,
    *,
    compute: str = "float32",
) -> np.ndarray:
    """Packed low-bit matmul ``y = x @ dequant(W) + bias``, dequantizing on the fly.

    ``dequant(W)[k, n] = scales[n, g(k)] * (u[k, n] - zero_points[n, g(k)])``. Extra memory: the
    output, O(M K) for the padded / packed / rounded x, and small per-thread buffers (a K-float
    buffer per chunk of output channels, ``M x LANE_BLOCK`` floats per block on the lanes
    layout, one decoded panel per thread above batch 4); never a dense copy of W.

    Args:
      x: ``(M, K)`` or ``(K,)`` float32, C-contiguous.
      w: a `PackedWeight` of logical shape ``(K, N)`` (see `pack_weight`).
      bias: optional ``(N,)`` float32.
      compute: ``"float32"`` (default): x is used as given, accumulation in float32.
        ``"int8"``: x is first rounded to int8 codes per block of ``L = int8_x_block(group_len)``
        values along K (symmetric, ``scale = max|x| / 127``, round half to even), i.e. ``x`` is
        replaced by ``scale * code``; for batches up to 4 on 4- and 8-bit weights with the lanes
        layout the code products are then summed in exact integer arithmetic (the fast path,
        like ONNX Runtime's MatMulNBits ``accuracy_level=4``); every other case runs the float
        kernels on the rounded x, so results agree across paths. Costs about 0.5% relative error (the rounding of x).

    Returns:
      ``(M, N)`` (or ``(N,)``) float32.

    Raises:
      JaxCompressTypeError: wrong types or dtypes.
      JaxCompressValueError: shape mismatch, non-contiguous input, unknown `compute`, or a
        non-finite x with ``compute="int8"``.

    Example:
      >>> w = pack_weight(np.array([[1], [-2]], np.int8), np.array([0.5], np.float32), bits=4)
      >>> qmatmul(np.array([[1.0, 1.0]], np.float32), w)
      array([[-0.5]], dtype=float32)
    """
    if not isinstance(w, PackedWeight):
        raise JaxCompressTypeError(f"w must be a PackedWeight, got {type(w).__name__}")
    if compute not in _COMPUTE:
        raise JaxCompressValueError(f"{compute=} must be one of {_COMPUTE}")
    k, n = w.shape
    _check_x(x, k)
    _check_bias(bias, n)
    squeeze = x.ndim == 1
    x2 = x.reshape(1, -1) if squeeze else x
    m = x2.shape[0]
    if w.lanes is not None and 0 < m <= _LANES_MAX_M:  # 4-/8-bit, small batch: lanes layout
        out = _qmatmul_lanes(x2, w, bias, compute)
        return out[0] if squeeze else out
    kp = w.padded_k
    out = np.zeros((m, n), np.float32)
    if m and n and k:
        if kp != k:
            xp = np.zeros((m, kp), np.float32)
            xp[:, :k] = x2
        else:
            xp = x2
        g = w.group_len
        ng = kp // g
        if compute == "int8":
            # no integer kernel for this weight / batch: the float kernels on the rounded x
            xp = _rounded_x(xp, int8_x_block(g))
        if w.lanes is not None:  # M > _LANES_MAX_M (x already rounded for compute="int8")
            qgemm_accumulate(xp, w, out)
            if bias is not None:
                out += bias
            return out[0] if squeeze else out
        dshape, nt = _layout(w)
        _, _, pl, ng = dshape
        d = w.data.reshape(dshape)
        # x in the storage order: (M, G, T, PL) -> (M, T, PL, G); O(M K), once per call
        xperm = np.ascontiguousarray(xp.reshape(m, ng, nt, pl).transpose(0, 2, 3, 1))
        nchunks = min(n, 8 * _threads())
        if m == 1 and ng == 1:
            xs = np.float32(xp.sum(dtype=np.float32))
            d3 = w.data.reshape(n, dshape[1], pl)
            _qmatmul_gemv_pc_kernel(xperm[0].reshape(nt, pl), xs, d3, w.scales, w.zero_points, out)
        elif m == 1:
            xsum = xp.reshape(ng, nt * pl).sum(axis=1, dtype=np.float32)
            _qmatmul_gemv_kernel(xperm[0], xsum, d, w.scales, w.zero_points, nchunks, out)
        else:
            _qmatmul_small_kernel(
                xperm.reshape(m, kp), d, w.scales, w.zero_points, nt, nchunks, out
            )
    if bias is not None:
        out += bias
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------------------------
# int8 x int8 -> int32 with requantization


@dataclasses.dataclass(frozen=True, eq=False)
class Requantization:
    """Fixed-point requantization of int32 accumulators to int8 (Jacob et al. 2018, eq. 5-6).

    ``y = clamp(out_zero_point + ((acc * multiplier + 2**(r-1)) >> r), -128, 127)`` with
    ``r = 31 + shift``, in exact int64 arithmetic, which approximates
    ``round(acc * real_multiplier)`` where ``real_multiplier ~= multiplier * 2**-(31 + shift)``.

    Departs from gemmlowp (SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, two
    roundings) by rounding once, half up; results can differ by one code on exact ties.

    Attributes:
      multiplier: ``(N,)`` int32 in ``[2**30, 2**31)`` (or 0 for a zero real multiplier).
      shift: ``(N,)`` int32 in ``[-30, 31]`` (right shift applied after the 31-bit one).
      out_zero_point: int in ``[-128, 127]``.
    """

    multiplier: np.ndarray
    shift: np.ndarray
    out_zero_point: int = 0

    def __post_init__(self):
        check_array("multiplier", self.multiplier, dtype=np.int32, ndim=1)
        check_array("shift", self.shift, dtype=np.int32, shape=self.multiplier.shape)
        check_int("out_zero_point", self.out_zero_point, -128, 127)
        if self.multiplier.size:
            if int(self.multiplier.min()) < 0:
                raise JaxCompressValueError("multiplier must be >= 0")
            if int(self.shift.min()) < -30 or int(self.shift.max()) > 31:
                raise JaxCompressValueError("shift must be in -30..31")


def requantization(real_multiplier: np.ndarray, *, out_zero_point: int = 0) -> Requantization:
    """Builds a `Requantization` from real multipliers ``x_scale * w_scale[n] / y_scale``.

    Args:
      real_multiplier: ``(N,)`` (or scalar) float, each in ``[0, 2**30)``; values below
        ``2**-32`` round to 0.
      out_zero_point: the output's zero point in ``[-128, 127]``.
    """
    rm = np.atleast_1d(np.asarray(real_multiplier, dtype=np.float64))
    if rm.ndim != 1:
        raise JaxCompressValueError(f"real_multiplier.ndim={rm.ndim} must be 0 or 1")
    if not np.isfinite(rm).all() or (rm < 0).any() or (rm >= 2.0**30).any():
        raise JaxCompressValueError("real_multiplier must be finite and in [0, 2**30)")
    mant, exp = np.frexp(rm)  # rm = mant * 2**exp, mant in [0.5, 1)
    q = np.round(mant * 2.0**31).astype(np.int64)
    over = q == (1 << 31)
    q[over] //= 2
    exp = exp + over
    shift = -exp.astype(np.int64)
    tiny = (shift > 31) | (rm == 0)
    q[tiny] = 0
    shift[tiny] = 0
    return Requantization(
        multiplier=q.astype(np.int32), shift=shift.astype(np.int32), out_zero_point=out_zero_point
    )


@njit(cache=True, nogil=True, parallel=True)
def _requantize_kernel(acc, mult, shift, zp, out):
    mm, nn = acc.shape
    for m in prange(mm):
        for n in range(nn):
            r = np.int64(31) + np.int64(shift[n])
            v = np.int64(acc[m, n]) * np.int64(mult[n]) + (np.int64(1) << (r - np.int64(1)))
            v = (v >> r) + np.int64(zp)
            if v < -128:
                v = -128
            elif v > 127:
                v = 127
            out[m, n] = np.int8(v)


def qmatmul_int8(
    x: np.ndarray,
    w: Int8Weight,
    bias: np.ndarray | None = None,
    *,
    x_zero_point: int = 0,
    requant: Requantization | None = None,
) -> np.ndarray:
    """Full-integer matmul: ``acc = (x - x_zero_point) @ W + bias`` in int32, optionally
    requantized to int8 (Jacob et al. 2018).

    ``acc[m, n] = sum_k (x[m, k] - x_zero_point) * W[k, n] + bias[n]``; with `requant`, returns
    ``clamp(zy + round_fixed(acc * multiplier[n], 31 + shift[n]), -128, 127)`` as int8.

    Args:
      x: ``(M, K)`` or ``(K,)`` int8, C-contiguous.
      w: an `Int8Weight` (logical ``(K, N)``, K <= 65536).
      bias: optional ``(N,)`` int32 (quantized with scale ``x_scale * w_scale[n]``, zero point 0).
      x_zero_point: int in ``[-128, 127]``.
      requant: optional `Requantization` with ``(N,)`` multipliers.

    Returns:
      ``(M, N)`` int32 accumulators, or int8 when `requant` is given.

    References:
      Jacob et al., "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference", CVPR 2018.
    """
    if not isinstance(w, Int8Weight):
        raise JaxCompressTypeError(f"w must be an Int8Weight, got {type(w).__name__}")
    k, n = w.shape
    check_array("x", x, dtype=np.int8, ndim=(1, 2))
    if x.shape[-1] != k:
        raise JaxCompressValueError(f"x.shape={x.shape} must end in K={k} (W is (K, N))")
    _check_bias(bias, n, np.int32)
    x_zero_point = check_int("x_zero_point", x_zero_point, -128, 127)
    if requant is not None:
        if not isinstance(requant, Requantization):
            raise JaxCompressTypeError(
                f"requant must be a Requantization, got {type(requant).__name__}"
            )
        if requant.multiplier.shape != (n,):
            raise JaxCompressValueError(
                f"requant.multiplier.shape={requant.multiplier.shape} must be ({n},)"
            )
    squeeze = x.ndim == 1
    x2 = x.reshape(1, -1) if squeeze else x
    m = x2.shape[0]
    acc = np.zeros((m, n), np.int32)
    b = bias if bias is not None else np.zeros(n, np.int32)
    if m and n:
        int8_matmul_kernel(x2, w.data, w.col_sums, np.int32(x_zero_point), b, acc)
    if requant is None:
        return acc[0] if squeeze else acc
    out = np.empty((m, n), np.int8)
    if m and n:
        _requantize_kernel(acc, requant.multiplier, requant.shift, requant.out_zero_point, out)
    return out[0] if squeeze else out
