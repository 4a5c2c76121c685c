"""Fake quantization with a clipped straight-through estimator, and the QAT building blocks."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcompress._core import JaxCompressTypeError, named_leaves, selection_mask
from jaxcompress.quantization._numerics import code_range
from jaxcompress.quantization._qarray import from_rows, to_rows
from jaxcompress.quantization._quantize import (
    QuantSpec,
    _check_input,
    _codes,
    _lookup,
    _qparams_rows,
    check_clip_range,
    quantize_params,
)

__all__ = ["fake_quant", "fake_quantize", "FakeQuantize", "qat_step"]


@functools.partial(jax.jit, static_argnums=(1,))
def _fake_quant_core(
    x: jax.Array, spec: QuantSpec, clip_range: tuple[Any, Any] | None = None
) -> jax.Array:
    rows = to_rows(x.astype(jnp.float32), spec.axis, spec.group_size)
    srows = jax.lax.stop_gradient(rows)
    if clip_range is not None:
        clip_range = jax.tree.map(jax.lax.stop_gradient, clip_range)
    scale, zp = _qparams_rows(srows, spec, clip_range)
    zf = zp.astype(jnp.float32)[:, None]
    s = scale[:, None]
    dq = (_codes(srows, scale, zp, spec) - zf) * s
    qmin, qmax = code_range(spec.bits, spec.scheme)
    lo, hi = (qmin - zf) * s, (qmax - zf) * s
    inside = jax.lax.stop_gradient(((rows >= lo) & (rows <= hi)).astype(jnp.float32))
    # forward: dq exactly; backward: d out / d x = 1 inside [lo, hi], 0 outside (clipped STE).
    out = dq + (rows - srows) * inside
    return from_rows(out, tuple(x.shape), spec.axis, spec.group_size).astype(x.dtype)


def fake_quant(
    x: Any,
    *,
    bits: int,
    scheme: str = "symmetric",
    axis: int | None = None,
    group_size: int | None = None,
    calibration: str = "absmax",
    frac_bits: int | None = None,
    percentile: float = 99.99,
    clip_range: tuple[Any, Any] | None = None,
    check_finite: bool | None = None,
) -> jax.Array:
    """``dequantize(quantize(x))`` in the forward pass, a clipped straight-through gradient.

    Forward: exactly the grid of :func:`quantize` with the same keywords. Backward:
    ``d out / d x = 1`` where ``lo <= x <= hi`` (the clip range ``[s (qmin - Z), s (qmax - Z)]``,
    inclusive) and ``0`` outside; no gradient flows into the scale (it is recomputed from ``x``
    under ``stop_gradient``, or taken from ``clip_range``).

    Args:
      x: float array; see :func:`quantize` for every keyword.

    Returns:
      A float array of ``x``'s shape and dtype on the quantization grid.

    Raises:
      The same errors as :func:`quantize` for static arguments; NaN/Inf only when ``x`` is
      concrete (under ``jit``/``grad`` a NaN scale propagates instead).

    References:
      Bengio et al., "Estimating or Propagating Gradients Through Stochastic Neurons", 2013;
      Jacob et al. 2018 (clipped STE as in their simulated quantization).
    """
    spec = QuantSpec(
        bits=bits,
        scheme=scheme,
        axis=axis,
        group_size=group_size,
        calibration=calibration,
        frac_bits=frac_bits,
        percentile=percentile,
    )
    x = _check_input(x, check_finite=check_finite)
    check_clip_range(clip_range)
    return _fake_quant_core(x, spec.resolve(tuple(x.shape)), clip_range)


@dataclasses.dataclass(frozen=True)
class FakeQuantize:
    """A params -> params fake-quantization step (the QAT weight path); see :func:`fake_quantize`."""

    bits: int | tuple[tuple[str, int], ...]
    scheme: str = "symmetric"
    axis: int | None = -1
    group_size: int | None = None
    calibration: str = "absmax"
    frac_bits: int | None = None
    percentile: float = 99.99
    where: Any = None
    group_fallback: str = "error"

    def _bits(self) -> int | Mapping[str, int]:
        return dict(self.bits) if isinstance(self.bits, tuple) else self.bits

    def _spec(self, path: str, shape: tuple[int, ...]) -> QuantSpec:
        spec = QuantSpec(
            bits=_lookup(self._bits(), path, "bits"),
            scheme=self.scheme,
            axis=self.axis,
            group_size=self.group_size,
            calibration=self.calibration,
            frac_bits=self.frac_bits,
            percentile=self.percentile,
        )
        try:
            return spec.resolve(shape)
        except Exception as e:
            if (
                self.group_fallback == "per_channel"
                and self.group_size is not None
                and "group_size" in str(e)
            ):
                return dataclasses.replace(spec, group_size=None).resolve(shape)
            raise

    def __call__(self, params: Any) -> Any:
        sel = selection_mask(params, self.where)
        paths = [p for p, _ in named_leaves(params)]
        leaves, treedef = jax.tree_util.tree_flatten(params)
        out = [
            _fake_quant_core(x, self._spec(p, tuple(x.shape))) if s else x
            for p, x, s in zip(paths, leaves, sel, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, out)

    def quantize(self, params: Any) -> Any:
        """The deployable tree: :func:`quantize_params` on the same grid as the training forward."""
        return quantize_params(
            params,
            bits=self._bits(),
            scheme=self.scheme,
            axis=self.axis,
            group_size=self.group_size,
            calibration=self.calibration,
            frac_bits=self.frac_bits,
            percentile=self.percentile,
            where=self.where,
            group_fallback=self.group_fallback,
        )


def fake_quantize(
    *,
    bits: int | Mapping[str, int],
    scheme: str = "symmetric",
    axis: int | None = -1,
    group_size: int | None = None,
    calibration: str = "absmax",
    frac_bits: int | None = None,
    percentile: float = 99.99,
    where: Any = None,
    group_fallback: str = "error",
) -> FakeQuantize:
    """Build the QAT weight step: ``params -> params`` with :func:`fake_quant` on selected leaves.

    Pass it as ``param_transform=`` to :func:`jaxcompress.training.fit` (or call it on the params
    inside your own loss): the optimizer keeps updating the float "shadow" weights while the
    forward pass sees quantized ones and the gradient is the clipped STE. ``.quantize(params)``
    returns the deployable :class:`QuantizedArray` tree on the very same grid.

    Args:
      bits: int or ``{regex_or_path: bits}`` (mixed precision).
      scheme, axis, group_size, calibration, frac_bits, percentile: as :func:`quantize`
        (``axis`` defaults to ``-1``, per output channel).
      where: selection, default floating leaves with ``ndim >= 2``.
      group_fallback: ``"error"`` | ``"per_channel"``, as :func:`quantize_params`.

    Example:
      >>> fq = fake_quantize(bits=4, group_size=32)            # doctest: +SKIP
      >>> fit(apply_fn, params, data, optimizer=optax.adam(1e-4), param_transform=fq, ...)
    """
    if isinstance(bits, Mapping):
        bits = tuple(bits.items())
    QuantSpec(
        bits=bits[0][1] if isinstance(bits, tuple) and bits else bits,
        scheme=scheme,
        axis=axis,
        group_size=group_size,
        calibration=calibration,
        frac_bits=frac_bits,
        percentile=percentile,
    )
    return FakeQuantize(
        bits=bits,
        scheme=scheme,
        axis=axis,
        group_size=group_size,
        calibration=calibration,
        frac_bits=frac_bits,
        percentile=percentile,
        where=where,
        group_fallback=group_fallback,
    )


def qat_step(
    apply_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    quantizer: Callable[[Any], Any],
    *,
    loss_fn: Callable[..., jax.Array] | None = None,
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """A jitted optax QAT step ``(params, opt_state, x, y) -> (params, opt_state, loss)``.

    ``loss = CE(apply_fn(quantizer(params), x), y)`` (or ``loss_fn(logits, y)``); the gradient
    reaches the float params through the clipped STE and ``optimizer`` (any optax
    ``GradientTransformation``, e.g. ``optax.chain(optax.adam(1e-4), ...)``) updates them.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise JaxCompressTypeError("optimizer must be an optax.GradientTransformation")

    def _loss(params, x, y):
        logits = apply_fn(quantizer(params), x)
        if loss_fn is not None:
            return loss_fn(logits, y)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(_loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step
