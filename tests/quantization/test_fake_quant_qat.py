"""fake_quant (forward grid, clipped STE), power-of-two equality with the integer path, QAT, trees."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcompress._core import JaxCompressValueError
from jaxcompress.models import MLP, functional
from jaxcompress.models import linen as lmodels
from jaxcompress.quantization import (
    QuantizedArray,
    dequantize,
    dequantize_params,
    fake_quant,
    fake_quantize,
    qat_step,
    quantize,
    quantize_params,
)


@pytest.mark.parametrize(
    "kw",
    [
        dict(bits=8),
        dict(bits=4, scheme="affine", axis=-1),
        dict(bits=3, axis=-1, group_size=4),
        dict(bits=5, scheme="fixed_point", frac_bits=3),
        dict(bits=4, calibration="mse", axis=0),
    ],
)
def test_forward_equals_dequantize_quantize_jit_and_eager(kw):
    x = jax.random.normal(jax.random.key(0), (8, 6))
    ref = dequantize(quantize(x, **kw))
    np.testing.assert_array_equal(np.asarray(fake_quant(x, **kw)), np.asarray(ref))
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda x: fake_quant(x, **kw))(x)), np.asarray(ref)
    )


def test_ste_gradient_is_one_inside_zero_outside():
    # fixed point, 4 bits, f = 2: clip range [-7/4, 7/4]
    x = jnp.array([-3.0, -1.75, -1.0, 0.0, 0.3, 1.75, 1.76, 5.0])
    g = jax.grad(lambda x: jnp.sum(fake_quant(x, bits=4, scheme="fixed_point", frac_bits=2)))(x)
    np.testing.assert_array_equal(np.asarray(g), [0, 1, 1, 1, 1, 1, 0, 0])
    # affine with a static clip range [0, 1.5]: the range ends are inclusive
    y = jnp.array([-0.5, 0.0, 0.7, 1.5, 2.0])
    g = jax.grad(lambda y: jnp.sum(fake_quant(y, bits=8, scheme="affine", clip_range=(0.0, 1.5))))(
        y
    )
    np.testing.assert_array_equal(np.asarray(g), [0, 1, 1, 1, 0])
    # absmax calibration: everything inside, gradient is all ones (also w.r.t. upstream cotangent)
    z = jax.random.normal(jax.random.key(1), (5, 4))
    g = jax.grad(lambda z: jnp.sum(3.0 * fake_quant(z, bits=2, axis=-1)))(z)
    np.testing.assert_array_equal(np.asarray(g), np.full((5, 4), 3.0))


def test_power_of_two_scales_fake_quant_matmul_equals_integer_matmul():
    kx, kw = jax.random.split(jax.random.key(2))
    x = jax.random.normal(kx, (7, 33))
    w = jax.random.normal(kw, (33, 5)) * 0.2
    fx, fw = 4, 6
    xq = quantize(x, bits=8, scheme="fixed_point", frac_bits=fx)
    wq = quantize(w, bits=8, scheme="fixed_point", frac_bits=fw)
    acc = jax.lax.dot_general(
        xq.qvalue, wq.qvalue, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )
    integer = np.asarray(acc, np.float64) * 2.0 ** -(fx + fw)
    fake = fake_quant(x, bits=8, scheme="fixed_point", frac_bits=fx) @ fake_quant(
        w, bits=8, scheme="fixed_point", frac_bits=fw
    )
    np.testing.assert_array_equal(np.asarray(fake, np.float64), integer)
    # the int8 codes really reach dot_general as int8
    jpr = jax.make_jaxpr(
        lambda a, b: jax.lax.dot_general(
            a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32
        )
    )(xq.qvalue, wq.qvalue)
    (dot,) = [e for e in jpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert [v.aval.dtype for v in dot.invars] == [jnp.int8, jnp.int8]


@functools.lru_cache(maxsize=1)
def _trees():
    x = np.zeros((2, 28, 28, 1), np.float32)
    f_nnx, p_nnx = functional(MLP(784, (32, 16), rngs=nnx.Rngs(0)))
    f_lin, p_lin = functional(lmodels.MLP(features=(32, 16)), x)
    return [("nnx", f_nnx, p_nnx), ("linen", f_lin, p_lin)]


@pytest.mark.parametrize("idx", [0, 1])
def test_quantize_params_linen_and_nnx_structure(idx):
    name, f, p = _trees()[idx]
    q = quantize_params(p, bits=4, group_size=16)
    is_q = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
    qleaves = jax.tree.leaves(q, is_leaf=is_q)
    n_kernels = sum(1 for x in jax.tree.leaves(p) if x.ndim >= 2)
    assert sum(map(is_q, qleaves)) == n_kernels == 3
    assert all(x.qvalue.dtype == jnp.int8 for x in qleaves if is_q(x))
    dq = dequantize_params(q)
    assert jax.tree.structure(dq) == jax.tree.structure(p)
    for a, b in zip(jax.tree.leaves(dq), jax.tree.leaves(p), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.ndim == 1:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # biases untouched
    x = np.random.RandomState(0).rand(4, 28, 28, 1).astype(np.float32)
    out_q = jax.jit(f)(dq, x)
    assert out_q.shape == (4, 10) and np.all(np.isfinite(np.asarray(out_q)))
    # under jit, the whole quantize_params -> dequantize_params round trip matches eager
    dq_jit = jax.jit(lambda p: dequantize_params(quantize_params(p, bits=4, group_size=16)))(p)
    for a, b in zip(jax.tree.leaves(dq_jit), jax.tree.leaves(dq), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_quantize_params_mixed_bits_and_group_fallback():
    p = {"a": {"kernel": jnp.ones((20, 8)) * jnp.arange(8)}, "b": {"kernel": jnp.ones((32, 4))}}
    with pytest.raises(JaxCompressValueError, match="'a/kernel'.*group_size=16 does not divide"):
        quantize_params(p, bits=4, group_size=16)
    q = quantize_params(p, bits=4, group_size=16, group_fallback="per_channel")
    assert q["a"]["kernel"].group_size is None and q["b"]["kernel"].group_size == 16
    q = quantize_params(p, bits={"a/kernel": 8, "b/": 3})
    assert q["a"]["kernel"].bits == 8 and q["b"]["kernel"].bits == 3
    with pytest.raises(JaxCompressValueError, match="no entry"):
        quantize_params(p, bits={"a/kernel": 8})


@pytest.mark.parametrize("idx", [0, 1])
def test_fake_quantize_transform_and_qat_step(idx):
    name, f, p = _trees()[idx]
    fq = fake_quantize(bits=4, axis=-1)
    rng = np.random.RandomState(1)
    x = rng.rand(64, 28, 28, 1).astype(np.float32)
    y = (x.reshape(64, -1).mean(1) > 0.5).astype(np.int32)
    pq = jax.jit(fq)(p)
    assert jax.tree.structure(pq) == jax.tree.structure(p)
    # the training forward equals the deployable quantized tree
    dq = dequantize_params(fq.quantize(p))
    for a, b in zip(jax.tree.leaves(pq), jax.tree.leaves(dq), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    opt = optax.adam(1e-2)
    step = qat_step(f, opt, fq)
    state = opt.init(p)
    losses = []
    for _ in range(15):
        p, state, loss = step(p, state, x, y)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert jax.tree.structure(p) == jax.tree.structure(_trees()[idx][2])


def test_no_retrace_on_new_values_and_fit_param_transform():
    from jaxcompress.training import fit

    _, f, p = _trees()[1]
    traces = []

    @jax.jit
    def dq(tree):
        traces.append(1)
        return dequantize_params(tree)

    dq(quantize_params(p, bits=4))
    dq(quantize_params(jax.tree.map(lambda a: a * 2.0, p), bits=4))
    assert len(traces) == 1  # metadata is static and hashable; codes/scales are traced leaves
    rng = np.random.RandomState(2)
    x = rng.rand(64, 28, 28, 1).astype(np.float32)
    y = rng.randint(0, 10, 64).astype(np.int32)
    fq = fake_quantize(bits=3)
    res = fit(
        f,
        p,
        (x, y),
        optimizer=optax.adam(1e-3),
        epochs=2,
        batch_size=32,
        key=jax.random.key(0),
        param_transform=fq,
        progress=False,
    )
    assert jax.tree.structure(res.params) == jax.tree.structure(p)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    leaves = jax.tree.leaves(
        fq.quantize(res.params), is_leaf=lambda a: isinstance(a, QuantizedArray)
    )
    assert all(a.bits == 3 for a in leaves if isinstance(a, QuantizedArray))
