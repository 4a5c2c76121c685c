"""Register microkernels of the direct NHWC convolutions (LLVM vector IR `intrinsic`s).

``conv_tileV`` (V = 1..4): ``P`` output pixels x ``V`` vectors of 16 output channels, the ``P * V``
partial sums held in ``<16 x float>`` SSA values (registers) over the whole reduction
``k = (kh, kw, ci)`` of length ``K``; per k step ``V`` vector loads of the packed weight row,
``P`` broadcasts of the input (one per pixel, from ``x[offs[p] + toff[k]]``) and ``P * V``
FMAs. The tap offset table ``toff`` (element offsets of ``(kh, kw, ci)`` relative to a pixel's
window origin in the padded input) makes strides, dilation and any input width one flat loop.
The sums start from the bias (row ``K`` of the packed weight); the activation (none / relu / relu6) is applied before the
store, and only the first ``npix`` pixels and ``nlast`` lanes of the last vector are written
(masked store), so the output keeps its unpadded channel count.

``dw_tileV`` / ``max_tileV``: depthwise (one input channel per output channel): ``P`` pixels x ``V``
channel vectors, per tap ``V`` weight loads, ``P * V`` contiguous input loads and FMAs; the last
vector's input loads are masked to ``nlast`` lanes (never reads past the channel run). The
``max`` variant (max pooling) replaces the FMA by ``llvm.maximum`` (NaN propagates, as
``lax.max``) and starts from the last weight row (``-inf``).

Why intrinsics: Numba loops keep accumulators in memory (a load and a store per FMA) and
re-check aliasing; LLVM keeps these SSA tiles in zmm registers (``vbroadcastss`` from memory,
``vfmadd231ps``). The IR is target independent (on AVX2 a vector is two ymm registers).
"""

from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "VL",
    "TILE_PIXELS",
    "DW_TILE_PIXELS",
    "conv_tile1",
    "conv_tile2",
    "conv_tile3",
    "conv_tile4",
    "dw_tile1",
    "dw_tile2",
    "dw_tile3",
    "dw_tile4",
    "max_tile1",
    "max_tile2",
    "max_tile3",
    "max_tile4",
]

VL = 16  # float lanes per vector
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_VF = ir.VectorType(_F32, VL)
_VM = ir.VectorType(_I1, VL)

# pixels per tile for V = 1..4 vectors of output channels: P * V <= 24 accumulators (+ V weight
# vectors) fit the 32 zmm registers, and the P input pointers (+ 5 loop registers) the 15 free
# general registers (P = 12 spilled both kinds in the generated asm)
TILE_PIXELS = {1: 10, 2: 10, 3: 8, 4: 6}
# depthwise tiles load an input vector per FMA (no reuse across channels): smaller tiles keep
# the masked loads of the last vector from spilling
DW_TILE_PIXELS = {1: 8, 2: 6, 3: 4, 4: 4}


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _splat(builder, scalar):
    undef = ir.Constant(_VF, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, VL), [0] * VL))


def _fmuladd(builder, a, b, c):
    fnty = ir.FunctionType(_VF, [_VF, _VF, _VF])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.v{VL}f32")
    return builder.call(fn, [a, b, c])


def _vptr(builder, ptr):
    return builder.bitcast(ptr, _VF.as_pointer())


def _lane_mask(builder, nlast):
    lanes = ir.Constant(ir.VectorType(_I64, VL), list(range(VL)))
    nv = builder.insert_element(ir.Constant(ir.VectorType(_I64, VL), ir.Undefined), nlast, _c(0))
    nv = builder.shuffle_vector(
        nv,
        ir.Constant(ir.VectorType(_I64, VL), ir.Undefined),
        ir.Constant(ir.VectorType(_I32, VL), [0] * VL),
    )
    return builder.icmp_unsigned("<", lanes, nv)


def _masked_store(builder, val, ptr, mask):
    fnty = ir.FunctionType(ir.VoidType(), [_VF, _VF.as_pointer(), _I32, _VM])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{VL}f32.p0")
    builder.call(fn, [val, _vptr(builder, ptr), ir.Constant(_I32, 4), mask])


def _masked_load(builder, ptr, mask):
    fnty = ir.FunctionType(_VF, [_VF.as_pointer(), _I32, _VM, _VF])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{VL}f32.p0")
    return builder.call(
        fn, [_vptr(builder, ptr), ir.Constant(_I32, 4), mask, ir.Constant(_VF, [0.0] * VL)]
    )


def _activate(builder, acc, act):
    """relu: max(acc, 0); relu6: min(max(acc, 0), 6); NaN passes through (like jnp.maximum)."""
    inf = float("inf")
    lo = builder.select(
        builder.icmp_signed(">=", act, _c(1)), ir.Constant(_F32, 0.0), ir.Constant(_F32, -inf)
    )
    hi = builder.select(
        builder.icmp_signed("==", act, _c(2)), ir.Constant(_F32, 6.0), ir.Constant(_F32, inf)
    )
    lov = _splat(builder, lo)
    hiv = _splat(builder, hi)
    acc = builder.select(builder.fcmp_ordered("<", acc, lov), lov, acc)
    return builder.select(builder.fcmp_ordered(">", acc, hiv), hiv, acc)


def _init_accs(builder, bbase, npixels, nvec):
    """npixels x nvec accumulator slots (promoted to registers), each starting at bbase[16 v:]."""
    start = [
        builder.load(_vptr(builder, builder.gep(bbase, [_c(VL * v)])), align=4) for v in range(nvec)
    ]
    return [
        [cgutils.alloca_once_value(builder, start[v]) for v in range(nvec)] for _ in range(npixels)
    ]


def _store_tile(builder, accs, obase, ostride, npix, nlast, act, npixels, nvec):
    mask = _lane_mask(builder, nlast)
    for p in range(npixels):
        with builder.if_then(builder.icmp_signed("<", _c(p), npix), likely=True):
            orow = builder.gep(obase, [builder.mul(_c(p), ostride)])
            for v in range(nvec):
                val = _activate(builder, builder.load(accs[p][v]), act)
                ptr = builder.gep(orow, [_c(VL * v)])
                if v < nvec - 1:
                    builder.store(val, _vptr(builder, ptr), align=4)
                else:
                    _masked_store(builder, val, ptr, mask)


@contextmanager
def _for_range_no_unroll(builder, count):
    """`cgutils.for_range` over ``[0, count)`` whose back edge carries
    ``llvm.loop.unroll.disable``: unrolling the k loop twice made LLVM hoist the second
    iteration's loads and spill accumulators of the larger tiles to the stack."""
    bbcond = builder.append_basic_block("k.cond")
    bbbody = builder.append_basic_block("k.body")
    bbend = builder.append_basic_block("k.end")
    bbstart = builder.basic_block
    builder.branch(bbcond)
    with builder.goto_block(bbcond):
        index = builder.phi(_I64, name="k")
        builder.cbranch(builder.icmp_signed("<", index, count), bbbody, bbend)
    with builder.goto_block(bbbody):
        yield index
        incr = builder.add(index, _c(1))
        br = builder.branch(bbcond)
        body_end = builder.basic_block
    index.add_incoming(_c(0), bbstart)
    index.add_incoming(incr, body_end)
    mod = builder.module
    md = mod.add_metadata([mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.unroll.disable")])])
    md.operands = (md, *md.operands)  # loop ids are self-referential nodes
    br.set_metadata("llvm.loop", md)
    builder.position_at_end(bbend)


def _arrays_ok(*arrs, dtypes):
    return all(
        isinstance(a, types.Array) and a.layout == "C" and a.dtype == d
        for a, d in zip(arrs, dtypes, strict=True)
    )


def _make_conv_tile(npixels: int, nvec: int):
    @intrinsic
    def tile(typingctx, x, offs, toff, w, c0, out, o0, ostride, npix, nlast, act):
        ints = (c0, o0, ostride, npix, nlast, act)
        f32, i64 = types.float32, types.int64
        if not (
            _arrays_ok(x, offs, toff, w, out, dtypes=(f32, i64, i64, f32, f32))
            and w.ndim == 2
            and all(isinstance(i, types.Integer) for i in ints)
        ):
            return None
        sig = types.void(x, offs, toff, w, c0, out, o0, ostride, npix, nlast, act)

        def codegen(context, builder, signature, args):
            return _conv_codegen(context, builder, signature, args, npixels, nvec)

        return sig, codegen

    return tile


def _conv_codegen(context, builder, signature, args, npixels, nvec):
    """out[o0 + p*ostride + j] = act(w[K, c0 + j] + sum_{k<K} x[offs[p] + toff[k]] * w[k, c0 + j])
    for p < npix, j < VL*(nvec-1) + nlast; K = len(toff), row K of w is the bias."""
    st = signature.args
    xa = context.make_array(st[0])(context, builder, args[0])
    oa = context.make_array(st[1])(context, builder, args[1])
    ta = context.make_array(st[2])(context, builder, args[2])
    wa = context.make_array(st[3])(context, builder, args[3])
    da = context.make_array(st[5])(context, builder, args[5])
    c0 = _as_i64(builder, args[4], st[4])
    o0 = _as_i64(builder, args[6], st[6])
    ostride = _as_i64(builder, args[7], st[7])
    npix = _as_i64(builder, args[8], st[8])
    nlast = _as_i64(builder, args[9], st[9])
    act = _as_i64(builder, args[10], st[10])
    kk = builder.extract_value(ta.shape, 0)
    ldw = builder.extract_value(wa.shape, 1)
    xptr = [
        builder.gep(xa.data, [builder.load(builder.gep(oa.data, [_c(p)]))]) for p in range(npixels)
    ]
    wbase = builder.gep(wa.data, [c0])
    bbase = builder.gep(wa.data, [builder.add(builder.mul(kk, ldw), c0)])  # bias: row K of w
    accs = _init_accs(builder, bbase, npixels, nvec)
    with _for_range_no_unroll(builder, kk) as k:
        t = builder.load(builder.gep(ta.data, [k]))
        wrow = builder.gep(wbase, [builder.mul(k, ldw)])
        wv = [
            builder.load(_vptr(builder, builder.gep(wrow, [_c(VL * v)])), align=4)
            for v in range(nvec)
        ]
        for p in range(npixels):
            xs = _splat(builder, builder.load(builder.gep(xptr[p], [t])))
            for v in range(nvec):
                a = accs[p][v]
                builder.store(_fmuladd(builder, wv[v], xs, builder.load(a)), a)
    obase = builder.gep(da.data, [o0])
    _store_tile(builder, accs, obase, ostride, npix, nlast, act, npixels, nvec)
    return context.get_dummy_value()


def _maximum(builder, a, b):
    """IEEE 754-2019 maximum: NaN if either input is NaN (as ``lax.max``)."""
    fnty = ir.FunctionType(_VF, [_VF, _VF])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.maximum.v{VL}f32")
    return builder.call(fn, [a, b])


def _make_dw_tile(npixels: int, nvec: int, op: str = "fma"):
    @intrinsic
    def tile(typingctx, x, offs, toff, w, c0, out, o0, ostride, npix, nlast, act):
        ints = (c0, o0, ostride, npix, nlast, act)
        f32, i64 = types.float32, types.int64
        if not (
            _arrays_ok(x, offs, toff, w, out, dtypes=(f32, i64, i64, f32, f32))
            and w.ndim == 2
            and all(isinstance(i, types.Integer) for i in ints)
        ):
            return None
        sig = types.void(x, offs, toff, w, c0, out, o0, ostride, npix, nlast, act)

        def codegen(context, builder, signature, args):
            return _dw_codegen(context, builder, signature, args, npixels, nvec, op)

        return sig, codegen

    return tile


def _dw_codegen(context, builder, signature, args, npixels, nvec, op):
    """out[o0 + p*ostride + j] = act(w[T, c0 + j] + sum_{t<T} x[offs[p] + toff[t] + c0 + j] * w[t, c0 + j])
    for p < npix, j < VL*(nvec-1) + nlast (toff: T tap offsets, w: (T + 1, Cp), bias last).
    op="max": acc = maximum(acc, x) instead (w's tap rows unused; its last row is the start)."""
    st = signature.args
    xa = context.make_array(st[0])(context, builder, args[0])
    oa = context.make_array(st[1])(context, builder, args[1])
    ta = context.make_array(st[2])(context, builder, args[2])
    wa = context.make_array(st[3])(context, builder, args[3])
    da = context.make_array(st[5])(context, builder, args[5])
    c0 = _as_i64(builder, args[4], st[4])
    o0 = _as_i64(builder, args[6], st[6])
    ostride = _as_i64(builder, args[7], st[7])
    npix = _as_i64(builder, args[8], st[8])
    nlast = _as_i64(builder, args[9], st[9])
    act = _as_i64(builder, args[10], st[10])
    kk = builder.extract_value(ta.shape, 0)
    ldw = builder.extract_value(wa.shape, 1)
    mask = _lane_mask(builder, nlast)
    xptr = [
        builder.gep(xa.data, [builder.add(builder.load(builder.gep(oa.data, [_c(p)])), c0)])
        for p in range(npixels)
    ]
    wbase = builder.gep(wa.data, [c0])
    bbase = builder.gep(wa.data, [builder.add(builder.mul(kk, ldw), c0)])  # bias: row K of w
    accs = _init_accs(builder, bbase, npixels, nvec)
    with _for_range_no_unroll(builder, kk) as k:
        t = builder.load(builder.gep(ta.data, [k]))
        wrow = builder.gep(wbase, [builder.mul(k, ldw)])
        wv = [
            builder.load(_vptr(builder, builder.gep(wrow, [_c(VL * v)])), align=4)
            if op == "fma"
            else None
            for v in range(nvec)
        ]
        for p in range(npixels):
            xrow = builder.gep(xptr[p], [t])
            for v in range(nvec):
                ptr = builder.gep(xrow, [_c(VL * v)])
                if v < nvec - 1:
                    xv = builder.load(_vptr(builder, ptr), align=4)
                else:
                    xv = _masked_load(builder, ptr, mask)
                a = accs[p][v]
                if op == "max":
                    builder.store(_maximum(builder, builder.load(a), xv), a)
                else:
                    builder.store(_fmuladd(builder, wv[v], xv, builder.load(a)), a)
    obase = builder.gep(da.data, [o0])
    _store_tile(builder, accs, obase, ostride, npix, nlast, act, npixels, nvec)
    return context.get_dummy_value()


conv_tile1 = _make_conv_tile(TILE_PIXELS[1], 1)
conv_tile2 = _make_conv_tile(TILE_PIXELS[2], 2)
conv_tile3 = _make_conv_tile(TILE_PIXELS[3], 3)
conv_tile4 = _make_conv_tile(TILE_PIXELS[4], 4)
dw_tile1 = _make_dw_tile(DW_TILE_PIXELS[1], 1)
dw_tile2 = _make_dw_tile(DW_TILE_PIXELS[2], 2)
dw_tile3 = _make_dw_tile(DW_TILE_PIXELS[3], 3)
dw_tile4 = _make_dw_tile(DW_TILE_PIXELS[4], 4)
max_tile1 = _make_dw_tile(DW_TILE_PIXELS[1], 1, "max")
max_tile2 = _make_dw_tile(DW_TILE_PIXELS[2], 2, "max")
max_tile3 = _make_dw_tile(DW_TILE_PIXELS[3], 3, "max")
max_tile4 = _make_dw_tile(DW_TILE_PIXELS[4], 4, "max")
