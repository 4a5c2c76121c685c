import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcompress import models
from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.training import evaluate, fit, predict


def _toy(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    centers = rng.normal(size=(3, 8)).astype(np.float32) * 3
    x = centers[y] + rng.normal(size=(n, 8)).astype(np.float32) * 0.3
    return x, y


def _model():
    return models.functional(models.MLP(8, (16,), 3, rngs=nnx.Rngs(0)))


def test_fit_learns_and_reports_history():
    x, y = _toy()
    apply_fn, params = _model()
    before = evaluate(apply_fn, params, x, y)
    r = fit(
        apply_fn,
        params,
        (x, y),
        optimizer=optax.adam(1e-2),
        epochs=5,
        batch_size=32,
        key=jax.random.key(0),
        eval_data=(x, y),
        progress=False,
    )
    assert len(r.history) == 5 and r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.history[-1]["eval_accuracy"] > 0.95 > before
    assert evaluate(apply_fn, r.params, x, y) == r.history[-1]["eval_accuracy"]


def test_fit_is_deterministic_and_key_dependent():
    x, y = _toy()
    apply_fn, params = _model()
    kw = dict(optimizer=optax.sgd(0.1), epochs=2, batch_size=16, progress=False)
    a = fit(apply_fn, params, (x, y), key=jax.random.key(3), **kw).params
    b = fit(apply_fn, params, (x, y), key=jax.random.key(3), **kw).params
    c = fit(apply_fn, params, (x, y), key=jax.random.key(4), **kw).params
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.array_equal(u, v)), a, c)))


def test_param_transform_is_applied_in_the_forward_pass():
    x, y = _toy()
    apply_fn, params = _model()
    # Zeroing every weight makes all gradients w.r.t. the raw params vanish except through biases.
    zero_kernels = lambda p: jax.tree.map(lambda v: v * 0 if v.ndim == 2 else v, p)  # noqa: E731
    r = fit(
        apply_fn,
        params,
        (x, y),
        optimizer=optax.sgd(0.1),
        epochs=1,
        batch_size=32,
        key=jax.random.key(0),
        param_transform=zero_kernels,
        progress=False,
    )
    k0 = params["hidden"][0]["kernel"][...]
    np.testing.assert_array_equal(r.params["hidden"][0]["kernel"][...], k0)


def test_opt_state_round_trips_and_augment_runs():
    x, y = _toy()
    apply_fn, params = _model()
    seen = []

    def augment(xb, key):
        seen.append(xb.shape)
        return xb + 0.01 * jax.random.normal(key, xb.shape)

    r = fit(
        apply_fn,
        params,
        (x, y),
        optimizer=optax.adam(1e-2),
        epochs=1,
        batch_size=64,
        key=jax.random.key(0),
        augment=augment,
        progress=False,
    )
    assert seen == [(64, 8)]  # traced once, shape of one batch
    r2 = fit(
        apply_fn,
        r.params,
        (x, y),
        optimizer=optax.adam(1e-2),
        epochs=1,
        batch_size=64,
        key=jax.random.key(1),
        opt_state=r.opt_state,
        progress=False,
    )
    assert int(r2.opt_state[0].count) == 8


def test_predict_shapes():
    x, y = _toy(n=10)
    apply_fn, params = _model()
    assert predict(apply_fn, params, x, batch_size=4).shape == (10, 3)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(batch_size=0), JaxCompressValueError, "batch_size=0"),
        (dict(batch_size=10_000), JaxCompressValueError, "batch_size=10000"),
        (dict(epochs=-1), JaxCompressValueError, "epochs=-1"),
    ],
)
def test_fit_bad_arguments(kwargs, err, match):
    x, y = _toy(n=20)
    apply_fn, params = _model()
    kw = dict(
        optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0), progress=False
    )
    kw.update(kwargs)
    with pytest.raises(err, match=match):
        fit(apply_fn, params, (x, y), **kw)


def test_fit_bad_data():
    apply_fn, params = _model()
    kw = dict(
        optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0), progress=False
    )
    x, y = _toy(n=20)
    with pytest.raises(JaxCompressValueError, match="20 examples but y has 19"):
        fit(apply_fn, params, (x, y[:-1]), **kw)
    with pytest.raises(JaxCompressTypeError, match="labels must be integers"):
        fit(apply_fn, params, (x, y.astype(np.float32)), **kw)
    with pytest.raises(JaxCompressTypeError, match=r"\(x, y\) pair"):
        fit(apply_fn, params, x, **kw)
    with pytest.raises(JaxCompressTypeError, match="params must be a pytree"):
        fit(apply_fn, "weights", (x, y), **kw)


def test_progress_bar_only_on_a_terminal(capsys):
    # progress=True asked for a bar, but stderr (captured) is not a terminal: no bar in logs
    x, y = _toy(64)
    apply_fn, params = _model()
    opt = optax.sgd(0.1)
    fit(
        apply_fn,
        params,
        (x, y),
        optimizer=opt,
        epochs=1,
        batch_size=32,
        key=jax.random.key(0),
        progress=True,
    )
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "train" not in err
