"""The batch-1 float32 2:4 GEMV (`_nm_gemv`, AVX-512) against the dense product."""

from __future__ import annotations

import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import JaxCompressValueError
from jaxcompress_kernels.formats import nm_from_dense
from jaxcompress_kernels.sparse import bind_nm24_gemv, nm24_gemv_ok
from tests.kernels._helpers import rel_close


def _w24(rng, k, n):
    w = rng.standard_normal((k, n)).astype(np.float32)
    kp = -(-k // 4) * 4
    g = np.zeros((kp, n), np.float32)
    g[:k] = w
    g = g.reshape(kp // 4, 4, n)
    order = np.argsort(-np.abs(g), axis=1, kind="stable")
    keep = np.zeros(g.shape, bool)
    np.put_along_axis(keep, order[:, :2, :], True, axis=1)
    return np.where(keep, g, 0).reshape(kp, n)[:k].astype(np.float32)


@pytest.mark.parametrize("k, n", [(800, 500), (16, 16), (36, 70), (4, 1), (260, 129), (1024, 64)])
@pytest.mark.parametrize("act", [0, 1, 2])
def test_bound_gemv_matches_dense(k, n, act):
    rng = np.random.default_rng(k * 1000 + n + act)
    w = _w24(rng, k, n)
    nm = nm_from_dense(w, n=2)
    x1 = np.empty(k, np.float32)
    out = np.full(n, np.nan, np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    if not nm24_gemv_ok(nm):  # not an AVX-512 host: refused, and spmm_nm serves batch 1
        with pytest.raises(JaxCompressValueError):
            bind_nm24_gemv(nm, x1, out, bias, act)
        x = rng.standard_normal((1, k)).astype(np.float32)
        rel_close(jk.spmm_nm(x, nm, bias), x @ w + bias)
        return
    run = bind_nm24_gemv(nm, x1, out, bias, act)
    for seed in range(2):  # the closure reads x1 on every call
        x1[...] = np.random.default_rng(seed).standard_normal(k).astype(np.float32)
        run()
        want = x1.astype(np.float64) @ w + bias
        if act:
            want = np.maximum(want, 0)
        if act == 2:
            want = np.minimum(want, 6)
        rel_close(out, want)
    # spmm_nm's batch-1 path is the same kernel
    x = rng.standard_normal((1, k)).astype(np.float32)
    rel_close(jk.spmm_nm(x, nm, bias), x.astype(np.float64) @ w + bias)
    rel_close(jk.spmm_nm(x[0], nm), x[0].astype(np.float64) @ w)


def test_bind_checks_its_buffers():
    nm = nm_from_dense(_w24(np.random.default_rng(0), 32, 20), n=2)
    if not nm24_gemv_ok(nm):
        pytest.raises(
            JaxCompressValueError,
            bind_nm24_gemv,
            nm,
            np.zeros(32, np.float32),
            np.zeros(20, np.float32),
        )
        return
    with pytest.raises(ValueError, match="x1"):
        bind_nm24_gemv(nm, np.zeros(31, np.float32), np.zeros(20, np.float32))
    with pytest.raises(TypeError, match="out"):
        bind_nm24_gemv(nm, np.zeros(32, np.float32), np.zeros(20, np.float64))
    with pytest.raises(JaxCompressValueError, match="act"):
        bind_nm24_gemv(nm, np.zeros(32, np.float32), np.zeros(20, np.float32), act=3)


def test_per_channel_scale():
    rng = np.random.default_rng(9)
    w = _w24(rng, 64, 40)
    nm = nm_from_dense(w, n=2)
    x1 = rng.standard_normal(64).astype(np.float32)
    out = np.empty(40, np.float32)
    scale = rng.uniform(-2, 2, 40).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    if not nm24_gemv_ok(nm):
        return  # refused on this host (test_bind_checks_its_buffers)
    bind_nm24_gemv(nm, x1, out, bias, 1, scale=scale)()
    rel_close(out, np.maximum((x1.astype(np.float64) @ w) * scale + bias, 0))
    with pytest.raises(ValueError, match="scale"):
        bind_nm24_gemv(nm, x1, out, bias, 1, scale=scale[:-1])
