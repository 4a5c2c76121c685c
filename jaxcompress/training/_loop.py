"""A small jitted train/eval loop over ``(apply_fn, params)`` with any optax optimizer."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, check_pytree

__all__ = ["FitResult", "as_xy", "cross_entropy", "evaluate", "fit", "predict"]

LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits (batch, classes)`` against integer ``labels (batch,)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: the trained parameters (same structure as the input params).
      opt_state: the final optimizer state (pruning masks, QAT scales, ... live here).
      history: one dict per epoch: ``epoch``, ``loss`` (mean train loss), ``seconds`` and, when
        ``eval_data`` is given, ``eval_accuracy``.
    """

    params: Any
    opt_state: Any
    history: tuple[dict[str, float], ...]


def as_xy(data: Any, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` NumPy arrays from an ``(x, y)`` pair or a `Dataset` (its training split).

    Args:
      data: ``(x (N, ...), y (N,) integer)`` or an object with ``x_train`` / ``y_train``.
      name: the argument's name, for error messages.

    Raises:
      JaxCompressTypeError: not a pair or Dataset, or non-integer labels.
      JaxCompressValueError: x and y differ in length.
    """
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        return np.asarray(data.x_train), np.asarray(data.y_train)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise JaxCompressTypeError(
            f"{name} must be an (x, y) pair or a Dataset, got {type(data).__name__}"
        )
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.shape[0] != y.shape[0]:
        raise JaxCompressValueError(f"{name}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if not np.issubdtype(y.dtype, np.integer):
        raise JaxCompressTypeError(f"{name}: labels must be integers, got {y.dtype}")
    return x, y


def fit(
    apply_fn: Callable[..., jax.Array],
    params: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    loss_fn: LossFn | None = None,
    param_transform: Callable[[Any], Any] | None = None,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eval_data: Any = None,
    opt_state: Any = None,
    progress: bool | None = None,
) -> FitResult:
    """Train ``params`` with ``optimizer`` for ``epochs`` passes over ``data``.

    One jitted step per batch::

        loss, grads = value_and_grad(lambda p: loss_fn(param_transform(p), x, y, key))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

    so masks, QAT scales and centroids kept in the optimizer state (``optax.chain(optax.adam(...),
    jaxcompress.pruning.magnitude_pruning(...))``) and straight-through ``param_transform``s
    compose without touching the model. Batches are drawn without replacement from a permutation
    seeded by ``key``; the last incomplete batch of an epoch is dropped (one compiled shape). The
    result is deterministic for a given ``key``.

    Args:
      apply_fn: ``apply_fn(params, x, *, train, key) -> logits`` (see
        :func:`jaxcompress.models.functional`).
      params: parameter pytree (linen dict or ``nnx.State``).
      data: ``(x, y)`` with ``x (n, ...)`` float and ``y (n,)`` int labels, or a
        :class:`jaxcompress.data.Dataset` (its train split).
      optimizer: any optax gradient transformation.
      epochs: number of passes over ``data`` (>= 0).
      batch_size: examples per step (1..n).
      key: PRNG key for shuffling, dropout and augmentation.
      loss_fn: ``loss_fn(params, x, y, key) -> scalar``; default: cross-entropy of
        ``apply_fn(params, x, train=True, key=key)``.
      param_transform: ``params -> params`` applied inside the differentiated function before the
        forward pass (fake quantization, masking).
      augment: ``augment(x, key) -> x`` applied to each batch inside the step.
      eval_data: ``(x, y)`` (or a Dataset: its test split) evaluated after every epoch.
      opt_state: resume from this optimizer state instead of ``optimizer.init(params)``.
      progress: show a progress bar (default: when stderr is a terminal).

    Returns:
      A :class:`FitResult` ``(params, opt_state, history)``.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: bad ``data``, ``epochs`` or ``batch_size``.
    """
    check_pytree(params)
    x, y = as_xy(data, "data")
    n = x.shape[0]
    if not isinstance(epochs, int) or epochs < 0:
        raise JaxCompressValueError(f"{epochs=} must be an int >= 0")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise JaxCompressValueError(
            f"{batch_size=} must be an int in 1..{n} (the number of examples)"
        )
    if eval_data is not None and hasattr(eval_data, "x_test"):
        eval_data = (eval_data.x_test, eval_data.y_test)
    if progress is None:
        progress = sys.stderr.isatty()

    if loss_fn is None:

        def loss_fn(p, xb, yb, k):
            return cross_entropy(apply_fn(p, xb, train=True, key=k), yb)

    transform = param_transform if param_transform is not None else (lambda p: p)

    @jax.jit
    def step(params, opt_state, xb, yb, k):
        k_aug, k_loss = jax.random.split(k)
        if augment is not None:
            xb = augment(xb, k_aug)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(transform(p), xb, yb, k_loss))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if opt_state is None:
        opt_state = optimizer.init(params)
    steps = n // batch_size
    history = []
    shuffle_key, step_key = jax.random.split(key)
    seed = int(jax.random.randint(shuffle_key, (), 0, np.iinfo(np.int32).max))
    rng = np.random.default_rng(seed)
    # disable=None: tqdm draws only on a terminal (no carriage returns or escape codes in logs)
    bar = tqdm(total=epochs * steps, disable=None if progress else True, desc="train", unit="step")
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        losses = []
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            k = jax.random.fold_in(step_key, epoch * steps + i)
            params, opt_state, loss = step(params, opt_state, x[idx], y[idx], k)
            losses.append(loss)
            bar.update(1)
        record = {"epoch": epoch + 1, "loss": float(jnp.mean(jnp.stack(losses)))}
        if eval_data is not None:
            record["eval_accuracy"] = evaluate(
                apply_fn, transform(params), eval_data[0], eval_data[1]
            )
        record["seconds"] = time.perf_counter() - t0
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        history.append(record)
    bar.close()
    return FitResult(params=params, opt_state=opt_state, history=tuple(history))


@functools.partial(jax.jit, static_argnums=(0,))
def _logits(apply_fn, params, xb):
    return apply_fn(params, xb)


def predict(
    apply_fn: Callable[..., jax.Array], params: Any, x: Any, *, batch_size: int = 1000
) -> np.ndarray:
    """Logits of ``apply_fn`` (inference mode) over ``x``, batched; returns ``(n, classes)`` NumPy."""
    x = np.asarray(x)
    out = []
    for i in range(0, x.shape[0], batch_size):
        out.append(np.asarray(_logits(apply_fn, params, x[i : i + batch_size])))
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def evaluate(
    apply_fn: Callable[..., jax.Array], params: Any, x: Any, y: Any, *, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``apply_fn`` (inference mode) on ``x (n, ...)`` and ``y (n,)``."""
    x, y = as_xy((x, y), "eval data")
    if x.shape[0] == 0:
        raise JaxCompressValueError("eval data is empty")
    logits = predict(apply_fn, params, x, batch_size=batch_size)
    return float(np.mean(np.argmax(logits, axis=-1) == y))
