"""Iterative prune-and-retrain in the manner of Han et al. 2015, built on ``training.fit``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcompress._core import JaxCompressValueError
from jaxcompress.pruning._distributions import Distribution, resolve
from jaxcompress.pruning._masks import apply_masks, magnitude_masks, sparsity_report
from jaxcompress.pruning._transform import fixed_masks

__all__ = ["IterativePruningResult", "iterative_pruning"]


@dataclasses.dataclass(frozen=True)
class IterativePruningResult:
    """What :func:`iterative_pruning` returns.

    Attributes:
      params: the pruned, retrained params (pruned weights exactly 0).
      masks: the final bool masks.
      rounds: one dict per round: ``round``, ``sparsity`` (over the selected leaves), ``history``
        (the ``fit`` history of the retraining) and, with ``eval_data``, ``eval_accuracy``.
    """

    params: Any
    masks: Any
    rounds: tuple[dict[str, Any], ...]


def _scaled(dist: Distribution, frac: float) -> Any:
    """A distribution at ``frac`` of the way to its targets."""
    from jaxcompress.pruning._distributions import ERK, Explicit, Uniform

    if isinstance(dist, Uniform):
        return Uniform(dist.sparsity * frac)
    if isinstance(dist, ERK):
        return ERK(dist.sparsity * frac, dist.power)
    if isinstance(dist, Explicit):
        return Explicit(tuple((p, s * frac) for p, s in dist.rules), dist.default * frac)
    raise JaxCompressValueError(f"iterative_pruning: unsupported distribution {dist!r}")


def iterative_pruning(
    apply_fn: Callable[..., jax.Array],
    params: Any,
    data: Any,
    *,
    target: Any,
    rounds: int,
    epochs_per_round: int,
    optimizer: optax.GradientTransformation,
    batch_size: int,
    key: jax.Array,
    scope: str = "layer",
    where=None,
    power: float = 3.0,
    eval_data: Any = None,
    progress: bool | None = None,
    **fit_kwargs: Any,
) -> IterativePruningResult:
    """Reach ``target`` sparsity in ``rounds`` of magnitude pruning, retraining after each round.

    Round ``r = 1..R`` prunes (magnitude, exactly ``round(s_r * n)``) to
    ``s_r = target * (1 - (1 - r / R) ** power)`` (Zhu & Gupta's curve sampled at the rounds;
    ``power=1`` is linear), then retrains ``epochs_per_round`` epochs with ``optimizer`` while the
    masks are held fixed by :func:`fixed_masks` (pruned weights exactly 0 throughout). Han et al.
    retrain at a lower learning rate than the dense training (1/10): pass that in ``optimizer``.

    Departure from the paper: Han et al. prune with a per-layer threshold ``quality * std``; this
    helper prunes exact per-layer counts, which makes the per-layer kept fractions a direct input
    (``target=explicit({...})``) rather than a by-product of the quality parameter.

    Args:
      apply_fn: ``apply_fn(params, x, *, train, key) -> logits``.
      params: trained dense params.
      data: ``(x, y)`` or a Dataset.
      target: float final sparsity, or a distribution / dict ``{regex: sparsity}``.
      rounds: number of prune-retrain rounds (>= 1).
      epochs_per_round: retraining epochs after each pruning step (>= 0).
      optimizer: the retraining optimizer (low learning rate).
      batch_size: retraining batch size.
      key: PRNG key (split per round).
      scope: ``"layer"`` or ``"global"`` (global needs a float ``target``).
      where: selection.
      power: shape of the per-round targets.
      eval_data: evaluated after every round.
      progress: progress bars of ``fit``.
      **fit_kwargs: passed to :func:`jaxcompress.training.fit` (``loss_fn``, ``augment``...).

    Returns:
      :class:`IterativePruningResult`.

    References:
      Han, Pool, Tran, Dally. "Learning both Weights and Connections for Efficient Neural
      Networks", NeurIPS 2015.
    """
    from jaxcompress.training import evaluate, fit

    if not isinstance(rounds, int) or rounds < 1:
        raise JaxCompressValueError(f"{rounds=} must be an int >= 1")
    dist = resolve(target)
    if scope == "global" and not isinstance(target, (int, float)):
        raise JaxCompressValueError("scope='global' needs a float target")
    out_rounds = []
    masks = None
    for r in range(1, rounds + 1):
        frac = 1.0 - (1.0 - r / rounds) ** power
        if scope == "global":
            masks_r = magnitude_masks(params, float(target) * frac, scope="global", where=where)
        else:
            masks_r = magnitude_masks(params, _scaled(dist, frac), where=where)
        if masks is not None:  # never regrow (pruned weights are 0 and rank first anyway)
            masks_r = jax.tree.map(jnp.logical_and, masks_r, masks)
        masks = masks_r
        params = apply_masks(params, masks)
        key, sub = jax.random.split(key)
        opt = optax.chain(optimizer, fixed_masks(masks))
        hist: tuple = ()
        if epochs_per_round > 0:
            res = fit(
                apply_fn,
                params,
                data,
                optimizer=opt,
                epochs=epochs_per_round,
                batch_size=batch_size,
                key=sub,
                progress=progress,
                **fit_kwargs,
            )
            params, hist = res.params, res.history
        rec: dict[str, Any] = {
            "round": r,
            "sparsity": sparsity_report(params, where=where).sparsity
            if where is not None
            else sparsity_report(params).sparsity,
            "history": hist,
        }
        if eval_data is not None:
            ev = (eval_data.x_test, eval_data.y_test) if hasattr(eval_data, "x_test") else eval_data
            rec["eval_accuracy"] = evaluate(apply_fn, params, ev[0], ev[1])
        out_rounds.append(rec)
    return IterativePruningResult(params=params, masks=masks, rounds=tuple(out_rounds))
