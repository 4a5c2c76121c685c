"""Pruning as optax gradient transformations; the masks live in the optimizer state.

Put the pruning transform LAST in the chain, after the optimizer::

    opt = optax.chain(optax.adam(1e-3), magnitude_pruning(polynomial(0.9, begin_step=0,
                                                                     end_step=2000)))

On a scheduled step the masks are recomputed from the current ``params`` (inside ``lax.cond``, so
the jitted train step compiles once). The outgoing updates are ``u' = where(mask, u, -p)``: for a
pruned entry ``p + u' = p - p = 0`` exactly in IEEE arithmetic, so after ``optax.apply_updates``
every pruned weight is exactly ``0`` -- including the step on which it is pruned -- and stays 0.

Masks never regrow within a run: on recomputation, weights already pruned rank below every live
weight (so they are pruned first), and the new masks are ANDed with the old ones. If a schedule
decreases, the sparsity therefore stays at its maximum so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxcompress._core import JaxCompressValueError, named_leaves, selection_mask
from jaxcompress.pruning._distributions import ERK, Distribution, resolve
from jaxcompress.pruning._masks import (
    _check_masks,
    _check_nm,
    _layer_ks,
    _magnitude_keep,
    _nm_axis_check,
    _nm_keep,
    _num_to_prune,
)
from jaxcompress.pruning._schedules import ConstantSchedule, Schedule

__all__ = [
    "MagnitudePruningState",
    "NMPruningState",
    "FixedMasksState",
    "magnitude_pruning",
    "nm_pruning",
    "fixed_masks",
]


class MagnitudePruningState(NamedTuple):
    """State of :func:`magnitude_pruning`.

    Attributes:
      count: int32 scalar, number of ``update`` calls so far (the schedule's step).
      masks: bool pytree with the structure of params (``True`` = keep; unselected leaves all True).
    """

    count: jax.Array
    masks: Any


class NMPruningState(NamedTuple):
    """State of :func:`nm_pruning`: ``count`` (int32) and ``masks`` (bool pytree)."""

    count: jax.Array
    masks: Any


class FixedMasksState(NamedTuple):
    """State of :func:`fixed_masks`: the masks it enforces."""

    masks: Any


def _need_params(params, name):
    if params is None:
        raise JaxCompressValueError(
            f"{name} needs the current params: call update(updates, state, params)"
        )


def _masked_updates(updates, params, masks):
    """``where(mask, u, -p)`` so that ``p + u == 0`` exactly where pruned."""

    def f(u, p, m):
        if u is None:
            return None
        return jnp.where(m, u, (-jnp.asarray(p)).astype(u.dtype))

    return jax.tree.map(f, updates, params, masks)


def _ones_like_masks(params):
    return jax.tree.map(lambda x: jnp.ones(jnp.shape(x), bool), params)


def magnitude_pruning(
    schedule: Schedule | Callable[[Any], Any] | float,
    *,
    scope: str = "layer",
    where=None,
    distribution: str | Distribution | dict | None = None,
) -> optax.GradientTransformation:
    """Gradual magnitude pruning as an optax transform (masks in the state).

    At step ``t`` (the state's ``count``) with ``schedule.is_update_step(t)`` true and
    ``s_t = schedule(t) > 0``, masks are recomputed from the current params: exactly
    ``round(s_l * n_l)`` smallest magnitudes per leaf (``scope="layer"``), or ``round(s_t * N)``
    over all selected leaves (``scope="global"``), then ANDed with the previous masks.

    Args:
      schedule: a schedule (:func:`constant`, :func:`one_shot`, :func:`polynomial`), any
        ``step -> sparsity`` callable (masks then recomputed every step), or a float (constant).
      scope: ``"layer"`` or ``"global"``.
      where: selection (DESIGN §3); default: floating leaves with ``ndim >= 2``.
      distribution: per-layer targets for ``scope="layer"``: ``None``/``"uniform"`` (every leaf
        at ``s_t``), ``"erk"`` (ERK reaching ``s_t`` overall), or a distribution / dict
        ``{regex: sparsity}`` giving each leaf's final target, followed along the schedule as
        ``s_leaf * s_t / schedule.final_sparsity``.

    Returns:
      An ``optax.GradientTransformation`` whose state is :class:`MagnitudePruningState`. Its
      ``update`` needs ``params``.

    Raises:
      JaxCompressValueError: bad scope, sparsity, or a distribution with ``scope="global"``.

    Example:
      >>> opt = optax.chain(optax.adam(1e-3),
      ...                   magnitude_pruning(polynomial(0.9, begin_step=0, end_step=1000)))

    References:
      Zhu, Gupta. "To prune, or not to prune", 2017.
    """
    if scope not in ("layer", "global"):
        raise JaxCompressValueError(f"{scope=} must be 'layer' or 'global'")
    if isinstance(schedule, (int, float)):
        schedule = ConstantSchedule(float(schedule))
    if not callable(schedule):
        raise JaxCompressValueError(
            f"{schedule=} must be a schedule or a step -> sparsity callable"
        )
    if scope == "global" and distribution not in (None, "uniform"):
        raise JaxCompressValueError("distribution= needs scope='layer'")
    final = getattr(schedule, "final_sparsity", None)
    if isinstance(distribution, str):
        if distribution not in ("uniform", "erk"):
            raise JaxCompressValueError(f"{distribution=} must be 'uniform', 'erk' or a mapping")
        if distribution == "uniform":
            distribution = None
    elif distribution is not None:
        distribution = resolve(distribution)
    if distribution is not None and final is None:
        raise JaxCompressValueError(
            "a per-layer distribution needs a schedule with final_sparsity (constant, one_shot, "
            "polynomial)"
        )
    is_update = getattr(schedule, "is_update_step", lambda step: jnp.bool_(True))

    def init(params):
        selection_mask(params, where)  # validate early
        return MagnitudePruningState(count=jnp.zeros([], jnp.int32), masks=_ones_like_masks(params))

    def update(updates, state, params=None):
        _need_params(params, "magnitude_pruning")
        sel = selection_mask(params, where)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        paths = [p for p, _ in named_leaves(params)]
        old = treedef.flatten_up_to(state.masks)
        xs = [jnp.asarray(x) for x, s in zip(leaves, sel, strict=True) if s]
        prev = [m for m, s in zip(old, sel, strict=True) if s]
        named_shapes = [
            (p, tuple(jnp.shape(x))) for p, x, s in zip(paths, leaves, sel, strict=True) if s
        ]
        step = state.count
        s_t = jnp.asarray(schedule(step), jnp.float32)

        def recompute():
            if scope == "global":
                ks = _num_to_prune(s_t, sum(int(x.size) for x in xs))
            elif distribution is None:
                ks = [_num_to_prune(s_t, math.prod(sh)) for _, sh in named_shapes]
            elif distribution == "erk":
                ks = _layer_ks(
                    named_shapes, ERK(final if final else 0.0), s_t / final if final else 0.0
                )
            else:
                progress = s_t / final if final else jnp.float32(0.0)
                ks = _layer_ks(named_shapes, distribution, progress)
            keep = _magnitude_keep(xs, ks, scope, prev=prev)
            return [k & p for k, p in zip(keep, prev, strict=True)]

        new = lax.cond(is_update(step) & (s_t > 0), recompute, lambda: list(prev))
        it = iter(new)
        masks_flat = [next(it) if s else m for m, s in zip(old, sel, strict=True)]
        masks = jax.tree_util.tree_unflatten(treedef, masks_flat)
        updates = _masked_updates(updates, params, masks)
        return updates, MagnitudePruningState(count=optax.safe_int32_increment(step), masks=masks)

    return optax.GradientTransformation(init, update)


def nm_pruning(
    n: int,
    m: int,
    *,
    begin_step: int = 0,
    frequency: int | None = None,
    where=None,
    axis: int = -2,
) -> optax.GradientTransformation:
    """N:M structured pruning as an optax transform (see :func:`nm_masks` for the groups).

    Dense before ``begin_step``; masks computed at ``begin_step`` and, if ``frequency`` is given,
    every ``frequency`` steps after it (weights already pruned rank lowest, so they stay pruned).

    Args:
      n: weights kept per group, ``0 <= n <= m``.
      m: group size along ``axis``.
      begin_step: step at which the masks are first computed.
      frequency: recompute period, or ``None`` for once.
      where: selection.
      axis: reduction axis (``-2``: Dense ``in``, conv ``in_channels``).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`NMPruningState`.
    """
    _check_nm(n, m)
    if not isinstance(begin_step, int) or begin_step < 0:
        raise JaxCompressValueError(f"{begin_step=} must be an int >= 0")
    if frequency is not None and (not isinstance(frequency, int) or frequency < 1):
        raise JaxCompressValueError(f"{frequency=} must be an int >= 1 or None")

    def init(params):
        sel = selection_mask(params, where)
        _nm_axis_check([p for p, _ in named_leaves(params)], jax.tree.leaves(params), sel, m, axis)
        return NMPruningState(count=jnp.zeros([], jnp.int32), masks=_ones_like_masks(params))

    def update(updates, state, params=None):
        _need_params(params, "nm_pruning")
        sel = selection_mask(params, where)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        old = treedef.flatten_up_to(state.masks)
        step = state.count
        if frequency is None:
            due = step == begin_step
        else:
            due = (step >= begin_step) & ((step - begin_step) % frequency == 0)
        xs = [jnp.asarray(x) for x, s in zip(leaves, sel, strict=True) if s]
        prev = [mk for mk, s in zip(old, sel, strict=True) if s]
        first = step == begin_step

        def recompute():
            return [
                _nm_keep(x, n, m, axis, prev=jnp.where(first, jnp.ones_like(p), p))
                for x, p in zip(xs, prev, strict=True)
            ]

        new = lax.cond(due, recompute, lambda: list(prev))
        it = iter(new)
        masks = jax.tree_util.tree_unflatten(
            treedef, [next(it) if s else mk for mk, s in zip(old, sel, strict=True)]
        )
        updates = _masked_updates(updates, params, masks)
        return updates, NMPruningState(count=optax.safe_int32_increment(step), masks=masks)

    return optax.GradientTransformation(init, update)


def fixed_masks(masks: Any) -> optax.GradientTransformation:
    """Enforce given masks: updates become ``where(mask, u, -p)`` so pruned weights are exactly 0.

    Used to retrain a pruned network with its connections frozen (Han et al. 2015).

    Args:
      masks: bool pytree with the structure of params (e.g. from :func:`magnitude_masks`).
    """

    def init(params):
        _check_masks(params, masks)
        return FixedMasksState(masks=masks)

    def update(updates, state, params=None):
        _need_params(params, "fixed_masks")
        return _masked_updates(updates, params, state.masks), state

    return optax.GradientTransformation(init, update)
