"""One-shot masks: golden N:M / block / channel cases, exact counts, jit, linen/nnx, bf16, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress import JaxCompressTypeError, JaxCompressValueError
from jaxcompress import pruning as jp


def tree(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "Dense_0": {
                "kernel": jnp.asarray(rng.standard_normal((12, 8)), dtype),
                "bias": jnp.asarray(rng.standard_normal(8), dtype),
            },
            "Conv_0": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 4, 6)), dtype)},
        }
    }


# ----------------------------------------------------------------------------- golden masks
def test_nm_golden_dense_and_conv():
    w = jnp.array(
        [
            [1.0, 1.0],
            [-4.0, 1.0],
            [3.0, 1.0],
            [2.0, 1.0],
            [0.5, 0.0],
            [0.1, -2.0],
            [-0.2, 0.0],
            [0.3, 0.0],
        ]
    )  # (in=8, out=2)
    m = jp.nm_masks({"k": w}, 2, 4)["k"]
    expected = np.array(
        [[0, 1], [1, 1], [1, 0], [0, 0], [1, 1], [0, 1], [0, 0], [1, 0]], bool
    )  # ties: lower index wins
    np.testing.assert_array_equal(np.asarray(m), expected)
    conv = jnp.arange(8.0).reshape(1, 1, 8, 1) * jnp.array([1, -1, 1, -1, 1, -1, 1, -1.0]).reshape(
        1, 1, 8, 1
    )
    mc = jp.nm_masks({"c": conv}, 1, 4)["c"]
    np.testing.assert_array_equal(np.asarray(mc).reshape(-1), [0, 0, 0, 1, 0, 0, 0, 1])


def test_block_golden():
    w = jnp.array(
        [[1.0, 1.0, 9.0, 9.0], [1.0, 1.0, 9.0, 9.0], [5.0, 5.0, 0.1, 0.1], [5.0, -5.0, 0.1, -0.1]]
    )
    m = jp.block_masks({"w": w}, 0.5, block=(2, 2))["w"]
    expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(np.asarray(m), expected)
    # ties between equal blocks: the earlier block (row-major block order) goes first
    m2 = jp.block_masks({"w": jnp.ones((2, 4))}, 0.5, block=(2, 2))["w"]
    np.testing.assert_array_equal(np.asarray(m2), [[0, 0, 1, 1], [0, 0, 1, 1]])


def test_channel_golden_l1_vs_l2():
    # column L1: 4, 3, 2.2, 10 ; column L2: 4, 3, ~2.0, ~7.1
    w = jnp.array([[4.0, 0.0, 2.0, 5.0], [0.0, 3.0, 0.2, 5.0], [0.0, 0.0, 0.0, 0.0]])
    m1 = jp.channel_masks({"w": w}, 0.5, norm="l1")["w"]
    np.testing.assert_array_equal(np.asarray(m1)[0], [1, 0, 0, 1])
    assert np.asarray(m1).all(axis=0).tolist() == np.asarray(m1)[0].tolist()
    conv = jnp.ones((2, 2, 3, 5)) * jnp.array([3.0, 1.0, 2.0, 5.0, 4.0])
    mc = jp.channel_masks({"c": conv}, 0.4)["c"]
    np.testing.assert_array_equal(np.asarray(mc)[0, 0, 0], [1, 0, 0, 1, 1])


def test_threshold_clip_golden_and_quality():
    w = jnp.array([[0.1, -0.5], [2.0, -0.05]])
    out = jp.threshold_clip({"w": w, "b": jnp.array([0.01])}, 0.2)
    np.testing.assert_array_equal(np.asarray(out["w"]), [[0.0, -0.5], [2.0, 0.0]])
    np.testing.assert_array_equal(
        np.asarray(out["b"]), np.float32([0.01])
    )  # bias not selected by default
    q = jp.threshold_clip({"w": w}, quality=1.0)["w"]
    thr = float(np.std(np.asarray(w)))
    np.testing.assert_array_equal(np.asarray(q), np.where(np.abs(np.asarray(w)) < thr, 0, w))
    m = jp.threshold_masks({"w": w}, quality=1.0)["w"]
    np.testing.assert_array_equal(np.asarray(m), np.abs(np.asarray(w)) >= thr)


# ------------------------------------------------------------------------------ exact counts
@settings(max_examples=30, deadline=None)
@given(s=st.floats(0.0, 0.999), seed=st.integers(0, 3))
def test_magnitude_exact_zero_counts(s, seed):
    p = tree(seed)
    layer = jp.magnitude_masks(p, s)
    for path, n in (("Dense_0", 96), ("Conv_0", 216)):
        m = layer["params"][path]["kernel"]
        assert int((~np.asarray(m)).sum()) == round(s * n)
    assert np.asarray(layer["params"]["Dense_0"]["bias"]).all()
    glob = jp.magnitude_masks(p, s, scope="global")
    assert jp.sparsity_report(glob).zeros == round(s * 312)
    # the pruned magnitudes are never above the kept ones
    pruned = jp.apply_masks(p, glob)
    mags = np.concatenate(
        [np.abs(np.asarray(p["params"][k]["kernel"])).ravel() for k in ("Dense_0", "Conv_0")]
    )
    keep = np.concatenate(
        [np.asarray(glob["params"][k]["kernel"]).ravel() for k in ("Dense_0", "Conv_0")]
    )
    if keep.any() and (~keep).any():
        assert mags[~keep].max() <= mags[keep].min()
    assert jp.sparsity(pruned) == pytest.approx(round(s * 312) / 312)


@pytest.mark.parametrize(
    "fn",
    [
        lambda p: jp.magnitude_masks(p, 0.7),
        lambda p: jp.magnitude_masks(p, 0.7, scope="global"),
        lambda p: jp.nm_masks(p, 2, 4),
        lambda p: jp.block_masks(p, 0.5, block=(2, 2)),
        lambda p: jp.channel_masks(p, 0.5),
        lambda p: jp.threshold_masks(p, quality=0.5),
        lambda p: jp.magnitude_masks(p, jp.erk(0.8)),
    ],
    ids=["layer", "global", "nm", "block", "channel", "threshold", "erk"],
)
def test_jit_equals_eager_and_structure(fn):
    p = tree(1)
    eager = fn(p)
    jitted = jax.jit(fn)(p)
    assert jax.tree.structure(eager) == jax.tree.structure(p)
    for a, b, x in zip(
        jax.tree.leaves(eager), jax.tree.leaves(jitted), jax.tree.leaves(p), strict=True
    ):
        assert a.dtype == jnp.bool_ and a.shape == x.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_params():
    p = tree(2, jnp.bfloat16)
    m = jp.magnitude_masks(p, 0.5, scope="global")
    assert jp.sparsity_report(m).zeros == 156
    out = jp.apply_masks(p, m)
    assert out["params"]["Dense_0"]["kernel"].dtype == jnp.bfloat16
    assert jp.sparsity_report(out).zeros >= 156
    nm = jp.nm_masks(p, 1, 4)
    assert jp.sparsity(nm) == 0.75
    clipped = jp.threshold_clip(p, 0.5)
    assert clipped["params"]["Conv_0"]["kernel"].dtype == jnp.bfloat16


def test_linen_and_nnx_trees():
    class L(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(nn.relu(nn.Dense(8)(x)))

    lp = L().init(jax.random.key(0), jnp.ones((1, 16)))
    lm = jp.magnitude_masks(lp, 0.5)
    assert jax.tree.structure(lm) == jax.tree.structure(lp)
    assert lm["params"]["Dense_0"]["kernel"].shape == (8, 4)
    assert int((~np.asarray(lm["params"]["Dense_0"]["kernel"])).sum()) == 16
    assert np.asarray(lm["params"]["Dense_0"]["bias"]).all()

    class N(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(16, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 4, rngs=rngs)

    state = nnx.state(N(nnx.Rngs(0)), nnx.Param)
    nm = jp.nm_masks(state, 2, 4)
    assert jax.tree.structure(nm) == jax.tree.structure(state)
    pruned = jp.apply_masks(state, nm)
    assert isinstance(pruned, nnx.State)
    assert jp.sparsity(pruned) == 0.5
    report = jp.sparsity_report(jp.magnitude_masks(state, {"l1": 0.75, "l2": 0.5}))
    assert [(r.path, r.zeros) for r in report.leaves] == [("l1/kernel", 96), ("l2/kernel", 16)]
    assert "l1/kernel" in report.table()


def test_distributions():
    p = tree(3)
    shapes = [("a", (12, 8)), ("b", (3, 3, 4, 6))]
    s = jp.erk(0.8).layer_sparsities(shapes)
    total = sum(float(x) * n for x, n in zip(s, (96, 216), strict=True))
    assert total == pytest.approx(0.8 * 312, rel=1e-5)
    # ERK gives the smaller layer (more sum(shape)/prod(shape)) the lower sparsity
    assert float(s[0]) < float(s[1])
    assert jp.uniform(0.3).layer_sparsities(shapes) == [0.3, 0.3]
    m = jp.magnitude_masks(p, jp.explicit({"Conv": 0.5}, default=0.25))
    assert int((~np.asarray(m["params"]["Conv_0"]["kernel"])).sum()) == 108
    assert int((~np.asarray(m["params"]["Dense_0"]["kernel"])).sum()) == 24
    # a near-total ERK target keeps no layer denser than 1
    s2 = jp.erk(0.1).layer_sparsities(shapes)
    assert all(0.0 <= float(x) < 1.0 for x in s2)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("s", [1.0, -0.1, 1.5, float("nan")])
def test_error_sparsity_out_of_range(s):
    with pytest.raises(JaxCompressValueError, match="sparsity"):
        jp.magnitude_masks(tree(), s)
    with pytest.raises(JaxCompressValueError, match="sparsity"):
        jp.polynomial(s, begin_step=0, end_step=10)


def test_error_nm_arguments():
    p = tree()
    with pytest.raises(JaxCompressValueError, match="n=5"):
        jp.nm_masks(p, 5, 4)
    with pytest.raises(JaxCompressValueError, match="n=-1"):
        jp.nm_masks(p, -1, 4)
    with pytest.raises(JaxCompressValueError, match="not divisible by m=5"):
        jp.nm_masks(p, 2, 5)
    with pytest.raises(JaxCompressValueError, match="n=3"):
        jp.nm_pruning(3, 2)


def test_error_masks_structure_and_dtype():
    p = tree()
    m = jp.magnitude_masks(p, 0.5)
    with pytest.raises(JaxCompressValueError, match="structure"):
        jp.apply_masks(p, {"params": m["params"]["Dense_0"]})
    bad = jax.tree.map(lambda x: x[..., :1], m)
    with pytest.raises(JaxCompressValueError, match="shape"):
        jp.apply_masks(p, bad)
    with pytest.raises(JaxCompressTypeError, match="bool"):
        jp.apply_masks(p, jax.tree.map(lambda x: x.astype(jnp.int32), m))


def test_error_integer_leaves_and_bad_args():
    p = {"w": jnp.ones((4, 4)), "steps": jnp.ones((4, 4), jnp.int32)}
    with pytest.raises(JaxCompressTypeError, match="steps"):
        jp.magnitude_masks(p, 0.5, where="steps")
    with pytest.raises(JaxCompressTypeError, match="steps"):
        jp.threshold_clip(p, 0.1, where=lambda path, x: True)
    with pytest.raises(JaxCompressValueError, match="exactly one"):
        jp.threshold_clip(p, 0.1, quality=1.0, where="w")
    with pytest.raises(JaxCompressValueError, match="scope"):
        jp.magnitude_masks(tree(), 0.5, scope="model")
    with pytest.raises(JaxCompressValueError, match="global"):
        jp.magnitude_masks(tree(), jp.erk(0.5), scope="global")
    with pytest.raises(JaxCompressValueError, match="does not tile"):
        jp.block_masks(tree(), 0.5, block=(5, 5))
    with pytest.raises(JaxCompressValueError, match="matches no selected leaf"):
        jp.magnitude_masks(tree(), {"Nope": 0.5})
