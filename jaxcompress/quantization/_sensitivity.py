"""Per-layer sensitivity (SQNR and output error with only that layer quantized) and mixed precision."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import JaxCompressValueError, named_leaves, selection_mask
from jaxcompress.quantization._qarray import row_shape
from jaxcompress.quantization._quantize import QuantSpec, _quantize_core

__all__ = ["LayerSensitivity", "SensitivityReport", "sensitivity", "mixed_precision"]


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """One (layer, bits) measurement.

    ``sqnr_db = 10 log10(sum w^2 / sum (w - dq(q(w)))^2)``; ``output_mse`` is the mean squared
    difference of the model's logits with only this layer quantized vs the float model;
    ``accuracy`` (if labels were given) is the accuracy with only this layer quantized;
    ``size_bits`` counts codes plus scales (32 bit) plus zero points (8 bit, affine only).
    """

    path: str
    bits: int
    n: int
    size_bits: int
    sqnr_db: float
    output_mse: float
    accuracy: float | None


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """All measurements, plus the float model's accuracy (if labels were given)."""

    rows: tuple[LayerSensitivity, ...]
    float_accuracy: float | None

    def get(self, path: str, bits: int) -> LayerSensitivity:
        for r in self.rows:
            if r.path == path and r.bits == bits:
                return r
        raise KeyError((path, bits))

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(r.path for r in self.rows))

    def table(self) -> str:
        out = [
            "| layer | bits | weights | SQNR (dB) | logit MSE | accuracy |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            acc = "" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
            out.append(
                f"| {r.path} | {r.bits} | {r.n} | {r.sqnr_db:.2f} | {r.output_mse:.3g} | {acc} |"
            )
        return "\n".join(out)


def sensitivity(
    apply_fn: Callable[..., Any],
    params: Any,
    x: Any,
    y: Any = None,
    *,
    bits: Sequence[int] = (2, 3, 4, 8),
    scheme: str = "symmetric",
    axis: int | None = -1,
    group_size: int | None = None,
    calibration: str = "absmax",
    where: Any = None,
    batch_size: int = 1000,
) -> SensitivityReport:
    """Quantize one layer at a time at each bit width and measure the damage.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: float params.
      x: ``(n, ...)`` evaluation inputs (a few hundred to a few thousand examples suffice).
      y: optional ``(n,)`` integer labels; adds accuracy columns.
      bits: candidate widths.
      scheme, axis, group_size, calibration: the weight grid, as :func:`quantize`.
      where: the layers to study (default floating leaves with ``ndim >= 2``).
      batch_size: evaluation batch.

    Returns:
      :class:`SensitivityReport` with one row per (selected layer, bits).
    """
    bits = tuple(int(b) for b in bits)
    if not bits:
        raise JaxCompressValueError("bits must list at least one width")
    sel = selection_mask(params, where)
    named = named_leaves(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    x = np.asarray(x)
    fwd = jax.jit(lambda p, xb: apply_fn(p, xb))

    def logits(p):
        return np.concatenate(
            [np.asarray(fwd(p, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )

    ref = logits(params)
    f_acc = None if y is None else float(np.mean(ref.argmax(-1) == np.asarray(y)))
    rows = []
    for i, ((path, w), s) in enumerate(zip(named, sel, strict=True)):
        if not s:
            continue
        for b in bits:
            spec = QuantSpec(
                bits=b, scheme=scheme, axis=axis, group_size=group_size, calibration=calibration
            ).resolve(tuple(w.shape))
            q = _quantize_core(jnp.asarray(w), spec)
            dq = q.dequantize()
            err = float(jnp.sum((jnp.asarray(w, jnp.float32) - dq.astype(jnp.float32)) ** 2))
            sig = float(jnp.sum(jnp.asarray(w, jnp.float32) ** 2))
            sqnr = math.inf if err == 0 else 10 * math.log10(max(sig, 1e-30) / err)
            new = list(leaves)
            new[i] = dq
            out = logits(jax.tree_util.tree_unflatten(treedef, new))
            n_scales = int(np.prod(row_shape(tuple(w.shape), spec.axis, spec.group_size)))
            size = int(w.size) * b + n_scales * (32 + (8 if scheme == "affine" else 0))
            rows.append(
                LayerSensitivity(
                    path=path,
                    bits=b,
                    n=int(w.size),
                    size_bits=size,
                    sqnr_db=sqnr,
                    output_mse=float(np.mean((out - ref) ** 2)),
                    accuracy=None if y is None else float(np.mean(out.argmax(-1) == np.asarray(y))),
                )
            )
    return SensitivityReport(rows=tuple(rows), float_accuracy=f_acc)


def mixed_precision(
    report: SensitivityReport,
    *,
    avg_bits: float | None = None,
    budget_bits: int | None = None,
    metric: str = "output_mse",
) -> dict[str, int]:
    """Assign bits per layer so the total size fits a budget while the summed error stays small.

    Greedy (a standard knapsack heuristic): start every layer at its widest measured width, then
    repeatedly narrow the layer whose next-narrower width adds the least error per bit saved,
    until the budget holds; then widen layers again where the remaining slack allows (largest
    error reduction per added bit first). Errors are assumed additive across layers (they are measured with one
    layer quantized at a time).

    Args:
      report: from :func:`sensitivity`.
      avg_bits: budget as average bits per weight over the studied layers (scales included).
      budget_bits: budget as total bits over the studied layers (scales included).
      metric: ``"output_mse"`` or ``"sqnr"`` (the error is then ``10^(-SQNR/10)``, i.e. the
        relative noise power).

    Returns:
      ``{path: bits}``, directly usable as ``quantize_params(params, bits=...)``.

    Raises:
      JaxCompressValueError: no or two budgets, an unknown metric, or a budget below the
        narrowest assignment.
    """
    if (avg_bits is None) == (budget_bits is None):
        raise JaxCompressValueError("give exactly one of avg_bits= or budget_bits=")
    if metric not in ("output_mse", "sqnr"):
        raise JaxCompressValueError(f"{metric=} must be 'output_mse' or 'sqnr'")
    paths = report.paths
    if not paths:
        raise JaxCompressValueError("the report has no layers")
    options = {p: sorted({r.bits for r in report.rows if r.path == p}) for p in paths}
    n_total = sum(report.get(p, options[p][0]).n for p in paths)
    budget = budget_bits if budget_bits is not None else avg_bits * n_total

    def err(p, b):
        r = report.get(p, b)
        return r.output_mse if metric == "output_mse" else 10 ** (-r.sqnr_db / 10)

    choice = {p: options[p][-1] for p in paths}
    size = sum(report.get(p, choice[p]).size_bits for p in paths)
    min_size = sum(report.get(p, options[p][0]).size_bits for p in paths)
    if budget < min_size:
        raise JaxCompressValueError(
            f"budget of {budget:.0f} bits is below the narrowest assignment ({min_size} bits)"
        )
    while size > budget:
        best = None
        for p in paths:
            k = options[p].index(choice[p])
            if k == 0:
                continue
            b2 = options[p][k - 1]
            saved = report.get(p, choice[p]).size_bits - report.get(p, b2).size_bits
            cost = max(err(p, b2) - err(p, choice[p]), 0.0) / max(saved, 1)
            if best is None or cost < best[0]:
                best = (cost, p, b2, saved)
        _, p, b2, saved = best
        choice[p] = b2
        size -= saved
    # refill: the last narrowing step may overshoot; widen back where the slack allows, best
    # error reduction per added bit first
    improved = True
    while improved:
        improved = False
        best = None
        for p in paths:
            k = options[p].index(choice[p])
            if k == len(options[p]) - 1:
                continue
            b2 = options[p][k + 1]
            added = report.get(p, b2).size_bits - report.get(p, choice[p]).size_bits
            if size + added > budget:
                continue
            gain = max(err(p, choice[p]) - err(p, b2), 0.0) / max(added, 1)
            if best is None or gain > best[0]:
                best = (gain, p, b2, added)
        if best is not None:
            _, p, b2, added = best
            choice[p] = b2
            size += added
            improved = True
    return choice
