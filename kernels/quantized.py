"""Packed low-bit matmul ``y = x @ dequant(W) (+ bias)`` and int8 x int8 -> int32 matmul.

`qmatmul` never materialises a dense float copy of W. Batch 1 runs a fused decode + dot per
output channel; larger batches decode one output channel at a time into a K-float per-thread
buffer (L1/L2 resident) and dot it with four rows of x at a time. Both are one parallel region
over output channels: no BLAS call, so no hand-over between two thread pools (which, on a loaded
2-core machine, cost more than the matmul). Extra memory: the output plus one K-float buffer per
chunk of output channels.

`qmatmul_int8` follows Jacob et al. 2018: int8 activations with a zero point, symmetric int8
weights, int32 accumulation, an int32 bias, and requantization by a fixed-point multiplier and a
right shift.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange

from jaxcompress_kernels._validate import check_array, check_int
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError
from jaxcompress_kernels.formats import INT8_BLOCK, Int8Weight, PackedWeight

__all__ = [
    "qmatmul",
    "qmatmul_int8",
    "Requantization",
    "requantization",
]


_FM = {"reassoc", "contract"}
_LANE_MAX = 64  # groups with at most this many values per plane use lane accumulators  # float kernels: reorder sums (vectorise); tests allow 1e-5 rel.


# ----------------------------------------------------------------------------------------------
# group decode helpers: code of position k0 + r (r < g) of a group starting at byte offset bo


# Note on indexing: Numba wraps negative indices, so ``a[off + j]`` with an offset it cannot prove
# non-negative compiles to a select per element and LLVM falls back to gathers. Every hot loop
# below therefore indexes slices (views) with the bare loop counter.


@njit(cache=True, nogil=True, fastmath=_FM)
def _rows_dot4x4(x, w, out, n):
    """out[m, n + c] += dot(x[m], w[c]) for c < 4 and every row m: a 4 x 4 register block
    (8 loads per 16 FMAs), so x is streamed once per 4 output channels."""
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


# The wrapper views the packed row of channel n as (G, B, PL) bytes and x as (G, T, PL) floats
# (G groups, B byte planes, T x planes, PL values per plane), so every index is a bare loop counter.
# Short groups (PL <= 64, e.g. 4-bit g32: PL = 16) accumulate into PL SIMD lanes with the group's
# scale applied per group: no horizontal reduction per group. Long groups (per-channel) reduce
# each group in registers and scale once.


@njit(cache=True, nogil=True, fastmath=_FM)
def _gemv4_rows(x3, d4, scales, zps, n0, n1, acc, out):
    ng, _, nl = x3.shape
    for n in range(n0, n1):
        if nl > _LANE_MAX:  # long groups: reduce each group in registers, then scale once
            t = np.float32(0.0)
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                gs = np.float32(0.0)
                for j in range(nl):
                    f = np.float32(d4[n, gi, 0, j])
                    hi = np.floor(f * np.float32(0.0625))
                    lo = f - np.float32(16.0) * hi
                    gs += x3[gi, 0, j] * (lo - z) + x3[gi, 1, j] * (hi - z)
                t += s * gs
            out[0, n] += t
            continue
        for j in range(nl):
            acc[0, j] = 0.0
            acc[1, j] = 0.0
        for gi in range(ng):
            s = scales[n, gi]
            z = zps[n, gi]
            o = gi & 1  # two lane accumulators break the store-to-load chain
            for j in range(nl):
                f = np.float32(d4[n, gi, 0, j])
                hi = np.floor(f * np.float32(0.0625))
                lo = f - np.float32(16.0) * hi
                acc[o, j] += s * (x3[gi, 0, j] * (lo - z) + x3[gi, 1, j] * (hi - z))
        t = np.float32(0.0)
        for j in range(nl):
            t += acc[0, j] + acc[1, j]
        out[0, n] += t


@njit(cache=True, nogil=True, fastmath=_FM)
def _gemv8_rows(x3, d4, scales, zps, n0, n1, acc, out):
    ng, _, nl = x3.shape
    for n in range(n0, n1):
        if nl > _LANE_MAX:  # long groups: reduce each group in registers, then scale once
            t = np.float32(0.0)
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                gs = np.float32(0.0)
                for j in range(nl):
                    gs += (x3[gi, 0, j] * (np.float32(d4[n, gi, 0, j]) - z))
                t += s * gs
            out[0, n] += t
            continue
        for j in range(nl):
            acc[0, j] = 0.0
            acc[1, j] = 0.0
        for gi in range(ng):
            s = scales[n, gi]
            z = zps[n, gi]
            o = gi & 1  # two lane accumulators break the store-to-load chain
            for j in range(nl):
                acc[o, j] += s * (x3[gi, 0, j] * (np.float32(d4[n, gi, 0, j]) - z))
        t = np.float32(0.0)
        for j in range(nl):
            t += acc[0, j] + acc[1, j]
        out[0, n] += t


@njit(cache=True, nogil=True, fastmath=_FM)
def _gemv2_rows(x3, d4, scales, zps, n0, n1, acc, out):
    ng, _, nl = x3.shape
    for n in range(n0, n1):
        if nl > _LANE_MAX:  # long groups: reduce each group in registers, then scale once
            t = np.float32(0.0)
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                gs = np.float32(0.0)
                for j in range(nl):
                    b = d4[n, gi, 0, j]
                    gs += (
                        x3[gi, 0, j] * (np.float32(b & 3) - z)
                        + x3[gi, 1, j] * (np.float32((b >> 2) & 3) - z)
                        + x3[gi, 2, j] * (np.float32((b >> 4) & 3) - z)
                        + x3[gi, 3, j] * (np.float32(b >> 6) - z)
                    )
                t += s * gs
            out[0, n] += t
            continue
        for j in range(nl):
            acc[0, j] = 0.0
            acc[1, j] = 0.0
        for gi in range(ng):
            s = scales[n, gi]
            z = zps[n, gi]
            o = gi & 1  # two lane accumulators break the store-to-load chain
            for j in range(nl):
                b = d4[n, gi, 0, j]
                acc[o, j] += s * (
                    x3[gi, 0, j] * (np.float32(b & 3) - z)
                    + x3[gi, 1, j] * (np.float32((b >> 2) & 3) - z)
                    + x3[gi, 2, j] * (np.float32((b >> 4) & 3) - z)
                    + x3[gi, 3, j] * (np.float32(b >> 6) - z)
                )
        t = np.float32(0.0)
        for j in range(nl):
            t += acc[0, j] + acc[1, j]
        out[0, n] += t


@njit(cache=True, nogil=True, fastmath=_FM)
def _gemv3_rows(x3, d4, scales, zps, n0, n1, acc, out):
    ng, _, nl = x3.shape
    for n in range(n0, n1):
        if nl > _LANE_MAX:  # long groups: reduce each group in registers, then scale once
            t = np.float32(0.0)
            for gi in range(ng):
                s = scales[n, gi]
                z = zps[n, gi]
                gs = np.float32(0.0)
                for j in range(nl):
                    b0 = np.int32(d4[n, gi, 0, j])
                    b1 = np.int32(d4[n, gi, 1, j])
                    h = np.int32(d4[n, gi, 2, j])
                    gs += (
                        x3[gi, 0, j] * (np.float32((b0 & 3) | ((h & 1) << 2)) - z)
                        + x3[gi, 1, j] * (np.float32((b1 & 3) | ((h & 2) << 1)) - z)
                        + x3[gi, 2, j] * (np.float32(((b0 >> 2) & 3) | (h & 4)) - z)
                        + x3[gi, 3, j] * (np.float32(((b1 >> 2) & 3) | ((h >> 1) & 4)) - z)
                        + x3[gi, 4, j] * (np.float32(((b0 >> 4) & 3) | ((h >> 2) & 4)) - z)
                        + x3[gi, 5, j] * (np.float32(((b1 >> 4) & 3) | ((h >> 3) & 4)) - z)
                        + x3[gi, 6, j] * (np.float32((b0 >> 6) | ((h >> 4) & 4)) - z)
                        + x3[gi, 7, j] * (np.float32((b1 >> 6) | ((h >> 5) & 4)) - z)
                    )
                t += s * gs
            out[0, n] += t
            continue
        for j in range(nl):
            acc[0, j] = 0.0
            acc[1, j] = 0.0
        for gi in range(ng):
            s = scales[n, gi]
            z = zps[n, gi]
            o = gi & 1  # two lane accumulators break the store-to-load chain
            for j in range(nl):
                b0 = np.int32(d4[n, gi, 0, j])
                b1 = np.int32(d4[n, gi, 1, j])
                h = np.int32(d4[n, gi, 2, j])
                acc[o, j] += s * (
                    x3[gi, 0, j] * (np.float32((b0 & 3) | ((h & 1) << 2)) - z)
                    + x3[gi, 1, j] * (np.float32((b1 & 3) | ((h & 2) << 1)) - z)
                    + x3[gi, 2, j] * (np.float32(((b0 >> 2) & 3) | (h & 4)) - z)
                    + x3[gi, 3, j] * (np.float32(((b1 >> 2) & 3) | ((h >> 1) & 4)) - z)
                    + x3[gi, 4, j] * (np.float32(((b0 >> 4) & 3) | ((h >> 2) & 4)) - z)
                    + x3[gi, 5, j] * (np.float32(((b1 >> 4) & 3) | ((h >> 3) & 4)) - z)
                    + x3[gi, 6, j] * (np.float32((b0 >> 6) | ((h >> 4) & 4)) - z)
                    + x3[gi, 7, j] * (np.float32((b1 >> 6) | ((h >> 5) & 4)) - z)
                )
        t = np.float32(0.0)
        for j in range(nl):
            t += acc[0, j] + acc[1, j]
        out[0, n] += t


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_gemv_kernel(x3, d4, scales, zps, bits, nchunks, out):
    """Batch 1: out[0, n] += sum_g s[n,g] * sum_{k in g} x[k] (u - z), parallel over channels."""
    nn = d4.shape[0]
    nl = x3.shape[2]
    per = (nn + nchunks - 1) // nchunks
    for c in prange(nchunks):
        acc = np.empty((2, nl), np.float32)
        n0 = c * per
        n1 = min(nn, n0 + per)
        if bits == 4:
            _gemv4_rows(x3, d4, scales, zps, n0, n1, acc, out)
        elif bits == 8:
            _gemv8_rows(x3, d4, scales, zps, n0, n1, acc, out)
        elif bits == 2:
            _gemv2_rows(x3, d4, scales, zps, n0, n1, acc, out)
        else:
            _gemv3_rows(x3, d4, scales, zps, n0, n1, acc, out)


@njit(cache=True, nogil=True, fastmath=_FM)
def _decode_row(d4, n, scales, zps, bits, w3):
    """w3 (G, T, PL) = dequantized channel n."""
    ng, _, nl = w3.shape
    for gi in range(ng):
        s = scales[n, gi]
        z = zps[n, gi]
        if bits == 4:
            for j in range(nl):
                b = d4[n, gi, 0, j]
                w3[gi, 0, j] = s * (np.float32(b & 15) - z)
                w3[gi, 1, j] = s * (np.float32(b >> 4) - z)
        elif bits == 8:
            for j in range(nl):
                w3[gi, 0, j] = s * (np.float32(d4[n, gi, 0, j]) - z)
        elif bits == 2:
            for j in range(nl):
                b = d4[n, gi, 0, j]
                w3[gi, 0, j] = s * (np.float32(b & 3) - z)
                w3[gi, 1, j] = s * (np.float32((b >> 2) & 3) - z)
                w3[gi, 2, j] = s * (np.float32((b >> 4) & 3) - z)
                w3[gi, 3, j] = s * (np.float32(b >> 6) - z)
        else:
            for j in range(nl):
                b0 = np.int32(d4[n, gi, 0, j])
                b1 = np.int32(d4[n, gi, 1, j])
                h = np.int32(d4[n, gi, 2, j])
                w3[gi, 0, j] = s * (np.float32((b0 & 3) | ((h & 1) << 2)) - z)
                w3[gi, 1, j] = s * (np.float32((b1 & 3) | ((h & 2) << 1)) - z)
                w3[gi, 2, j] = s * (np.float32(((b0 >> 2) & 3) | (h & 4)) - z)
                w3[gi, 3, j] = s * (np.float32(((b1 >> 2) & 3) | ((h >> 1) & 4)) - z)
                w3[gi, 4, j] = s * (np.float32(((b0 >> 4) & 3) | ((h >> 2) & 4)) - z)
                w3[gi, 5, j] = s * (np.float32(((b1 >> 4) & 3) | ((h >> 3) & 4)) - z)
                w3[gi, 6, j] = s * (np.float32((b0 >> 6) | ((h >> 4) & 4)) - z)
                w3[gi, 7, j] = s * (np.float32((b1 >> 6) | ((h >> 5) & 4)) - z)


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_small_kernel(x, d4, scales, zps, bits, shape3, nchunks, out):
    """Batch > 1: decode one output channel into a per-thread buffer, then dot every row."""
    nn = d4.shape[0]
    kp = x.shape[1]
    per = (nn + nchunks - 1) // nchunks
    for c in prange(nchunks):
        buf = np.empty((4, kp), np.float32)
        n = c * per
        end = min(nn, (c + 1) * per)
        while n + 4 <= end:
            for i in range(4):
                _decode_row(d4, n + i, scales, zps, bits, buf[i].reshape(shape3))
            _rows_dot4x4(x, buf, out, n)
            n += 4
        while n < end:
            _decode_row(d4, n, scales, zps, bits, buf[0].reshape(shape3))
            _rows_dot(x, buf[0], out, n)
            n += 1


def _lane_views(w: PackedWeight):
    """-> (data view shape (N, G, B, PL), x view shape (G, T, PL)).

    G groups; B byte planes (3 for 3-bit, else 1); T x planes (8 / 4 / 2 / 1 for 3 / 2 / 4 / 8
    bits); PL = group / T bytes per byte plane = x values per x plane.
    """
    bits = w.bits
    g = w.group_len
    G = w.padded_k // g
    T = {8: 1, 4: 2, 2: 4, 3: 8}[bits]
    B = 3 if bits == 3 else 1
    return (w.shape[1], G, B, g // T), (G, T, g // T)


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def _check_x(x, k: int):
    check_array("x", x, dtype=np.float32, ndim=(1, 2))
    if x.shape[-1] != k:
        raise JaxCompressValueError(f"x.shape={x.shape} must end in K={k} (W is (K, N))")
    if x.size and not np.isfinite(x).all():
        pass  # NaN/inf propagate like in BLAS; no error


def _check_bias(bias, n: int, dtype=np.float32):
    if bias is not None:
        check_array("bias", bias, dtype=dtype, shape=(n,))


def qmatmul(x: np.ndarray, w: PackedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """Packed low-bit matmul ``y = x @ dequant(W) + bias``, dequantizing on the fly.

    ``dequant(W)[k, n] = scales[n, g(k)] * (u[k, n] - zero_points[n, g(k)])``; accumulation is in
    float32. Extra memory: the output plus a K-float buffer per chunk of output channels (at most
    8 chunks per thread); never a dense copy of W.

    Args:
      x: ``(M, K)`` or ``(K,)`` float32, C-contiguous.
      w: a `PackedWeight` of logical shape ``(K, N)`` (see `pack_weight`).
      bias: optional ``(N,)`` float32.

    Returns:
      ``(M, N)`` (or ``(N,)``) float32.

    Raises:
      JaxCompressTypeError: wrong types or dtypes.
      JaxCompressValueError: shape mismatch or non-contiguous input.

    Example:
      >>> w = pack_weight(np.array([[1], [-2]], np.int8), np.array([0.5], np.float32), bits=4)
      >>> qmatmul(np.array([[1.0, 1.0]], np.float32), w)
      array([[-0.5]], dtype=float32)
    """
    if not isinstance(w, PackedWeight):
        raise JaxCompressTypeError(f"w must be a PackedWeight, got {type(w).__name__}")
    k, n = w.shape
    _check_x(x, k)
    _check_bias(bias, n)
    squeeze = x.ndim == 1
    x2 = x.reshape(1, -1) if squeeze else x
    m = x2.shape[0]
    kp = w.padded_k
    out = np.zeros((m, n), np.float32)
    if m and n and k:
        if kp != k:
            xp = np.zeros((m, kp), np.float32)
            xp[:, :k] = x2
        else:
            xp = x2
        dshape, xshape = _lane_views(w)
        d4 = w.data.reshape(dshape)
        nchunks = min(n, 8 * _threads())
        if m == 1:
            x3 = xp.reshape(xshape)
            _qmatmul_gemv_kernel(x3, d4, w.scales, w.zero_points, w.bits, nchunks, out)
        else:
            _qmatmul_small_kernel(xp, d4, w.scales, w.zero_points, w.bits, xshape, nchunks, out)
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


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qmatmul_int8_kernel(x3, d3, col_sums, x_zp, bias, out):
    """out[m, n] = sum_k x[m,k] w[n,k] - x_zp * col_sums[n] + bias[n] (int32, exact).

    x3 (M, nb, 256) and d3 (N, nb, 256) are int8. Each block of 256 products (|p| <= 2**14) is
    summed in float32: every partial sum is an integer of magnitude <= 2**22, so it is exact in
    any order, and the loop vectorises (Numba would widen int8 * int8 to int64 multiplies).
    """
    mm = x3.shape[0]
    nn = d3.shape[0]
    nb = d3.shape[1]
    bl = d3.shape[2]
    for n in prange(nn):
        corr = np.int64(bias[n]) - np.int64(x_zp) * np.int64(col_sums[n])
        for m in range(mm):
            acc = np.int64(0)
            for b in range(nb):
                fs = np.float32(0.0)
                for j in range(bl):
                    fs += np.float32(x3[m, b, j]) * np.float32(d3[n, b, j])
                acc += np.int64(fs)
            out[m, n] = np.int32(acc + corr)


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
        kp = w.data.shape[1]
        if kp != k:
            xp = np.zeros((m, kp), np.int8)
            xp[:, :k] = x2
        else:
            xp = x2
        nb = kp // INT8_BLOCK
        _qmatmul_int8_kernel(xp.reshape(m, nb, INT8_BLOCK), w.data.reshape(n, nb, INT8_BLOCK),
                             w.col_sums, np.int32(x_zero_point), b, acc)
    if requant is None:
        return acc[0] if squeeze else acc
    out = np.empty((m, n), np.int8)
    if m and n:
        _requantize_kernel(acc, requant.multiplier, requant.shift, requant.out_zero_point, out)
    return out[0] if squeeze else out
