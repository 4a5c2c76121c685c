"""Bit packing of unsigned integer codes (1..8 bits) and ONNX Runtime's ``MatMulNBits`` layout.

Stream format (`pack_bits`): code ``i`` occupies bits ``[i*b, (i+1)*b)`` of an LSB-first bit
stream; stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``. So for ``b = 4`` code ``2i`` is the
low nibble of byte ``i`` and code ``2i+1`` the high nibble; for ``b = 3`` eight codes fill exactly
three bytes. The stream has ``ceil(n * b / 8)`` bytes; unused high bits of the last byte are zero.

| b | codes / byte | n = 5 gives bytes |
|---|--------------|-------------------|
| 1 | 8            | 1                 |
| 3 | 8/3          | 2 (15 bits)       |
| 4 | 2            | 3                 |
| 8 | 1            | 5                 |
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jaxcompress_kernels._validate import check_array, check_bits, check_codes_range, check_int
from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = [
    "pack_bits",
    "unpack_bits",
    "packed_size",
    "to_matmulnbits",
    "from_matmulnbits",
]

# Below this many codes the parallel kernels are not worth their thread launch.
_PARALLEL_MIN = 1 << 16


def packed_size(n: int, bits: int) -> int:
    """Bytes needed for `n` codes of `bits` bits: ``ceil(n * bits / 8)``."""
    return (int(n) * int(bits) + 7) // 8


# ----------------------------------------------------------------------------------------------
# compiled kernels (no bounds checks: the wrappers validate)


@njit(cache=True, nogil=True)
def _pack_tail(codes, bits, start, out, out_start):
    # Generic bit loop for the last (< 8) codes.
    acc = np.uint64(0)
    nb = 0
    for i in range(start, codes.shape[0]):
        acc |= np.uint64(codes[i]) << np.uint64(nb)
        nb += bits
    j = out_start
    while nb > 0:
        out[j] = np.uint8(acc & np.uint64(0xFF))
        acc >>= np.uint64(8)
        nb -= 8
        j += 1


@njit(cache=True, nogil=True)
def _unpack_tail(packed, bits, start, n, out):
    mask = np.uint64((1 << bits) - 1)
    bitpos = start * bits
    for i in range(start, n):
        byte = bitpos >> 3
        sh = bitpos & 7
        v = np.uint64(packed[byte]) >> np.uint64(sh)
        if sh + bits > 8:
            v |= np.uint64(packed[byte + 1]) << np.uint64(8 - sh)
        out[i] = np.uint8(v & mask)
        bitpos += bits


def _masks(bits):
    """Masks of the shift tree that moves 8 codes (one per byte of a uint64) into 8*bits bits."""
    l1 = (1 << bits) - 1
    l2 = (1 << (2 * bits)) - 1
    l4 = (1 << (4 * bits)) - 1
    m1 = sum(l1 << (16 * i) for i in range(4))
    m2 = l2 | (l2 << 32)
    return m1, m2, l4


@njit(cache=True, nogil=True, inline="always")
def _compress8(w, bits, m1, m2, m4):
    # 8 byte lanes (codes < 2**bits) -> 8*bits contiguous bits, LSB first.
    b = np.uint64(bits)
    t = (w & np.uint64(0x00FF00FF00FF00FF)) | (
        (w >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)
    ) << b
    t = (t & np.uint64(0x0000FFFF0000FFFF)) | (
        ((t >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)) << (np.uint64(2) * b)
    )
    t = (t & np.uint64(0xFFFFFFFF)) | ((t >> np.uint64(32)) << (np.uint64(4) * b))
    return t


@njit(cache=True, nogil=True, inline="always")
def _expand8(v, bits, m1, m2, m4):
    # inverse of _compress8: 8*bits bits -> 8 byte lanes.
    b = np.uint64(bits)
    t = (v & m4) | (((v >> (np.uint64(4) * b)) & m4) << np.uint64(32))
    t = (t & m2) | (((t >> (np.uint64(2) * b)) & m2) << np.uint64(16))
    t = (t & m1) | (((t >> b) & m1) << np.uint64(8))
    return t


@njit(cache=True, nogil=True, parallel=True)
def _pack_words_kernel(words, bits, m1, m2, m4, out2, nchunks):
    """words: (n//8,) uint64 (8 codes each) -> out2 (n//8, bits) bytes."""
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        wv = words[lo:hi]
        ov = out2[lo:hi]
        for i in range(hi - lo):
            t = _compress8(wv[i], bits, m1, m2, m4)
            for j in range(bits):
                ov[i, j] = np.uint8((t >> np.uint64(8 * j)) & np.uint64(0xFF))


@njit(cache=True, nogil=True, parallel=True)
def _pack_words4_kernel(words, m1, m2, m4, out32, nchunks):
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        wv = words[lo:hi]
        ov = out32[lo:hi]
        for i in range(hi - lo):
            ov[i] = np.uint32(_compress8(wv[i], 4, m1, m2, m4))


@njit(cache=True, nogil=True, parallel=True)
def _pack_words2_kernel(words, m1, m2, m4, out16, nchunks):
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        wv = words[lo:hi]
        ov = out16[lo:hi]
        for i in range(hi - lo):
            ov[i] = np.uint16(_compress8(wv[i], 2, m1, m2, m4))


@njit(cache=True, nogil=True, parallel=True)
def _unpack_words_kernel(packed2, bits, m1, m2, m4, words, nchunks):
    """packed2 (n//8, bits) bytes -> words (n//8,) uint64 (8 codes each)."""
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        pv = packed2[lo:hi]
        wv = words[lo:hi]
        for i in range(hi - lo):
            v = np.uint64(0)
            for j in range(bits):
                v |= np.uint64(pv[i, j]) << np.uint64(8 * j)
            wv[i] = _expand8(v, bits, m1, m2, m4)


@njit(cache=True, nogil=True, parallel=True)
def _unpack_words4_kernel(packed32, m1, m2, m4, words, nchunks):
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        pv = packed32[lo:hi]
        wv = words[lo:hi]
        for i in range(hi - lo):
            wv[i] = _expand8(np.uint64(pv[i]), 4, m1, m2, m4)


@njit(cache=True, nogil=True, parallel=True)
def _unpack_words2_kernel(packed16, m1, m2, m4, words, nchunks):
    ng = words.shape[0]
    per = (ng + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(ng, lo + per)
        pv = packed16[lo:hi]
        wv = words[lo:hi]
        for i in range(hi - lo):
            wv[i] = _expand8(np.uint64(pv[i]), 2, m1, m2, m4)


def _nchunks(ng: int) -> int:
    import numba

    if ng < _PARALLEL_MIN // 8:
        return 1
    return min(ng, 4 * numba.get_num_threads())


# ----------------------------------------------------------------------------------------------
# public wrappers


def pack_bits(codes: np.ndarray, bits: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Packs unsigned codes into an LSB-first byte stream.

    Args:
      codes: ``(n,)`` uint8, C-contiguous, every value in ``[0, 2**bits)``.
      bits: code width, 1..8.
      out: optional preallocated ``(ceil(n * bits / 8),)`` uint8 C-contiguous output (saves the
        allocation and its page faults when packing repeatedly).

    Returns:
      ``(ceil(n * bits / 8),)`` uint8 (`out` if given).

    Raises:
      JaxCompressTypeError: `codes` is not a uint8 array.
      JaxCompressValueError: bad `bits`, rank, contiguity or a code out of range.

    Example:
      >>> pack_bits(np.array([1, 2, 3], np.uint8), 4)
      array([33,  3], dtype=uint8)
    """
    bits = check_bits(bits)
    check_array("codes", codes, dtype=np.uint8, ndim=1)
    check_codes_range("codes", codes, 0, (1 << bits) - 1)
    n = codes.shape[0]
    if out is None:
        out = np.empty(packed_size(n, bits), np.uint8)
    else:
        check_array("out", out, dtype=np.uint8, shape=(packed_size(n, bits),))
    if n == 0:
        return out
    if bits == 8:
        out[:] = codes
        return out
    ng = n // 8
    if ng:
        words = codes[: ng * 8].view(np.uint64)
        m1, m2, m4 = (np.uint64(v) for v in _masks(bits))
        nc = _nchunks(ng)
        if bits == 4:
            _pack_words4_kernel(words, m1, m2, m4, out[: ng * 4].view(np.uint32), nc)
        elif bits == 2:
            _pack_words2_kernel(words, m1, m2, m4, out[: ng * 2].view(np.uint16), nc)
        else:
            _pack_words_kernel(words, bits, m1, m2, m4, out[: ng * bits].reshape(ng, bits), nc)
    if n > ng * 8:
        _pack_tail(codes, bits, ng * 8, out, ng * bits)
    return out


def unpack_bits(
    packed: np.ndarray, bits: int, count: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Unpacks `count` codes of `bits` bits from an LSB-first byte stream (inverse of `pack_bits`).

    Args:
      packed: ``(ceil(count * bits / 8),)`` uint8, C-contiguous.
      bits: code width, 1..8.
      count: number of codes to read.
      out: optional preallocated ``(count,)`` uint8 C-contiguous output.

    Returns:
      ``(count,)`` uint8 codes in ``[0, 2**bits)`` (`out` if given).

    Raises:
      JaxCompressValueError: `packed` has the wrong length for `count` and `bits`.
    """
    bits = check_bits(bits)
    count = check_int("count", count, 0)
    check_array("packed", packed, dtype=np.uint8, ndim=1)
    need = packed_size(count, bits)
    if packed.shape[0] != need:
        raise JaxCompressValueError(
            f"packed has {packed.shape[0]} bytes but {count=} codes of {bits=} need {need}"
        )
    if out is None:
        out = np.empty(count, np.uint8)
    else:
        check_array("out", out, dtype=np.uint8, shape=(count,))
    if count == 0:
        return out
    if bits == 8:
        out[:] = packed
        return out
    ng = count // 8
    if ng:
        words = out[: ng * 8].view(np.uint64)
        m1, m2, m4 = (np.uint64(v) for v in _masks(bits))
        nc = _nchunks(ng)
        if bits == 4:
            _unpack_words4_kernel(packed[: ng * 4].view(np.uint32), m1, m2, m4, words, nc)
        elif bits == 2:
            _unpack_words2_kernel(packed[: ng * 2].view(np.uint16), m1, m2, m4, words, nc)
        else:
            _unpack_words_kernel(packed[: ng * bits].reshape(ng, bits), bits, m1, m2, m4, words, nc)
    if count > ng * 8:
        _unpack_tail(packed, bits, ng * 8, count, out)
    return out


# ----------------------------------------------------------------------------------------------
# ONNX Runtime MatMulNBits


def to_matmulnbits(
    codes: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None = None,
    *,
    bits: int,
    block_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Converts unsigned block-quantized weights to ONNX Runtime ``com.microsoft.MatMulNBits`` inputs.

    ``W[k, n] = scales[k // block_size, n] * (codes[k, n] - zero_points[k // block_size, n])``
    (zero point ``2**(bits-1)`` when `zero_points` is None, as ONNX Runtime assumes).

    Args:
      codes: ``(K, N)`` uint8 codes in ``[0, 2**bits)`` (the Flax kernel layout ``(in, out)``).
      scales: ``(ceil(K / block_size), N)`` float32.
      zero_points: optional ``(ceil(K / block_size), N)`` uint8 in ``[0, 2**bits)``.
      bits: 2, 4 or 8.
      block_size: a power of two >= 16.

    Returns:
      ``(B, scales, zero_points)``: ``B`` uint8 ``(N, k_blocks, block_size * bits // 8)`` with the
      codes of each block packed LSB-first along K (for 4 bits: low nibble first), K zero-padded to
      a whole block; ``scales`` float32 ``(N * k_blocks,)``; ``zero_points`` uint8
      ``(N * ceil(k_blocks * bits / 8),)`` packed LSB-first per row, or None.
    """
    bits = check_bits(bits, (2, 4, 8))
    block_size = check_int("block_size", block_size, 16)
    if block_size & (block_size - 1):
        raise JaxCompressValueError(f"{block_size=} must be a power of two")
    check_array("codes", codes, dtype=np.uint8, ndim=2, contiguous=False)
    k, n = codes.shape
    kb = -(-k // block_size)
    check_array("scales", scales, dtype=np.float32, shape=(kb, n), contiguous=False)
    check_codes_range("codes", codes, 0, (1 << bits) - 1)
    if zero_points is not None:
        check_array("zero_points", zero_points, dtype=np.uint8, shape=(kb, n), contiguous=False)
        check_codes_range("zero_points", zero_points, 0, (1 << bits) - 1)
    padded = np.zeros((n, kb * block_size), np.uint8)
    padded[:, :k] = codes.T
    flat = np.ascontiguousarray(padded.reshape(-1))
    blob = block_size * bits // 8
    b = pack_bits(flat, bits).reshape(n, kb, blob)
    s = np.ascontiguousarray(scales.T).reshape(-1)
    zp = None
    if zero_points is not None:
        zrow = packed_size(kb, bits)
        zp = np.zeros((n, zrow), np.uint8)
        zt = np.ascontiguousarray(zero_points.T)
        for i in range(n):
            zp[i] = pack_bits(zt[i], bits)
        zp = zp.reshape(-1)
    return b, s, zp


def from_matmulnbits(
    b: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None = None,
    *,
    k: int,
    bits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inverse of `to_matmulnbits`: returns ``(codes (K, N), scales (k_blocks, N), zero_points)``."""
    bits = check_bits(bits, (2, 4, 8))
    check_array("b", b, dtype=np.uint8, ndim=3)
    n, kb, blob = b.shape
    block_size = blob * 8 // bits
    k = check_int("k", k, 0, kb * block_size)
    if kb != -(-k // block_size) if block_size else kb != 0:
        raise JaxCompressValueError(f"b.shape={b.shape} does not match {k=} and {bits=}")
    check_array("scales", scales, dtype=np.float32, shape=(n * kb,))
    codes = unpack_bits(np.ascontiguousarray(b.reshape(-1)), bits, n * kb * block_size)
    codes = np.ascontiguousarray(codes.reshape(n, kb * block_size)[:, :k].T)
    s = np.ascontiguousarray(scales.reshape(n, kb).T)
    zp = None
    if zero_points is not None:
        zrow = packed_size(kb, bits)
        check_array("zero_points", zero_points, dtype=np.uint8, shape=(n * zrow,))
        zr = zero_points.reshape(n, zrow)
        zp = np.stack([unpack_bits(np.ascontiguousarray(zr[i]), bits, kb) for i in range(n)])
        zp = np.ascontiguousarray(zp.reshape(n, kb).T)
    return codes, s, zp
