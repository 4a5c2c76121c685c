"""Helpers shared by the kernel tests."""

import numpy as np


def rel_close(y, yr, rtol=1e-5):
    """y is float32 with yr's shape and max |y - yr| <= rtol * max |yr|."""
    assert y.dtype == np.float32 and y.shape == yr.shape
    scale = max(float(np.abs(yr).max()) if yr.size else 0.0, 1e-30)
    assert float(np.abs(y - yr).max() if y.size else 0.0) <= rtol * scale


def random_codes(rng, bits, k, n, group_size, affine):
    """Random (codes, scales, zero_points) for `pack_weight`: signed codes and no zero points
    when symmetric, unsigned codes with random zero points when affine."""
    g = 1 if group_size is None else k // group_size
    scales = (rng.random((g, n)) + 0.1).astype(np.float32)
    if affine:
        codes = rng.integers(0, 1 << bits, (k, n)).astype(np.uint8)
        zps = rng.integers(0, 1 << bits, (g, n)).astype(np.uint8)
    else:
        half = 1 << (bits - 1)
        codes = rng.integers(-half, half, (k, n)).astype(np.int8)
        zps = None
    return codes, scales, zps
