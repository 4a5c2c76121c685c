"""The JAX integer reference: exact emulated int64 requantization, and the same outputs as the
NumPy reference (`jaxcompress_kernels.format.quant`) on hand-built full-integer graphs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import quantization
from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.quantization._integer import _add64, _mul64, _round_const, _shift_saturate
from tests.kernels._qgraphs import cnn_graph, mlp_graph, reference_run

I32MIN, I32MAX = -(1 << 31), (1 << 31) - 1


def _python_requantize(acc, m, r):
    v = (int(acc) * int(m) + (1 << (int(r) - 1))) >> int(r)
    return min(max(v, I32MIN), I32MAX)


def _cases():
    rng = np.random.default_rng(0)
    n = 4000
    acc = rng.integers(I32MIN, I32MAX, size=n, endpoint=True, dtype=np.int64)
    acc[: n // 2] = rng.integers(-(1 << 20), 1 << 20, size=n // 2)  # realistic accumulators
    m = rng.integers(1 << 30, 1 << 31, size=n, dtype=np.int64)
    r = rng.integers(1, 63, size=n, dtype=np.int64)
    edges_acc = [I32MIN, I32MIN + 1, -1, 0, 1, I32MAX, I32MAX - 1, 3, -3, 1 << 30, -(1 << 30)]
    edges_m = [1 << 30, (1 << 31) - 1, (1 << 30) + 1]
    edges_r = [1, 2, 31, 32, 33, 61, 62]
    grid = np.array(np.meshgrid(edges_acc, edges_m, edges_r)).reshape(3, -1)
    acc = np.concatenate([acc, grid[0]])
    m = np.concatenate([m, grid[1]])
    r = np.concatenate([r, grid[2]])
    return acc.astype(np.int32), m.astype(np.uint32), r.astype(np.int32)


@pytest.mark.parametrize("jit", [False, True])
def test_requantize_equals_python_ints(jit):
    acc, m, r = _cases()
    fn = jax.jit(quantization.requantize) if jit else quantization.requantize
    got = np.asarray(fn(jnp.asarray(acc), jnp.asarray(m), jnp.asarray(r)))
    want = np.array(
        [_python_requantize(a, b, c) for a, b, c in zip(acc, m, r, strict=True)], np.int64
    )
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_requantize_equals_numpy_reference_in_range():
    from jaxcompress_kernels.format import quant

    acc, m, r = _cases()
    want = quant.requantize(acc, m.astype(np.int64), r)
    fits = (want >= I32MIN) & (want <= I32MAX)
    got = np.asarray(quantization.requantize(acc, m, r))
    np.testing.assert_array_equal(got[fits], want[fits])


def test_int64_pieces_equal_python_ints():
    """The qadd path: (a * m_a + b * m_b + 2^(r-1)) >> r with 9-bit operands."""
    rng = np.random.default_rng(1)
    a = rng.integers(-255, 256, size=2000).astype(np.int32)
    bb = rng.integers(-255, 256, size=2000).astype(np.int32)
    ma = rng.integers(0, 1 << 31, size=2000).astype(np.uint32)
    mb = rng.integers(0, 1 << 31, size=2000).astype(np.uint32)
    r = rng.integers(1, 63, size=2000).astype(np.int32)
    acc = _add64(_mul64(jnp.asarray(a), jnp.asarray(ma)), _mul64(jnp.asarray(bb), jnp.asarray(mb)))
    h, lo = _add64(acc, _round_const(jnp.asarray(r)))
    got = np.asarray(_shift_saturate(h, lo, jnp.asarray(r))).astype(np.int64)
    want = [
        min(
            max((int(x) * int(p) + int(y) * int(q) + (1 << (int(s) - 1))) >> int(s), I32MIN), I32MAX
        )
        for x, y, p, q, s in zip(a, bb, ma, mb, r, strict=True)
    ]
    np.testing.assert_array_equal(got, np.array(want, np.int64))


def _jax_and_numpy(g, x):
    manifest, parts = g.manifest(g.outputs)
    tensors = {k: parts[t["parts"]["value"]] for k, t in manifest["tensors"].items()}
    ref = quantization.integer_reference(manifest["graph"], tensors)
    got = ref(x)
    return ref, got if isinstance(got, tuple) else (got,), reference_run(manifest, parts, x)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("build", [cnn_graph, mlp_graph], ids=["cnn", "mlp"])
def test_reference_equals_numpy_reference(build, batch):
    """Depthwise/strided/padded convs, ReLU and ReLU6 clamps, max/avg pooling, mean, qadd."""
    g = build(seed=3)
    rng = np.random.default_rng(batch)
    x = rng.normal(0.0, 1.5, size=(batch, *g.input_shape)).astype(np.float32)
    ref, got, want = _jax_and_numpy(g, x)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    codes = ref.run_int8(x)
    codes = codes if isinstance(codes, tuple) else (codes,)
    assert all(c.dtype == np.int8 and c.shape[0] == batch for c in codes)


def test_reference_rejects_bad_sources():
    with pytest.raises(JaxCompressTypeError, match="source"):
        quantization.integer_reference(3.5)
    with pytest.raises(JaxCompressTypeError, match="tensors"):
        quantization.integer_reference({"nodes": []})
    g = mlp_graph()
    manifest, parts = g.manifest(g.outputs)
    tensors = {k: parts[t["parts"]["value"]] for k, t in manifest["tensors"].items()}
    ref = quantization.integer_reference(manifest["graph"], tensors)
    with pytest.raises(JaxCompressValueError, match="x must be"):
        ref(np.zeros((2, 3), np.float32))
    float_graph = dict(manifest["graph"], nodes=[{"op": "exp", "in": ["input"], "out": "y"}])
    float_graph["outputs"] = ["y"]
    with pytest.raises(JaxCompressValueError, match="full-integer"):
        quantization.integer_reference(float_graph, tensors)(np.zeros((1, 20), np.float32))
