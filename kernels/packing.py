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

import ctypes
import mmap
import platform

import llvmlite.binding as _llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from jaxcompress_kernels._intrinsics import prefetch, wide_vectors
from jaxcompress_kernels._validate import (
    check_array,
    check_bits,
    check_codes_range,
    check_int,
    check_no_overlap,
)
from jaxcompress_kernels.errors import JaxCompressError, JaxCompressValueError

__all__ = [
    "pack_bits",
    "unpack_bits",
    "packed_size",
    "to_matmulnbits",
    "from_matmulnbits",
]

# Inputs below this many codes are packed on the calling thread: starting the thread pool costs
# more than it saves there (measured: 1M codes in cache, 2 threads were slower than 1).
_PARALLEL_MIN = 1 << 22


def packed_size(n: int, bits: int) -> int:
    """Bytes needed for `n` codes of `bits` bits: ``ceil(n * bits / 8)``."""
    return (int(n) * int(bits) + 7) // 8


# ----------------------------------------------------------------------------------------------
# BMI2 (pext / pdep) and unaligned 8-byte loads / stores


def _host_has_bmi2() -> bool:
    """True when Numba compiles for an x86-64 CPU with BMI2 (pext / pdep)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if numba.config.CPU_NAME:  # a fixed (e.g. portable "generic") target: trust only its features
        return "+bmi2" in (numba.config.CPU_FEATURES or "")
    try:
        return bool(_llvm.get_host_cpu_features().get("bmi2", False))
    except RuntimeError:
        return False


# Read at compile time by the kernels: without BMI2 the pext/pdep kernels are never compiled.
_HAS_BMI2 = _host_has_bmi2()
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


def _bmi2(name):
    @intrinsic
    def op(typingctx, x, m):
        sig = types.uint64(types.uint64, types.uint64)

        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_I64, [_I64, _I64]), name
            )
            return builder.call(fn, list(args))

        return sig, codegen

    return op


# _pext(x, m): the bits of x at the set bits of m, packed to the bottom; _pdep is the inverse.
_pext = _bmi2("llvm.x86.bmi.pext.64")
_pdep = _bmi2("llvm.x86.bmi.pdep.64")


def _byte_ptr(context, builder, signature, args):
    ary = context.make_array(signature.args[0])(context, builder, args[0])
    off = args[1]
    if off.type.width < 64:
        off = builder.sext(off, _I64) if signature.args[1].signed else builder.zext(off, _I64)
    return builder.bitcast(builder.gep(ary.data, [off]), _I64.as_pointer())


@intrinsic
def _load_u64(typingctx, a, off):
    """The 8 bytes ``a[off:off + 8]`` of a uint8 array as a little-endian uint64 (unaligned)."""
    if not (isinstance(a, types.Array) and a.dtype == types.uint8):
        return None
    sig = types.uint64(a, off)

    def codegen(context, builder, signature, args):
        return builder.load(_byte_ptr(context, builder, signature, args), align=1, typ=_I64)

    return sig, codegen


@intrinsic
def _store_u64(typingctx, a, off, v):
    """Writes uint64 `v` little-endian to the 8 bytes ``a[off:off + 8]`` of a uint8 array."""
    if not (isinstance(a, types.Array) and a.dtype == types.uint8):
        return None
    sig = types.void(a, off, types.uint64)

    def codegen(context, builder, signature, args):
        builder.store(args[2], _byte_ptr(context, builder, signature, args), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_nt_u64(typingctx, a, off, v):
    """`_store_u64` as a non-temporal store (``movnti``: no read-for-ownership, bypasses the
    cache); the address must be 8-byte aligned. Follow a run of them with `_sfence()`."""
    if not (isinstance(a, types.Array) and a.dtype == types.uint8):
        return None
    sig = types.void(a, off, types.uint64)

    def codegen(context, builder, signature, args):
        st = builder.store(args[2], _byte_ptr(context, builder, signature, args), align=8)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(_I32, 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _sfence(typingctx):
    """Orders the preceding non-temporal stores before any later store (x86 ``sfence``)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence"
        )
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------------------------
# compiled kernels (no bounds checks: the wrappers validate). Codes are processed in groups of 8
# (one uint64 word of codes <-> `bits` packed bytes); the pack kernels return the OR of every code
# word they read, so the wrapper can reject codes >= 2**bits after one pass over the data. A code
# out of range only garbles output bits: no kernel indexes memory with a code value.

_LANES = 0x0101010101010101  # one bit per byte of a uint64
_PF_WORDS16 = 2048  # 4 KiB of uint16 code pairs


@njit(cache=True, nogil=True)
def _pack_tail(codes, bits, start, out, out_start):
    # Generic bit loop for the last (< 8) codes; returns the OR of the codes.
    acc = np.uint64(0)
    seen = np.uint64(0)
    nb = 0
    for i in range(start, codes.shape[0]):
        c = np.uint64(codes[i])
        seen |= c
        acc |= c << np.uint64(nb)
        nb += bits
    j = out_start
    while nb > 0:
        out[j] = np.uint8(acc & np.uint64(0xFF))
        acc >>= np.uint64(8)
        nb -= 8
        j += 1
    return seen


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
    # 8 byte lanes (codes < 2**bits) -> 8*bits contiguous bits, LSB first (portable pext).
    b = np.uint64(bits)
    w = w & (m1 | (m1 << np.uint64(8)))
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
    # inverse of _compress8: 8*bits bits -> 8 byte lanes (portable pdep).
    b = np.uint64(bits)
    t = (v & m4) | (((v >> (np.uint64(4) * b)) & m4) << np.uint64(32))
    t = (t & m2) | (((t >> (np.uint64(2) * b)) & m2) << np.uint64(16))
    t = (t & m1) | (((t >> b) & m1) << np.uint64(8))
    return t


@njit(cache=True, nogil=True)
def _pack4_run(w16, out, lo, hi):
    # 4 bits: code pair (one uint16) -> one byte; contiguous, so LLVM vectorizes it (vpmovwb).
    # Blocks of 4 KiB of codes, each prefetching the block 4 KiB ahead: keeps the input stream
    # going across the page faults of a fresh output (64M codes, 1 thread: 11.1 -> 9.9 ms).
    wide_vectors()
    acc = np.uint16(0)
    for b0 in range(lo, hi, _PF_WORDS16):
        for k in range(0, _PF_WORDS16, 32):
            prefetch(w16, b0 + _PF_WORDS16 + k)
        wv = w16[b0 : min(hi, b0 + _PF_WORDS16)]  # from 0: LLVM drops the negative-index wrap
        ov = out[b0 : min(hi, b0 + _PF_WORDS16)]
        for i in range(wv.shape[0]):
            w = wv[i]
            acc = np.uint16(acc | w)  # truncation keeps the reduction in 16-bit lanes
            ov[i] = np.uint8(w | (w >> np.uint16(4)))
    return np.uint64(acc)


@njit(cache=True, nogil=True)
def _pack2_run(w32, out, lo, hi):
    # 2 bits: 4 codes (one uint32) -> one byte.
    wide_vectors()
    acc = np.uint32(0)
    wv = w32[lo:hi]
    ov = out[lo:hi]
    for i in range(wv.shape[0]):
        w = wv[i]
        acc = np.uint32(acc | w)
        t = w | (w >> np.uint32(6))
        ov[i] = np.uint8(t | (t >> np.uint32(12)))
    return np.uint64(acc)


@njit(cache=True, nogil=True)
def _packx_run(w64, out, bits, lo, hi):
    # any width with BMI2: pext 8 codes -> 8*bits bits, one unaligned 8-byte store at bits*i
    # (its upper bytes are rewritten by the next groups). The last groups of [lo, hi) store
    # exactly `bits` bytes so no store crosses into another chunk's bytes.
    mask = np.uint64(((1 << bits) - 1) * _LANES)
    acc = np.uint64(0)
    wv = w64[lo:hi]
    ov = out[lo * bits : hi * bits]
    ng = wv.shape[0]
    stop = max(0, ng - (bits + 7) // bits + 1)
    for i in range(stop):
        w = wv[i]
        acc |= w
        _store_u64(ov, i * bits, _pext(w, mask))
    for i in range(stop, ng):
        w = wv[i]
        acc |= w
        t = _pext(w, mask)
        for j in range(bits):
            ov[i * bits + j] = np.uint8((t >> np.uint64(8 * j)) & np.uint64(0xFF))
    return acc


@njit(cache=True, nogil=True)
def _packs_run(w64, out, bits, m1, m2, m4, lo, hi):
    # any width without BMI2: shift tree, byte stores.
    acc = np.uint64(0)
    wv = w64[lo:hi]
    ov = out[lo * bits : hi * bits]
    for i in range(wv.shape[0]):
        w = wv[i]
        acc |= w
        t = _compress8(w, bits, m1, m2, m4)
        for j in range(bits):
            ov[i * bits + j] = np.uint8((t >> np.uint64(8 * j)) & np.uint64(0xFF))
    return acc


@njit(cache=True, nogil=True)
def _unpack4_run(packed, o16, lo, hi):
    wide_vectors()
    pv = packed[lo:hi]
    ov = o16[lo:hi]
    for i in range(pv.shape[0]):
        p = np.uint16(pv[i])
        ov[i] = np.uint16((p & np.uint16(15)) | ((p >> np.uint16(4)) << np.uint16(8)))


@njit(cache=True, nogil=True)
def _unpack2_run(packed, o32, lo, hi):
    wide_vectors()
    pv = packed[lo:hi]
    ov = o32[lo:hi]
    for i in range(pv.shape[0]):
        p = np.uint32(pv[i])
        ov[i] = np.uint32(
            (p & np.uint32(3))
            | ((p & np.uint32(0xC)) << np.uint32(6))
            | ((p & np.uint32(0x30)) << np.uint32(12))
            | ((p & np.uint32(0xC0)) << np.uint32(18))
        )


@njit(cache=True, nogil=True)
def _unpackx_run(packed, o64, bits, lo, hi):
    # any width with BMI2: one unaligned 8-byte load at bits*i, pdep to 8 byte lanes. Groups whose
    # 8-byte load would run past the end of `packed` assemble their `bits` bytes one by one.
    mask = np.uint64(((1 << bits) - 1) * _LANES)
    ov = o64[lo:hi]
    pv = packed[lo * bits :]
    ng = ov.shape[0]
    stop = min(ng, max(0, (pv.shape[0] - 8) // bits + 1))
    for i in range(stop):
        ov[i] = _pdep(_load_u64(pv, i * bits), mask)
    for i in range(stop, ng):
        v = np.uint64(0)
        for j in range(bits):
            v |= np.uint64(pv[i * bits + j]) << np.uint64(8 * j)
        ov[i] = _pdep(v, mask)


@njit(cache=True, nogil=True)
def _unpacks_run(packed, o64, bits, m1, m2, m4, lo, hi):
    # any width without BMI2: byte loads, shift tree.
    ov = o64[lo:hi]
    pv = packed[lo * bits : hi * bits]
    for i in range(ov.shape[0]):
        v = np.uint64(0)
        for j in range(bits):
            v |= np.uint64(pv[i * bits + j]) << np.uint64(8 * j)
        ov[i] = _expand8(v, bits, m1, m2, m4)


# Parallel drivers: chunk c of `nchunks` covers [lo, hi) of the kernel's index space (words for the
# 2-/4-bit kernels, 8-code groups for the others). The word views are made by NumPy in the wrapper,
# so a misaligned `codes` / `out` gets an unaligned-typed view (byte-aligned loads), never UB.


@njit(cache=True, nogil=True, inline="always")
def _chunk(c, n, nchunks):
    per = (n + nchunks - 1) // nchunks
    lo = min(n, c * per)
    return lo, min(n, lo + per)


@njit(cache=True, nogil=True)
def _or_all(accs):
    acc = np.uint64(0)
    for a in accs:
        acc |= a
    return acc


@njit(cache=True, nogil=True, parallel=True)
def _pack4_par(w16, out, nchunks):
    accs = np.zeros(nchunks, np.uint64)
    for c in prange(nchunks):
        lo, hi = _chunk(c, w16.shape[0], nchunks)
        accs[c] = _pack4_run(w16, out, lo, hi)
    return _or_all(accs)


@njit(cache=True, nogil=True, parallel=True)
def _pack2_par(w32, out, nchunks):
    accs = np.zeros(nchunks, np.uint64)
    for c in prange(nchunks):
        lo, hi = _chunk(c, w32.shape[0], nchunks)
        accs[c] = _pack2_run(w32, out, lo, hi)
    return _or_all(accs)


@njit(cache=True, nogil=True, parallel=True)
def _packx_par(w64, out, bits, nchunks):
    accs = np.zeros(nchunks, np.uint64)
    for c in prange(nchunks):
        lo, hi = _chunk(c, w64.shape[0], nchunks)
        accs[c] = _packx_run(w64, out, bits, lo, hi)
    return _or_all(accs)


@njit(cache=True, nogil=True, parallel=True)
def _packs_par(w64, out, bits, m1, m2, m4, nchunks):
    accs = np.zeros(nchunks, np.uint64)
    for c in prange(nchunks):
        lo, hi = _chunk(c, w64.shape[0], nchunks)
        accs[c] = _packs_run(w64, out, bits, m1, m2, m4, lo, hi)
    return _or_all(accs)


@njit(cache=True, nogil=True, parallel=True)
def _unpack4_par(packed, o16, nchunks):
    for c in prange(nchunks):
        lo, hi = _chunk(c, o16.shape[0], nchunks)
        _unpack4_run(packed, o16, lo, hi)


@njit(cache=True, nogil=True, parallel=True)
def _unpack2_par(packed, o32, nchunks):
    for c in prange(nchunks):
        lo, hi = _chunk(c, o32.shape[0], nchunks)
        _unpack2_run(packed, o32, lo, hi)


@njit(cache=True, nogil=True, parallel=True)
def _unpackx_par(packed, o64, bits, nchunks):
    for c in prange(nchunks):
        lo, hi = _chunk(c, o64.shape[0], nchunks)
        _unpackx_run(packed, o64, bits, lo, hi)


@njit(cache=True, nogil=True, parallel=True)
def _unpacks_par(packed, o64, bits, m1, m2, m4, nchunks):
    for c in prange(nchunks):
        lo, hi = _chunk(c, o64.shape[0], nchunks)
        _unpacks_run(packed, o64, bits, m1, m2, m4, lo, hi)


def _kernels(bits: int, pack: bool, words: np.ndarray, portable: bool = False):
    """(serial run, parallel driver, word view, extra args) for one width; `words` is uint8."""
    if bits == 4:
        run, par = (_pack4_run, _pack4_par) if pack else (_unpack4_run, _unpack4_par)
        return run, par, words.view(np.uint16), ()
    if bits == 2:
        run, par = (_pack2_run, _pack2_par) if pack else (_unpack2_run, _unpack2_par)
        return run, par, words.view(np.uint32), ()
    if _HAS_BMI2 and not portable:
        run, par = (_packx_run, _packx_par) if pack else (_unpackx_run, _unpackx_par)
        return run, par, words.view(np.uint64), (bits,)
    run, par = (_packs_run, _packs_par) if pack else (_unpacks_run, _unpacks_par)
    return run, par, words.view(np.uint64), (bits, *_MASKS[bits])


@njit(cache=True, nogil=True)
def _unpack_nt_run(packed, o8, bits, lo, hi):
    # BMI2 unpack of groups [lo, hi) with non-temporal 8-byte stores (o8 8-byte aligned): for
    # large outputs whose pages are already mapped, skipping the read-for-ownership of every output
    # line halves the DRAM traffic.
    mask = np.uint64(((1 << bits) - 1) * _LANES)
    ov = o8[lo * 8 : hi * 8]
    pv = packed[lo * bits :]
    ng = hi - lo
    stop = min(ng, max(0, (pv.shape[0] - 8) // bits + 1))
    for i in range(stop):
        _store_nt_u64(ov, 8 * i, _pdep(_load_u64(pv, i * bits), mask))
    _sfence()
    for i in range(stop, ng):
        v = np.uint64(0)
        for j in range(bits):
            v |= np.uint64(pv[i * bits + j]) << np.uint64(8 * j)
        _store_u64(ov, 8 * i, _pdep(v, mask))


@njit(cache=True, nogil=True, parallel=True)
def _unpack_nt_par(packed, o8, bits, nchunks):
    for c in prange(nchunks):
        lo, hi = _chunk(c, o8.shape[0] // 8, nchunks)
        _unpack_nt_run(packed, o8, bits, lo, hi)


# Outputs of at least this many codes passed as `out=` (already mapped) are unpacked with
# non-temporal stores. Measured on 64M codes, 1 thread: 4.0 ms vs 8.3 ms with ordinary stores into
# a touched buffer, but 21 ms vs 12 ms into fresh pages (the kernel's zeroing left them in cache),
# hence the residency check.
_NT_MIN = 1 << 24


def _mincore():
    try:
        fn = ctypes.CDLL(None, use_errno=True).mincore
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_MINCORE = _mincore() if _HAS_BMI2 else None


def _mapped(a: np.ndarray) -> bool:
    """True if the first, middle and last pages of `a` are resident (i.e. `a` was written before)."""
    if _MINCORE is None or a.nbytes == 0:
        return False
    page = mmap.PAGESIZE
    vec = ctypes.create_string_buffer(1)
    start = a.ctypes.data
    for addr in (start, start + a.nbytes // 2, start + a.nbytes - 1):
        if _MINCORE(addr & ~(page - 1), page, vec) != 0 or not vec.raw[0] & 1:
            return False
    return True


def _nchunks(n: int) -> int:
    """Parallel chunks for `n` codes; 1 means: run on the calling thread."""
    if n < _PARALLEL_MIN:
        return 1
    return 4 * numba.get_num_threads()  # a few chunks per thread: balance on a shared machine


_MASKS = {b: tuple(np.uint64(v) for v in _masks(b)) for b in range(1, 9)}


# ----------------------------------------------------------------------------------------------
# public wrappers


def pack_bits(codes: np.ndarray, bits: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Packs unsigned codes into an LSB-first byte stream.

    Args:
      codes: ``(n,)`` uint8, C-contiguous, every value in ``[0, 2**bits)``.
      bits: code width, 1..8.
      out: optional preallocated ``(ceil(n * bits / 8),)`` uint8 C-contiguous output (saves the
        allocation and its page faults when packing repeatedly). If `codes` has a value out of
        range the error is raised after the packing pass, so `out` then holds garbage.

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
    hi = (1 << bits) - 1
    n = codes.shape[0]
    size = packed_size(n, bits)
    if out is None:
        out = np.empty(size, np.uint8)
    else:
        try:
            check_array("out", out, dtype=np.uint8, shape=(size,), writeable=True)
            check_no_overlap("out", out, "codes", codes)
        except JaxCompressError:
            check_codes_range("codes", codes, 0, hi)  # a bad code is reported first
            raise
    if n == 0:
        return out
    if bits == 8:  # every uint8 is in range
        out[:] = codes
        return out
    ng = n // 8
    acc = np.uint64(0)
    if ng:
        run, par, src, extra = _kernels(bits, True, codes if n == ng * 8 else codes[: ng * 8])
        nc = _nchunks(n)
        if nc > 1:
            acc = par(src, out, *extra, nc)
        else:
            acc = run(src, out, *extra, 0, src.shape[0])
    if n > ng * 8:
        acc |= _pack_tail(codes, bits, ng * 8, out, ng * bits)
    if int(acc) & ~(hi * _LANES) & (2**64 - 1):
        check_codes_range("codes", codes, 0, hi)
        raise JaxCompressValueError(f"codes has a code outside the allowed range [0, {hi}]")
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
    given = out is not None
    if out is None:
        out = np.empty(count, np.uint8)
    else:
        check_array("out", out, dtype=np.uint8, shape=(count,), writeable=True)
        check_no_overlap("out", out, "packed", packed)
    if count == 0:
        return out
    if bits == 8:
        out[:] = packed
        return out
    ng = count // 8
    if ng:
        o8 = out if count == ng * 8 else out[: ng * 8]
        nc = _nchunks(count)
        if (
            given
            and count >= _NT_MIN
            and out.ctypes.data % 8 == 0
            and _mapped(out)  # implies BMI2 (_MINCORE is None without it)
        ):
            if nc > 1:
                _unpack_nt_par(packed, o8, bits, nc)
            else:
                _unpack_nt_run(packed, o8, bits, 0, ng)
        else:
            run, par, dst, extra = _kernels(bits, False, o8)
            if nc > 1:
                par(packed, dst, *extra, nc)
            else:
                run(packed, dst, *extra, 0, dst.shape[0])
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
