"""Weight encodings of the artifact format: every encoder (NumPy arrays -> stored parts) beside its
decoder (stored parts -> the logical float32 tensor). JAX-free.

An encoder returns ``(entry, parts)``: ``entry`` the tensor's manifest entry without its
``parts`` map (``encoding``, ``shape``, ``dtype`` and the encoding's attributes), ``parts``
``{role: array}``. The export writer names the parts ``<tensor>:<role>``; the reader
(`jaxcompress_kernels.artifact.load`) validates every entry before the decoders here see it.

| encoding       | encoder             | parts                                                   |
|----------------|---------------------|---------------------------------------------------------|
| `dense`        | `encode_dense`      | `value`                                                 |
| `csr`          | `encode_csr`        | `indptr`, `indices`, `values` (float32, or int8 codes + `scales`) |
| `nm`           | `encode_nm`         | `positions` + `values` (float32) or `codes` + `scales`  |
| `packed`       | `encode_packed`     | `codes`, `scales` (+ `zero_points` if affine)           |
| `codebook`     | `encode_codebook`   | `indices`, `codebook`                                   |
| `csr_codebook` | `encode_csr_codebook` | `indptr`, `indices`, `codes`, `codebook`              |

The decoders (`decode_dense`, `decode_codes`, `csr_codebook_values`, `unpack_indices`) read a
validated `TensorEntry` (``entry.parts`` by role, ``entry.attrs``).
"""

from __future__ import annotations

import math

import numpy as np

from jaxcompress_kernels.errors import ArtifactError
from jaxcompress_kernels.packing import pack_bits, unpack_bits

__all__ = [
    "kn",
    "nm_structure",
    "encode_dense",
    "encode_csr",
    "encode_nm",
    "encode_packed",
    "encode_codebook",
    "encode_csr_codebook",
    "decode_dense",
    "decode_codes",
    "csr_codebook_values",
    "unpack_indices",
]


def kn(shape) -> tuple[int, int]:
    """The 2-D matmul view ``(K, N)`` of a logical shape (``N = shape[-1]``)."""
    n = shape[-1] if len(shape) else 1
    return (math.prod(shape) // n if n else 0), n


def _pack_unsigned(u: np.ndarray, bits: int) -> np.ndarray:
    return pack_bits(np.ascontiguousarray(u.reshape(-1), np.uint8), bits)


def _index_dtype(k: int):
    return np.uint16 if k <= 65536 else np.int32


# ---------------------------------------------------------------------------------------------
# encoders


def encode_dense(arr: np.ndarray):
    """Any array as is (floats as float32)."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    return {"encoding": "dense", "shape": list(arr.shape), "dtype": str(arr.dtype)}, {
        "value": np.ascontiguousarray(arr)
    }


def nm_structure(w2: np.ndarray, m: int = 4) -> int | None:
    """n (1 or 2) if every group of m consecutive K values of every column of the ``(K, N)``
    array keeps at most n nonzeros (and at most m / 2), else None."""
    k, n = w2.shape
    if k % m or k == 0 or n == 0:
        return None
    cnt = (w2 != 0).reshape(k // m, m, n).sum(1)
    mx = int(cnt.max())
    return max(mx, 1) if mx <= m // 2 else None


def _nm_slots(vals2: np.ndarray, nk: int, m: int = 4):
    """(K, N) -> (positions (N*G*nk,) uint8, slot values (N*G*nk,)) channel-major."""
    k, n = vals2.shape
    g = k // m
    grp = np.ascontiguousarray(vals2.T).reshape(n, g, m)
    nz = grp != 0
    # kept entries first (by position), then unused positions to fill the remaining slots
    order = np.argsort(~nz, axis=2, kind="stable")[:, :, :nk]
    vals = np.take_along_axis(grp, order, axis=2)
    return order.astype(np.uint8).reshape(-1), vals.reshape(-1)


def encode_csr(shape, keep2: np.ndarray, values2: np.ndarray, scales=None, **attrs):
    """CSR over output channels of the ``(K, N)`` view: the nonzeros of `keep2`, their values
    from `values2` (float32, or int8 codes with per-channel `scales` ``(N,)``)."""
    k, n = keep2.shape
    kt = keep2.T != 0
    indptr = np.zeros(n + 1, np.int32)
    np.cumsum(kt.sum(1), out=indptr[1:])
    rows, cols = np.nonzero(kt)
    parts = {
        "indptr": indptr,
        "indices": cols.astype(_index_dtype(k)),
        "values": np.ascontiguousarray(values2.T[rows, cols]),
    }
    if scales is not None:
        parts["scales"] = np.asarray(scales, np.float32)
    return {"encoding": "csr", "shape": list(shape), "dtype": "float32", **attrs}, parts


def encode_nm(shape, values2: np.ndarray, nk: int, *, bits=None, scales=None, **attrs):
    """N:M (``nk`` of every 4 along K): float32 `values2` ``(K, N)``, or symmetric b-bit codes
    (`values2` integer real codes) with `scales` ``(G, N)``."""
    pos, slots = _nm_slots(values2, nk)
    entry = {"encoding": "nm", "shape": list(shape), "dtype": "float32", "n": nk, "m": 4}
    parts = {"positions": pack_bits(pos, 2)}
    if bits is None:
        parts["values"] = slots.astype(np.float32)
    else:
        entry.update(attrs)
        parts["codes"] = _pack_unsigned(slots + (1 << (bits - 1)), bits)
        parts["scales"] = np.asarray(scales, np.float32)
    return entry, parts


def encode_packed(shape, codes2, scales, zero_points, *, bits, symmetric, **attrs):
    """b-bit codes of the ``(K, N)`` view (real codes: signed if symmetric, unsigned if affine),
    channel-major LSB-first, with ``(G, N)`` scales (+ zero points if affine)."""
    half = 1 << (bits - 1)
    u = codes2 + (half if symmetric else 0)
    parts = {"codes": _pack_unsigned(u.T, bits), "scales": np.asarray(scales, np.float32)}
    if not symmetric:
        parts["zero_points"] = np.asarray(zero_points).astype(np.uint8)
    entry = {
        "encoding": "packed",
        "shape": list(shape),
        "dtype": "float32",
        "bits": bits,
        "symmetric": symmetric,
        **attrs,
    }
    return entry, parts


def encode_codebook(shape, indices, codebook, *, bits, axis):
    """b-bit indices in row-major order + the codebook (``(k,)`` or ``(S[axis], k)``)."""
    entry = {"encoding": "codebook", "shape": list(shape), "dtype": "float32", "bits": bits}
    entry["axis"] = axis
    parts = {
        "indices": _pack_unsigned(np.asarray(indices, np.uint8), bits),
        "codebook": np.asarray(codebook, np.float32),
    }
    return entry, parts


def encode_csr_codebook(shape, idx2, codebook, *, bits, axis):
    """Deep Compression's storage: CSR positions of the nonzero indices of the ``(K, N)`` view +
    their b-bit codebook indices + the codebook."""
    k, n = idx2.shape
    kt = idx2.T != 0
    indptr = np.zeros(n + 1, np.int32)
    np.cumsum(kt.sum(1), out=indptr[1:])
    rows, cols = np.nonzero(kt)
    codes = np.ascontiguousarray(idx2.T[rows, cols])
    entry = {"encoding": "csr_codebook", "shape": list(shape), "dtype": "float32", "bits": bits}
    entry["axis"] = axis
    parts = {
        "indptr": indptr,
        "indices": cols.astype(_index_dtype(k)),
        "codes": _pack_unsigned(codes, bits),
        "codebook": np.asarray(codebook, np.float32),
    }
    return entry, parts


# ---------------------------------------------------------------------------------------------
# decoders (NumPy; exact)


def _unpack(stream: np.ndarray, bits: int, count: int) -> np.ndarray:
    return unpack_bits(np.ascontiguousarray(stream), bits, count)


def _nm_slot_count(e) -> int:
    k, n = e.kn
    return n * (k // e.attrs["m"]) * e.attrs["n"]


def _nm_scatter(e, slot_vals: np.ndarray, fill=0) -> np.ndarray:
    """Slot values ``(N * K/m * n,)`` -> dense ``(K, N)``; positions not kept get `fill`."""
    k, n = e.kn
    m, nk = e.attrs["m"], e.attrs["n"]
    pbits = max(1, (m - 1).bit_length())
    pos = _unpack(e.parts["positions"], pbits, _nm_slot_count(e)).astype(np.int64)
    if pos.size and int(pos.max()) >= m:
        raise ArtifactError(f"tensor {e.name!r}: an N:M position is out of range")
    g = k // m
    pos = pos.reshape(n, g, nk)
    vals = slot_vals.reshape(n, g, nk)
    out = np.full((n, g, m), fill, slot_vals.dtype)
    ni, gi, _ = np.indices(pos.shape)
    out[ni, gi, pos] = vals
    return np.ascontiguousarray(out.reshape(n, k).T)


def decode_codes(e):
    """For `packed` / quantized `nm` entries: ``(codes (K, N) int16 real codes (symmetric: signed,
    affine: unsigned), scales (G, N) float32, zero_points (G, N) int16 or None)``."""
    k, n = e.kn
    bits = e.attrs["bits"]
    half = 1 << (bits - 1)
    if e.encoding == "packed":
        u = _unpack(e.parts["codes"], bits, k * n).reshape(n, k).T.astype(np.int16)
    elif e.encoding == "nm":
        u = _nm_scatter(
            e, _unpack(e.parts["codes"], bits, _nm_slot_count(e)).astype(np.int16), fill=half
        ).astype(np.int16)
    else:
        raise ArtifactError(f"tensor {e.name!r} ({e.encoding}) has no integer codes")
    if e.attrs.get("symmetric", True):
        return np.ascontiguousarray(u - half), e.parts["scales"], None
    return np.ascontiguousarray(u), e.parts["scales"], e.parts["zero_points"].astype(np.int16)


def _dequant(codes, scales, zps, group) -> np.ndarray:
    k = codes.shape[0]
    s = np.repeat(scales, group, axis=0)[:k]
    c = codes.astype(np.float32)
    if zps is not None:
        c = c - np.repeat(zps.astype(np.float32), group, axis=0)[:k]
    return (c * s).astype(np.float32)


def csr_codebook_values(e) -> np.ndarray:
    """The float32 values of the nonzeros of a `csr_codebook` entry (CSR order)."""
    nnz = e.parts["indices"].shape[0]
    idx = _unpack(e.parts["codes"], e.attrs["bits"], nnz).astype(np.int64)
    cb = e.parts["codebook"]
    if idx.size and int(idx.max()) >= cb.shape[-1]:
        raise ArtifactError(f"tensor {e.name!r}: a codebook index is out of range")
    if cb.ndim == 1:
        return cb[idx]
    rows = np.repeat(np.arange(e.kn[1]), np.diff(e.parts["indptr"].astype(np.int64)))
    return cb[rows, idx]


def unpack_indices(e) -> np.ndarray:
    """The ``codebook`` entry's indices, ``S`` row-major, uint8, each checked against the
    codebook's length."""
    idx = _unpack(e.parts["indices"], e.attrs["bits"], e.size)
    if int(idx.max(initial=0)) >= e.parts["codebook"].shape[-1]:
        raise ArtifactError(f"tensor {e.name!r}: a codebook index is out of range")
    return idx


def decode_dense(e) -> np.ndarray:
    """The logical tensor as a dense array of its shape (float32 for compressed encodings).

    Quantized values are ``float32(code - zero_point) * scale`` evaluated in float32, the same
    expression `jaxcompress.quantization.dequantize` evaluates, so the results are bit-identical.
    """
    k, n = e.kn
    if e.encoding == "dense":
        return e.parts["value"]
    if e.encoding in ("csr", "csr_codebook"):
        ip = e.parts["indptr"].astype(np.int64)
        rows = np.repeat(np.arange(n), np.diff(ip))
        if e.encoding == "csr":
            v = e.parts["values"]
            v = e.parts["scales"][rows] * v.astype(np.float32) if v.dtype == np.int8 else v
        else:
            v = csr_codebook_values(e)
        out = np.zeros((n, k), np.float32)
        out[rows, e.parts["indices"].astype(np.int64)] = v
        return np.ascontiguousarray(out.T).reshape(e.shape)
    if e.encoding == "nm" and "values" in e.parts:
        return _nm_scatter(e, e.parts["values"]).reshape(e.shape)
    if e.encoding in ("packed", "nm"):
        codes, scales, zps = decode_codes(e)
        group = e.attrs.get("group_size") or max(k, 1)
        return _dequant(codes, scales, zps, group).reshape(e.shape)
    # codebook
    idx = unpack_indices(e).astype(np.int64).reshape(e.shape)
    cb = e.parts["codebook"]
    if e.attrs.get("axis") is None:
        return cb[idx]
    axis = e.attrs["axis"]
    bshape = [1] * len(e.shape)
    bshape[axis] = e.shape[axis]
    ch = np.arange(e.shape[axis]).reshape(bshape)
    return cb[ch, idx]
