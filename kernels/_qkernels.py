"""Full-integer kernels (INT8_SPEC.md): int8 x int8 -> int32 GEMM with per-channel fixed-point
requantization, depthwise convolution, pooling, residual add, quantize / dequantize.

Every kernel computes exactly the NumPy reference of `jaxcompress_kernels.format.quant` (integer
arithmetic: the results are equal bit for bit, whichever path runs).

GEMM (``qlinear``, ``qconv2d`` through im2col or directly for 1x1 convolutions):
``y[m, n] = clip(y_zp + ((acc[m, n] * mult[n] + 2**(r[n] - 1)) >> r[n]), qmin, qmax)`` with
``acc = sum_k x[m, k] w[k, n] + beff[n]`` and ``beff = bias - x_zp * sum_k w[k, n]`` folded at
load (and ``beff * mult`` into the rounding constant). Two interchangeable paths:

- **VNNI** (CPUs with ``avx512_vnni``): ``vpdpbusd`` (16 int32 lanes, each += the sum of 4
  unsigned-byte x signed-byte products) through inline assembly in a Numba `intrinsic` (LLVM IR
  ``asm``; declaring the ``llvm.x86.avx512.vpdp*`` intrinsics crashed Numba before). The unsigned
  operand is ``x + 128`` (the int8 bytes xor 0x80, done on each broadcast word), so ``beff`` also
  subtracts ``128 * sum_k w[k, n]``. Weights are packed at load as ``(N/16, K/4, 16, 4)`` int8
  (16 output channels x 4 consecutive k per 64-byte vector). A register tile is ``MR`` rows of x x
  ``NR`` blocks of 16 channels (``1 x 4`` for a batch-1 linear layer, ``4 x 2`` for convolutions).
- **portable** (any CPU): per output an int32 dot product over k of sign-extended bytes, written
  so LLVM's loop vectoriser emits ``vpmaddwd`` (see `_int8dot`), weights as ``(N, Kp)``.

Convolutions do not go through im2col on the VNNI path (`QConvDirect`): groups-1 ``qconv2d`` with
horizontal dilation 1 is an implicit GEMM over a private padded copy of the input, stored as
unsigned codes once per call, so the tile broadcasts each 4-byte word straight from memory (no
per-word xor) and every kernel row is one contiguous run of ``kw * C`` bytes (rounded up to whole
words, with zero weights for the extra bytes). 1x1 stride-1 convolutions with ``C % 4 == 0`` read
the activations in place (`QGemmWeight`). Depthwise convolution (`QDepthwise`) reads a padded,
phase-split int16 copy of ``x - x_zp`` so that each tap of a whole output row is one contiguous
vector loop for any stride; 3x3 taps are summed in one int32 loop, then requantized.
`qmlp_chain` runs ``[quantize] -> qlinear* -> [dequantize]`` in one compiled call (weights,
channel parameters and intermediate rows in flat arrays): a small MLP costs one dispatch.

Kernels that allocate nothing compile with ``_nrt=False``: Numba then emits no reference counting
for the array views they take (row slices, reshapes), whose atomic increments and decrements
through indirect calls otherwise cost more than a small layer's arithmetic (measured: 181 ->
86 ns per 16 x 16 batch-1 GEMM call).

Both accumulate in int32 without overflow for ``K <= 65536`` (``255 * 127 * 65536 < 2**31``) and
widen to int64 for the bias and the requantization.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jaxcompress_kernels._intrinsics import emit_vpdpbusd_tile, wide_vectors
from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = [
    "HAS_VNNI",
    "QGemmWeight",
    "QConvDirect",
    "qmlp_chain",
    "QDepthwise",
    "pack_qgemm",
    "qgemm",
    "im2col_q",
    "depthwise_q",
    "maxpool_q",
    "avgpool_q",
    "mean_q",
    "add_q",
    "quantize_q",
    "dequantize_q",
]


def _host_has_vnni() -> bool:
    try:
        f = _llvm.get_host_cpu_features()
        return bool(f.get("avx512vnni", False)) and bool(f.get("avx512bw", False))
    except Exception:  # pragma: no cover - feature query unavailable
        return False


HAS_VNNI = _host_has_vnni()
if HAS_VNNI:
    # inline assembly needs the host's asm parser in the JIT (Numba initialises only the target
    # and its printer)
    try:
        _llvm.initialize_native_asmparser()
    except Exception:  # pragma: no cover - cannot parse asm: use the portable path
        HAS_VNNI = False

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)
_V64 = ir.VectorType(_I64, 16)


def _splat(builder, v, ty=None):
    """A 16-lane vector of the scalar ``v`` (int64 lanes unless `ty`)."""
    ty = ty or _V64
    return builder.shuffle_vector(
        builder.insert_element(ir.Constant(ty, ir.Undefined), v, ir.Constant(_I32, 0)),
        ir.Constant(ty, ir.Undefined),
        ir.Constant(ir.VectorType(_I32, 16), [0] * 16),
    )


def _epilogue(context, builder, signature, args, slots, yrows, cbases, mr, nr, first):
    """The tiles' shared epilogue, in vectors: ``(acc * mult + rnd) >> shift + y_zp`` (``rnd``
    holds ``beff * mult + 2**(shift - 1)``: the bias is folded in), clamped to ``[qmin, qmax]``,
    stored as int8 straight to the output rows (lanes at or past the output's column count masked
    off). ``args[first:first + 8]`` are ``beff`` (unused), ``mult, rnd, shift`` (int64 arrays,
    one entry per padded channel), ``y_zp, qmin, qmax`` and the output ``y``."""
    chan = [
        context.make_array(signature.args[i])(context, builder, args[i]).data
        for i in range(first, first + 4)
    ]
    consts = []
    for i in range(first + 4, first + 7):
        v = args[i]
        consts.append(_splat(builder, builder.sext(v, _I64) if v.type.width < 64 else v))
    yzpv, qminv, qmaxv = consts
    ya = context.make_array(signature.args[first + 7])(context, builder, args[first + 7])
    ncolv = _splat(builder, builder.extract_value(ya.shape, 1))
    i8p = ir.IntType(8).as_pointer()
    mstore = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(
            ir.VoidType(),
            [ir.VectorType(ir.IntType(8), 16), i8p, _I32, ir.VectorType(ir.IntType(1), 16)],
        ),
        "llvm.masked.store.v16i8.p0",
    )
    v64p = _V64.as_pointer()
    for b in range(nr):
        mv, rv, sv = (
            builder.load(builder.bitcast(builder.gep(p, [cbases[b]]), v64p), align=8)
            for p in chan[1:]
        )
        lanes = builder.add(_splat(builder, cbases[b]), ir.Constant(_V64, list(range(16))))
        mask = builder.icmp_signed("<", lanes, ncolv)
        for r in range(mr):
            a = builder.sext(builder.load(slots[r * nr + b]), _V64)
            a = builder.ashr(builder.add(builder.mul(a, mv), rv), sv)
            a = builder.add(a, yzpv)
            a = builder.select(builder.icmp_signed("<", a, qminv), qminv, a)
            a = builder.select(builder.icmp_signed(">", a, qmaxv), qmaxv, a)
            a8 = builder.trunc(a, ir.VectorType(ir.IntType(8), 16))
            # clamped rows and blocks recompute the last one: same values
            dst = builder.bitcast(builder.gep(yrows[r], [cbases[b]]), i8p)
            builder.call(mstore, [a8, dst, ir.Constant(_I32, 1), mask])


def _make_tile(mr: int, nr: int, interleaved: bool = False):
    """An intrinsic ``tile(xw, m0, w32, nb0, kq, out)``: ``out[r * nr * 16 + b * 16 + j] =
    sum_kb dpbusd(xw[min(m0 + r, M - 1), kb] ^ 0x80808080, w32[min(nb0 + b, NB - 1), kb, j])``
    for ``r < mr``, ``b < nr`` (rows and blocks past the end are clamped: computed, unused).

    `interleaved`: the weight holds groups of ``nr`` blocks interleaved per k-quad (``(NB / nr,
    KQ, nr, 16)``, NB and the channel parameters padded to whole groups, no clamping): a tile
    then reads its weights as one contiguous stream (a batch-1 GEMV, whose weights stream from
    L2 once per call, gains from the hardware prefetcher)."""

    @intrinsic
    def tile(typingctx, xw, m0, w32, nb0, kq, out, beff, mult, rnd, shift, yzp, qmin, qmax, y):
        sig = types.void(xw, m0, w32, nb0, kq, out, beff, mult, rnd, shift, yzp, qmin, qmax, y)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            wa = context.make_array(signature.args[2])(context, builder, args[2])
            m0v, nb0v, kqv = (
                builder.sext(a, _I64) if a.type.width < 64 else a
                for a in (args[1], args[3], args[4])
            )
            ya = context.make_array(signature.args[13])(context, builder, args[13])
            ncols = builder.extract_value(ya.shape, 1)
            mrows = builder.extract_value(xa.shape, 0)
            nblocks = builder.extract_value(wa.shape, 0)
            xstride = builder.extract_value(xa.shape, 1)  # int32 words per row
            one = ir.Constant(_I64, 1)
            xrows = []
            yrows = []
            for r in range(mr):
                row = builder.add(m0v, ir.Constant(_I64, r))
                last = builder.sub(mrows, one)
                row = builder.select(builder.icmp_signed("<", row, last), row, last)
                xrows.append(builder.gep(xa.data, [builder.mul(row, xstride)]))
                yrows.append(builder.gep(ya.data, [builder.mul(row, ncols)]))
            wbases = []
            cbases = []
            for b in range(nr):
                blk = builder.add(nb0v, ir.Constant(_I64, b))
                if interleaved:
                    off = builder.add(builder.mul(nb0v, kqv), ir.Constant(_I64, b))
                    off = builder.mul(off, ir.Constant(_I64, 16))
                else:
                    last = builder.sub(nblocks, one)
                    blk = builder.select(builder.icmp_signed("<", blk, last), blk, last)
                    off = builder.mul(builder.mul(blk, kqv), ir.Constant(_I64, 16))
                wbases.append(builder.gep(wa.data, [off]))
                cbases.append(builder.mul(blk, ir.Constant(_I64, 16)))
            kstride = ir.Constant(_I64, 16 * nr if interleaved else 16)
            # accumulators live in stack slots that SROA promotes to zmm registers
            with builder.goto_entry_block():
                slots = [builder.alloca(_V16) for _ in range(mr * nr)]
            for s in slots:
                builder.store(ir.Constant(_V16, None), s)
            flip = ir.Constant(_I32, 0x80808080 - (1 << 32))
            vptr = _V16.as_pointer()

            with cgutils.for_range(builder, kqv) as loop:
                kb = loop.index
                wv = [
                    builder.load(
                        builder.bitcast(builder.gep(wb, [builder.mul(kb, kstride)]), vptr),
                        align=4,
                    )
                    for wb in wbases
                ]
                xw = [
                    builder.xor(builder.load(builder.gep(xrows[r], [kb]), align=1), flip)
                    for r in range(mr)
                ]
                emit_vpdpbusd_tile(builder, xw, wv, slots, "vnni")
            _epilogue(context, builder, signature, args, slots, yrows, cbases, mr, nr, 6)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_dconv_tile(mr: int, nr: int):
    """The direct-convolution twin of `_make_tile` (no im2col): ``tile(xu, pix, segs, w32, m0,
    nb0, kqs, beff, mult, rnd, shift, yzp, qmin, qmax, y)``. Row ``m`` of the implicit GEMM reads
    ``len(segs)`` runs of ``kqs`` 4-byte words from the padded, already unsigned (``x ^ 0x80``)
    input ``xu``, the run ``s`` starting at byte ``pix[m] + segs[s]`` (one kernel row: ``kw * C``
    contiguous bytes, rounded up to whole words; the weights of the extra bytes are zero). Each
    word is broadcast straight from memory (no per-word xor as in `_make_tile`)."""

    @intrinsic
    def tile(
        typingctx, xu, pix, segs, w32, m0, nb0, kqs, beff, mult, rnd, shift, yzp, qmin, qmax, y
    ):
        sig = types.void(
            xu, pix, segs, w32, m0, nb0, kqs, beff, mult, rnd, shift, yzp, qmin, qmax, y
        )

        def codegen(context, builder, signature, args):
            xa, pa, sa, wa = (
                context.make_array(signature.args[i])(context, builder, args[i]) for i in range(4)
            )
            m0v, nb0v, kqsv = (builder.sext(a, _I64) if a.type.width < 64 else a for a in args[4:7])
            ya = context.make_array(signature.args[14])(context, builder, args[14])
            ncols = builder.extract_value(ya.shape, 1)
            mrows = builder.extract_value(ya.shape, 0)
            nsegs = builder.extract_value(sa.shape, 0)
            nblocks = builder.extract_value(wa.shape, 0)
            kqall = builder.mul(nsegs, kqsv)
            one = ir.Constant(_I64, 1)
            i32p = _I32.as_pointer()
            xrows = []
            yrows = []
            for r in range(mr):
                row = builder.add(m0v, ir.Constant(_I64, r))
                last = builder.sub(mrows, one)
                row = builder.select(builder.icmp_signed("<", row, last), row, last)
                off = builder.load(builder.gep(pa.data, [row]))
                xrows.append(builder.gep(xa.data, [off]))
                yrows.append(builder.gep(ya.data, [builder.mul(row, ncols)]))
            wbases = []
            cbases = []
            for b in range(nr):
                blk = builder.add(nb0v, ir.Constant(_I64, b))
                last = builder.sub(nblocks, one)
                blk = builder.select(builder.icmp_signed("<", blk, last), blk, last)
                off = builder.mul(builder.mul(blk, kqall), ir.Constant(_I64, 16))
                wbases.append(builder.gep(wa.data, [off]))
                cbases.append(builder.mul(blk, ir.Constant(_I64, 16)))
            with builder.goto_entry_block():
                slots = [builder.alloca(_V16) for _ in range(mr * nr)]
            for s in slots:
                builder.store(ir.Constant(_V16, None), s)
            vptr = _V16.as_pointer()
            c16 = ir.Constant(_I64, 16)
            with cgutils.for_range(builder, nsegs) as sloop:
                seg = sloop.index
                soff = builder.load(builder.gep(sa.data, [seg]))
                xs = [builder.bitcast(builder.gep(xr, [soff]), i32p) for xr in xrows]
                wseg = [
                    builder.gep(wb, [builder.mul(builder.mul(seg, kqsv), c16)]) for wb in wbases
                ]
                with cgutils.for_range(builder, kqsv) as loop:
                    kb = loop.index
                    wv = [
                        builder.load(
                            builder.bitcast(builder.gep(wb, [builder.mul(kb, c16)]), vptr),
                            align=4,
                        )
                        for wb in wseg
                    ]
                    xw = [builder.load(builder.gep(xs[r], [kb]), align=1) for r in range(mr)]
                    emit_vpdpbusd_tile(builder, xw, wv, slots, "vnni")
            _epilogue(context, builder, signature, args, slots, yrows, cbases, mr, nr, 7)
            return context.get_dummy_value()

        return sig, codegen

    return tile


@njit(cache=True, nogil=True, _nrt=False)
def _pad_xor(xv, geo, xu):
    """Copies the int8 image bytes ``xv`` (flat NHWC, viewed as uint8) into the interior of the
    padded buffer ``xu`` as unsigned codes (``x ^ 0x80``); the border keeps the zero point's
    code, written once at load. ``geo = [B, H, W * C, Hp, Wp * C, pt, pl * C]``."""
    bsz, hh, wc, hp, wpc, pt, plc = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6]
    flip = np.uint8(0x80)
    for b in range(bsz):
        for iy in range(hh):
            src = np.uint64((b * hh + iy) * wc)
            dst = np.uint64((b * hp + iy + pt) * wpc + plc)
            for t in range(np.uint64(wc)):
                xu[dst + t] = np.uint8(xv[src + t] ^ flip)


def _make_dconv_driver(mr, nr):
    tile_fn = _make_dconv_tile(mr, nr)

    @njit(cache=False, nogil=True, _nrt=False)
    def drive(xv, xu, geo, pix, segs, w32, chan, prm, out):
        # prm: n, y_zp, qmin, qmax, words per kernel row
        _pad_xor(xv, geo, xu)
        yzp, qmin, qmax, kqs = prm[1], prm[2], prm[3], prm[4]
        beff, mult, rnd, shift = chan[0], chan[1], chan[2], chan[3]
        mm = out.shape[0]
        nbk = w32.shape[0]
        for nb0 in range(0, nbk, nr):
            for m0 in range(0, mm, mr):
                tile_fn(
                    xu, pix, segs, w32, m0, nb0, kqs, beff, mult, rnd, shift, yzp, qmin, qmax, out
                )

    return drive


_DCONV_DRIVERS = {}


def _dconv_driver(mr, nr):
    if (mr, nr) not in _DCONV_DRIVERS:
        _DCONV_DRIVERS[mr, nr] = _make_dconv_driver(mr, nr)
    return _DCONV_DRIVERS[mr, nr]


def _make_driver(mr, nr, interleaved=False):
    tile_fn = _make_tile(mr, nr, interleaved)

    @njit(cache=False, nogil=True, _nrt=False)
    def drive(xw, w32, chan, prm, out, o8):
        # chan: (4, Np) int64 rows beff, mult, rnd, shift; prm: n, y_zp, qmin, qmax (packed:
        # every argument costs time in Numba's dispatcher on each call)
        yzp, qmin, qmax = prm[1], prm[2], prm[3]
        beff, mult, rnd, shift = chan[0], chan[1], chan[2], chan[3]
        mm = xw.shape[0]
        kq = xw.shape[1]
        nbk = w32.shape[0]
        for nb0 in range(0, nbk, nr):
            for m0 in range(0, mm, mr):
                tile_fn(xw, m0, w32, nb0, kq, o8, beff, mult, rnd, shift, yzp, qmin, qmax, out)

    @njit(cache=False, nogil=True, _nrt=False)
    def conv_drive(x, geo, cols, w32, chan, prm, out, o8):
        im2col_q(x, geo, cols)
        drive(cols.view(np.int32), w32, chan, prm, out, o8)

    return drive, conv_drive


# (rows of x, blocks of 16 channels) per register tile
_DRIVERS = {}
_CONV_DRIVERS = {}


def _drivers(mr, nr, interleaved=False):
    key = (mr, nr, interleaved)
    if key not in _DRIVERS:
        _DRIVERS[key], _CONV_DRIVERS[key] = _make_driver(mr, nr, interleaved)
    return _DRIVERS[key], _CONV_DRIVERS[key]


@njit(cache=True, nogil=True, fastmath=True, _nrt=False)
def _gemm_portable(x, wt, chan, prm, out):
    n, yzp, qmin, qmax = prm[0], prm[1], prm[2], prm[3]
    mm = x.shape[0]
    kp = wt.shape[1]
    for m in range(mm):
        xm = x[m]
        for c in range(n):
            wn = wt[c]
            a = np.int32(0)
            for k in range(kp):
                a = np.int32(a + np.int32(xm[k]) * np.int32(wn[k]))
            v = yzp + ((np.int64(a) * chan[1, c] + chan[2, c]) >> chan[3, c])
            out[m, c] = np.int8(max(qmin, min(qmax, v)))


@njit(cache=True, nogil=True, _nrt=False)
def _conv_portable(x, geo, cols, wt, chan, prm, out):
    im2col_q(x, geo, cols)
    _gemm_portable(cols, wt, chan, prm, out)


class QGemmWeight:
    """A qlinear / qconv2d weight prepared for `qgemm`: packed codes, the folded bias and the
    per-channel multipliers.

    Attributes:
      k, n: logical sizes; kp: K padded to a multiple of 4 (x rows must hold kp bytes).
      vnni: which path `qgemm` runs.
      chan: ``(4, Np)`` int64 rows ``beff``, ``mult``, ``beff * mult + 2**(shift - 1)`` (mod
        2**64), ``shift`` (``Np``: N padded to whole 16-lane blocks).
    """

    def __init__(self, w2, bias, x_zp, mult, shift, *, vnni: bool):
        w2 = np.asarray(w2, np.int8)
        self.k, self.n = k, n = w2.shape
        self.kp = kp = -(-k // 4) * 4
        self.vnni = bool(vnni)
        wsum = w2.astype(np.int64).sum(0)
        b = np.zeros(n, np.int64) if bias is None else np.asarray(bias, np.int64)
        wpad = np.zeros((kp, n), np.int8)
        wpad[:k] = w2
        np_ = -(-n // 16) * 16
        if self.vnni:
            wp = np.zeros((kp, np_), np.int8)
            wp[:, :n] = wpad
            # (NB, KQ, 16, 4): block, k-quad, channel, k within the quad
            packed = wp.reshape(kp // 4, 4, np_ // 16, 16).transpose(2, 0, 3, 1)
            self.w32 = np.ascontiguousarray(packed).view(np.int32).reshape(np_ // 16, kp // 4, 16)
            beff = b - (int(x_zp) + 128) * wsum
        else:
            self.wt = np.ascontiguousarray(wpad.T)
            beff = b - int(x_zp) * wsum
        chan = np.zeros((4, np_), np.int64)
        chan[3] = 1
        chan[0, :n] = beff
        chan[1, :n] = np.asarray(mult, np.int64)
        chan[3, :n] = np.asarray(shift, np.int64)
        # the bias folded into the rounding constant: (acc + beff) * m + rnd = acc * m + (beff * m
        # + rnd) in int64 arithmetic modulo 2**64 (numpy and LLVM wrap), exact because the true
        # value fits: |acc + beff| < 2**31 (the int32 accumulator), m < 2**31, rnd <= 2**61
        chan[2] = chan[0] * chan[1] + np.left_shift(np.int64(1), chan[3] - 1)
        self.chan = chan
        self.o8 = np.zeros(4 * 4 * 16, np.int8)

    @property
    def nbytes(self) -> int:
        w = self.w32 if self.vnni else self.wt
        return int(w.nbytes + self.chan.nbytes)

    def _prm(self, y_zp, qmin, qmax):
        return np.array([self.n, y_zp, qmin, qmax], np.int64)

    def _tiles(self, rows):
        if rows < 4:
            return _drivers(1, 4)
        return _drivers(4, 2) if self.w32.shape[0] > 1 else _drivers(4, 1)

    def bind(self, x, out, y_zp, qmin, qmax):
        """A zero-argument closure computing ``out = qgemm(x)`` (arguments bound once)."""
        prm = self._prm(y_zp, qmin, qmax)
        if not self.vnni:
            wt, chan = self.wt, self.chan
            return lambda: _gemm_portable(x, wt, chan, prm, out)
        fn = self._tiles(x.shape[0])[0]
        xw, w32, chan, o8 = x.view(np.int32), self.w32, self.chan, self.o8
        return lambda: fn(xw, w32, chan, prm, out, o8)

    def bind_conv(self, x, geo, cols, out, y_zp, qmin, qmax):
        """As `bind`, for ``im2col_q(x, geo, cols)`` then the GEMM on ``cols`` (one call)."""
        prm = self._prm(y_zp, qmin, qmax)
        if not self.vnni:
            wt, chan = self.wt, self.chan
            return lambda: _conv_portable(x, geo, cols, wt, chan, prm, out)
        fn = self._tiles(cols.shape[0])[1]
        w32, chan, o8 = self.w32, self.chan, self.o8
        return lambda: fn(x, geo, cols, w32, chan, prm, out, o8)


def pack_qgemm(w2, bias, x_zp, mult, shift, *, vnni=None) -> QGemmWeight:
    """Prepares an int8 ``(K, N)`` weight (values in [-127, 127]) for `qgemm` (``vnni=None``:
    the host's best path)."""
    return QGemmWeight(w2, bias, x_zp, mult, shift, vnni=HAS_VNNI if vnni is None else vnni)


class QConvDirect:
    """A ``qconv2d`` (groups 1, horizontal dilation 1) prepared for the VNNI direct convolution:
    an implicit GEMM over a private zero-point-padded copy of the input (no im2col).

    Per call: the input is copied into the padded buffer as unsigned codes (``x ^ 0x80``; the
    border holds the zero point's code, written once here), then register tiles of ``mr`` output
    pixels x ``nr`` blocks of 16 channels accumulate ``kh`` runs of ``ceil(kw * C / 4)`` words
    per pixel (the weights of each kernel row are padded with zeros to whole words, so bytes read
    past a window's right edge count for nothing). Bias, zero points and the ``+128`` of the
    unsigned operand are folded into ``beff`` as in `QGemmWeight`.

    Attributes:
      k: words of one output pixel's reduction (``kh * rowlen / 4``); mr, nr: the tile.
    """

    def __init__(self, wq, bias, x_zp, mult, shift, x_shape, out_shape, strides, dilation, pads):
        kh, kw, c, n = (int(d) for d in wq.shape)
        bsz, hh, ww, cin = (int(d) for d in x_shape)
        _, oh, ow, cout = (int(d) for d in out_shape)
        (sh, sw), (dh, dw) = strides, dilation
        (pt, pb), (pl, pr) = pads
        if cin != c or cout != n or dw != 1 or min(pt, pb, pl, pr) < 0:
            raise JaxCompressValueError(
                f"direct int8 conv: unsupported geometry (weight {wq.shape}, input {x_shape}, "
                f"dilation {dilation}, pads {pads})"
            )
        hp, wp = hh + pt + pb, ww + pl + pr
        if (oh - 1) * sh + (kh - 1) * dh >= hp or (ow - 1) * sw + kw > wp:
            raise JaxCompressValueError(
                f"direct int8 conv: output {out_shape} does not fit input {x_shape} with pads {pads}"
            )
        rowlen = -(-kw * c // 4) * 4
        wd = np.zeros((kh, rowlen, n), np.int8)
        wd[:, : kw * c] = np.asarray(wq, np.int8).reshape(kh, kw * c, n)
        g = QGemmWeight(wd.reshape(kh * rowlen, n), bias, x_zp, mult, shift, vnni=True)
        self.w32, self.chan = g.w32, g.chan
        self.n = n
        self.k = kh * rowlen // 4
        size = bsz * hp * wp * c
        self.xu = np.full(size + 64, (int(x_zp) + 128) & 0xFF, np.uint8)
        b_, oy, ox = np.meshgrid(np.arange(bsz), np.arange(oh), np.arange(ow), indexing="ij")
        self.pix = np.ascontiguousarray(
            (((b_ * hp + oy * sh) * wp + ox * sw) * c).reshape(-1), np.int64
        )
        self.segs = np.arange(kh, dtype=np.int64) * (dh * wp * c)
        # every byte a tile reads lies in the buffer (Numba does no bounds checks)
        if int(self.pix[-1] + self.segs[-1]) + rowlen > self.xu.shape[0]:
            raise JaxCompressValueError("direct int8 conv: padded buffer too small")  # unreachable
        self.geo = np.array([bsz, hh, ww * c, hp, wp * c, pt, pl * c], np.int64)
        self.rowwords = rowlen // 4
        nb = self.w32.shape[0]
        self.mr, self.nr = (8, 1) if nb == 1 else (4, 2) if nb == 2 else (4, 2)

    @property
    def nbytes(self) -> int:
        return int(self.w32.nbytes + self.chan.nbytes + self.xu.nbytes + self.pix.nbytes)

    def bind(self, x, out2, y_zp, qmin, qmax, tile=None):
        """A zero-argument closure computing ``out2 (B*OH*OW, N) = qconv2d(x)``."""
        mr, nr = tile or (self.mr, self.nr)
        fn = _dconv_driver(mr, nr)
        prm = np.array([self.n, y_zp, qmin, qmax, self.rowwords], np.int64)
        xv = x.reshape(-1).view(np.uint8)
        xu, geo, pix, segs, w32, chan = self.xu, self.geo, self.pix, self.segs, self.w32, self.chan
        return lambda: fn(xv, xu, geo, pix, segs, w32, chan, prm, out2)


_LP = 11  # int64 words per layer in a chain's header


@njit(cache=True, nogil=True, _nrt=False)
def _chain_quantize(x, b0, hdr):
    s = np.float32(hdr[1:2].view(np.float64)[0])
    zp = hdr[2]
    k0 = x.shape[1]
    for m in range(x.shape[0]):
        quantize_q(x[m], s, zp, b0[m, :k0])


@njit(cache=True, nogil=True, _nrt=False)
def _chain_copy(x, b0, hdr):
    for m in range(x.shape[0]):
        for k in range(x.shape[1]):
            b0[m, k] = x[m, k]


@njit(cache=True, nogil=True, _nrt=False)
def _chain_dequantize(yq, y, hdr, run):
    """(run=False) where the last layer writes: the int8 buffer; (run=True) dequantizes it."""
    if run:
        s = np.float32(hdr[3:4].view(np.float64)[0])
        zp = hdr[4]
        for m in range(y.shape[0]):
            dequantize_q(yq[m], s, zp, y[m])
    return yq


@njit(cache=True, nogil=True, _nrt=False)
def _chain_int8_out(yq, y, hdr, run):
    """The last layer writes the int8 output itself."""
    return y


def _make_chain(layer, pre, post):
    @njit(cache=False, nogil=True, _nrt=False)
    def chain(x, wall, call, ball, y):
        # a few flat arrays: every array argument costs ~0.1 us in Numba's dispatcher on each
        # call. call = [nl, x_scale (float64 bits), x_zp, y_scale (bits), y_zp, layer rows...,
        # channel parameters]; a layer row: [n, y_zp, qmin, qmax, weight offset, NB, KQ, chan
        # offset, Np, buffer offset, Kp]; the last buffer in ball (int8 output before
        # dequantize) has offset call[5 + _LP * nl].
        mm = y.shape[0]
        nl = call[0]
        hdr = call[:5]
        lp = call[5 : 5 + _LP * nl].reshape((nl, _LP))
        b0 = ball[lp[0, 9] : lp[0, 9] + mm * lp[0, 10]].reshape((mm, lp[0, 10]))
        pre(x, b0, hdr)
        nlast = lp[nl - 1, 0]
        yo = call[5 + _LP * nl]
        yq = ball[yo : yo + mm * nlast].reshape((mm, nlast))
        for li in range(nl):
            p = lp[li]
            src = ball[p[9] : p[9] + mm * p[10]].reshape((mm, p[10]))
            w = wall[p[4] : p[4] + p[5] * p[6] * 16].reshape((p[5], p[6], 16))
            chan = call[p[7] : p[7] + 4 * p[8]].reshape((4, p[8]))
            if li < nl - 1:
                q = lp[li + 1]
                layer(src, w, chan, p, ball[q[9] : q[9] + mm * q[10]].reshape((mm, q[10])))
            else:
                layer(src, w, chan, p, post(yq, y, hdr, False))
        post(yq, y, hdr, True)

    return chain


_CHAINS = {}


def _chain_tile(rows: int) -> tuple[int, int]:
    return (1, 4) if rows < 4 else (4, 2)


def _chain_layer(vnni: bool, rows: int):
    if not vnni:
        if "portable" not in _CHAINS:

            @njit(cache=False, nogil=True, _nrt=False)
            def layer(x, w, chan, prm, out):
                # w: (N, Kp64 / 64, 16) int32 view of the (N, Kp64) int8 weight
                wt = w.reshape((w.shape[0], -1)).view(np.int8)
                _gemm_portable(x, wt[:, : prm[10]], chan, prm, out)

            _CHAINS["portable"] = layer
        return _CHAINS["portable"]
    tile = _chain_tile(rows)
    if tile not in _CHAINS:
        drive = _drivers(*tile, True)[0]

        @njit(cache=False, nogil=True, _nrt=False)
        def layer(x, w32, chan, prm, out):
            drive(x.view(np.int32), w32, chan, prm, out, x[0])

        _CHAINS[tile] = layer
    return _CHAINS[tile]


def _chain_kernel(vnni: bool, rows: int, has_q: bool, has_dq: bool):
    key = (vnni, rows < 4, has_q, has_dq)
    if key not in _CHAINS:
        _CHAINS[key] = _make_chain(
            _chain_layer(vnni, rows),
            _chain_quantize if has_q else _chain_copy,
            _chain_dequantize if has_dq else _chain_int8_out,
        )
    return _CHAINS[key]


def qmlp_chain(layers, x, y, quant_in=None, dequant_out=None):
    """One closure running ``[quantize] -> qlinear* -> [dequantize]`` in one compiled call.

    Args:
      layers: ``[(QGemmWeight, y_zp, qmin, qmax)]``, each layer's ``k`` the previous one's ``n``,
        all on the same path (VNNI or portable).
      x: ``(M, K_0)`` float32 when `quant_in` = ``(scale, zero_point)`` is given, else int8.
      y: ``(M, N_last)`` float32 when `dequant_out` = ``(scale, zero_point)`` is given, else int8.

    Weights, channel parameters and the intermediate activations (``(M, Kp)`` each; columns past
    a layer's N hold clamped values that the next layer's zero weight rows ignore) are copied
    into one flat array each. Arithmetic as `qgemm`, `quantize_q`, `dequantize_q`: bit for bit
    the separate steps."""
    ws_ = [w for w, *_ in layers]
    vnni = ws_[0].vnni
    if any(w.vnni != vnni for w in ws_) or any(
        a.n != b.k for a, b in zip(ws_, ws_[1:], strict=False)
    ):
        raise JaxCompressValueError("qmlp_chain: layers do not chain")
    mm = x.shape[0]
    if x.shape != (mm, ws_[0].k) or y.shape != (mm, ws_[-1].n):
        raise JaxCompressValueError(f"qmlp_chain: x {x.shape} / y {y.shape} do not fit the layers")
    if x.dtype != (np.float32 if quant_in else np.int8) or y.dtype != (
        np.float32 if dequant_out else np.int8
    ):
        raise JaxCompressValueError("qmlp_chain: x / y dtypes do not fit quant_in / dequant_out")
    wparts, cparts, lp = [], [], []
    woff = coff = boff = 0
    nr = _chain_tile(mm)[1]
    for w, yz, lo, hi in layers:
        chan = w.chan
        if vnni:  # groups of nr blocks interleaved per k-quad (see `_make_tile`)
            nb, kq = w.w32.shape[0], w.w32.shape[1]
            ng = -(-nb // nr)
            w32 = np.zeros((ng * nr, kq, 16), np.int32)
            w32[:nb] = w.w32
            wv = np.ascontiguousarray(w32.reshape(ng, nr, kq, 16).transpose(0, 2, 1, 3))
            wv = wv.reshape(ng * nr, kq, 16)
            chan = np.zeros((4, ng * nr * 16), np.int64)
            chan[:, : w.chan.shape[1]] = w.chan
            chan[3, w.chan.shape[1] :] = 1
            chan[2, w.chan.shape[1] :] = 1
        else:  # (N, Kp) int8 padded to whole 64-byte rows, as an int32 (N, Kp / 64, 16) view
            k64 = -(-w.kp // 64) * 64
            w8 = np.zeros((w.n, k64), np.int8)
            w8[:, : w.kp] = w.wt
            wv = w8.view(np.int32).reshape(w.n, k64 // 64, 16)
        nb, kq = wv.shape[0], wv.shape[1]
        np_ = chan.shape[1]
        lp.append([w.n, yz, lo, hi, woff, nb, kq, coff, np_, boff, w.kp])
        wparts.append(wv.reshape(-1))
        cparts.append(chan.reshape(-1))
        woff += wv.size
        coff += chan.size
        boff += -(-mm * w.kp // 64) * 64
    nl = len(layers)
    yoff = boff
    boff += -(-mm * ws_[-1].n // 64) * 64
    head = 5 + _LP * nl + 1
    lp = np.array(lp, np.int64)
    lp[:, 7] += head
    qi = quant_in or (1.0, 0)
    qo = dequant_out or (1.0, 0)
    hdr = np.array([nl, 0, qi[1], 0, qo[1]], np.int64)
    hdr[1:2] = np.array([float(qi[0])], np.float64).view(np.int64)
    hdr[3:4] = np.array([float(qo[0])], np.float64).view(np.int64)
    call = np.concatenate([hdr, lp.reshape(-1), np.array([yoff], np.int64), *cparts])
    wall = np.concatenate(wparts)
    ball = np.zeros(boff, np.int8)
    fn = _chain_kernel(vnni, mm, bool(quant_in), bool(dequant_out))
    return lambda: fn(x, wall, call, ball, y)


def qgemm(x, w: QGemmWeight, y_zp, qmin, qmax, out):
    """``out (M, N) int8 = requant(x (M, Kp) int8 @ W + beff)`` (see the module docstring).

    ``x`` must be C-contiguous int8 with ``w.kp`` columns (bytes past K are multiplied by zero
    weights). No checks: the runtime's plan guarantees the shapes.
    """
    w.bind(x, out, y_zp, qmin, qmax)()


# ---------------------------------------------------------------------------------------------
# convolution helpers, pooling, add, quantize / dequantize


_COLUMN_RUN = 32


@njit(cache=True, nogil=True, _nrt=False)
def _im2col_columns(
    xf, bsz, hh, ww, cin, kh, kw, sh, sw, dh, dw, pt, pl, c0, cg, zp8, oh, ow, cf, ncol
):
    for b in range(bsz):
        for oy in range(oh):
            rowbase = (b * oh + oy) * ow
            for i in range(kh):
                iy = oy * sh - pt + i * dh
                for j in range(kw):
                    off = j * dw - pl
                    # ox with 0 <= ox * sw + off < ww
                    lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                    hi = 0 if ww - off <= 0 else min(ow, (ww - off + sw - 1) // sw)
                    hi = max(hi, lo)
                    if iy < 0 or iy >= hh:
                        lo = hi = ow
                    step = np.uint64(sw * cin)
                    nc = np.uint64(ncol)
                    for c in range(cg):
                        col = (i * kw + j) * cg + c
                        d = np.uint64(rowbase * ncol + col)
                        for ox in range(np.uint64(lo)):
                            cf[d + ox * nc] = zp8
                        if hi > lo:
                            src = np.uint64(((b * hh + iy) * ww + off + lo * sw) * cin + c0 + c)
                            dl = d + np.uint64(lo) * nc
                            for t in range(np.uint64(hi - lo)):
                                cf[dl + t * nc] = xf[src + t * step]
                        for ox in range(np.uint64(hi), np.uint64(ow)):
                            cf[d + ox * nc] = zp8


@njit(cache=True, nogil=True, _nrt=False)
def im2col_q(x, geo, cols):
    """``cols[(b, oy, ox), (i, j, c)] = x[b, oy*sh - pt + i*dh, ox*sw - pl + j*dw, c0 + c]``
    (``zp`` outside the image); columns past ``kh * kw * cg`` are left as they are.
    ``geo = [kh, kw, sh, sw, dh, dw, pt, pl, c0, cg, zp, oh, ow]`` (int64).

    Flat offsets (no per-element multi-dimensional indexing); a window row that lies inside
    the image with ``dw == 1`` and all channels is one contiguous run of ``kw * cg`` bytes."""
    kh, kw, sh, sw, dh, dw, pt, pl = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6], geo[7]
    c0, cg, zp, oh, ow = geo[8], geo[9], geo[10], geo[11], geo[12]
    bsz, hh, ww, cin = x.shape
    xf = x.reshape(-1)
    ncol = cols.shape[1]
    cf = cols.reshape(-1)
    run = kw * cg
    contiguous = dw == 1 and cg == cin
    zp8 = np.int8(zp)
    if run < _COLUMN_RUN:
        # short window rows (few channels): copying them one by one costs a memcpy call each,
        # so fill column by column instead, along ox (strided, no calls)
        _im2col_columns(
            xf, bsz, hh, ww, cin, kh, kw, sh, sw, dh, dw, pt, pl, c0, cg, zp8, oh, ow, cf, ncol
        )
        return
    row = 0
    for b in range(bsz):
        for oy in range(oh):
            for ox in range(ow):
                dst = row * ncol
                ix0 = ox * sw - pl
                inside_x = ix0 >= 0 and ix0 + (kw - 1) * dw < ww
                for i in range(kh):
                    iy = oy * sh - pt + i * dh
                    if iy < 0 or iy >= hh:
                        for t in range(run):
                            cf[dst + t] = zp8
                    elif contiguous and inside_x:
                        # unsigned offsets: no negative-index wraparound, the copy vectorises
                        src = np.uint64(((b * hh + iy) * ww + ix0) * cin)
                        du = np.uint64(dst)
                        for t in range(np.uint64(run)):
                            cf[du + t] = xf[src + t]
                    else:
                        base = (b * hh + iy) * ww
                        for j in range(kw):
                            ix = ix0 + j * dw
                            d = dst + j * cg
                            if ix < 0 or ix >= ww:
                                for c in range(cg):
                                    cf[d + c] = zp8
                            else:
                                src = (base + ix) * cin + c0
                                for c in range(cg):
                                    cf[d + c] = xf[src + c]
                    dst += run
                row += 1


@njit(cache=True, nogil=True, fastmath=True)
def depthwise_q(x, wt, chant, prm, out):
    """Depthwise conv (``groups == C_in``, channel multiplier 1), one output row at a time.

    ``wt`` ``(KH * KW, OW * C)`` int32: each tap's weights tiled along the output row;
    ``chant`` ``(4, OW * C)`` int64: ``beff`` (the bias), ``mult``, ``2**(shift - 1)``, ``shift``
    tiled the same way; ``prm = [y_zp, qmin, qmax, x_zp, sh, sw, dh, dw, pt, pl, kw]``. For stride 1
    a tap adds one contiguous run of ``x`` to the row accumulator (long vector loops even for 8
    channels); padding contributes 0. int32 products and sums (exact: ``|x - zp| <= 255``,
    ``|w| <= 127``)."""
    yzp, qmin, qmax, x_zp = prm[0], prm[1], prm[2], prm[3]
    sh, sw, dh, dw, pt, pl = prm[4], prm[5], prm[6], prm[7], prm[8], prm[9]
    bsz, hh, ww, cc = x.shape
    _, oh, ow, _ = out.shape
    kw = prm[10]
    kh = wt.shape[0] // kw
    zp32 = np.int32(x_zp)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    row = ow * cc
    acc = np.empty(row, np.int32)
    for b in range(bsz):
        for oy in range(oh):
            for t in range(row):
                acc[t] = 0
            for i in range(kh):
                iy = oy * sh - pt + i * dh
                if iy < 0 or iy >= hh:
                    continue
                for j in range(kw):
                    off = j * dw - pl
                    # ox with 0 <= ox * sw + off < ww
                    lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                    hi = 0 if ww - off <= 0 else min(ow, (ww - off + sw - 1) // sw)
                    if hi <= lo:
                        continue
                    wrow = wt[i * kw + j]
                    base = (b * hh + iy) * ww
                    if sw == 1:
                        src = np.uint64((base + off) * cc)
                        for t in range(np.uint64(lo * cc), np.uint64(hi * cc)):
                            d = np.int32(np.int32(xf[src + t]) - zp32)
                            acc[t] = np.int32(acc[t] + d * wrow[t])
                    else:
                        for ox in range(lo, hi):
                            src = np.uint64((base + ox * sw + off) * cc)
                            dst = np.uint64(ox * cc)
                            for c in range(np.uint64(cc)):
                                d = np.int32(np.int32(xf[src + c]) - zp32)
                                acc[dst + c] = np.int32(acc[dst + c] + d * wrow[dst + c])
            ob = np.uint64((b * oh + oy) * row)
            for t in range(np.uint64(row)):
                a = np.int64(acc[t]) + chant[0, t]
                v = yzp + ((a * chant[1, t] + chant[2, t]) >> chant[3, t])
                of[ob + t] = np.int8(max(qmin, min(qmax, v)))


@njit(cache=True, nogil=True, fastmath=True, _nrt=False)
def _depthwise_rows3x3(xs, geo, wt, chant, prm, acc, of):
    """The 3x3 case of `_depthwise_phase`: the nine taps summed in one int32 vector loop per
    output row (one store per output instead of one load and store per tap), then the
    requantization (512-bit vectors)."""
    wide_vectors()
    bsz, hp, wq, cc = geo[0], geo[4], geo[5], geo[3]
    sh, sw, dh, dw = geo[6], geo[7], geo[8], geo[9]
    oh, ow = geo[14], geo[15]
    yzp, qmin, qmax = prm[0], prm[1], prm[2]
    row = np.uint64(ow * cc)
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = (
        wt[0],
        wt[1],
        wt[2],
        wt[3],
        wt[4],
        wt[5],
        wt[6],
        wt[7],
        wt[8],
    )
    beff, mult, rnd, shift = chant[0], chant[1], chant[2], chant[3]
    c0 = np.uint64((0 * dw) % sw * wq * cc + (0 * dw) // sw * cc)
    c1 = np.uint64((1 * dw) % sw * wq * cc + (1 * dw) // sw * cc)
    c2 = np.uint64((2 * dw) % sw * wq * cc + (2 * dw) // sw * cc)
    for b in range(bsz):
        for oy in range(oh):
            r0 = np.uint64((b * hp + oy * sh) * sw * wq * cc)
            r1 = np.uint64((b * hp + oy * sh + dh) * sw * wq * cc)
            r2 = np.uint64((b * hp + oy * sh + 2 * dh) * sw * wq * cc)
            a0, a1, a2 = r0 + c0, r0 + c1, r0 + c2
            b0, b1, b2 = r1 + c0, r1 + c1, r1 + c2
            d0, d1, d2 = r2 + c0, r2 + c1, r2 + c2
            ob = np.uint64((b * oh + oy) * ow * cc)
            for t in range(row):
                # int32 at every step (Numba widens int32 products to int64, which would
                # de-vectorise); exact: nine products of |x - zp| <= 255 and |w| <= 127
                a = np.int32(np.int32(xs[a0 + t]) * np.int32(w0[t]))
                a = np.int32(a + np.int32(xs[a1 + t]) * np.int32(w1[t]))
                a = np.int32(a + np.int32(xs[a2 + t]) * np.int32(w2[t]))
                a = np.int32(a + np.int32(xs[b0 + t]) * np.int32(w3[t]))
                a = np.int32(a + np.int32(xs[b1 + t]) * np.int32(w4[t]))
                a = np.int32(a + np.int32(xs[b2 + t]) * np.int32(w5[t]))
                a = np.int32(a + np.int32(xs[d0 + t]) * np.int32(w6[t]))
                a = np.int32(a + np.int32(xs[d1 + t]) * np.int32(w7[t]))
                acc[t] = np.int32(a + np.int32(xs[d2 + t]) * np.int32(w8[t]))
            # the requantization in its own loop: int64 lanes would narrow the loop above
            for t in range(row):
                a = np.int64(acc[t]) + beff[t]
                v = yzp + ((a * mult[t] + rnd[t]) >> shift[t])
                of[ob + t] = np.int8(max(qmin, min(qmax, v)))


@njit(cache=True, nogil=True, fastmath=True, _nrt=False)
def _depthwise_phase(xv, xs, geo, wt, chant, prm, acc, out):
    """`QDepthwise`'s kernel: copy, then one output row at a time, each tap one contiguous run.

    ``xs`` ``(B, Hp, sw, Wq, C)`` int16 (flat): ``x - x_zp`` at padded column ``q * sw + p`` in
    phase ``p``, 0 in the border (written once at load); with stride ``sw`` the tap ``(i, j)`` of
    a whole output row then reads ``OW * C`` consecutive values (phase ``j * dw % sw``, from
    column ``j * dw // sw``), for any stride. ``wt`` ``(KH * KW, OW * C)`` int16 and ``chant``
    ``(4, OW * C)`` int64 (``beff``, ``mult``, ``2**(shift - 1)``, ``shift``) tiled along the row.
    ``geo = [B, H, W, C, Hp, Wq, sh, sw, dh, dw, pt, pl, KH, KW, OH, OW]``, ``prm = [y_zp, qmin,
    qmax, x_zp]``. int32 products and sums (exact: ``|x - zp| <= 255``, ``|w| <= 127``)."""
    bsz, hh, ww, cc, hp, wq = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    sh, sw, dh, dw, pt, pl = geo[6], geo[7], geo[8], geo[9], geo[10], geo[11]
    kh, kw, oh, ow = geo[12], geo[13], geo[14], geo[15]
    yzp, qmin, qmax, x_zp = prm[0], prm[1], prm[2], prm[3]
    zp16 = np.int16(x_zp)
    uc = np.uint64(cc)
    for b in range(bsz):
        for iy in range(hh):
            rowp = (b * hp + iy + pt) * sw
            src = np.uint64((b * hh + iy) * ww * cc)
            if sw == 1:
                dst = np.uint64((rowp * wq + pl) * cc)
                for t in range(np.uint64(ww * cc)):
                    xs[dst + t] = np.int16(np.int16(xv[src + t]) - zp16)
            else:
                for ix in range(ww):
                    col = ix + pl
                    dst = np.uint64(((rowp + col % sw) * wq + col // sw) * cc)
                    s0 = src + np.uint64(ix) * uc
                    for c in range(uc):
                        xs[dst + c] = np.int16(np.int16(xv[s0 + c]) - zp16)
    row = np.uint64(ow * cc)
    of = out.reshape(-1)
    if kh == 3 and kw == 3:
        _depthwise_rows3x3(xs, geo, wt, chant, prm, acc, of)
        return
    for b in range(bsz):
        for oy in range(oh):
            for t in range(row):
                acc[t] = 0
            for i in range(kh):
                rowp = (b * hp + oy * sh + i * dh) * sw
                for j in range(kw):
                    ph = (j * dw) % sw
                    src = np.uint64(((rowp + ph) * wq + (j * dw) // sw) * cc)
                    wrow = wt[i * kw + j]
                    for t in range(row):
                        acc[t] = np.int32(acc[t] + np.int32(xs[src + t]) * np.int32(wrow[t]))
            ob = np.uint64((b * oh + oy) * ow * cc)
            for t in range(row):
                a = np.int64(acc[t]) + chant[0, t]
                v = yzp + ((a * chant[1, t] + chant[2, t]) >> chant[3, t])
                of[ob + t] = np.int8(max(qmin, min(qmax, v)))


class QDepthwise:
    """A depthwise ``qconv2d`` (``groups == C``, channel multiplier 1) prepared for
    `_depthwise_phase`: a private padded, phase-split int16 copy of ``x - x_zp`` (any stride and
    dilation: every tap of an output row is one contiguous vector loop), tiled weights and
    channel parameters."""

    def __init__(self, wq, bias, x_zp, mult, shift, x_shape, out_shape, strides, dilation, pads):
        kh, kw, one, c = (int(d) for d in wq.shape)
        bsz, hh, ww, cin = (int(d) for d in x_shape)
        _, oh, ow, cout = (int(d) for d in out_shape)
        (sh, sw), (dh, dw) = strides, dilation
        (pt, pb), (pl, pr) = pads
        if one != 1 or cin != c or cout != c or min(pt, pb, pl, pr) < 0 or min(sh, sw) < 1:
            raise JaxCompressValueError(
                f"int8 depthwise: unsupported geometry (weight {wq.shape}, input {x_shape}, "
                f"pads {pads})"
            )
        hp, wp = hh + pt + pb, ww + pl + pr
        wq_ = -(-wp // sw)
        if (oh - 1) * sh + (kh - 1) * dh >= hp or (ow - 1) * sw + (kw - 1) * dw >= wp:
            raise JaxCompressValueError(
                f"int8 depthwise: output {out_shape} does not fit input {x_shape} with pads {pads}"
            )
        self.xs = np.zeros(bsz * hp * sw * wq_ * c, np.int16)
        self.geo = np.array(
            [bsz, hh, ww, c, hp, wq_, sh, sw, dh, dw, pt, pl, kh, kw, oh, ow], np.int64
        )
        beff = np.zeros(c, np.int64) if bias is None else np.asarray(bias, np.int64)
        mult = np.asarray(mult, np.int64)
        shift = np.asarray(shift, np.int64)
        chan = np.stack([beff, mult, np.left_shift(np.int64(1), shift - 1), shift])
        self.chant = np.ascontiguousarray(np.tile(chan, (1, ow)))
        self.wt = np.ascontiguousarray(
            np.tile(np.asarray(wq, np.int16).reshape(kh * kw, c), (1, ow))
        )
        self.acc = np.zeros(ow * c, np.int32)
        self.x_zp = int(x_zp)

    @property
    def nbytes(self) -> int:
        return int(self.xs.nbytes + self.wt.nbytes + self.chant.nbytes + self.acc.nbytes)

    def bind(self, x, out, y_zp, qmin, qmax):
        """A zero-argument closure computing ``out = depthwise(x)`` (int8 NHWC arrays)."""
        prm = np.array([y_zp, qmin, qmax, self.x_zp], np.int64)
        xv = x.reshape(-1)
        xs, geo, wt, chant, acc = self.xs, self.geo, self.wt, self.chant, self.acc
        return lambda: _depthwise_phase(xv, xs, geo, wt, chant, prm, acc, out)


@njit(cache=True, nogil=True, _nrt=False)
def maxpool_q(x, kh, kw, sh, sw, pt, pl, out):
    """int8 max pooling NHWC (padded positions never win)."""
    bsz, hh, ww, cc = x.shape
    _, oh, ow, _ = out.shape
    xf = x.reshape(-1)
    of = out.reshape(-1)
    uc = np.uint64(cc)
    for b in range(bsz):
        for oy in range(oh):
            for ox in range(ow):
                ob = np.uint64(((b * oh + oy) * ow + ox) * cc)
                for c in range(uc):
                    of[ob + c] = -128
                for i in range(kh):
                    iy = oy * sh - pt + i
                    if iy < 0 or iy >= hh:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pl + j
                        if ix < 0 or ix >= ww:
                            continue
                        xs = np.uint64(((b * hh + iy) * ww + ix) * cc)
                        for c in range(uc):
                            of[ob + c] = max(of[ob + c], xf[xs + c])


@njit(cache=True, nogil=True, _nrt=False)
def avgpool_q(x, kh, kw, sh, sw, pt, pl, x_zp, mult, shift, yzp, qmin, qmax, acc, out):
    """Average pooling: window sums of ``x - x_zp`` (padding adds 0), requantized."""
    bsz, hh, ww, cc = x.shape
    _, oh, ow, _ = out.shape
    rnd = np.int64(1) << (shift - 1)
    zp32 = np.int32(x_zp)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    uc = np.uint64(cc)
    for b in range(bsz):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(uc):
                    acc[c] = 0
                for i in range(kh):
                    iy = oy * sh - pt + i
                    if iy < 0 or iy >= hh:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pl + j
                        if ix < 0 or ix >= ww:
                            continue
                        xs = np.uint64(((b * hh + iy) * ww + ix) * cc)
                        for c in range(uc):
                            acc[c] = np.int32(acc[c] + np.int32(np.int32(xf[xs + c]) - zp32))
                ob = np.uint64(((b * oh + oy) * ow + ox) * cc)
                for c in range(uc):
                    v = yzp + ((np.int64(acc[c]) * mult + rnd) >> shift)
                    of[ob + c] = np.int8(max(qmin, min(qmax, v)))


@njit(cache=True, nogil=True, _nrt=False)
def mean_q(x3, x_zp, mult, shift, yzp, qmin, qmax, acc, out2):
    """Mean over the middle axis of ``x3 (A, R, C)`` -> ``out2 (A, C)`` (sums of ``x - x_zp``,
    requantized)."""
    aa, rr, cc = x3.shape
    rnd = np.int64(1) << (shift - 1)
    for a in range(aa):
        for c in range(cc):
            acc[c] = 0
        for r in range(rr):
            for c in range(cc):
                acc[c] += np.int32(x3[a, r, c]) - x_zp
        for c in range(cc):
            v = yzp + ((np.int64(acc[c]) * mult + rnd) >> shift)
            if v < qmin:
                v = qmin
            elif v > qmax:
                v = qmax
            out2[a, c] = np.int8(v)


@njit(cache=True, nogil=True, _nrt=False)
def add_q(a, b, a_zp, b_zp, ma, mb, shift, yzp, qmin, qmax, out):
    """Residual add on flat int8 arrays (`format.quant.qadd`)."""
    wide_vectors()
    rnd = np.int64(1) << (shift - 1)
    for i in range(a.shape[0]):
        acc = (np.int64(a[i]) - a_zp) * ma + (np.int64(b[i]) - b_zp) * mb + rnd
        out[i] = np.int8(max(qmin, min(qmax, yzp + (acc >> shift))))  # branch-free: vectorises


@njit(cache=True, nogil=True, _nrt=False)
def quantize_q(x, scale, zp, out):
    """Flat float32 -> int8: ``clip(round_half_even(x / s) + zp)`` (float32 division; NaN ->
    the zero point, as the reference). Branch-free so LLVM vectorises it."""
    wide_vectors()
    lo = np.float32(-128 - zp)
    hi = np.float32(127 - zp)
    zp32 = np.int32(zp)
    for i in range(x.shape[0]):
        y = np.rint(x[i] / scale)  # float32 division, round half to even
        y = y if y == y else np.float32(0.0)
        y = min(max(y, lo), hi)
        out[i] = np.int8(np.int32(y) + zp32)  # int32: int64 lanes would halve the vectors


@njit(cache=True, nogil=True, _nrt=False)
def dequantize_q(q, scale, zp, out):
    """Flat int8 -> float32: ``float32(q - zp) * s``."""
    wide_vectors()
    for i in range(q.shape[0]):
        out[i] = np.float32(np.int32(q[i]) - zp) * scale
