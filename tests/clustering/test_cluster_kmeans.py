"""cluster(): k-means grids, inits, zeros kept, per-channel, trees, centroid fine-tuning, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.clustering import (
    ClusteredArray,
    centroid_finetuning,
    cluster,
    shared_params,
    size_report,
    update_codebooks,
    validate_clustered_array,
)
from jaxcompress.models import MLP, functional
from jaxcompress.models import linen as lmodels
from jaxcompress.quantization import dequantize, dequantize_params, quantize_params


def _is_ca(x):
    return isinstance(x, ClusteredArray)


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++"])
def test_k_distinct_values_are_recovered_exactly(init):
    vals = np.array([-3.0, -1.0, 0.5, 2.0], np.float32)
    w = np.random.RandomState(0).choice(vals, size=(40, 6)).astype(np.float32)
    c = cluster({"w": w}, n_clusters=4, init=init)["w"]
    validate_clustered_array(c)
    assert c.indices.dtype == jnp.uint8 and c.codebook.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(dequantize(c)), w)
    assert not c.zero_index


def test_linear_init_bits_and_error_drop_with_more_bits():
    w = jax.random.normal(jax.random.key(0), (64, 32))
    errs = []
    for b in (1, 2, 3, 5):
        c = cluster({"w": w}, bits=b)["w"]
        assert c.n_clusters == 2**b and c.bits == b
        assert len(np.unique(np.asarray(dequantize(c)))) <= 2**b
        errs.append(float(jnp.mean((dequantize(c) - w) ** 2)))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.02 * errs[0]


def test_kmeanspp_is_deterministic_given_key():
    w = jax.random.normal(jax.random.key(4), (32, 16))
    a = cluster({"w": w}, bits=3, init="kmeans++", key=jax.random.key(7))["w"]
    b = cluster({"w": w}, bits=3, init="kmeans++", key=jax.random.key(7))["w"]
    np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
    np.testing.assert_array_equal(np.asarray(a.codebook), np.asarray(b.codebook))


@pytest.mark.parametrize("axis", [None, -1])
def test_pruned_zeros_stay_exactly_zero(axis):
    w = np.array(jax.random.normal(jax.random.key(1), (50, 8)))
    w[np.abs(w) < 0.8] = 0.0
    c = cluster({"w": jnp.asarray(w)}, bits=2, axis=axis)["w"]
    validate_clustered_array(c)
    assert c.zero_index
    dq = np.asarray(dequantize(c))
    np.testing.assert_array_equal(dq == 0, w == 0)
    np.testing.assert_array_equal(np.asarray(c.indices)[w == 0], 0)
    assert np.all(np.asarray(c.codebook)[..., 0] == 0)
    if axis is not None:
        assert c.codebook.shape == (8, 4)
        # per-channel codebooks: each channel only uses its own centroids
        for ch in range(8):
            assert set(np.unique(dq[:, ch])) <= set(np.asarray(c.codebook)[ch])


def test_per_channel_beats_per_tensor_on_scaled_channels():
    w = jax.random.normal(jax.random.key(2), (64, 4)) * jnp.array([0.01, 0.1, 1.0, 10.0])
    e_t = float(jnp.mean((dequantize(cluster({"w": w}, bits=2)["w"]) - w) ** 2))
    e_c = float(jnp.mean((dequantize(cluster({"w": w}, bits=2, axis=-1)["w"]) - w) ** 2))
    assert e_c < e_t


def _trees():
    x = np.zeros((1, 28, 28, 1), np.float32)
    f_nnx, p_nnx = functional(MLP(784, (16, 8), rngs=nnx.Rngs(0)))
    f_lin, p_lin = functional(lmodels.MLP(features=(16, 8)), x)
    return {"nnx": (f_nnx, p_nnx), "linen": (f_lin, p_lin)}


TREES = _trees()


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_cluster_trees_and_centroid_finetuning(kind):
    f, p = TREES[kind]
    # prune the first kernel by hand: exact zeros, as the pruning transforms leave them
    leaves, treedef = jax.tree.flatten(p)
    k0 = next(i for i, x in enumerate(leaves) if x.ndim == 2)
    leaves[k0] = jnp.where(jnp.abs(leaves[k0]) < 0.03, 0.0, leaves[k0])
    p = jax.tree.unflatten(treedef, leaves)
    ct = cluster(p, bits=3, where=None)
    cas = [x for x in jax.tree.leaves(ct, is_leaf=_is_ca) if _is_ca(x)]
    assert len(cas) == 3 and cas[0].zero_index
    sp = shared_params(ct)
    assert jax.tree.structure(sp) == jax.tree.structure(p)
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(dequantize_params(ct))[k0]), np.asarray(jax.tree.leaves(sp)[k0])
    )

    rng = np.random.RandomState(0)
    x = rng.rand(32, 28, 28, 1).astype(np.float32)
    y = rng.randint(0, 10, 32)
    loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(f(q, x), y).mean()  # noqa: E731

    # golden: the tied gradient of every weight is the sum of its cluster's weight gradients
    tx = centroid_finetuning(ct)
    st = tx.init(sp)
    g = jax.jit(jax.grad(loss))(sp)
    tied, _ = jax.jit(tx.update)(g, st, sp)
    gk, tk = np.asarray(jax.tree.leaves(g)[k0]), np.asarray(jax.tree.leaves(tied)[k0])
    idx = np.asarray(cas[0].indices)
    for k in range(1, 8):
        if np.any(idx == k):
            np.testing.assert_allclose(tk[idx == k], gk[idx == k].sum(), rtol=1e-5, atol=1e-7)
    assert np.all(tk[idx == 0] == 0)  # reserved zero centroid is frozen

    opt = optax.chain(centroid_finetuning(ct), optax.adam(1e-2))
    state = opt.init(sp)

    @jax.jit
    def step(q, state):
        lv, gr = jax.value_and_grad(loss)(q)
        u, state = opt.update(gr, state, q)
        return optax.apply_updates(q, u), state, lv

    q, losses = sp, []
    for _ in range(10):
        q, state, lv = step(q, state)
        losses.append(float(lv))
    assert losses[-1] < losses[0]
    ct2 = update_codebooks(ct, q)
    for a, b in zip(jax.tree.leaves(dequantize_params(ct2)), jax.tree.leaves(q), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # still exactly shared
    w0 = np.asarray(jax.tree.leaves(q)[k0])
    np.testing.assert_array_equal(w0 == 0, idx == 0)  # zeros stayed zero
    for c in jax.tree.leaves(ct2, is_leaf=_is_ca):
        if _is_ca(c):
            validate_clustered_array(c)
            assert len(np.unique(np.asarray(dequantize(c)))) <= 8


def test_cluster_under_jit_and_structure():
    w = jax.random.normal(jax.random.key(5), (16, 4))
    c_eager = cluster({"w": w, "b": jnp.ones(4)}, bits=2)
    c_jit = jax.jit(lambda p: cluster(p, bits=2, keep_zeros=False))({"w": w, "b": jnp.ones(4)})
    np.testing.assert_array_equal(np.asarray(c_eager["w"].indices), np.asarray(c_jit["w"].indices))
    np.testing.assert_array_equal(np.asarray(c_jit["b"]), np.ones(4))
    assert dequantize(c_eager["w"]).dtype == w.dtype


def test_size_report_counts_side_information():
    w = jnp.asarray(np.random.RandomState(0).randn(64, 16), jnp.float32)
    tree = {"k": w, "b": jnp.zeros(16)}
    rep = size_report(cluster(tree, bits=4))
    (kb,) = [x for x in rep.leaves if x.path == "k"]
    assert kb.code_bits == 64 * 16 * 4 and kb.side_bits == 16 * 32
    assert rep.total_bits == 64 * 16 * 4 + 16 * 32 + 16 * 32
    q = size_report(quantize_params(tree, bits=4, scheme="affine", group_size=16))
    (qk,) = [x for x in q.leaves if x.path == "k"]
    assert qk.code_bits == 4096 and qk.side_bits == (64 // 16) * 16 * (32 + 8)
    assert qk.bits_per_weight == pytest.approx(4 + 40 / 16)
    h = size_report(cluster(tree, bits=4), huffman=True)
    assert h.total_bits < rep.total_bits  # Gaussian weights: non-uniform index histogram
    assert "bits/weight" in rep.table()


def test_validator_and_errors():
    w = jax.random.normal(jax.random.key(3), (8, 4))
    c = cluster({"w": w}, bits=2)["w"]
    with pytest.raises(JaxCompressValueError, match="index"):
        validate_clustered_array(dataclasses.replace(c, indices=c.indices.at[0, 0].set(9)))
    with pytest.raises(JaxCompressTypeError, match="uint8"):
        validate_clustered_array(dataclasses.replace(c, indices=c.indices.astype(jnp.int32)))
    with pytest.raises(JaxCompressValueError, match="exactly one"):
        cluster({"w": w})
    with pytest.raises(JaxCompressValueError, match="exactly one"):
        cluster({"w": w}, bits=2, n_clusters=4)
    with pytest.raises(JaxCompressValueError, match="bits=9 must be in 1..8"):
        cluster({"w": w}, bits=9)
    with pytest.raises(JaxCompressValueError, match="n_clusters=300"):
        cluster({"w": w}, n_clusters=300)
    with pytest.raises(JaxCompressValueError, match="init"):
        cluster({"w": w}, bits=2, init="random")
    with pytest.raises(JaxCompressValueError, match="axis=2 is out of range"):
        cluster({"w": w}, bits=2, axis=2)
    with pytest.raises(JaxCompressValueError, match="NaN or Inf"):
        cluster({"w": w.at[0, 0].set(jnp.nan)}, bits=2)
    with pytest.raises(JaxCompressValueError, match="empty"):
        cluster({"w": jnp.zeros((0, 4))}, bits=2)
    with pytest.raises(JaxCompressTypeError, match="floating"):
        cluster({"w": jnp.ones((4, 4), jnp.int32)}, bits=2, where="w")
    with pytest.raises(JaxCompressValueError, match="n_clusters=1 must be >= 2"):
        cluster({"w": w.at[0, 0].set(0.0)}, n_clusters=1)


def test_fully_pruned_channel_and_all_zero_leaf():
    w = np.array(jax.random.normal(jax.random.key(6), (16, 4)))
    w[:, 2] = 0.0
    for init in ("linear", "density", "kmeans++"):
        c = cluster({"w": jnp.asarray(w)}, bits=2, axis=-1, init=init)["w"]
        validate_clustered_array(c)  # finite codebook, zero reserved
        np.testing.assert_array_equal(np.asarray(dequantize(c))[:, 2], 0.0)
    z = cluster({"w": jnp.zeros((4, 4))}, bits=2)["w"]
    validate_clustered_array(z)
    np.testing.assert_array_equal(np.asarray(dequantize(z)), 0.0)
