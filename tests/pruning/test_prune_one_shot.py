"""SparseGPT and Wanda (jaxcompress.pruning._one_shot): exact counts, equivalences, jit, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress._core import JaxCompressValueError
from jaxcompress.pruning import (
    apply_masks,
    magnitude_masks,
    nm_masks,
    sparsegpt,
    sparsegpt_params,
    wanda_masks,
)
from jaxcompress.quantization import CalibrationStats, LayerStats

RNG = np.random.default_rng(0)
K, N = 160, 12  # K not a multiple of the 128 block: exercises the padded tail


def _rows(n, k, seed=0):
    r = np.random.default_rng(seed)
    return jnp.asarray(
        r.normal(size=(n, k)) @ r.normal(size=(k, k)) * np.exp(r.normal(size=k)), jnp.float32
    )


@pytest.fixture(scope="module")
def layer():
    w = jnp.asarray(RNG.normal(size=(K, N)), jnp.float32)
    x = _rows(500, K)
    return w, x, LayerStats.from_rows(x)


def _err(x, w, w2):
    return float(jnp.sum((x @ (w - w2)) ** 2))


def test_sparsegpt_exact_count_and_beats_magnitude(layer):
    w, x, st = layer
    w2, keep = sparsegpt(w, st, 0.5)
    assert int((~keep).sum()) == round(0.5 * w.size)
    assert bool(jnp.all(w2[~keep] == 0))
    mag = jnp.where(magnitude_masks({"w": w}, 0.5)["w"], w, 0)
    assert _err(x, w, w2) < 0.5 * _err(x, w, mag)


def test_sparsegpt_nm_every_group_and_beats_magnitude(layer):
    w, x, st = layer
    w2, keep = sparsegpt(w, st, n=2, m=4)
    np.testing.assert_array_equal(keep.reshape(K // 4, 4, N).sum(1), 2)
    assert bool(jnp.all(w2[~keep] == 0))
    mag = jnp.where(nm_masks({"w": w}, 2, 4)["w"], w, 0)
    assert _err(x, w, w2) < 0.7 * _err(x, w, mag)


def test_sparsegpt_params_masks_and_jit(layer):
    w, _, st = layer
    params = {"dense": {"kernel": w, "bias": jnp.ones(N)}}
    stats = CalibrationStats({"dense/kernel": st}, 1)
    res = sparsegpt_params(params, stats, 0.3)
    assert bool(jnp.all(res.masks["dense"]["bias"]))
    assert int((~res.masks["dense"]["kernel"]).sum()) == round(0.3 * w.size)
    again = apply_masks(res.params, res.masks)
    np.testing.assert_array_equal(again["dense"]["kernel"], res.params["dense"]["kernel"])
    wj, kj = jax.jit(lambda w, h: sparsegpt(w, h, 0.3))(w, st.hessian)
    w1, k1 = sparsegpt(w, st, 0.3)
    np.testing.assert_array_equal(kj, k1)
    np.testing.assert_allclose(wj, w1, rtol=1e-6, atol=1e-6)


def test_wanda_constant_norms_equals_magnitude():
    w = jnp.asarray(RNG.normal(size=(64, 8)), jnp.float32)
    const = LayerStats(  # ||X_j|| = 4 for every input (a power of two: exact products)
        xtx=16.0 * jnp.eye(64), abs_sum=jnp.ones(64), absmax=jnp.ones(64), count=jnp.asarray(1.0)
    )
    stats = CalibrationStats({"w": const}, 1)
    np.testing.assert_array_equal(
        wanda_masks({"w": w}, stats, 0.5, comparison="layer")["w"],
        magnitude_masks({"w": w}, 0.5)["w"],
    )
    np.testing.assert_array_equal(
        wanda_masks({"w": w}, stats, n=2, m=4)["w"], nm_masks({"w": w}, 2, 4)["w"]
    )


def test_wanda_constant_norms_per_output_equals_column_magnitude():
    w = jnp.asarray(RNG.normal(size=(64, 8)), jnp.float32)
    stats = CalibrationStats({"w": LayerStats.from_rows(2.0 * jnp.eye(64))}, 1)  # ||X_j|| = 2
    m = np.asarray(wanda_masks({"w": w}, stats, 0.25)["w"])
    # reference: in every output column drop the 16 smallest |w| (distinct values, no ties)
    ref = np.ones((64, 8), bool)
    np.put_along_axis(ref, np.argsort(np.abs(np.asarray(w)), axis=0)[:16], False, axis=0)
    np.testing.assert_array_equal(m, ref)


def test_wanda_invariant_to_input_rescaling(layer):
    """Wanda's score |W_jo| ||X_j|| does not change when input j is scaled by c and row j of W by
    1/c (the same function); magnitude pruning does. c = 16 keeps the products exact."""
    w, x, st = layer
    c = jnp.ones(K).at[::7].set(16.0)
    w2, x2 = w / c[:, None], x * c[None, :]
    s1 = CalibrationStats({"w": st}, 1)
    s2 = CalibrationStats({"w": LayerStats.from_rows(x2)}, 1)
    for kw in (dict(sparsity=0.5), dict(sparsity=0.5, comparison="layer"), dict(n=2, m=4)):
        np.testing.assert_array_equal(
            wanda_masks({"w": w}, s1, **kw)["w"], wanda_masks({"w": w2}, s2, **kw)["w"]
        )
    assert not bool(
        jnp.array_equal(magnitude_masks({"w": w}, 0.5)["w"], magnitude_masks({"w": w2}, 0.5)["w"])
    )


def test_wanda_counts_and_uses_norms(layer):
    w, x, st = layer
    stats = CalibrationStats({"w": st}, 1)
    m = wanda_masks({"w": w}, stats, 0.5)["w"]  # per output: round(0.5 * K) pruned each
    np.testing.assert_array_equal((~m).sum(0), round(0.5 * K))
    mag = magnitude_masks({"w": w}, 0.5)["w"]
    assert _err(x, w, jnp.where(m, w, 0)) < _err(x, w, jnp.where(mag, w, 0))
    m24 = wanda_masks({"w": w}, stats, n=2, m=4)["w"]
    np.testing.assert_array_equal(m24.reshape(K // 4, 4, N).sum(1), 2)


def test_one_shot_pruning_errors(layer):
    w, _, st = layer
    stats = CalibrationStats({"w": st}, 1)
    few = LayerStats.from_rows(_rows(20, K))
    with pytest.raises(JaxCompressValueError, match="not positive definite"):
        sparsegpt(w, few, 0.5, damping=0.0)
    with pytest.raises(JaxCompressValueError, match="sparsity"):
        sparsegpt(w, st, 1.0)
    with pytest.raises(JaxCompressValueError, match="not divisible by m=3|divisible by m=3"):
        sparsegpt(w, st, n=1, m=3)
    with pytest.raises(JaxCompressValueError, match="matches no leaf"):
        wanda_masks({"w": w}, stats, 0.5, where="nope")
    with pytest.raises(JaxCompressValueError, match="no calibration stats"):
        sparsegpt_params({"w": w, "u": w}, stats, 0.5, where="u")
    with pytest.raises(JaxCompressValueError, match="hessian contains NaN"):
        sparsegpt(w, jnp.full((K, K), jnp.nan), 0.5)
    with pytest.raises(JaxCompressValueError, match="comparison"):
        wanda_masks({"w": w}, stats, 0.5, comparison="row")


def test_wanda_jits(layer):
    w, _, st = layer
    stats = CalibrationStats({"w": st}, 1)
    for kw in (dict(sparsity=0.5), dict(sparsity=0.5, comparison="layer"), dict(n=2, m=4)):
        eager = wanda_masks({"w": w}, stats, **kw)["w"]
        jitted = jax.jit(lambda p, kw=kw: wanda_masks(p, stats, **kw))({"w": w})["w"]
        np.testing.assert_array_equal(eager, jitted)
