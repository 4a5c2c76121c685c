"""``quantize`` / ``dequantize`` / ``quantize_params``: one-shot quantization of arrays and pytrees."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import (
    JaxCompressTypeError,
    JaxCompressValueError,
    dequantize,
    dequantize_params,
    is_compressed,
    named_leaves,
    selection_mask,
)
from jaxcompress.quantization._numerics import check_bits, check_scheme, code_range, stored_offset
from jaxcompress.quantization._qarray import QuantizedArray, from_rows, row_shape, to_rows

__all__ = [
    "QuantSpec",
    "qparams_from_range",
    "quantize",
    "dequantize",
    "quantize_params",
    "dequantize_params",
    "is_compressed",
]

CALIBRATIONS = ("absmax", "percentile", "mse")
_MSE_RATIOS = np.linspace(0.3, 1.0, 36, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """Validated, hashable quantization settings for one array (see :func:`quantize`)."""

    bits: int
    scheme: str = "symmetric"
    axis: int | None = None
    group_size: int | None = None
    calibration: str = "absmax"
    frac_bits: int | None = None
    percentile: float = 99.99

    def __post_init__(self):
        check_bits(self.bits)
        check_scheme(self.scheme)
        if self.calibration not in CALIBRATIONS:
            raise JaxCompressValueError(
                f"calibration={self.calibration!r} must be one of {CALIBRATIONS}"
            )
        if self.axis is not None and (
            isinstance(self.axis, bool) or not isinstance(self.axis, int)
        ):
            raise JaxCompressTypeError(f"axis={self.axis!r} must be an int or None")
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
                raise JaxCompressTypeError(f"group_size={self.group_size!r} must be a positive int")
            if self.group_size <= 0:
                raise JaxCompressValueError(f"group_size={self.group_size} must be positive")
            if self.axis is None:
                raise JaxCompressValueError(
                    "group_size requires axis (the output-channel axis, -1 for Flax kernels); "
                    "groups run along the other axes"
                )
        if self.frac_bits is not None:
            if self.scheme != "fixed_point":
                raise JaxCompressValueError(
                    f"frac_bits={self.frac_bits} is only meaningful with scheme='fixed_point'"
                )
            if isinstance(self.frac_bits, bool) or not isinstance(self.frac_bits, int):
                raise JaxCompressTypeError(f"frac_bits={self.frac_bits!r} must be an int")
            if not -32 <= self.frac_bits <= 32:
                raise JaxCompressValueError(f"frac_bits={self.frac_bits} must be in -32..32")
        if not 0.0 < float(self.percentile) <= 100.0:
            raise JaxCompressValueError(f"percentile={self.percentile} must be in (0, 100]")

    def resolve(self, shape: tuple[int, ...]) -> QuantSpec:
        """Check the spec against an array shape and normalise ``axis`` to be non-negative."""
        ndim = len(shape)
        axis = self.axis
        if axis is not None:
            if not -ndim <= axis < ndim:
                raise JaxCompressValueError(
                    f"axis={axis} is out of range for an array of shape {shape}"
                )
            axis %= ndim
            if self.group_size is not None:
                c = shape[axis]
                k = int(np.prod(shape, dtype=np.int64)) // c
                if k % self.group_size:
                    raise JaxCompressValueError(
                        f"group_size={self.group_size} does not divide the reduction extent K={k} "
                        f"of shape {shape} (axis={axis})"
                    )
        return dataclasses.replace(self, axis=axis)


def _check_input(x: Any, *, name: str = "x", check_finite: bool | None = None) -> jax.Array:
    if isinstance(x, QuantizedArray):
        raise JaxCompressTypeError(f"{name} is already a QuantizedArray")
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:
            raise JaxCompressTypeError(f"{name} must be an array, got {type(x).__name__}") from e
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise JaxCompressTypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype} (integer arrays are "
            "already quantized or are not weights)"
        )
    if x.size == 0:
        raise JaxCompressValueError(
            f"{name} is empty (shape {tuple(x.shape)}); nothing to quantize"
        )
    concrete = not isinstance(x, jax.core.Tracer)
    if concrete and check_finite is not False:
        if not bool(np.all(np.isfinite(np.asarray(x, dtype=np.float32)))):
            raise JaxCompressValueError(
                f"{name} contains NaN or Inf; quantizing it would produce garbage codes"
            )
    return jnp.asarray(x)


def check_clip_range(clip_range: Any, name: str = "clip_range") -> None:
    """Raise unless a concrete ``(lo, hi)`` clip range is finite with ``lo <= hi`` everywhere.

    ``lo`` and ``hi`` are scalars or one value per scale unit. A NaN, an infinity or an inverted
    range would otherwise give a meaningless scale (1.0) silently. Traced values are not
    inspected here; under ``jit`` such a range gives a NaN scale instead (see `_qparams_rows`).
    """
    if clip_range is None:
        return
    if not isinstance(clip_range, (tuple, list)) or len(clip_range) != 2:
        raise JaxCompressTypeError(f"{name}={clip_range!r} must be a pair (lo, hi)")
    if any(isinstance(v, jax.core.Tracer) for v in clip_range):
        return
    try:
        lo, hi = (np.asarray(v, np.float64) for v in clip_range)
    except (TypeError, ValueError):
        raise JaxCompressTypeError(f"{name}={clip_range!r} must hold numbers") from None
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise JaxCompressValueError(f"{name}={clip_range!r} must be finite (found NaN or inf)")
    try:
        inverted = bool(np.any(lo > hi))
    except ValueError:
        raise JaxCompressValueError(f"{name}: lo and hi have incompatible shapes") from None
    if inverted:
        raise JaxCompressValueError(f"{name}={clip_range!r} is inverted: lo must be <= hi")


# ----------------------------------------------------------------------------- traceable core


def _range_rows(rows: jax.Array, spec: QuantSpec) -> tuple[jax.Array, jax.Array]:
    """Calibrated ``(lo, hi)`` per row (before the MSE search)."""
    if spec.calibration == "percentile" and spec.percentile < 100.0:
        if spec.scheme == "affine":
            lo = jnp.percentile(rows, 100.0 - spec.percentile, axis=1)
            hi = jnp.percentile(rows, spec.percentile, axis=1)
            return lo, hi
        a = jnp.percentile(jnp.abs(rows), spec.percentile, axis=1)
        return -a, a
    if spec.scheme == "affine":
        return rows.min(axis=1), rows.max(axis=1)
    a = jnp.abs(rows).max(axis=1)
    return -a, a


def _qparams_from_range(
    lo: jax.Array, hi: jax.Array, spec: QuantSpec
) -> tuple[jax.Array, jax.Array]:
    """Scale (float32) and *real* integer zero point (int32) per row from a real clip range."""
    qmin, qmax = code_range(spec.bits, spec.scheme)
    if spec.scheme == "affine":
        lo = jnp.minimum(lo, 0.0)
        hi = jnp.maximum(hi, 0.0)
        span = hi - lo
        scale = jnp.where(span > 0, span / (qmax - qmin), 1.0)
        zp = jnp.clip(jnp.round(-lo / scale), qmin, qmax).astype(jnp.int32)
        return scale.astype(jnp.float32), zp
    a = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    if spec.scheme == "fixed_point":
        if spec.frac_bits is not None:
            scale = jnp.full(a.shape, 2.0 ** (-spec.frac_bits), jnp.float32)
        else:
            # smallest power-of-two scale that does not clip a: 2^ceil(log2(a / qmax))
            e = jnp.ceil(jnp.log2(jnp.where(a > 0, a / qmax, 1.0)))
            scale = jnp.exp2(jnp.clip(e, -32, 32)).astype(jnp.float32)
    else:
        scale = jnp.where(a > 0, a / qmax, 1.0).astype(jnp.float32)
    return scale, jnp.zeros(a.shape, jnp.int32)


def qparams_from_range(lo, hi, spec: QuantSpec) -> tuple[jax.Array, jax.Array]:
    """Scale and zero point of `spec`'s grid over the real range ``[lo, hi]`` (per element).

    The grid every quantizer of the project uses (weights, observed activation ranges, the
    full-integer export): affine grids widen the range to include 0 and round the zero point to an
    integer code; symmetric grids use ``max(|lo|, |hi|) / qmax``; fixed-point grids a power of two.

    Args:
      lo, hi: range bounds (arrays of the same shape, float).
      spec: the `QuantSpec` (bits and scheme are used).

    Returns:
      ``(scale, zero_point)``: float32 scales and int32 zero points (codes, in the unsigned
      ``code_range`` convention; 0 for symmetric and fixed-point grids).
    """
    if not isinstance(spec, QuantSpec):
        raise JaxCompressTypeError(f"qparams_from_range: spec must be a QuantSpec, got {spec!r}")
    return _qparams_from_range(jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32), spec)


def _codes(rows: jax.Array, scale: jax.Array, zp: jax.Array, spec: QuantSpec) -> jax.Array:
    qmin, qmax = code_range(spec.bits, spec.scheme)
    q = jnp.round(rows / scale[:, None]) + zp[:, None].astype(rows.dtype)
    return jnp.clip(q, qmin, qmax)


def _qparams_rows(
    rows: jax.Array, spec: QuantSpec, clip_range: tuple[Any, Any] | None
) -> tuple[jax.Array, jax.Array]:
    if clip_range is not None:
        lo = jnp.broadcast_to(jnp.asarray(clip_range[0], jnp.float32), rows.shape[:1])
        hi = jnp.broadcast_to(jnp.asarray(clip_range[1], jnp.float32), rows.shape[:1])
        scale, zp = _qparams_from_range(lo, hi, spec)
        # a traced NaN/inf or inverted range cannot raise under jit: poison the scale (NaN out)
        ok = jnp.isfinite(lo) & jnp.isfinite(hi) & (lo <= hi)
        return jnp.where(ok, scale, jnp.nan), zp
    lo, hi = _range_rows(rows, spec)
    if spec.calibration == "mse" and not (
        spec.scheme == "fixed_point" and spec.frac_bits is not None
    ):

        def err(r):
            s, z = _qparams_from_range(lo * r, hi * r, spec)
            dq = (_codes(rows, s, z, spec) - z[:, None]) * s[:, None]
            return jnp.mean((dq - rows) ** 2, axis=1)

        errs = jax.lax.map(err, jnp.asarray(_MSE_RATIOS))  # (n_ratios, rows)
        best = jnp.asarray(_MSE_RATIOS)[jnp.argmin(errs, axis=0)]
        lo, hi = lo * best, hi * best
    scale, zp = _qparams_from_range(lo, hi, spec)
    # NaN/Inf under jit cannot raise: poison the scale so dequantize gives NaN, never finite garbage.
    finite = jnp.all(jnp.isfinite(rows), axis=1)
    scale = jnp.where(finite, scale, jnp.nan)
    return scale, zp


@functools.partial(jax.jit, static_argnums=(1,))
def _quantize_core(
    x: jax.Array, spec: QuantSpec, clip_range: tuple[Any, Any] | None = None
) -> QuantizedArray:
    shape = tuple(x.shape)
    rows = to_rows(x.astype(jnp.float32), spec.axis, spec.group_size)
    scale, zp = _qparams_rows(rows, spec, clip_range)
    off = stored_offset(spec.bits, spec.scheme)
    codes = _codes(rows, scale, zp, spec)
    codes = jnp.where(jnp.isfinite(codes), codes, 0.0)
    qvalue = from_rows((codes + off).astype(jnp.int8), shape, spec.axis, spec.group_size)
    rs = row_shape(shape, spec.axis, spec.group_size)
    return QuantizedArray(
        qvalue=qvalue,
        scale=scale.reshape(rs),
        zero_point=(zp + off).astype(jnp.int8).reshape(rs),
        bits=spec.bits,
        scheme=spec.scheme,
        axis=spec.axis,
        group_size=spec.group_size,
        shape=shape,
        dtype=jnp.dtype(x.dtype).name,
    )


# ----------------------------------------------------------------------------- public API


def quantize(
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
) -> QuantizedArray:
    """Quantize a float array to ``bits``-bit integer codes (grid table in ``_numerics``).

    Symmetric: ``q = clip(round(x / s), -qmax, qmax)``, ``s = a / qmax``, ``qmax = 2^(b-1) - 1``.
    Affine: ``q = clip(round(x / s) + Z, 0, 2^b - 1)``, ``s = (hi - lo) / (2^b - 1)``,
    ``Z = round(-lo / s)`` after forcing ``lo <= 0 <= hi`` (real 0 is exact; Jacob et al. 2018).
    Fixed point: ``q = clip(round(x * 2^f), -qmax, qmax)``, ``s = 2^-f``. Rounding is half to even.

    Args:
      x: float array of any shape (float32, bfloat16, float16, float64); not empty, no NaN/Inf.
      bits: code width, 2..8 (codes are stored in int8).
      scheme: ``"symmetric"`` | ``"affine"`` | ``"fixed_point"``.
      axis: ``None`` for one scale per tensor, or the channel axis (``-1`` = output channels of a
        Flax ``(in, out)`` Dense or ``(kh, kw, in, out)`` conv kernel): one scale per channel.
      group_size: with ``axis``: one scale per ``group_size`` consecutive elements of the
        flattened reduction extent ``K`` (all other axes) per channel; must divide ``K``.
      calibration: how the clip range ``a`` (or ``[lo, hi]``) is chosen per scale unit:
        ``"absmax"`` (min/max for affine), ``"percentile"`` (of ``|x|``, or both tails for
        affine), ``"mse"`` (grid search over ``r * absmax`` for ``r`` in [0.3, 1] minimising the
        squared error).
      frac_bits: fixed point only: fixed ``f`` (scale ``2^-f`` for every unit). ``None`` picks
        per unit the smallest power-of-two scale that does not clip the calibrated range.
      percentile: for ``calibration="percentile"``, in (0, 100].
      clip_range: optional ``(lo, hi)`` real range (scalars or one value per scale unit) that
        replaces calibration, e.g. a static activation range from an observer; finite, with
        ``lo <= hi`` (a traced range that is not gets a NaN scale).
      check_finite: ``None``/``True``: raise on NaN/Inf when ``x`` is concrete. Under ``jit`` the
        value cannot be inspected: a unit with NaN/Inf then gets a NaN scale, so ``dequantize``
        yields NaN rather than finite garbage. ``False`` skips the eager check.

    Returns:
      A :class:`QuantizedArray` with int8 ``qvalue`` of ``x.shape``.

    Raises:
      JaxCompressTypeError: ``x`` has an integer/bool dtype, or a keyword has the wrong type.
      JaxCompressValueError: ``bits`` outside 2..8, unknown scheme/calibration, ``axis`` out of
        range, ``group_size`` not dividing ``K``, empty ``x``, NaN/Inf in a concrete ``x``, a
        concrete `clip_range` that is not finite or has ``lo > hi``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = quantize(jnp.arange(256.0) / 255, bits=8, scheme="affine")
      >>> int(q.codes()[255]), int(q.qvalue[0])
      (255, -128)

    References:
      Jacob et al., "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference", CVPR 2018.
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
    return _quantize_core(x, spec.resolve(tuple(x.shape)), clip_range)


def _lookup(value: Any, path: str, name: str) -> Any:
    if not isinstance(value, Mapping):
        return value
    if path in value:  # exact paths first, then regexes in order
        return value[path]
    for pattern, v in value.items():
        if re.search(pattern, path):
            return v
    raise JaxCompressValueError(f"{name} mapping has no entry matching the selected leaf {path!r}")


def quantize_params(
    params: Any,
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
    check_finite: bool | None = None,
) -> Any:
    """Quantize the selected leaves of a params pytree (linen dict or ``nnx.State``).

    Args:
      params: pytree of arrays.
      bits: an int, or a mapping ``{regex_or_path: bits}`` (first match wins) for mixed precision,
        e.g. the output of :func:`mixed_precision`.
      scheme, axis, group_size, calibration, frac_bits, percentile, check_finite: as in
        :func:`quantize`; ``axis`` defaults to ``-1`` (per output channel of Flax kernels).
      where: selection (DESIGN §3): default every floating leaf with ``ndim >= 2``.
      group_fallback: ``"error"`` (default) raises when ``group_size`` does not divide a selected
        leaf's ``K``; ``"per_channel"`` quantizes such leaves per channel instead (visible in their
        ``group_size=None``).

    Returns:
      A pytree of the same structure with :class:`QuantizedArray` at the selected leaves.
    """
    if group_fallback not in ("error", "per_channel"):
        raise JaxCompressValueError(f"{group_fallback=} must be 'error' or 'per_channel'")
    sel = selection_mask(params, where)
    paths = [p for p, _ in named_leaves(params)]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for path, x, s in zip(paths, leaves, sel, strict=True):
        if not s:
            out.append(x)
            continue
        b = _lookup(bits, path, "bits")
        spec = QuantSpec(
            bits=b,
            scheme=scheme,
            axis=axis,
            group_size=group_size,
            calibration=calibration,
            frac_bits=frac_bits,
            percentile=percentile,
        )
        xx = _check_input(x, name=f"params leaf {path!r}", check_finite=check_finite)
        try:
            spec = spec.resolve(tuple(xx.shape))
        except JaxCompressValueError as e:
            if (
                group_fallback == "per_channel"
                and group_size is not None
                and "group_size" in str(e)
            ):
                spec = dataclasses.replace(spec, group_size=None).resolve(tuple(xx.shape))
            else:
                raise JaxCompressValueError(f"params leaf {path!r}: {e}") from None
        out.append(_quantize_core(xx, spec))
    return jax.tree_util.tree_unflatten(treedef, out)
