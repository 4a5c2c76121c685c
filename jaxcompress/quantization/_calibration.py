"""Calibration capture for one-shot, data-aware compression (GPTQ, AWQ, SmoothQuant, SparseGPT, Wanda).

Every Dense/conv kernel ``W`` of a model computes ``y = X W`` with ``X`` the layer's input rows
(for a conv, the im2col rows of its input patches). The one-shot methods need only second-order and
per-channel statistics of ``X``, which are accumulated batch by batch, so a large calibration set
never sits in memory at once:

==============  ==============================  =================================================
statistic       formula (sum over all rows r)   used by
==============  ==============================  =================================================
``xtx``         ``sum_r x_r x_r^T``  ``(K, K)``   GPTQ, SparseGPT (Hessian ``H = xtx / n``), AWQ loss
``abs_sum``     ``sum_r |x_r|``      ``(K,)``     AWQ (mean ``|x|`` per input channel)
``absmax``      ``max_r |x_r|``      ``(K,)``     SmoothQuant (activation outlier range)
``count``       ``n`` rows                         normalisation
==============  ==============================  =================================================

All sums are float32. The Hessian is returned undamped (``H = xtx / n``); damping is applied by the
consumer (GPTQ/SparseGPT add ``damping * mean(diag(H))`` to the diagonal, ``damping=0.01`` as the
papers' ``percdamp``), and a singular undamped Hessian is an error there, not here. Wanda's input
norm ``||X_j||_2 = sqrt(xtx_jj)``.

How layers are found: the model's forward function is traced to a jaxpr (``jax.make_jaxpr``) and
re-evaluated; every ``dot_general`` whose right-hand operand *is* a params leaf (possibly through a
dtype conversion or a nested ``jit``) with its contraction over that leaf's leading axes (the Flax
Dense ``(in, out)`` / ``DenseGeneral`` layout), and every ``conv_general_dilated`` whose kernel is a
params leaf in ``(..., in, out)`` (HWIO) layout, is a *site*. ``K`` is the flattened reduction extent
of the kernel in C order, so ``X`` and ``W.reshape(K, out)`` line up: for a conv, the im2col rows are
permuted from ``conv_general_dilated_patches``' ``(in, kh, kw)`` order into the kernel's
``(kh, kw, in)`` order. A leaf used at several sites (weight sharing) sums the statistics of all
uses. Matmuls inside ``scan``/``while``/``cond`` are not seen (the observers' limitation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from jaxcompress._core import (
    JaxCompressTypeError,
    JaxCompressValueError,
    named_leaves,
    selection_mask,
)

__all__ = ["LayerStats", "CalibrationStats", "capture_stats", "layer_inputs"]

_CALL_PRIMS = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint")
_TRANSPARENT = ("convert_element_type", "copy", "copy_p")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Input statistics of one kernel (see the module table).

    Attributes:
      xtx: float32 ``(K, K)``, ``sum_r x_r x_r^T``.
      abs_sum: float32 ``(K,)``, ``sum_r |x_r|``.
      absmax: float32 ``(K,)``, ``max_r |x_r|``.
      count: float32 scalar, number of rows ``n``.
    """

    xtx: jax.Array
    abs_sum: jax.Array
    absmax: jax.Array
    count: jax.Array

    @property
    def hessian(self) -> jax.Array:
        """``H = xtx / n`` (undamped), ``(K, K)`` float32."""
        return self.xtx / jnp.maximum(self.count, 1.0)

    @property
    def mean_abs(self) -> jax.Array:
        """Mean ``|x|`` per input channel, ``(K,)``."""
        return self.abs_sum / jnp.maximum(self.count, 1.0)

    @property
    def norm(self) -> jax.Array:
        """``||X_j||_2`` over all calibration rows, ``(K,)`` (Wanda's activation norm)."""
        return jnp.sqrt(jnp.maximum(jnp.diagonal(self.xtx), 0.0))

    @staticmethod
    def from_rows(x: jax.Array) -> LayerStats:
        """Statistics of explicit input rows ``x`` ``(n, K)`` (handy for a single layer)."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 2:
            raise JaxCompressValueError(f"x must be (rows, K), got shape {x.shape}")
        return _row_stats(x)


def _row_stats(x: jax.Array) -> LayerStats:
    a = jnp.abs(x)
    return LayerStats(
        xtx=jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST),
        abs_sum=a.sum(0),
        absmax=a.max(0) if x.shape[0] else jnp.zeros(x.shape[1], jnp.float32),
        count=jnp.asarray(x.shape[0], jnp.float32),
    )


def _merge(a: LayerStats, b: LayerStats) -> LayerStats:
    return LayerStats(
        xtx=a.xtx + b.xtx,
        abs_sum=a.abs_sum + b.abs_sum,
        absmax=jnp.maximum(a.absmax, b.absmax),
        count=a.count + b.count,
    )


@dataclasses.dataclass(frozen=True)
class CalibrationStats:
    """Per-kernel input statistics keyed by the kernel's key path (``"params/Dense_0/kernel"``).

    Attributes:
      layers: ``{path: LayerStats}``.
      batches: number of calibration batches seen.
    """

    layers: dict[str, LayerStats]
    batches: int

    def __getitem__(self, path: str) -> LayerStats:
        if path not in self.layers:
            raise JaxCompressValueError(
                f"no calibration statistics for {path!r}; captured: {sorted(self.layers)}"
            )
        return self.layers[path]

    def __contains__(self, path: str) -> bool:
        return path in self.layers

    def paths(self) -> list[str]:
        return list(self.layers)


# ----------------------------------------------------------------------------- jaxpr walking


def _conv_rows(lhs: jax.Array, kernel_shape: tuple[int, ...], params: dict[str, Any]) -> jax.Array:
    """im2col rows ``(n, K)`` of a conv input, columns in the kernel's ``(..., in)`` C order."""
    dn = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    nd = len(kernel_shape)
    if rhs_spec[0] != nd - 1 or rhs_spec[1] != nd - 2:
        raise JaxCompressValueError(
            f"conv kernel layout {rhs_spec} is not (..., in, out); calibration supports HWIO only"
        )
    if params.get("feature_group_count", 1) != 1 or params.get("batch_group_count", 1) != 1:
        raise JaxCompressValueError("grouped / depthwise convolutions are not supported")
    spatial = tuple(kernel_shape[:-2])
    patches = jax.lax.conv_general_dilated_patches(
        lhs,
        filter_shape=spatial,
        window_strides=params["window_strides"],
        padding=params["padding"],
        lhs_dilation=params["lhs_dilation"],
        rhs_dilation=params["rhs_dilation"],
        dimension_numbers=dn,
        precision=jax.lax.Precision.HIGHEST,
    )
    feat = jnp.moveaxis(patches, out_spec[1], -1)
    c_in = lhs.shape[lhs_spec[1]]
    ksp = math.prod(spatial)
    rows = feat.reshape(-1, c_in * ksp)
    # patches order: index c * ksp + s; the kernel's flattened (spatial..., in) order: s * c_in + c
    perm = (np.arange(c_in)[None, :] * ksp + np.arange(ksp)[:, None]).reshape(-1)
    return rows[:, perm]


def _dot_rows(lhs: jax.Array, kernel_shape: tuple[int, ...], params: dict[str, Any]):
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    if lb or rb:
        return None
    if tuple(rc) != tuple(range(len(rc))) or not rc:
        return None
    lc = tuple(int(a) for a in lc)
    x = jnp.moveaxis(lhs, lc, tuple(range(lhs.ndim - len(lc), lhs.ndim)))
    k = math.prod(kernel_shape[: len(rc)])
    return x.reshape(-1, k)


def _walk(
    jaxpr: Jaxpr,
    consts: list[Any],
    args: list[Any],
    origin: list[int | None],
    on_site: Callable[[int, jax.Array], None],
):
    env: dict[Any, Any] = {}
    src: dict[Any, int | None] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    def where_from(v):
        return None if isinstance(v, Literal) else src.get(v)

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x, o in zip(jaxpr.invars, args, origin, strict=True):
        env[v], src[v] = x, o
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inorig = [where_from(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = eqn.params.get("jaxpr") if name in _CALL_PRIMS else None
        outorig: list[int | None] = [None] * len(eqn.outvars)
        if sub is not None:
            if isinstance(sub, ClosedJaxpr):
                outs, outorig = _walk(sub.jaxpr, list(sub.consts), invals, inorig, on_site)
            else:
                outs, outorig = _walk(sub, [], invals, inorig, on_site)
        else:
            if name in ("dot_general", "conv_general_dilated") and inorig[1] is not None:
                kernel = invals[1]
                if name == "dot_general":
                    rows = _dot_rows(invals[0], tuple(kernel.shape), eqn.params)
                else:
                    rows = _conv_rows(invals[0], tuple(kernel.shape), eqn.params)
                if rows is not None:
                    on_site(inorig[1], rows)
            params = eqn.primitive.get_bind_params(eqn.params)
            outs = eqn.primitive.bind(*invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            if name in _TRANSPARENT:
                outorig = [inorig[0]]
        for v, x, o in zip(eqn.outvars, outs, outorig, strict=True):
            env[v], src[v] = x, o
    return [read(v) for v in jaxpr.outvars], [where_from(v) for v in jaxpr.outvars]


def layer_inputs(apply_fn: Callable, params: Any, x: Any, **kwargs) -> dict[int, list[jax.Array]]:
    """The input rows ``(n, K)`` of every site, keyed by the flat index of its kernel leaf.

    Traceable (use under ``jit``); :func:`capture_stats` reduces these rows to statistics.
    """
    fn = lambda p, xx: apply_fn(p, xx, **kwargs)  # noqa: E731
    closed = jax.make_jaxpr(fn)(params, x)
    n_params = len(jax.tree.leaves(params))
    args = jax.tree.leaves((params, x))
    origin: list[int | None] = [i if i < n_params else None for i in range(len(args))]
    found: dict[int, list[jax.Array]] = {}

    def on_site(i, rows):
        found.setdefault(i, []).append(rows.astype(jnp.float32))

    _walk(closed.jaxpr, list(closed.consts), args, origin, on_site)
    return found


def _site_leaves(apply_fn, params, x, kwargs) -> list[int]:
    """Flat indices of the params leaves used as matmul/conv kernels (traced once, no compile)."""
    found: list[int] = []
    jax.eval_shape(lambda p, xx: found.extend(layer_inputs(apply_fn, p, xx, **kwargs)), params, x)
    return found


def select_calibrated(params: Any, stats: CalibrationStats, where) -> tuple[list, list[bool]]:
    """``(named leaves, selection)`` of the leaves a one-shot method compresses: those with
    statistics (``where=None``) or those `where` selects, each of which must have statistics.

    Raises:
      JaxCompressTypeError: `stats` is not a `CalibrationStats`.
      JaxCompressValueError: `where` selects a leaf without statistics.
    """
    if not isinstance(stats, CalibrationStats):
        raise JaxCompressTypeError("stats must be a CalibrationStats from capture_stats")
    named = named_leaves(params)
    if where is None:
        sel = [p in stats for p, _ in named]
    else:
        sel = selection_mask(params, where)
        missing = [p for (p, _), s in zip(named, sel, strict=True) if s and p not in stats]
        if missing:
            raise JaxCompressValueError(f"where selects {missing}, which have no calibration stats")
    return named, sel


def capture_stats(
    apply_fn: Callable,
    params: Any,
    batches: Iterable[Any],
    *,
    where: Any = None,
    **kwargs: Any,
) -> CalibrationStats:
    """Stream calibration batches through a model and accumulate each kernel's input statistics.

    For every selected kernel ``W`` ``(..., out)`` with flattened reduction extent ``K``:
    ``xtx = sum_r x_r x_r^T`` ``(K, K)``, ``abs_sum = sum_r |x_r|``, ``absmax = max_r |x_r|`` and the
    row count ``n`` (see the module docstring for how sites are found). One batch is on the device
    at a time; per-batch sums are computed by one jitted function and added in float32.

    Args:
      apply_fn: ``apply_fn(params, x, **kwargs) -> outputs`` (e.g. from
        :func:`jaxcompress.models.functional`; linen dict or ``nnx.State`` params).
      params: the float params the statistics are taken with.
      batches: iterable of input batches (arrays); e.g. ``np.array_split(x_cal, 8)`` or a
        generator.
      where: which kernels (DESIGN §3 selection). Default: every kernel that feeds a matmul/conv.
        An explicit selection must pick only kernels that are used by a matmul/conv.
      **kwargs: forwarded to ``apply_fn``.

    Returns:
      :class:`CalibrationStats` keyed by kernel path.

    Raises:
      JaxCompressValueError: ``batches`` is empty; a batch contains NaN/Inf (the message names its
        index); ``where`` is a regex matching no leaf, or selects a leaf no matmul/conv uses;
        the model's activations become non-finite.
      JaxCompressTypeError: a batch is not numeric.

    Example:
      >>> stats = capture_stats(apply_fn, params, np.array_split(x_cal, 4))
      >>> stats["params/Dense_0/kernel"].hessian.shape
      (784, 784)
    """
    paths = [p for p, _ in named_leaves(params)]
    sel = selection_mask(params, where)

    def batch_stats(p, xb):
        found = layer_inputs(apply_fn, p, xb, **kwargs)
        out = {}
        for i, rows_list in found.items():
            if not sel[i]:
                continue
            st = _row_stats(rows_list[0])
            for r in rows_list[1:]:
                st = _merge(st, _row_stats(r))
            out[paths[i]] = st
        return out

    step = jax.jit(batch_stats)
    acc: dict[str, LayerStats] = {}
    n = 0
    for b, xb in enumerate(batches):
        arr = np.asarray(xb)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise JaxCompressTypeError(f"batches[{b}] must be a numeric array, got {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise JaxCompressValueError(
                f"batches[{b}] contains NaN or Inf; calibration statistics would be garbage"
            )
        if n == 0 and where is not None:
            # trace once (no compile) to find the sites, so a bad selection fails before any work
            seen = set(_site_leaves(apply_fn, params, jnp.asarray(xb), kwargs))
            missing = [
                q for i, (q, s) in enumerate(zip(paths, sel, strict=True)) if s and i not in seen
            ]
            if missing:
                raise JaxCompressValueError(
                    f"where selects {missing}, which no matmul/conv of the model uses as a kernel"
                )
        s = step(params, jnp.asarray(xb))
        acc = s if not acc else {k: _merge(acc[k], s[k]) for k in acc}
        n += 1
    if n == 0:
        raise JaxCompressValueError("batches is empty; calibration needs at least one batch")
    for k, st in acc.items():
        if not bool(jnp.all(jnp.isfinite(st.xtx))):
            raise JaxCompressValueError(
                f"the inputs of {k!r} became NaN/Inf during calibration (check params)"
            )
    return CalibrationStats(layers=acc, batches=n)
