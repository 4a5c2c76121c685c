"""Codebook (weight-sharing) matmuls through a lookup table, against a float64 NumPy twin."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels import JaxCompressValueError
from jaxcompress_kernels._graph_kernels import lut_matmul
from jaxcompress_kernels._lanes_tile import _use_permvar
from jaxcompress_kernels.quantized import codebook_matmul, codebook_weight


def _twin(x, idx, cb, bias):
    y = x.astype(np.float64) @ cb.astype(np.float64)[idx]
    return (y if bias is None else y + bias).astype(np.float32)


def _close(y, ref):
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    assert float(np.max(np.abs(y - ref))) <= 1e-5 * scale


@pytest.mark.parametrize("k, n, m", [(800, 500, 1), (100, 300, 2), (37, 130, 5), (16, 64, 3)])
@pytest.mark.parametrize("c", [2, 5, 16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_codebook_matmul_matches_twin(k, n, m, c, with_bias):
    rng = np.random.default_rng(k + n + c)
    idx = rng.integers(0, c, (k, n))
    cb = rng.standard_normal(c).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    cw = codebook_weight(idx, cb)
    if not _use_permvar():  # no AVX-512: the table kernel declines; lut_matmul runs instead
        assert cw is None
    else:
        assert cw is not None
        _close(codebook_matmul(x, cw, bias), _twin(x, idx, cb, bias))
    idx_t = np.ascontiguousarray(idx.T.astype(np.uint8))
    _close(lut_matmul(x, idx_t, cb, bias), _twin(x, idx, cb, bias))


def test_codebook_weight_declines_and_validates():
    rng = np.random.default_rng(0)
    assert codebook_weight(rng.integers(0, 4, (32, 8)), np.ones(4, np.float32)) is None  # narrow
    assert codebook_weight(rng.integers(0, 4, (32, 128)), np.ones(17, np.float32)) is None
    if _use_permvar():
        with pytest.raises(JaxCompressValueError, match="indices"):
            codebook_weight(np.full((32, 128), 4), np.ones(4, np.float32))
    with pytest.raises(JaxCompressValueError, match="table"):
        lut_matmul(
            np.ones((1, 8), np.float32), np.full((4, 8), 9, np.uint8), np.ones(4, np.float32)
        )
