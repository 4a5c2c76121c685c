"""Distillation trainer: a frozen teacher, a student trained by any optax optimizer, 1 or N devices.

The loop is :func:`jaxcompress.training.fit`'s (same shuffling, key schedule and history records),
with the step from :func:`make_train_step`, so that the batch can be sharded over a device mesh
and the teacher's parameters are a (replicated) argument rather than constants baked into the
compiled step. With ``mesh=None`` it gives exactly ``fit(..., loss_fn=distillation_loss(...))``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, check_pytree
from jaxcompress.distillation._losses import _check_temperature_alpha, hint_loss, kd_loss
from jaxcompress.distillation._parallel import (
    make_train_step,
    process_slice,
    replicate,
    shard_batch,
)
from jaxcompress.training import (
    FitResult,
    as_xy,  # one (x, y) / Dataset validator for both loops
    evaluate,
    predict,
)

__all__ = ["distill", "distillation_loss"]

ApplyFn = Callable[..., Any]


def _check_hint_params(params: Any) -> None:
    if not (isinstance(params, dict) and set(params) == {"student", "projections"}):
        raise JaxCompressTypeError(
            "with hint_weight > 0 the trained params must be "
            "{'student': student_params, 'projections': (projection, ...)}"
        )


def _make_loss(
    student_apply: ApplyFn,
    teacher_apply: ApplyFn | None,
    *,
    temperature: float,
    alpha: float,
    hint_weight: float,
    transform: Callable[[Any], Any],
) -> Callable[..., jax.Array]:
    """``loss(params, x, y, key, teacher_params)``; ``y`` may be ``(labels, teacher_logits)``."""

    def loss(params, x, y, key, teacher_params):
        if isinstance(y, tuple):  # teacher logits precomputed over the data set
            labels, t_logits = y
            s_logits = student_apply(transform(params), x, train=True, key=key)
            return kd_loss(s_logits, t_logits, temperature=temperature, alpha=alpha, labels=labels)
        teacher_params = jax.lax.stop_gradient(teacher_params)
        if hint_weight == 0.0:
            s_logits = student_apply(transform(params), x, train=True, key=key)
            t_logits = teacher_apply(teacher_params, x)
            return kd_loss(s_logits, t_logits, temperature=temperature, alpha=alpha, labels=y)
        _check_hint_params(params)
        s_logits, s_feats = student_apply(transform(params["student"]), x, train=True, key=key)
        t_logits, t_feats = teacher_apply(teacher_params, x)
        projections = tuple(params["projections"])
        if not len(s_feats) == len(t_feats) == len(projections):
            raise JaxCompressValueError(
                f"hint distillation needs as many student features ({len(s_feats)}), teacher "
                f"features ({len(t_feats)}) and projections ({len(projections)})"
            )
        hint = sum(
            hint_loss(s, t, p) for s, t, p in zip(s_feats, t_feats, projections, strict=True)
        )
        kd = kd_loss(s_logits, t_logits, temperature=temperature, alpha=alpha, labels=y)
        return kd + hint_weight * hint / len(projections)

    return loss


def distillation_loss(
    student_apply: ApplyFn,
    teacher_apply: ApplyFn,
    teacher_params: Any,
    *,
    temperature: float,
    alpha: float,
    hint_weight: float = 0.0,
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    """A ``loss_fn(params, x, y, key)`` for :func:`jaxcompress.training.fit` (teacher closed over).

    ``kd_loss(student_apply(params, x, train=True, key=key), teacher_apply(teacher_params, x),
    temperature=T, alpha=alpha, labels=y)`` (+ ``hint_weight`` x the mean hint loss). The teacher
    runs in inference mode under ``stop_gradient``. ``fit`` applies its ``param_transform``
    before calling the loss, so pruning masks / fake quantization act on the student only.

    Args:
      student_apply: ``apply(params, x, *, train, key) -> logits``
        (:func:`jaxcompress.models.functional`), or with ``hint_weight > 0`` a
        :func:`feature_extractor` returning ``(logits, features)``.
      teacher_apply: same for the teacher.
      teacher_params: the frozen teacher's params.
      temperature: ``T > 0``.
      alpha: soft-term weight in ``[0, 1]``.
      hint_weight: weight of the hint (feature) loss; with ``> 0`` the trained params are
        ``{"student": student_params, "projections": (init_hint_projection(...), ...)}``, one
        projection per feature path, and ``param_transform`` must accept that dict.

    Returns:
      ``loss_fn(params, x, y, key) -> scalar``.
    """
    _check_temperature_alpha(temperature, alpha)
    if hint_weight < 0:
        raise JaxCompressValueError(f"{hint_weight=} must be >= 0")
    loss = _make_loss(
        student_apply,
        teacher_apply,
        temperature=temperature,
        alpha=alpha,
        hint_weight=float(hint_weight),
        transform=lambda p: p,
    )
    if hint_weight > 0:
        # fit applies param_transform to the whole dict; the inner loss must not do it again.
        def fit_loss(params, x, y, key):
            return loss(params, x, y, key, teacher_params)

        return fit_loss
    return lambda params, x, y, key: loss(params, x, y, key, teacher_params)


def distill(
    student_apply: ApplyFn,
    student_params: Any,
    teacher_apply: ApplyFn,
    teacher_params: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    temperature: float,
    alpha: float,
    hint_weight: float = 0.0,
    param_transform: Callable[[Any], Any] | None = None,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eval_data: Any = None,
    opt_state: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    precompute_teacher: bool = False,
    progress: bool | None = None,
) -> FitResult:
    """Distil a frozen teacher into a student (Hinton et al. 2015), on one device or data-parallel.

    Per step (jitted; ``k_aug, k = split(fold_in(step_key, step))`` as in ``fit``)::

        x = augment(x, k_aug)                                   # if given
        loss = kd_loss(student_apply(param_transform(p), x, train=True, key=k),
                       teacher_apply(stop_gradient(teacher_params), x),
                       temperature=T, alpha=alpha, labels=y)   # (+ hint term)
        updates, opt_state = optimizer.update(grad(loss), opt_state, p)
        p = optax.apply_updates(p, updates)

    Composes with compression: put pruning / QAT transforms in ``optimizer``
    (``optax.chain(optax.adam(1e-3), magnitude_pruning(...))``) and/or pass a straight-through
    ``param_transform`` (fake quantization, masking) to distil into a pruned or quantized student.
    Deterministic for a given ``key`` (and the same device count).

    Data parallel: pass ``mesh=data_mesh()``. Each global batch of ``batch_size`` examples is
    sharded along the mesh's data axis, the student, teacher and optimizer state are replicated, and
    XLA all-reduces the gradients; the result equals the single-device one up to float summation
    order. With several processes (``jax.distributed.initialize``), every process calls ``distill``
    with the same arguments and the same ``data``; each one feeds only its own rows of each batch.

    Args:
      student_apply: ``apply(params, x, *, train, key) -> logits`` of the student
        (:func:`jaxcompress.models.functional`); with ``hint_weight > 0`` a
        :func:`feature_extractor` returning ``(logits, features)``.
      student_params: the student's params (with hints: ``{"student": ..., "projections": (...)}``).
      teacher_apply: ``apply(params, x) -> logits`` of the teacher (called in inference mode), or
        its :func:`feature_extractor` with hints.
      teacher_params: the teacher's params; never updated, no gradient reaches them.
      data: ``(x, y)`` NumPy arrays (``x (n, ...)``, ``y (n,)`` int) or a ``Dataset``.
      optimizer: any optax gradient transformation.
      epochs: passes over ``data`` (>= 0).
      batch_size: global examples per step; divisible by the number of devices in ``mesh``.
      key: PRNG key (shuffling, dropout, augmentation).
      temperature: ``T > 0`` of :func:`kd_loss`.
      alpha: soft-term weight in ``[0, 1]``.
      hint_weight: weight of the mean hint loss over the feature paths (0: logits only).
      param_transform: ``params -> params`` applied to the student params before its forward pass.
      augment: ``augment(x, key) -> x`` inside the step (then the teacher sees the augmented x).
      eval_data: ``(x, y)`` or a Dataset (its test split) evaluated after every epoch.
      opt_state: resume from this optimizer state.
      mesh: a 1-D device mesh (:func:`data_mesh`) for data parallelism; ``None``: one device.
      precompute_teacher: run the teacher once over ``data`` and reuse its logits (exact when the
        teacher is deterministic and there is no ``augment``; saves a teacher forward pass per
        step). Not with hints.
      progress: progress bar (default: when stderr is a terminal; only on process 0).

    Returns:
      :class:`jaxcompress.training.FitResult` ``(params, opt_state, history)``; history records
      ``epoch``, ``loss``, ``seconds`` and ``eval_accuracy`` (with ``eval_data``).

    Raises:
      JaxCompressValueError / JaxCompressTypeError: bad ``data``, ``epochs``, ``batch_size``,
        ``temperature``, ``alpha``, ``hint_weight``, or incompatible options.

    References:
      Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network", 2015.
      Romero et al. "FitNets: Hints for Thin Deep Nets", 2015.
    """
    check_pytree(student_params)
    x, y = as_xy(data, "data")
    n = x.shape[0]
    _check_temperature_alpha(temperature, alpha)
    if not isinstance(epochs, int) or epochs < 0:
        raise JaxCompressValueError(f"{epochs=} must be an int >= 0")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise JaxCompressValueError(
            f"{batch_size=} must be an int in 1..{n} (the number of examples)"
        )
    if not hint_weight >= 0:
        raise JaxCompressValueError(f"{hint_weight=} must be >= 0")
    if hint_weight > 0:
        _check_hint_params(student_params)
    if precompute_teacher and (augment is not None or hint_weight > 0):
        raise JaxCompressValueError(
            "precompute_teacher=True needs a fixed input per example: no augment, no hints"
        )
    if mesh is not None:
        process_slice(batch_size, mesh)  # validates divisibility
    if eval_data is not None and hasattr(eval_data, "x_test"):
        eval_data = (eval_data.x_test, eval_data.y_test)
    if progress is None:
        progress = sys.stderr.isatty()
    progress = progress and jax.process_index() == 0

    transform = param_transform if param_transform is not None else (lambda p: p)
    inner = _make_loss(
        student_apply,
        teacher_apply,
        temperature=temperature,
        alpha=alpha,
        hint_weight=float(hint_weight),
        transform=transform,
    )
    if hint_weight > 0:

        def eval_apply(p, xb):
            return student_apply(p, xb)[0]

        def eval_params(p):
            return transform(p["student"])

        def teacher_logits_fn(p, xb):
            return teacher_apply(p, xb)[0]

    else:
        eval_apply, eval_params, teacher_logits_fn = student_apply, transform, teacher_apply

    # Host-side checks before anything compiles: logits shapes agree, labels in range.
    s_shape = jax.eval_shape(lambda p, xb: eval_apply(p, xb), eval_params(student_params), x[:1])
    t_shape = jax.eval_shape(lambda p, xb: teacher_logits_fn(p, xb), teacher_params, x[:1])
    if s_shape.shape != t_shape.shape:
        raise JaxCompressValueError(
            f"student logits {s_shape.shape} and teacher logits {t_shape.shape} (for one example)"
            " must have the same shape"
        )
    num_classes = s_shape.shape[-1]
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise JaxCompressValueError(
            f"labels must be in [0, {num_classes}) (num_classes={num_classes}), "
            f"got min={int(y.min())}, max={int(y.max())}"
        )

    if precompute_teacher:
        t_logits = predict(teacher_apply, _host(teacher_params), x)
        if t_logits.ndim != 2 or t_logits.shape[0] != n:
            raise JaxCompressValueError(f"teacher logits have shape {t_logits.shape}")
        targets: Any = (y, t_logits.astype(np.float32))
    else:
        targets = y

    def loss_fn(params, xb, yb, key_data, teacher):
        key = jax.random.wrap_key_data(key_data)
        k_aug, k_loss = jax.random.split(key)
        if augment is not None:
            xb = augment(xb, k_aug)
        return inner(params, xb, yb, k_loss, teacher)

    step = make_train_step(loss_fn, optimizer, mesh=mesh)
    if opt_state is None:
        opt_state = optimizer.init(student_params)
    params = student_params
    teacher = teacher_params
    if mesh is not None:
        params, opt_state, teacher = replicate((params, opt_state, teacher), mesh)
        rows = process_slice(batch_size, mesh)
    else:
        rows = slice(0, batch_size)

    def put_batch(xb, yb):
        if mesh is None:
            return xb, yb
        return shard_batch((xb, yb), mesh)

    def put_key(k):
        kd = np.asarray(jax.random.key_data(k))
        return kd if mesh is None else replicate(kd, mesh)

    steps = n // batch_size
    history = []
    shuffle_key, step_key = jax.random.split(key)
    seed = int(jax.random.randint(shuffle_key, (), 0, np.iinfo(np.int32).max))
    rng = np.random.default_rng(seed)
    # disable=None: tqdm draws only on a terminal (no carriage returns or escape codes in logs)
    bar = tqdm(
        total=epochs * steps, disable=None if progress else True, desc="distill", unit="step"
    )
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        losses = []
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size][rows]
            yb = jax.tree.map(lambda a, idx=idx: a[idx], targets)
            xb, yb = put_batch(x[idx], yb)
            k = put_key(jax.random.fold_in(step_key, epoch * steps + i))
            params, opt_state, loss = step(params, opt_state, xb, yb, k, teacher)
            losses.append(loss)
            bar.update(1)
        record = {"epoch": epoch + 1, "loss": float(np.mean([np.asarray(v) for v in losses]))}
        if eval_data is not None:
            record["eval_accuracy"] = evaluate(
                eval_apply, eval_params(_host(params)), eval_data[0], eval_data[1]
            )
        record["seconds"] = time.perf_counter() - t0
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        history.append(record)
    bar.close()
    return FitResult(params=params, opt_state=opt_state, history=tuple(history))


def _host(tree: Any) -> Any:
    """Fully replicated (or single-device) arrays -> NumPy, for host-side evaluation."""
    return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, tree)
