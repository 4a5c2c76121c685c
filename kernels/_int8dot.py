"""int8 x int8 -> int32 dot products for `qmatmul_int8`, as integer reductions LLVM maps to
``vpmaddwd`` (pairs of int16 products summed into int32 lanes; this LLVM does not fuse them into
VNNI's ``vpdpwssd`` here).

Numba types arithmetic on small integers as int64, which would de-vectorise the loop; writing each
step as ``np.int32(acc + np.int32(a) * np.int32(b))`` keeps it 32 bits wide (the truncation is
exact: every partial sum of ``K <= 65536`` products of int8 values has magnitude at most
``2**30``), and the loop vectoriser then recognises the widening multiply-add. Rows of W are the
reduction axis (``d`` is ``(N, Kp)``); each row is read once from memory and reused from L1 by
every row of x (one reduction per row: sharing a loaded W vector between several rows'
accumulators made LLVM fall back to ``vpmulld``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jaxcompress_kernels._intrinsics import prefetch_l2, wide_vectors

__all__ = ["int8_matmul_kernel"]

_PF_ROWS = 2  # rows of W prefetched ahead (into L2)


@njit(cache=True, nogil=True, inline="always")
def _dot1(x0, wn):
    a0 = np.int32(0)
    for j in range(wn.shape[0]):
        a0 = np.int32(a0 + np.int32(x0[j]) * np.int32(wn[j]))
    return a0


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def int8_matmul_kernel(x, d, col_sums, x_zp, bias, out):
    """out[m, n] = sum_k x[m, k] d[n, k] - x_zp * col_sums[n] + bias[n] (int32; x (M, K) and
    d (N, Kp) int8, C-contiguous, K <= Kp, K <= 65536; the padding of d past K is not read)."""
    mm, kx = x.shape
    nn, kp = d.shape
    dflat = d.reshape(-1)
    for n in prange(nn):
        wide_vectors()
        nxt = (n + _PF_ROWS) * kp
        for q in range(0, kp, 64):
            prefetch_l2(dflat, nxt + q)
        wn = d[n, :kx]
        corr = np.int32(bias[n] - x_zp * col_sums[n])
        for m in range(mm):
            out[m, n] = np.int32(_dot1(x[m], wn) + corr)
