"""per_layer_threshold_masks: each matched kernel keeps |w| >= q * std(w) with its own q."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress._core import JaxCompressValueError
from jaxcompress.pruning import per_layer_threshold_masks


def test_each_pattern_uses_its_own_quality_and_unmatched_kernels_are_kept():
    rng = np.random.default_rng(0)
    params = {
        "a": {"kernel": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32), "bias": jnp.ones(6)},
        "b": {"kernel": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)},
        "c": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)},
    }
    m = per_layer_threshold_masks(params, {"^a/": 1.0, "^b/": 0.25})
    for name, q in (("a", 1.0), ("b", 0.25)):
        w = np.asarray(params[name]["kernel"])
        np.testing.assert_array_equal(
            np.asarray(m[name]["kernel"]), np.abs(w) >= q * np.std(w, dtype=np.float32)
        )
    assert bool(np.all(np.asarray(m["c"]["kernel"])))  # no pattern: kept whole
    assert bool(np.all(np.asarray(m["a"]["bias"])))  # not a kernel


def test_bad_regex_is_a_clear_error():
    with pytest.raises(JaxCompressValueError, match="not a valid regex"):
        per_layer_threshold_masks({"w": jnp.ones((2, 2))}, {"(": 1.0})
