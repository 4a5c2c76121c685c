"""CharLM: shapes, causality, and its AWQ/SmoothQuant mappings keep the function unchanged."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcompress.models import CharLM, char_lm_mappings, functional
from jaxcompress.quantization import capture_stats, smooth_quant


@pytest.fixture(scope="module")
def lm():
    apply_fn, params = functional(
        CharLM(context=16, dim=32, layers=2, mlp_dim=64, rngs=nnx.Rngs(0))
    )
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 128, size=(4, 16)), jnp.int32)
    return apply_fn, params, ids


def test_charlm_shape_and_causality(lm):
    apply_fn, params, ids = lm
    y = apply_fn(params, ids)
    assert y.shape == (4, 16, 128) and y.dtype == jnp.float32
    ids2 = ids.at[:, 10:].set(0)  # changing the future leaves the past's logits unchanged
    y2 = apply_fn(params, ids2)
    np.testing.assert_allclose(y[:, :10], y2[:, :10], rtol=1e-5, atol=1e-5)
    assert not np.allclose(y[:, 10:], y2[:, 10:])


def test_charlm_mappings_fold_without_changing_outputs(lm):
    apply_fn, params, ids = lm
    stats = capture_stats(apply_fn, params, [ids])
    assert "blocks/1/mlp2/kernel" in stats and "embed/embedding" not in stats
    p2 = smooth_quant(params, stats, char_lm_mappings(2), alpha=0.8)
    np.testing.assert_allclose(apply_fn(p2, ids), apply_fn(params, ids), rtol=1e-4, atol=1e-4)
    assert len(char_lm_mappings(2)) == 6
    with pytest.raises(ValueError, match="divisible"):
        CharLM(dim=30, heads=4, rngs=nnx.Rngs(0))
