"""The small-batch packed low-bit matmul on the "lanes" layout, written as portable LLVM vector IR.

One call computes, for one block ``b`` of ``LANE_BLOCK = 128`` output channels and rows
``r0 .. r0 + rows - 1`` of x, the block's outputs over all of K and adds them to
``o[r0 + r, 0:128]``. Storage (see ``formats._lanes_layout``): ``d[b, gi, kk, :]`` holds the
block's codes at ``k = gi * g + kk`` (4-bit: byte c = channel c low nibble, channel c + 64 high
nibble; 8-bit: int8 ``u - 128``), ``s[b, gi, :]`` the scales, ``zs[b, gi, :] = s * z`` (empty
for symmetric weights: ``z = 8`` for 4-bit, ``z - 128 = 0`` for 8-bit).

- ``lanes_dot`` / ``lanes_dot2`` (compute="float32"): per group and row, 8 accumulators
  ``<16 x float>`` (the 128 channels) live in registers over the group (long groups: over
  sub-blocks of 32 / 16 / 8 k's, then added to the group sums). Per k, one 64- (4-bit) or
  128-byte (8-bit) load; 8-bit codes are widened and converted (``vpmovsxbd`` + ``vcvtdq2ps``);
  4-bit codes, on AVX-512, are looked up in a 16-entry float table with ``vpermps`` (which reads
  the low 4 bits of each 32-bit index: 7 shifts + 8 look-ups, no widening or conversion; codes
  ``u - 8`` for symmetric weights, so no ``8 sum(x)`` correction), the lanes then holding channels
  ``4 l + j`` until one un-permute per group; elsewhere split with ``and`` / ``lshr``, widened and
  converted. Then 8 FMAs with the broadcast ``x[k]``; at the group end ``o += s * acc``
  (symmetric; portable 4-bit path ``s * (acc - 8 * sum_group(x))``) or
  ``o += s * acc - zs * sum_group(x)`` (affine). ``lanes_dot2`` does two rows sharing the decode.
- ``lanes_dot_int`` / ``lanes_dot_int2`` (compute="int8"; x rounded per block of ``blk`` k's to
  int16-held int8 codes ``xq``): per block of x, 4-bit codes are summed as ``xq * u`` in
  ``<32 x i16>`` lanes (exact modulo 2**16, and the true value ``sum xq (u - 8)`` fits int16:
  ``|.| <= 32 * 8 * 127``), then ``- 8 * sum(xq)``; 8-bit centred codes as int16 pairs
  ``xq[k] c[k] + xq[k+1] c[k+1]`` (``|.| <= 2 * 127 * 128``) widened to ``<32 x i32>`` sums.
  Each block's integer sum is converted once and scaled by the block's x scale into float
  accumulators; the group end applies the weight scales as above.

Why an intrinsic: the Numba loops kept the partial sums in heap arrays (a load and a store per 4
k's), and with a loop over 64 or 128 bytes only, their per-k overhead dominated; the cache-flushed
time was compute plus memory. Here every accumulator is an SSA value, nothing is re-checked for
aliasing, and a software prefetch `PREFETCH_BYTES` ahead into L2 (``llvm.prefetch`` locality 1,
one per 64-byte line of codes; scales `PREFETCH_GROUPS` groups ahead) overlaps the DRAM reads with
the arithmetic. The IR is target independent: LLVM lowers ``<16 x float>`` to one AVX-512 register,
two AVX2 or four NEON ones.

The arguments are trusted: C-contiguous arrays of a validated weight's lanes layout, x of shape
``(M, Kp)`` (Kp = ng * g), ``xsum`` ``(M, ng)``, ``0 <= b < nb``, ``r0 + rows <= M``, ``o`` float32
``(M, 128)``.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "lanes_dot",
    "lanes_dot_table",
    "lanes_dot2",
    "lanes_dot_int",
    "lanes_dot_int2",
    "PREFETCH_BYTES",
]

PREFETCH_BYTES = 4096  # software prefetch distance on the codes stream
PREFETCH_GROUPS = 8  # scales are prefetched this many groups ahead
_PREFETCH_LOCALITY = 1  # into L2 (x86 prefetcht2)
_CB = 128  # channels per block (formats.LANE_BLOCK)

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _vec(ty, n):
    return ir.VectorType(ty, n)


def _const_vec(ty, n, v):
    return ir.Constant(_vec(ty, n), [v] * n)


def _splat(builder, scalar, n):
    vty = _vec(scalar.type, n)
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(_vec(_I32, n), [0] * n))


def _slice(builder, v, start, n):
    return builder.shuffle_vector(
        v,
        ir.Constant(v.type, ir.Undefined),
        ir.Constant(_vec(_I32, n), list(range(start, start + n))),
    )


def _prefetch(builder, base_i8, offset_bytes):
    fnty = ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    ptr = builder.gep(base_i8, [offset_bytes])  # no inbounds: may point past the array
    builder.call(
        fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, _PREFETCH_LOCALITY), ir.Constant(_I32, 1)]
    )


def _fmuladd(builder, a, b, c):
    n = a.type.count
    vty = _vec(_F32, n)
    fnty = ir.FunctionType(vty, [vty, vty, vty])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.v{n}f32")
    return builder.call(fn, [a, b, c])


def _load_vec(builder, ptr, vty):
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)


def _store_vec(builder, v, ptr):
    builder.store(v, builder.bitcast(ptr, v.type.as_pointer()), align=4)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _is_c(*arrs):
    return all(isinstance(a, types.Array) and a.layout == "C" for a in arrs)


class _Common:
    """Pointers and shapes shared by both codegens."""

    def __init__(self, context, builder, dty, d, sty, s, zsty, zs, oty, o, b, bty):
        self.da = context.make_array(dty)(context, builder, d)
        self.sa = context.make_array(sty)(context, builder, s)
        self.za = context.make_array(zsty)(context, builder, zs)
        self.oa = context.make_array(oty)(context, builder, o)
        self.ng = builder.extract_value(self.da.shape, 1)
        self.g = builder.extract_value(self.da.shape, 2)
        self.h = builder.extract_value(self.da.shape, 3)  # bytes per k: 64 (4-bit) or 128 (8-bit)
        self.b = _as_i64(builder, b, bty)
        self.affine = builder.icmp_signed("!=", builder.extract_value(self.za.shape, 0), _c(0))
        self.dbytes = builder.bitcast(self.da.data, _I8.as_pointer())
        self.sbytes = builder.bitcast(self.sa.data, _I8.as_pointer())
        self.zbytes = builder.bitcast(self.za.data, _I8.as_pointer())

    def group_prologue(self, builder, gi):
        """Prefetch the scales PREFETCH_GROUPS ahead; returns (codes pointer, scale offset)."""
        bg = builder.add(builder.mul(self.b, self.ng), gi)
        soff = builder.mul(bg, _c(_CB))  # float index of s[b, gi, 0]
        pf = builder.mul(builder.add(soff, _c(PREFETCH_GROUPS * _CB)), _c(4))
        with builder.if_then(self.affine):
            for line in range(0, _CB * 4, 64):
                _prefetch(builder, self.zbytes, builder.add(pf, _c(line)))
        for line in range(0, _CB * 4, 64):
            _prefetch(builder, self.sbytes, builder.add(pf, _c(line)))
        dg = builder.gep(self.dbytes, [builder.mul(builder.mul(bg, self.g), self.h)])
        return dg, soff

    def decode_k(self, builder, dg, kk, q4, width):
        """Prefetch ahead and load the codes of row kk: returns the 128 channel values as
        128 / width vectors of `width` integers (i8, in channel order), zero-extended (4-bit) or
        signed (8-bit) later by the caller."""
        off = builder.mul(kk, self.h)
        for line in range(0, 64 if q4 else 128, 64):
            _prefetch(builder, dg, builder.add(off, _c(PREFETCH_BYTES + line)))
        p = builder.gep(dg, [off])
        if q4:
            v = _load_vec(builder, p, _vec(_I8, 64))
            lo = builder.and_(v, _const_vec(_I8, 64, 15))
            hi = builder.lshr(v, _const_vec(_I8, 64, 4))
            return [_slice(builder, u, j, width) for u in (lo, hi) for j in range(0, 64, width)]
        v = _load_vec(builder, p, _vec(_I8, 128))
        return [_slice(builder, v, j, width) for j in range(0, 128, width)]

    def group_epilogue(self, builder, r, soff, accs, xs, q4, width, zs_minus_8s):
        """o[r, :] += s * acc - zs' * xs, with xs the group's x sum and the zero-point term
        ``zs' = zs`` (affine) or ``8 s`` (4-bit symmetric; 0 for 8-bit symmetric)."""
        n = width
        vty = _vec(_F32, n)
        orow = builder.gep(self.oa.data, [builder.mul(r, _c(_CB))])
        xsv = _splat(builder, xs, n)
        for j, acc in enumerate(accs):
            sv = _load_vec(builder, builder.gep(self.sa.data, [builder.add(soff, _c(j * n))]), vty)
            op = builder.gep(orow, [_c(j * n)])
            ov = _load_vec(builder, op, vty)
            if q4 and not zs_minus_8s:
                # symmetric: s * (acc - 8 xs); affine: s * acc - zs * xs
                e8 = builder.fmul(xsv, _const_vec(_F32, n, 8.0))
                sym = builder.fadd(ov, builder.fmul(sv, builder.fsub(acc, e8)))
            else:
                sym = _fmuladd(builder, sv, acc, ov)
            with builder.if_else(self.affine) as (then_aff, then_sym):
                with then_aff:
                    zp = builder.gep(self.za.data, [builder.add(soff, _c(j * n))])
                    zv = _load_vec(builder, zp, vty)
                    if zs_minus_8s:  # the integer sums already subtracted 8 sum(x)
                        zv = builder.fsub(zv, builder.fmul(sv, _const_vec(_F32, n, 8.0)))
                    # a zero point of 0 contributes exactly 0 (not 0 * inf = NaN when x holds
                    # an inf: the twin's x @ dequant(W) gives inf there)
                    zero = _const_vec(_F32, n, 0.0)
                    zx = builder.fmul(zv, xsv)
                    zx = builder.select(builder.fcmp_ordered("==", zv, zero), zero, zx)
                    aff = builder.fsub(_fmuladd(builder, sv, acc, ov), zx)
                    _store_vec(builder, aff, op)
                with then_sym:
                    _store_vec(builder, sym, op)


def _make_float(rows):
    @intrinsic
    def lanes_dot_f(typingctx, x, r0, xsum, d, s, zs, b, o):
        if not (
            _is_c(x, xsum, d, s, zs, o)
            and isinstance(r0, types.Integer)
            and isinstance(b, types.Integer)
            and x.dtype == xsum.dtype == s.dtype == zs.dtype == o.dtype == types.float32
            and d.dtype in (types.uint8, types.int8)
            and (x.ndim, xsum.ndim, d.ndim, s.ndim, zs.ndim, o.ndim) == (2, 2, 4, 3, 3, 2)
        ):
            return None
        sig = types.void(x, r0, xsum, d, s, zs, b, o)
        return sig, lambda context, builder, signature, args: _codegen_float(
            context, builder, signature, args, rows
        )

    return lanes_dot_f


def _make_float_table(rows):
    """As `_make_float`, with a 16-float table ``t`` the 4-bit codes index (a codebook): the
    stored nibble u decodes to ``t[u]`` through ``vpermps`` (AVX-512 hosts only: callers check
    `_use_permvar`)."""

    @intrinsic
    def lanes_dot_t(typingctx, x, r0, xsum, d, s, zs, b, o, t):
        if not (
            _is_c(x, xsum, d, s, zs, o, t)
            and isinstance(r0, types.Integer)
            and isinstance(b, types.Integer)
            and x.dtype == xsum.dtype == s.dtype == zs.dtype == o.dtype == t.dtype == types.float32
            and d.dtype == types.uint8
            and (x.ndim, xsum.ndim, d.ndim, s.ndim, zs.ndim, o.ndim, t.ndim)
            == (2, 2, 4, 3, 3, 2, 1)
        ):
            return None
        sig = types.void(x, r0, xsum, d, s, zs, b, o, t)
        return sig, lambda context, builder, signature, args: _codegen_float(
            context, builder, signature, args, rows
        )

    return lanes_dot_t


def _codegen_float(context, builder, signature, args, rows):
    xty, r0ty, xsty, dty, sty, zsty, bty, oty = signature.args[:8]
    q4 = dty.dtype == types.uint8
    cm = _Common(
        context, builder, dty, args[3], sty, args[4], zsty, args[5], oty, args[7], args[6], bty
    )
    xa = context.make_array(xty)(context, builder, args[0])
    xsa = context.make_array(xsty)(context, builder, args[2])
    r0 = _as_i64(builder, args[1], r0ty)
    kp = builder.extract_value(xa.shape, 1)
    ng = cm.ng
    n = 16
    vty = _vec(_F32, n)
    zero = ir.Constant(vty, [0.0] * n)
    accs = [
        [cgutils.alloca_once_value(builder, zero) for _ in range(_CB // n)] for _ in range(rows)
    ]
    subs = [
        [cgutils.alloca_once_value(builder, zero) for _ in range(_CB // n)] for _ in range(rows)
    ]
    # sums over sub-blocks of `sub` k's, added into the group sums (long per-channel groups keep
    # float32 accuracy: error ~ (sub + g / sub) eps rather than g eps)
    g = cm.g
    sub = builder.select(
        builder.icmp_signed("==", builder.srem(g, _c(32)), _c(0)),
        _c(32),
        builder.select(builder.icmp_signed("==", builder.srem(g, _c(16)), _c(0)), _c(16), _c(8)),
    )
    nsub = builder.sdiv(g, sub)
    lut = None
    if len(args) == 9:  # a caller-given table (codebook): 16 floats, loaded once
        ta = context.make_array(signature.args[8])(context, builder, args[8])
        lut = _load_vec(builder, ta.data, vty)
    elif q4 and _use_permvar():  # code -> float table: u (affine) or u - 8 (symmetric)
        lut = builder.select(
            cm.affine,
            ir.Constant(vty, [float(u) for u in range(16)]),
            ir.Constant(vty, [float(u - 8) for u in range(16)]),
        )
    with cgutils.for_range(builder, ng) as gl:
        gi = gl.index
        dg, soff = cm.group_prologue(builder, gi)
        for ra in accs:
            for a in ra:
                builder.store(zero, a)
        k0 = builder.mul(gi, g)
        xrows = [
            builder.gep(xa.data, [builder.add(builder.mul(builder.add(r0, _c(r)), kp), k0)])
            for r in range(rows)
        ]
        with cgutils.for_range(builder, nsub) as sl:
            kb = builder.mul(sl.index, sub)
            for ra in subs:
                for a in ra:
                    builder.store(zero, a)
            with cgutils.for_range_slice(builder, kb, builder.add(kb, sub), _c(2)) as (kq, _):
                for u in range(2):
                    kk = builder.add(kq, _c(u))
                    if lut is not None:
                        fv = _lut_decode(builder, cm, dg, kk, lut)
                    else:
                        vals = cm.decode_k(builder, dg, kk, q4, n)
                        fv = [
                            builder.uitofp(builder.zext(v, _vec(_I32, n)), vty)
                            if q4
                            else builder.sitofp(builder.sext(v, _vec(_I32, n)), vty)
                            for v in vals
                        ]
                    for r in range(rows):
                        xk = _splat(builder, builder.load(builder.gep(xrows[r], [kk])), n)
                        for j, a in enumerate(subs[r]):
                            builder.store(_fmuladd(builder, fv[j], xk, builder.load(a)), a)
            for r in range(rows):
                for a, t in zip(accs[r], subs[r], strict=True):
                    builder.store(builder.fadd(builder.load(a), builder.load(t)), a)
        for r in range(rows):
            rr = builder.add(r0, _c(r))
            xs = builder.load(builder.gep(xsa.data, [builder.add(builder.mul(rr, ng), gi)]))
            acc = [builder.load(a) for a in accs[r]]
            if lut is not None:  # lanes hold channels 4 l + j: back to channel order
                acc = _unpermute(builder, acc[:4]) + _unpermute(builder, acc[4:])
            # with the LUT, symmetric codes are already centred (u - 8)
            cm.group_epilogue(builder, rr, soff, acc, xs, q4 and lut is None, n, False)
    return context.get_dummy_value()


def _use_permvar() -> bool:
    """True if the host has AVX-512 (vpermps decodes 16 nibbles in one instruction) and Numba
    compiles for the host CPU."""
    import llvmlite.binding as ll
    from numba.core import config

    if config.CPU_NAME not in (None, "host"):
        return False
    try:
        return bool(ll.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:
        return False


def _permvar(builder, table, idx):
    vty = _vec(_F32, 16)
    fnty = ir.FunctionType(vty, [vty, _vec(_I32, 16)])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.permvar.sf.512")
    return builder.call(fn, [table, idx])


def _lut_decode(builder, cm, dg, kk, lut):
    """4-bit row kk as 8 float vectors through a 16-entry table (vpermps reads the low 4 bits of
    each 32-bit index): dword l of the 64 bytes holds channels 4 l + j (j = 0..3, low nibbles at
    bits 8 j) and 64 + 4 l + j (bits 8 j + 4); vector j < 4 gets channels 4 l + j, vector 4 + j
    channels 64 + 4 l + j, i.e. shifts and table look-ups only, no widening or conversion."""
    off = builder.mul(kk, cm.h)
    _prefetch(builder, dg, builder.add(off, _c(PREFETCH_BYTES)))
    v = _load_vec(builder, builder.gep(dg, [off]), _vec(_I32, 16))
    out = []
    for sh in (0, 8, 16, 24, 4, 12, 20, 28):
        idx = v if sh == 0 else builder.lshr(v, _const_vec(_I32, 16, sh))
        out.append(_permvar(builder, lut, idx))
    return out


def _unpermute(builder, p):
    """p[j][l] = channel 4 l + j (j < 4) -> 4 vectors of channels 16 q .. 16 q + 15."""
    i32 = lambda vals: ir.Constant(_vec(_I32, len(vals)), vals)  # noqa: E731
    t01 = builder.shuffle_vector(p[0], p[1], i32(list(range(32))))
    t23 = builder.shuffle_vector(p[2], p[3], i32(list(range(32))))
    t = builder.shuffle_vector(t01, t23, i32(list(range(64))))
    undef = ir.Constant(t.type, ir.Undefined)
    return [
        builder.shuffle_vector(t, undef, i32([(i % 4) * 16 + 4 * q + i // 4 for i in range(16)]))
        for q in range(4)
    ]


def _make_int(rows):
    @intrinsic
    def lanes_dot_i(typingctx, xq, r0, xsq, sx, xs, d, s, zs, blk, b, o):
        if not (
            _is_c(xq, xsq, sx, xs, d, s, zs, o)
            and isinstance(r0, types.Integer)
            and isinstance(b, types.Integer)
            and isinstance(blk, types.Integer)
            and xq.dtype == types.int16
            and xsq.dtype == types.int32
            and sx.dtype == xs.dtype == s.dtype == zs.dtype == o.dtype == types.float32
            and d.dtype in (types.uint8, types.int8)
            and (xq.ndim, xsq.ndim, sx.ndim, xs.ndim, d.ndim, s.ndim, zs.ndim, o.ndim)
            == (2, 2, 2, 2, 4, 3, 3, 2)
        ):
            return None
        sig = types.void(xq, r0, xsq, sx, xs, d, s, zs, blk, b, o)
        return sig, lambda context, builder, signature, args: _codegen_int(
            context, builder, signature, args, rows
        )

    return lanes_dot_i


def _codegen_int(context, builder, signature, args, rows):
    xqty, r0ty, xsqty, sxty, xsty, dty, sty, zsty, blkty, bty, oty = signature.args
    q4 = dty.dtype == types.uint8
    cm = _Common(
        context, builder, dty, args[5], sty, args[6], zsty, args[7], oty, args[10], args[9], bty
    )
    xqa = context.make_array(xqty)(context, builder, args[0])
    xsqa = context.make_array(xsqty)(context, builder, args[2])
    sxa = context.make_array(sxty)(context, builder, args[3])
    xsa = context.make_array(xsty)(context, builder, args[4])
    r0 = _as_i64(builder, args[1], r0ty)
    blk = _as_i64(builder, args[8], blkty)
    kp = builder.extract_value(xqa.shape, 1)
    nblk = builder.extract_value(xsqa.shape, 1)
    ng = cm.ng
    nsub = builder.sdiv(cm.g, blk)
    n = 32
    fty = _vec(_F32, n)
    ity = _vec(_I16 if q4 else _I32, n)
    i16 = _vec(_I16, n)
    fzero = ir.Constant(fty, [0.0] * n)
    izero = ir.Constant(ity, [0] * n)
    faccs = [
        [cgutils.alloca_once_value(builder, fzero) for _ in range(_CB // n)] for _ in range(rows)
    ]
    iaccs = [
        [cgutils.alloca_once_value(builder, izero) for _ in range(_CB // n)] for _ in range(rows)
    ]
    with cgutils.for_range(builder, ng) as gl:
        gi = gl.index
        dg, soff = cm.group_prologue(builder, gi)
        for ra in faccs:
            for a in ra:
                builder.store(fzero, a)
        with cgutils.for_range(builder, nsub) as sl:
            sb = sl.index
            for ra in iaccs:
                for a in ra:
                    builder.store(izero, a)
            kb = builder.mul(sb, blk)  # k offset of the block in the group
            k0 = builder.add(builder.mul(gi, cm.g), kb)
            xrows = [
                builder.gep(xqa.data, [builder.add(builder.mul(builder.add(r0, _c(r)), kp), k0)])
                for r in range(rows)
            ]
            with cgutils.for_range_slice(builder, _c(0), blk, _c(2)) as (kq, _):
                if q4:
                    for u in range(2):
                        kk = builder.add(kq, _c(u))
                        vals = [
                            builder.zext(v, i16)
                            for v in cm.decode_k(builder, dg, builder.add(kb, kk), True, n)
                        ]
                        for r in range(rows):
                            xk = _splat(builder, builder.load(builder.gep(xrows[r], [kk])), n)
                            for j, a in enumerate(iaccs[r]):
                                builder.store(
                                    builder.add(builder.load(a), builder.mul(vals[j], xk)), a
                                )
                else:
                    kk1 = builder.add(kq, _c(1))
                    v0 = [
                        builder.sext(v, i16)
                        for v in cm.decode_k(builder, dg, builder.add(kb, kq), False, n)
                    ]
                    v1 = [
                        builder.sext(v, i16)
                        for v in cm.decode_k(builder, dg, builder.add(kb, kk1), False, n)
                    ]
                    for r in range(rows):
                        x0 = _splat(builder, builder.load(builder.gep(xrows[r], [kq])), n)
                        x1 = _splat(builder, builder.load(builder.gep(xrows[r], [kk1])), n)
                        for j, a in enumerate(iaccs[r]):
                            p = builder.add(builder.mul(v0[j], x0), builder.mul(v1[j], x1))
                            builder.store(builder.add(builder.load(a), builder.sext(p, ity)), a)
            for r in range(rows):
                rr = builder.add(r0, _c(r))
                bi = builder.add(builder.mul(rr, nblk), builder.add(builder.mul(gi, nsub), sb))
                f = _splat(builder, builder.load(builder.gep(sxa.data, [bi])), n)
                if q4:
                    xsum = builder.load(builder.gep(xsqa.data, [bi]))
                    corr = _splat(
                        builder, builder.trunc(builder.mul(xsum, ir.Constant(_I32, 8)), _I16), n
                    )
                for j in range(_CB // n):
                    t = builder.load(iaccs[r][j])
                    if q4:
                        t = builder.sext(builder.sub(t, corr), _vec(_I32, n))
                    fa = faccs[r][j]
                    builder.store(
                        _fmuladd(builder, f, builder.sitofp(t, fty), builder.load(fa)), fa
                    )
        for r in range(rows):
            rr = builder.add(r0, _c(r))
            xs = builder.load(builder.gep(xsa.data, [builder.add(builder.mul(rr, ng), gi)]))
            cm.group_epilogue(builder, rr, soff, [builder.load(a) for a in faccs[r]], xs, q4, n, q4)
    return context.get_dummy_value()


lanes_dot = _make_float(1)
lanes_dot_table = _make_float_table(1)
lanes_dot2 = _make_float(2)
lanes_dot_int = _make_int(1)
lanes_dot_int2 = _make_int(2)
