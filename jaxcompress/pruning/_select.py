"""Exact O(n) selection of the ``k`` smallest magnitudes over a list of arrays, in plain ``jnp``.

Sorting all magnitudes of a model is far too slow on CPU (XLA's comparator sort takes ~16 s for 26M
float32 here), so global magnitude pruning selects with a radix/histogram search over the bits of
the magnitudes instead:

* A non-negative IEEE float orders like its bit pattern read as an unsigned integer, so
  ``key = bitcast(|w|, uint)`` turns "k-th smallest magnitude" into "k-th smallest integer key".
  ``-0.0`` becomes ``+0``; NaN keys are above ``+inf`` (a NaN weight counts as the largest).
* Each pass scatters the keys of a key range ``[lo, lo + B << s)`` into ``B = 2**b`` bins (two more
  bins count keys below ``lo`` and above the range), walks the cumulative histogram to the bin
  holding rank ``k``, and narrows the range to that bin. When ``s == 0`` the bin is one key value
  ``t``: the exact k-th smallest key.
* The first range comes from a strided sample of the keys (sorted, ~16K values): the sample's
  quantiles ``k/N -+ 2%`` bracket ``t`` with overwhelming probability for any weight
  distribution, and the bracket is usually so narrow that one pass resolves it. If the sample
  misses (adversarial layouts), the search restarts from the full key range, so the result is
  exact whatever the data; only the number of passes changes.
* Ties: ``r = k - #(key < t)`` of the keys equal to ``t`` are taken, the first ``r`` in flat
  order (leaves in the given order, each in C order). The running count of ties is only computed
  (under ``lax.cond``) when ties straddle the cut.

Every pass works leaf by leaf into one small histogram, so the extra memory is the per-leaf key
array that XLA may materialise (at most one copy of the magnitudes), the histogram, and the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["LazyKey", "magnitude_keys", "common_key_dtype", "smallest_k_masks", "kth_smallest_key"]

_UINT_OF_BITS = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}
_SAMPLE = 16384  # sample size for the first bracket
_MARGIN = 0.02  # rank margin of the bracket (5 standard errors of a 16K-sample quantile)
_MAX_BITS = 22  # at most 2**22 bins per pass (a 16 MiB histogram)


def common_key_dtype(dtypes: Sequence[jnp.dtype]) -> jnp.dtype:
    """Float dtype in which magnitudes of all ``dtypes`` compare exactly (bf16 + f16 -> f32)."""
    dt = jnp.result_type(*dtypes)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.float32
    return jnp.dtype(dt)


def magnitude_keys(x: jax.Array, dtype: jnp.dtype | None = None) -> jax.Array:
    """Unsigned-integer keys that order like ``|x|`` (exact, monotone).

    Args:
      x: floating array of any shape.
      dtype: float dtype to convert to first (must represent ``x`` exactly, e.g. bf16 -> f32).

    Returns:
      ``uint16`` / ``uint32`` / ``uint64`` array of ``x``'s shape.
    """
    x = jnp.asarray(x)
    if dtype is not None:
        x = x.astype(dtype)
    bits = jnp.dtype(x.dtype).itemsize * 8
    return lax.bitcast_convert_type(jnp.abs(x), _UINT_OF_BITS[bits])


class LazyKey(NamedTuple):
    """Keys computed on use: ``fn(*operands)``; lets each pass recompute keys leaf by leaf."""

    fn: Callable[..., jax.Array]
    operands: tuple[Any, ...]

    def __call__(self):
        return self.fn(*self.operands)


def _materialize(key):
    return key() if callable(key) else key


def _after(dep, key):
    """``key`` whose computation XLA must schedule after ``dep`` is computed."""
    if isinstance(key, LazyKey):
        dep, ops = lax.optimization_barrier((dep, key.operands))
        return dep, LazyKey(key.fn, ops)
    return lax.optimization_barrier((dep, key))


def _histogram(keys, lo, s, nbins, kdt):
    """Counts of ``keys`` in ``nbins`` bins of width ``2**s`` from ``lo``, plus below / above."""
    hist = jnp.zeros(nbins + 2, jnp.int32)
    s_k = s.astype(kdt)
    for key in keys:
        # A (never taken) data dependency on the histogram so far orders this leaf's index
        # computation after the previous leaf's scatter: XLA then keeps one leaf's indices alive
        # at a time instead of all of them (an optimization_barrier is not enough on CPU).
        lo = jnp.where(hist[nbins] < 0, lo + 1, lo)
        key = _materialize(key)
        d = (key - lo) >> s_k  # wraps for key < lo; those go to the "below" bin
        if jnp.dtype(kdt).itemsize <= 2:
            d = d.astype(jnp.int32)
        inside = d < nbins
        d = jnp.where(inside, d, 0).astype(jnp.int32)
        idx = jnp.where(key < lo, nbins, jnp.where(inside, d, nbins + 1))
        hist = hist.at[idx.reshape(-1).astype(jnp.int32)].add(1, mode="promise_in_bounds")
    return hist


def _bit_length(x, kbits):
    return kbits - lax.clz(x).astype(jnp.int32)


def _sample(keys, total):
    """A strided sample of about ``_SAMPLE`` keys, taken from every leaf in proportion to its size."""
    parts = []
    for key in keys:
        flat = _materialize(key).reshape(-1)
        take = max(1, round(_SAMPLE * flat.size / total))
        stride = max(1, flat.size // take)
        parts.append(flat[::stride])
    return jnp.sort(jnp.concatenate(parts))


def _shape_dtype(key):
    out = jax.eval_shape(key.fn, *key.operands) if isinstance(key, LazyKey) else key
    return tuple(out.shape), jnp.dtype(out.dtype)


def kth_smallest_key(keys: Sequence[Any], k: jax.Array | int):
    """Exact ``k``-th smallest key (1-based) over all ``keys``.

    Args:
      keys: arrays of one unsigned dtype (``magnitude_keys`` output), any shapes; or zero-argument
        functions returning them (recomputed inside each pass, so XLA never keeps a copy of all
        keys alive at once -- the memory-lean form).
      k: rank in ``1..N`` (``N`` the total size); may be traced.

    Returns:
      ``(t, n_lt, n_eq)``: the key value, the number of keys ``< t`` and the number ``== t``.
    """
    specs = [_shape_dtype(x) for x in keys]
    kdt = specs[0][1]
    kbits = jnp.dtype(kdt).itemsize * 8
    total = sum(math.prod(sh) for sh, _ in specs)
    # Bins per pass: up to 2**22 for big inputs (one pass for a typical bracket), fewer for small
    # ones (the histogram and its cumsum would dominate).
    b = min(kbits, _MAX_BITS, max(8, total.bit_length() - 4))
    nbins = 1 << b
    full_s = jnp.int32(kbits - b)
    k = jnp.asarray(k, jnp.int32)

    if kbits <= b:  # 16-bit keys with a 2**16 histogram: one exact pass, no sample needed
        lo0, s0 = jnp.zeros((), kdt), jnp.int32(0)
    else:
        sample = _sample(keys, total)
        ns = sample.shape[0]
        q = k.astype(jnp.float32) / total
        i_lo = jnp.floor((q - _MARGIN) * ns).astype(jnp.int32)
        i_hi = jnp.ceil((q + _MARGIN) * ns).astype(jnp.int32)
        lo0 = jnp.where(i_lo <= 0, jnp.zeros((), kdt), sample[jnp.clip(i_lo, 0, ns - 1)])
        hi0 = jnp.where(
            i_hi >= ns - 1, jnp.array(jnp.iinfo(kdt).max, kdt), sample[jnp.clip(i_hi, 0, ns - 1)]
        )
        s0 = jnp.maximum(_bit_length(hi0 - lo0, kbits) - b, 0).astype(jnp.int32)

    def body(state):
        lo, s, _, t, n_lt, n_eq = state
        hist = _histogram(keys, lo, s, nbins, kdt)
        below = hist[nbins]
        inr = hist[:nbins]
        cum = below + jnp.cumsum(inr)
        miss = (k <= below) | (k > cum[-1])
        j = jnp.searchsorted(cum, k, side="left").astype(jnp.int32)
        j = jnp.clip(j, 0, nbins - 1)
        new_lo = lo + (j.astype(kdt) << s.astype(kdt))
        lt = cum[j] - inr[j]
        done = (~miss) & (s == 0)
        nxt_lo = jnp.where(miss, jnp.zeros((), kdt), new_lo)
        nxt_s = jnp.where(miss, full_s, jnp.maximum(s - b, 0))
        return (
            nxt_lo,
            nxt_s.astype(jnp.int32),
            done,
            jnp.where(done, new_lo, t),
            jnp.where(done, lt, n_lt),
            jnp.where(done, inr[j], n_eq),
        )

    # Passes are unrolled (each after the first under lax.cond, skipped once done) rather than a
    # while_loop: a while_loop would copy every leaf into its loop state (one more copy of the
    # model). Worst case: the bracket pass misses, then a full-range radix search.
    state = (lo0, s0, jnp.bool_(False), jnp.zeros((), kdt), jnp.int32(0), jnp.int32(0))
    max_passes = 2 + -(-(kbits - b) // b)
    state = body(state)
    for _ in range(max_passes - 1):
        state = lax.cond(state[2], lambda st: st, body, state)
    _, _, _, t, n_lt, n_eq = state
    return t, n_lt, n_eq


SMALL = 4096  # up to this many keys a stable sort is cheaper to compile and to run


def _smallest_k_masks_by_sort(keys, shapes, k):
    """Small inputs: a stable argsort (ties keep position order), then rank >= k is kept."""
    flat = jnp.concatenate([_materialize(x).reshape(-1) for x in keys])
    order = jnp.argsort(flat, stable=True)
    rank = (
        jnp.zeros(flat.shape[0], jnp.int32)
        .at[order]
        .set(jnp.arange(flat.shape[0], dtype=jnp.int32))
    )
    keep = rank >= k
    out, o = [], 0
    for sh in shapes:
        n = math.prod(sh)
        out.append(keep[o : o + n].reshape(sh))
        o += n
    return out


def smallest_k_masks(keys: Sequence[Any], k: jax.Array | int) -> list[jax.Array]:
    """Keep-masks that drop exactly the ``k`` smallest keys over all ``keys``.

    Ties at the cut are broken by position: leaves in the given order, each in C (row-major) order;
    the earlier entries are dropped first.

    Args:
      keys: unsigned key arrays of one dtype (see :func:`magnitude_keys`), any shapes, or
        zero-argument functions returning them (see :func:`kth_smallest_key`).
      k: number to drop, ``0 <= k <= N``; a Python int or a traced int32 scalar.

    Returns:
      One bool array per input with its shape; ``False`` = dropped. Exactly ``k`` are ``False``.
    """
    keys = [x if isinstance(x, LazyKey) else jnp.asarray(x) for x in keys]
    shapes = [_shape_dtype(x)[0] for x in keys]
    total = sum(math.prod(sh) for sh in shapes)
    if (isinstance(k, int) and k == 0) or total == 0:
        return [jnp.ones(sh, bool) for sh in shapes]
    k = jnp.asarray(k, jnp.int32)
    if total <= SMALL:
        return _smallest_k_masks_by_sort(keys, shapes, k)
    k1 = jnp.clip(k, 1, total)
    t, n_lt, n_eq = kth_smallest_key(keys, k1)
    r = k1 - n_lt  # how many of the keys equal to t are dropped, 1 <= r <= n_eq
    active = k > 0

    def no_split():
        return [~(active & (_materialize(x) <= t)) for x in keys]

    def split():
        out = []
        offset = jnp.int32(0)
        for x in keys:
            x = _materialize(x)
            # never-taken dependency on the previous leaf: one leaf's temporaries alive at a time
            t_i = jnp.where(offset < 0, t + 1, t)
            eq = (x == t_i).reshape(-1)
            rank = jnp.cumsum(eq.astype(jnp.int32)) - 1 + offset  # rank among ties, flat order
            drop = (x.reshape(-1) < t_i) | (eq & (rank < r))
            out.append(~(active & drop).reshape(x.shape))
            offset = offset + jnp.sum(eq, dtype=jnp.int32)
        return out

    return lax.cond(r < n_eq, split, no_split)
