"""Issue 16, item 3: no silent garbage from NaN calibration data or meaningless clip ranges; a
string sparsity is a project error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.models import MLP, functional
from jaxcompress.pruning import magnitude_masks, uniform
from jaxcompress.quantization import fake_quant, observe_activations, ptq, quantize


def test_ptq_with_nan_in_the_calibration_data_is_an_error():
    apply_fn, params = functional(MLP(8, (16,), 3, rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    good = ptq(apply_fn, params, [x], activation_bits=8)
    assert all(np.isfinite(v).all() for v in good.ranges.ranges.values())
    x[3, 2] = np.nan  # one NaN gave ranges (nan, nan) and outputs off by 1.26, silently
    with pytest.raises(JaxCompressValueError, match="dot_general_0.*NaN or inf"):
        ptq(apply_fn, params, [x], activation_bits=8)
    with pytest.raises(JaxCompressValueError, match="NaN or inf"):
        observe_activations(apply_fn, params, [x[:8], x[8:]], method="ema")


@pytest.mark.parametrize(
    "scheme, clip, match",
    [
        ("symmetric", (np.nan, 1.0), "must be finite"),
        ("affine", (0.0, np.inf), "must be finite"),
        ("affine", (1.0, -1.0), "inverted"),
        ("symmetric", (1.0, -1.0), "inverted"),
        ("affine", (np.array([0.0, 2.0]), np.array([1.0, 1.0])), "inverted"),  # per unit
    ],
)
def test_non_finite_or_inverted_clip_range_is_an_error(scheme, clip, match):
    x = jnp.linspace(-1, 1, 8).reshape(4, 2)
    axis = -1 if np.ndim(clip[0]) else None
    with pytest.raises(JaxCompressValueError, match=match):
        quantize(x, bits=8, scheme=scheme, axis=axis, clip_range=clip)
    with pytest.raises(JaxCompressValueError, match=match):
        fake_quant(x, bits=8, scheme=scheme, axis=axis, clip_range=clip)


def test_good_clip_range_still_works_and_traced_bad_range_poisons_the_scale():
    x = jnp.linspace(-1, 1, 8)
    q = quantize(x, bits=8, scheme="affine", clip_range=(-1.0, 1.0))
    assert np.isfinite(np.asarray(q.scale)).all() and float(q.scale) == pytest.approx(2 / 255)
    # under jit a traced range cannot raise: an inverted one gives NaN, never scale 1.0
    scale = jax.jit(lambda lo: quantize(x, bits=8, scheme="affine", clip_range=(lo, -1.0)).scale)
    assert np.isnan(np.asarray(scale(1.0))).all()
    assert np.isfinite(np.asarray(scale(-2.0))).all()


def test_clip_range_must_be_a_pair():
    with pytest.raises(JaxCompressTypeError, match="must be a pair"):
        quantize(jnp.ones(4), bits=8, clip_range=1.0)


@pytest.mark.parametrize("bad", ["0.5", b"0.5"])
def test_string_sparsity_is_a_project_type_error(bad):
    params = {"w": jnp.ones((4, 4))}
    with pytest.raises(JaxCompressTypeError, match="not a string"):
        magnitude_masks(params, bad)
    with pytest.raises(JaxCompressTypeError, match="not a string"):
        uniform(bad)
