"""deep_compression_sizes: per-layer bytes add up to the totals, ratios follow from them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress.clustering import cluster, deep_compression_sizes


def test_layers_and_biases_add_up_to_the_totals():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 16)).astype(np.float32)
    w[np.abs(w) < 1.0] = 0.0  # about 68% pruned
    pruned = {"fc": {"kernel": jnp.asarray(w), "bias": jnp.zeros(16)}}
    clustered = cluster(pruned, bits=4, init="linear", key=jax.random.key(0))
    dc = deep_compression_sizes(pruned, clustered, index_bits=5, cluster_bits=4)
    (layer,) = dc["layers"]
    bias_kb = 32 * 16 / 8000
    assert dc["dense_kb"] == pytest.approx(32 * (64 * 16 + 16) / 8000)
    for k in ("pruned", "clustered", "huffman"):
        assert dc[f"{k}_kb"] == pytest.approx(layer[f"{k}_bytes"] / 1000 + bias_kb)
        assert dc[f"ratio_{k}"] == pytest.approx(dc["dense_kb"] / dc[f"{k}_kb"])
    assert layer["nonzero"] == int(np.count_nonzero(w))
    assert dc["huffman_kb"] < dc["clustered_kb"] < dc["pruned_kb"] < dc["dense_kb"]
