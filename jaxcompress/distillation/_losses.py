"""Distillation losses: Hinton's soft-target loss and FitNets-style hint (feature) loss.

Shapes: logits are ``(..., C)``; every leading position is one example and the loss is the mean
over all of them ("mean over the batch"). Arithmetic runs in float32 at least (bfloat16 inputs are
upcast).

==================  =============================================================================
term                formula (per example, T = temperature)
==================  =============================================================================
soft (KL)           ``T^2 * sum_c p_c (log p_c - log q_c)``, ``p = softmax(t / T)`` (teacher,
                    under ``stop_gradient``), ``q = softmax(s / T)`` (student)
hard (CE)           ``logsumexp(s) - s[label]``
``kd_loss``         ``alpha * soft + (1 - alpha) * hard``
d soft / d s        ``alpha * T * (q - p) / batch`` (the ``T^2`` keeps the soft gradients at the
                    scale of the hard ones when ``T`` changes, Hinton et al. 2015, section 2)
==================  =============================================================================
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "hint_loss",
    "init_hint_projection",
    "kd_loss",
    "soft_cross_entropy",
]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_temperature_alpha(temperature: Any, alpha: Any) -> None:
    if _is_concrete(temperature):
        t = np.asarray(temperature)
        if t.ndim != 0 or not np.issubdtype(t.dtype, np.number):
            raise JaxCompressTypeError(f"{temperature=} must be a real scalar")
        if not (float(t) > 0.0 and np.isfinite(float(t))):
            raise JaxCompressValueError(f"{temperature=} must be a finite number > 0")
    if _is_concrete(alpha):
        a = np.asarray(alpha)
        if a.ndim != 0 or not np.issubdtype(a.dtype, np.number):
            raise JaxCompressTypeError(f"{alpha=} must be a real scalar")
        if not 0.0 <= float(a) <= 1.0:
            raise JaxCompressValueError(f"{alpha=} must be in [0, 1]")


def _as_float(x: Any, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise JaxCompressTypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.ndim < 1:
        raise JaxCompressValueError(f"{name} must have shape (..., num_classes), got {x.shape}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_labels(labels: Any, logits_shape: tuple[int, ...]) -> jax.Array:
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise JaxCompressTypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(logits_shape[:-1]):
        raise JaxCompressValueError(
            f"labels.shape={tuple(labels.shape)} must equal the logits' leading shape "
            f"{tuple(logits_shape[:-1])}"
        )
    num_classes = logits_shape[-1]
    if _is_concrete(labels) and labels.size:
        lo, hi = int(np.min(labels)), int(np.max(labels))
        if lo < 0 or hi >= num_classes:
            raise JaxCompressValueError(
                f"labels must be in [0, {num_classes}) (num_classes={num_classes}), "
                f"got min={lo}, max={hi}"
            )
    return jnp.asarray(labels)


def _hard_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy; out-of-range labels give NaN (gather ``mode="fill"``)."""
    picked = jnp.take_along_axis(
        logits, labels[..., None].astype(jnp.int32), axis=-1, mode="fill", fill_value=jnp.nan
    )[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def soft_cross_entropy(
    student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
    """Per-example ``KL(softmax(t / T) || softmax(s / T))`` (no ``T^2`` factor, no mean).

    The teacher is under ``stop_gradient``. KL differs from the soft cross-entropy
    ``-sum p log q`` only by the teacher's entropy, a constant for the student, so both give the
    same gradients; KL is used because it is 0 when the student matches the teacher.

    Args:
      student_logits: ``(..., C)`` floating.
      teacher_logits: ``(..., C)`` floating, same shape.
      temperature: ``T > 0``.

    Returns:
      ``(...)`` float32 (or wider) per-example divergences.
    """
    s = _as_float(student_logits, "student_logits")
    t = jax.lax.stop_gradient(_as_float(teacher_logits, "teacher_logits"))
    if s.shape != t.shape:
        raise JaxCompressValueError(
            f"student_logits.shape={s.shape} must equal teacher_logits.shape={t.shape}"
        )
    _check_temperature_alpha(temperature, 0.0)
    log_p = jax.nn.log_softmax(t / temperature, axis=-1)
    log_q = jax.nn.log_softmax(s / temperature, axis=-1)
    p = jnp.exp(log_p)
    return jnp.sum(p * (log_p - log_q), axis=-1)


def kd_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    temperature: float,
    alpha: float,
    labels: jax.Array | None = None,
) -> jax.Array:
    r"""Knowledge-distillation loss of Hinton et al. (2015).

    ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)``,
    averaged over every leading position (the batch). The teacher logits are under
    ``jax.lax.stop_gradient``: no gradient ever reaches the teacher. The soft term's gradient with
    respect to the student logits is ``alpha * T * (softmax(s / T) - softmax(t / T)) / batch``.
    Adding a constant to the teacher's (or student's) logits of an example changes nothing.

    Args:
      student_logits: ``(..., C)`` floating; ``(batch, num_classes)`` for a classifier.
      teacher_logits: ``(..., C)`` floating, same shape as ``student_logits``.
      temperature: ``T > 0``; Hinton used ``T = 20`` for the 2x800 MNIST student and
        ``T`` in 2.5-4 for a 2x30 one.
      alpha: weight of the soft term in ``[0, 1]``. ``alpha=1`` is pure distillation
        (``labels`` may then be ``None``); ``alpha=0`` with ``T=1`` is plain cross-entropy.
      labels: ``(...)`` integer class ids in ``[0, C)``, required when ``alpha < 1``.

    Returns:
      A float32 scalar.

    Raises:
      JaxCompressValueError: shapes differ, ``temperature <= 0``, ``alpha`` outside ``[0, 1]``,
        labels missing when ``alpha < 1``, labels of the wrong shape, or labels out of range.
      JaxCompressTypeError: non-floating logits or non-integer labels.

    Under ``jax.jit`` the shape checks still run (shapes are static) and so do the checks of
    Python-number ``temperature`` / ``alpha``; label *values* are only checked when they are
    concrete (outside jit). Inside jit an out-of-range label makes the loss ``NaN`` rather than a
    silently wrong number.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([[2.0, 0.5, -1.0]]); t = jnp.array([[3.0, 1.0, -2.0]])
      >>> loss = kd_loss(s, t, temperature=1.0, alpha=0.0, labels=jnp.array([0]))
      >>> round(float(loss), 4)  # plain cross-entropy: logsumexp(s) - s[0]
      0.2413

    References:
      Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015.
    """
    s = _as_float(student_logits, "student_logits")
    t = _as_float(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise JaxCompressValueError(
            f"student_logits.shape={s.shape} must equal teacher_logits.shape={t.shape}"
        )
    _check_temperature_alpha(temperature, alpha)
    alpha_is_one = _is_concrete(alpha) and float(alpha) == 1.0
    if labels is None and not alpha_is_one:
        raise JaxCompressValueError(f"labels are required when {alpha=} < 1")

    soft = jnp.mean(soft_cross_entropy(s, t, temperature=temperature))
    loss = alpha * (temperature**2) * soft
    if not alpha_is_one:
        lab = _check_labels(labels, s.shape)
        hard = jnp.mean(_hard_ce(s, lab))
        loss = loss + (1.0 - alpha) * hard
    return loss


def init_hint_projection(
    key: jax.Array, student_dim: int, teacher_dim: int, *, dtype: Any = jnp.float32
) -> dict[str, jax.Array]:
    """Initialise the learned projection (regressor) of hint distillation.

    A linear map applied along the last (feature/channel) axis of the student's hint, i.e. a
    Dense layer for ``(batch, d)`` features and a 1x1 convolution for ``(batch, H, W, C)`` maps.

    Args:
      key: PRNG key.
      student_dim: ``d_s``, the student feature width.
      teacher_dim: ``d_t``, the teacher feature width.
      dtype: parameter dtype.

    Returns:
      ``{"kernel": (d_s, d_t), "bias": (d_t,)}`` (LeCun-normal kernel, zero bias).
    """
    for name, v in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
        if not isinstance(v, numbers.Integral) or v < 1:
            raise JaxCompressValueError(f"{name}={v!r} must be a positive int")
    kernel = jax.nn.initializers.lecun_normal()(key, (student_dim, teacher_dim), dtype)
    return {"kernel": kernel, "bias": jnp.zeros((teacher_dim,), dtype)}


def hint_loss(
    student_features: jax.Array,
    teacher_features: jax.Array,
    projection: dict[str, jax.Array],
) -> jax.Array:
    """FitNets hint loss: mean squared error between the projected student and teacher features.

    ``mean((student_features @ kernel + bias - stop_gradient(teacher_features))^2)`` over every
    element. FitNets writes ``1/2 ||.||^2`` summed over features; the mean keeps the weight of the
    term independent of the feature size (a constant factor, absorbed by the hint weight).

    Args:
      student_features: ``(..., d_s)`` floating.
      teacher_features: ``(..., d_t)`` floating; the leading shape must equal the student's.
      projection: ``{"kernel": (d_s, d_t), "bias": (d_t,)}`` from :func:`init_hint_projection`
        (trained together with the student).

    Returns:
      A float32 scalar.

    Raises:
      JaxCompressValueError: leading shapes differ or the projection does not map ``d_s -> d_t``.

    References:
      Romero et al. "FitNets: Hints for Thin Deep Nets", 2015.
    """
    s = _as_float(student_features, "student_features")
    t = jax.lax.stop_gradient(_as_float(teacher_features, "teacher_features"))
    if s.shape[:-1] != t.shape[:-1]:
        raise JaxCompressValueError(
            f"student_features.shape={s.shape} and teacher_features.shape={t.shape} must agree "
            "on every axis but the last"
        )
    if not isinstance(projection, dict) or set(projection) != {"kernel", "bias"}:
        raise JaxCompressTypeError("projection must be a dict with keys 'kernel' and 'bias'")
    kernel, bias = projection["kernel"], projection["bias"]
    if tuple(kernel.shape) != (s.shape[-1], t.shape[-1]) or tuple(bias.shape) != (t.shape[-1],):
        raise JaxCompressValueError(
            f"projection kernel {tuple(kernel.shape)} / bias {tuple(bias.shape)} must map "
            f"d_s={s.shape[-1]} to d_t={t.shape[-1]}"
        )
    pred = s @ kernel.astype(s.dtype) + bias.astype(s.dtype)
    return jnp.mean(jnp.square(pred - t))
