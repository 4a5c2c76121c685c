"""GPTQ: one-shot weight quantization with second-order error compensation (Frantar et al. 2022).

For a kernel ``W`` viewed as ``(K, N)`` (reduction x outputs) and the input Hessian
``H = X^T X / n`` ``(K, K)`` from :func:`capture_stats`, GPTQ quantizes the reduction rows of ``W``
one at a time (columns of the paper's ``(N, K)`` matrix) and moves each row's error onto the rows not
yet quantized, minimising ``||X W - X Q||^2``::

    H  <- H + damping * mean(diag H) * I            (dead inputs, H_jj = 0: H_jj <- 1, W_j <- 0)
    U  <- cholesky(H^-1)^T                          (upper; row i holds the OBS update of step i)
    for block [i1, i2) of B rows:                   (lazy batch update)
        for i in block:  q_i = Q(w_i);  e_i = (w_i - q_i) / U_ii;  w_j -= e_i U_ij  (i < j < i2)
        W[i2:] -= E_block^T U[block, i2:]

Scales: per output channel from the (dead-zeroed) float ``W``; with ``group_size=g``, one scale per
``g`` consecutive reduction rows, computed when the group starts from the *error-updated* rows (as
the reference implementation). ``act_order=True`` processes rows by decreasing ``diag(H)``; with
groups it then uses *static* groups (scales from the float ``W`` before any update), because the
project's :class:`QuantizedArray` stores contiguous groups and no permutation index.

Departures from the paper, and why: the blocks are applied to the whole remaining matrix with a
masked ``(N, B) x (B, K)`` product (twice the flops of the triangular update, but one compiled loop
body for every block); the block size divides the group size so a group's scale is always taken from
fully updated rows.

References:
  Frantar, Ashkboos, Hoefler, Alistarh. "GPTQ: Accurate Post-Training Quantization for Generative
  Pre-trained Transformers", ICLR 2023 (arXiv 2210.17323, 2022).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import (
    JaxCompressTypeError,
    JaxCompressValueError,
)
from jaxcompress.quantization._calibration import (
    CalibrationStats,
    LayerStats,
    select_calibrated,
)
from jaxcompress.quantization._numerics import code_range, stored_offset
from jaxcompress.quantization._qarray import QuantizedArray
from jaxcompress.quantization._quantize import QuantSpec, _lookup, _qparams_from_range

__all__ = ["gptq", "gptq_params", "hessian_inverse_upper", "check_damping"]

_MAX_BLOCK = 128


def check_damping(damping: Any) -> float:
    """``damping`` as a float, checked finite and ``>= 0`` (GPTQ and SparseGPT share it)."""
    if isinstance(damping, bool) or not isinstance(damping, (int, float, np.floating)):
        raise JaxCompressTypeError(f"damping={damping!r} must be a float >= 0")
    if not (math.isfinite(float(damping)) and float(damping) >= 0):
        raise JaxCompressValueError(f"damping={damping} must be finite and >= 0")
    return float(damping)


def _prepare_hessian(h: jax.Array, damping: float) -> tuple[jax.Array, jax.Array]:
    """Dead-input fix and damping: returns ``(H_damped, dead)``."""
    k = h.shape[0]
    h = h.astype(jnp.float32)
    idx = jnp.arange(k)
    d = jnp.diagonal(h)
    dead = d == 0
    h = h.at[idx, idx].set(jnp.where(dead, 1.0, d))
    damp = damping * jnp.mean(jnp.diagonal(h))
    h = h.at[idx, idx].add(damp)
    return h, dead


def hessian_inverse_upper(h: jax.Array, damping: float) -> tuple[jax.Array, jax.Array]:
    """``U = cholesky((H + damp I)^-1)`` upper triangular, and the dead-input flags.

    Args:
      h: ``(K, K)`` float32 Hessian (symmetric PSD).
      damping: relative damping ``>= 0`` (``damp = damping * mean(diag H)``).

    Returns:
      ``(U, dead)``: ``U`` ``(K, K)`` upper triangular (NaN if ``H + damp I`` is not positive
      definite), ``dead`` ``(K,)`` bool (inputs that never fired, ``H_jj = 0``).
    """
    hd, dead = _prepare_hessian(h, damping)
    eye = jnp.eye(h.shape[0], dtype=jnp.float32)
    low = jnp.linalg.cholesky(hd)
    hinv = jax.scipy.linalg.cho_solve((low, True), eye)
    hinv = 0.5 * (hinv + hinv.T)
    return jnp.linalg.cholesky(hinv, upper=True), dead


def _block_size(k: int, group_size: int | None) -> int:
    if group_size is None:
        return min(_MAX_BLOCK, k)
    if group_size <= _MAX_BLOCK or group_size % _MAX_BLOCK:
        return group_size
    return _MAX_BLOCK


def _scale_of(rows: jax.Array, spec: QuantSpec) -> tuple[jax.Array, jax.Array]:
    """Per-row ``(scale, real zero point)`` of ``rows`` ``(N, g)`` as :func:`quantize` (absmax)."""
    if spec.scheme == "affine":
        lo, hi = rows.min(axis=1), rows.max(axis=1)
    else:
        a = jnp.abs(rows).max(axis=1)
        lo, hi = -a, a
    return _qparams_from_range(lo, hi, spec)


@functools.partial(jax.jit, static_argnames=("spec", "act_order"))
def _gptq_core(
    w_kn: jax.Array, h: jax.Array, damping: jax.Array, *, spec: QuantSpec, act_order: bool
):
    """Traceable GPTQ on ``w_kn`` ``(K, N)``; returns ``(codes (K, N) int32, scale, zp, ok)``."""
    k, n = w_kn.shape
    g = spec.group_size
    qmin, qmax = code_range(spec.bits, spec.scheme)
    u, dead = hessian_inverse_upper(h, damping)
    ok = jnp.all(jnp.isfinite(u))
    w = jnp.where(dead[None, :], 0.0, w_kn.T.astype(jnp.float32))  # (N, K), paper layout
    if act_order:
        perm = jnp.argsort(-jnp.diagonal(h.astype(jnp.float32)), stable=True)
        # recompute U for the permuted Hessian (the damping is permutation invariant)
        u, _ = hessian_inverse_upper(h[perm][:, perm], damping)
    else:
        perm = jnp.arange(k)
    bsz = _block_size(k, g)
    kp = -(-k // bsz) * bsz  # padded extent; padded rows are independent zeros (U = I there)
    pad = kp - k

    # static scales: per channel, or per group for act_order (see the module docstring)
    if g is None:
        s_ch, z_ch = _scale_of(w, spec)  # (N,)
        s_cols = jnp.broadcast_to(s_ch[:, None], (n, kp))
        z_cols = jnp.broadcast_to(z_ch[:, None], (n, kp))
    else:
        sg, zg = _scale_of(w.reshape(n * (k // g), g), spec)
        sg, zg = sg.reshape(n, k // g), zg.reshape(n, k // g)
        s_cols = jnp.repeat(sg, g, axis=1)[:, perm]
        z_cols = jnp.repeat(zg, g, axis=1)[:, perm]
    w = w[:, perm]
    if pad:
        w = jnp.pad(w, ((0, 0), (0, pad)))
        u = jnp.pad(u, ((0, pad), (0, pad)))
        u = u.at[jnp.arange(k, kp), jnp.arange(k, kp)].set(1.0)
        s_cols = jnp.pad(s_cols, ((0, 0), (0, pad)), constant_values=1.0)
        z_cols = jnp.pad(z_cols, ((0, 0), (0, pad)))
    dynamic = g is not None and not act_order
    n_groups = 1 if g is None else k // g
    col = jnp.arange(kp)

    def column_step(i, carry):
        w1, q1, e1, s_blk, z_blk, u1 = carry
        wi = jax.lax.dynamic_index_in_dim(w1, i, axis=1, keepdims=False)
        si = jax.lax.dynamic_index_in_dim(s_blk, i, axis=1, keepdims=False)
        zi = jax.lax.dynamic_index_in_dim(z_blk, i, axis=1, keepdims=False)
        q = jnp.clip(jnp.round(wi / si) + zi.astype(jnp.float32), qmin, qmax)
        dq = (q - zi.astype(jnp.float32)) * si
        d = u1[i, i]
        err = (wi - dq) / d
        w1 = w1 - err[:, None] * u1[i][None, :]  # U is upper triangular: columns < i untouched
        q1 = jax.lax.dynamic_update_index_in_dim(q1, q, i, axis=1)
        e1 = jax.lax.dynamic_update_index_in_dim(e1, err, i, axis=1)
        return w1, q1, e1, s_blk, z_blk, u1

    def block_step(b, carry):
        w, codes, s_groups, z_groups, s_cur, z_cur = carry
        i1 = b * bsz
        if dynamic:
            # at a group start, W[:, i1:i1+g] has received every earlier update: take its scale
            grp = jax.lax.dynamic_slice_in_dim(w, i1, g, axis=1)
            s_new, z_new = _scale_of(grp, spec)
            start = (i1 % g) == 0
            s_cur = jnp.where(start, s_new, s_cur)
            z_cur = jnp.where(start, z_new, z_cur)
            gi = i1 // g
            s_groups = jax.lax.dynamic_update_index_in_dim(s_groups, s_cur, gi, axis=0)
            z_groups = jax.lax.dynamic_update_index_in_dim(z_groups, z_cur, gi, axis=0)
            s_blk = jnp.broadcast_to(s_cur[:, None], (n, bsz))
            z_blk = jnp.broadcast_to(z_cur[:, None], (n, bsz))
        else:
            s_blk = jax.lax.dynamic_slice_in_dim(s_cols, i1, bsz, axis=1)
            z_blk = jax.lax.dynamic_slice_in_dim(z_cols, i1, bsz, axis=1)
        w1 = jax.lax.dynamic_slice_in_dim(w, i1, bsz, axis=1)
        u_rows = jax.lax.dynamic_slice_in_dim(u, i1, bsz, axis=0)  # (B, Kp)
        u1 = jax.lax.dynamic_slice_in_dim(u_rows, i1, bsz, axis=1)  # (B, B)
        zeros = jnp.zeros((n, bsz), jnp.float32)
        _, q1, e1, *_ = jax.lax.fori_loop(0, bsz, column_step, (w1, zeros, zeros, s_blk, z_blk, u1))
        later = jnp.where(col[None, :] >= i1 + bsz, u_rows, 0.0)
        w = w - jnp.matmul(e1, later, precision=jax.lax.Precision.HIGHEST)
        codes = jax.lax.dynamic_update_slice_in_dim(codes, q1, i1, axis=1)
        return w, codes, s_groups, z_groups, s_cur, z_cur

    s0 = jnp.ones((n_groups, n), jnp.float32)
    z0 = jnp.zeros((n_groups, n), jnp.int32)
    init = (w, jnp.zeros((n, kp), jnp.float32), s0, z0, s0[0], z0[0])
    _, codes, s_groups, z_groups, _, _ = jax.lax.fori_loop(0, kp // bsz, block_step, init)
    codes = codes[:, :k]
    inv = jnp.argsort(perm)
    codes = codes[:, inv].T.astype(jnp.int32)  # (K, N), original order
    if g is None:
        scale, zp = s_ch, z_ch
    elif dynamic:
        scale, zp = s_groups, z_groups
    else:
        scale, zp = sg.T, zg.T
    scale = jnp.where(ok, scale, jnp.nan)
    return codes, scale, zp, ok


def _as_stats_hessian(h: Any, name: str) -> jax.Array:
    if isinstance(h, LayerStats):
        return h.hessian
    if not hasattr(h, "shape"):
        raise JaxCompressTypeError(f"{name} must be a (K, K) array or LayerStats")
    return jnp.asarray(h, jnp.float32)


def gptq(
    w: Any,
    hessian: Any,
    *,
    bits: int,
    scheme: str = "symmetric",
    group_size: int | None = None,
    act_order: bool = False,
    damping: float = 0.01,
    check: bool | None = None,
) -> QuantizedArray:
    """Quantize one kernel with GPTQ (see the module docstring for the algorithm).

    Args:
      w: float kernel ``(..., out)``: Dense ``(K, N)``, conv ``(kh, kw, in, out)`` (``K`` is the
        product of all axes but the last, in C order).
      hessian: ``(K, K)`` input Hessian ``X^T X / n``, or the kernel's :class:`LayerStats`.
      bits: 2..8. scheme: ``"symmetric"`` or ``"affine"`` (fixed point is not offered).
      group_size: ``None`` (one scale per output channel) or a divisor of ``K``.
      act_order: process reduction rows by decreasing ``diag(H)`` (static groups, see above).
      damping: relative damping ``>= 0``: ``H + damping * mean(diag H) * I`` (0.01 as the paper).
      check: ``None``/``True`` raise when the damped Hessian is not positive definite and the
        inputs are concrete; under ``jit`` such a layer gets NaN scales instead (never silent
        finite garbage). ``False`` skips the eager check.

    Returns:
      A :class:`QuantizedArray` with ``axis = w.ndim - 1`` and ``group_size`` as given; with the
      identity Hessian the codes equal :func:`quantize` (round to nearest) exactly.

    Raises:
      JaxCompressValueError: bad ``bits``/``scheme``/``damping``; ``group_size`` not dividing
        ``K``; ``hessian`` not ``(K, K)``; NaN/Inf in ``w`` or ``hessian``; a singular Hessian
        (e.g. ``damping=0`` with fewer calibration rows than inputs).
      JaxCompressTypeError: non-float ``w``.

    Example:
      >>> q = gptq(w, stats["params/Dense_0/kernel"], bits=4, group_size=32)
      >>> w_hat = dequantize(q)

    References:
      Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
      Transformers", 2022.
    """
    if scheme not in ("symmetric", "affine"):
        raise JaxCompressValueError(f"{scheme=} must be 'symmetric' or 'affine' for GPTQ")
    damping = check_damping(damping)
    h = _as_stats_hessian(hessian, "hessian")
    if not hasattr(w, "dtype") or not jnp.issubdtype(w.dtype, jnp.floating):
        raise JaxCompressTypeError(f"w must be a floating-point array, got {type(w).__name__}")
    w = jnp.asarray(w)
    if w.ndim < 2:
        raise JaxCompressValueError(f"w must have ndim >= 2 (a kernel), got shape {w.shape}")
    shape = tuple(w.shape)
    n = shape[-1]
    k = math.prod(shape[:-1])
    if tuple(h.shape) != (k, k):
        raise JaxCompressValueError(
            f"hessian has shape {tuple(h.shape)}, expected ({k}, {k}) for w of shape {shape}"
        )
    spec = QuantSpec(bits=bits, scheme=scheme, axis=-1, group_size=group_size).resolve(shape)
    concrete = not any(isinstance(a, jax.core.Tracer) for a in (w, h))
    if concrete and check is not False:
        if not bool(jnp.all(jnp.isfinite(w))):
            raise JaxCompressValueError("w contains NaN or Inf")
        if not bool(jnp.all(jnp.isfinite(h))):
            raise JaxCompressValueError("hessian contains NaN or Inf")
    codes, scale, zp, ok = _gptq_core(
        w.reshape(k, n), h, jnp.float32(damping), spec=spec, act_order=bool(act_order)
    )
    if concrete and check is not False and not bool(ok):
        raise JaxCompressValueError(
            f"hessian (+ damping={damping} * mean diag) is not positive definite, so GPTQ's "
            "Cholesky failed; use damping > 0 or more calibration rows than inputs"
        )
    off = stored_offset(spec.bits, spec.scheme)
    return QuantizedArray(
        qvalue=(codes + off).astype(jnp.int8).reshape(shape),
        scale=scale.astype(jnp.float32),
        zero_point=(zp + off).astype(jnp.int8),
        bits=spec.bits,
        scheme=spec.scheme,
        axis=len(shape) - 1,
        group_size=group_size,
        shape=shape,
        dtype=jnp.dtype(w.dtype).name,
    )


def gptq_params(
    params: Any,
    stats: CalibrationStats,
    *,
    bits: int | Mapping[str, int],
    scheme: str = "symmetric",
    group_size: int | None = None,
    act_order: bool = False,
    damping: float = 0.01,
    where: Any = None,
) -> Any:
    """GPTQ every selected kernel of a params pytree that has calibration statistics.

    Args:
      params: float params (linen dict or ``nnx.State``), the ones ``stats`` was captured with.
      stats: from :func:`capture_stats`.
      bits: int, or ``{regex_or_path: bits}`` (first match wins), as :func:`quantize_params`.
      scheme, group_size, act_order, damping: as :func:`gptq`.
      where: selection (DESIGN §3). Default: every leaf that has statistics in ``stats``
        (kernels of matmuls/convs; embeddings are left float). An explicit selection must pick
        only leaves with statistics.

    Returns:
      params with :class:`QuantizedArray` at the selected leaves (``dequantize_params``, the size
      report, export and the edge runtime take it unchanged).

    Raises:
      JaxCompressValueError: ``where`` matches no leaf or a leaf without statistics; any error of
        :func:`gptq` (prefixed with the leaf path).
      JaxCompressTypeError: ``stats`` is not a :class:`CalibrationStats`.
    """
    named, sel = select_calibrated(params, stats, where)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for (path, _), x, s in zip(named, leaves, sel, strict=True):
        if not s:
            out.append(x)
            continue
        b = _lookup(bits, path, "bits")
        try:
            out.append(
                gptq(
                    x,
                    stats[path],
                    bits=b,
                    scheme=scheme,
                    group_size=group_size,
                    act_order=act_order,
                    damping=damping,
                )
            )
        except (JaxCompressValueError, JaxCompressTypeError) as e:
            raise type(e)(f"params leaf {path!r}: {e}") from None
    return jax.tree_util.tree_unflatten(treedef, out)
