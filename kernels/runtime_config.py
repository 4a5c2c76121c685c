"""Thread control and warm-up for the compiled kernels.

Kernels are compiled with ``cache=True``: the first call in a fresh environment compiles and
writes the machine code next to the sources (``__pycache__``); later processes load it in
milliseconds. `warmup()` calls every kernel once on tiny inputs so no compilation happens inside
a timed region or a latency-sensitive request.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from jaxcompress_kernels._validate import check_int

__all__ = ["set_num_threads", "get_num_threads", "warmup"]


def set_num_threads(n: int) -> None:
    """Sets the number of threads the parallel kernels use (1..`numba.config.NUMBA_NUM_THREADS`).

    Only Numba's pool is changed; the kernels never call BLAS, and NumPy's BLAS (used by dense
    layers elsewhere) keeps its own setting (use threadpoolctl to change it).
    """
    n = check_int("n", n, 1, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    _LAST_SET[0] = n


# the count the last `set_num_threads` set, so that the runtime's hot path can skip
# numba.get_num_threads() (~5 us: it takes a lock); Numba's count is per Python thread
_LAST_SET: list = [None]


def get_num_threads() -> int:
    """Returns the number of threads the parallel kernels use."""
    return numba.get_num_threads()


def warmup() -> float:
    """Compiles (or loads from cache) every kernel by calling it on tiny inputs.

    Returns:
      Seconds spent.
    """
    from jaxcompress_kernels import conv, formats, packing, quantized, sparse

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    big = rng.integers(0, 2, packing._PARALLEL_MIN + 3).astype(np.uint8)
    for bits in range(1, 9):
        for codes in (big[:13], big):
            packing.unpack_bits(packing.pack_bits(codes, bits), bits, codes.shape[0])
    k = 64
    for n in (20, formats.LANE_BLOCK):  # narrow layers and the load-time lanes layout
        for bits in formats.QMATMUL_BITS:
            half = 1 << (bits - 1)
            codes = rng.integers(-half, half, (k, n)).astype(np.int8)
            for gs in (None, 32):
                g = 1 if gs is None else k // gs
                scales = np.ones((g, n), np.float32)
                w = formats.pack_weight(codes, scales, bits=bits, group_size=gs)
                for m in (1, 2, 3, 5):  # lanes tiles (one and two rows per pass), then _qgemm
                    for compute in ("float32", "int8"):
                        quantized.qmatmul(np.ones((m, k), np.float32), w, compute=compute)
    n = 20
    wi = formats.int8_weight(rng.integers(-127, 128, (k, n)).astype(np.int8))
    rq = quantized.requantization(np.full(n, 1e-3))
    quantized.qmatmul_int8(np.ones((2, k), np.int8), wi, requant=rq)
    dense = rng.standard_normal((k, n)).astype(np.float32)
    dense[np.abs(dense) < 1.0] = 0
    codes8 = np.clip(np.round(dense * 10), -127, 127).astype(np.int8)
    csrs = [
        formats.csr_from_dense(dense),
        formats.csr_from_quantized(codes8, np.ones(n, np.float32)),
    ]
    nm = np.zeros((k, n), np.float32)
    nm[::2] = 1.0
    nm4 = np.zeros((k, n), np.int8)
    nm4[::4] = 3
    nms = [
        formats.nm_from_dense(nm, n=2),
        formats.nm_from_quantized(nm4, np.ones(n, np.float32), n=1),
    ]
    bsr = formats.bsr_from_dense(dense, block=(4, 16))
    for m in (1, 5):
        x = np.ones((m, k), np.float32)
        for c in csrs:
            sparse.spmm_csr(x, c)
        for w in nms:
            sparse.spmm_nm(x, w)
        sparse.spmm_bsr(x, bsr)
    # convolutions and pooling: one compiled driver serves every geometry and tile layout
    xc = np.ones((1, 5, 5, 3), np.float32)
    conv.conv2d(xc, np.ones((3, 3, 3, 4), np.float32), pads=((1, 1), (1, 1)))
    conv.depthwise_conv2d(xc, np.ones((3, 3, 1, 3), np.float32))
    conv.max_pool2d(xc, 2)
    conv.avg_pool2d(xc, 2, pads=((1, 0), (0, 0)), count_include_pad=False)
    conv.global_avg_pool2d(xc)
    return time.perf_counter() - t0
