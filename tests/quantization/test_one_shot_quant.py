"""Calibration capture, GPTQ, AWQ and SmoothQuant (jaxcompress.quantization one-shot modules)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcompress._core import JaxCompressValueError
from jaxcompress.models import TinyTransformer, functional
from jaxcompress.quantization import (
    LayerStats,
    QuantizedArray,
    awq,
    capture_stats,
    dequantize,
    dequantize_params,
    gptq,
    gptq_params,
    quantize,
    smooth_quant,
    validate_quantized_array,
)

RNG = np.random.default_rng(0)
MAPS = [
    ("ln1/(scale|bias)", "^(q|k|v)/kernel"),
    ("ln2/(scale|bias)", "mlp1/kernel"),
    ("^v/(kernel|bias)", "^o/kernel"),
]


def _correlated_rows(n, k, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, k)) @ r.normal(size=(k, k)) * np.exp(r.normal(size=k))
    return jnp.asarray(x, jnp.float32)


@pytest.fixture(scope="module")
def tt():
    """TinyTransformer, a calibration batch and its statistics (captured once per module)."""
    apply_fn, params = functional(TinyTransformer(rngs=nnx.Rngs(0)))
    x = 3.0 * jax.random.normal(jax.random.key(2), (16, 40, 1))
    return apply_fn, params, x, capture_stats(apply_fn, params, [x[:8], x[8:]])


class _Conv(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 3, (3, 2), padding="SAME", rngs=rngs)

    def __call__(self, x, *, train=False, rngs=None):
        return self.conv(x)


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        del train
        h = nn.relu(nn.Dense(12, name="Dense_0")(x.reshape(x.shape[0], -1)))
        return nn.Dense(5, name="Dense_1")(h)


# ----------------------------------------------------------------------------- capture
def test_capture_linen_dense_matches_explicit_rows():
    x = jnp.asarray(RNG.normal(size=(10, 7)), jnp.float32)
    apply_fn, params = functional(_LinenMLP(), x[:1])
    st = capture_stats(apply_fn, params, [x[:4], x[4:]])  # streaming over two batches
    assert set(st.paths()) == {"params/Dense_0/kernel", "params/Dense_1/kernel"}
    s0 = st["params/Dense_0/kernel"]
    np.testing.assert_allclose(s0.xtx, x.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s0.absmax, jnp.abs(x).max(0))
    np.testing.assert_allclose(s0.mean_abs, jnp.abs(x).mean(0), rtol=1e-6)
    assert float(s0.count) == 10 and st.batches == 2
    h = nn.relu(x @ params["params"]["Dense_0"]["kernel"] + params["params"]["Dense_0"]["bias"])
    np.testing.assert_allclose(
        st["params/Dense_1/kernel"].hessian, h.T @ h / 10, rtol=1e-4, atol=1e-5
    )


def test_capture_nnx_conv_im2col_reproduces_the_conv():
    apply_fn, params = functional(_Conv(nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (2, 5, 6, 2))
    st = capture_stats(apply_fn, params, [x])
    w = params["conv"]["kernel"][...]
    assert st["conv/kernel"].xtx.shape == (12, 12)  # K = 3 * 2 * 2 in (kh, kw, in) order
    # H = X^T X with X the im2col rows: the conv output's Gram matrix is W^T H W
    y = apply_fn(params, x) - params["conv"]["bias"][...]
    y = y.reshape(-1, 3)
    wk = w.reshape(12, 3)
    np.testing.assert_allclose(wk.T @ st["conv/kernel"].xtx @ wk, y.T @ y, rtol=1e-4, atol=1e-4)
    assert float(st["conv/kernel"].count) == 2 * 5 * 6


def test_capture_errors_name_the_argument(tt):
    apply_fn, params, _, _ = tt
    x = np.ones((2, 40, 1), np.float32)
    bad = x.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(JaxCompressValueError, match=r"batches\[0\] contains NaN"):
        capture_stats(apply_fn, params, [bad, x])
    with pytest.raises(JaxCompressValueError, match="matches no leaf"):
        capture_stats(apply_fn, params, [x], where="no_such_layer")
    with pytest.raises(JaxCompressValueError, match="no matmul/conv"):
        capture_stats(apply_fn, params, [x], where="pos")
    with pytest.raises(JaxCompressValueError, match="batches is empty"):
        capture_stats(apply_fn, params, [])


# ----------------------------------------------------------------------------- GPTQ
@pytest.mark.parametrize(
    "scheme,group_size,act_order",
    [("symmetric", None, False), ("affine", 16, False), ("symmetric", 16, True)],
)
def test_gptq_identity_hessian_equals_rtn_exactly(scheme, group_size, act_order):
    w = jnp.asarray(RNG.normal(size=(48, 10)), jnp.float32)
    q = gptq(w, jnp.eye(48), bits=3, scheme=scheme, group_size=group_size, act_order=act_order)
    r = quantize(w, bits=3, scheme=scheme, axis=-1, group_size=group_size)
    validate_quantized_array(q)
    np.testing.assert_array_equal(q.qvalue, r.qvalue)
    np.testing.assert_array_equal(q.scale, r.scale)
    np.testing.assert_array_equal(q.zero_point, r.zero_point)


@pytest.mark.parametrize("group_size,act_order", [(None, False), (16, False), (16, True)])
def test_gptq_beats_rtn_on_the_layer_objective(group_size, act_order):
    k = 160  # not a multiple of the 128 block: exercises the padded tail
    w = jnp.asarray(RNG.normal(size=(k, 12)), jnp.float32)
    x = _correlated_rows(600, k)
    q = gptq(
        w,
        LayerStats.from_rows(x),
        bits=3,
        scheme="affine",
        group_size=group_size,
        act_order=act_order,
    )
    r = quantize(w, bits=3, scheme="affine", axis=-1, group_size=group_size)
    err_g = float(jnp.sum((x @ (w - dequantize(q))) ** 2))
    err_r = float(jnp.sum((x @ (w - dequantize(r))) ** 2))
    assert err_g < 0.8 * err_r


def test_gptq_conv_kernel_roundtrips_shape_and_jits():
    w = jnp.asarray(RNG.normal(size=(2, 2, 4, 10)), jnp.float32)  # K = 16, N = 10
    h = LayerStats.from_rows(_correlated_rows(200, 16)).hessian
    q = gptq(w, h, bits=3, scheme="affine", group_size=16)
    assert isinstance(q, QuantizedArray) and q.shape == w.shape and q.scale.shape == (1, 10)
    qj = jax.jit(lambda w, h: gptq(w, h, bits=3, scheme="affine", group_size=16))(w, h)
    np.testing.assert_array_equal(q.qvalue, qj.qvalue)
    np.testing.assert_array_equal(q.scale, qj.scale)


def test_gptq_errors():
    w = jnp.asarray(RNG.normal(size=(32, 4)), jnp.float32)
    few = LayerStats.from_rows(_correlated_rows(8, 32))  # rank 8 < 32: singular
    with pytest.raises(JaxCompressValueError, match="not positive definite"):
        gptq(w, few, bits=4, damping=0.0)
    gptq(w, few, bits=4, damping=0.01)  # damping fixes it
    with pytest.raises(JaxCompressValueError, match="group_size=5 does not divide"):
        gptq(w, jnp.eye(32), bits=4, group_size=5)
    with pytest.raises(JaxCompressValueError, match=r"hessian has shape \(8, 8\)"):
        gptq(w, jnp.eye(8), bits=4)
    with pytest.raises(JaxCompressValueError, match="hessian contains NaN"):
        gptq(w, jnp.full((32, 32), jnp.nan), bits=4)
    with pytest.raises(JaxCompressValueError, match="damping"):
        gptq(w, jnp.eye(32), bits=4, damping=-1.0)
    # under jit a singular Hessian cannot raise: the scales are NaN, never finite garbage
    q = jax.jit(lambda w, h: gptq(w, h, bits=4, damping=0.0))(w, few.hessian)
    assert bool(jnp.all(jnp.isnan(q.scale)))


def test_gptq_params_on_a_model_and_bad_where(tt):
    apply_fn, params, x, st = tt
    qp = gptq_params(params, st, bits=4, scheme="affine", where="^(q|k|v|o)/kernel")
    assert isinstance(qp["q"]["kernel"].get_value(), QuantizedArray)
    assert not isinstance(qp["mlp1"]["kernel"].get_value(), QuantizedArray)  # not selected
    y = apply_fn(dequantize_params(qp), x)
    assert bool(jnp.all(jnp.isfinite(y)))
    with pytest.raises(JaxCompressValueError, match="matches no leaf"):
        gptq_params(params, st, bits=4, where="nope")
    with pytest.raises(JaxCompressValueError, match="group_size=7 does not divide"):
        gptq_params(params, st, bits=4, group_size=7)
    with pytest.raises(JaxCompressValueError, match="no calibration stats"):
        gptq_params(params, st, bits=4, where="pos")


# ----------------------------------------------------------------------------- AWQ, SmoothQuant
def test_smoothquant_and_awq_leave_float_outputs_unchanged(tt):
    apply_fn, params, x, st = tt
    y0 = apply_fn(params, x)
    for p2 in (
        smooth_quant(params, st, MAPS, alpha=0.5),
        awq(params, st, MAPS, bits=3, group_size=8),
    ):
        changed = not np.allclose(p2["q"]["kernel"][...], params["q"]["kernel"][...])
        assert changed
        np.testing.assert_allclose(apply_fn(p2, x), y0, rtol=1e-5, atol=1e-5)


def test_smoothquant_flattens_the_activation_range(tt):
    apply_fn, params, x, st = tt
    p2 = smooth_quant(params, st, MAPS, alpha=0.5)
    st2 = capture_stats(apply_fn, p2, [x])
    a0, a1 = st["q/kernel"].absmax, st2["q/kernel"].absmax
    assert float(a1.max() / a1.min()) < float(a0.max() / a0.min())


def test_mapping_errors(tt):
    _, params, _, st = tt
    with pytest.raises(JaxCompressValueError, match="producer 'nothing' matches no leaf"):
        smooth_quant(params, st, [("nothing", "q/kernel")])
    with pytest.raises(JaxCompressValueError, match="consumers 'zz' match no leaf"):
        awq(params, st, [("ln1/scale", "zz")], bits=4)
    with pytest.raises(JaxCompressValueError, match="alpha"):
        smooth_quant(params, st, MAPS, alpha=1.5)
    with pytest.raises(JaxCompressValueError, match="group_size=5 does not divide"):
        awq(params, st, MAPS, bits=4, group_size=5)


def test_smoothquant_jits(tt):
    apply_fn, params, x, st = tt
    eager = smooth_quant(params, st, MAPS, alpha=0.5)
    jitted = jax.jit(lambda p: smooth_quant(p, st, MAPS, alpha=0.5))(params)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
