"""Packed low-bit matmul and int8 x int8 matmul against their NumPy twins."""

import numpy as np
import pytest

import jaxcompress_kernels as jk
from jaxcompress_kernels import reference
from tests.kernels._helpers import random_codes as _weight
from tests.kernels._helpers import rel_close as _rel_close

BATCHES = (0, 1, 3, 7, 37)


@pytest.mark.parametrize("bits", (2, 3, 4, 8))
@pytest.mark.parametrize(
    "k,n,group_size",
    [(1, 1, None), (37, 5, None), (64, 17, 32), (96, 3, 8), (0, 4, None), (40, 0, None)],
)
@pytest.mark.parametrize("affine", (False, True))
def test_qmatmul_matches_twin(bits, k, n, group_size, affine):
    rng = np.random.default_rng(bits * 7 + k + n)
    codes, scales, zps = _weight(rng, bits, k, n, group_size, affine)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=group_size)
    c2, s2, z2 = jk.unpack_weight(w)
    np.testing.assert_array_equal(c2, codes)
    np.testing.assert_array_equal(s2, scales)
    if affine:
        np.testing.assert_array_equal(z2, zps)
    else:
        assert z2 is None
    bias = rng.standard_normal(n).astype(np.float32)
    for m in BATCHES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        _rel_close(jk.qmatmul(x, w, bias), reference.qmatmul(x, w, bias))
    x1 = rng.standard_normal(k).astype(np.float32)
    y1 = jk.qmatmul(x1, w)
    assert y1.shape == (n,)
    _rel_close(y1, reference.qmatmul(x1[None], w)[0])


def test_qmatmul_dense_formula_exact_values():
    # W = scale * code: [[0.5 * 1], [0.5 * -2]]; x = [1, 1] -> -0.5 exactly
    w = jk.pack_weight(np.array([[1], [-2]], np.int8), np.array([0.5], np.float32), bits=4)
    np.testing.assert_array_equal(jk.qmatmul(np.ones((1, 2), np.float32), w), [[-0.5]])
    np.testing.assert_array_equal(jk.to_dense(w), np.array([[0.5], [-1.0]], np.float32))


def test_qmatmul_group_scales_apply_to_their_group():
    k, n, gs = 64, 2, 32
    codes = np.ones((k, n), np.int8)
    scales = np.array([[1.0, 2.0], [10.0, 20.0]], np.float32)
    w = jk.pack_weight(codes, scales, bits=4, group_size=gs)
    x = np.zeros((1, k), np.float32)
    x[0, 40] = 1.0  # second group
    np.testing.assert_array_equal(jk.qmatmul(x, w), [[10.0, 20.0]])


def test_int8_matmul_and_requant_exact():
    rng = np.random.default_rng(0)
    for k, n, m in [(1, 1, 1), (70, 9, 4), (33, 16, 0), (129, 3, 11)]:
        w = jk.int8_weight(rng.integers(-128, 128, (k, n)).astype(np.int8))
        x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        bias = rng.integers(-5000, 5000, n).astype(np.int32)
        for zp in (0, 3, -128):
            acc = jk.qmatmul_int8(x, w, bias, x_zero_point=zp)
            assert acc.dtype == np.int32
            np.testing.assert_array_equal(acc, reference.qmatmul_int8(x, w, bias, x_zero_point=zp))
            want = (x.astype(np.int64) - zp) @ jk.to_dense(w).astype(np.int64) + bias
            np.testing.assert_array_equal(acc, want)
            rq = jk.requantization(rng.random(n) * 2e-3, out_zero_point=-7)
            y = jk.qmatmul_int8(x, w, bias, x_zero_point=zp, requant=rq)
            assert y.dtype == np.int8
            np.testing.assert_array_equal(
                y, reference.qmatmul_int8(x, w, bias, x_zero_point=zp, requant=rq)
            )


def test_requantization_multiplier_approximates_real():
    real = np.array([0.75, 1e-3, 0.3, 2.5, 0.0])
    rq = jk.requantization(real)
    approx = rq.multiplier.astype(np.float64) * 2.0 ** (-31 - rq.shift.astype(np.float64))
    np.testing.assert_allclose(approx, real, rtol=2**-30)
    assert ((rq.multiplier[:-1] >= 2**30) & (rq.multiplier[:-1] < 2**31)).all()
    # fixed-point result equals round-half-up of acc * real for exact dyadic multipliers
    w = jk.int8_weight(np.eye(4, dtype=np.int8))
    x = np.array([[3, -3, 5, 100]], np.int8)
    rq = jk.requantization(np.full(4, 0.5))
    np.testing.assert_array_equal(jk.qmatmul_int8(x, w, requant=rq), [[2, -1, 3, 50]])
    rq = jk.requantization(np.full(4, 4.0))  # saturates
    np.testing.assert_array_equal(jk.qmatmul_int8(x, w, requant=rq), [[12, -12, 20, 127]])


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize(
    "k,n,group_size",
    [
        (64, 64, 32),
        (96, 127, 8),
        (256, 129, 32),
        (200, 300, None),
        (1000, 130, None),
        (96, 130, 48),  # sub-blocks of 16
        (72, 128, 24),  # sub-blocks of 8
        (64, 128, 16),
    ],
)
@pytest.mark.parametrize("affine", (False, True))
def test_qmatmul_batch1_lanes_layout(bits, k, n, group_size, affine):
    # batch 1 of 4- and 8-bit weights runs on the load-time "lanes" layout (output channels in
    # blocks of LANE_BLOCK, N padded): partial last blocks, several blocks, per-channel and
    # per-group scales must all match the twin, and the layout must hold the same codes.
    rng = np.random.default_rng(bits + k + n)
    codes, scales, zps = _weight(rng, bits, k, n, group_size, affine)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=group_size)
    d, s, zs = w.lanes
    assert zs.shape[0] == (d.shape[0] if affine else 0)
    cb = jk.formats.LANE_BLOCK
    nb = -(-n // cb)
    assert d.shape[0] == nb and s.shape[0] == nb and s.shape[2] == cb
    g = w.group_len
    u = d.reshape(nb, w.padded_k // g, g, -1).astype(np.int16)
    if bits == 4:
        u = np.concatenate([u & 15, u >> 4], axis=3)
    else:
        u = u + 128
    u = u.transpose(1, 2, 0, 3).reshape(w.padded_k, nb * cb)[:k, :n]
    half = 1 << (bits - 1)
    expect = codes.astype(np.int16) if affine else codes.astype(np.int16) + half
    np.testing.assert_array_equal(u, expect)
    assert not s.reshape(nb, -1, cb).transpose(0, 2, 1).reshape(nb * cb, -1)[n:].any()
    bias = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal((1, k)) + 3.0).astype(np.float32)  # large sums of x: cancellation
    _rel_close(jk.qmatmul(x, w, bias), reference.qmatmul(x, w, bias))
    _rel_close(jk.qmatmul(x[0], w), reference.qmatmul(x, w)[0])


def test_qmatmul_lanes_only_for_4_and_8_bits_and_wide_layers():
    rng = np.random.default_rng(0)
    for bits in (2, 3):
        codes, scales, _ = _weight(rng, bits, 64, 80, 32, False)
        assert jk.pack_weight(codes, scales, bits=bits, group_size=32).lanes is None
    for bits in (4, 8):
        codes, scales, _ = _weight(rng, bits, 64, 63, 32, False)
        assert jk.pack_weight(codes, scales, bits=bits, group_size=32).lanes is None
        codes, scales, _ = _weight(rng, bits, 64, 64, 32, False)
        assert jk.pack_weight(codes, scales, bits=bits, group_size=32).lanes is not None


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize(
    # K = 1001: padded per-channel group (sub-blocks of 8 k's); 48: sub-blocks of 16; groups 8/32
    "k,n,group_size",
    [(1001, 200, None), (48, 64, None), (64, 130, 8), (128, 257, 32)],
)
@pytest.mark.parametrize("affine", (False, True))
def test_qmatmul_lanes_small_batches_and_threads(bits, k, n, group_size, affine):
    # batches 1..4 run the lanes tiles one row (M = 1) or two rows per pass (M >= 2, odd M ends
    # on a single row); every row must match the twin and its own batch-1 result, and the result
    # must not depend on the thread count (each block of channels is summed by one thread).
    import numba

    rng = np.random.default_rng(bits + k + n + affine)
    codes, scales, zps = _weight(rng, bits, k, n, group_size, affine)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=group_size)
    assert w.lanes is not None
    bias = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal((4, k)) + 1.0).astype(np.float32)
    for compute in ("float32", "int8"):
        single = [jk.qmatmul(x[r], w, bias, compute=compute) for r in range(4)]
        for m in (1, 2, 3, 4):
            y = jk.qmatmul(x[:m], w, bias, compute=compute)
            _rel_close(y, reference.qmatmul(x[:m], w, bias, compute=compute))
            for r in range(m):
                _rel_close(y[r][None], single[r][None], rtol=1e-6)
        threads = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            y1 = jk.qmatmul(x[:3], w, compute=compute)
        finally:
            numba.set_num_threads(threads)
        np.testing.assert_array_equal(y1, jk.qmatmul(x[:3], w, compute=compute))


@pytest.mark.parametrize("affine", (False, True))
def test_qmatmul_lanes_portable_4bit_path(monkeypatch, affine):
    # without AVX-512 the 4-bit float tile widens and converts the nibbles instead of looking them
    # up with vpermps (and subtracts 8 sum(x) for symmetric codes): compile that variant here.
    from numba import njit

    from jaxcompress_kernels import _lanes_tile

    monkeypatch.setattr(_lanes_tile, "_use_permvar", lambda: False)

    @njit
    def run(x, xsum, d, s, zs, o):
        for b in range(d.shape[0]):
            _lanes_tile.lanes_dot(x, 0, xsum, d, s, zs, b, o[b])
            _lanes_tile.lanes_dot2(x, 1, xsum, d, s, zs, b, o[b])

    rng = np.random.default_rng(3)
    k, n = 96, 200
    codes, scales, zps = _weight(rng, 4, k, n, 32, affine)
    w = jk.pack_weight(codes, scales, zps, bits=4, group_size=32)
    d, s, zs = w.lanes
    x = (rng.standard_normal((3, k)) + 2.0).astype(np.float32)
    xsum = x.reshape(3, k // 32, 32).sum(axis=2, dtype=np.float32)
    o = np.zeros((d.shape[0], 3, jk.formats.LANE_BLOCK), np.float32)
    run(x, xsum, d, s, zs, o)
    y = o.transpose(1, 0, 2).reshape(3, -1)[:, :n]
    _rel_close(y, reference.qmatmul(x, w))


# ----------------------------------------------------------------------------------------------
# compute="int8": x rounded per block to int8, integer sums on the lanes layout


@pytest.mark.parametrize("bits", (2, 3, 4, 8))
@pytest.mark.parametrize(
    "k,n,group_size",
    [
        (64, 64, 32),
        (96, 130, 8),
        (256, 129, 32),
        (200, 300, None),
        (64, 17, 16),
        (128, 70, 64),
        (96, 130, 48),  # x blocks of 16 on the lanes layout
        (72, 128, 24),  # x blocks of 8
        (64, 128, 16),
    ],
)
@pytest.mark.parametrize("affine", (False, True))
def test_qmatmul_int8_compute_matches_twin(bits, k, n, group_size, affine):
    rng = np.random.default_rng(bits * 3 + k + n)
    codes, scales, zps = _weight(rng, bits, k, n, group_size, affine)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=group_size)
    bias = rng.standard_normal(n).astype(np.float32)
    for m in (0, 1, 2, 3, 5, 70):  # lanes kernels for small batches, float kernels beyond
        x = (rng.standard_normal((m, k)) + 1.0).astype(np.float32)
        if m:
            x[0, : min(k, 16)] = 0.0  # an all-zero block
        y = jk.qmatmul(x, w, bias, compute="int8")
        _rel_close(y, reference.qmatmul(x, w, bias, compute="int8"))
        # the rounding of x is the only approximation: close to the float result
        yf = reference.qmatmul(x, w, bias)
        if m:
            assert np.abs(y - yf).max() <= 0.05 * np.abs(yf).max()
    x1 = rng.standard_normal(k).astype(np.float32)
    _rel_close(jk.qmatmul(x1, w, compute="int8"), reference.qmatmul(x1[None], w, compute="int8")[0])


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize("code", ("min", "max"))
def test_qmatmul_int8_compute_extreme_sums_are_exact(bits, code):
    # x = +1 everywhere -> every x code is 127; every weight code at one end of its range: the
    # 16-bit partial sums reach +-32512 (4-bit: 32 * 8 * 127) and the uncorrected sums wrap
    # around int16; the result must still be exact (ints times one power-of-two scale here).
    k, n = 256, 128
    half = 1 << (bits - 1)
    c = -half if code == "min" else half - 1
    codes = np.full((k, n), c, np.int8)
    scales = np.full((k // 32, n), 0.5, np.float32)
    w = jk.pack_weight(codes, scales, bits=bits, group_size=32)
    assert w.lanes is not None
    x = np.ones((1, k), np.float32)
    y = jk.qmatmul(x, w, compute="int8")
    np.testing.assert_array_equal(y, np.full((1, n), k * c * 0.5, np.float32))
    x = -np.ones((2, k), np.float32)
    np.testing.assert_array_equal(
        jk.qmatmul(x, w, compute="int8"), np.full((2, n), -k * c * 0.5, np.float32)
    )


def test_quantize_x_int8_twin_by_hand():
    x = np.array([[0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]], np.float32)
    q = reference.quantize_x_int8(x, 8)
    s = np.float32(1.0) / np.float32(127.0)
    expect = np.array([np.rint(0.5 / s), -127, np.rint(0.25 / s)], np.float64) * np.float64(s)
    np.testing.assert_allclose(q[0, :3], expect, rtol=0, atol=0)
    # a block of its own (zero padded): its max maps to code 127
    assert q[0, 8] == 127 * np.float64(np.float32(2.0) / np.float32(127.0))
    assert jk.int8_x_block(32) == 32 and jk.int8_x_block(96) == 32 and jk.int8_x_block(48) == 16
    assert jk.int8_x_block(40) == 8


def test_qmatmul_compute_errors():
    rng = np.random.default_rng(0)
    codes, scales, _ = _weight(rng, 4, 64, 64, 32, False)
    w = jk.pack_weight(codes, scales, bits=4, group_size=32)
    x = np.ones((1, 64), np.float32)
    with pytest.raises(jk.JaxCompressValueError, match="compute"):
        jk.qmatmul(x, w, compute="int4")
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[0, 5] = bad
        with pytest.raises(jk.JaxCompressValueError, match="finite"):
            jk.qmatmul(xb, w, compute="int8")
        assert np.isnan(jk.qmatmul(xb, w)).any() or np.isinf(jk.qmatmul(xb, w)).any()


@pytest.mark.parametrize("bits", (2, 3))
def test_qmatmul_small_batches_independent_of_thread_count(bits):
    # weights without the lanes layout (2/3-bit, or N < 64): batches > 1 must give bit-identical
    # results at 1 and 2 threads (the 4 x 4 channel blocks must not depend on the chunking)
    import numba

    rng = np.random.default_rng(bits)
    codes, scales, zps = _weight(rng, bits, 64, 37, 8, False)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=8)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    old = jk.get_num_threads()
    try:
        ys = []
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            jk.set_num_threads(t)
            ys.append(jk.qmatmul(x, w))
    finally:
        jk.set_num_threads(old)
    np.testing.assert_array_equal(ys[0], ys[-1])
    _rel_close(ys[0], reference.qmatmul(x, w))


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize("m", (1, 2, 5))
def test_qmatmul_inf_in_x_with_zero_points_of_zero(bits, m):
    # affine weights whose zero points are 0: an inf in x must give the twin's inf, not the
    # NaN of 0 * inf in a zero-point term
    k, n = 64, 128
    codes = np.full((k, n), (1 << bits) - 1, np.uint8)
    scales = np.full((k // 32, n), 0.5, np.float32)
    zps = np.zeros((k // 32, n), np.uint8)
    w = jk.pack_weight(codes, scales, zps, bits=bits, group_size=32)
    x = np.ones((m, k), np.float32)
    x[0, 3] = np.inf
    y = jk.qmatmul(x, w)
    yr = reference.qmatmul(x, w)
    assert np.isposinf(yr[0]).all()
    np.testing.assert_array_equal(y[0], yr[0])
    _rel_close(y[1:], yr[1:])
