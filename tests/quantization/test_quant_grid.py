"""Grids, error bounds, granularities, dtypes, validator, jaxpr dtypes and error cases of quantize."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.quantization import (
    QuantizedArray,
    code_range,
    dequantize,
    quantize,
    validate_quantized_array,
)


def test_affine_exact_grid_arange_256():
    x = jnp.arange(256, dtype=jnp.float32) / 255
    q = quantize(x, bits=8, scheme="affine")
    validate_quantized_array(q)
    assert q.qvalue.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(q.qvalue), np.arange(-128, 128))
    np.testing.assert_array_equal(np.asarray(q.codes()), np.arange(256))
    assert int(q.zero_point) == -128  # real zero point 0, stored with the -128 offset
    np.testing.assert_array_equal(np.asarray(dequantize(q)), np.asarray(x))


def test_symmetric_exact_grid():
    x = jnp.arange(-127, 128, dtype=jnp.float32) / 127
    q = quantize(x, bits=8)
    np.testing.assert_array_equal(np.asarray(q.qvalue), np.arange(-127, 128))
    assert float(q.scale) == pytest.approx(1 / 127)
    # 4-bit symmetric: codes in [-7, 7]
    q4 = quantize(jnp.arange(-7, 8, dtype=jnp.float32) * 0.25, bits=4)
    np.testing.assert_array_equal(np.asarray(q4.qvalue), np.arange(-7, 8))
    np.testing.assert_array_equal(np.asarray(dequantize(q4)), np.arange(-7, 8) * 0.25)


def test_fixed_point_is_round_w_times_2f_saturated_half_even():
    x = jnp.array([0.5, 1.5, 2.5, -2.5, -0.5, 3.25, 200.0, -200.0], jnp.float32)
    q = quantize(x, bits=8, scheme="fixed_point", frac_bits=0)
    np.testing.assert_array_equal(np.asarray(q.qvalue), [0, 2, 2, -2, 0, 3, 127, -127])
    q = quantize(x, bits=8, scheme="fixed_point", frac_bits=2)
    assert float(q.scale) == 0.25
    np.testing.assert_array_equal(np.asarray(q.qvalue), [2, 6, 10, -10, -2, 13, 127, -127])
    np.testing.assert_array_equal(np.asarray(dequantize(q))[:6], [0.5, 1.5, 2.5, -2.5, -0.5, 3.25])


def test_fixed_point_auto_frac_bits_is_power_of_two_and_does_not_clip():
    x = jax.random.normal(jax.random.key(1), (32, 8))
    q = quantize(x, bits=6, scheme="fixed_point", axis=-1)
    validate_quantized_array(q)
    m, _ = np.frexp(np.asarray(q.scale))
    assert np.all(m == 0.5)
    err = np.abs(np.asarray(dequantize(q) - x))
    assert np.all(err <= np.asarray(q.scale)[None, :] / 2 + 1e-7)


def test_round_half_to_even_symmetric():
    # scale = 1 exactly (absmax 127): x = k + 0.5 rounds to the even neighbour
    x = jnp.array([127.0, 0.5, 1.5, 2.5, -0.5, -1.5], jnp.float32)
    q = quantize(x, bits=8)
    assert float(q.scale) == 1.0
    np.testing.assert_array_equal(np.asarray(q.qvalue), [127, 0, 2, 2, 0, -2])


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.integers(2, 8),
    scheme=st.sampled_from(["symmetric", "affine", "fixed_point"]),
    gran=st.sampled_from(["tensor", "channel", "group"]),
    offset=st.floats(-2, 2),
)
def test_error_bound_half_scale(seed, bits, scheme, gran, offset):
    x = np.random.RandomState(seed % 2**31).randn(16, 6).astype(np.float32) * 3 + offset
    kw = {"tensor": {}, "channel": {"axis": -1}, "group": {"axis": -1, "group_size": 4}}[gran]
    q = quantize(x, bits=bits, scheme=scheme, **kw)
    validate_quantized_array(q)
    dq = np.asarray(dequantize(q))
    from jaxcompress.quantization._qarray import to_rows

    rows = np.asarray(to_rows(jnp.asarray(x), q.axis, q.group_size))
    drows = np.asarray(to_rows(jnp.asarray(dq), q.axis, q.group_size))
    s = np.asarray(q.scale).reshape(-1, 1)
    z = np.asarray(q.zero_point, np.float32).reshape(-1, 1)
    qmin, qmax = code_range(bits, scheme)
    off = -(2 ** (bits - 1)) if scheme == "affine" else 0
    lo, hi = (qmin + off - z) * s, (qmax + off - z) * s
    inside = (rows >= lo) & (rows <= hi)
    err = np.abs(rows - drows)
    tol = s / 2 * (1 + 1e-5) + 1e-7
    assert np.all(err[inside] <= np.broadcast_to(tol, rows.shape)[inside])
    # absmax calibration clips nothing by more than half a step, so the bound holds everywhere
    assert np.all((rows >= lo - tol) & (rows <= hi + tol))
    assert np.all(err <= tol)


@pytest.mark.parametrize("scheme", ["symmetric", "affine", "fixed_point"])
def test_real_zero_is_exact(scheme):
    x = jnp.array([[0.0, 0.3, 1.7], [2.9, 0.0, 0.11]], jnp.float32)
    for kw in ({}, {"axis": -1}, {"axis": 0}):
        dq = dequantize(quantize(x, bits=3, scheme=scheme, **kw))
        assert float(dq[0, 0]) == 0.0 and float(dq[1, 1]) == 0.0


def test_per_channel_and_per_group_shapes_and_independence():
    x = jax.random.normal(jax.random.key(0), (3, 3, 8, 5))  # conv kernel (kh, kw, in, out)
    qc = quantize(x, bits=4, axis=-1)
    assert qc.scale.shape == (5,) and qc.axis == 3
    np.testing.assert_allclose(
        np.asarray(qc.scale), np.abs(np.asarray(x)).max(axis=(0, 1, 2)) / 7, rtol=1e-6
    )
    qg = quantize(x, bits=4, axis=-1, group_size=24)  # K = 72 -> 3 groups per channel
    assert qg.scale.shape == (3, 5)
    validate_quantized_array(qg)
    # groups are the flattened reduction axes in C order: group 0 is rows 0..23 of reshape(72, 5)
    w2 = np.asarray(x).reshape(72, 5)
    np.testing.assert_allclose(np.asarray(qg.scale)[0], np.abs(w2[:24]).max(0) / 7, rtol=1e-6)
    # scaling one group changes only that group's scale, not the other groups' codes
    x2 = w2.copy()
    x2[24:48] *= 10
    qg2 = quantize(jnp.asarray(x2.reshape(x.shape)), bits=4, axis=-1, group_size=24)
    c1 = np.asarray(qg.qvalue).reshape(72, 5)
    c2 = np.asarray(qg2.qvalue).reshape(72, 5)
    np.testing.assert_array_equal(c1[:24], c2[:24])
    np.testing.assert_array_equal(c1[48:], c2[48:])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_preserved(dtype):
    x = jax.random.normal(jax.random.key(2), (8, 4)).astype(dtype)
    q = quantize(x, bits=8, axis=-1)
    assert q.qvalue.dtype == jnp.int8 and q.scale.dtype == jnp.float32
    assert dequantize(q).dtype == dtype and dequantize(q).shape == x.shape


@pytest.mark.parametrize("calibration", ["percentile", "mse"])
def test_clipping_calibrations_shrink_range_on_outliers(calibration):
    x = np.random.RandomState(0).randn(4096).astype(np.float32)
    x[0] = 40.0
    q_abs = quantize(x, bits=4)
    q_cal = quantize(x, bits=4, calibration=calibration, percentile=99.0)
    assert float(q_cal.scale) < float(q_abs.scale) / 2
    err_abs = float(jnp.mean((dequantize(q_abs) - x) ** 2))
    err_cal = float(jnp.mean((dequantize(q_cal) - x) ** 2))
    assert err_cal < err_abs


def test_jit_matches_eager_and_jaxpr_is_int8():
    x = jax.random.normal(jax.random.key(3), (16, 8))
    f = lambda x: quantize(x, bits=4, scheme="affine", axis=-1, group_size=8)  # noqa: E731
    q_eager, q_jit = f(x), jax.jit(f)(x)
    np.testing.assert_array_equal(np.asarray(q_eager.qvalue), np.asarray(q_jit.qvalue))
    np.testing.assert_array_equal(
        np.asarray(dequantize(q_eager)), np.asarray(jax.jit(dequantize)(q_jit))
    )
    jaxpr = jax.make_jaxpr(f)(x)
    out_dtypes = [a.dtype for a in jaxpr.out_avals]
    assert out_dtypes == [jnp.int8, jnp.float32, jnp.int8]  # qvalue, scale, zero_point
    # dequantize consumes int8 codes: its jaxpr inputs are int8 and the first op converts them
    dj = jax.make_jaxpr(dequantize)(q_eager)
    assert dj.in_avals[0].dtype == jnp.int8
    conv = [e for e in _walk(dj.jaxpr) if e.primitive.name == "convert_element_type"]
    assert conv and conv[0].invars[0].aval.dtype == jnp.int8
    assert not any(
        e.invars[0].aval.dtype == jnp.int8
        for e in _walk(dj.jaxpr)
        if e.primitive.name in ("mul", "dot_general")
    )


def _walk(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            sub = getattr(v, "jaxpr", v)
            if hasattr(sub, "eqns"):
                yield from _walk(sub)


def test_nan_under_jit_poisons_instead_of_garbage():
    x = jnp.array([[1.0, jnp.nan], [0.5, 0.25]])
    dq = jax.jit(lambda x: dequantize(quantize(x, bits=8)))(x)
    assert np.all(np.isnan(np.asarray(dq)))


def test_validator_catches_broken_invariants():
    q = quantize(jnp.linspace(-1, 1, 12).reshape(3, 4), bits=4, axis=-1)
    validate_quantized_array(q)
    with pytest.raises(JaxCompressValueError, match="qvalue outside"):
        validate_quantized_array(dataclasses.replace(q, qvalue=q.qvalue.at[0, 0].set(8)))
    with pytest.raises(JaxCompressTypeError, match="int8"):
        validate_quantized_array(dataclasses.replace(q, qvalue=q.qvalue.astype(jnp.int32)))
    with pytest.raises(JaxCompressValueError, match="scale"):
        validate_quantized_array(dataclasses.replace(q, scale=-q.scale))
    with pytest.raises(JaxCompressValueError, match="zero_point must be 0"):
        validate_quantized_array(dataclasses.replace(q, zero_point=q.zero_point + 1))
    with pytest.raises(JaxCompressValueError, match="shapes"):
        validate_quantized_array(
            dataclasses.replace(q, scale=q.scale[:2], zero_point=q.zero_point[:2])
        )
    with pytest.raises(JaxCompressTypeError):
        validate_quantized_array(jnp.zeros(3))


def test_quantized_array_is_a_pytree_with_static_metadata():
    q = quantize(jnp.ones((4, 2)), bits=8, axis=-1)
    leaves, treedef = jax.tree.flatten(q)
    assert [x.dtype for x in leaves] == [jnp.int8, jnp.float32, jnp.int8]
    q2 = jax.tree.unflatten(treedef, leaves)
    assert isinstance(q2, QuantizedArray) and q2.bits == 8 and q2.shape == (4, 2)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(bits=1), JaxCompressValueError, "bits=1 must be in 2..8"),
        (dict(bits=9), JaxCompressValueError, "bits=9 must be in 2..8"),
        (dict(bits=4.0), JaxCompressTypeError, "bits"),
        (dict(bits=4, scheme="log"), JaxCompressValueError, "scheme"),
        (dict(bits=4, calibration="kl"), JaxCompressValueError, "calibration"),
        (dict(bits=4, axis=2), JaxCompressValueError, "axis=2 is out of range"),
        (dict(bits=4, axis=-3), JaxCompressValueError, "out of range"),
        (
            dict(bits=4, axis=-1, group_size=3),
            JaxCompressValueError,
            "group_size=3 does not divide",
        ),
        (dict(bits=4, group_size=4), JaxCompressValueError, "group_size requires axis"),
        (dict(bits=4, axis=-1, group_size=0), JaxCompressValueError, "positive"),
        (dict(bits=4, frac_bits=3), JaxCompressValueError, "frac_bits"),
        (
            dict(bits=4, calibration="percentile", percentile=0.0),
            JaxCompressValueError,
            "percentile",
        ),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        quantize(jnp.ones((8, 4)), **kwargs)


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (jnp.array([1.0, jnp.nan]), JaxCompressValueError, "NaN or Inf"),
        (np.array([1.0, np.inf]), JaxCompressValueError, "NaN or Inf"),
        (jnp.arange(4), JaxCompressTypeError, "floating-point"),
        (np.array([True, False]), JaxCompressTypeError, "floating-point"),
        (jnp.zeros((0, 3)), JaxCompressValueError, "empty"),
    ],
)
def test_bad_inputs(x, exc, match):
    with pytest.raises(exc, match=match):
        quantize(x, bits=8)


def test_dequantize_rejects_plain_arrays():
    with pytest.raises(JaxCompressTypeError, match="QuantizedArray or ClusteredArray"):
        dequantize(jnp.ones(3))
