"""Schedules, optax transforms (exact zeros, pruned stays pruned, no retrace) and the Han helper."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress import JaxCompressValueError
from jaxcompress import pruning as jp

SIZES = {"a": 48, "b": 60}


def params(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return {
        "a": jnp.asarray(rng.standard_normal((8, 6)), dtype),
        "b": jnp.asarray(rng.standard_normal((3, 4, 5)), dtype),
        "bias": jnp.asarray(rng.standard_normal(6), dtype),
    }


# ---------------------------------------------------------------------------------- schedules
def test_polynomial_schedule_matches_zhu_gupta():
    s = jp.polynomial(0.9, begin_step=100, end_step=1100, frequency=100, initial_sparsity=0.1)
    for t in [0, 99, 100, 150, 200, 650, 1100, 5000]:
        tk = min(100 + ((t - 100) // 100) * 100, 1100)
        want = 0.0 if t < 100 else 0.9 + (0.1 - 0.9) * (1 - (tk - 100) / 1000) ** 3
        assert float(s(t)) == pytest.approx(want, abs=1e-6)
    updates = [t for t in range(0, 1300) if bool(s.is_update_step(t))]
    assert updates == list(range(100, 1101, 100))
    assert float(jax.jit(s)(jnp.int32(650))) == pytest.approx(float(s(650)))


def test_constant_and_one_shot():
    c = jp.constant(0.5)
    assert float(c(7)) == 0.5 and bool(c.is_update_step(0)) and not bool(c.is_update_step(3))
    o = jp.one_shot(0.7, step=5)
    assert float(o(4)) == 0.0 and float(o(5)) == pytest.approx(0.7)
    assert [t for t in range(10) if bool(o.is_update_step(t))] == [5]
    with pytest.raises(JaxCompressValueError, match="end_step"):
        jp.polynomial(0.5, begin_step=10, end_step=10)
    with pytest.raises(JaxCompressValueError, match="frequency"):
        jp.polynomial(0.5, begin_step=0, end_step=10, frequency=0)


# ----------------------------------------------------------------------------- the transform
@jax.jit
def _run(p, grads, table):
    """Apply ``len(grads)`` steps of sgd + magnitude_pruning with the schedule ``table[t]``."""
    tx = optax.chain(
        optax.sgd(1.0), jp.magnitude_pruning(lambda t: table[jnp.minimum(t, table.shape[0] - 1)])
    )
    state = tx.init(p)

    def body(carry, g):
        p, state = carry
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
        return (p, state), (p, state[1].masks)

    (_, _), (ps, masks) = jax.lax.scan(body, (p, state), grads)
    return ps, masks


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), table=st.lists(st.floats(0.0, 0.95), min_size=6, max_size=6))
def test_pruned_is_exactly_zero_and_stays_zero(seed, table):
    """Random (even decreasing) schedules and random updates: zeros are exact and never regrow."""
    rng = np.random.default_rng([seed, 12345])  # not the params' stream
    p = params(seed % 7)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal((6,) + x.shape), x.dtype), p)
    ps, masks = _run(p, grads, jnp.asarray(table, jnp.float32))
    for name, n in SIZES.items():
        w = np.asarray(ps[name])
        m = np.asarray(masks[name])
        prev = np.ones(w.shape[1:], bool)
        running = 0
        for t in range(6):
            running = max(running, round(np.float32(table[t]) * n))
            assert ((w[t] == 0) == ~m[t]).all()  # pruned <=> exactly zero (updates are random)
            assert (~m[t] | prev).all() and (m[t] <= prev).all()  # never regrows
            assert int((~m[t]).sum()) == running
            prev = m[t]
    assert np.asarray(masks["bias"]).all() and (np.asarray(ps["bias"]) != 0).all()


def test_no_recompilation_after_first_step_and_global_scope():
    traces = []
    tx = optax.chain(
        optax.adam(1e-2),
        jp.magnitude_pruning(
            jp.polynomial(0.8, begin_step=1, end_step=5, frequency=2), scope="global"
        ),
    )
    p = params(1)
    state = tx.init(p)

    @jax.jit
    def step(p, state, g):
        traces.append(1)
        u, state = tx.update(g, state, p)
        return optax.apply_updates(p, u), state

    g = jax.tree.map(jnp.ones_like, p)
    zeros = []
    for _ in range(8):
        p, state = step(p, state, g)
        zeros.append(int(sum((np.asarray(p[k]) == 0).sum() for k in SIZES)))
    assert len(traces) == 1
    assert zeros[-1] == round(0.8 * 108)
    assert zeros[0] == 0 and zeros == sorted(zeros)
    assert int(state[1].count) == 8


def test_transform_nnx_bf16_and_erk():
    class N(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(16, 8, rngs=rngs, param_dtype=jnp.bfloat16)
            self.l2 = nnx.Linear(8, 4, rngs=rngs, param_dtype=jnp.bfloat16)

    state = nnx.state(N(nnx.Rngs(0)), nnx.Param)
    tx = optax.chain(optax.sgd(0.1), jp.magnitude_pruning(jp.one_shot(0.75), distribution="erk"))
    opt_state = tx.init(state)
    g = jax.tree.map(jnp.ones_like, state)
    u, opt_state = jax.jit(tx.update)(g, opt_state, state)
    new = optax.apply_updates(state, u)
    assert isinstance(new, nnx.State)
    assert new["l1"]["kernel"][...].dtype == jnp.bfloat16
    rep = jp.sparsity_report(new)
    assert rep.zeros == round(0.75 * 160) or abs(rep.zeros - 0.75 * 160) <= 2
    m = opt_state[1].masks
    assert (
        (np.asarray(new["l1"]["kernel"][...]) == 0) == ~np.asarray(m["l1"]["kernel"][...])
    ).all()


def test_nm_pruning_transform_keeps_structure():
    p = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)}
    tx = optax.chain(optax.sgd(0.5), jp.nm_pruning(2, 4, begin_step=1, frequency=2))
    s = tx.init(p)
    step = jax.jit(
        lambda p, s, g: (lambda u_s: (optax.apply_updates(p, u_s[0]), u_s[1]))(tx.update(g, s, p))
    )
    rng = np.random.default_rng(1)
    p, s = step(p, s, {"w": jnp.ones((8, 3))})
    assert (np.asarray(p["w"]) != 0).all()  # dense before begin_step
    first = None
    for _ in range(5):
        p, s = step(p, s, {"w": jnp.asarray(rng.standard_normal((8, 3)), jnp.float32)})
        w = np.asarray(p["w"]).reshape(2, 4, 3)
        assert ((w != 0).sum(axis=1) == 2).all()
        first = (w == 0) if first is None else first
        assert (w[first] == 0).all()  # pruned stays pruned across recomputations


def test_fixed_masks_and_transform_errors():
    p = params()
    m = jp.magnitude_masks(p, 0.5)
    tx = optax.chain(optax.sgd(1.0), jp.fixed_masks(m))
    s = tx.init(p)
    u, _ = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
    out = optax.apply_updates(p, u)
    assert jp.sparsity_report(out).zeros == 54
    with pytest.raises(JaxCompressValueError, match="params"):
        jp.magnitude_pruning(0.5).update(p, jp.magnitude_pruning(0.5).init(p))
    with pytest.raises(JaxCompressValueError, match="scope"):
        jp.magnitude_pruning(0.5, scope="x")
    with pytest.raises(JaxCompressValueError, match="distribution"):
        jp.magnitude_pruning(0.5, scope="global", distribution="erk")
    with pytest.raises(JaxCompressValueError, match="structure"):
        jp.fixed_masks({"a": m["a"]}).init(p)


def test_iterative_pruning_reaches_target_with_exact_zeros():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    p = {
        "w1": jnp.asarray(rng.standard_normal((10, 16)) * 0.3, jnp.float32),
        "b1": jnp.zeros(16),
        "w2": jnp.asarray(rng.standard_normal((16, 2)) * 0.3, jnp.float32),
    }

    def apply_fn(p, x, *, train=False, key=None):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]

    res = jp.iterative_pruning(
        apply_fn,
        p,
        (x, y),
        target={"w1": 0.8, "w2": 0.5},
        rounds=2,
        epochs_per_round=1,
        optimizer=optax.sgd(0.05),
        batch_size=64,
        key=jax.random.key(0),
        eval_data=(x, y),
        progress=False,
    )
    assert len(res.rounds) == 2 and "eval_accuracy" in res.rounds[-1]
    assert int((np.asarray(res.params["w1"]) == 0).sum()) == 128
    assert int((np.asarray(res.params["w2"]) == 0).sum()) == 16
    assert ((np.asarray(res.params["w1"]) == 0) == ~np.asarray(res.masks["w1"])).all()
    assert res.rounds[0]["sparsity"] < res.rounds[1]["sparsity"]
