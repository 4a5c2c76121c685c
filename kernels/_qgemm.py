"""Packed low-bit matmul for batches of more than a few rows: decode a panel, then a register
microkernel (BLIS style).

``qgemm_accumulate(xp, w, out)`` adds ``xp @ dequant(W)`` to ``out`` for a `PackedWeight` with the
"lanes" layout (4- and 8-bit, see ``formats._lanes_layout``). Each parallel task owns one block
of ``LANE_BLOCK`` = 128 output channels; for each panel of ``KC`` rows of K it

1. decodes the panel once into a per-thread float32 buffer ``pan`` of shape ``(4, KC, 32)``
   (32 KiB for KC = 64: it stays in L1; a 256-row panel in L2 made the decode 3.5x slower):
   strip ``st`` holds channels ``32 st .. 32 st + 31`` of the block, already dequantized,
   ``s * u - s * z`` (scale and zero point folded in, so the inner loop is pure FMA);
2. runs the microkernel over every block of at most ``MR`` = 8 rows of x and every strip: an
   ``MR x 32`` tile of ``out`` kept in 16 ``<16 x float>`` registers while K runs over the panel;
   per K step, two vector loads of the panel, ``MR`` broadcasts of x and ``2 MR`` FMAs.

x is packed once per call as ``(ceil(M / 8), Kp, 8)``: rows cut in ceil(M / 8) blocks of balanced
sizes, a block's rows side by side per k (unused slots zero), so the broadcasts of a K step come
from one cache line. Each weight code is decoded once per call whatever M, and W is read from
memory once. Extra memory: the packed x (the size of x), one panel per thread and, for a last
partial block of channels, an ``M x 128`` tile.

The decode and the microkernel are `intrinsic`s emitting target-independent LLVM vector IR
(``<16 x float>`` SSA accumulators, ``llvm.fmuladd``): on AVX-512 LLVM keeps the tile in 16 zmm
registers and emits ``vbroadcastss`` from memory (load ports only) and ``vfmadd231ps``; on AVX2
two ymm per vector. The previous batch > 4 kernel (decode 4 channels, 4 x 4 register block in a
Numba loop) was ~1.7x slower at batch 64 and ~1.9x at batch 8.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from jaxcompress_kernels._int8x import _rounded_x, int8_x_block
from jaxcompress_kernels._intrinsics import wide_vectors
from jaxcompress_kernels.errors import JaxCompressValueError
from jaxcompress_kernels.formats import LANE_BLOCK, PackedWeight

__all__ = ["qgemm_accumulate", "qgemm_supported", "MR", "KC"]

MR = 8  # rows of x per microkernel tile
NR = 32  # output channels per microkernel tile (two 16-float vectors)
KC = 64  # K rows per decoded panel: 4 x 64 x 32 floats = 32 KiB, stays in L1
_STRIPS = LANE_BLOCK // NR
_PF = 4096  # software prefetch distance of the code stream, bytes (into L2)
_FM = {"reassoc", "contract"}

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_VF = ir.VectorType(_F32, 16)


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _splat(builder, scalar):
    undef = ir.Constant(_VF, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, 16), [0] * 16))


def _fmuladd(builder, a, b, c):
    fnty = ir.FunctionType(_VF, [_VF, _VF, _VF])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fmuladd.v16f32")
    return builder.call(fn, [a, b, c])


def _make_tile(rows: int):
    @intrinsic
    def tile(typingctx, xpk, rb, k0, kc, pan, st, dst, r0, c0):
        arr = types.Array
        ints = (rb, k0, kc, st, r0, c0)
        if not (
            isinstance(xpk, arr)
            and isinstance(pan, arr)
            and isinstance(dst, arr)
            and all(isinstance(i, types.Integer) for i in ints)
            and xpk.dtype == types.float32
            and pan.dtype == types.float32
            and dst.dtype == types.float32
            and xpk.ndim == 3
            and pan.ndim == 3
            and dst.ndim == 2
            and all(a.layout == "C" for a in (xpk, pan, dst))  # raw pointer arithmetic
        ):
            return None
        sig = types.void(xpk, rb, k0, kc, pan, st, dst, r0, c0)

        def codegen(context, builder, signature, args):
            return _tile_codegen(context, builder, signature, args, rows)

        return sig, codegen

    return tile


def _tile_codegen(context, builder, signature, args, rows):
    """dst[r0 + r, c0 : c0 + 32] += sum_{k < kc} xpk[rb, k0 + k, r] * pan[st, k, 0:32]."""
    xty, rbt, k0t, kct, pty, stt, dty, r0t, c0t = signature.args
    xa = context.make_array(xty)(context, builder, args[0])
    pa = context.make_array(pty)(context, builder, args[4])
    da = context.make_array(dty)(context, builder, args[6])
    rb = _as_i64(builder, args[1], rbt)
    k0 = _as_i64(builder, args[2], k0t)
    kc = _as_i64(builder, args[3], kct)
    st = _as_i64(builder, args[5], stt)
    r0 = _as_i64(builder, args[7], r0t)
    c0 = _as_i64(builder, args[8], c0t)
    kp = builder.extract_value(xa.shape, 1)
    xw = builder.extract_value(xa.shape, 2)  # row slots per k (MR)
    kcmax = builder.extract_value(pa.shape, 1)
    ldd = builder.extract_value(da.shape, 1)
    xbase = builder.gep(xa.data, [builder.mul(builder.add(builder.mul(rb, kp), k0), xw)])
    pbase = builder.gep(pa.data, [builder.mul(builder.mul(st, kcmax), _c(NR))])
    zero = ir.Constant(_VF, [0.0] * 16)
    accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(rows)]

    def vload(ptr):
        return builder.load(builder.bitcast(ptr, _VF.as_pointer()), align=4)

    with cgutils.for_range(builder, kc) as loop:
        k = loop.index
        prow = builder.gep(pbase, [builder.mul(k, _c(NR))])
        b0 = vload(prow)
        b1 = vload(builder.gep(prow, [_c(16)]))
        xrow = builder.gep(xbase, [builder.mul(k, xw)])
        for r in range(rows):
            xv = _splat(builder, builder.load(builder.gep(xrow, [_c(r)])))
            a0, a1 = accs[r]
            builder.store(_fmuladd(builder, b0, xv, builder.load(a0)), a0)
            builder.store(_fmuladd(builder, b1, xv, builder.load(a1)), a1)
    for r in range(rows):
        drow = builder.gep(da.data, [builder.add(builder.mul(builder.add(r0, _c(r)), ldd), c0)])
        for h in range(2):
            p = builder.bitcast(builder.gep(drow, [_c(16 * h)]), _VF.as_pointer())
            builder.store(
                builder.fadd(builder.load(p, align=4), builder.load(accs[r][h])), p, align=4
            )
    return context.get_dummy_value()


_tile1 = _make_tile(1)
_tile2 = _make_tile(2)
_tile3 = _make_tile(3)
_tile4 = _make_tile(4)
_tile5 = _make_tile(5)
_tile6 = _make_tile(6)
_tile7 = _make_tile(7)
_tile8 = _make_tile(8)


@njit(cache=True, nogil=True, inline="always")
def _tile(rows, xpk, rb, k0, kc, pan, st, dst, r0, c0):
    if rows == 8:
        _tile8(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 7:
        _tile7(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 6:
        _tile6(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 5:
        _tile5(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 4:
        _tile4(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 3:
        _tile3(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    elif rows == 2:
        _tile2(xpk, rb, k0, kc, pan, st, dst, r0, c0)
    else:
        _tile1(xpk, rb, k0, kc, pan, st, dst, r0, c0)


_I8 = ir.IntType(8)
_V8 = ir.VectorType(_I8, 16)
_VI = ir.VectorType(_I32, 16)


@intrinsic
def _decode_run(typingctx, d, s, zs, b, gi, kk0, nrows, pan, pr0):
    """pan[st, pr0 + r, :] = dequantized rows kk0 .. kk0 + nrows - 1 of group gi, block b, for
    the 4 strips of 32 channels (see module docstring); 4-bit (uint8 d) or 8-bit (int8 d)."""
    arr = types.Array
    ints = (b, gi, kk0, nrows, pr0)
    if not (
        all(isinstance(a, arr) for a in (d, s, zs, pan))
        and all(isinstance(i, types.Integer) for i in ints)
        and d.dtype in (types.uint8, types.int8)
        and d.ndim == 4
        and s.ndim == 3
        and zs.ndim == 3
        and pan.ndim == 3
        and s.dtype == zs.dtype == pan.dtype == types.float32
        and all(a.layout == "C" for a in (d, s, zs, pan))
    ):
        return None
    sig = types.void(d, s, zs, b, gi, kk0, nrows, pan, pr0)
    return sig, _decode_codegen


def _decode_codegen(context, builder, signature, args):
    dty, sty, zty, bt, git, kkt, nrt, pty, prt = signature.args
    four = dty.dtype == types.uint8
    da = context.make_array(dty)(context, builder, args[0])
    sa = context.make_array(sty)(context, builder, args[1])
    za = context.make_array(zty)(context, builder, args[2])
    pa = context.make_array(pty)(context, builder, args[7])
    b = _as_i64(builder, args[3], bt)
    gi = _as_i64(builder, args[4], git)
    kk0 = _as_i64(builder, args[5], kkt)
    nrows = _as_i64(builder, args[6], nrt)
    pr0 = _as_i64(builder, args[8], prt)
    ng = builder.extract_value(da.shape, 1)
    g = builder.extract_value(da.shape, 2)
    h = builder.extract_value(da.shape, 3)  # bytes per row: 64 (4-bit) or 128 (8-bit)
    kcmax = builder.extract_value(pa.shape, 1)
    zn = builder.extract_value(za.shape, 0)
    bg = builder.add(builder.mul(b, ng), gi)
    # scale vectors of the group: 8 x 16 channels
    sbase = builder.gep(sa.data, [builder.mul(bg, _c(LANE_BLOCK))])
    zbase = builder.gep(za.data, [builder.mul(bg, _c(LANE_BLOCK))])

    def vload(ptr, vty):
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)

    svec = [vload(builder.gep(sbase, [_c(16 * q)]), _VF) for q in range(8)]
    # symmetric (zs empty): z = 8 for 4-bit, 0 for centred 8-bit
    zvec = []
    sym = builder.icmp_signed("==", zn, _c(0))
    for q in range(8):
        with builder.if_else(sym) as (then, other):
            with then:
                if four:
                    zsym = builder.fmul(svec[q], ir.Constant(_VF, [8.0] * 16))
                else:
                    zsym = ir.Constant(_VF, [0.0] * 16)
                bb_sym = builder.block
            with other:
                zasym = vload(builder.gep(zbase, [_c(16 * q)]), _VF)
                bb_asym = builder.block
        phi = builder.phi(_VF)
        phi.add_incoming(zsym, bb_sym)
        phi.add_incoming(zasym, bb_asym)
        zvec.append(builder.fsub(ir.Constant(_VF, [-0.0] * 16), phi))  # -s z
    dbase = builder.gep(da.data, [builder.mul(builder.add(builder.mul(bg, g), kk0), h)])
    dbase = builder.bitcast(dbase, _I8.as_pointer())
    pbase = pa.data
    strip = builder.mul(kcmax, _c(NR))  # floats per strip
    with cgutils.for_range(builder, nrows) as loop:
        r = loop.index
        drow = builder.gep(dbase, [builder.mul(r, h)])
        _prefetch(builder, drow, _c(_PF))
        prow = builder.gep(pbase, [builder.mul(builder.add(pr0, r), _c(NR))])
        if not four:
            _prefetch(builder, drow, _c(_PF + 64))

        def store(q, v):  # channel chunk q (16 channels) -> strip q // 2, offset 16 (q % 2)
            w = _fmuladd(builder, v, svec[q], zvec[q])
            off = builder.add(builder.mul(_c(q // 2), strip), _c(16 * (q % 2)))
            ptr = builder.bitcast(builder.gep(prow, [off]), _VF.as_pointer())
            builder.store(w, ptr, align=4)

        if four:
            for j in range(4):
                c = builder.zext(vload(builder.gep(drow, [_c(16 * j)]), _V8), _VI)
                lo = builder.and_(c, ir.Constant(_VI, [15] * 16))
                hi = builder.lshr(c, ir.Constant(_VI, [4] * 16))
                store(j, builder.uitofp(lo, _VF))
                store(4 + j, builder.uitofp(hi, _VF))
        else:
            for q in range(8):
                c = builder.sext(vload(builder.gep(drow, [_c(16 * q)]), _V8), _VI)
                store(q, builder.sitofp(c, _VF))
    return context.get_dummy_value()


def _prefetch(builder, base_i8, offset):
    fnty = ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    ptr = builder.gep(base_i8, [offset])  # may point past the array: a prefetch never faults
    builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 1), ir.Constant(_I32, 1)])


@njit(cache=True, nogil=True)
def _decode(d, s, zs, b, k0, kc, pan):
    """pan[st, k - k0, c] = dequantized W of channel 32 st + c of block b, for k0 <= k < k0 + kc."""
    g = d.shape[2]
    k = k0
    end = k0 + kc
    while k < end:
        gi = k // g
        kk = k - gi * g
        nr = min(g - kk, end - k)
        _decode_run(d, s, zs, b, gi, kk, nr, pan, k - k0)
        k += nr


@njit(cache=True, nogil=True, parallel=True, fastmath=_FM)
def _qgemm_kernel(xpk, lo, d, s, zs, kc, out):
    nb = d.shape[0]
    kp = xpk.shape[1]
    nrb = xpk.shape[0]
    mm = out.shape[0]
    n = out.shape[1]
    for b in prange(nb):
        wide_vectors()
        pan = np.empty((_STRIPS, kc, NR), np.float32)
        c0 = b * LANE_BLOCK
        full = c0 + LANE_BLOCK <= n
        tmp = np.zeros((0 if full else mm, LANE_BLOCK), np.float32)
        for k0 in range(0, kp, kc):
            kcc = min(kc, kp - k0)
            _decode(d, s, zs, b, k0, kcc, pan)
            for rb in range(nrb):
                r0 = lo[rb]
                rows = lo[rb + 1] - r0
                for st in range(_STRIPS):
                    if full:
                        _tile(rows, xpk, rb, k0, kcc, pan, st, out, r0, c0 + st * NR)
                    else:
                        _tile(rows, xpk, rb, k0, kcc, pan, st, tmp, r0, st * NR)
        if not full:
            for m in range(mm):
                for c in range(n - c0):
                    out[m, c0 + c] += tmp[m, c]


def qgemm_supported(w: PackedWeight) -> bool:
    """True if `qgemm_accumulate` runs on `w` (4- or 8-bit weights with the lanes layout)."""
    return w.lanes is not None and w.bits in (4, 8)


def _row_blocks(m: int):
    """Row block rb of x covers rows ``lo[rb]`` to ``lo[rb + 1]``: ceil(M / MR) blocks of
    balanced sizes (M = 9 runs 5 + 4 rows, not 8 + 1: a 1-row tile has 2 accumulators, too few
    to hide the FMA latency)."""
    nrb = -(-m // MR)
    return (np.arange(nrb + 1) * m) // nrb


def pack_x(xp: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(M, Kp) -> (nrb, Kp, MR): the rows of block rb side by side per k, zero slots past them."""
    m, kp = xp.shape
    nrb = lo.shape[0] - 1
    xpk = np.zeros((nrb, kp, MR), np.float32)
    if nrb and m == nrb * MR:
        xpk[:] = xp.reshape(nrb, MR, kp).transpose(0, 2, 1)
    else:
        for rb in range(nrb):
            xpk[rb, :, : lo[rb + 1] - lo[rb]] = xp[lo[rb] : lo[rb + 1]].T
    return xpk


def qgemm_accumulate(
    xp: np.ndarray, w: PackedWeight, out: np.ndarray, compute: str = "float32", kc: int = KC
) -> None:
    """``out += xp @ dequant(W)`` for `qmatmul` batches of more than a few rows.

    Arguments are trusted (the caller, `qmatmul`, has validated them).

    Args:
      xp: ``(M, Kp)`` float32 C-contiguous, x zero-padded to ``w.padded_k``.
      w: a `PackedWeight` with ``qgemm_supported(w)``.
      out: ``(M, N)`` float32 C-contiguous.
      compute: ``"float32"``, or ``"int8"``: x is first rounded like `qmatmul`'s
        ``compute="int8"`` (per block of ``int8_x_block(group_len)``), then the float kernel
        runs on the rounded x. Raises JaxCompressValueError on a non-finite x then.
      kc: K rows per decoded panel (tests use small ones to cover panel edges).
    """
    if kc < 1:
        raise JaxCompressValueError(f"{kc=} must be >= 1")
    d, s, zs = w.lanes
    m, kp = xp.shape
    if m == 0:
        return
    if compute == "int8":
        xp = _rounded_x(xp, int8_x_block(w.group_len))
    elif compute != "float32":
        raise JaxCompressValueError(f"{compute=} must be 'float32' or 'int8'")
    lo = _row_blocks(m)
    _qgemm_kernel(pack_x(xp, lo), lo, d, s, zs, kc, out)
