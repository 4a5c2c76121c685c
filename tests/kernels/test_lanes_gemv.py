"""`bind_lanes_gemv`: the runtime's batch-1 step on the lanes layout equals `qmatmul` /
`codebook_matmul` (same kernel tile), with bias and activation fused."""

from __future__ import annotations

import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import JaxCompressValueError
from jaxcompress_kernels.formats import pack_weight
from jaxcompress_kernels.quantized import bind_lanes_gemv, codebook_matmul, codebook_weight
from tests.kernels._helpers import random_codes, rel_close


def _act(y, act):
    if act:
        y = np.maximum(y, 0)
    return np.minimum(y, 6) if act == 2 else y


@pytest.mark.parametrize(
    "bits, k, n, group_size, affine",
    [(4, 800, 500, None, False), (4, 96, 130, 32, False), (4, 64, 10, 32, True),
     (8, 200, 129, None, False), (8, 128, 40, 64, True), (4, 30, 7, None, False)],
)  # fmt: skip
@pytest.mark.parametrize("act", [0, 1, 2])
def test_matches_qmatmul(bits, k, n, group_size, affine, act):
    rng = np.random.default_rng(bits * 7 + k + n + act)
    codes, scales, zps = random_codes(rng, bits, k, n, group_size, affine)
    w = pack_weight(codes, scales, zps, bits=bits, group_size=group_size)
    if w.lanes is None:
        with pytest.raises(JaxCompressValueError):
            bind_lanes_gemv(w, np.zeros(k, np.float32), np.zeros(n, np.float32))
        return
    bias = rng.standard_normal(n).astype(np.float32)
    x1 = np.empty(k, np.float32)
    out = np.full(n, np.nan, np.float32)
    run = bind_lanes_gemv(w, x1, out, bias, act)
    for seed in range(2):  # the closure reads x1 on every call
        x1[...] = np.random.default_rng(seed).standard_normal(k).astype(np.float32)
        run()
        want = _act(jk.qmatmul(x1[None], w, bias)[0], act)
        rel_close(out, want, 1e-6)


@pytest.mark.parametrize("act", [0, 1])
def test_codebook_table(act):
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 16, (100, 70))
    cb = np.sort(rng.standard_normal(16)).astype(np.float32)
    cw = codebook_weight(idx, cb)
    if cw is None:  # no AVX-512 here: codebook_matmul's table kernel does not exist
        return
    x1 = rng.standard_normal(100).astype(np.float32)
    out = np.empty(70, np.float32)
    bind_lanes_gemv(cw, x1, out, None, act)()
    rel_close(out, _act(codebook_matmul(x1[None], cw)[0], act), 1e-6)
    rel_close(out, _act(x1.astype(np.float64) @ cb[idx], act), 1e-5)


def test_checks_once():
    rng = np.random.default_rng(0)
    codes, scales, zps = random_codes(rng, 4, 800, 500, None, False)
    w = pack_weight(codes, scales, zps, bits=4)
    if w.lanes is None:  # no lanes layout on this host: nothing to bind
        pytest.raises(
            JaxCompressValueError,
            bind_lanes_gemv,
            w,
            np.zeros(800, np.float32),
            np.zeros(500, np.float32),
        )
        return
    with pytest.raises(ValueError, match="x1"):
        bind_lanes_gemv(w, np.zeros(799, np.float32), np.zeros(500, np.float32))
    with pytest.raises(ValueError, match="out"):
        bind_lanes_gemv(w, np.zeros(800, np.float32), np.zeros(501, np.float32))
    with pytest.raises(JaxCompressValueError, match="act"):
        bind_lanes_gemv(w, np.zeros(800, np.float32), np.zeros(500, np.float32), act=5)
    with pytest.raises(JaxCompressValueError):
        bind_lanes_gemv("w", np.zeros(800, np.float32), np.zeros(500, np.float32))


def test_per_channel_scale():
    rng = np.random.default_rng(4)
    codes, scales, zps = random_codes(rng, 4, 800, 500, None, False)
    w = pack_weight(codes, scales, zps, bits=4)
    if w.lanes is None:
        return  # no lanes layout on this host (test_checks_once)
    x1 = rng.standard_normal(800).astype(np.float32)
    out = np.empty(500, np.float32)
    scale = rng.uniform(-2, 2, 500).astype(np.float32)
    bias = rng.standard_normal(500).astype(np.float32)
    bind_lanes_gemv(w, x1, out, bias, 2, scale=scale)()
    want = np.clip(jk.qmatmul(x1[None], w)[0].astype(np.float64) * scale + bias, 0, 6)
    rel_close(out, want, 1e-6)
    with pytest.raises(ValueError, match="scale"):
        bind_lanes_gemv(w, x1, out, bias, scale=np.ones(499, np.float32))
