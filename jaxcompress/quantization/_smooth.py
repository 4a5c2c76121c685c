"""Equivalent per-channel rescaling folded into params: SmoothQuant and AWQ.

Both multiply the input channel ``j`` of some kernels ``W_c`` ``(C, N_c)`` (the *consumers*) by
``s_j`` and divide the output channel ``j`` of the op that produced their common input (the
*producer*: a LayerNorm/RMSNorm scale and bias, or a Dense kernel and bias) by ``s_j``::

    y = (x / s) (diag(s) W)  ==  x W              (the float function is unchanged)

so only the quantization error changes. A *mapping* is a pair ``(producer, consumers)`` of regular
expressions searched in the key paths: every leaf matching ``producer`` whose last axis has size
``C`` is divided by ``s`` along that axis (``ln/scale`` ``(C,)``, ``ln/bias`` ``(C,)``,
``v/kernel`` ``(D, C)``, ``v/bias`` ``(C,)``); every leaf matching ``consumers`` must be a 2-D
Dense kernel ``(C, N)`` with calibration statistics and has its rows multiplied by ``s``. The
producer must feed the consumers *linearly per channel* (a norm's affine part, a Dense layer, or
attention's value path, ``softmax(.) V W_o``); that is the caller's contract, as in llm-compressor's
mappings.

* **SmoothQuant** (Xiao et al. 2022): ``s_j = max|X_j|^alpha / max_{c,o}|W_c[j, o]|^(1 - alpha)``,
  migrating activation outliers into the weights so both quantize well at 8 bits (W8A8).
* **AWQ** (Lin et al. 2023): ``s = mean|X|^alpha`` normalised by ``sqrt(max(s) min(s))``, with
  ``alpha`` chosen from a grid of ``grid`` values in ``[0, 1)`` to minimise the consumers' output
  error after weight quantization, ``sum_c tr(dW_c^T H dW_c)``,
  ``dW_c = W_c - diag(s)^-1 Q(diag(s) W_c)`` with ``H = X^T X / n`` from the calibration statistics
  (departure from the paper: the layer output error from the Hessian instead of re-running the
  block on stored activations; no clipping search). ``alpha = 0`` is plain round to nearest, so
  the chosen scales never do worse than RTN on this objective. Quantize afterwards with
  :func:`quantize_params` at the same ``bits``/``group_size``.

References:
  Xiao, Lin, Seznec, Wu, Demouth, Han. "SmoothQuant: Accurate and Efficient Post-Training
  Quantization for Large Language Models", ICML 2023 (arXiv 2211.10438, 2022).
  Lin, Tang, Tang, Yang, Dang, Gan, Han. "AWQ: Activation-aware Weight Quantization for LLM
  Compression and Acceleration", MLSys 2024 (arXiv 2306.00978, 2023).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError, named_leaves
from jaxcompress.quantization._calibration import CalibrationStats
from jaxcompress.quantization._qarray import QuantizedArray
from jaxcompress.quantization._quantize import QuantSpec, _quantize_core

__all__ = ["smooth_quant", "awq", "smoothing_scales"]


def _resolve_mappings(params: Any, stats: CalibrationStats, mappings: Any):
    if not isinstance(stats, CalibrationStats):
        raise JaxCompressTypeError("stats must be a CalibrationStats from capture_stats")
    if isinstance(mappings, dict):
        mappings = list(mappings.items())
    if not isinstance(mappings, (list, tuple)) or not mappings:
        raise JaxCompressValueError(
            "mappings must be a non-empty sequence of (producer_regex, consumers_regex) pairs"
        )
    named = named_leaves(params)
    out = []
    for item in mappings:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise JaxCompressValueError(f"mapping {item!r} must be a (producer, consumers) pair")
        prod_re, cons_re = item
        try:
            cons = [i for i, (p, _) in enumerate(named) if re.search(cons_re, p)]
            prods = [i for i, (p, _) in enumerate(named) if re.search(prod_re, p)]
        except (re.error, TypeError) as e:
            raise JaxCompressValueError(f"mapping {item!r}: not a valid regex: {e}") from None
        if not cons:
            raise JaxCompressValueError(f"mappings: consumers {cons_re!r} match no leaf")
        if not prods:
            raise JaxCompressValueError(f"mappings: producer {prod_re!r} matches no leaf")
        c = None
        for i in cons:
            p, x = named[i]
            if jnp.ndim(x) != 2:
                raise JaxCompressValueError(
                    f"mappings: consumer {p!r} has shape {jnp.shape(x)}; only 2-D Dense kernels "
                    "(C, N) can absorb input-channel scales"
                )
            if p not in stats:
                raise JaxCompressValueError(f"mappings: consumer {p!r} has no calibration stats")
            if c is None:
                c = jnp.shape(x)[0]
            elif jnp.shape(x)[0] != c:
                raise JaxCompressValueError(f"mappings: consumers {cons_re!r} disagree on C")
        prods = [i for i in prods if jnp.ndim(named[i][1]) >= 1 and jnp.shape(named[i][1])[-1] == c]
        if not prods:
            raise JaxCompressValueError(
                f"mappings: no leaf matching producer {prod_re!r} has a last axis of size C={c}"
            )
        if set(prods) & set(cons):
            raise JaxCompressValueError(f"mapping {item!r}: a leaf is both producer and consumer")
        out.append((prods, cons))
    return named, out


def _fold(params: Any, named, resolved, scales) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves = list(leaves)
    for (prods, cons), s in zip(resolved, scales, strict=True):
        for i in prods:
            x = jnp.asarray(leaves[i])
            leaves[i] = (x.astype(jnp.float32) / s).astype(x.dtype)
        for i in cons:
            x = jnp.asarray(leaves[i])
            leaves[i] = (x.astype(jnp.float32) * s[:, None]).astype(x.dtype)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise JaxCompressTypeError(f"{alpha=} must be a float in [0, 1]")
    if not 0.0 <= float(alpha) <= 1.0:
        raise JaxCompressValueError(f"{alpha=} must be in [0, 1]")
    return float(alpha)


def smoothing_scales(
    params: Any, stats: CalibrationStats, mappings: Sequence[tuple[str, str]], *, alpha=0.5
) -> list[jax.Array]:
    """SmoothQuant's per-channel scales ``s`` ``(C,)``, one array per mapping (see the module)."""
    alpha = _check_alpha(alpha)
    named, resolved = _resolve_mappings(params, stats, mappings)
    out = []
    for _, cons in resolved:
        amax = jnp.maximum(stats[named[cons[0]][0]].absmax, 1e-5)
        wmax = jnp.max(
            jnp.stack([jnp.abs(jnp.asarray(named[i][1], jnp.float32)).max(axis=1) for i in cons]),
            axis=0,
        )
        wmax = jnp.maximum(wmax, 1e-5)
        s = amax**alpha / wmax ** (1.0 - alpha)
        out.append(jnp.where(jnp.isfinite(s) & (s > 0), s, 1.0).astype(jnp.float32))
    return out


def smooth_quant(
    params: Any, stats: CalibrationStats, mappings: Sequence[tuple[str, str]], *, alpha=0.5
) -> Any:
    """Fold SmoothQuant's scales into params (the float function is unchanged).

    Args:
      params: float params (linen dict or ``nnx.State``).
      stats: :class:`CalibrationStats` captured with these params (``absmax`` per channel).
      mappings: ``[(producer_regex, consumers_regex), ...]`` (see the module docstring), e.g.
        ``[("ln1/(scale|bias)", "(q|k|v)/kernel"), ("ln2/(scale|bias)", "mlp1/kernel")]``.
      alpha: migration strength in ``[0, 1]`` (0.5 as the paper's default).

    Returns:
      Rescaled float params; quantize weights (e.g. int8 per channel) and activations
      (:func:`ptq` with ``activation_bits=8``) afterwards for W8A8.

    Raises:
      JaxCompressValueError: a regex matching nothing, a consumer without stats or not 2-D, a
        producer without a matching last axis, ``alpha`` outside ``[0, 1]``.
    """
    scales = smoothing_scales(params, stats, mappings, alpha=alpha)
    named, resolved = _resolve_mappings(params, stats, mappings)
    return _fold(params, named, resolved, scales)


@functools.partial(jax.jit, static_argnames=("spec", "grid"))
def _awq_search(ws, h, mean_abs, *, spec: QuantSpec, grid: int):
    alphas = jnp.arange(grid, dtype=jnp.float32) / grid
    base = jnp.maximum(mean_abs, 1e-4)

    def scales_for(a):
        s = jnp.maximum(base**a, 1e-4)
        return s / jnp.sqrt(s.max() * s.min())

    def loss(a):
        s = scales_for(a)
        total = 0.0
        for w in ws:
            q: QuantizedArray = _quantize_core(w * s[:, None], spec)
            dw = w - q._dequantize_impl().astype(jnp.float32) / s[:, None]
            total = total + jnp.sum(jnp.matmul(h, dw, precision=jax.lax.Precision.HIGHEST) * dw)
        return total

    losses = jax.lax.map(loss, alphas)
    best = jnp.argmin(losses)
    return scales_for(alphas[best]), alphas[best], losses


def awq(
    params: Any,
    stats: CalibrationStats,
    mappings: Sequence[tuple[str, str]],
    *,
    bits: int,
    scheme: str = "affine",
    group_size: int | None = None,
    grid: int = 20,
) -> Any:
    """Search AWQ's activation-aware scales and fold them into params (function unchanged).

    Args:
      params: float params (linen dict or ``nnx.State``).
      stats: :class:`CalibrationStats` captured with these params.
      mappings: ``[(producer_regex, consumers_regex), ...]`` (see the module docstring).
      bits, scheme, group_size: the weight quantization that will follow (per output channel,
        or groups of ``group_size`` along the reduction axis); the search uses exactly it.
      grid: number of ``alpha`` values ``0, 1/grid, ..., (grid-1)/grid``.

    Returns:
      Rescaled float params; then ``quantize_params(p, bits=bits, scheme=scheme,
      group_size=group_size)``.

    Raises:
      JaxCompressValueError: as :func:`smooth_quant`; bad ``bits``/``scheme``; ``group_size`` not
        dividing ``C``; ``grid < 1``.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise JaxCompressValueError(f"{grid=} must be a positive int")
    named, resolved = _resolve_mappings(params, stats, mappings)
    scales = []
    for _, cons in resolved:
        ws = [jnp.asarray(named[i][1], jnp.float32) for i in cons]
        spec = QuantSpec(bits=bits, scheme=scheme, axis=-1, group_size=group_size)
        spec = spec.resolve(tuple(ws[0].shape))
        st = stats[named[cons[0]][0]]
        s, _, _ = _awq_search(ws, st.hessian, st.mean_abs, spec=spec, grid=grid)
        scales.append(s)
    return _fold(params, named, resolved, scales)
