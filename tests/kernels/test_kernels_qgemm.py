"""The batch > 4 packed low-bit GEMM (`_qgemm.qgemm_accumulate`) against the NumPy twin."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress_kernels as jk
from jaxcompress_kernels import reference
from jaxcompress_kernels._qgemm import MR, qgemm_accumulate, qgemm_supported
from jaxcompress_kernels.errors import JaxCompressValueError
from tests.kernels._helpers import random_codes
from tests.kernels._helpers import rel_close as _rel_close


def _weight(rng, bits, k, n, group_size, affine):
    codes, scales, zps = random_codes(rng, bits, k, n, group_size, affine)
    return jk.pack_weight(codes, scales, zps, bits=bits, group_size=group_size)


def _run(x, w, compute="float32", kc=None, init=None):
    m, k = x.shape
    xp = np.zeros((m, w.padded_k), np.float32)
    xp[:, :k] = x
    out = np.zeros((m, w.shape[1]), np.float32) if init is None else init.copy()
    if kc is None:
        qgemm_accumulate(xp, w, out, compute)
    else:
        qgemm_accumulate(xp, w, out, compute, kc)
    return out


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize("affine", (False, True))
@pytest.mark.parametrize(
    "k,n,group_size", [(96, 128, 32), (37, 200, None), (64, 64, 8), (256, 300, 128)]
)
def test_qgemm_matches_twin(bits, affine, k, n, group_size):
    rng = np.random.default_rng(bits + 3 * k + n + affine)
    w = _weight(rng, bits, k, n, group_size, affine)
    assert qgemm_supported(w)
    for m in (1, 5, MR, MR + 1, 2 * MR + 3):
        x = rng.standard_normal((m, k)).astype(np.float32)
        for kc in (None, 1, 24, 1000):
            _rel_close(_run(x, w, kc=kc), reference.qmatmul(x, w))


@pytest.mark.parametrize("bits", (4, 8))
def test_qgemm_accumulates_into_out(bits):
    rng = np.random.default_rng(1)
    w = _weight(rng, bits, 64, 130, 32, True)
    x = rng.standard_normal((11, 64)).astype(np.float32)
    bias = rng.standard_normal((11, 130)).astype(np.float32)
    y = _run(x, w, init=bias)
    yr = reference.qmatmul(x, w).astype(np.float64) + bias
    _rel_close(y, yr.astype(np.float32))


@pytest.mark.parametrize("bits", (4, 8))
def test_qgemm_int8_compute_matches_twin(bits):
    rng = np.random.default_rng(2)
    w = _weight(rng, bits, 128, 192, 32, False)
    x = rng.standard_normal((13, 128)).astype(np.float32)
    y = _run(x, w, compute="int8")
    _rel_close(y, reference.qmatmul(x, w, compute="int8"))
    # the rounding of x is visible: differs from the float path beyond 1e-5
    yf = reference.qmatmul(x, w)
    assert np.abs(y - yf).max() > 1e-5 * np.abs(yf).max()
    with pytest.raises(JaxCompressValueError, match="finite"):
        _run(np.full((6, 128), np.nan, np.float32), w, compute="int8")
    with pytest.raises(JaxCompressValueError, match="compute"):
        _run(x, w, compute="int4")


def test_qgemm_thread_count_independent():
    rng = np.random.default_rng(3)
    w = _weight(rng, 4, 512, 1000, 32, True)
    x = rng.standard_normal((21, 512)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        ys = []
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(t)
            ys.append(_run(x, w))
    finally:
        numba.set_num_threads(before)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    _rel_close(ys[0], reference.qmatmul(x, w))


def test_qgemm_empty_batch_and_unsupported_weights():
    rng = np.random.default_rng(4)
    w = _weight(rng, 4, 64, 128, 32, False)
    out = _run(np.zeros((0, 64), np.float32), w)
    assert out.shape == (0, 128)
    with pytest.raises(JaxCompressValueError, match="kc"):
        _run(np.ones((5, 64), np.float32), w, kc=0)
    assert not qgemm_supported(_weight(rng, 2, 64, 128, 32, False))  # no lanes layout
    assert not qgemm_supported(_weight(rng, 4, 64, 16, 32, False))  # too narrow


@settings(max_examples=30, deadline=None)
@given(
    bits=st.sampled_from((4, 8)),
    k=st.integers(1, 90),
    n=st.integers(64, 300),
    m=st.integers(5, 40),
    affine=st.booleans(),
    kc=st.integers(1, 80),
    seed=st.integers(0, 2**31 - 1),
)
def test_qgemm_random_shapes(bits, k, n, m, affine, kc, seed):
    rng = np.random.default_rng(seed)
    w = _weight(rng, bits, k, n, None, affine)
    x = rng.standard_normal((m, k)).astype(np.float32)
    _rel_close(_run(x, w, kc=kc), reference.qmatmul(x, w))


@pytest.mark.parametrize("bits", (4, 8))
@pytest.mark.parametrize("k,n,group_size", [(96, 130, 32), (200, 300, None), (64, 64, 8)])
def test_qmatmul_routes_every_batch_size_to_a_matching_kernel(bits, k, n, group_size):
    # through the public qmatmul: lanes tiles (M <= 4), _qgemm (M > 4), with bias, both compute
    # modes, and the 1-D x form
    rng = np.random.default_rng(bits + k + n)
    w = _weight(rng, bits, k, n, group_size, True)
    assert w.lanes is not None
    bias = rng.standard_normal(n).astype(np.float32)
    for m in (1, 2, 4, 5, 9, 33):
        x = rng.standard_normal((m, k)).astype(np.float32)
        for compute in ("float32", "int8"):
            _rel_close(
                jk.qmatmul(x, w, bias, compute=compute),
                reference.qmatmul(x, w, bias, compute=compute),
            )
