"""Argument checks shared by every public kernel wrapper.

The compiled kernels do no bounds checks, so every public entry point runs these checks first and
raises `JaxCompressValueError` / `JaxCompressTypeError` with a message naming the argument.
"""

from __future__ import annotations

import numpy as np

from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "check_array",
    "check_bits",
    "check_int",
    "check_codes_range",
    "check_no_overlap",
    "check_finite",
    "csr_structure_error",
    "nm_positions_error",
]


def check_array(
    name: str,
    a,
    *,
    dtype=None,
    kind: str | None = None,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple | None = None,
    contiguous: bool = True,
    writeable: bool = False,
) -> np.ndarray:
    """Checks that `a` is a NumPy array with the given dtype / kind / rank / shape / contiguity.

    Args:
      name: the argument's name, used in messages.
      a: the value to check.
      dtype: an exact dtype or a tuple of allowed dtypes.
      kind: allowed `dtype.kind` letters, e.g. ``"iu"`` for integers, ``"f"`` for floats.
      ndim: the required rank (or a tuple of allowed ranks).
      shape: the required shape; ``None`` entries match any size.
      contiguous: require C-contiguity (kernels read raw memory).
      writeable: require a writeable array (outputs: kernels store through raw pointers, which
        would bypass NumPy's read-only flag).

    Returns:
      `a`, unchanged.
    """
    if not isinstance(a, np.ndarray):
        raise JaxCompressTypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if dtype is not None:
        allowed = dtype if isinstance(dtype, tuple) else (dtype,)
        allowed = tuple(np.dtype(d) for d in allowed)
        if a.dtype not in allowed:
            names = ", ".join(str(d) for d in allowed)
            raise JaxCompressTypeError(f"{name}.dtype={a.dtype} must be {names}")
    if kind is not None and a.dtype.kind not in kind:
        raise JaxCompressTypeError(
            f"{name}.dtype={a.dtype} must be of kind {kind!r} (i: signed int, u: unsigned int, "
            "f: float)"
        )
    if ndim is not None:
        allowed_nd = ndim if isinstance(ndim, tuple) else (ndim,)
        if a.ndim not in allowed_nd:
            raise JaxCompressValueError(f"{name}.ndim={a.ndim} must be in {allowed_nd}")
    if shape is not None:
        ok = len(shape) == a.ndim and all(
            s is None or s == d for s, d in zip(shape, a.shape, strict=True)
        )
        if not ok:
            want = tuple("*" if s is None else s for s in shape)
            raise JaxCompressValueError(f"{name}.shape={a.shape} must be {want}")
    if contiguous and not a.flags.c_contiguous:
        raise JaxCompressValueError(
            f"{name} must be C-contiguous (got strides {a.strides}); pass np.ascontiguousarray({name})"
        )
    if writeable and not a.flags.writeable:
        raise JaxCompressValueError(f"{name} must be writeable (got a read-only array)")
    return a


def check_no_overlap(name: str, a: np.ndarray, other_name: str, other: np.ndarray) -> None:
    """Raises if the memory of output `a` may overlap input `other` (kernels read and write
    through raw pointers, so an overlapping output would corrupt the input mid-call)."""
    if a.size and other.size and np.may_share_memory(a, other):
        raise JaxCompressValueError(f"{name} must not overlap {other_name}")


def check_int(name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    """Checks that `v` is an int (not a bool) in ``[lo, hi]``; returns it as a Python int."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise JaxCompressTypeError(f"{name}={v!r} must be an int")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_s = "-inf" if lo is None else str(lo)
        hi_s = "inf" if hi is None else str(hi)
        raise JaxCompressValueError(f"{name}={v} must be in {lo_s}..{hi_s}")
    return v


def check_bits(bits, allowed: tuple[int, ...] = tuple(range(1, 9)), name: str = "bits") -> int:
    """Checks a bit width against the supported set."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise JaxCompressTypeError(f"{name}={bits!r} must be an int")
    bits = int(bits)
    if bits not in allowed:
        if allowed == tuple(range(allowed[0], allowed[-1] + 1)):
            rng = f"{allowed[0]}..{allowed[-1]}"
        else:
            rng = str(allowed)
        raise JaxCompressValueError(f"{name}={bits} must be in {rng}")
    return bits


def check_codes_range(name: str, a: np.ndarray, lo: int, hi: int) -> None:
    """Checks that every integer in `a` lies in ``[lo, hi]`` (no-op for an empty array)."""
    if a.size == 0:
        return
    amin = int(a.min())
    amax = int(a.max())
    if amin < lo or amax > hi:
        raise JaxCompressValueError(
            f"{name} has codes in [{amin}, {amax}], outside the allowed range [{lo}, {hi}]"
        )


def check_finite(name: str, a: np.ndarray) -> None:
    """Checks that a float array has no NaN or inf."""
    if a.size and not np.isfinite(a).all():
        raise JaxCompressValueError(f"{name} must be finite (found NaN or inf)")


def csr_structure_error(
    indptr: np.ndarray, indices: np.ndarray, k: int, k_name: str = "K"
) -> str | None:
    """Why ``(indptr, indices)`` is not a valid CSR structure over ``K = k`` columns, or None.

    The one CSR check shared by `CSRMatrix` and the artifact reader: ``indptr`` runs from 0 to
    ``nnz`` without decreasing, every index is in ``[0, k)``, and the indices of every row strictly
    increase. The last rule refuses duplicate column indices: a kernel would sum them while a
    dense scatter (`to_dense`, the reference twin, ONNX) keeps one, a silent disagreement.

    Args:
      indptr: ``(R + 1,)`` integer row pointers.
      indices: ``(nnz,)`` integer column indices.
      k: the number of columns.
      k_name: how messages name `k`.

    Returns:
      A message naming the broken rule, or None when the structure is valid. Cost O(R + nnz).
    """
    nnz = int(indices.shape[0])
    ip = indptr.astype(np.int64, copy=False)
    if ip.shape[0] < 1 or ip[0] != 0 or ip[-1] != nnz:
        got = f"{int(ip[0])}..{int(ip[-1])}" if ip.shape[0] else "empty"
        return f"indptr must start at 0 and end at nnz={nnz} (got {got})"
    if (np.diff(ip) < 0).any():
        return "indptr must be non-decreasing (monotone)"
    if not nnz:
        return None
    idx = indices.astype(np.int64, copy=False)
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= k:
        return f"indices must be in [0, {k_name}={k}) (got {lo}..{hi})"
    step_ok = np.diff(idx) > 0
    starts = ip[1:-1]
    starts = starts[(starts > 0) & (starts < nnz)]
    step_ok[starts - 1] = True  # the first index of a row may be anything
    if not step_ok.all():
        p = int(np.argmin(step_ok)) + 1
        row = int(np.searchsorted(ip, p, side="right")) - 1
        return (
            f"the indices of every row must strictly increase (row {row} has column "
            f"{int(idx[p])} after {int(idx[p - 1])}: duplicate or unsorted)"
        )
    return None


def nm_positions_error(positions: np.ndarray, m: int, *, increasing: bool = False) -> str | None:
    """Why the N:M slot positions are invalid, or None.

    The one N:M position check shared by `NMSparse` and the artifact reader: within a group of
    `m` the `n` slots point at distinct positions in ``[0, m)`` (a duplicate would make one kept
    value overwrite the other, silently), strictly increasing when `increasing` (the order the
    2:4 kernel relies on).

    Args:
      positions: ``(..., n)`` integer positions, the last axis the slots of one group.
      m: the group size.
      increasing: also require strictly increasing positions within a group.

    Returns:
      A message naming the broken rule, or None. Cost O(size * n).
    """
    if positions.size == 0:
        return None
    p = positions.astype(np.int64, copy=False)
    if int(p.min()) < 0 or int(p.max()) >= m:
        return f"N:M positions must be in [0, m={m})"
    nk = p.shape[-1]
    for a in range(nk):
        for b in range(a + 1, nk):
            bad = (p[..., a] >= p[..., b]) if increasing else (p[..., a] == p[..., b])
            if bad.any():
                rule = "strictly increase" if increasing else "be distinct"
                return f"the positions of the {nk} slots of every N:M group must {rule}"
    return None
