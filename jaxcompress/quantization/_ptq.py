"""Post-training quantization of a whole model from calibration batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxcompress.quantization._observers import (
    ActivationRanges,
    observe_activations,
    quantize_activations,
)
from jaxcompress.quantization._quantize import dequantize_params, quantize_params

__all__ = ["PTQResult", "ptq"]


@dataclasses.dataclass(frozen=True)
class PTQResult:
    """What :func:`ptq` returns.

    Attributes:
      params: the params tree with :class:`QuantizedArray` at the quantized leaves (deployable).
      apply_fn: ``apply_fn(params, x, **kw)`` that dequantizes the weights and (if activation
        quantization was requested) fake-quantizes activations with the observed static ranges;
        e.g. ``evaluate(result.apply_fn, result.params, x, y)``.
      ranges: the observed activation ranges, or ``None``.
    """

    params: Any
    apply_fn: Callable[..., Any]
    ranges: ActivationRanges | None


def ptq(
    apply_fn: Callable[..., Any],
    params: Any,
    calibration_batches: Iterable[Any] | None = None,
    *,
    bits: int | Mapping[str, int] = 8,
    scheme: str = "symmetric",
    axis: int | None = -1,
    group_size: int | None = None,
    calibration: str = "absmax",
    percentile: float = 99.99,
    where: Any = None,
    group_fallback: str = "error",
    activation_bits: int | None = None,
    activation_scheme: str = "affine",
    observer: str = "minmax",
) -> PTQResult:
    """Quantize the weights of a model and, optionally, its activations (static ranges).

    Weights: :func:`quantize_params` with the given keywords (default int8 symmetric per output
    channel). Activations (when ``activation_bits`` is set): the calibration batches run through the
    model with the *quantized* weights and observers record the range at every matmul/conv input;
    the returned ``apply_fn`` fake-quantizes there with those static ranges.

    Args:
      apply_fn: ``apply_fn(params, x, **kw) -> logits``.
      params: float params (linen dict or ``nnx.State``).
      calibration_batches: iterable of input batches; needed only for activation quantization.
      bits, scheme, axis, group_size, calibration, percentile, where, group_fallback: weights,
        as :func:`quantize_params`.
      activation_bits: ``None`` for weight-only quantization, else 2..8.
      activation_scheme: grid of the activations (default affine).
      observer: ``"minmax"`` | ``"ema"`` | ``"percentile"``.

    Returns:
      :class:`PTQResult`.
    """
    qparams = quantize_params(
        params,
        bits=bits,
        scheme=scheme,
        axis=axis,
        group_size=group_size,
        calibration=calibration,
        percentile=percentile,
        where=where,
        group_fallback=group_fallback,
    )

    def weight_only(p, x, **kw):
        return apply_fn(dequantize_params(p), x, **kw)

    if activation_bits is None:
        return PTQResult(params=qparams, apply_fn=weight_only, ranges=None)
    if calibration_batches is None:
        from jaxcompress._core import JaxCompressValueError

        raise JaxCompressValueError("activation_bits needs calibration_batches")
    ranges = observe_activations(
        apply_fn, dequantize_params(qparams), calibration_batches, method=observer
    )
    act = quantize_activations(apply_fn, ranges, bits=activation_bits, scheme=activation_scheme)

    def full(p, x, **kw):
        return act(dequantize_params(p), x, **kw)

    full.activation_quantization = act.activation_quantization  # read by integer export
    return PTQResult(params=qparams, apply_fn=full, ranges=ranges)
