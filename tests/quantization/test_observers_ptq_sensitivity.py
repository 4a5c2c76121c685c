"""Activation observers (static/dynamic range), whole-model PTQ, sensitivity and mixed precision."""

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcompress._core import JaxCompressValueError
from jaxcompress.models import MLP, functional
from jaxcompress.models import linen as lmodels
from jaxcompress.quantization import (
    QuantizedArray,
    activation_sites,
    mixed_precision,
    observe_activations,
    ptq,
    quantize_activations,
    quantize_params,
    sensitivity,
)

X = np.random.RandomState(0).rand(48, 28, 28, 1).astype(np.float32)


def _models():
    f_nnx, p_nnx = functional(MLP(784, (24, 12), rngs=nnx.Rngs(0)))
    f_lin, p_lin = functional(lmodels.MLP(features=(24, 12)), X[:1])
    return {"nnx": (f_nnx, p_nnx), "linen": (f_lin, p_lin)}


MODELS = _models()


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_sites_and_minmax_observer_match_manual_ranges(kind):
    f, p = MODELS[kind]
    sites = activation_sites(f, p, X[:4])
    assert list(sites) == ["dot_general_0", "dot_general_1", "dot_general_2"]
    assert sites["dot_general_0"] == (4, 784) and sites["dot_general_2"] == (4, 12)
    r = observe_activations(f, p, np.array_split(X, 3))
    lo, hi = r.ranges["dot_general_0"]
    assert lo == pytest.approx(float(X.min())) and hi == pytest.approx(float(X.max()))
    lo1, _ = r.ranges["dot_general_1"]
    assert lo1 == 0.0  # post-ReLU
    for method in ("ema", "percentile"):
        r2 = observe_activations(f, p, np.array_split(X, 3), method=method, percentile=99.0)
        assert r2.ranges["dot_general_0"][1] <= hi + 1e-6


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_static_and_dynamic_activation_quant(kind):
    f, p = MODELS[kind]
    ref = np.asarray(f(p, X))
    r = observe_activations(f, p, [X])
    fs = jax.jit(quantize_activations(f, r, bits=8))
    fd = jax.jit(quantize_activations(f, None, bits=8))
    for g in (fs, fd):
        out = np.asarray(g(p, X))
        assert out.shape == ref.shape
        assert 0 < np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    # 2-bit activations hurt much more than 8-bit ones
    f2 = jax.jit(quantize_activations(f, r, bits=2))
    assert np.abs(np.asarray(f2(p, X)) - ref).mean() > np.abs(np.asarray(fs(p, X)) - ref).mean()
    # a static range clips: values beyond the observed range produce zero gradient (clipped STE)
    small = observe_activations(f, p, [X * 0.5])
    g = jax.jit(
        jax.grad(lambda x: quantize_activations(f, small, sites=["dot_general_0"])(p, x).sum())
    )(X[:2])
    g = np.asarray(g).reshape(2, -1)
    outside = X[:2].reshape(2, -1) > small.ranges["dot_general_0"][1] + 1e-3
    assert outside.any() and np.all(g[outside] == 0)
    assert np.any(g[~outside] != 0)


def test_ptq_weight_only_and_full():
    f, p = MODELS["nnx"]
    ref = np.asarray(f(p, X))
    res = ptq(f, p, bits=8)
    assert res.ranges is None
    assert (
        sum(
            isinstance(x, QuantizedArray)
            for x in jax.tree.leaves(res.params, is_leaf=lambda x: isinstance(x, QuantizedArray))
        )
        == 3
    )
    out = np.asarray(jax.jit(res.apply_fn)(res.params, X))
    assert np.abs(out - ref).max() < 0.02 * np.abs(ref).max()
    full = ptq(f, p, np.array_split(X, 2), bits=4, activation_bits=8)
    assert set(full.ranges.ranges) == {"dot_general_0", "dot_general_1", "dot_general_2"}
    out4 = np.asarray(jax.jit(full.apply_fn)(full.params, X))
    assert np.abs(out4 - ref).mean() > np.abs(out - ref).mean()
    with pytest.raises(JaxCompressValueError, match="calibration_batches"):
        ptq(f, p, bits=8, activation_bits=8)
    with pytest.raises(JaxCompressValueError, match="empty"):
        observe_activations(f, p, [])
    with pytest.raises(JaxCompressValueError, match="method"):
        observe_activations(f, p, [X], method="kl")


def test_sensitivity_and_mixed_precision_budget():
    f, p = MODELS["nnx"]
    y = np.asarray(f(p, X)).argmax(-1)
    rep = sensitivity(f, p, X, y, bits=(2, 4, 8))
    assert rep.float_accuracy == 1.0
    assert len(rep.rows) == 9 and len(rep.paths) == 3
    for path in rep.paths:
        s = [rep.get(path, b).sqnr_db for b in (2, 4, 8)]
        e = [rep.get(path, b).output_mse for b in (2, 4, 8)]
        assert s[0] < s[1] < s[2] and e[0] > e[1] > e[2]
        assert 6.02 * 4 * 0.8 < s[2] - s[1] < 6.02 * 4 * 1.2  # ~6 dB per bit
    assert "SQNR" in rep.table()
    sizes = {path: rep.get(path, 8).n for path in rep.paths}
    for avg in (8.2, 5.0, 3.0):
        choice = mixed_precision(rep, avg_bits=avg)
        total = sum(rep.get(path, b).size_bits for path, b in choice.items())
        assert total <= avg * sum(sizes.values())
        q = quantize_params(p, bits=choice)
        assert {
            x.bits
            for x in jax.tree.leaves(q, is_leaf=lambda x: isinstance(x, QuantizedArray))
            if isinstance(x, QuantizedArray)
        } <= {2, 4, 8}
    assert set(mixed_precision(rep, avg_bits=9.0).values()) == {8}
    with pytest.raises(JaxCompressValueError, match="below the narrowest"):
        mixed_precision(rep, avg_bits=1.0)
    with pytest.raises(JaxCompressValueError, match="exactly one"):
        mixed_precision(rep)
