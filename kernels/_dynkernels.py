"""Dynamic-range int8 kernels: float activations quantized on the fly, int8 weights, int32 GEMM.

The like-for-like counterpart of TFLite / LiteRT *dynamic range quantization* ("hybrid" kernels;
XNNPACK's ``qd8`` operators): the weights are stored as int8 codes with per-output-channel scales,
and every call quantizes its float input, runs an ``u8 x s8 -> s32`` GEMM and converts back to
float in the epilogue. The runtime uses these kernels only when asked
(``runtime.load(path, activations="dynamic_int8")``): the result is an approximation of the
float model, not the exact weight-only arithmetic of the default mode.

Quantization of the input (per row of a linear layer's ``(M, K)`` input, per image of a conv's
``(B, H, W, C)`` input; asymmetric, 8 bits):

- ``lo = min(0, min x)``, ``hi = max(0, max x)``, ``s = (hi - lo) / 255`` (``s = 1`` when
  ``hi == lo``), ``zp = clip(rint(-lo / s), 0, 255)``,
- ``q = clip(rint(x * (1 / s)) + zp, 0, 255)`` as uint8, so ``x ~= s * (q - zp)`` with
  ``|x - s * (q - zp)| <= s / 2`` inside the range; real 0 is exactly ``q = zp`` (zero padding of
  a conv is exact).

Asymmetric because inputs after a ReLU are non-negative: a symmetric scheme would spend half its
codes on values that never occur (one bit of resolution). Per row / per image because that is
what TFLite's hybrid kernels and XNNPACK's ``qd8`` do (one scale and zero point per batch row),
and it keeps the rows of a batch independent: an example's output does not depend on the other
examples in its batch (batch 7 equals seven batch-1 runs bit for bit).

GEMM and epilogue, per output channel ``c`` (``w`` the int8 codes, ``sw`` their scales, any
per-channel affine factor of a fused batch norm folded into ``sw`` at load):
``acc[c] = sum_k q[k] w[k, c]`` (int32, exact for ``K <= 32768``, with the difference below),
``y[c] = act(s * sw[c] * (acc[c] - zp * colsum[c]) + bias[c])`` with ``colsum[c] = sum_k w[k, c]``
precomputed at load. The float error is bounded by the input rounding:
``|y - y_float| <= (s / 2) * sum_k |w[k, c]| * sw[c]`` per layer (before the activation, which is
1-Lipschitz), plus float32 rounding.

Two interchangeable GEMM paths (the integer accumulators are equal bit for bit):

- **VNNI** (``avx512_vnni``): ``vpdpbusd`` (16 int32 lanes += four ``u8 x s8`` products each) in
  inline assembly (the `_qkernels` technique); ``q`` is already unsigned, so no sign flip. Weights
  are packed at load as ``(N/16, K/4, 16, 4)`` (16 channels x 4 consecutive k per 64-byte vector).
  A register tile is 1 row x 4 blocks of 16 channels (linear layers, one row at a time) or 4
  output pixels x 2 blocks (8 x 1 when N <= 16) for convolutions, which read the quantized image
  directly (implicit GEMM, no im2col: `bind_conv2d`).
- **portable**: the same tiles as int32 loops over the same packed layout.

Small MLP chains run as one compiled call (`DynChain`): per row, quantize, GEMM, epilogue, next
layer, with intermediate rows in small buffers.

Every compiled function here does no bounds checks: `DynWeight` validates at construction, and the
runtime's plan fixes every shape at load.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from jaxcompress_kernels import _qkernels as _qk
from jaxcompress_kernels._intrinsics import emit_vpdpbusd_tile, wide_vectors
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "HAS_VNNI",
    "DynWeight",
    "DynChain",
    "dyn_weight",
    "quantize_rows",
    "dyn_linear",
    "dyn_conv2d",
    "bind_linear",
    "bind_conv2d",
    "MAX_K",
]

HAS_VNNI = _qk.HAS_VNNI  # the host check and asm-parser set-up live in _qkernels (read-only)
# int32 accumulators and the epilogue's ``acc - zp * colsum`` are exact up to this reduction
# length: 2 * 255 * 128 * 32768 < 2**31
MAX_K = 32768

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)

# ---------------------------------------------------------------------------------------------
# GEMM tiles: acc[(r * nr + b) * 16 + j] = sum_k q[row r, k] * w[k, channel 16 (nb0 + b) + j]


def _aligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` whose data starts on a 64-byte boundary (one zmm load never straddles
    two cache lines; NumPy only guarantees 16 bytes): ~7% on the LeNet-300-100 chain."""
    buf = np.empty(a.nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    out = buf[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _make_vnni_tile(mr: int, nr: int):
    """``tile(xw, m0, w, g, kq, acc)``: ``xw`` ``(M, KQ)`` int32 (4 uint8 each), ``w``
    ``(NG, KQ, nr * 16)`` int32 (4 int8 each: group ``g`` holds ``nr`` blocks of 16 channels
    interleaved per k-quad, so a tile streams one contiguous run of weights); rows ``m0 + r`` past
    the end are clamped to the last one (computed, then ignored by the caller)."""

    @intrinsic
    def tile(typingctx, xw, m0, w, g, kq, acc):
        sig = types.void(xw, m0, w, g, kq, acc)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            wa = context.make_array(signature.args[2])(context, builder, args[2])
            aa = context.make_array(signature.args[5])(context, builder, args[5])
            m0v, gv, kqv = (
                builder.sext(a, _I64) if a.type.width < 64 else a
                for a in (args[1], args[3], args[4])
            )
            one = ir.Constant(_I64, 1)
            mrows = builder.extract_value(xa.shape, 0)
            xstride = builder.extract_value(xa.shape, 1)
            wstride = builder.extract_value(wa.shape, 1)  # KQ of the packed weight
            step = ir.Constant(_I64, 16 * nr)
            xrows = []
            for r in range(mr):
                row = builder.add(m0v, ir.Constant(_I64, r))
                last = builder.sub(mrows, one)
                row = builder.select(builder.icmp_signed("<", row, last), row, last)
                xrows.append(builder.gep(xa.data, [builder.mul(row, xstride)]))
            wbase = builder.gep(wa.data, [builder.mul(builder.mul(gv, wstride), step)])
            with builder.goto_entry_block():
                slots = [builder.alloca(_V16) for _ in range(mr * nr)]
            for s in slots:
                builder.store(ir.Constant(_V16, None), s)
            vptr = _V16.as_pointer()
            with cgutils.for_range(builder, kqv) as loop:
                kb = loop.index
                wk = builder.gep(wbase, [builder.mul(kb, step)])
                wv = [
                    builder.load(
                        builder.bitcast(builder.gep(wk, [ir.Constant(_I64, 16 * b)]), vptr),
                        align=4,
                    )
                    for b in range(nr)
                ]
                xw = [builder.load(builder.gep(xrows[r], [kb]), align=1) for r in range(mr)]
                emit_vpdpbusd_tile(builder, xw, wv, slots, "dyn_vnni")
            for t, s in enumerate(slots):
                dst = builder.bitcast(builder.gep(aa.data, [ir.Constant(_I64, 16 * t)]), vptr)
                builder.store(builder.load(s), dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_portable_tile(mr: int, nr: int):
    """The same tile as int32 loops over the int8 view of the packed weight (``w8``
    ``(NG, KQ, nr * 64)``) and the uint8 rows (``xb`` ``(M, 4 KQ)``)."""

    @njit(cache=True, nogil=True, inline="always")
    def tile(xb, m0, w8, g, kq, acc):
        mm = xb.shape[0]
        for r in range(mr):
            row = min(m0 + r, mm - 1)
            for b in range(nr):
                a16 = np.zeros(16, np.int32)
                for q in range(kq):
                    wq = w8[g, q]
                    for t in range(4):
                        xv = np.int32(xb[row, 4 * q + t])
                        for j in range(16):
                            a16[j] = np.int32(a16[j] + xv * np.int32(wq[(16 * b + j) * 4 + t]))
                base = (r * nr + b) * 16
                for j in range(16):
                    acc[base + j] = a16[j]

    return tile


def _make_vnni_ctile(mr: int, nr: int):
    """The convolution tile (implicit GEMM, no im2col): ``ctile(xb, base, rstep, valid, offs, w,
    g, kq, acc)`` reads row ``r``'s k-quad ``kb`` as the 4 bytes at byte ``base + min(r, valid -
    1) * rstep + offs[kb]`` of ``xb`` (the flat zero-point-padded quantized images; unaligned
    32-bit loads)."""

    @intrinsic
    def ctile(typingctx, xw, base, rstep, valid, offs, w, g, kq, acc, m0):
        sig = types.void(xw, base, rstep, valid, offs, w, g, kq, acc, m0)

        def codegen(context, builder, signature, args):
            xa = context.make_array(signature.args[0])(context, builder, args[0])
            oa = context.make_array(signature.args[4])(context, builder, args[4])
            wa = context.make_array(signature.args[5])(context, builder, args[5])
            aa = context.make_array(signature.args[8])(context, builder, args[8])
            basev, rstepv, validv, gv, kqv = (
                builder.sext(a, _I64) if a.type.width < 64 else a
                for a in (args[1], args[2], args[3], args[6], args[7])
            )
            one = ir.Constant(_I64, 1)
            last = builder.sub(validv, one)
            wstride = builder.extract_value(wa.shape, 1)
            step = ir.Constant(_I64, 16 * nr)
            xrows = []
            for r in range(mr):
                rr = ir.Constant(_I64, r)
                rr = builder.select(builder.icmp_signed("<", rr, last), rr, last)
                xrows.append(builder.gep(xa.data, [builder.add(basev, builder.mul(rr, rstepv))]))
            i32p = _I32.as_pointer()
            wbase = builder.gep(wa.data, [builder.mul(builder.mul(gv, wstride), step)])
            with builder.goto_entry_block():
                slots = [builder.alloca(_V16) for _ in range(mr * nr)]
            for s in slots:
                builder.store(ir.Constant(_V16, None), s)
            vptr = _V16.as_pointer()
            with cgutils.for_range(builder, kqv) as loop:
                kb = loop.index
                off = builder.load(builder.gep(oa.data, [kb]))
                wk = builder.gep(wbase, [builder.mul(kb, step)])
                wv = [
                    builder.load(
                        builder.bitcast(builder.gep(wk, [ir.Constant(_I64, 16 * b)]), vptr),
                        align=4,
                    )
                    for b in range(nr)
                ]
                xw = [
                    builder.load(builder.bitcast(builder.gep(xrows[r], [off]), i32p), align=1)
                    for r in range(mr)
                ]
                emit_vpdpbusd_tile(builder, xw, wv, slots, "dyn_vnni")
            # raw accumulators to acc[m0 + r, 16 (g nr + b) :] (rows r >= valid repeat the
            # last valid row: they land on rows the next tile rewrites, or on the slack rows)
            m0v = args[9]
            m0v = builder.sext(m0v, _I64) if m0v.type.width < 64 else m0v
            npad = builder.extract_value(aa.shape, 1)
            for r in range(mr):
                rowp = builder.mul(builder.add(m0v, ir.Constant(_I64, r)), npad)
                for b in range(nr):
                    col = builder.mul(
                        builder.add(builder.mul(gv, ir.Constant(_I64, nr)), ir.Constant(_I64, b)),
                        ir.Constant(_I64, 16),
                    )
                    dst = builder.bitcast(builder.gep(aa.data, [builder.add(rowp, col)]), vptr)
                    builder.store(builder.load(slots[r * nr + b]), dst, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return ctile


def _make_portable_ctile(mr: int, nr: int):
    """`_make_vnni_ctile`'s tile as int32 loops over the same bytes."""

    @njit(cache=True, nogil=True, inline="always")
    def ctile(xb, base, rstep, valid, offs, w8, g, kq, acc, m0):
        for r in range(mr):
            p0 = base + min(r, valid - 1) * rstep
            for b in range(nr):
                a16 = np.zeros(16, np.int32)
                for q in range(kq):
                    wq = w8[g, q]
                    p = p0 + offs[q]
                    for t in range(4):
                        xv = np.int32(xb[p + t])
                        for j in range(16):
                            a16[j] = np.int32(a16[j] + xv * np.int32(wq[(16 * b + j) * 4 + t]))
                for j in range(16):
                    acc[m0 + r, 16 * (g * nr + b) + j] = a16[j]

    return ctile


# ---------------------------------------------------------------------------------------------
# quantization, im2col, epilogue (shared by both paths)


@intrinsic
def _no_nans(typingctx):
    """_no_nans(): mark the enclosing compiled function ``"no-nans-fp-math"`` and
    ``"no-signed-zeros-fp-math"``, which LLVM's loop vectoriser needs (beyond the instructions'
    fast-math flags) to vectorise a float min / max reduction: 50x faster here. The reduction's
    inputs must then be free of NaN (a NaN input gives an unspecified range)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"no-nans-fp-math"="true"')
        set.add(builder.function.attributes, '"no-signed-zeros-fp-math"="true"')
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, fastmath=True)
def _min_max(x):
    """(min(0, min x), max(0, max x)) of the 1-D float32 ``x`` (vectorised: finite inputs)."""
    _no_nans()
    wide_vectors()
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    for i in range(x.shape[0]):
        v = x[i]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


@njit(cache=True, nogil=True)
def _range_params(x):
    """(scale, 1 / scale, zero point) of the asymmetric 8-bit range of the 1-D float32 ``x``
    (plain IEEE arithmetic: the NumPy reference gets the same bits)."""
    lo, hi = _min_max(x)
    if hi > lo:
        s = np.float32((hi - lo) / np.float32(255.0))
    else:
        s = np.float32(1.0)
    inv = np.float32(np.float32(1.0) / s)
    z = np.rint(np.float32(-lo) * inv)
    zp = np.int32(min(max(z, np.float32(0.0)), np.float32(255.0)))
    return s, inv, zp


_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: (t + M) - M = rint(t) for |t| <= 2**22


@njit(cache=True, nogil=True, inline="always")
def _quant1(xv, inv, zf):
    """clip(rint(xv * inv) + zf, 0, 255) as uint8. ``xv * inv`` lies in [-255, 255] for inputs
    inside their range, so the float32 round-to-nearest-even of ``+ M - M`` is exactly
    ``np.rint`` (compiled without reassociation or contraction: the rounding steps stay)."""
    r = (xv * inv + _MAGIC) - _MAGIC
    v = r + zf
    v = v if v > np.float32(0.0) else np.float32(0.0)
    v = v if v < np.float32(255.0) else np.float32(255.0)
    return np.uint8(np.int32(v))


@njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})
def _quantize_into(x, inv, zp, q):
    """q[i] = clip(rint(x[i] * inv) + zp, 0, 255) for the ``len(x)`` entries of 1-D ``x``."""
    zf = np.float32(zp)
    for i in range(x.shape[0]):
        q[i] = _quant1(x[i], inv, zf)


@njit(cache=True, nogil=True)
def _quantize_rows_kernel(x, q, sx, zx):
    for m in range(x.shape[0]):
        s, inv, zp = _range_params(x[m])
        sx[m] = s
        zx[m] = zp
        _quantize_into(x[m], inv, zp, q[m])


@njit(cache=True, nogil=True)
def _quant_padded(xb, qt, qp, zp, inv, pt, pl, h, w, c, wp, cp):
    """Writes image ``xb`` (H * W * C floats) quantized into ``qp`` ((Hp * Wp * Cp) bytes):
    every byte set to the zero point (padding pixels and channels), then the pixels at
    ``(pt + y, pl + z)`` (with ``C == Cp`` each image row straight into its padded row, else
    through the contiguous scratch ``qt``)."""
    zb = np.uint8(zp)
    for i in range(qp.shape[0]):
        qp[i] = zb
    if c == cp:  # one contiguous run of W * C bytes per image row
        run = w * c
        for y in range(h):
            dst = ((pt + y) * wp + pl) * c
            _quantize_into(xb[y * run : (y + 1) * run], inv, zp, qp[dst : dst + run])
        return
    _quantize_into(xb, inv, zp, qt)
    for y in range(h):
        for z in range(w):
            src = (y * w + z) * c
            dst = ((pt + y) * wp + pl + z) * cp
            for ch in range(c):
                qp[dst + ch] = qt[src + ch]


@njit(cache=True, nogil=True, inline="always")
def _epilogue(acc, base, s, zp, colsum, wsc, bias, act, c0, n, out_row):
    """out_row[c0 + j] = act(s * wsc[c] * (acc[base + j] - zp * colsum[c]) + bias[c]) for the
    channels ``c0 <= c < min(c0 + 16, n)``. The difference is exact in int32 (``K <= MAX_K``);
    colsum holds integers (exact in float32)."""
    cnt = min(16, n - c0)
    for j in range(cnt):
        c = c0 + j
        d = np.int32(acc[base + j] - np.int32(zp * np.int32(colsum[c])))
        v = s * wsc[c] * np.float32(d) + bias[c]
        if act >= 1:
            v = max(v, np.float32(0.0))
            if act == 2:
                v = min(v, np.float32(6.0))
        out_row[c] = v


@njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})
def _epi_rows(acc, m_start, m_end, a, z, bias, act, n, out):
    """out[m, c] = act(a[c] * (acc[m, c] - z[c]) + bias[c]) for ``m_start <= m < m_end``,
    ``c < n``, with the per-image ``a = s * wsc`` and ``z = zp * colsum`` (the same float32
    operations, in the same order, as `_epilogue`; no contraction into an FMA); one loop nest
    per activation so each vectorises."""
    wide_vectors()
    if act == 0:
        for m in range(m_start, m_end):
            for c in range(n):
                out[m, c] = a[c] * np.float32(acc[m, c] - z[c]) + bias[c]
    elif act == 1:
        for m in range(m_start, m_end):
            for c in range(n):
                v = a[c] * np.float32(acc[m, c] - z[c]) + bias[c]
                out[m, c] = v if v > np.float32(0.0) else np.float32(0.0)
    else:
        for m in range(m_start, m_end):
            for c in range(n):
                v = a[c] * np.float32(acc[m, c] - z[c]) + bias[c]
                v = v if v > np.float32(0.0) else np.float32(0.0)
                out[m, c] = v if v < np.float32(6.0) else np.float32(6.0)


@njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})
def _epi_vec(acc, s, zp, colsum, wsc, bias, act, n, out_row):
    """out_row[c] = act(s * wsc[c] * (acc[c] - zp * colsum[c]) + bias[c]) for ``c < n`` (the
    `_epilogue` arithmetic, one loop per activation so each vectorises)."""
    wide_vectors()
    if act == 0:
        for c in range(n):
            d = np.int32(acc[c] - np.int32(zp * np.int32(colsum[c])))
            out_row[c] = s * wsc[c] * np.float32(d) + bias[c]
    elif act == 1:
        for c in range(n):
            d = np.int32(acc[c] - np.int32(zp * np.int32(colsum[c])))
            v = s * wsc[c] * np.float32(d) + bias[c]
            out_row[c] = v if v > np.float32(0.0) else np.float32(0.0)
    else:
        for c in range(n):
            d = np.int32(acc[c] - np.int32(zp * np.int32(colsum[c])))
            v = s * wsc[c] * np.float32(d) + bias[c]
            v = v if v > np.float32(0.0) else np.float32(0.0)
            out_row[c] = v if v < np.float32(6.0) else np.float32(6.0)


# ---------------------------------------------------------------------------------------------
# drivers (one set per path)


def _make_drivers(vnni: bool):
    mk = _make_vnni_tile if vnni else _make_portable_tile
    t14, t12, t11 = mk(1, 4), mk(1, 2), mk(1, 1)
    mkc = _make_vnni_ctile if vnni else _make_portable_ctile
    c42, c81 = mkc(4, 2), mkc(8, 1)  # 8 accumulators either way

    @njit(cache=False, nogil=True, inline="always")
    def gemm_row(xrow, kq, w, colsum, wsc, bias, act, n, s, zp, acc, out_row):
        # xrow: (1, KQ) int32 words (VNNI) or (1, Kp) uint8 (portable) holding the row's codes
        ng = w.shape[0]
        nr = w.shape[2] // (16 if vnni else 64)
        # raw accumulators of every group side by side in acc (Np,), then one epilogue pass
        for g in range(ng):
            ag = acc[16 * nr * g :]
            if nr == 4:
                t14(xrow, 0, w, g, kq, ag)
            elif nr == 2:
                t12(xrow, 0, w, g, kq, ag)
            else:
                t11(xrow, 0, w, g, kq, ag)
        _epi_vec(acc, s, zp, colsum, wsc, bias, act, n, out_row)

    @njit(cache=False, nogil=True)
    def linear(x, q, xv, w, kq, colsum, wsc, bias, act, n, sx, zx, acc, out):
        # x (M, K) f32; q (M, Kp) uint8 (its columns past K are multiplied by zero weights);
        # xv: q as the tile reads it ((M, KQ) int32 or q itself)
        for m in range(x.shape[0]):
            s, inv, zp = _range_params(x[m])
            sx[m] = s
            zx[m] = zp
            _quantize_into(x[m], inv, zp, q[m])
            gemm_row(xv[m : m + 1], kq, w, colsum, wsc, bias, act, n, s, zp, acc, out[m])

    unit = 16 if vnni else 64  # packed weight elements per block of 16 channels and k-quad

    @njit(cache=False, nogil=True)
    def chain(x, qx, qxv, sx, zx, qbuf, qv, wflat, vflat, meta, fbuf, acc, out):
        # every layer in flat buffers (few arguments: Numba unboxes each array on every call):
        # meta[li] = (weight offset, NG, KQ, NR, N, vector offset, act, padded N); vflat rows
        # colsum (exact in float32: |colsum| <= 2**22), scales, bias. Every row of x is quantized
        # first (qx (M, Kp0), its tile view qxv): x is consumed before out is written, so the two
        # may share memory. qbuf (Kp_max,) uint8 (qv: its tile view, one row) and fbuf (2, Np_max)
        # float32 hold the rows between layers.
        nl = meta.shape[0]
        for m in range(x.shape[0]):
            s, inv, zp = _range_params(x[m])
            sx[m] = s
            zx[m] = zp
            _quantize_into(x[m], inv, zp, qx[m])
        for m in range(x.shape[0]):
            for li in range(nl):
                wo, ng, kq, nr, n, vo, act, npad = (
                    meta[li, 0], meta[li, 1], meta[li, 2], meta[li, 3], meta[li, 4],
                    meta[li, 5], meta[li, 6], meta[li, 7],
                )  # fmt: skip
                w = wflat[wo : wo + ng * kq * nr * unit].reshape(ng, kq, nr * unit)
                if li == 0:
                    s = sx[m]
                    zp = zx[m]
                    xrow = qxv[m : m + 1]
                else:
                    src = fbuf[(li - 1) % 2, : meta[li - 1, 4]]
                    s, inv, zp = _range_params(src)
                    _quantize_into(src, inv, zp, qbuf)
                    xrow = qv
                dst = out[m] if li == nl - 1 else fbuf[li % 2]
                gemm_row(
                    xrow, kq, w, vflat[0, vo : vo + npad], vflat[1, vo : vo + npad],
                    vflat[2, vo : vo + npad], act, n, s, zp, acc, dst,
                )  # fmt: skip

    @njit(cache=False, nogil=True)
    def conv(x, qt, qp, geo, offs, w, kq, colsum, wsc, bias, act, n, sx, zx, acc, ea, ez, out):
        # geo: kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, hp, wp, ci, img; qp: the B padded
        # quantized images (img bytes each, ci bytes per pixel) and 4 bytes of slack, flat
        # uint8; offs (KQ,) byte offsets of the k-quads; acc (B * OH * OW + 7, Np) int32 raw
        # accumulators; out (B * OH * OW, N). The epilogue runs once per image over all of its
        # accumulators (long loops that vectorise).
        nb, h, wd, c = x.shape
        sh, sw, pt, pl, oh, ow, wp, ci, img = (
            geo[2], geo[3], geo[6], geo[7], geo[8], geo[9], geo[11], geo[12], geo[13],
        )  # fmt: skip
        ng = w.shape[0]
        nr = w.shape[2] // unit
        per = oh * ow
        for b in range(nb):
            xb = x[b].reshape(h * wd * c)
            s, inv, zp = _range_params(xb)
            sx[b] = s
            zx[b] = zp
            _quant_padded(xb, qt, qp[b * img : (b + 1) * img], zp, inv, pt, pl, h, wd, c, wp, ci)
            mr = 4 if nr == 2 else 8  # output pixels per tile
            for i in range(oh):
                for j0 in range(0, ow, mr):
                    valid = min(mr, ow - j0)
                    base = b * img + ((i * sh) * wp + j0 * sw) * ci
                    m0 = (b * oh + i) * ow + j0
                    for g in range(ng):
                        if nr == 2:
                            c42(qp, base, sw * ci, valid, offs, w, g, kq, acc, m0)
                        else:
                            c81(qp, base, sw * ci, valid, offs, w, g, kq, acc, m0)
            for cc in range(n):  # the epilogue's per-image factors
                ea[cc] = s * wsc[cc]
                ez[cc] = np.int32(zp * np.int32(colsum[cc]))
            _epi_rows(acc, b * per, (b + 1) * per, ea, ez, bias, act, n, out)

    return linear, chain, conv


_DRIVERS: dict = {}


def _drivers(vnni: bool):
    d = _DRIVERS.get(vnni)
    if d is None:
        d = _DRIVERS[vnni] = _make_drivers(vnni)
    return d


# ---------------------------------------------------------------------------------------------
# the prepared weight


class DynWeight:
    """An int8 ``(K, N)`` weight prepared at load for the dynamic-range kernels.

    Args:
      codes: ``(K, N)`` integer codes in [-128, 127] (symmetric: real weight = code * scale).
      scales: ``(N,)`` float32 per-output-channel scales (or a scalar: per tensor).
      conv: pack for the convolution tiles (4 output pixels x 2 blocks, or 8 x 1 when N <= 16)
        instead of the linear ones (1 row x 4 blocks); K is then ordered (window row, tap,
        channel), each window row padded to whole 4-byte quads (with `kw`) or each tap's channels
        padded to a multiple of 4 (without).
      cin: input channels of a conv weight (``K = taps * cin``).
      kw: kernel width of a conv weight read by window rows (no dilation along W).
      vnni: the GEMM path (None: the host's best).

    Attributes:
      k, n: logical sizes; kp: the packed K (conv: ``taps * cp``), a multiple of 4; nr: blocks of
      16 channels per
      register tile; ng: groups of ``nr`` blocks (N padded to ``16 * nr * ng`` with zero weights).
      w32: ``(NG, KP/4, NR*16)`` int32, the packed codes (``w8``: the same bytes as int8,
      ``(NG, KP/4, NR*64)``); colsum ``(Np,)`` float32 (integers, exact); wsc ``(Np,)`` float32
      scales (0 past N).
    """

    def __init__(
        self,
        codes,
        scales,
        *,
        conv: bool = False,
        cin: int | None = None,
        kw: int | None = None,
        vnni: bool | None = None,
    ):
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.dtype.kind not in "iu":
            raise JaxCompressTypeError(
                f"codes must be a 2-D integer array, got {codes.dtype} {codes.shape}"
            )
        k, n = codes.shape
        if not 1 <= k <= MAX_K or n < 1:
            raise JaxCompressValueError(f"codes.shape={codes.shape} must have 1 <= K <= {MAX_K}")
        if codes.size and (codes.min() < -128 or codes.max() > 127):
            raise JaxCompressValueError("codes must lie in [-128, 127]")
        sc = np.asarray(scales, np.float32)
        if sc.ndim == 0:
            sc = np.full(n, sc, np.float32)
        sc = sc.reshape(-1)
        if sc.shape != (n,) or not np.all(np.isfinite(sc)):
            raise JaxCompressValueError(f"scales must be finite with shape ({n},), got {sc.shape}")
        if vnni is None:
            vnni = HAS_VNNI
        if vnni and not HAS_VNNI:
            raise JaxCompressValueError("vnni=True but this CPU has no avx512_vnni")
        self.vnni = bool(vnni)
        self.conv = bool(conv)
        self.k, self.n = k, n
        self.cin = self.kw = self.ci = self.seg = None
        codes_k = codes
        if conv:
            # implicit GEMM over the padded quantized image, K in (tap row, tap, channel) order.
            # With `kw` (no dilation along W): a window row is kw * cin contiguous bytes of the
            # image, read as ceil(kw * cin / 4) quads (the bytes past the window meet zero
            # weights). Without: one tap per quad group, channels padded to a multiple of 4.
            if cin is None or cin < 1 or k % cin:
                raise JaxCompressValueError(f"cin={cin} must divide K={k} for a conv weight")
            taps = k // cin
            if kw is not None:
                if kw < 1 or taps % kw:
                    raise JaxCompressValueError(f"kw={kw} must divide the {taps} taps")
                rows, length = taps // kw, kw * cin
                self.ci = cin  # bytes per pixel of the padded image
            else:
                rows, length = taps, cin
                self.ci = -(-cin // 4) * 4
            self.seg = -(-length // 4) * 4
            padded = np.zeros((rows, self.seg, n), codes.dtype)
            padded[:, :length] = codes.reshape(rows, length, n)
            codes_k = padded.reshape(rows * self.seg, n)
            self.cin, self.kw = cin, kw
        kk = codes_k.shape[0]
        self.kp = kp = -(-kk // 4) * 4
        nb = -(-n // 16)
        if conv:
            nr = 1 if nb == 1 else 2
        else:
            nr = 4 if nb >= 3 else nb
        self.nr = nr
        self.ng = ng = -(-nb // nr)
        npad = 16 * nr * ng
        wp = np.zeros((kp, npad), np.int8)
        wp[:kk, :n] = codes_k
        packed = wp.reshape(kp // 4, 4, ng, nr * 16).transpose(2, 0, 3, 1)  # (NG, KQ, NR*16, 4)
        self.w8 = _aligned(np.ascontiguousarray(packed).reshape(ng, kp // 4, nr * 64))
        self.w32 = self.w8.view(np.int32).reshape(ng, kp // 4, nr * 16)
        self.colsum = np.zeros(npad, np.float32)  # exact: |colsum| <= 128 * 32768 = 2**22
        self.colsum[:n] = codes.astype(np.int64).sum(0)
        self.wsc = np.zeros(npad, np.float32)
        self.wsc[:n] = sc
        self.codes = np.ascontiguousarray(codes, np.int8)  # for references and re-packing
        self.scales = sc

    @property
    def nbytes(self) -> int:
        return int(self.w8.nbytes + self.colsum.nbytes + self.wsc.nbytes)

    def rescaled(self, factor) -> DynWeight:
        """This weight with its channel scales multiplied by ``factor`` ``(N,)`` (a fused
        per-channel affine epilogue); shares the packed codes."""
        out = object.__new__(DynWeight)
        out.__dict__.update(self.__dict__)
        f = np.asarray(factor, np.float32).reshape(-1)
        out.wsc = self.wsc.copy()
        out.wsc[: self.n] *= f
        out.scales = self.scales * f
        return out

    def _wview(self):
        return self.w32 if self.vnni else self.w8

    def _xview(self, q):
        return q.view(np.int32) if self.vnni else q


def dyn_weight(
    codes,
    scales,
    *,
    conv: bool = False,
    cin: int | None = None,
    kw: int | None = None,
    vnni: bool | None = None,
) -> DynWeight:
    """`DynWeight` (validating its arguments)."""
    return DynWeight(codes, scales, conv=conv, cin=cin, kw=kw, vnni=vnni)


def _bias(bias, w: DynWeight) -> np.ndarray:
    b = np.zeros(w.wsc.shape[0], np.float32)
    if bias is not None:
        b[: w.n] = np.asarray(bias, np.float32).reshape(-1)
    return b


_ACTS = {None: 0, "relu": 1, "relu6": 2}


def _act_code(act) -> int:
    if act not in _ACTS:
        raise JaxCompressValueError(f"act={act!r} must be None, 'relu' or 'relu6'")
    return _ACTS[act]


# ---------------------------------------------------------------------------------------------
# binders (closures over preallocated buffers: what the runtime's plan holds) and functions


def bind_linear(w: DynWeight, x2, y2, bias=None, act=None):
    """A zero-argument closure computing ``y2 (M, N) = dyn_linear(x2 (M, K))`` into ``y2``.
    ``x2``/``y2`` must be C-contiguous float32 of those shapes (not checked: the plan's)."""
    linear = _drivers(w.vnni)[0]
    m = x2.shape[0]
    q = np.zeros((m, w.kp), np.uint8)
    xv = w._xview(q)
    sx = np.zeros(m, np.float32)
    zx = np.zeros(m, np.int32)
    acc = np.zeros(w.wsc.shape[0], np.int32)
    b = _bias(bias, w)
    code = _act_code(act)
    wv, kq, cs, wsc, n = w._wview(), w.kp // 4, w.colsum, w.wsc, w.n
    return lambda: linear(x2, q, xv, wv, kq, cs, wsc, b, code, n, sx, zx, acc, y2)


def quantize_rows(x):
    """``(q (M, K) uint8, scales (M,) float32, zero_points (M,) int32)``: each row of the float32
    ``(M, K)`` array quantized as the kernels do (see the module docstring)."""
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2:
        raise JaxCompressValueError(f"x must be 2-D, got shape {x.shape}")
    q = np.zeros(x.shape, np.uint8)
    sx = np.zeros(x.shape[0], np.float32)
    zx = np.zeros(x.shape[0], np.int32)
    _quantize_rows_kernel(x, q, sx, zx)
    return q, sx, zx


def dyn_linear(x, w: DynWeight, bias=None, act=None) -> np.ndarray:
    """``act(dequant(quant(x)) @ dequant(w) + bias)`` computed in integers (see the module
    docstring); ``x`` ``(M, K)`` float32."""
    if not isinstance(w, DynWeight):
        raise JaxCompressTypeError(f"w must be a DynWeight, got {type(w).__name__}")
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != w.k:
        raise JaxCompressValueError(f"x.shape={x.shape} must be (M, {w.k})")
    y = np.empty((x.shape[0], w.n), np.float32)
    bind_linear(w, x, y, bias, act)()
    return y


class _ConvGeo:
    def __init__(self, xshape, kernel_hw, strides, dilation, pads, w: DynWeight):
        b, h, wd, c = xshape
        kh, kw = kernel_hw
        sh, sw = strides
        dh, dw = dilation
        (pt, pb), (pl, pr) = pads
        oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
        ow = (wd + pl + pr - (kw - 1) * dw - 1) // sw + 1
        if oh < 1 or ow < 1 or min(pt, pb, pl, pr) < 0:
            raise JaxCompressValueError(f"conv output would be empty for input {xshape}")
        self.out = (oh, ow)
        self.rows = b * oh * ow
        self.k = kh * kw * c
        # the padded quantized image: every tap of every output pixel lies inside it
        hp = max(h + pt + pb, (oh - 1) * sh + (kh - 1) * dh + 1)
        wp = max(wd + pl + pr, (ow - 1) * sw + (kw - 1) * dw + 1)
        ci = w.ci
        self.hp, self.wp, self.img = hp, wp, hp * wp * ci
        self.geo = np.array(
            [kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, hp, wp, ci, self.img], np.int64
        )
        if w.kw is not None:  # quads along each window row (kw * ci contiguous bytes)
            offs = [(u * dh) * wp * ci + 4 * q for u in range(kh) for q in range(w.seg // 4)]
        else:  # quads along each tap's (padded) channels
            offs = [
                ((u * dh) * wp + v * dw) * ci + 4 * q
                for u in range(kh)
                for v in range(kw)
                for q in range(w.seg // 4)
            ]
        self.offs = np.array(offs, np.int64)


def bind_conv2d(w: DynWeight, x, out2, *, kernel_hw, strides, dilation, pads, bias=None, act=None):
    """A closure computing the NHWC conv of ``x`` ``(B, H, W, C)`` float32 into ``out2``
    ``(B * OH * OW, N)`` float32: per-image input quantization into a zero-point-padded uint8
    image, then the implicit-GEMM tiles read each output pixel's taps straight from it (no
    im2col), then the epilogue. ``w`` packs the ``(KH * KW * C, N)`` weight (HWIO order,
    flattened) with ``conv=True, cin=C``."""
    if not w.conv:
        raise JaxCompressValueError(
            "w must be packed for convolutions (dyn_weight(..., conv=True, cin=C))"
        )
    if x.shape[-1] != w.cin:
        raise JaxCompressValueError(f"x has {x.shape[-1]} channels, the weight expects {w.cin}")
    if w.kw is not None and (w.kw != kernel_hw[1] or dilation[1] != 1):
        raise JaxCompressValueError(
            f"a weight packed by window rows (kw={w.kw}) needs kernel width {w.kw} and no "
            f"dilation along W, got {kernel_hw} and {dilation}"
        )
    g = _ConvGeo(x.shape, kernel_hw, strides, dilation, pads, w)
    if g.k != w.k:
        raise JaxCompressValueError(f"conv K={g.k} does not match the weight's K={w.k}")
    conv = _drivers(w.vnni)[2]
    qt = np.zeros(math.prod(x.shape[1:]), np.uint8)
    qp = np.zeros(x.shape[0] * g.img + 4, np.uint8)  # 4 bytes of slack: the last row's quads
    sx = np.zeros(x.shape[0], np.float32)
    zx = np.zeros(x.shape[0], np.int32)
    acc = np.zeros((g.rows + 7, w.wsc.shape[0]), np.int32)  # 7 slack rows: clamped tile rows
    ea = np.zeros(w.n, np.float32)
    ez = np.zeros(w.n, np.int32)
    b = _bias(bias, w)
    code = _act_code(act)
    wv, kq, cs, wsc, n, geo, offs = w._wview(), w.kp // 4, w.colsum, w.wsc, w.n, g.geo, g.offs
    return lambda: conv(
        x, qt, qp, geo, offs, wv, kq, cs, wsc, b, code, n, sx, zx, acc, ea, ez, out2
    )


def dyn_conv2d(x, w: DynWeight, *, kernel_hw, strides=(1, 1), dilation=(1, 1), pads=((0, 0),) * 2,
               bias=None, act=None) -> np.ndarray:  # fmt: skip
    """The dynamic-range NHWC conv of ``x`` ``(B, H, W, C)``: ``(B, OH, OW, N)`` float32."""
    if not isinstance(w, DynWeight):
        raise JaxCompressTypeError(f"w must be a DynWeight, got {type(w).__name__}")
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 4:
        raise JaxCompressValueError(f"x must be (B, H, W, C), got shape {x.shape}")
    if not w.conv:
        raise JaxCompressValueError(
            "w must be packed for convolutions (dyn_weight(..., conv=True, cin=C))"
        )
    g = _ConvGeo(x.shape, kernel_hw, strides, dilation, pads, w)
    y = np.empty((g.rows, w.n), np.float32)
    bind_conv2d(
        w, x, y, kernel_hw=kernel_hw, strides=strides, dilation=dilation, pads=pads, bias=bias,
        act=act,
    )()  # fmt: skip
    return y.reshape(x.shape[0], *g.out, w.n)


class DynChain:
    """Consecutive dynamic-range linear layers run in one compiled call (per row: quantize, GEMM,
    epilogue, next layer). ``layers``: ``[(DynWeight, bias | None, act)]`` with matching sizes,
    all on the same GEMM path; ``bind(x2, y2)`` returns the closure. The layers' packed weights
    and per-channel vectors are copied into flat buffers (the call then passes a handful of
    arrays, whatever the depth)."""

    def __init__(self, layers):
        if not layers:
            raise JaxCompressValueError("layers must not be empty")
        vnni = layers[0][0].vnni
        for i, (w, _, _) in enumerate(layers):
            if not isinstance(w, DynWeight) or w.vnni != vnni:
                raise JaxCompressValueError(f"layers[{i}] must be a DynWeight on the same path")
            if i and w.k != layers[i - 1][0].n:
                raise JaxCompressValueError(
                    f"layers[{i}] has K={w.k}, the previous layer N={layers[i - 1][0].n}"
                )
        self.layers = layers
        self.vnni = vnni
        wv = [w._wview().reshape(-1) for w, _, _ in layers]
        self.wflat = _aligned(np.concatenate(wv))  # every layer's block is 64-byte aligned
        vecs = [np.stack([w.colsum, w.wsc, _bias(b, w)]) for w, b, _ in layers]
        self.vflat = np.ascontiguousarray(np.concatenate(vecs, axis=1), np.float32)
        meta = []
        wo = vo = 0
        for (w, _, act), flat, vec in zip(layers, wv, vecs, strict=True):
            npad = vec.shape[1]
            meta.append([wo, w.ng, w.kp // 4, w.nr, w.n, vo, _act_code(act), npad])
            wo += flat.shape[0]
            vo += npad
        self.meta = np.array(meta, np.int64)
        self.qbuf = np.zeros(max(w.kp for w, _, _ in layers), np.uint8)
        self.fbuf = np.zeros((2, max(w.wsc.shape[0] for w, _, _ in layers)), np.float32)
        self.acc = np.zeros(max(w.wsc.shape[0] for w, _, _ in layers), np.int32)

    @property
    def nbytes(self) -> int:
        return int(self.wflat.nbytes + self.vflat.nbytes)

    def bind(self, x2, y2):
        """The closure ``y2 (M, N_last) = chain(x2 (M, K_0))``; ``x2`` and ``y2`` may overlap
        (the whole input is quantized before any output row is written)."""
        chain = _drivers(self.vnni)[1]
        m = x2.shape[0]
        qx = np.zeros((m, self.layers[0][0].kp), np.uint8)
        qxv = qx.view(np.int32) if self.vnni else qx
        sx = np.zeros(m, np.float32)
        zx = np.zeros(m, np.int32)
        qbuf = np.zeros(self.qbuf.shape, np.uint8)  # per binding: plans never share scratch
        q2 = qbuf.reshape(1, -1)
        qv = q2.view(np.int32) if self.vnni else q2
        fbuf = np.zeros(self.fbuf.shape, np.float32)
        acc = np.zeros(self.acc.shape, np.int32)
        wflat, vflat, meta = self.wflat, self.vflat, self.meta
        return lambda: chain(x2, qx, qxv, sx, zx, qbuf, qv, wflat, vflat, meta, fbuf, acc, y2)

    def __call__(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.layers[0][0].k:
            raise JaxCompressValueError(f"x.shape={x.shape} must be (M, {self.layers[0][0].k})")
        y = np.empty((x.shape[0], self.layers[-1][0].n), np.float32)
        self.bind(x, y)()
        return y
