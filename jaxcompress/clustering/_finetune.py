"""Centroid fine-tuning as an optax transform (Deep Compression §3.1, trained quantization)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcompress._core import JaxCompressValueError
from jaxcompress.clustering._clustered import ClusteredArray

__all__ = ["CentroidFinetuningState", "centroid_finetuning", "shared_params", "update_codebooks"]


def _is_ca(x: Any) -> bool:
    return isinstance(x, ClusteredArray)


def _segments(c: ClusteredArray) -> jax.Array:
    """Global segment id per weight: ``channel * n_clusters + index`` (``index`` per tensor)."""
    idx = c.indices.astype(jnp.int32)
    if c.axis is None:
        return idx
    bshape = [1] * len(c.shape)
    bshape[c.axis] = c.shape[c.axis]
    return jnp.arange(c.shape[c.axis], dtype=jnp.int32).reshape(bshape) * c.n_clusters + idx


def _n_segments(c: ClusteredArray) -> int:
    return c.n_clusters * (1 if c.axis is None else c.shape[c.axis])


class CentroidFinetuningState(NamedTuple):
    """Per-leaf segment ids (``None`` for leaves that are not clustered) in flattening order."""

    segments: tuple[Any, ...]
    frozen: tuple[Any, ...]


def _flat_clustered(clustered: Any) -> tuple[list[Any], Any]:
    leaves, treedef = jax.tree_util.tree_flatten(clustered, is_leaf=_is_ca)
    return leaves, treedef


def centroid_finetuning(clustered: Any) -> optax.GradientTransformation:
    """Tie the gradients of shared weights: each weight gets the summed gradient of its cluster.

    Deep Compression §3.1: ``dL/dC_k = sum_{i: I_i = k} dL/dW_i``. Put this transform *first* in
    an ``optax.chain`` with an elementwise optimizer: every weight of cluster ``k`` then receives
    the same gradient ``dL/dC_k`` and the same update (SGD, Adam, ... are elementwise and start
    from identical state), so a params tree that starts on the codebook (:func:`shared_params`)
    stays exactly on a shared codebook, and :func:`update_codebooks` reads it back. The reserved
    zero centroid of a pruned tensor gets gradient 0, so zeros stay exactly zero (Adam's update for
    a gradient that is always 0 is exactly 0).

    Args:
      clustered: the output of :func:`cluster` (a tree with ``ClusteredArray`` leaves); params
        and gradients passed to ``update`` are the matching dense trees.

    Returns:
      An ``optax.GradientTransformation`` whose state is :class:`CentroidFinetuningState`.

    Example:
      >>> ct = cluster(params, bits=5)                                  # doctest: +SKIP
      >>> opt = optax.chain(centroid_finetuning(ct), optax.adam(1e-4))
      >>> res = fit(apply_fn, shared_params(ct), data, optimizer=opt, ...)
      >>> ct = update_codebooks(ct, res.params)
    """
    leaves, _ = _flat_clustered(clustered)
    segments = tuple(_segments(c) if _is_ca(c) else None for c in leaves)
    frozen = tuple((c.indices == 0) if _is_ca(c) and c.zero_index else None for c in leaves)
    nseg = tuple(_n_segments(c) if _is_ca(c) else 0 for c in leaves)

    def init_fn(params):
        n = len(jax.tree_util.tree_leaves(params))
        if n != len(segments):
            raise JaxCompressValueError(
                f"params has {n} leaves but the clustered tree has {len(segments)}"
            )
        return CentroidFinetuningState(segments=segments, frozen=frozen)

    def update_fn(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree_util.tree_flatten(updates)
        out = []
        for g, seg, fz, n in zip(g_leaves, state.segments, state.frozen, nseg, strict=True):
            if seg is None:
                out.append(g)
                continue
            sums = jax.ops.segment_sum(g.reshape(-1), seg.reshape(-1), num_segments=n)
            tied = sums[seg].astype(g.dtype)
            if fz is not None:
                tied = jnp.where(fz, jnp.zeros_like(tied), tied)
            out.append(tied)
        return jax.tree_util.tree_unflatten(treedef, out), state

    return optax.GradientTransformation(init_fn, update_fn)


def shared_params(clustered: Any) -> Any:
    """The dense params tree the clustered tree stands for (``dequantize`` on every leaf)."""
    return jax.tree.map(lambda c: c.dequantize() if _is_ca(c) else c, clustered, is_leaf=_is_ca)


def update_codebooks(clustered: Any, params: Any) -> Any:
    """Read fine-tuned centroids back from dense ``params`` (mean of each cluster's weights).

    After :func:`centroid_finetuning` the members of a cluster are tied, so their common value is
    read back exactly; untied members give their mean. Clusters with no member keep their old
    centroid; the reserved zero stays exactly 0.
    """
    c_leaves, treedef = _flat_clustered(clustered)
    p_leaves = jax.tree_util.tree_leaves(params)
    if len(p_leaves) != len(c_leaves):
        raise JaxCompressValueError("params and the clustered tree have different structures")
    out = []
    for c, p in zip(c_leaves, p_leaves, strict=True):
        if not _is_ca(c):
            out.append(p)
            continue
        seg = _segments(c).reshape(-1)
        n = _n_segments(c)
        v = jnp.asarray(p, jnp.float32).reshape(-1)
        s = jax.ops.segment_sum(v, seg, num_segments=n)
        cnt = jax.ops.segment_sum(jnp.ones_like(v), seg, num_segments=n)
        hi = jax.ops.segment_max(v, seg, num_segments=n)
        lo = jax.ops.segment_min(v, seg, num_segments=n)
        # tied members (the normal case) give their common value exactly; otherwise the mean
        val = jnp.where(hi == lo, hi, s / jnp.where(cnt > 0, cnt, 1.0))
        old = c.codebook.reshape(-1)
        cb = jnp.where(cnt > 0, val, old).reshape(c.codebook.shape)
        if c.zero_index:
            cb = cb.at[..., 0].set(0.0)
        out.append(
            ClusteredArray(
                indices=c.indices,
                codebook=cb,
                n_clusters=c.n_clusters,
                axis=c.axis,
                zero_index=c.zero_index,
                shape=c.shape,
                dtype=c.dtype,
            )
        )
    return jax.tree_util.tree_unflatten(treedef, out)
