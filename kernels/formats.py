"""Weight containers for the edge kernels and exact conversions to and from dense arrays.

Every container describes a weight that is *logically* the Flax kernel ``W`` of shape ``(K, N)``
= ``(in, out)``, used as ``y = x @ W`` with ``x`` of shape ``(M, K)``. Internally each container
stores the layout its kernel reads fastest (output-channel-major, blocked, interleaved); the
conversion happens once, in the ``*_from_*`` / `pack_weight` constructors, never per call.

Containers are frozen dataclasses that own immutable copies of their arrays. ``__post_init__``
first copies every array into memory that NumPy exposes read-only and refuses to make writeable
again (the caller's array is no longer referenced; see `_frozen`), then checks every
invariant the compiled kernels rely on on that copy (dtypes, shapes, monotone ``indptr``, in-range
and strictly increasing indices, distinct N:M positions, finite scales, consistent ``col_sums``).
So a container that exists is safe to hand to a kernel and stays so: editing the array it was built
from, or setting ``flags.writeable = True`` on its arrays, cannot make a kernel read out of bounds.
The kernels trust the container and validate nothing per call (the copy is made once, at
construction; an array that is already such an immutable copy is not copied again).

| container      | built by                                   | kernel    | bits / weight (payload)        |
|----------------|--------------------------------------------|-----------|--------------------------------|
| `PackedWeight` | `pack_weight(codes, scales, zero_points)`  | `qmatmul` | b + 32/g (+ zero points)       |
| `Int8Weight`   | `int8_weight(codes)`                       | `qmatmul_int8` | 8                         |
| `CSRMatrix`    | `csr_from_dense`, `csr_from_quantized`     | `spmm_csr`| density * (32 or 8 + 16 index) |
| `NMSparse`     | `nm_from_dense`, `nm_from_quantized`       | `spmm_nm` | n/m * (32 or 4 + 2 position)   |
| `BSRMatrix`    | `bsr_from_dense`                           | `spmm_bsr`| block density * 32 + indices   |

`to_dense(container)` inverts every constructor exactly (float32 results are bit-identical to the
dequantization formula evaluated in float32).
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np

from jaxcompress_kernels._validate import (
    check_array,
    check_bits,
    check_codes_range,
    check_finite,
    check_int,
    csr_structure_error,
    nm_positions_error,
)
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "PackedWeight",
    "Int8Weight",
    "CSRMatrix",
    "NMSparse",
    "BSRMatrix",
    "pack_weight",
    "unpack_weight",
    "int8_weight",
    "csr_from_dense",
    "csr_from_quantized",
    "nm_from_dense",
    "nm_from_quantized",
    "bsr_from_dense",
    "to_dense",
]

QMATMUL_BITS = (2, 3, 4, 8)
_PER_CHANNEL_ALIGN = 32  # K is zero-padded to this multiple for per-channel packed weights
NM_LANES = 16  # output channels interleaved per N:M tile
LANE_BLOCK = 128  # output channels per block of the batch-1 "lanes" layout (bits 4 and 8)
INT8_BLOCK = 256  # Int8Weight rows are zero-padded to this many bytes (aligned rows)


class _ReadOnlyMemory:
    """Holds the memory of an immutable copy for NumPy (through ``__array_interface__``, marked
    read-only). It exports no buffer, so NumPy refuses ``writeable = True`` on any array over it;
    the NumPy array that owns the memory is kept in a private table, not on this object."""

    __slots__ = ("__array_interface__", "__weakref__")


_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _frozen(a):
    """An immutable C-contiguous copy of `a`; non-arrays pass through.

    The copy is an ordinary NumPy allocation (same alignment and huge-page advice as any large
    array, so kernels run at the same speed), exposed only through a read-only array interface:
    it shares no memory with `a`, and neither it nor its base can be made writeable. Arrays that
    already are such a copy are returned as is.
    """
    if not isinstance(a, np.ndarray):
        return a  # the checks that follow refuse it with a message naming the argument
    root = a
    while isinstance(root, np.ndarray):
        root = root.base
    if type(root) is _ReadOnlyMemory and a.flags.c_contiguous:
        return a
    owner = np.array(a, order="C", copy=True)
    holder = _ReadOnlyMemory()
    holder.__array_interface__ = {
        "shape": owner.shape,
        "typestr": owner.dtype.str,
        "data": (owner.ctypes.data, True),
        "strides": None,
        "version": 3,
    }
    _OWNERS[holder] = owner
    return np.asarray(holder)


class _Immutable:
    """Containers are values: copies are the object itself, pickling goes through the validating
    constructor (a copied or unpickled container never holds writeable arrays)."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return (_rebuild, (type(self), kw))


def _rebuild(cls, kw):
    return cls(**kw)


def _freeze(obj, *fields: str) -> None:
    """Replaces each array field of a frozen dataclass by its immutable copy (before any check,
    so what is checked is what the kernels later read)."""
    for f in fields:
        object.__setattr__(obj, f, _frozen(getattr(obj, f)))


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b


# ----------------------------------------------------------------------------------------------
# packed low-bit weights
#
# Layout of one group of g consecutive K values of output channel n (g = group_size, or the
# zero-padded K for per-channel scales), as bytes data[n, group_offset : group_offset + g*b/8]:
#   b = 8: byte j = code of k0 + j.
#   b = 4: byte j (j < g/2): low nibble = k0 + j, high nibble = k0 + g/2 + j.
#   b = 2: byte j (j < g/4): bits 2p..2p+1 = k0 + p*g/4 + j, p = 0..3.
#   b = 3: first g/4 bytes = the low two bits, laid out as b = 2; then g/8 bytes of high bits:
#          bit t of byte j = high bit of k0 + t*g/8 + j.
# Each plane therefore multiplies a contiguous run of x. Finally the bytes of a row are stored
# groups-innermost: data[n] viewed as (B, PL, G) with B byte planes (3 for 3-bit: lo0, lo1, high;
# else 1), PL = g*bits/8/B bytes per plane, G groups, so the batch-1 kernel runs its SIMD lanes
# across groups (see quantized.py). For per-channel weights G = 1 and this is the plain group.
# This departs from the LSB-first stream of `pack_bits` (used for export) on purpose.


def _encode_group_layout(u: np.ndarray, bits: int, g: int) -> np.ndarray:
    """u: (N, Kp) uint8 codes -> (N, Kp*bits/8) uint8 in the layout above."""
    n, kp = u.shape
    G = kp // g
    ug = u.reshape(n, G, g).astype(np.uint8)
    if bits == 8:
        out = ug
    elif bits == 4:
        h = g // 2
        out = ug[:, :, :h] | (ug[:, :, h:] << 4)
    elif bits == 2:
        q = g // 4
        out = ug[:, :, :q] | (ug[:, :, q : 2 * q] << 2) | (ug[:, :, 2 * q : 3 * q] << 4)
        out = out | (ug[:, :, 3 * q :] << 6)
    else:  # 3
        lo = _encode_group_layout((ug & 3).reshape(n, kp), 2, g).reshape(n, G, g // 4)
        e = g // 8
        hb = (ug >> 2) & 1
        hi = np.zeros((n, G, e), np.uint8)
        for t in range(8):
            hi |= hb[:, :, t * e : (t + 1) * e] << t
        out = np.concatenate([lo, hi], axis=2)
    return np.ascontiguousarray(out.reshape(n, -1).astype(np.uint8))


def _planes(bits: int) -> int:
    return 3 if bits == 3 else 1


def _groups_inner(data: np.ndarray, bits: int, g: int, kp: int) -> np.ndarray:
    """(N, G * B * PL) group-major bytes -> (N, B * PL * G) groups-innermost."""
    n = data.shape[0]
    G = kp // g
    B = _planes(bits)
    d = data.reshape(n, G, B, g * bits // 8 // B).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(d.reshape(n, -1))


def _groups_outer(data: np.ndarray, bits: int, g: int, kp: int) -> np.ndarray:
    """Inverse of `_groups_inner`."""
    n = data.shape[0]
    G = kp // g
    B = _planes(bits)
    d = data.reshape(n, B, g * bits // 8 // B, G).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(d.reshape(n, -1))


def _decode_group_layout(data: np.ndarray, bits: int, g: int, kp: int) -> np.ndarray:
    """Inverse of `_encode_group_layout` (NumPy): -> (N, Kp) uint8 codes."""
    n = data.shape[0]
    G = kp // g
    d = data.reshape(n, G, g * bits // 8)
    if bits == 8:
        u = d
    elif bits == 4:
        u = np.concatenate([d & 15, d >> 4], axis=2)
    elif bits == 2:
        u = np.concatenate([(d >> (2 * p)) & 3 for p in range(4)], axis=2)
    else:
        lo = _decode_group_layout(np.ascontiguousarray(d[:, :, : g // 4]).reshape(n, -1), 2, g, kp)
        hi = d[:, :, g // 4 :]
        hb = np.concatenate([(hi >> t) & 1 for t in range(8)], axis=2).reshape(n, kp)
        u = lo | (hb << 2)
    return np.ascontiguousarray(u.reshape(n, kp))


@dataclasses.dataclass(frozen=True, eq=False)
class PackedWeight(_Immutable):
    """A b-bit quantized weight ``W (K, N)`` packed for `qmatmul`.

    ``W[k, n] = scales[n, k // group] * (u[k, n] - zero_points[n, k // group])`` where ``u`` are
    the unsigned codes and ``group`` is `group_size` (per-group) or the padded K (per-channel).

    Attributes:
      shape: the logical ``(K, N)``.
      bits: 2, 3, 4 or 8.
      group_size: codes per scale along K, or None for per-channel (one scale per output channel).
      symmetric: True if built from signed codes (then ``zero_points == 2**(bits-1)``).
      data: ``(N, Kp * bits // 8)`` uint8, output-channel-major; row n is ``(B, PL, G)`` bytes
        (byte plane, position in plane, group), layout documented in the module source; ``Kp`` is K (per-group) or K rounded up to 32 (per-channel; padded codes
        equal the zero point, so they dequantize to exactly 0).
      scales: ``(N, G)`` float32, G groups per output channel.
      zero_points: ``(N, G)`` float32 holding small integers (exact in float32).

    Invariants (checked at construction): dtypes and shapes as above, C-contiguous, finite scales.
    """

    shape: tuple[int, int]
    bits: int
    group_size: int | None
    symmetric: bool
    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray

    def __post_init__(self):
        _freeze(self, "data", "scales", "zero_points")
        k, n = self.shape
        bits = check_bits(self.bits, QMATMUL_BITS)
        g = self.group_len
        kp = self.padded_k
        if self.group_size is not None and (k % g or g % 8):
            raise JaxCompressValueError(
                f"group_size={self.group_size} must divide K={k} and be a multiple of 8"
            )
        G = kp // g if g else 0
        if self.group_size is None:
            G = 1
        check_array("data", self.data, dtype=np.uint8, shape=(n, kp * bits // 8))
        check_array("scales", self.scales, dtype=np.float32, shape=(n, G))
        check_array("zero_points", self.zero_points, dtype=np.float32, shape=(n, G))
        check_finite("scales", self.scales)
        check_finite("zero_points", self.zero_points)
        object.__setattr__(self, "lanes", _lanes_layout(self))

    lanes: tuple | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def padded_k(self) -> int:
        k = self.shape[0]
        return k if self.group_size is not None else _round_up(max(k, 1), _PER_CHANNEL_ALIGN)

    @property
    def group_len(self) -> int:
        return self.group_size if self.group_size is not None else self.padded_k

    @property
    def nbytes(self) -> int:
        return (
            self.data.nbytes
            + self.scales.nbytes
            + (0 if self.symmetric else self.zero_points.nbytes)
        )


def _lanes_layout(w: PackedWeight):
    """The batch-1 "lanes" layout of a 4- or 8-bit weight, built once at construction.

    Output channels are cut in blocks of ``LANE_BLOCK`` (N zero-padded, padded channels have
    scale 0). For block b, group gi, position kk in the group (k = gi * g + kk), the bytes
    ``d[b, gi, kk]`` hold the codes of the block's channels side by side: 8-bit, byte c = channel
    c, stored centred as int8 ``u - 128`` (then ``zs = s * (z - 128)``: small partial sums over
    long per-channel groups); 4-bit, byte c = channel c (low nibble) and channel c + LANE_BLOCK/2
    (high nibble). A contiguous run of bytes thus feeds whole SIMD lane groups (one broadcast x[k]
    per row, no shuffles). Scales ``s[b, gi, c]`` and ``s * z`` (``zs``) are laid out alike.
    For symmetric weights ``zs`` is empty (``s * 8`` for 4-bit, 0 for 8-bit, applied in the
    kernel). Returns ``(d, s, zs)`` read-only, or None for other bit widths, empty weights or N below
    ``LANE_BLOCK / 2`` (those keep the groups-across-lanes kernel). This is a
    second copy of the codes (same size as `data`, plus two float32 arrays the size of `scales`),
    traded for a faster batch-1 `qmatmul` (see docs/kernels.md for the measured ratios).
    """
    k, n = w.shape
    kp = w.padded_k
    if w.bits not in (4, 8) or n < LANE_BLOCK // 2 or not kp:
        return None  # narrow layers: padding N to a block would waste more than it saves
    g = w.group_len
    G = kp // g
    cb = LANE_BLOCK
    nb = -(-n // cb)
    u = _decode_group_layout(_groups_outer(np.asarray(w.data), w.bits, g, kp), w.bits, g, kp)
    up = np.zeros((nb * cb, kp), np.uint8)
    up[:n] = u
    ub = up.reshape(nb, cb, G, g).transpose(0, 2, 3, 1)  # (nb, G, g, cb)
    zpl = w.zero_points
    if w.bits == 4:
        d = (ub[..., : cb // 2] | (ub[..., cb // 2 :] << 4)).astype(np.uint8)
    else:  # centred, int8 u - 128 (smaller partial sums over long per-channel groups)
        d = (ub.astype(np.int16) - 128).astype(np.int8)
        zpl = zpl - np.float32(128.0)
    sp = np.zeros((nb * cb, G), np.float32)
    sp[:n] = w.scales
    zsp = np.zeros((nb * cb, G), np.float32)
    zsp[:n] = w.scales * zpl
    s = sp.reshape(nb, cb, G).transpose(0, 2, 1)
    zs = zsp.reshape(nb, cb, G).transpose(0, 2, 1)
    if w.symmetric:  # zs = s * 8 (4-bit) or 0 (8-bit, centred): not stored, not read
        zs = np.zeros((0, G, cb), np.float32)
    return tuple(_frozen(a) for a in (d, s, zs))


def pack_weight(
    codes: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None = None,
    *,
    bits: int,
    group_size: int | None = None,
) -> PackedWeight:
    """Packs a quantized ``(K, N)`` weight for `qmatmul` (done once, at load time).

    ``W[k, n] = scales[k // group_size, n] * (codes[k, n] - zero_points[k // group_size, n])``,
    zero point 0 when `zero_points` is None (symmetric codes).

    Args:
      codes: ``(K, N)`` integer codes: signed in ``[-2**(bits-1), 2**(bits-1) - 1]`` when
        `zero_points` is None (symmetric), else unsigned in ``[0, 2**bits - 1]`` (affine).
      scales: float32 ``(N,)`` or ``(1, N)`` per channel, or ``(K // group_size, N)`` per group.
      zero_points: optional integer array shaped like `scales`, values in ``[0, 2**bits - 1]``.
      bits: 2, 3, 4 or 8.
      group_size: codes per scale along K (a multiple of 8 dividing K); None for per-channel.

    Returns:
      A `PackedWeight`.
    """
    bits = check_bits(bits, QMATMUL_BITS)
    check_array("codes", codes, kind="iu", ndim=2, contiguous=False)
    k, n = codes.shape
    if group_size is not None:
        group_size = check_int("group_size", group_size, 8)
        if k % group_size or group_size % 8:
            raise JaxCompressValueError(f"{group_size=} must be a multiple of 8 that divides K={k}")
        G = k // group_size
    else:
        G = 1
    check_array("scales", scales, dtype=np.float32, ndim=(1, 2), contiguous=False)
    if scales.ndim == 1:
        scales = scales.reshape(1, -1)
    if scales.shape != (G, n):
        raise JaxCompressValueError(
            f"scales.shape={scales.shape} must be ({G}, {n}) for K={k}, N={n}, {group_size=}"
        )
    if scales.size and not np.isfinite(scales).all():
        raise JaxCompressValueError("scales must be finite (found NaN or inf)")
    half = 1 << (bits - 1)
    if zero_points is None:
        check_codes_range("codes", codes, -half, half - 1)
        u = (codes.astype(np.int16) + half).astype(np.uint8)
        zp = np.full((G, n), half, np.float32)
        symmetric = True
    else:
        check_array("zero_points", zero_points, kind="iu", ndim=(1, 2), contiguous=False)
        zero_points = zero_points.reshape(1, -1) if zero_points.ndim == 1 else zero_points
        if zero_points.shape != (G, n):
            raise JaxCompressValueError(
                f"zero_points.shape={zero_points.shape} must equal scales shape ({G}, {n})"
            )
        check_codes_range("codes", codes, 0, (1 << bits) - 1)
        check_codes_range("zero_points", zero_points, 0, (1 << bits) - 1)
        u = codes.astype(np.uint8)
        zp = zero_points.astype(np.float32)
        symmetric = False
    g = group_size if group_size is not None else _round_up(max(k, 1), _PER_CHANNEL_ALIGN)
    kp = k if group_size is not None else g
    ut = np.empty((n, kp), np.uint8)
    ut[:, :k] = u.T
    if kp > k:  # padding dequantizes to exactly 0
        ut[:, k:] = zp[0].astype(np.uint8)[:, None]
    if n and kp:
        data = _groups_inner(_encode_group_layout(ut, bits, g), bits, g, kp)
    else:
        data = np.zeros((n, kp * bits // 8), np.uint8)
    return PackedWeight(
        shape=(k, n),
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        data=data,
        scales=np.ascontiguousarray(scales.T, dtype=np.float32),
        zero_points=np.ascontiguousarray(zp.T),
    )


def unpack_weight(w: PackedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inverse of `pack_weight`: ``(codes (K, N), scales (G, N), zero_points (G, N) or None)``.

    Codes are int8 signed for symmetric weights, uint8 for affine ones; zero points uint8.
    """
    if not isinstance(w, PackedWeight):
        raise JaxCompressTypeError(f"w must be a PackedWeight, got {type(w).__name__}")
    k, n = w.shape
    kp = w.padded_k
    if n and kp:
        grouped = _groups_outer(np.asarray(w.data), w.bits, w.group_len, kp)
        u = _decode_group_layout(grouped, w.bits, w.group_len, kp)[:, :k].T
    else:
        u = np.zeros((k, n), np.uint8)
    scales = np.ascontiguousarray(w.scales.T)
    if w.symmetric:
        codes = (u.astype(np.int16) - (1 << (w.bits - 1))).astype(np.int8)
        return np.ascontiguousarray(codes), scales, None
    return np.ascontiguousarray(u), scales, np.ascontiguousarray(w.zero_points.T.astype(np.uint8))


# ----------------------------------------------------------------------------------------------
# int8 weights for full-integer inference


@dataclasses.dataclass(frozen=True, eq=False)
class Int8Weight(_Immutable):
    """Signed int8 weight codes ``W (K, N)`` for `qmatmul_int8` (zero point 0, Jacob et al. 2018
    with symmetric weights).

    Attributes:
      shape: the logical ``(K, N)``; K <= 65536 so int32 accumulation cannot overflow.
      data: ``(N, Kp)`` int8, output-channel-major, K zero-padded to ``Kp = round_up(K, 256)``
        (aligned rows; the kernel reads only the first K bytes of each).
      col_sums: ``(N,)`` int32, ``sum_k W[k, n]`` (for the input zero-point correction);
        verified at construction (inconsistent sums would give wrong results whenever the
        activation zero point is not 0).
    """

    shape: tuple[int, int]
    data: np.ndarray
    col_sums: np.ndarray

    def __post_init__(self):
        _freeze(self, "data", "col_sums")
        k, n = self.shape
        check_int("K", k, 0, 65536)
        check_int("N", n, 0)
        check_array("data", self.data, dtype=np.int8, shape=(n, _round_up(max(k, 1), INT8_BLOCK)))
        check_array("col_sums", self.col_sums, dtype=np.int32, shape=(n,))
        if n and not np.array_equal(self.data[:, :k].sum(1, dtype=np.int64), self.col_sums):
            raise JaxCompressValueError("col_sums must equal the column sums of the codes")

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def int8_weight(codes: np.ndarray) -> Int8Weight:
    """Builds an `Int8Weight` from ``(K, N)`` int8 codes (K <= 65536)."""
    check_array("codes", codes, dtype=np.int8, ndim=2, contiguous=False)
    k, n = codes.shape
    check_int("K", k, 0, 65536)
    data = np.zeros((n, _round_up(max(k, 1), INT8_BLOCK)), np.int8)
    data[:, :k] = codes.T
    return Int8Weight(
        shape=(k, n), data=data, col_sums=codes.astype(np.int32).sum(0, dtype=np.int32)
    )


# ----------------------------------------------------------------------------------------------
# CSR


@dataclasses.dataclass(frozen=True, eq=False)
class CSRMatrix(_Immutable):
    """A sparse ``W (K, N)`` stored as CSR over *output channels* (i.e. the CSR of ``W.T``).

    Row ``n`` holds the nonzeros of output channel ``n``: ``indices[indptr[n]:indptr[n+1]]`` are
    their input positions ``k`` (strictly increasing) and ``values`` their values, so a batch-1
    product is one sparse dot per output, parallel over outputs without write conflicts.

    Attributes:
      shape: logical ``(K, N)``.
      indptr: ``(N + 1,)`` int64, ``indptr[0] == 0``, non-decreasing, ``indptr[N] == nnz``.
      indices: ``(nnz,)`` uint16 when K <= 65536 (half the index traffic), else int32; in
        ``[0, K)``, strictly increasing within a row (no duplicate column: `spmm_csr` would sum
        duplicates while `to_dense` keeps one).
      values: ``(nnz,)`` float32, or int8 codes when `scales` is given.
      scales: None, or ``(N,)`` float32, finite: ``W[k, n] = scales[n] * values[p]`` (quantized
        CSR).
    """

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    scales: np.ndarray | None = None

    def __post_init__(self):
        _freeze(self, "indptr", "indices", "values", "scales")
        k, n = self.shape
        check_int("K", k, 0)
        check_int("N", n, 0)
        check_array("indptr", self.indptr, dtype=np.int64, shape=(n + 1,))
        check_array("indices", self.indices, dtype=(np.uint16, np.int32), ndim=1)
        nnz = self.indices.shape[0]
        if self.scales is None:
            check_array("values", self.values, dtype=np.float32, shape=(nnz,))
        else:
            check_array("values", self.values, dtype=np.int8, shape=(nnz,))
            check_array("scales", self.scales, dtype=np.float32, shape=(n,))
            check_finite("scales", self.scales)
        if msg := csr_structure_error(self.indptr, self.indices, k):
            raise JaxCompressValueError(msg)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def nbytes(self) -> int:
        s = 0 if self.scales is None else self.scales.nbytes
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes + s


def _index_dtype(k: int):
    return np.uint16 if k <= 65536 else np.int32


def _check_mask(mask, shape):
    if mask is None:
        return None
    check_array("mask", mask, dtype=np.bool_, contiguous=False)
    if mask.shape != shape:
        raise JaxCompressValueError(f"mask.shape={mask.shape} must equal w.shape={shape}")
    return mask


def csr_from_dense(w: np.ndarray, *, mask: np.ndarray | None = None) -> CSRMatrix:
    """Builds a float32 `CSRMatrix` from a dense ``(K, N)`` float32 weight.

    Args:
      w: ``(K, N)`` float32.
      mask: optional ``(K, N)`` bool; kept entries (even exact zeros) are where it is True.
        Without a mask the nonzeros of `w` are kept.
    """
    check_array("w", w, dtype=np.float32, ndim=2, contiguous=False)
    mask = _check_mask(mask, w.shape)
    k, n = w.shape
    keep = (w != 0) if mask is None else mask
    wt = w.T
    kt = keep.T
    counts = kt.sum(1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows, cols = np.nonzero(kt)  # row-major order: sorted by n, then k
    return CSRMatrix(
        shape=(k, n),
        indptr=indptr,
        indices=cols.astype(_index_dtype(k)),
        values=np.ascontiguousarray(wt[rows, cols], dtype=np.float32),
    )


def csr_from_quantized(
    codes: np.ndarray, scales: np.ndarray, *, mask: np.ndarray | None = None
) -> CSRMatrix:
    """Builds a quantized `CSRMatrix` (int8 codes + per-output-channel scales).

    ``W[k, n] = scales[n] * codes[k, n]``; entries with code 0 (or mask False) are dropped.

    Args:
      codes: ``(K, N)`` int8 symmetric codes.
      scales: ``(N,)`` float32 per output channel.
      mask: optional ``(K, N)`` bool of kept entries.
    """
    check_array("codes", codes, dtype=np.int8, ndim=2, contiguous=False)
    k, n = codes.shape
    check_array("scales", scales, dtype=np.float32, shape=(n,), contiguous=False)
    mask = _check_mask(mask, codes.shape)
    keep = (codes != 0) if mask is None else mask
    kt = keep.T
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(kt.sum(1), out=indptr[1:])
    rows, cols = np.nonzero(kt)
    return CSRMatrix(
        shape=(k, n),
        indptr=indptr,
        indices=cols.astype(_index_dtype(k)),
        values=np.ascontiguousarray(codes.T[rows, cols]),
        scales=np.ascontiguousarray(scales),
    )


# ----------------------------------------------------------------------------------------------
# N:M structured sparsity


@dataclasses.dataclass(frozen=True, eq=False)
class NMSparse(_Immutable):
    """``W (K, N)`` with at most `n` nonzeros in every group of `m` = 4 consecutive K values
    (the reduction axis), stored as kept values + 2-bit positions.

    Storage interleaves 16 output channels (a "tile", one AVX-512 vector of lanes). With
    ``Kp = round_up(K, 16)``, ``Np = round_up(N, 16)``, ``T = Np // 16`` tiles and ``S = Kp // 4 * n``
    slots per channel (slot ``s`` is the ``s % n``-th kept value of group ``s // n``):

    - ``positions``: ``(T, S // 4, 16)`` uint8; position of slot s, lane l is
      ``(positions[t, s // 4, l] >> (2 * (s % 4))) & 3`` (2 bits per kept value). For 2:4 the two
      positions of a group strictly increase (an unused slot holds value 0 at an unkept position).
    - ``values``: ``(T, S, 16)`` float32 (when `bits` is None), or
    - ``values``: ``(T, S // 2, 16)`` uint8 holding 4-bit codes (`bits` = 4): code of slot s is
      ``(values[t, s // 2, l] >> (4 * (s % 2))) & 15`` and
      ``W = scales[n] * (code - 8)``; `scales` is ``(Np,)`` float32.

    Padding (K beyond the true K, channels beyond N) holds value 0 / code 8.
    """

    shape: tuple[int, int]
    n: int
    m: int
    positions: np.ndarray
    values: np.ndarray
    bits: int | None = None
    scales: np.ndarray | None = None

    def __post_init__(self):
        _freeze(self, "positions", "values", "scales")
        k, nout = self.shape
        check_int("K", k, 0)
        check_int("N", nout, 0)
        if self.m != 4 or self.n not in (1, 2):
            raise JaxCompressValueError(f"n:m={self.n}:{self.m} must be 1:4 or 2:4")
        if k % 4:
            raise JaxCompressValueError(f"K={k} must be a multiple of m=4")
        kp, np_ = _round_up(k, 16), _round_up(nout, NM_LANES)
        t = np_ // NM_LANES
        s = kp // 4 * self.n
        check_array("positions", self.positions, dtype=np.uint8, shape=(t, s // 4, NM_LANES))
        if self.bits is None:
            check_array("values", self.values, dtype=np.float32, shape=(t, s, NM_LANES))
            if self.scales is not None:
                raise JaxCompressValueError("scales must be None for float32 values")
        elif self.bits == 4:
            check_array("values", self.values, dtype=np.uint8, shape=(t, s // 2, NM_LANES))
            check_array("scales", self.scales, dtype=np.float32, shape=(np_,))
            check_finite("scales", self.scales)
        else:
            raise JaxCompressValueError(f"bits={self.bits} must be None (float32) or 4")
        if self.n == 2 and self.positions.size:  # slots (2j, 2j+1) of a byte's lane: one group
            p = self.positions
            pos = np.stack([p & 3, (p >> 2) & 3, (p >> 4) & 3, p >> 6], axis=-1)
            if msg := nm_positions_error(pos.reshape(-1, 2), self.m, increasing=True):
                raise JaxCompressValueError(msg)

    @property
    def nbytes(self) -> int:
        s = 0 if self.scales is None else self.scales.nbytes
        return self.positions.nbytes + self.values.nbytes + s


def _nm_select(w_like: np.ndarray, keep: np.ndarray, n: int, m: int):
    """-> (pos (Np, G, n) uint8, sel (Np, G, n) int) for kept entries of each group, padded."""
    k, nout = keep.shape
    kp, np_ = _round_up(k, 16), _round_up(nout, NM_LANES)
    kk = np.zeros((np_, kp), bool)
    kk[:nout, :k] = keep.T
    grp = kk.reshape(np_, kp // m, m)
    cnt = grp.sum(2)
    if (cnt > n).any():
        bad = np.argwhere(cnt > n)[0]
        raise JaxCompressValueError(
            f"the weight is not {n}:{m} sparse: group k={bad[1] * m}..{bad[1] * m + m - 1} of "
            f"output channel {bad[0]} keeps {int(cnt[bad[0], bad[1]])} values"
        )
    # positions of kept entries in increasing order, padded with unused slots
    order = np.argsort(~grp, axis=2, kind="stable")[:, :, :n]  # kept first, by position
    # unused slots point at a position not kept (value 0 there); then sort the slots of a group
    # by position, so positions within a group strictly increase (the 2:4 kernel relies on it)
    order = np.sort(order, axis=2)
    taken = np.take_along_axis(grp, order, axis=2)
    return order.astype(np.uint8), taken


def _nm_interleave(a: np.ndarray) -> np.ndarray:
    """(Np, S) -> (T, S, 16)."""
    np_, s = a.shape
    return np.ascontiguousarray(a.reshape(np_ // NM_LANES, NM_LANES, s).transpose(0, 2, 1))


def _nm_pack_positions(pos: np.ndarray) -> np.ndarray:
    """(Np, S) uint8 in 0..3 -> (T, S//4, 16)."""
    np_, s = pos.shape
    p = pos.reshape(np_, s // 4, 4).astype(np.uint8)
    b = p[:, :, 0] | (p[:, :, 1] << 2) | (p[:, :, 2] << 4) | (p[:, :, 3] << 6)
    return _nm_interleave(b)


def nm_from_dense(
    w: np.ndarray, *, n: int = 2, m: int = 4, mask: np.ndarray | None = None
) -> NMSparse:
    """Builds a float32 `NMSparse` from a dense ``(K, N)`` weight that is already n:m sparse along K.

    Args:
      w: ``(K, N)`` float32 with at most `n` nonzeros (or mask-True entries) per group of `m`
        consecutive K values in every column; K % 4 == 0.
      n: kept values per group, 1 or 2.
      m: group size, 4.
      mask: optional ``(K, N)`` bool of kept entries.

    Raises:
      JaxCompressValueError: a group keeps more than `n` values, or bad n, m, K.
    """
    check_array("w", w, dtype=np.float32, ndim=2, contiguous=False)
    return _nm_build(w, n, m, mask, None)


def nm_from_quantized(
    codes: np.ndarray,
    scales: np.ndarray,
    *,
    n: int = 2,
    m: int = 4,
    mask: np.ndarray | None = None,
) -> NMSparse:
    """Builds a 4-bit `NMSparse`: ``W[k, c] = scales[c] * codes[k, c]``, codes int8 in [-8, 7].

    Args:
      codes: ``(K, N)`` int8 in ``[-8, 7]``, n:m sparse along K (zeros or mask-False dropped).
      scales: ``(N,)`` float32 per output channel.
    """
    check_array("codes", codes, dtype=np.int8, ndim=2, contiguous=False)
    check_array("scales", scales, dtype=np.float32, shape=(codes.shape[1],), contiguous=False)
    check_codes_range("codes", codes, -8, 7)
    return _nm_build(codes, n, m, mask, scales)


def _nm_build(w, n, m, mask, scales):
    n = check_int("n", n, 1, 2)
    m = check_int("m", m, 4, 4)
    k, nout = w.shape
    if k % m:
        raise JaxCompressValueError(f"K={k} must be a multiple of {m=}")
    mask = _check_mask(mask, w.shape)
    keep = (w != 0) if mask is None else mask
    order, taken = _nm_select(w, keep, n, m)
    np_, G, _ = order.shape
    kp = G * m
    wp = np.zeros((np_, kp), w.dtype)
    wp[:nout, :k] = w.T
    vals = np.take_along_axis(wp.reshape(np_, G, m), order.astype(np.int64), axis=2)
    vals = np.where(taken, vals, 0).reshape(np_, G * n)
    pos = _nm_pack_positions(order.reshape(np_, G * n))
    if scales is None:
        return NMSparse(
            shape=(k, nout), n=n, m=m, positions=pos, values=_nm_interleave(vals.astype(np.float32))
        )
    u = (vals.astype(np.int16) + 8).astype(np.uint8)
    s = u.shape[1]
    u2 = u.reshape(np_, s // 2, 2)
    packed = u2[:, :, 0] | (u2[:, :, 1] << 4)
    sc = np.zeros(np_, np.float32)
    sc[:nout] = scales
    return NMSparse(
        shape=(k, nout), n=n, m=m, positions=pos, values=_nm_interleave(packed), bits=4, scales=sc
    )


# ----------------------------------------------------------------------------------------------
# block sparse


@dataclasses.dataclass(frozen=True, eq=False)
class BSRMatrix(_Immutable):
    """Block-sparse ``W (K, N)`` stored as BSR of ``W.T`` with blocks of ``(r, c)`` =
    (output channels, input positions).

    Attributes:
      shape: logical ``(K, N)``; ``N % r == 0`` and ``K % c == 0``.
      block: ``(r, c)``.
      indptr: ``(N // r + 1,)`` int64, monotone, from 0 to nblocks.
      indices: ``(nblocks,)`` int32 block columns in ``[0, K // c)``, strictly increasing within
        a block row.
      blocks: ``(nblocks, r, c)`` float32; ``W.T[br*r + i, bc*c + j] = blocks[p, i, j]``.
    """

    shape: tuple[int, int]
    block: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    blocks: np.ndarray

    def __post_init__(self):
        _freeze(self, "indptr", "indices", "blocks")
        k, n = self.shape
        r, c = self.block
        check_int("block[0]", r, 1)
        check_int("block[1]", c, 1)
        if n % r or k % c:
            raise JaxCompressValueError(f"block={self.block} must divide (N, K)=({n}, {k})")
        check_array("indptr", self.indptr, dtype=np.int64, shape=(n // r + 1,))
        check_array("indices", self.indices, dtype=np.int32, ndim=1)
        nb = self.indices.shape[0]
        check_array("blocks", self.blocks, dtype=np.float32, shape=(nb, r, c))
        if msg := csr_structure_error(self.indptr, self.indices, k // c, "K/c"):  # block columns
            raise JaxCompressValueError(msg)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.blocks.nbytes


def bsr_from_dense(
    w: np.ndarray, *, block: tuple[int, int] = (4, 16), mask: np.ndarray | None = None
) -> BSRMatrix:
    """Builds a `BSRMatrix` keeping every ``(r, c)`` block of ``W.T`` with any nonzero (or mask True).

    Args:
      w: ``(K, N)`` float32.
      block: ``(r, c)`` = (output channels, input positions) per block; must divide (N, K).
      mask: optional ``(K, N)`` bool of kept entries.
    """
    check_array("w", w, dtype=np.float32, ndim=2, contiguous=False)
    if not (isinstance(block, tuple) and len(block) == 2):
        raise JaxCompressTypeError(f"{block=} must be a tuple (r, c)")
    r = check_int("block[0]", block[0], 1)
    c = check_int("block[1]", block[1], 1)
    k, n = w.shape
    if n % r or k % c:
        raise JaxCompressValueError(f"{block=} must divide (N, K)=({n}, {k})")
    mask = _check_mask(mask, w.shape)
    keep = (w != 0) if mask is None else mask
    wt = np.ascontiguousarray(w.T).reshape(n // r, r, k // c, c).transpose(0, 2, 1, 3)
    kb = keep.T.reshape(n // r, r, k // c, c).any(axis=(1, 3))
    br, bc = np.nonzero(kb)
    indptr = np.zeros(n // r + 1, np.int64)
    np.cumsum(kb.sum(1), out=indptr[1:])
    blocks = np.ascontiguousarray(wt[br, bc], dtype=np.float32).reshape(-1, r, c)
    if mask is not None:
        mb = keep.T.reshape(n // r, r, k // c, c).transpose(0, 2, 1, 3)[br, bc].reshape(-1, r, c)
        blocks = np.where(mb, blocks, np.float32(0))
    return BSRMatrix(
        shape=(k, n),
        block=(r, c),
        indptr=indptr,
        indices=bc.astype(np.int32),
        blocks=np.ascontiguousarray(blocks),
    )


# ----------------------------------------------------------------------------------------------
# back to dense (NumPy; exact)


def to_dense(w) -> np.ndarray:
    """Dequantizes / densifies any container to a float32 ``(K, N)`` array.

    Quantized values are evaluated in float32 as ``scale * (code - zero_point)``.
    """
    if isinstance(w, PackedWeight):
        codes, scales, zp = unpack_weight(w)
        k, n = w.shape
        g = w.group_size if w.group_size is not None else max(k, 1)
        s = np.repeat(scales, g, axis=0)[:k]
        c = codes.astype(np.float32)
        if zp is not None:
            c = c - np.repeat(zp.astype(np.float32), g, axis=0)[:k]
        return (s * c).astype(np.float32)
    if isinstance(w, Int8Weight):
        return np.ascontiguousarray(w.data[:, : w.shape[0]].T.astype(np.float32))
    if isinstance(w, CSRMatrix):
        k, n = w.shape
        out = np.zeros((n, k), np.float32)
        rows = np.repeat(np.arange(n), np.diff(w.indptr))
        v = w.values.astype(np.float32)
        if w.scales is not None:
            v = w.scales[rows] * v
        out[rows, w.indices.astype(np.int64)] = v
        return np.ascontiguousarray(out.T)
    if isinstance(w, NMSparse):
        return _nm_dense(w)
    if isinstance(w, BSRMatrix):
        k, n = w.shape
        r, c = w.block
        out = np.zeros((n // r, k // c, r, c), np.float32)
        br = np.repeat(np.arange(n // r), np.diff(w.indptr))
        out[br, w.indices] = w.blocks
        return np.ascontiguousarray(out.transpose(0, 2, 1, 3).reshape(n, k).T)
    raise JaxCompressTypeError(f"to_dense does not know {type(w).__name__}")


def _nm_dense(w: NMSparse) -> np.ndarray:
    k, nout = w.shape
    t, sq, lanes = w.positions.shape
    s = sq * 4
    np_ = t * lanes
    pb = w.positions.transpose(0, 2, 1).reshape(np_, sq)
    pos = np.stack([(pb >> (2 * i)) & 3 for i in range(4)], axis=2).reshape(np_, s)
    if w.bits is None:
        vals = w.values.transpose(0, 2, 1).reshape(np_, s)
    else:
        vb = w.values.transpose(0, 2, 1).reshape(np_, s // 2)
        u = np.stack([vb & 15, vb >> 4], axis=2).reshape(np_, s).astype(np.float32)
        vals = w.scales[:, None] * (u - np.float32(8))
    G = s // w.n
    kp = G * w.m
    out = np.zeros((np_, G, w.m), np.float32)
    gi = np.repeat(np.arange(G), w.n)[None, :].repeat(np_, 0)
    ri = np.arange(np_)[:, None].repeat(s, 1)
    np.add.at(out, (ri, gi, pos.astype(np.int64)), vals.astype(np.float32))
    return np.ascontiguousarray(out.reshape(np_, kp)[:nout, :k].T)
