"""One-shot, data-aware pruning: SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2023).

Both take the per-kernel input statistics of :func:`jaxcompress.quantization.capture_stats` and
produce the project's bool masks (``True`` = keep, the structure of params), so
:func:`apply_masks`, :func:`sparsity_report`, export and the N:M kernels work unchanged. Kernels are
viewed as ``(K, N)`` (reduction x outputs, ``K`` = all axes but the last in C order).

* **Wanda**: score ``S_jo = |W_jo| * ||X_j||_2``; prune the smallest scores, compared per output
  channel (``comparison="output"``, the paper's choice: ``round(s * K)`` per output) or over the
  whole layer (``comparison="layer"``: ``round(s * n)`` per leaf, exactly as
  :func:`magnitude_masks`, whose tie-breaking it shares: with constant input norms the masks are
  identical). ``n:m``: in every group of ``m`` consecutive reduction entries keep the ``n`` largest
  scores (groups as :func:`nm_masks`). No weight update. The score is invariant to rescaling input
  ``j`` by ``c`` and row ``j`` of ``W`` by ``1/c`` (the same function), magnitude's is not: Wanda
  differs from magnitude pruning only as far as the input norms differ, and gains most where a
  few inputs carry much larger activations than the rest (LLM outlier features).
* **SparseGPT**: the GPTQ sweep with "quantize" replaced by "prune": with
  ``U = cholesky((H + damp I)^-1)^T``, for every block of ``B = 128`` reduction rows the mask is
  chosen by the OBS saliency ``w^2 / U_jj^2``, pruned weights' errors ``e_j = w_j / U_jj`` are moved
  onto the remaining rows ``w_l -= e_j U_jl`` (lazy batch updates as GPTQ). Unstructured: each block
  prunes its share of ``round(s * n)`` (cumulative rounding, so the leaf has exactly
  ``round(s * n)`` zeros); ``n:m``: the mask of each group is chosen when the sweep reaches it.
  Returns the updated params (pruned entries exactly 0) and the masks.

References:
  Frantar, Alistarh. "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
  ICML 2023. Sun, Liu, Bair, Kolter. "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), ICLR 2024 (arXiv 2306.11695, 2023).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import (
    JaxCompressTypeError,
    JaxCompressValueError,
)
from jaxcompress.pruning._masks import _check_nm, _magnitude_keep, _nm_keep
from jaxcompress.quantization import (
    CalibrationStats,
    LayerStats,
    check_damping,
    hessian_inverse_upper,
    select_calibrated,
)

__all__ = ["OneShotPruneResult", "sparsegpt", "sparsegpt_params", "wanda_masks"]

_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class OneShotPruneResult:
    """What :func:`sparsegpt_params` returns: updated ``params`` and their ``masks``."""

    params: Any
    masks: Any


def _check_sparsity(sparsity: Any, n: Any, m: Any) -> None:
    if (n is None) != (m is None):
        raise JaxCompressValueError("give both n and m for N:M pruning, or neither")
    if n is not None:
        _check_nm(n, m)
        if sparsity is not None:
            raise JaxCompressValueError("give either sparsity or n:m, not both")
        return
    if sparsity is None:
        raise JaxCompressValueError("give sparsity (a float in [0, 1)) or n and m")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)):
        raise JaxCompressTypeError(f"{sparsity=} must be a float in [0, 1)")
    if not 0.0 <= float(sparsity) < 1.0:
        raise JaxCompressValueError(f"{sparsity=} must be in [0, 1)")


def _nm_shape_check(path, shape, m):
    if len(shape) < 2 or shape[-2] % m:
        raise JaxCompressValueError(
            f"n:m: leaf {path!r} of shape {shape}: the reduction axis -2 must be divisible by {m=}"
        )


# --------------------------------------------------------------------------------------- Wanda
@jax.jit
def _wanda_output_keep(score_kn: jax.Array, k: int | jax.Array):
    """Per output column: drop the ``k`` smallest scores (ties: lower reduction index first)."""
    order = jnp.argsort(score_kn, axis=0, stable=True)
    rank = (
        jnp.zeros_like(order)
        .at[order, jnp.arange(score_kn.shape[1])[None, :]]
        .set(jnp.arange(score_kn.shape[0])[:, None])
    )
    return rank >= k


def wanda_masks(
    params: Any,
    stats: CalibrationStats,
    sparsity: float | None = None,
    *,
    n: int | None = None,
    m: int | None = None,
    comparison: str = "output",
    where: Any = None,
) -> Any:
    """Wanda masks: prune the smallest ``|W_jo| * ||X_j||_2`` (see the module docstring).

    Args:
      params: float params (linen dict or ``nnx.State``).
      stats: :class:`CalibrationStats` of the same model (``||X_j||_2 = sqrt(xtx_jj)``).
      sparsity: fraction to prune in ``[0, 1)`` (unstructured); or give ``n`` and ``m``.
      n, m: N:M, keep ``n`` of every ``m`` consecutive entries along the reduction axis ``-2``.
      comparison: unstructured only: ``"output"`` (``round(s * K)`` per output channel) or
        ``"layer"`` (``round(s * size)`` per leaf, as :func:`magnitude_masks`).
      where: selection; default every leaf with statistics.

    Returns:
      Bool masks with the structure of ``params`` (unselected leaves all ``True``).

    Raises:
      JaxCompressValueError: bad sparsity / n / m / comparison; an axis not divisible by ``m``;
        ``where`` matching nothing or a leaf without statistics.
    """
    _check_sparsity(sparsity, n, m)
    if comparison not in ("output", "layer"):
        raise JaxCompressValueError(f"{comparison=} must be 'output' or 'layer'")
    named, sel = select_calibrated(params, stats, where)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for (path, _), x, s in zip(named, leaves, sel, strict=True):
        if not s:
            out.append(jnp.ones(jnp.shape(x), bool))
            continue
        x = jnp.asarray(x)
        shape = tuple(x.shape)
        kk = math.prod(shape[:-1])
        norm = stats[path].norm
        if norm.shape != (kk,):
            raise JaxCompressValueError(
                f"stats for {path!r} have K={norm.shape[0]}, leaf {shape} has K={kk}"
            )
        score = (jnp.abs(x.astype(jnp.float32)).reshape(kk, -1) * norm[:, None]).reshape(shape)
        if n is not None:
            _nm_shape_check(path, shape, m)
            out.append(_nm_keep(score, n, m, -2))
        elif comparison == "layer":
            k = jnp.asarray(int(round(float(sparsity) * x.size)), jnp.int32)
            out.append(_magnitude_keep([score], [k], "layer")[0])
        else:
            k = int(round(float(sparsity) * kk))
            out.append(_wanda_output_keep(score.reshape(kk, -1), k).reshape(shape))
    return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------------- SparseGPT
def _block_counts(total_rows: int, k: int, bsz: int, nb: int, sparsity: float) -> np.ndarray:
    """Pruned count per block so the blocks sum to exactly ``round(s * n_out * K)``."""
    ends = np.minimum(np.arange(nb + 1) * bsz, k) * total_rows
    cum = np.array([round(sparsity * e) for e in ends], np.int64)
    return np.diff(cum).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("n", "m", "bsz"))
def _sparsegpt_core(w_kn, h, counts, damping, *, n, m, bsz):
    """Traceable SparseGPT on ``w_kn`` ``(K, N)``: returns ``(w_new (K, N), keep (K, N), ok)``."""
    k, nout = w_kn.shape
    u, dead = hessian_inverse_upper(h, damping)
    ok = jnp.all(jnp.isfinite(u))
    w = jnp.where(dead[None, :], 0.0, w_kn.T.astype(jnp.float32))  # (N, K)
    kp = -(-k // bsz) * bsz
    pad = kp - k
    if pad:
        w = jnp.pad(w, ((0, 0), (0, pad)))
        u = jnp.pad(u, ((0, pad), (0, pad)))
        u = u.at[jnp.arange(k, kp), jnp.arange(k, kp)].set(1.0)
    col = jnp.arange(kp)
    valid = col < k
    nm = n is not None

    def column_step(i, carry):
        w1, prune1, e1, u1 = carry
        if nm:
            # at a group start choose the group's mask from the current (updated) weights
            grp = jax.lax.dynamic_slice_in_dim(w1, i, m, axis=1)
            dg = jax.lax.dynamic_slice_in_dim(jnp.diagonal(u1), i, m)
            sc = grp**2 / dg[None, :] ** 2
            order = jnp.argsort(sc, axis=1, stable=True)
            rank = jnp.argsort(order, axis=1)
            gm = rank < (m - n)
            start = (i % m) == 0
            cur = jax.lax.dynamic_slice_in_dim(prune1, i, m, axis=1)
            prune1 = jax.lax.dynamic_update_slice_in_dim(
                prune1, jnp.where(start, gm, cur), i, axis=1
            )
        wi = jax.lax.dynamic_index_in_dim(w1, i, axis=1, keepdims=False)
        pi = jax.lax.dynamic_index_in_dim(prune1, i, axis=1, keepdims=False)
        q = jnp.where(pi, 0.0, wi)
        err = (wi - q) / u1[i, i]
        w1 = w1 - err[:, None] * u1[i][None, :]
        w1 = jax.lax.dynamic_update_index_in_dim(w1, q, i, axis=1)
        e1 = jax.lax.dynamic_update_index_in_dim(e1, err, i, axis=1)
        return w1, prune1, e1, u1

    def block_step(b, carry):
        w, prune = carry
        i1 = b * bsz
        w1 = jax.lax.dynamic_slice_in_dim(w, i1, bsz, axis=1)
        u_rows = jax.lax.dynamic_slice_in_dim(u, i1, bsz, axis=0)
        u1 = jax.lax.dynamic_slice_in_dim(u_rows, i1, bsz, axis=1)
        if nm:
            prune1 = jnp.zeros((nout, bsz), bool)
        else:
            v1 = jax.lax.dynamic_slice_in_dim(valid, i1, bsz)
            sc = w1**2 / jnp.diagonal(u1)[None, :] ** 2
            sc = jnp.where(v1[None, :], sc, jnp.inf).reshape(-1)
            order = jnp.argsort(sc, stable=True)
            rank = jnp.zeros_like(order).at[order].set(jnp.arange(sc.shape[0]))
            prune1 = (rank < counts[b]).reshape(nout, bsz)
        e0 = jnp.zeros((nout, bsz), jnp.float32)
        w1, prune1, e1, _ = jax.lax.fori_loop(0, bsz, column_step, (w1, prune1, e0, u1))
        later = jnp.where(col[None, :] >= i1 + bsz, u_rows, 0.0)
        w = w - jnp.matmul(e1, later, precision=jax.lax.Precision.HIGHEST)
        w = jax.lax.dynamic_update_slice_in_dim(w, w1, i1, axis=1)
        prune = jax.lax.dynamic_update_slice_in_dim(prune, prune1, i1, axis=1)
        return w, prune

    w, prune = jax.lax.fori_loop(0, kp // bsz, block_step, (w, jnp.zeros((nout, kp), bool)))
    keep = ~prune[:, :k]
    w = jnp.where(keep, w[:, :k], 0.0)
    return w.T, keep.T, ok


def sparsegpt(
    w: Any,
    hessian: Any,
    sparsity: float | None = None,
    *,
    n: int | None = None,
    m: int | None = None,
    damping: float = 0.01,
    block_size: int = _BLOCK,
    check: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Prune one kernel with SparseGPT (see the module docstring).

    Args:
      w: float kernel ``(..., out)`` (Dense ``(K, N)``, conv ``(kh, kw, in, out)``).
      hessian: ``(K, K)`` input Hessian ``X^T X / n`` or the kernel's :class:`LayerStats`.
      sparsity: unstructured fraction in ``[0, 1)``: exactly ``round(s * w.size)`` zeros.
      n, m: N:M along the reduction axis ``-2`` (its size must be divisible by ``m``).
      damping: relative damping ``>= 0`` (``H + damping * mean(diag H) I``).
      block_size: lazy-update block (a multiple of ``m`` for N:M).
      check: as :func:`jaxcompress.quantization.gptq` (raise on a singular Hessian when eager).

    Returns:
      ``(w_new, keep)``: the updated kernel (``w.dtype``, pruned entries exactly 0) and its bool
      keep-mask, both of ``w.shape``.

    Raises:
      JaxCompressValueError: bad sparsity / n / m / damping; Hessian shape; NaN/Inf in the
        inputs; a singular Hessian (``damping=0`` with too few calibration rows).
    """
    _check_sparsity(sparsity, n, m)
    damping = check_damping(damping)
    h = hessian.hessian if isinstance(hessian, LayerStats) else jnp.asarray(hessian, jnp.float32)
    if not hasattr(w, "dtype") or not jnp.issubdtype(w.dtype, jnp.floating):
        raise JaxCompressTypeError(f"w must be a floating-point array, got {type(w).__name__}")
    w = jnp.asarray(w)
    shape = tuple(w.shape)
    if w.ndim < 2:
        raise JaxCompressValueError(f"w must have ndim >= 2 (a kernel), got shape {shape}")
    k = math.prod(shape[:-1])
    if tuple(h.shape) != (k, k):
        raise JaxCompressValueError(
            f"hessian has shape {tuple(h.shape)}, expected ({k}, {k}) for w of shape {shape}"
        )
    if not isinstance(block_size, int) or block_size < 1:
        raise JaxCompressValueError(f"{block_size=} must be a positive int")
    bsz = min(block_size, k)
    if n is not None:
        _nm_shape_check("w", shape, m)
        bsz = max(m, bsz - bsz % m)
    nb = -(-k // bsz)
    counts = _block_counts(shape[-1], k, bsz, nb, 0.0 if sparsity is None else float(sparsity))
    concrete = not any(isinstance(a, jax.core.Tracer) for a in (w, h))
    if concrete and check is not False:
        if not bool(jnp.all(jnp.isfinite(w))):
            raise JaxCompressValueError("w contains NaN or Inf")
        if not bool(jnp.all(jnp.isfinite(h))):
            raise JaxCompressValueError("hessian contains NaN or Inf")
    w_new, keep, ok = _sparsegpt_core(
        w.reshape(k, -1), h, jnp.asarray(counts), jnp.float32(damping), n=n, m=m, bsz=bsz
    )
    if concrete and check is not False and not bool(ok):
        raise JaxCompressValueError(
            f"hessian (+ damping={damping} * mean diag) is not positive definite, so SparseGPT's "
            "Cholesky failed; use damping > 0 or more calibration rows than inputs"
        )
    w_new = jnp.where(ok, w_new, jnp.nan)
    return w_new.reshape(shape).astype(w.dtype), keep.reshape(shape)


def sparsegpt_params(
    params: Any,
    stats: CalibrationStats,
    sparsity: float | None = None,
    *,
    n: int | None = None,
    m: int | None = None,
    damping: float = 0.01,
    where: Any = None,
) -> OneShotPruneResult:
    """SparseGPT every selected kernel that has statistics (layer-wise, one shot).

    Args:
      params: float params (linen dict or ``nnx.State``).
      stats: :class:`CalibrationStats` captured with these params.
      sparsity, n, m, damping: as :func:`sparsegpt`.
      where: selection; default every leaf with statistics.

    Returns:
      :class:`OneShotPruneResult` ``(params, masks)``: updated params (pruned entries 0) and bool
      masks with the structure of ``params`` (``apply_masks(result.params, result.masks)`` is
      the identity).

    Raises:
      JaxCompressValueError / JaxCompressTypeError: as :func:`sparsegpt`, prefixed by the path;
        ``where`` matching nothing or a leaf without statistics.
    """
    _check_sparsity(sparsity, n, m)
    named, sel = select_calibrated(params, stats, where)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    new, masks = [], []
    for (path, _), x, s in zip(named, leaves, sel, strict=True):
        if not s:
            new.append(x)
            masks.append(jnp.ones(jnp.shape(x), bool))
            continue
        try:
            w2, keep = sparsegpt(x, stats[path], sparsity, n=n, m=m, damping=damping)
        except (JaxCompressValueError, JaxCompressTypeError) as e:
            raise type(e)(f"params leaf {path!r}: {e}") from None
        new.append(w2)
        masks.append(keep)
    return OneShotPruneResult(
        params=jax.tree_util.tree_unflatten(treedef, new),
        masks=jax.tree_util.tree_unflatten(treedef, masks),
    )
