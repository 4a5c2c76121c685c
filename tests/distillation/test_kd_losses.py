"""kd_loss / soft_cross_entropy / hint_loss: math against NumPy, gradients, invariances, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.distillation import (
    hint_loss,
    init_hint_projection,
    kd_loss,
    soft_cross_entropy,
)


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kd(s, t, temperature, alpha, labels):
    s, t = s.astype(np.float64), t.astype(np.float64)
    log_p = np_log_softmax(t / temperature)
    log_q = np_log_softmax(s / temperature)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    ce = -np.take_along_axis(np_log_softmax(s), labels[:, None], axis=-1)[:, 0]
    return alpha * temperature**2 * kl.mean() + (1 - alpha) * ce.mean()


def _case(seed, b, c, scale=3.0):
    rng = np.random.default_rng(seed)
    s = (scale * rng.normal(size=(b, c))).astype(np.float32)
    t = (scale * rng.normal(size=(b, c))).astype(np.float32)
    y = rng.integers(0, c, size=b).astype(np.int32)
    return s, t, y


# Shapes come from small sets and T, alpha are traced, so the jitted functions compile a few times
# only (every hypothesis example would otherwise re-trace).
B_SIZES, C_SIZES = [1, 4, 7], [2, 5, 10]


@jax.jit
def _kd_jit(s, t, y, temperature, alpha):
    return kd_loss(s, t, temperature=temperature, alpha=alpha, labels=y)


@jax.jit
def _kd_grad_jit(s, t, y, temperature, alpha):
    return jax.grad(lambda z: kd_loss(z, t, temperature=temperature, alpha=alpha, labels=y))(s)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.sampled_from(B_SIZES),
    c=st.sampled_from(C_SIZES),
    temperature=st.sampled_from([0.5, 1.0, 2.5, 4.0, 20.0]),
    alpha=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
)
def test_kd_loss_matches_numpy_reference(seed, b, c, temperature, alpha):
    s, t, y = _case(seed, b, c)
    got = float(_kd_jit(s, t, y, temperature, alpha))
    want = np_kd(s, t, temperature, alpha, y)
    # float32 rounding of the KL (~1e-7 absolute) is multiplied by T^2
    tol = 1e-5 + 2e-7 * temperature**2
    assert got == pytest.approx(want, rel=1e-4, abs=tol)
    if b == 4 and c == 5:  # eager path (Python-number T, alpha) agrees too
        eager = float(kd_loss(s, t, temperature=temperature, alpha=alpha, labels=y))
        assert eager == pytest.approx(want, rel=1e-4, abs=tol)


def test_kd_loss_golden_value():
    s = jnp.array([[2.0, 0.5, -1.0]])
    t = jnp.array([[3.0, 1.0, -2.0]])
    # CE by hand: logsumexp([2, .5, -1]) - 2
    want_ce = np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0)) - 2.0
    assert float(kd_loss(s, t, temperature=1.0, alpha=0.0, labels=jnp.array([0]))) == pytest.approx(
        want_ce, rel=1e-6
    )
    assert float(kd_loss(s, s, temperature=3.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.sampled_from(B_SIZES),
    c=st.sampled_from(C_SIZES),
    temperature=st.sampled_from([1.0, 2.5, 4.0, 20.0]),
    alpha=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_soft_term_gradient_wrt_student_logits(seed, b, c, temperature, alpha):
    s, t, y = _case(seed, b, c)
    grad = np.asarray(_kd_grad_jit(s, t, y, temperature, alpha), np.float64)
    # remove the hard term's gradient, (1 - alpha) * (softmax(s) - onehot(y)) / batch
    hard = (np.exp(np_log_softmax(s.astype(np.float64))) - np.eye(c)[y]) / b
    soft_grad = grad - (1 - alpha) * hard
    q = np.exp(np_log_softmax(s.astype(np.float64) / temperature))
    p = np.exp(np_log_softmax(t.astype(np.float64) / temperature))
    want = alpha * temperature * (q - p) / b
    np.testing.assert_allclose(soft_grad, want, rtol=2e-4, atol=3e-6)


def test_t1_alpha0_is_plain_cross_entropy():
    s, t, y = _case(1, 16, 10)
    got = kd_loss(s, t, temperature=1.0, alpha=0.0, labels=y)
    want = optax.softmax_cross_entropy_with_integer_labels(s, y).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    # the gradient too: the teacher plays no role
    g1 = jax.grad(lambda z: kd_loss(z, t, temperature=1.0, alpha=0.0, labels=y))(jnp.asarray(s))
    g2 = jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())(
        jnp.asarray(s)
    )
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-50.0, 50.0))
def test_constant_added_to_teacher_logits_changes_nothing(seed, shift):
    s, t, y = _case(seed, 6, 7)
    row_shift = np.linspace(-1, 1, 6, dtype=np.float32)[:, None] * shift  # per-example constants
    a = _kd_jit(s, t, y, 4.0, 0.7)
    b = _kd_jit(s, t + row_shift, y, 4.0, 0.7)
    assert float(a) == pytest.approx(float(b), rel=1e-4, abs=1e-5)
    ga = _kd_grad_jit(s, t, y, 4.0, 0.7)
    gb = _kd_grad_jit(s, t + row_shift, y, 4.0, 0.7)
    np.testing.assert_allclose(ga, gb, rtol=1e-3, atol=1e-6)


def test_no_gradient_reaches_the_teacher():
    s, t, y = _case(2, 5, 4)
    g_t = jax.grad(lambda tt: kd_loss(s, tt, temperature=3.0, alpha=0.8, labels=y))(jnp.asarray(t))
    assert np.all(np.asarray(g_t) == 0.0)
    # through a teacher "network" too
    w = jnp.ones((4, 4))
    g_w = jax.grad(lambda ww: kd_loss(s, t @ ww, temperature=3.0, alpha=1.0))(w)
    assert np.all(np.asarray(g_w) == 0.0)
    g_soft = jax.grad(lambda tt: soft_cross_entropy(s, tt, temperature=2.0).sum())(jnp.asarray(t))
    assert np.all(np.asarray(g_soft) == 0.0)


def test_mean_over_leading_axes_and_bfloat16():
    s, t, y = _case(3, 12, 5)
    flat = kd_loss(s, t, temperature=2.0, alpha=0.5, labels=y)
    nested = kd_loss(
        s.reshape(3, 4, 5), t.reshape(3, 4, 5), temperature=2.0, alpha=0.5, labels=y.reshape(3, 4)
    )
    assert float(flat) == pytest.approx(float(nested), rel=1e-6)
    bf = kd_loss(
        jnp.asarray(s, jnp.bfloat16),
        jnp.asarray(t, jnp.bfloat16),
        temperature=2.0,
        alpha=0.5,
        labels=y,
    )
    assert bf.dtype == jnp.float32
    assert float(bf) == pytest.approx(float(flat), rel=3e-2)


def test_jit_matches_eager_and_traced_hyperparameters():
    s, t, y = _case(4, 8, 6)
    eager = kd_loss(s, t, temperature=3.0, alpha=0.4, labels=y)
    jitted = jax.jit(lambda a, b, c: kd_loss(a, b, temperature=3.0, alpha=0.4, labels=c))(s, t, y)
    traced = jax.jit(lambda a, b, c, temp, al: kd_loss(a, b, temperature=temp, alpha=al, labels=c))(
        s, t, y, 3.0, 0.4
    )
    assert float(jitted) == pytest.approx(float(eager), rel=1e-6)
    assert float(traced) == pytest.approx(float(eager), rel=1e-6)


# ------------------------------------------------------------------------------------------ errors
def test_shape_mismatch_raises():
    with pytest.raises(JaxCompressValueError, match="student_logits.shape"):
        kd_loss(jnp.zeros((4, 10)), jnp.zeros((4, 9)), temperature=1.0, alpha=1.0)
    with pytest.raises(JaxCompressValueError, match="student_logits.shape"):
        kd_loss(jnp.zeros((4, 10)), jnp.zeros((3, 10)), temperature=1.0, alpha=1.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature):
    with pytest.raises(JaxCompressValueError, match="temperature"):
        kd_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), temperature=temperature, alpha=1.0)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha_raises(alpha):
    with pytest.raises(JaxCompressValueError, match="alpha"):
        kd_loss(
            jnp.zeros((2, 3)),
            jnp.zeros((2, 3)),
            temperature=1.0,
            alpha=alpha,
            labels=jnp.zeros(2, jnp.int32),
        )


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(JaxCompressValueError, match=r"labels must be in \[0, 3\)"):
        kd_loss(
            jnp.zeros((2, 3)),
            jnp.zeros((2, 3)),
            temperature=1.0,
            alpha=0.5,
            labels=np.array(labels, np.int32),
        )


def test_labels_missing_wrong_shape_or_dtype_raise():
    s = jnp.zeros((2, 3))
    with pytest.raises(JaxCompressValueError, match="labels are required"):
        kd_loss(s, s, temperature=1.0, alpha=0.5)
    with pytest.raises(JaxCompressValueError, match="labels.shape"):
        kd_loss(s, s, temperature=1.0, alpha=0.5, labels=np.zeros(3, np.int32))
    with pytest.raises(JaxCompressTypeError, match="integer"):
        kd_loss(s, s, temperature=1.0, alpha=0.5, labels=np.zeros(2, np.float32))
    with pytest.raises(JaxCompressTypeError, match="floating"):
        kd_loss(jnp.zeros((2, 3), jnp.int32), s, temperature=1.0, alpha=1.0)


def test_out_of_range_labels_under_jit_give_nan_not_a_wrong_number():
    # Values of traced labels cannot be checked; the documented behaviour is a NaN loss.
    f = jax.jit(
        lambda y: kd_loss(
            jnp.zeros((2, 3)), jnp.zeros((2, 3)), temperature=1.0, alpha=0.5, labels=y
        )
    )
    assert np.isnan(float(f(jnp.array([0, 7], jnp.int32))))
    assert np.isfinite(float(f(jnp.array([0, 2], jnp.int32))))


# ---------------------------------------------------------------------------------------- hints
def test_hint_loss_math_and_gradients():
    key = jax.random.key(0)
    fs = jax.random.normal(key, (5, 4))
    ft = jax.random.normal(jax.random.key(1), (5, 6))
    proj = init_hint_projection(jax.random.key(2), 4, 6)
    assert proj["kernel"].shape == (4, 6) and proj["bias"].shape == (6,)
    want = np.mean(
        (np.asarray(fs) @ np.asarray(proj["kernel"]) + np.asarray(proj["bias"]) - np.asarray(ft))
        ** 2
    )
    assert float(hint_loss(fs, ft, proj)) == pytest.approx(float(want), rel=1e-5)
    # perfect projection -> zero loss
    w = jax.random.normal(jax.random.key(3), (4, 6))
    exact = {"kernel": w, "bias": jnp.zeros(6)}
    assert float(hint_loss(fs, fs @ w, exact)) == pytest.approx(0.0, abs=1e-10)
    g_p, g_s, g_t = jax.grad(lambda p, a, b: hint_loss(a, b, p), argnums=(0, 1, 2))(proj, fs, ft)
    assert float(jnp.abs(g_p["kernel"]).sum()) > 0 and float(jnp.abs(g_s).sum()) > 0
    assert np.all(np.asarray(g_t) == 0.0)  # the teacher's features are constants
    # conv maps: the projection is a 1x1 conv over channels
    conv_s = jax.random.normal(key, (2, 3, 3, 4))
    conv_t = conv_s @ w
    assert float(hint_loss(conv_s, conv_t, exact)) == pytest.approx(0.0, abs=1e-10)


def test_hint_loss_errors():
    proj = init_hint_projection(jax.random.key(0), 4, 6)
    with pytest.raises(JaxCompressValueError, match="every axis but the last"):
        hint_loss(jnp.zeros((5, 4)), jnp.zeros((4, 6)), proj)
    with pytest.raises(JaxCompressValueError, match="must map"):
        hint_loss(jnp.zeros((5, 3)), jnp.zeros((5, 6)), proj)
    with pytest.raises(JaxCompressTypeError, match="kernel"):
        hint_loss(jnp.zeros((5, 4)), jnp.zeros((5, 6)), {"w": proj["kernel"]})
    with pytest.raises(JaxCompressValueError, match="student_dim"):
        init_hint_projection(jax.random.key(0), 0, 6)
