"""Sparse direct convolution: one output plane per output channel, one vector FMA per nonzero.

For a stride-1 2-D convolution (1-D as H = 1) whose weight is sparse (CSR over output channels,
any dilation and padding), the input is first copied into a zero-padded *planar* buffer
``xp[c, h, w]`` (``Hp x Wp`` per channel). The output pixel ``(oh, ow)`` of channel ``n`` is then

    sum over the nonzeros (c, kh, kw, v) of row n of   v * xp[c, oh + kh dh, ow + kw dw]

and with ``q = oh Wp + ow`` every nonzero reads the *contiguous* run ``xp[off + q]``,
``off = c Hp Wp + kh dh Wp + kw dw``. So the kernel keeps the plane ``acc[0:Q]``
(``Q = (OH - 1) Wp + OW``, the columns ``ow >= OW`` are computed and dropped) in up to eight
``<16 x float>`` registers and streams the channel's nonzeros: per nonzero, one broadcast and one
load + FMA per 16 pixels. No im2col copy, no decoded dense weight, work proportional to the
nonzeros. The epilogue adds the bias, applies the activation and writes NHWC.

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

MAX_CHUNKS = 8  # accumulators of 16 floats per pass (128 output positions)
_W = 16
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_V = ir.VectorType(_F32, _W)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _make_pass(nch: int):
    """An intrinsic ``pass_<nch>(xp, offs, vals, p0, p1, base, acc)``: for 16 * nch positions
    starting at ``base``, ``acc[0:16 nch] = sum_{p0 <= j < p1} vals[j] * xp[offs[j] + base + t]``."""

    @intrinsic
    def plane_pass(typingctx, xp, offs, vals, p0, p1, base, acc):
        sig = types.void(xp, offs, vals, p0, p1, base, acc)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            oa = context.make_array(signature.args[1])(context, builder, args[1])
            va = context.make_array(signature.args[2])(context, builder, args[2])
            aa = context.make_array(signature.args[6])(context, builder, args[6])
            j0 = _as_i64(builder, args[3], signature.args[3])
            j1 = _as_i64(builder, args[4], signature.args[4])
            b0 = _as_i64(builder, args[5], signature.args[5])
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
            off = builder.add(builder.sext(builder.load(builder.gep(oa.data, [j])), _I64), b0)
            new = []
            for c in range(nch):
                p = builder.gep(xa.data, [builder.add(off, ir.Constant(_I64, c * _W))])
                xv = builder.load(builder.bitcast(p, _V.as_pointer()), align=4)
                new.append(builder.call(fma, [vs, xv, accs[c]]))
            jn = builder.add(j, ir.Constant(_I64, 1))
            end = builder.block
            j.add_incoming(jn, end)
            for a, nv in zip(accs, new, strict=True):
                a.add_incoming(nv, end)
            builder.branch(head)
            builder.position_at_end(done)
            for c, a in enumerate(accs):
                p = builder.gep(aa.data, [ir.Constant(_I64, c * _W)])
                builder.store(a, builder.bitcast(p, _V.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return plane_pass


_P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8 = (_make_pass(c) for c in range(1, MAX_CHUNKS + 1))


@numba.njit(cache=True, nogil=True)
def _plane(xp, offs, vals, p0, p1, base, acc, nch):
    if nch == 8:
        _P8(xp, offs, vals, p0, p1, base, acc)
    elif nch == 7:
        _P7(xp, offs, vals, p0, p1, base, acc)
    elif nch == 6:
        _P6(xp, offs, vals, p0, p1, base, acc)
    elif nch == 5:
        _P5(xp, offs, vals, p0, p1, base, acc)
    elif nch == 4:
        _P4(xp, offs, vals, p0, p1, base, acc)
    elif nch == 3:
        _P3(xp, offs, vals, p0, p1, base, acc)
    elif nch == 2:
        _P2(xp, offs, vals, p0, p1, base, acc)
    else:
        _P1(xp, offs, vals, p0, p1, base, acc)


@numba.njit(cache=True, nogil=True)
def _sparse_plane_conv(x, xp, offs, vals, indptr, bias, act, acc, out, lo_h, lo_w, hp, wp, q,
                       oh_n, ow_n, pkh, pkw, psh, psw):  # fmt: skip
    """x (B, H, W, C) -> out (B, PH, PW, N): the conv (OH x OW), then max pooling (pkh x pkw,
    strides psh x psw; 1, 1, 1, 1 for none), bias and activation. xp holds C * hp * wp + tail
    zeros (the borders stay zero)."""
    bsz, h, w, c = x.shape
    ph_n, pw_n, n = out.shape[1], out.shape[2], out.shape[3]
    plane = hp * wp
    of = out.reshape(-1)
    for b in range(bsz):
        for cc in range(c):
            for hh in range(h):
                dst = cc * plane + (hh + lo_h) * wp + lo_w
                for ww in range(w):
                    xp[dst + ww] = x[b, hh, ww, cc]
        for ch in range(n):
            p0 = indptr[ch]
            p1 = indptr[ch + 1]
            base = 0
            while base < q:
                nch = min((q - base + 15) // 16, 8)
                _plane(xp, offs, vals, p0, p1, base, acc[base:], nch)
                base += 16 * nch
            _epilogue(acc, of, b * ph_n * pw_n * n + ch, n, bias[ch], act, ph_n, pw_n, wp,
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
    """

    def __init__(self, indptr, indices, values, scales, *, kernel_hw, dilation, pads, xshape,
                 bias=None, act=0, pool=None):  # fmt: skip
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
            raise JaxCompressValueError("SparsePlaneConv: the padded input is too large for int32 offsets")
        self.lo = (lh, lw)
        self.q = (self.oh - 1) * self.wp + self.ow
        qp = 16 * math.ceil(self.q / 16)
        k = indices.astype(np.int64)
        cc = k % c
        tap = k // c
        th, tw = tap // kw, tap % kw
        offs = cc * (self.hp * self.wp) + th * dh * self.wp + tw * dw
        if k.size and (k.max() >= kh * kw * c or k.min() < 0):
            raise JaxCompressValueError("SparsePlaneConv: an index is outside the kernel")
        self.offs = np.ascontiguousarray(offs, np.int32)
        v = np.asarray(values, np.float32)
        if scales is not None:
            rows = np.repeat(np.arange(n), np.diff(indptr))
            v = v * np.asarray(scales, np.float32)[rows]
        self.vals = np.ascontiguousarray(v, np.float32)
        self.indptr = np.ascontiguousarray(indptr, np.int64)
        # tail: the last pass reads up to qp past the largest offset
        self.xp = np.zeros(c * self.hp * self.wp + qp + _W, np.float32)
        self.acc = np.zeros(qp + 16 * MAX_CHUNKS, np.float32)
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
            x, self.xp, self.offs, self.vals, self.indptr, self.bias, self.act, self.acc, out,
            self.lo[0], self.lo[1], self.hp, self.wp, self.q, self.oh, self.ow, *self.pool,
        )  # fmt: skip
