"""CSR, N:M and BSR matmul against their NumPy twins; exact format conversions."""

import itertools
import platform
import re

import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import reference

BATCHES = (0, 1, 3, 5, 16, 37)


def _rel_close(y, yr, rtol=1e-5):
    assert y.dtype == np.float32 and y.shape == yr.shape
    scale = max(float(np.abs(yr).max()) if yr.size else 0.0, 1e-30)
    assert float(np.abs(y - yr).max() if y.size else 0.0) <= rtol * scale


def _check_all_batches(fn, twin, w, k, n, rng):
    bias = rng.standard_normal(n).astype(np.float32)
    for m in BATCHES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        _rel_close(fn(x, w, bias), twin(x, w, bias))
        _rel_close(fn(x, w), twin(x, w))
    x1 = rng.standard_normal(k).astype(np.float32)
    y1 = fn(x1, w)
    assert y1.shape == (n,)
    _rel_close(y1, twin(x1[None], w)[0])


def _nm_weight(rng, k, n, keep):
    w = rng.standard_normal((k, n)).astype(np.float32)
    g = w.reshape(k // 4, 4, n)
    drop = np.argsort(np.abs(g), axis=1)[:, : 4 - keep]
    np.put_along_axis(g, drop, 0, axis=1)
    return g.reshape(k, n)


@pytest.mark.parametrize("k,n", [(1, 1), (37, 5), (64, 20), (300, 3), (0, 3), (5, 0)])
@pytest.mark.parametrize("density", (0.0, 0.1, 0.6))
def test_csr_float_and_quantized(k, n, density):
    rng = np.random.default_rng(k * 31 + n)
    d = rng.standard_normal((k, n)).astype(np.float32)
    d[rng.random((k, n)) >= density] = 0
    c = jk.csr_from_dense(d)
    assert c.nnz == int((d != 0).sum())
    assert c.indices.dtype == np.uint16
    np.testing.assert_array_equal(jk.to_dense(c), d)
    _check_all_batches(jk.spmm_csr, reference.spmm_csr, c, k, n, rng)
    codes = np.clip(np.round(d * 20), -127, 127).astype(np.int8)
    scales = (rng.random(n) + 0.5).astype(np.float32)
    cq = jk.csr_from_quantized(codes, scales)
    np.testing.assert_array_equal(jk.to_dense(cq), scales * codes.astype(np.float32))
    _check_all_batches(jk.spmm_csr, reference.spmm_csr, cq, k, n, rng)


def test_csr_mask_keeps_explicit_zeros_and_large_k_uses_int32():
    d = np.array([[0.0, 2.0], [3.0, 0.0]], np.float32)
    mask = np.array([[True, True], [False, False]])
    c = jk.csr_from_dense(d, mask=mask)
    assert c.nnz == 2
    np.testing.assert_array_equal(jk.to_dense(c), [[0.0, 2.0], [0.0, 0.0]])
    big = np.zeros((70000, 1), np.float32)
    big[69999, 0] = 1.5
    cb = jk.csr_from_dense(big)
    assert cb.indices.dtype == np.int32
    x = np.zeros(70000, np.float32)
    x[-1] = 2.0
    np.testing.assert_array_equal(jk.spmm_csr(x, cb), [3.0])


@pytest.mark.parametrize("keep", (1, 2))
@pytest.mark.parametrize("k,n", [(4, 1), (36, 17), (64, 32), (132, 5), (0, 2)])
def test_nm_float_and_4bit(keep, k, n):
    rng = np.random.default_rng(keep * 100 + k + n)
    d = _nm_weight(rng, k, n, keep)
    w = jk.nm_from_dense(d, n=keep)
    np.testing.assert_array_equal(jk.to_dense(w), d)
    _check_all_batches(jk.spmm_nm, reference.spmm_nm, w, k, n, rng)
    codes = np.clip(np.round(d * 3), -8, 7).astype(np.int8)
    scales = (rng.random(n) + 0.5).astype(np.float32)
    wq = jk.nm_from_quantized(codes, scales, n=keep)
    np.testing.assert_array_equal(jk.to_dense(wq), scales * codes.astype(np.float32))
    _check_all_batches(jk.spmm_nm, reference.spmm_nm, wq, k, n, rng)


def test_nm_positions_are_two_bits_per_kept_value():
    rng = np.random.default_rng(0)
    d = _nm_weight(rng, 64, 16, 2)
    w = jk.nm_from_dense(d, n=2)
    kept = 64 // 4 * 2 * 16
    assert w.positions.nbytes * 8 == 2 * kept
    assert w.values.nbytes == 4 * kept
    wq = jk.nm_from_quantized(np.clip(np.round(d), -8, 7).astype(np.int8), np.ones(16, np.float32))
    assert wq.values.nbytes * 8 == 4 * kept


def _all_patterns_weight(keep, k, n):
    """Integer-valued (K, N) n:m weight whose groups cycle through every kept-position pattern
    (including groups keeping fewer than n values), shifted per channel so every lane of every
    tile sees every pattern."""
    pats = [c for c in itertools.product((0, 1), repeat=4) if sum(c) <= keep]
    w = np.zeros((k, n), np.float32)
    for c in range(n):
        for g in range(k // 4):
            pat = pats[(g + c) % len(pats)]
            for j in range(4):
                if pat[j]:
                    w[4 * g + j, c] = float((g * 7 + c * 3 + j) % 13 - 6) or 5.0
    return w


@pytest.mark.parametrize("keep", (1, 2))
@pytest.mark.parametrize("m", (1, 4, 6))
def test_nm_every_position_pattern_is_exact(keep, m):
    # small integers: every product and sum is exact in float32, so equality is required
    k, n = 88, 35
    w = _all_patterns_weight(keep, k, n)
    x = (np.arange(m * k).reshape(m, k) % 11 - 5).astype(np.float32)
    expect = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(jk.spmm_nm(x, jk.nm_from_dense(w, n=keep)), expect)
    codes = np.clip(w, -8, 7).astype(np.int8)
    wq = jk.nm_from_quantized(codes, np.full(n, 2.0, np.float32), n=keep)
    expect_q = (2.0 * (x.astype(np.float64) @ codes.astype(np.float64))).astype(np.float32)
    np.testing.assert_array_equal(jk.spmm_nm(x, wq), expect_q)


def test_nm_long_k_matches_twin():
    # K long enough that the software prefetch runs far ahead of (and past) the weight arrays
    rng = np.random.default_rng(7)
    k, n = 4100, 40
    d = _nm_weight(rng, k, n, 2)
    bias = rng.standard_normal(n).astype(np.float32)
    for w in (
        jk.nm_from_dense(d, n=2),
        jk.nm_from_quantized(
            np.clip(np.round(d * 3), -8, 7).astype(np.int8), np.ones(n, np.float32), n=2
        ),
    ):
        for m in (1, 7):
            x = rng.standard_normal((m, k)).astype(np.float32)
            _rel_close(jk.spmm_nm(x, w, bias), reference.spmm_nm(x, w, bias))


def test_nm_tile_dot_selects_in_vectors_without_gathers():
    from numba import njit

    from jaxcompress_kernels._nm_tile import nm_tile_dot, nm_tile_dot4, nm_tile_dot_pair

    @njit
    def both(x, positions, values, buf, pair):
        nm_tile_dot4(x, 0, positions, values, 0, buf)  # rows 0..3 of tile 0 -> buf[0..3]
        nm_tile_dot(x, 4, positions, values, 1, buf)  # row 4 of tile 1 -> buf[0]
        nm_tile_dot_pair(x, 4, positions, values, 0, pair)  # row 4 of tiles 0, 1 -> pair[0..1]

    rng = np.random.default_rng(3)
    d = _nm_weight(rng, 32, 32, 2)
    x = rng.standard_normal((5, 32)).astype(np.float32)
    codes = np.clip(np.round(d * 3), -8, 7).astype(np.int8)
    for w in (jk.nm_from_dense(d, n=2), jk.nm_from_quantized(codes, np.ones(32, np.float32))):
        buf = np.zeros((4, 16), np.float32)
        pair = np.zeros((2, 16), np.float32)
        both(x, w.positions, w.values, buf, pair)
        y = reference.spmm_nm(x, w)
        _rel_close(buf[1:], y[1:4, :16])
        _rel_close(buf[0], y[4, 16:])
        _rel_close(pair, y[4].reshape(2, 16))
    asms = list(both.inspect_asm().values())
    assert len(asms) == 2  # float32 and 4-bit values
    for asm in asms:
        assert not re.search(r"^\s+\w*gather\w*\s", asm, re.M)  # no gather instruction
        if platform.machine() in ("x86_64", "AMD64"):
            assert re.search(r"prefetcht[12]\s", asm)  # the L2 software prefetch
            assert re.search(r"vfmadd\w*ps\s[^\n]*[yz]mm", asm)  # lanes in one vector FMA
            assert re.search(r"(vblendmps|vblendvps)\s", asm)  # x chosen by vector selects


@pytest.mark.parametrize(
    "k,n,block", [(16, 8, (4, 16)), (48, 6, (2, 8)), (8, 3, (1, 1)), (32, 4, (4, 32))]
)
def test_bsr(k, n, block):
    rng = np.random.default_rng(k + n)
    d = rng.standard_normal((k, n)).astype(np.float32)
    r, c = block
    kb = rng.random((n // r, k // c)) < 0.4
    d *= np.kron(kb, np.ones((r, c))).T.astype(np.float32)
    w = jk.bsr_from_dense(d, block=block)
    assert w.blocks.shape[0] == int(kb.sum())
    np.testing.assert_array_equal(jk.to_dense(w), d)
    _check_all_batches(jk.spmm_bsr, reference.spmm_bsr, w, k, n, rng)


def test_bsr_mask():
    d = np.ones((4, 2), np.float32)
    mask = np.zeros((4, 2), bool)
    mask[0, 0] = True
    w = jk.bsr_from_dense(d, block=(1, 2), mask=mask)
    want = np.zeros((4, 2), np.float32)
    want[0, 0] = 1.0
    np.testing.assert_array_equal(jk.to_dense(w), want)
