"""``ClusteredArray`` and ``cluster``: Deep Compression weight sharing by 1-D k-means."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._core import (
    CompressedArray,
    JaxCompressTypeError,
    JaxCompressValueError,
    named_leaves,
    selection_mask,
)

__all__ = ["ClusteredArray", "cluster", "validate_clustered_array", "kmeans_1d", "INITS"]

INITS = ("linear", "density", "kmeans++")
CODEBOOK_BITS = 32  # float32 centroids


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ClusteredArray(CompressedArray):
    """Weights shared through a codebook: ``x = codebook[indices]`` (per channel: ``codebook[c, i]``).

    Array leaves:
      indices: uint8, shape ``shape``, values in ``[0, n_clusters)``.
      codebook: float32, ``(n_clusters,)`` per tensor or ``(C, n_clusters)`` per channel
        (``C = shape[axis]``). ``cluster`` returns rows sorted ascending (after the reserved zero);
        fine-tuning may reorder them. When ``zero_index`` is ``True`` entry 0 is the exact real 0
        reserved for pruned weights.

    Static metadata:
      n_clusters: codebook length (``2^bits`` when built with ``bits=``), 1..256.
      axis: ``None`` (one codebook) or the channel axis (non-negative).
      zero_index: ``True`` when index 0 is the frozen exact zero (the tensor had exact zeros).
      shape, dtype: of the original array.

    Invariants (checked by :func:`validate_clustered_array`): the dtypes and shapes above;
    ``indices < n_clusters``; finite codebook; with ``zero_index`` every ``codebook[..., 0] == 0``
    and the weights that were exactly 0 have index 0 (so they dequantize to exactly 0).
    """

    indices: jax.Array
    codebook: jax.Array
    n_clusters: int = dataclasses.field(metadata=dict(static=True))
    axis: int | None = dataclasses.field(metadata=dict(static=True))
    zero_index: bool = dataclasses.field(metadata=dict(static=True))
    shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    @property
    def bits(self) -> int:
        """Index width: ``ceil(log2(n_clusters))`` (at least 1)."""
        return max(1, int(np.ceil(np.log2(self.n_clusters))))

    def dequantize(self) -> jax.Array:
        """``codebook[indices]`` (per channel ``codebook[c, indices]``), original shape/dtype."""
        idx = self.indices.astype(jnp.int32)
        if self.axis is None:
            out = self.codebook[idx]
        else:
            cb = self.codebook  # (C, k)
            bshape = [1] * len(self.shape)
            bshape[self.axis] = self.shape[self.axis]
            ch = jnp.arange(self.shape[self.axis]).reshape(bshape)
            out = cb[ch, idx]
        return out.astype(self.dtype)

    # -- the CompressedArray size protocol ---------------------------------------------------
    @property
    def side_bits(self) -> int:
        """The float32 codebook(s)."""
        return int(np.size(self.codebook)) * CODEBOOK_BITS

    @property
    def encoding(self) -> str:
        return f"{self.bits}-bit clusters" + ("" if self.axis is None else " per-channel")

    def symbols(self) -> tuple[np.ndarray, int]:
        """The indices, alphabet ``n_clusters``."""
        return np.asarray(self.indices).reshape(-1), self.n_clusters


def validate_clustered_array(c: ClusteredArray) -> None:
    """Check the :class:`ClusteredArray` invariants (values only when concrete).

    Raises:
      JaxCompressTypeError / JaxCompressValueError naming the broken invariant.
    """
    if not isinstance(c, ClusteredArray):
        raise JaxCompressTypeError(f"expected a ClusteredArray, got {type(c).__name__}")
    if c.indices.dtype != jnp.uint8:
        raise JaxCompressTypeError(f"indices must be uint8, got {c.indices.dtype}")
    if c.codebook.dtype != jnp.float32:
        raise JaxCompressTypeError(f"codebook must be float32, got {c.codebook.dtype}")
    if tuple(c.indices.shape) != tuple(c.shape):
        raise JaxCompressValueError(f"indices.shape={c.indices.shape} != shape={c.shape}")
    want = (c.n_clusters,) if c.axis is None else (c.shape[c.axis], c.n_clusters)
    if tuple(c.codebook.shape) != want:
        raise JaxCompressValueError(f"codebook.shape={c.codebook.shape} != {want}")
    if isinstance(c.indices, jax.core.Tracer) or isinstance(c.codebook, jax.core.Tracer):
        return
    idx = np.asarray(c.indices)
    cb = np.asarray(c.codebook)
    if idx.size and int(idx.max()) >= c.n_clusters:
        raise JaxCompressValueError("an index is >= n_clusters")
    if not np.all(np.isfinite(cb)):
        raise JaxCompressValueError("codebook has NaN/Inf")
    if c.zero_index and np.any(cb[..., 0] != 0):
        raise JaxCompressValueError("zero_index=True but codebook[..., 0] != 0")


# ----------------------------------------------------------------------------- k-means


def _init_centroids(v: jax.Array, m: jax.Array, k: int, init: str, key: jax.Array) -> jax.Array:
    """Initial centroids of the values ``v (n,)`` with ``m (n,)`` 1.0 for members, 0.0 otherwise."""
    big = jnp.finfo(jnp.float32).max
    any_member = jnp.sum(m) > 0
    lo = jnp.where(any_member, jnp.min(jnp.where(m > 0, v, big)), 0.0)
    hi = jnp.where(any_member, jnp.max(jnp.where(m > 0, v, -big)), 0.0)
    if init == "linear":
        return jnp.linspace(lo, hi, k)
    if init == "density":
        # equal-probability quantiles of the members' CDF (Deep Compression's "density-based")
        vs = jnp.sort(jnp.where(m > 0, v, jnp.inf))
        cnt = jnp.maximum(jnp.sum(m), 1.0)
        pos = ((jnp.arange(k) + 0.5) / k * cnt).astype(jnp.int32)
        return vs[jnp.clip(pos, 0, v.shape[0] - 1)]
    # kmeans++ (Arthur & Vassilvitskii 2007): D^2 sampling, restricted to members.
    k0, key = jax.random.split(key)
    p0 = m / jnp.maximum(jnp.sum(m), 1.0)
    first = v[jax.random.choice(k0, v.shape[0], p=p0)]
    cents = jnp.full((k,), first)
    d2 = (v - first) ** 2 * m

    def body(i, carry):
        cents, d2, key = carry
        key, sub = jax.random.split(key)
        tot = jnp.sum(d2)
        p = jnp.where(tot > 0, d2 / jnp.where(tot > 0, tot, 1.0), p0)
        c = v[jax.random.choice(sub, v.shape[0], p=p)]
        return cents.at[i].set(c), jnp.minimum(d2, (v - c) ** 2 * m), key

    cents, _, _ = jax.lax.fori_loop(1, k, body, (cents, d2, key))
    return jnp.sort(cents)


def _assign(v: jax.Array, cents: jax.Array) -> jax.Array:
    """Nearest centroid of each value; ``cents`` sorted; ties go to the lower centroid."""
    mid = (cents[1:] + cents[:-1]) / 2
    return jnp.searchsorted(mid, v, side="left").astype(jnp.int32)


def kmeans_1d(
    v: jax.Array, m: jax.Array, k: int, *, init: str, key: jax.Array, iters: int
) -> tuple[jax.Array, jax.Array]:
    """Lloyd's k-means on scalars: ``(sorted centroids (k,), assignment (n,) int32)``.

    ``m`` weights the points (0 excludes one). Empty clusters keep their previous centroid.
    """
    cents = jnp.sort(_init_centroids(v, m, k, init, key))

    def body(_, cents):
        a = _assign(v, cents)
        s = jax.ops.segment_sum(v * m, a, num_segments=k)
        n = jax.ops.segment_sum(m, a, num_segments=k)
        return jnp.sort(jnp.where(n > 0, s / jnp.where(n > 0, n, 1.0), cents))

    # a row without members (e.g. a fully pruned channel) has nothing to fit: centroids 0
    cents = jnp.sort(jnp.where(jnp.isfinite(cents), cents, 0.0))
    cents = jax.lax.fori_loop(0, iters, body, cents)
    return cents, _assign(v, cents)


def _cluster_rows(
    rows: jax.Array, valid: jax.Array, k: int, zero: bool, init: str, key: jax.Array, iters: int
):
    """Cluster each row of ``rows (R, n)`` (``valid`` masks padding); returns
    ``(codebook (R, k), indices (R, n))``."""
    kk = k - 1 if zero else k
    keys = jax.random.split(key, rows.shape[0])

    def one(v, ok, key):
        m = ok & (v != 0) if zero else ok
        m = m.astype(jnp.float32)
        cents, a = kmeans_1d(v, m, kk, init=init, key=key, iters=iters)
        if zero:
            cents = jnp.concatenate([jnp.zeros((1,), cents.dtype), cents])
            a = jnp.where(v == 0, 0, a + 1)
        return cents, a

    return jax.vmap(one)(rows, valid, keys)


def _to_rows(x, axis):
    if axis is None:
        return x.reshape(1, -1)
    xm = jnp.moveaxis(x, axis, -1)
    return xm.reshape(-1, xm.shape[-1]).T


def _from_rows(rows, shape, axis):
    if axis is None:
        return rows.reshape(shape)
    moved = tuple(np.delete(np.array(shape), axis)) + (shape[axis],)
    return jnp.moveaxis(rows.T.reshape(moved), -1, axis)


def cluster_array(
    x: Any,
    *,
    n_clusters: int,
    init: str = "linear",
    axis: int | None = None,
    keep_zeros: bool = True,
    key: jax.Array | None = None,
    iters: int = 30,
) -> ClusteredArray:
    """Cluster one float array (see :func:`cluster`)."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise JaxCompressTypeError(f"x must be floating point, got dtype {x.dtype}")
    if x.size == 0:
        raise JaxCompressValueError(f"x is empty (shape {tuple(x.shape)}); nothing to cluster")
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x, np.float32))):
        raise JaxCompressValueError("x contains NaN or Inf; k-means on it would produce garbage")
    shape = tuple(x.shape)
    if axis is not None:
        if not -len(shape) <= axis < len(shape):
            raise JaxCompressValueError(f"{axis=} is out of range for an array of shape {shape}")
        axis %= len(shape)
    xf = jnp.asarray(x, jnp.float32)
    zero = bool(keep_zeros) and (
        isinstance(x, jax.core.Tracer) or bool(np.any(np.asarray(xf) == 0))
    )
    if zero and n_clusters < 2:
        raise JaxCompressValueError(f"{n_clusters=} must be >= 2 to keep zeros at zero")
    rows = _to_rows(xf, axis)
    key = jax.random.key(0) if key is None else key
    # pad to power-of-two buckets so leaves of similar size share one compilation
    r, n = rows.shape
    rp, n_p = _bucket(r), _bucket(n)
    valid = jnp.zeros((rp, n_p), bool).at[:r, :n].set(True)
    padded = jnp.zeros((rp, n_p), jnp.float32).at[:r, :n].set(rows)
    cb, idx = _cluster_rows_jit(padded, valid, n_clusters, zero, init, key, iters)
    cb, idx = cb[:r], idx[:r, :n]
    indices = _from_rows(idx.astype(jnp.uint8), shape, axis)
    codebook = cb[0] if axis is None else cb
    return ClusteredArray(
        indices=indices,
        codebook=codebook.astype(jnp.float32),
        n_clusters=n_clusters,
        axis=axis,
        zero_index=zero,
        shape=shape,
        dtype=jnp.dtype(x.dtype).name,
    )


_cluster_rows_jit = jax.jit(_cluster_rows, static_argnums=(2, 3, 4, 6))


def _bucket(n: int) -> int:
    return max(8, 1 << (int(n) - 1).bit_length())


def cluster(
    params: Any,
    *,
    bits: int | None = None,
    n_clusters: int | None = None,
    init: str = "linear",
    axis: int | None = None,
    where: Any = None,
    keep_zeros: bool = True,
    key: jax.Array | None = None,
    iters: int = 30,
) -> Any:
    """Share weights through per-tensor (or per-channel) 1-D k-means codebooks (Deep Compression).

    Each selected leaf becomes a :class:`ClusteredArray` with ``n_clusters = 2^bits`` centroids.
    Lloyd's algorithm runs ``iters`` iterations on the scalar weights (nearest centroid by sorted
    midpoints, ties to the lower one). If the leaf has exact zeros (a pruned tensor) and
    ``keep_zeros`` is on, index 0 is reserved for the exact value 0 and only the nonzero weights are
    clustered into the remaining ``n_clusters - 1`` centroids, so zeros stay zero.

    Args:
      params: pytree of arrays (linen params dict or ``nnx.State``).
      bits: index width 1..8 (``n_clusters = 2^bits``); give exactly one of ``bits``/``n_clusters``.
      n_clusters: codebook size 1..256.
      init: ``"linear"`` (evenly spaced over [min, max], best in Deep Compression), ``"density"``
        (equal-probability quantiles of the weights' CDF), ``"kmeans++"`` (D^2 sampling, uses ``key``).
      axis: ``None`` for one codebook per tensor, or a channel axis for one codebook per channel.
      where: selection (default: floating leaves with ``ndim >= 2``).
      keep_zeros: reserve the exact zero for tensors that contain zeros (under ``jit`` the
        values are unknown, so the zero index is always reserved there).
      key: PRNG key for ``"kmeans++"`` (default ``jax.random.key(0)``); results are deterministic.
      iters: Lloyd iterations.

    Returns:
      The pytree with :class:`ClusteredArray` at the selected leaves; ``dequantize`` (from
      :mod:`jaxcompress.quantization`) turns one back into weights.

    Raises:
      JaxCompressValueError: both/neither of ``bits``/``n_clusters``, out-of-range values, unknown
        ``init``, axis out of range, empty leaf, NaN/Inf.
      JaxCompressTypeError: integer leaves selected, non-pytree input.

    References:
      Han, Mao, Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
      Quantization and Huffman Coding", ICLR 2016, §3.
    """
    if (bits is None) == (n_clusters is None):
        raise JaxCompressValueError("give exactly one of bits= or n_clusters=")
    if bits is not None:
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise JaxCompressTypeError(f"{bits=} must be an int in 1..8")
        if not 1 <= bits <= 8:
            raise JaxCompressValueError(f"{bits=} must be in 1..8 (indices are stored as uint8)")
        n_clusters = 2**bits
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int):
        raise JaxCompressTypeError(f"{n_clusters=} must be an int in 1..256")
    if not 1 <= n_clusters <= 256:
        raise JaxCompressValueError(f"{n_clusters=} must be in 1..256")
    if init not in INITS:
        raise JaxCompressValueError(f"{init=} must be one of {INITS}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise JaxCompressValueError(f"{iters=} must be a non-negative int")
    sel = selection_mask(params, where)
    paths = [p for p, _ in named_leaves(params)]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    key = jax.random.key(0) if key is None else key
    out = []
    for i, (path, x, s) in enumerate(zip(paths, leaves, sel, strict=True)):
        if not s:
            out.append(x)
            continue
        try:
            out.append(
                cluster_array(
                    x,
                    n_clusters=n_clusters,
                    init=init,
                    axis=axis,
                    keep_zeros=keep_zeros,
                    key=jax.random.fold_in(key, i),
                    iters=iters,
                )
            )
        except (JaxCompressValueError, JaxCompressTypeError) as e:
            raise type(e)(f"params leaf {path!r}: {e}") from None
    return jax.tree_util.tree_unflatten(treedef, out)
