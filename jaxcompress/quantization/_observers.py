"""Activation quantization without rewriting the model: observers and fake quant at matmul inputs.

The model's own forward function is traced to a jaxpr (``jax.make_jaxpr``) and re-evaluated with a
hook on the *activation operand* (the left-hand side) of every ``dot_general`` and
``conv_general_dilated``: the input of every Dense/conv layer (the model input included) and both
operands' left side of attention matmuls. Sites are numbered in evaluation order
(``"dot_general_2"``, ``"conv_general_dilated_0"``). The hook recurses into ``jit``/``pjit``/
``closed_call``/``remat`` sub-jaxprs; matmuls inside ``scan``/``while``/``cond`` or inside
``custom_jvp``/``custom_vjp`` functions are left untouched (documented limitation).

* Observers (:func:`observe_activations`) run calibration batches and record each site's range:
  ``"minmax"`` (running min/max over all batches), ``"ema"`` (exponential moving average of the
  per-batch min/max, momentum 0.9, as TF's QAT) or ``"percentile"`` (mean over batches of the
  per-batch lower/upper percentiles).
* :func:`quantize_activations` returns a new ``apply_fn`` that fake-quantizes every site with a
  **static** range (from the observers) or a **dynamic** one (the current tensor's min/max, computed
  per call). Gradients pass the clipped STE, so the same function serves QAT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.quantization._fake_quant import _fake_quant_core
from jaxcompress.quantization._quantize import QuantSpec, check_clip_range

__all__ = [
    "ActivationQuantization",
    "ActivationRanges",
    "activation_sites",
    "observe_activations",
    "quantize_activations",
    "OBSERVERS",
]

OBSERVERS = ("minmax", "ema", "percentile")
_SITE_PRIMS = ("dot_general", "conv_general_dilated")
_CALL_PRIMS = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint")


def _eval(jaxpr: Jaxpr, consts: list[Any], args: list[Any], hook: Callable, counter: list[int]):
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = eqn.params.get("jaxpr") if name in _CALL_PRIMS else None
        if sub is not None:
            if isinstance(sub, ClosedJaxpr):
                outs = _eval(sub.jaxpr, list(sub.consts), invals, hook, counter)
            else:
                outs = _eval(sub, [], invals, hook, counter)
        else:
            if name in _SITE_PRIMS:
                site = f"{name}_{counter[0]}"
                counter[0] += 1
                invals[0] = hook(site, invals[0])
            params = eqn.primitive.get_bind_params(eqn.params)
            outs = eqn.primitive.bind(*invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs, strict=True):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _run(apply_fn, params, x, hook, **kwargs):
    fn = lambda p, xx: apply_fn(p, xx, **kwargs)  # noqa: E731
    closed = jax.make_jaxpr(fn)(params, x)
    args = jax.tree.leaves((params, x))
    out = _eval(closed.jaxpr, list(closed.consts), args, hook, [0])
    out_tree = jax.tree.structure(jax.eval_shape(fn, params, x))
    return jax.tree.unflatten(out_tree, out)


@dataclasses.dataclass(frozen=True)
class ActivationRanges:
    """Observed real range of each activation site: ``{site: (lo, hi)}`` plus the site shapes."""

    ranges: dict[str, tuple[float, float]]
    shapes: dict[str, tuple[int, ...]]
    method: str

    def table(self) -> str:
        rows = ["| site | shape | lo | hi |", "|---|---|---:|---:|"]
        for k, (lo, hi) in self.ranges.items():
            rows.append(f"| {k} | {self.shapes.get(k)} | {lo:.4g} | {hi:.4g} |")
        return "\n".join(rows)


@dataclasses.dataclass(frozen=True)
class ActivationQuantization:
    """The quantized-model description of an activation-quantized ``apply_fn``.

    :func:`quantize_activations` (and so ``ptq(..., activation_bits=...)``) attaches one to the
    function it returns, as ``apply_q.activation_quantization``; full-integer export
    (``jaxcompress.export.save(..., integer=True)``) reads it instead of pattern-matching the
    fake-quant ops.

    Attributes:
      float_apply: the wrapped float ``apply_fn(params, x, **kw)``.
      ranges: the static ranges, or ``None`` for dynamic (per-call) ranges.
      bits, scheme: the activation grid.
      sites: the quantized sites (``None``: all).
    """

    float_apply: Callable
    ranges: ActivationRanges | None
    bits: int
    scheme: str
    sites: frozenset | None = None


def activation_sites(apply_fn: Callable, params: Any, x: Any) -> dict[str, tuple[int, ...]]:
    """The activation sites of ``apply_fn(params, x)`` and the shape of each site's tensor."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(site, v):
        shapes[site] = tuple(v.shape)
        return v

    jax.eval_shape(lambda p, xx: _run(apply_fn, p, xx, hook), params, x)
    return shapes


def observe_activations(
    apply_fn: Callable,
    params: Any,
    batches: Iterable[Any],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    momentum: float = 0.9,
) -> ActivationRanges:
    """Run calibration batches through ``apply_fn`` and record each activation site's range.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` (as from :func:`jaxcompress.models.functional`).
      params: its params (float, or already-dequantized weights).
      batches: iterable of input batches ``x`` (e.g. ``np.array_split(x_cal, 8)``).
      method: ``"minmax"`` | ``"ema"`` | ``"percentile"`` (see the module docstring).
      percentile: upper percentile for ``"percentile"`` (the lower one is ``100 - percentile``).
      momentum: EMA momentum for ``"ema"``.

    Returns:
      :class:`ActivationRanges`.

    Raises:
      JaxCompressValueError: unknown method, bad percentile, no batch, or a site whose observed
        range is not finite (NaN or inf in the calibration data or the activations).
    """
    if method not in OBSERVERS:
        raise JaxCompressValueError(f"{method=} must be one of {OBSERVERS}")
    if not 0.0 < percentile <= 100.0:
        raise JaxCompressValueError(f"{percentile=} must be in (0, 100]")

    def stats(p, xx):
        out: dict[str, Any] = {}

        def hook(site, v):
            vf = v.astype(jnp.float32).reshape(-1)
            if method == "percentile":
                out[site] = jnp.stack(
                    [jnp.percentile(vf, 100.0 - percentile), jnp.percentile(vf, percentile)]
                )
            else:
                out[site] = jnp.stack([vf.min(), vf.max()])
            return v

        _run(apply_fn, p, xx, hook)
        return out

    stats_jit = jax.jit(stats)
    acc: dict[str, np.ndarray] = {}
    n = 0
    shapes: dict[str, tuple[int, ...]] = {}
    for xb in batches:
        xb = jnp.asarray(xb)
        if not shapes:
            shapes = activation_sites(apply_fn, params, xb)
        s = {k: np.asarray(v, np.float64) for k, v in stats_jit(params, xb).items()}
        if not acc:
            acc = s
        elif method == "minmax":
            acc = {k: np.array([min(acc[k][0], s[k][0]), max(acc[k][1], s[k][1])]) for k in acc}
        elif method == "ema":
            acc = {k: momentum * acc[k] + (1 - momentum) * s[k] for k in acc}
        else:
            acc = {k: acc[k] + s[k] for k in acc}
        n += 1
    if n == 0:
        raise JaxCompressValueError("batches is empty; observers need at least one batch")
    if method == "percentile":
        acc = {k: v / n for k, v in acc.items()}
    for k, v in acc.items():
        if not np.isfinite(v).all():
            raise JaxCompressValueError(
                f"activation site {k!r} observed the range ({v[0]}, {v[1]}): the calibration "
                "batches (or the model's activations on them) contain NaN or inf"
            )
    return ActivationRanges(
        ranges={k: (float(v[0]), float(v[1])) for k, v in acc.items()}, shapes=shapes, method=method
    )


def quantize_activations(
    apply_fn: Callable,
    ranges: ActivationRanges | None = None,
    *,
    bits: int = 8,
    scheme: str = "affine",
    sites: Iterable[str] | None = None,
) -> Callable:
    """Wrap ``apply_fn`` so the activation entering every matmul/conv is fake-quantized.

    Args:
      apply_fn: ``apply_fn(params, x, **kwargs) -> logits``.
      ranges: observed static ranges; ``None`` means dynamic range (per call, per tensor
        min/max of the current activation).
      bits, scheme: the activation grid (default 8-bit affine, as Jacob et al. 2018).
      sites: restrict to these site names (default: all).

    Returns:
      ``apply_fn_q(params, x, **kwargs)`` with the same signature; usable under ``jit`` and
      ``grad`` (clipped STE), with float or dequantized params. Its
      ``activation_quantization`` attribute (:class:`ActivationQuantization`) describes the
      quantization for export.
    """
    spec = QuantSpec(bits=bits, scheme=scheme)
    if ranges is not None and not isinstance(ranges, ActivationRanges):
        raise JaxCompressTypeError("ranges must be an ActivationRanges from observe_activations")
    only = None if sites is None else set(sites)
    if ranges is not None and only is not None:
        missing = only - set(ranges.ranges)
        if missing:
            raise JaxCompressValueError(f"sites {sorted(missing)} have no observed range")
    if ranges is not None:
        for site, r in ranges.ranges.items():
            check_clip_range(r, name=f"ranges.ranges[{site!r}]")

    def hook(site, v):
        if only is not None and site not in only:
            return v
        if ranges is None:
            return _fake_quant_core(v, spec)
        if site not in ranges.ranges:
            raise JaxCompressValueError(
                f"activation site {site!r} has no observed range (the model traced differently "
                "from calibration)"
            )
        return _fake_quant_core(v, spec, clip_range=ranges.ranges[site])

    def apply_q(params, x, **kwargs):
        return _run(apply_fn, params, x, hook, **kwargs)

    apply_q.activation_quantization = ActivationQuantization(
        float_apply=apply_fn,
        ranges=ranges,
        bits=bits,
        scheme=scheme,
        sites=None if only is None else frozenset(only),
    )
    return apply_q
