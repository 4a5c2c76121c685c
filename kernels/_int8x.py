"""``compute="int8"``: the per-call rounding of x to int8 codes per block (shared by the lanes
kernels in `quantized` and the panel GEMM in `_qgemm`, which both import it from here)."""

from __future__ import annotations

import numpy as np
from numba import njit

from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = ["int8_x_block"]


# ----------------------------------------------------------------------------------------------
# compute="int8": x is rounded per call to int8 codes per block of L = int8_x_block(g) values
# (symmetric, scale max|x| / 127, round half to even), and the lanes kernels sum code products
# in 16-bit integer lanes (vpmullw / vpaddw), exactly: for 4-bit, sum_k xq (u - 8) over 32 k's is
# at most 32 * 8 * 127 = 32512 in magnitude, and int16 arithmetic is exact modulo 2**16, so
# accumulating xq * u and subtracting 8 * sum(xq) once gives the exact value; for 8-bit (centred
# codes, |u - 128| <= 128), each pair of products fits int16 and is widened to an int32 sum. Each
# block's integer sum is converted to float once and scaled by the block's x scale. Like ONNX
# Runtime's MatMulNBits accuracy_level=4 (int8 activations per block of 32).


def int8_x_block(group_len: int) -> int:
    """Block length of the per-call int8 quantization of x for ``compute="int8"``: the largest
    of 32, 16, 8 dividing the weight's group length (always a multiple of 8)."""
    for blk in (32, 16, 8):
        if group_len % blk == 0:
            return blk
    raise JaxCompressValueError(f"group length {group_len} is not a multiple of 8")


@njit(cache=True, nogil=True)
def _quantize_x_kernel(x, blk, xq, xsq, sx):
    """Per block of `blk` values of each row: sx = max|x| / 127 (0 for an all-zero block),
    xq = clip(rint(x / sx), -127, 127) as int16, xsq = sum(xq). Returns False on a non-finite x."""
    mm, kp = x.shape
    nblk = kp // blk
    ok = True
    for m in range(mm):
        for bl in range(nblk):
            xb = x[m, bl * blk : (bl + 1) * blk]
            a = np.float32(0.0)
            for j in range(blk):
                v = abs(xb[j])
                if not np.isfinite(v):
                    ok = False
                elif v > a:
                    a = v
            qb = xq[m, bl * blk : (bl + 1) * blk]
            sc = a / np.float32(127.0)
            if sc == 0:  # an all-zero block, or a maximum so small its scale underflows
                for j in range(blk):
                    qb[j] = 0
                sx[m, bl] = 0.0
                xsq[m, bl] = 0
                continue
            tot = 0
            for j in range(blk):
                q = np.rint(xb[j] / sc)
                if q > 127.0:
                    q = 127.0
                elif q < -127.0:
                    q = -127.0
                qi = np.int16(q)
                qb[j] = qi
                tot += qi
            sx[m, bl] = sc
            xsq[m, bl] = tot
    return ok


def _quantize_x(xp: np.ndarray, blk: int):
    m, kp = xp.shape
    xq = np.empty((m, kp), np.int16)
    xsq = np.empty((m, kp // blk), np.int32)
    sx = np.empty((m, kp // blk), np.float32)
    if not _quantize_x_kernel(xp, blk, xq, xsq, sx):
        raise JaxCompressValueError('x must be finite for compute="int8"')
    return xq, xsq, sx


def _rounded_x(xp: np.ndarray, blk: int) -> np.ndarray:
    """The ``compute="int8"`` rounding of x as float32 values ``scale * code`` (for the float
    kernels, which have no integer path)."""
    m, kp = xp.shape
    xq, _, sx = _quantize_x(xp, blk)
    return (xq.reshape(m, -1, blk) * sx[:, :, None]).reshape(m, kp).astype(np.float32, copy=False)
