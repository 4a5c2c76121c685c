"""One-shot pruning over pytrees: threshold clipping and magnitude / N:M / block / channel masks.

Masks are bool pytrees with exactly the structure and leaf shapes of ``params``: ``True`` keeps a
weight, ``False`` prunes it. Leaves that ``where`` does not select get all-``True`` masks (so
``jax.tree.map(jnp.where, masks, params, zeros)`` always lines up). Everything works on linen
parameter dicts and on ``nnx.State``, for float32 / bfloat16 / float16 leaves, under ``jax.jit``,
and gives the same masks with and without ``jit``.

=========================  ===================================================================
granularity                what is pruned
=========================  ===================================================================
magnitude, layer scope     exactly ``round(s * n)`` smallest ``|w|`` of each selected leaf
magnitude, global scope    exactly ``round(s * N)`` smallest ``|w|`` over all selected leaves
N:M                        in each group of ``m`` consecutive weights along the reduction axis
                           (``-2``: axis 0 of Dense ``(in, out)``, ``in`` of conv
                           ``(..., in, out)``), all but the ``n`` largest
block ``(r, c)``           ``round(s * #blocks)`` blocks of the matrix view
                           ``(prod(shape[:-1]), shape[-1])`` with the smallest L1 norm
channel                    ``round(s * C)`` output channels (last axis) with the smallest L1 / L2
                           norm over all other axes
=========================  ===================================================================

Ties are broken deterministically: among equal scores the earlier entry (leaf order, then C order
within a leaf; lower index within an N:M group) is pruned first. ``round`` is Python's (half to
even); with a traced sparsity it is computed in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import (
    JaxCompressTypeError,
    JaxCompressValueError,
    check_pytree,
    is_floating,
    named_leaves,
    selection_mask,
)
from jaxcompress.pruning import _select
from jaxcompress.pruning._distributions import Distribution, resolve

__all__ = [
    "threshold_clip",
    "threshold_masks",
    "magnitude_masks",
    "nm_masks",
    "block_masks",
    "channel_masks",
    "apply_masks",
    "sparsity",
    "sparsity_report",
    "SparsityReport",
]


# --------------------------------------------------------------------------------------- helpers
def _flatten_selected(params, where):
    sel = selection_mask(params, where)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    paths = [p for p, _ in named_leaves(params)]
    return sel, leaves, treedef, paths


def _full_masks(leaves, sel, selected_masks):
    it = iter(selected_masks)
    return [
        next(it) if s else jnp.ones(jnp.shape(x), bool) for x, s in zip(leaves, sel, strict=True)
    ]


def _num_to_prune(s, n):
    """``round(s * n)`` as a Python int when ``s`` is static, else an int32 scalar."""
    if isinstance(s, (int, float, np.floating, np.integer)):
        return int(round(float(s) * n))
    return jnp.round(jnp.asarray(s, jnp.float32) * n).astype(jnp.int32)


def _check_masks(params, masks, name="masks"):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    try:
        mleaves = treedef.flatten_up_to(masks)
    except (ValueError, TypeError) as e:
        raise JaxCompressValueError(f"{name} must have the structure of params: {e}") from None
    paths = [p for p, _ in named_leaves(params)]
    for path, x, m in zip(paths, leaves, mleaves, strict=True):
        if m is None:
            continue
        if not hasattr(m, "shape") or jnp.shape(m) != jnp.shape(x):
            raise JaxCompressValueError(
                f"{name} leaf at {path!r} has shape {getattr(m, 'shape', type(m).__name__)}, "
                f"params leaf has shape {jnp.shape(x)}"
            )
        if jnp.dtype(m.dtype) != jnp.bool_:
            raise JaxCompressTypeError(f"{name} leaf at {path!r} must be bool, got {m.dtype}")
    return leaves, treedef, mleaves


# ------------------------------------------------------------------------------- threshold clip
def _thresholds(leaves, sel, threshold, quality):
    if (threshold is None) == (quality is None):
        raise JaxCompressValueError("give exactly one of threshold= and quality=")
    if threshold is not None:
        if not isinstance(threshold, jax.core.Tracer) and float(np.max(threshold)) < 0:
            raise JaxCompressValueError(f"{threshold=} must be >= 0")
        return [threshold if s else None for s in sel]
    if not isinstance(quality, jax.core.Tracer) and float(quality) < 0:
        raise JaxCompressValueError(f"{quality=} must be >= 0")
    return [
        quality * jnp.std(jnp.asarray(x, jnp.float32)) if s else None
        for x, s in zip(leaves, sel, strict=True)
    ]


def threshold_masks(params: Any, threshold: Any = None, *, quality: Any = None, where=None) -> Any:
    """Masks keeping ``|w| >= threshold`` (or ``>= quality * std(leaf)``); see :func:`threshold_clip`."""
    sel, leaves, treedef, _ = _flatten_selected(params, where)
    thr = _thresholds(leaves, sel, threshold, quality)
    out = [
        jnp.abs(jnp.asarray(x, jnp.float32)) >= t if s else jnp.ones(jnp.shape(x), bool)
        for x, s, t in zip(leaves, sel, thr, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def per_layer_threshold_masks(params: Any, qualities: Any) -> Any:
    """Han et al. 2015 masks with a quality per layer: ``|w| >= q_l * std(w)``.

    ``qualities`` maps a regular expression (searched in each leaf's ``/``-joined path) to a
    quality ``q >= 0``; every floating kernel (``ndim >= 2``) that a pattern matches keeps
    ``|w| >= q * std(w)`` for that pattern (a kernel matched by several patterns keeps the
    intersection); kernels no pattern matches are kept whole.

    Args:
      params: pytree of arrays.
      qualities: ``{regex: quality}``, e.g. ``{"hidden/0": 1.8, "out": 0.9}``.

    Returns:
      A pytree of bool masks like ``params`` (all-True on unmatched and non-kernel leaves).

    Raises:
      JaxCompressValueError: an invalid regex or a negative quality.
    """
    import re

    masks = jax.tree.map(lambda w: jnp.ones(jnp.shape(w), bool), params)
    for pat, q in dict(qualities).items():
        try:
            rx = re.compile(pat)
        except re.error as e:
            raise JaxCompressValueError(f"qualities: {pat!r} is not a valid regex ({e})") from None

        def sel(path, leaf, rx=rx) -> bool:
            return bool(rx.search(path)) and jnp.ndim(leaf) >= 2

        m = threshold_masks(params, quality=q, where=sel)
        masks = jax.tree.map(jnp.logical_and, masks, m)
    return masks


def threshold_clip(params: Any, threshold: Any = None, *, quality: Any = None, where=None) -> Any:
    """Zero every selected weight whose magnitude is below a threshold.

    ``w <- 0 if |w| < threshold else w``. With ``quality=q`` instead, each leaf uses its own
    threshold ``q * std(leaf)`` (Han et al. 2015: "the quality parameter multiplied by the standard
    deviation of a layer's weights").

    Args:
      params: pytree of arrays (linen params, ``nnx.State``).
      threshold: scalar ``>= 0`` (Python or JAX), the same for every selected leaf.
      quality: scalar ``>= 0``; per-leaf threshold ``quality * std(leaf)`` (std in float32).
      where: selection (DESIGN §3); default: floating leaves with ``ndim >= 2``.

    Returns:
      A pytree like ``params`` (same dtypes); unselected leaves untouched.

    Raises:
      JaxCompressValueError: both or neither of ``threshold`` / ``quality``, a negative value.
      JaxCompressTypeError: ``where`` selects an integer leaf.

    Example:
      >>> threshold_clip({"w": jnp.array([[0.1, -0.5], [2.0, -0.05]])}, 0.2)["w"]
      Array([[ 0. , -0.5], [ 2. ,  0. ]], dtype=float32)

    References:
      Han, Pool, Tran, Dally. "Learning both Weights and Connections for Efficient Neural
      Networks", NeurIPS 2015.
    """
    sel, leaves, treedef, _ = _flatten_selected(params, where)
    thr = _thresholds(leaves, sel, threshold, quality)
    out = []
    for x, s, t in zip(leaves, sel, thr, strict=True):
        if s:
            x = jnp.asarray(x)
            x = jnp.where(jnp.abs(x.astype(jnp.float32)) < t, jnp.zeros((), x.dtype), x)
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


# --------------------------------------------------------------------------- magnitude masks
def _magnitude_keep(xs, ks, scope, prev=None):
    """Keep-masks for arrays ``xs``: prune ``ks[i]`` per leaf (layer) or ``ks`` in total (global).

    ``prev`` (optional keep-masks): entries already pruned rank below every live weight, so they
    stay pruned whenever the new count is at least the old one.
    """
    dt = _select.common_key_dtype([x.dtype for x in xs]) if scope == "global" else None

    def key(x, p=None):
        # Recomputed where used (inside every pass) rather than materialised for all leaves.
        k = _select.magnitude_keys(x, dt)
        if p is not None:
            k = jnp.where(p, k + 1, jnp.zeros((), k.dtype))
        return k

    keys = [
        _select.LazyKey(key, (x,) if prev is None else (x, p))
        for x, p in zip(xs, prev if prev is not None else xs, strict=True)
    ]
    if scope == "global":
        return _select.smallest_k_masks(keys, ks)
    return [_select.smallest_k_masks([k], kk)[0] for k, kk in zip(keys, ks, strict=True)]


_magnitude_keep_jit = jax.jit(_magnitude_keep, static_argnames=("scope",))


def _layer_ks(named_shapes, dist: Distribution, progress=1.0):
    ss = dist.layer_sparsities(named_shapes, progress)
    return [
        _num_to_prune(s, math.prod(shape)) for s, (_, shape) in zip(ss, named_shapes, strict=True)
    ]


def magnitude_masks(params: Any, sparsity: Any, *, scope: str = "layer", where=None) -> Any:
    """Masks that prune the smallest-magnitude weights, exactly ``round(s * n)`` of them.

    Args:
      params: pytree of arrays (linen params, ``nnx.State``), float32 / bfloat16 / float16.
      sparsity: a float in ``[0, 1)``; or a per-layer distribution (:func:`uniform`, :func:`erk`,
        :func:`explicit`, or a dict ``{regex: sparsity}``), which implies ``scope="layer"``.
      scope: ``"layer"`` prunes ``round(s * n_leaf)`` in each selected leaf; ``"global"`` prunes
        ``round(s * N)`` over all selected leaves together (exact O(N) radix select, no sort).
      where: selection (DESIGN §3); default: floating leaves with ``ndim >= 2``.

    Returns:
      Bool pytree with the structure and shapes of ``params`` (``True`` = keep; unselected leaves
      all ``True``).

    Raises:
      JaxCompressValueError: sparsity outside ``[0, 1)``, unknown scope, a distribution with
        ``scope="global"``.
      JaxCompressTypeError: ``where`` selects an integer leaf.

    Example:
      >>> m = magnitude_masks({"w": jnp.arange(8.0).reshape(2, 4)}, 0.25)
      >>> m["w"]
      Array([[False, False,  True,  True], [ True,  True,  True,  True]], dtype=bool)
    """
    if scope not in ("layer", "global"):
        raise JaxCompressValueError(f"{scope=} must be 'layer' or 'global'")
    dist = resolve(sparsity)
    if scope == "global" and not isinstance(sparsity, (int, float, np.floating, jax.Array)):
        raise JaxCompressValueError(
            "scope='global' takes one float sparsity; per-layer distributions need scope='layer'"
        )
    sel, leaves, treedef, paths = _flatten_selected(params, where)
    xs = [jnp.asarray(x) for x, s in zip(leaves, sel, strict=True) if s]
    named_shapes = [
        (p, tuple(jnp.shape(x))) for p, x, s in zip(paths, leaves, sel, strict=True) if s
    ]
    if scope == "global":
        ks = _num_to_prune(sparsity, sum(int(x.size) for x in xs))
        ks = jnp.asarray(ks, jnp.int32)
    else:
        ks = [jnp.asarray(k, jnp.int32) for k in _layer_ks(named_shapes, dist)]
    keep = _magnitude_keep_jit(xs, ks, scope=scope)
    return jax.tree_util.tree_unflatten(treedef, _full_masks(leaves, sel, keep))


# ---------------------------------------------------------------------------------------- N:M
def _nm_keep(x, n, m, axis, prev=None):
    key = _select.magnitude_keys(x).astype(jnp.uint32)
    if prev is not None:
        key = jnp.where(prev, key + 1, jnp.uint32(0))
    key = jnp.moveaxis(key, axis, -1)
    shape = key.shape
    g = key.reshape(shape[:-1] + (shape[-1] // m, m))
    a = g[..., :, None]  # entry i
    b = g[..., None, :]  # entry j
    idx = jnp.arange(m)
    earlier = idx[None, :] < idx[:, None]  # j < i
    # rank of i = #j that beat it: larger key, or equal key at a lower index
    rank = jnp.sum((b > a) | ((b == a) & earlier), axis=-1)
    keep = (rank < n).reshape(shape)
    return jnp.moveaxis(keep, -1, axis)


def _check_nm(n, m):
    for name, v in (("n", n), ("m", m)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise JaxCompressTypeError(f"{name}={v!r} must be an int")
    if m < 1:
        raise JaxCompressValueError(f"{m=} must be >= 1")
    if n < 0 or n > m:
        raise JaxCompressValueError(f"{n=} must be in 0..m (m={m})")


def _nm_axis_check(paths, leaves, sel, m, axis):
    for p, x, s in zip(paths, leaves, sel, strict=True):
        if not s:
            continue
        shape = jnp.shape(x)
        if len(shape) < 2 and axis == -2:
            raise JaxCompressValueError(
                f"nm: leaf {p!r} has shape {shape}; N:M needs ndim >= 2 (reduction axis -2)"
            )
        if not -len(shape) <= axis < len(shape):
            raise JaxCompressValueError(f"nm: {axis=} out of range for leaf {p!r} of shape {shape}")
        if shape[axis] % m:
            raise JaxCompressValueError(
                f"nm: reduction axis {axis} of {p!r} has size {shape[axis]}, not divisible by {m=}"
            )


def nm_masks(params: Any, n: int, m: int, *, where=None, axis: int = -2) -> Any:
    """N:M masks: in every group of ``m`` consecutive weights along the reduction axis keep ``n``.

    The groups run along ``axis`` (default ``-2``): axis 0 of a Dense kernel ``(in, out)``, the
    ``in_channels`` axis of a conv kernel ``(kh, kw, in, out)`` -- the axis a matmul sums over, so
    2:4 masks map onto sparse tensor-core / edge N:M kernels. The ``n`` largest ``|w|`` of each
    group are kept; among equal magnitudes the lower index wins.

    Args:
      params: pytree of arrays.
      n: weights kept per group, ``0 <= n <= m``.
      m: group size; ``shape[axis]`` of every selected leaf must be divisible by ``m``.
      where: selection (DESIGN §3).
      axis: the reduction axis.

    Returns:
      Bool pytree like ``params``; each group of ``m`` along ``axis`` has exactly ``n`` ``True``.

    Raises:
      JaxCompressValueError: ``n > m``, ``n < 0``, ``m < 1``, an axis size not divisible by ``m``.

    References:
      Mishra et al. "Accelerating Sparse Deep Neural Networks" (NVIDIA 2:4), 2021.
    """
    _check_nm(n, m)
    sel, leaves, treedef, paths = _flatten_selected(params, where)
    _nm_axis_check(paths, leaves, sel, m, axis)
    keep = [_nm_keep_jit(jnp.asarray(x), n, m, axis) for x, s in zip(leaves, sel, strict=True) if s]
    return jax.tree_util.tree_unflatten(treedef, _full_masks(leaves, sel, keep))


_nm_keep_jit = jax.jit(_nm_keep, static_argnums=(1, 2, 3))


# ------------------------------------------------------------------------------ block, channel
def _block_keep(x, k, block):
    r, c = block
    shape = x.shape
    mat = jnp.abs(x.astype(jnp.float32)).reshape(-1, shape[-1])
    rows, cols = mat.shape
    score = mat.reshape(rows // r, r, cols // c, c).sum(axis=(1, 3))
    keep_b = _select.smallest_k_masks([_select.magnitude_keys(score)], k)[0]
    keep = jnp.repeat(jnp.repeat(keep_b, r, axis=0), c, axis=1)
    return keep.reshape(shape)


_block_keep_jit = jax.jit(_block_keep, static_argnums=(2,))


def block_masks(params: Any, sparsity: Any, *, block: tuple[int, int] = (4, 4), where=None) -> Any:
    """Block masks: prune whole ``(r, c)`` blocks of the matrix view with the smallest L1 norm.

    Each selected leaf is viewed as the matrix ``(prod(shape[:-1]), shape[-1])`` (a Dense kernel as
    is; a conv kernel ``(kh, kw, in, out)`` as its im2col matrix ``(kh*kw*in, out)``) and cut into
    ``r x c`` blocks; exactly ``round(s * #blocks)`` blocks with the smallest ``sum |w|`` are pruned
    (ties: earlier block in row-major block order first).

    Args:
      params: pytree of arrays.
      sparsity: float in ``[0, 1)`` or a per-layer distribution.
      block: ``(r, c)``; ``r`` must divide the rows and ``c`` the columns of every selected leaf.
      where: selection.

    Returns:
      Bool pytree like ``params``.

    Raises:
      JaxCompressValueError: bad sparsity, a block shape that does not tile a leaf.
    """
    if (
        not isinstance(block, tuple)
        or len(block) != 2
        or not all(isinstance(b, int) and b >= 1 for b in block)
    ):
        raise JaxCompressValueError(f"{block=} must be a tuple of two positive ints (r, c)")
    dist = resolve(sparsity)
    sel, leaves, treedef, paths = _flatten_selected(params, where)
    named_shapes = []
    for p, x, s in zip(paths, leaves, sel, strict=True):
        if not s:
            continue
        shape = tuple(jnp.shape(x))
        if len(shape) < 2:
            raise JaxCompressValueError(f"block_masks: leaf {p!r} of shape {shape} needs ndim >= 2")
        rows = math.prod(shape[:-1])
        if rows % block[0] or shape[-1] % block[1]:
            raise JaxCompressValueError(
                f"block_masks: {block=} does not tile leaf {p!r} (matrix view {rows}x{shape[-1]})"
            )
        named_shapes.append((p, (rows // block[0], shape[-1] // block[1])))
    ks = _layer_ks(named_shapes, dist)
    xs = [jnp.asarray(x) for x, s in zip(leaves, sel, strict=True) if s]
    keep = [
        _block_keep_jit(x, jnp.asarray(k, jnp.int32), block) for x, k in zip(xs, ks, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, _full_masks(leaves, sel, keep))


def _channel_keep(x, k, norm):
    a = jnp.abs(x.astype(jnp.float32)).reshape(-1, x.shape[-1])
    score = a.sum(0) if norm == "l1" else jnp.sqrt(jnp.sum(a * a, axis=0))
    keep_c = _select.smallest_k_masks([_select.magnitude_keys(score)], k)[0]
    return jnp.broadcast_to(keep_c, x.shape)


_channel_keep_jit = jax.jit(_channel_keep, static_argnums=(2,))


def channel_masks(params: Any, sparsity: Any, *, norm: str = "l2", where=None) -> Any:
    """Channel masks: prune whole output channels (last axis) with the smallest L1/L2 norm.

    For a Dense kernel ``(in, out)`` or conv kernel ``(kh, kw, in, out)`` the score of channel
    ``o`` is the norm of ``w[..., o]``; exactly ``round(s * out)`` channels are pruned (ties: lower
    channel index first).

    Args:
      params: pytree of arrays.
      sparsity: float in ``[0, 1)`` or a per-layer distribution.
      norm: ``"l2"`` or ``"l1"``.
      where: selection.

    Returns:
      Bool pytree like ``params``; pruned channels are all ``False``.
    """
    if norm not in ("l1", "l2"):
        raise JaxCompressValueError(f"{norm=} must be 'l1' or 'l2'")
    dist = resolve(sparsity)
    sel, leaves, treedef, paths = _flatten_selected(params, where)
    named_shapes = []
    for p, x, s in zip(paths, leaves, sel, strict=True):
        if s:
            shape = tuple(jnp.shape(x))
            if len(shape) < 1:
                raise JaxCompressValueError(f"channel_masks: leaf {p!r} is a scalar")
            named_shapes.append((p, (shape[-1],)))
    ks = _layer_ks(named_shapes, dist)
    xs = [jnp.asarray(x) for x, s in zip(leaves, sel, strict=True) if s]
    keep = [
        _channel_keep_jit(x, jnp.asarray(k, jnp.int32), norm) for x, k in zip(xs, ks, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, _full_masks(leaves, sel, keep))


# ------------------------------------------------------------------------------ apply, report
def apply_masks(params: Any, masks: Any) -> Any:
    """Zero the pruned weights: ``where(mask, w, 0)`` leaf by leaf (dtype preserved).

    Args:
      params: pytree of arrays.
      masks: bool pytree with the structure and leaf shapes of ``params`` (a ``None`` leaf means
        "no mask").

    Raises:
      JaxCompressValueError: ``masks`` has another structure or a leaf has another shape.
      JaxCompressTypeError: a mask leaf is not bool.
    """
    check_pytree(params)
    leaves, treedef, mleaves = _check_masks(params, masks)
    out = [
        x if m is None else jnp.where(m, x, jnp.zeros((), jnp.asarray(x).dtype))
        for x, m in zip(leaves, mleaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


@dataclasses.dataclass(frozen=True)
class LeafSparsity:
    """One row of a :class:`SparsityReport`."""

    path: str
    shape: tuple[int, ...]
    size: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0

    @property
    def kept(self) -> float:
        """Fraction of nonzeros (Han et al. report "weights remaining" this way)."""
        return 1.0 - self.sparsity


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-leaf zero counts of the selected leaves and their total."""

    leaves: tuple[LeafSparsity, ...]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.leaves)

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.leaves)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0

    @property
    def compression(self) -> float:
        """``size / nonzeros`` (Han's "12x fewer weights")."""
        nz = self.size - self.zeros
        return self.size / nz if nz else float("inf")

    def table(self) -> str:
        rows = [
            "| leaf | shape | params | zeros | sparsity | kept |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in self.leaves:
            rows.append(
                f"| {r.path} | {r.shape} | {r.size} | {r.zeros} | {r.sparsity:.2%} | {r.kept:.2%} |"
            )
        rows.append(
            f"| total | | {self.size} | {self.zeros} | {self.sparsity:.2%} | {1 - self.sparsity:.2%} |"
        )
        return "\n".join(rows)


def _report_where(path, leaf):
    del path
    return (is_floating(leaf) or jnp.dtype(leaf.dtype) == jnp.bool_) and leaf.ndim >= 2


def sparsity_report(tree: Any, *, where=None) -> SparsityReport:
    """Per-leaf counts of exact zeros (or ``False`` entries of a bool mask tree).

    Args:
      tree: params or masks (bool) pytree.
      where: selection; default: float or bool leaves with ``ndim >= 2`` (kernels, not biases).
    """
    sel = selection_mask(tree, _report_where if where is None else where, require_float=False)
    rows = []
    for (path, leaf), s in zip(named_leaves(tree), sel, strict=True):
        if s:
            a = np.asarray(leaf)
            rows.append(
                LeafSparsity(path, tuple(a.shape), int(a.size), int(a.size - np.count_nonzero(a)))
            )
    return SparsityReport(tuple(rows))


def sparsity(tree: Any, *, where=None) -> float:
    """Fraction of exact zeros over the selected leaves (``False`` for bool masks).

    Example:
      >>> sparsity({"w": jnp.array([[0.0, 1.0], [0.0, 2.0]]), "b": jnp.zeros(2)})
      0.5
    """
    return sparsity_report(tree, where=where).sparsity


def _selected(seq: Sequence[Any], sel: Sequence[bool]) -> list[Any]:
    return [x for x, s in zip(seq, sel, strict=True) if s]
