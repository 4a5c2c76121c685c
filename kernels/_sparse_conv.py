"""Sparse direct convolution: one output plane per output channel, one vector FMA per nonzero.

For a stride-1 2-D convolution (1-D as H = 1) whose weight is sparse (CSR over output channels,
any dilation and padding), the input is first copied into a zero-padded *planar* buffer
``xp[c, h, w]`` (``Hp x Wp`` per channel). The output pixel ``(oh, ow)`` of channel ``n`` is then

    sum over the nonzeros (c, kh, kw, v) of row n of   v * xp[c, oh + kh dh, ow + kw dw]

and the 8 outputs ``(oh, ow0 .. ow0 + 7)`` of one output row read the contiguous run
``xp[off + oh Wp + ow0 ...]``, ``off = c Hp Wp + kh dh Wp + kw dw``. So the kernel cuts the output
plane into such row chunks (``ceil(OW / 8)`` per row; lanes past ``OW`` are computed and dropped),
keeps up to 16 chunks in ``<8 x float>`` registers per pass and streams the channel's nonzeros:
per nonzero, one broadcast and one load + FMA per chunk. No im2col copy, no decoded dense weight,
work proportional to the nonzeros. The epilogue fuses max pooling, bias and activation and
writes NHWC. (8-float chunks: a 64-byte load at an arbitrary float offset nearly always splits a
cache line, a 32-byte one less than half the time; measured 2x faster per nonzero than 16-float
chunks on AVX-512, and no padding columns are computed when OW is a multiple of 8.)

Why a vector intrinsic: written as Numba loops the plane lived in memory (a load and a store per
FMA, a store-to-load chain per nonzero); here the accumulators are SSA values for the whole row.

`SparsePlaneConv.run` trusts its arguments; `prepare` validates the weight and geometry.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from jaxcompress_kernels.errors import JaxCompressValueError

__all__ = ["SparsePlaneConv", "MAX_CHUNKS"]

MAX_CHUNKS = 16  # accumulators of 8 floats per pass
_W = 8
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_V = ir.VectorType(_F32, _W)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _make_pass(nch: int):
    """An intrinsic ``pass_<nch>(xp, offs, vals, p0, p1, cb, c0, acc, a0)``: for the chunks
    ``t < nch`` starting at input offset ``cb[c0 + t]``,
    ``acc[a0 + 8 t : a0 + 8 t + 8] = sum_{p0 <= j < p1} vals[j] * xp[offs[j] + cb[c0 + t] + 0..7]``."""

    @intrinsic
    def plane_pass(typingctx, xp, offs, vals, p0, p1, cb, c0, acc, a0):
        sig = types.void(xp, offs, vals, p0, p1, cb, c0, acc, a0)

        def codegen(context, builder, signature, args):
            at = signature.args
            xa = context.make_array(at[0])(context, builder, args[0])
            oa = context.make_array(at[1])(context, builder, args[1])
            va = context.make_array(at[2])(context, builder, args[2])
            ca = context.make_array(at[5])(context, builder, args[5])
            aa = context.make_array(at[7])(context, builder, args[7])
            j0 = _as_i64(builder, args[3], at[3])
            j1 = _as_i64(builder, args[4], at[4])
            c0 = _as_i64(builder, args[6], at[6])
            a0 = _as_i64(builder, args[8], at[8])
            bases = [
                builder.load(builder.gep(ca.data, [builder.add(c0, ir.Constant(_I64, t))]))
                for t in range(nch)
            ]
            undef = ir.Constant(_V, ir.Undefined)
            zero = ir.Constant(_V, [0.0] * _W)
            splat_mask = ir.Constant(ir.VectorType(_I32, _W), [0] * _W)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V, [_V, _V, _V]), f"llvm.fma.v{_W}f32"
            )
            pre = builder.block
            head = builder.append_basic_block("sp.head")
            body = builder.append_basic_block("sp.body")
            done = builder.append_basic_block("sp.done")
            builder.branch(head)
            builder.position_at_end(head)
            j = builder.phi(_I64)
            j.add_incoming(j0, pre)
            accs = []
            for _ in range(nch):
                a = builder.phi(_V)
                a.add_incoming(zero, pre)
                accs.append(a)
            builder.cbranch(builder.icmp_signed("<", j, j1), body, done)
            builder.position_at_end(body)
            v = builder.load(builder.gep(va.data, [j]))
            vs = builder.shuffle_vector(
                builder.insert_element(undef, v, ir.Constant(_I32, 0)), undef, splat_mask
            )
            xo = builder.gep(xa.data, [builder.sext(builder.load(builder.gep(oa.data, [j])), _I64)])
            new = []
            for t in range(nch):
                p = builder.gep(xo, [bases[t]])
                xv = builder.load(builder.bitcast(p, _V.as_pointer()), align=4)
                new.append(builder.call(fma, [vs, xv, accs[t]]))
            jn = builder.add(j, ir.Constant(_I64, 1))
            end = builder.block
            j.add_incoming(jn, end)
            for a, nv in zip(accs, new, strict=True):
                a.add_incoming(nv, end)
            builder.branch(head)
            builder.position_at_end(done)
            for t, a in enumerate(accs):
                p = builder.gep(aa.data, [builder.add(a0, ir.Constant(_I64, t * _W))])
                builder.store(a, builder.bitcast(p, _V.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return plane_pass


(_P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8, _P9, _P10, _P11, _P12, _P13, _P14, _P15, _P16) = (
    _make_pass(c) for c in range(1, MAX_CHUNKS + 1)
)


@numba.njit(cache=True, nogil=True)
def _plane(xp, offs, vals, p0, p1, cb, c0, acc, a0, nch):
    if nch == 16:
        _P16(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 15:
        _P15(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 14:
        _P14(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 13:
        _P13(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 12:
        _P12(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 11:
        _P11(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 10:
        _P10(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 9:
        _P9(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 8:
        _P8(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 7:
        _P7(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 6:
        _P6(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 5:
        _P5(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 4:
        _P4(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 3:
        _P3(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    elif nch == 2:
        _P2(xp, offs, vals, p0, p1, cb, c0, acc, a0)
    else:
        _P1(xp, offs, vals, p0, p1, cb, c0, acc, a0)


@numba.njit(cache=True, nogil=True, inline="always")
def _to_planar(xb, xp, lo_h, lo_w, wp, plane):
    h, w, c = xb.shape
    for hh in range(h):
        for ww in range(w):
            dst = (hh + lo_h) * wp + lo_w + ww
            for cc in range(c):
                xp[dst + cc * plane] = xb[hh, ww, cc]


@numba.njit(cache=True, nogil=True)
def _sparse_plane_conv(x, xp, offs, vals, indptr, bias, act, cb, acc, out, lo_h, lo_w, hp, wp,
                       owp, pkh, pkw, psh, psw):  # fmt: skip
    """x (B, H, W, C) -> out (B, PH, PW, N): the conv into ``acc`` (OH x owp, row chunks
    ``cb``), then max pooling (pkh x pkw, strides psh x psw; 1, 1, 1, 1 for none), bias and
    activation. xp holds C * hp * wp + tail zeros (the borders stay zero)."""
    bsz, h, w, c = x.shape
    ph_n, pw_n, n = out.shape[1], out.shape[2], out.shape[3]
    plane = hp * wp
    nchunks = cb.shape[0]
    of = out.reshape(-1)
    for b in range(bsz):
        xb = x[b]
        if c == 1:
            for hh in range(h):
                dst = (hh + lo_h) * wp + lo_w
                for ww in range(w):
                    xp[dst + ww] = xb[hh, ww, 0]
        else:
            _to_planar(xb, xp, lo_h, lo_w, wp, plane)
        for ch in range(n):
            p0 = indptr[ch]
            p1 = indptr[ch + 1]
            t = 0
            while t < nchunks:
                nch = min(nchunks - t, 16)
                _plane(xp, offs, vals, p0, p1, cb, t, acc, 8 * t, nch)
                t += nch
            _epilogue(acc, of, b * ph_n * pw_n * n + ch, n, bias[ch], act, ph_n, pw_n, owp,
                      pkh, pkw, psh, psw)  # fmt: skip


@numba.njit(cache=True, nogil=True, inline="always")
def _mx(a, b):
    return b if (b > a or b != b) else a  # max that propagates NaN from either side


@numba.njit(cache=True, nogil=True, inline="always")
def _finish(m, act):
    if act != 0 and m < np.float32(0.0):
        m = np.float32(0.0)
    if act == 2 and m > np.float32(6.0):
        m = np.float32(6.0)
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _epilogue(acc, of, dst, n, bv, act, ph_n, pw_n, wp, pkh, pkw, psh, psw):
    """One channel's plane: max pool, bias, activation, written to ``of[dst + n * pixel]``."""
    if pkh == 1 and pkw == 1 and psh == 1 and psw == 1:
        for ph in range(ph_n):
            r = ph * wp
            for pw in range(pw_n):
                of[dst] = _finish(acc[r + pw] + bv, act)
                dst += n
    elif pkh == 2 and pkw == 2 and psh == 2 and psw == 2:
        for ph in range(ph_n):
            r = 2 * ph * wp
            for pw in range(pw_n):
                i = r + 2 * pw
                m = _mx(_mx(acc[i], acc[i + 1]), _mx(acc[i + wp], acc[i + wp + 1]))
                of[dst] = _finish(m + bv, act)
                dst += n
    else:
        for ph in range(ph_n):
            for pw in range(pw_n):
                r0 = ph * psh * wp + pw * psw
                m = acc[r0]
                for i in range(pkh):
                    for j in range(pkw):
                        m = _mx(m, acc[r0 + i * wp + j])
                of[dst] = _finish(m + bv, act)
                dst += n


class SparsePlaneConv:
    """A prepared stride-1 sparse conv for one input shape.

    Args:
      indptr, indices, values, scales: the weight as CSR over output channels of the
        ``(KH * KW * C, N)`` kernel matrix (`formats.CSRMatrix` fields; int8 `values` with
        `scales` are multiplied out once here).
      kernel_hw, dilation, pads: the conv geometry (``pads`` as ``((lo, hi), (lo, hi))``).
      xshape: the NHWC input shape.
      bias: ``(N,)`` float32 or None; act: 0 none, 1 relu, 2 relu6.
      pool: None or ``((ph, pw), (sh, sw))``: a VALID max pooling after the conv, fused (the
        bias and a monotone activation commute with the max, so this equals pooling last).
      col_scale: None or ``(N,)`` float32: outputs scaled per channel before the bias (an affine
        epilogue; folded into the values, so a negative scale stays correct under the pool).
    """

    def __init__(self, indptr, indices, values, scales, *, kernel_hw, dilation, pads, xshape,
                 bias=None, act=0, pool=None, col_scale=None):  # fmt: skip
        bsz, h, w, c = (int(v) for v in xshape)
        kh, kw = (int(v) for v in kernel_hw)
        dh, dw = (int(v) for v in dilation)
        (lh, hh), (lw, hw) = ((int(a), int(b)) for a, b in pads)
        n = indptr.shape[0] - 1
        self.hp, self.wp = h + lh + hh, w + lw + hw
        self.oh = self.hp - (kh - 1) * dh
        self.ow = self.wp - (kw - 1) * dw
        if min(lh, hh, lw, hw) < 0 or self.oh < 1 or self.ow < 1:
            raise JaxCompressValueError("SparsePlaneConv: empty output or negative padding")
        if c * self.hp * self.wp + 32 * MAX_CHUNKS >= 2**31:
            raise JaxCompressValueError(
                "SparsePlaneConv: the padded input is too large for int32 offsets"
            )
        self.lo = (lh, lw)
        per_row = math.ceil(self.ow / _W)
        self.owp = _W * per_row  # row stride of the accumulator plane
        rows, cols = np.divmod(np.arange(self.oh * per_row, dtype=np.int64), per_row)
        self.cb = np.ascontiguousarray(rows * self.wp + cols * _W)  # each chunk's input offset
        k = indices.astype(np.int64)
        cc = k % c
        tap = k // c
        th, tw = tap // kw, tap % kw
        offs = cc * (self.hp * self.wp) + th * dh * self.wp + tw * dw
        if k.size and (k.max() >= kh * kw * c or k.min() < 0):
            raise JaxCompressValueError("SparsePlaneConv: an index is outside the kernel")
        self.offs = np.ascontiguousarray(offs, np.int32)
        v = np.asarray(values, np.float32)
        rows = np.repeat(np.arange(n), np.diff(indptr))
        if scales is not None:
            v = v * np.asarray(scales, np.float32)[rows]
        if col_scale is not None:  # a per-output-channel affine scale after the conv
            v = v * np.asarray(col_scale, np.float32)[rows]
        self.vals = np.ascontiguousarray(v, np.float32)
        self.indptr = np.ascontiguousarray(indptr, np.int64)
        # tail: a row's last chunk reads up to owp - ow floats past the padded plane's end
        self.xp = np.zeros(c * self.hp * self.wp + self.owp + _W, np.float32)
        self.acc = np.zeros(self.oh * self.owp, np.float32)
        self.bias = (
            np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        )
        self.act = int(act)
        (pkh, pkw), (psh, psw) = ((1, 1), (1, 1)) if pool is None else pool
        self.pool = tuple(int(v) for v in (pkh, pkw, psh, psw))
        ph, pw = (self.oh - pkh) // psh + 1, (self.ow - pkw) // psw + 1
        if min(self.pool) < 1 or ph < 1 or pw < 1:
            raise JaxCompressValueError(
                f"SparsePlaneConv: pool {pool} does not fit the {self.oh}x{self.ow} output"
            )
        self.out_shape = (bsz, ph, pw, n)
        self.nbytes = self.offs.nbytes + self.vals.nbytes + self.indptr.nbytes

    def run(self, x, out) -> None:
        """out[...] = conv(x); x and out C-contiguous float32 of the prepared shapes."""
        _sparse_plane_conv(
            x, self.xp, self.offs, self.vals, self.indptr, self.bias, self.act, self.cb, self.acc,
            out, self.lo[0], self.lo[1], self.hp, self.wp, self.owp, *self.pool,
        )  # fmt: skip
