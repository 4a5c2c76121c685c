"""Register microkernels of the direct NHWC convolutions (LLVM vector IR `intrinsic`s).

``conv_tile{V}[h]`` (V = 0..4 vectors of 16 output channels, ``h``: one more vector of 8, so a
block covers 8, 16, 24, ..., 64 channels): ``P`` output pixels x those vectors, the partial sums
held in ``<16 x float>`` / ``<8 x float>`` SSA values (registers) over the whole reduction
``k = (kh, kw, ci)`` of length ``K``; per k step ``V`` vector loads of the packed weight row,
``P`` broadcasts of the input (one per pixel, from ``x[offs[p] + toff[k]]``) and ``P * V``
FMAs. The 8-lane tail halves the padding waste of channel counts such as 20 (16 + 8 instead of
2 x 16) or 8 (MobileNet-0.25): on Zen 4 a 256-bit FMA costs half a 512-bit one. The tap offset table ``toff`` (element offsets of ``(kh, kw, ci)`` relative to a pixel's
window origin in the padded input) makes strides, dilation and any input width one flat loop.
The sums start from the bias (row ``K`` of the packed weight); the activation (none / relu / relu6) is applied before the
store, and only the first ``npix`` pixels and ``nlast`` lanes of the last vector are written
(masked store), so the output keeps its unpadded channel count.

``dw_tile{V}[h]`` / ``max_tile{V}[h]``: depthwise (one input channel per output channel): ``P`` pixels x ``V``
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
    *[
        f"{kind}_tile{v}{h}"
        for kind in ("conv", "dw", "max")
        for v, h in ((1, ""), (2, ""), (3, ""), (4, ""), (0, "h"), (1, "h"), (2, "h"), (3, "h"))
    ],
    "DW3_PIXELS",
    *[f"dw3_tile{p}s{s}w{w}" for p in (8, 4, 2, 1) for s in (1, 2) for w in (16, 8)],
    *[f"dw3_tile{p}s{s}v4" for p in (4, 2, 1) for s in (1, 2)],
]

VL = 16  # float lanes per full vector
HALF = 8  # lanes of the optional tail vector
_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()

# pixels per tile by the number of channel vectors (a tail vector counts as one): P * V <= 24
# accumulators (+ V weight vectors) fit the 32 zmm registers, and the P input pointers (+ 5 loop
# registers) the 15 free general registers (P = 12 spilled both kinds in the generated asm)
TILE_PIXELS = {1: 10, 2: 10, 3: 8, 4: 6}
# depthwise tiles load an input vector per FMA (no reuse across channels): smaller tiles keep
# the masked loads of the last vector from spilling
DW_TILE_PIXELS = {1: 8, 2: 6, 3: 4, 4: 4}


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)


def _vty(n):
    return ir.VectorType(_F32, n)


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _splat(builder, scalar, n):
    undef = ir.Constant(_vty(n), ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _fmuladd(builder, a, b, c):
    n = a.type.count
    fnty = ir.FunctionType(_vty(n), [_vty(n)] * 3)
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.v{n}f32")
    return builder.call(fn, [a, b, c])


def _maximum(builder, a, b):
    """IEEE 754-2019 maximum: NaN if either input is NaN (as ``lax.max``)."""
    n = a.type.count
    fnty = ir.FunctionType(_vty(n), [_vty(n)] * 2)
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.maximum.v{n}f32")
    return builder.call(fn, [a, b])


def _vptr(builder, ptr, n):
    return builder.bitcast(ptr, _vty(n).as_pointer())


def _vload(builder, ptr, n):
    return builder.load(_vptr(builder, ptr, n), align=4)


def _lane_mask(builder, nlast, n):
    vi = ir.VectorType(_I64, n)
    nv = builder.insert_element(ir.Constant(vi, ir.Undefined), nlast, _c(0))
    nv = builder.shuffle_vector(
        nv, ir.Constant(vi, ir.Undefined), ir.Constant(ir.VectorType(_I32, n), [0] * n)
    )
    return builder.icmp_unsigned("<", ir.Constant(vi, list(range(n))), nv)


def _masked_store(builder, val, ptr, mask):
    n = val.type.count
    vm = ir.VectorType(_I1, n)
    fnty = ir.FunctionType(ir.VoidType(), [_vty(n), _vty(n).as_pointer(), _I32, vm])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{n}f32.p0")
    builder.call(fn, [val, _vptr(builder, ptr, n), ir.Constant(_I32, 4), mask])


def _masked_load(builder, ptr, mask, n):
    vm = ir.VectorType(_I1, n)
    fnty = ir.FunctionType(_vty(n), [_vty(n).as_pointer(), _I32, vm, _vty(n)])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{n}f32.p0")
    zero = ir.Constant(_vty(n), [0.0] * n)
    return builder.call(fn, [_vptr(builder, ptr, n), ir.Constant(_I32, 4), mask, zero])


def _activate(builder, acc, act):
    """relu: max(acc, 0); relu6: min(max(acc, 0), 6); NaN passes through (like jnp.maximum)."""
    n = acc.type.count
    inf = float("inf")
    lo = builder.select(
        builder.icmp_signed(">=", act, _c(1)), ir.Constant(_F32, 0.0), ir.Constant(_F32, -inf)
    )
    hi = builder.select(
        builder.icmp_signed("==", act, _c(2)), ir.Constant(_F32, 6.0), ir.Constant(_F32, inf)
    )
    lov = _splat(builder, lo, n)
    hiv = _splat(builder, hi, n)
    acc = builder.select(builder.fcmp_ordered("<", acc, lov), lov, acc)
    return builder.select(builder.fcmp_ordered(">", acc, hiv), hiv, acc)


def _init_accs(builder, bbase, npixels, widths):
    """npixels x len(widths) accumulator slots (promoted to registers), vector v starting at
    bbase[16 v:]."""
    start = [_vload(builder, builder.gep(bbase, [_c(VL * v)]), n) for v, n in enumerate(widths)]
    return [[cgutils.alloca_once_value(builder, s) for s in start] for _ in range(npixels)]


def _store_tile(builder, accs, obase, ostride, npix, nlast, act, npixels, widths):
    nvec = len(widths)
    mask = _lane_mask(builder, nlast, widths[-1])
    for p in range(npixels):
        with builder.if_then(builder.icmp_signed("<", _c(p), npix), likely=True):
            orow = builder.gep(obase, [builder.mul(_c(p), ostride)])
            for v in range(nvec):
                val = _activate(builder, builder.load(accs[p][v]), act)
                ptr = builder.gep(orow, [_c(VL * v)])
                if v < nvec - 1:
                    builder.store(val, _vptr(builder, ptr, widths[v]), align=4)
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


def _make_tile(npixels: int, widths: tuple[int, ...], op: str):
    """op: "conv" (broadcast x, FMA), "dw" (vector x, FMA) or "max" (vector x, maximum)."""

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
            return _codegen(context, builder, signature, args, npixels, widths, op)

        return sig, codegen

    return tile


def _codegen(context, builder, signature, args, npixels, widths, op):
    """conv: out[o0 + p*ostride + j] = act(w[K, c0 + j] + sum_{k<K} x[offs[p] + toff[k]] w[k, c0 + j]);
    dw:   out[o0 + p*ostride + j] = act(w[K, c0 + j] + sum_{k<K} x[offs[p] + toff[k] + c0 + j] w[k, c0 + j]);
    max:  out[o0 + p*ostride + j] = max(w[K, c0 + j], max_{k<K} x[offs[p] + toff[k] + c0 + j]);
    for p < npix and j < 16 (nvec - 1) + nlast; K = len(toff), row K of w is the start (bias)."""
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
    nvec = len(widths)
    kk = builder.extract_value(ta.shape, 0)
    ldw = builder.extract_value(wa.shape, 1)
    xoff = c0 if op != "conv" else _c(0)
    xptr = [
        builder.gep(xa.data, [builder.add(builder.load(builder.gep(oa.data, [_c(p)])), xoff)])
        for p in range(npixels)
    ]
    wbase = builder.gep(wa.data, [c0])
    bbase = builder.gep(wa.data, [builder.add(builder.mul(kk, ldw), c0)])  # start: row K of w
    accs = _init_accs(builder, bbase, npixels, widths)
    mask = _lane_mask(builder, nlast, widths[-1]) if op != "conv" else None
    with _for_range_no_unroll(builder, kk) as k:
        t = builder.load(builder.gep(ta.data, [k]))
        wrow = builder.gep(wbase, [builder.mul(k, ldw)])
        if op != "max":
            wv = [_vload(builder, builder.gep(wrow, [_c(VL * v)]), n) for v, n in enumerate(widths)]
        for p in range(npixels):
            if op == "conv":
                xs = builder.load(builder.gep(xptr[p], [t]))
                splats = {n: _splat(builder, xs, n) for n in set(widths)}
            else:
                xrow = builder.gep(xptr[p], [t])
            for v, n in enumerate(widths):
                a = accs[p][v]
                if op == "conv":
                    xv = splats[n]
                elif v < nvec - 1:
                    xv = _vload(builder, builder.gep(xrow, [_c(VL * v)]), n)
                else:  # never reads past the channel run
                    xv = _masked_load(builder, builder.gep(xrow, [_c(VL * v)]), mask, n)
                if op == "max":
                    builder.store(_maximum(builder, builder.load(a), xv), a)
                else:
                    builder.store(_fmuladd(builder, wv[v], xv, builder.load(a)), a)
    obase = builder.gep(da.data, [o0])
    _store_tile(builder, accs, obase, ostride, npix, nlast, act, npixels, widths)
    return context.get_dummy_value()


def _widths(v, half):
    return (VL,) * v + ((HALF,) if half else ())


def _tile_for(op, v, half):
    table = TILE_PIXELS if op == "conv" else DW_TILE_PIXELS
    return _make_tile(table[v + half], _widths(v, half), op)


conv_tile1 = _tile_for("conv", 1, 0)
conv_tile2 = _tile_for("conv", 2, 0)
conv_tile3 = _tile_for("conv", 3, 0)
conv_tile4 = _tile_for("conv", 4, 0)
conv_tile0h = _tile_for("conv", 0, 1)
conv_tile1h = _tile_for("conv", 1, 1)
conv_tile2h = _tile_for("conv", 2, 1)
conv_tile3h = _tile_for("conv", 3, 1)
dw_tile1 = _tile_for("dw", 1, 0)
dw_tile2 = _tile_for("dw", 2, 0)
dw_tile3 = _tile_for("dw", 3, 0)
dw_tile4 = _tile_for("dw", 4, 0)
dw_tile0h = _tile_for("dw", 0, 1)
dw_tile1h = _tile_for("dw", 1, 1)
dw_tile2h = _tile_for("dw", 2, 1)
dw_tile3h = _tile_for("dw", 3, 1)
max_tile1 = _tile_for("max", 1, 0)
max_tile2 = _tile_for("max", 2, 0)
max_tile3 = _tile_for("max", 3, 0)
max_tile4 = _tile_for("max", 4, 0)
max_tile0h = _tile_for("max", 0, 1)
max_tile1h = _tile_for("max", 1, 1)
max_tile2h = _tile_for("max", 2, 1)
max_tile3h = _tile_for("max", 3, 1)


# ----------------------------------------------------------------------------------------------
# depthwise 3-wide rows: input vectors reused across the pixels of a row, no padded copy
#
# ``dw3_tile{P}s{S}w{L}``: P consecutive output pixels of one row x one vector of L (16 or 8)
# channels of a depthwise conv whose kernel is 3 wide with W-stride S (1 or 2) and no W
# dilation, read straight from the unpadded input. Per kernel row the (P - 1) S + 3 input
# vectors the P windows span are each loaded once and feed every window they fall in (up to 3
# FMAs per load; the general `dw_tile` loads an input vector per FMA and ran load-bound).
# Padding: the caller passes only the kernel rows inside the image (``nrows`` from row
# ``wr0``) and a bit mask of the tile's input columns inside it (``colmask``; a column outside
# is a masked-off load: exactly the zero padding's contribution). Taps are
# added in the same (kernel row, kernel column) order as `dw_tile`, from the same bias start.
# Loads and stores are masked to ``nlast`` lanes (never past the channel run).
DW3_PIXELS = (8, 4, 2, 1)


def _make_dw3(npixels: int, sw: int, width: int, nvec: int = 1):
    @intrinsic
    def tile(
        typingctx, x, w, x0, cstride, rowstep, nrows, wr0, brow, c0, out, o0, nlast, act, colmask
    ):
        ints = (x0, cstride, rowstep, nrows, wr0, brow, c0, o0, nlast, act, colmask)
        f32 = types.float32
        if not (
            _arrays_ok(x, w, out, dtypes=(f32, f32, f32))
            and w.ndim == 2
            and all(isinstance(i, types.Integer) for i in ints)
        ):
            return None
        sig = types.void(
            x, w, x0, cstride, rowstep, nrows, wr0, brow, c0, out, o0, nlast, act, colmask
        )

        def codegen(context, builder, signature, args):
            return _dw3_codegen(context, builder, signature, args, npixels, sw, width, nvec)

        return sig, codegen

    return tile


def _dw3_codegen(context, builder, signature, args, npixels, sw, width, nvec):
    """out[o0 + p C + j] = act(w[brow, c0 + j] + sum_{i < nrows, t < 3} x[x0 + i rowstep + (p sw + t) C + j]
    w[wr0 + 3 i + t, c0 + j]) for p < npixels, j < 16 (nvec - 1) + nlast (C = cstride), leaving
    out the input columns p sw + t whose bit is clear in colmask (they lie in the zero padding).
    Vectors 0 .. nvec - 2 are 16 lanes, the last one `width`."""
    st = signature.args
    xa = context.make_array(st[0])(context, builder, args[0])
    wa = context.make_array(st[1])(context, builder, args[1])
    da = context.make_array(st[9])(context, builder, args[9])
    x0, cstride, rowstep, nrows, wr0, brow, c0, o0, nlast, act, colmask = (
        _as_i64(builder, args[i], st[i]) for i in (2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13)
    )
    widths = (VL,) * (nvec - 1) + (width,)
    ldw = builder.extract_value(wa.shape, 1)
    ncols = (npixels - 1) * sw + 3
    inside = [
        builder.icmp_unsigned("!=", builder.and_(colmask, _c(1 << col)), _c(0))
        for col in range(ncols)
    ]
    cmasks = []  # [vector][col]: the lanes to load
    for v, n in enumerate(widths):
        lanes = _lane_mask(builder, nlast if v == nvec - 1 else _c(n), n)
        off = ir.Constant(lanes.type, [0] * n)
        cmasks.append([builder.select(inside[col], lanes, off) for col in range(ncols)])
    wbase = builder.gep(wa.data, [c0])
    accs = _init_accs(builder, builder.gep(wbase, [builder.mul(brow, ldw)]), npixels, widths)
    with _for_range_no_unroll(builder, nrows) as i:
        xrow = builder.gep(xa.data, [builder.add(x0, builder.mul(i, rowstep))])
        wr = builder.add(wr0, builder.mul(i, _c(3)))
        for v, n in enumerate(widths):
            wv = [
                _vload(
                    builder,
                    builder.gep(
                        wbase, [builder.add(builder.mul(builder.add(wr, _c(t)), ldw), _c(VL * v))]
                    ),
                    n,
                )
                for t in range(3)
            ]
            for col in range(ncols):
                ptr = builder.gep(xrow, [builder.add(builder.mul(_c(col), cstride), _c(VL * v))])
                xv = _masked_load(builder, ptr, cmasks[v][col], n)
                for t in range(3):
                    if (col - t) % sw or not 0 <= (col - t) // sw < npixels:
                        continue
                    a = accs[(col - t) // sw][v]
                    builder.store(_fmuladd(builder, wv[t], xv, builder.load(a)), a)
    obase = builder.gep(da.data, [o0])
    _store_tile(builder, accs, obase, cstride, _c(npixels), nlast, act, npixels, widths)
    return context.get_dummy_value()


dw3_tile8s1w16 = _make_dw3(8, 1, VL)
dw3_tile8s1w8 = _make_dw3(8, 1, HALF)
dw3_tile8s2w16 = _make_dw3(8, 2, VL)
dw3_tile8s2w8 = _make_dw3(8, 2, HALF)
dw3_tile4s1w16 = _make_dw3(4, 1, VL)
dw3_tile4s1w8 = _make_dw3(4, 1, HALF)
dw3_tile4s2w16 = _make_dw3(4, 2, VL)
dw3_tile4s2w8 = _make_dw3(4, 2, HALF)
dw3_tile2s1w16 = _make_dw3(2, 1, VL)
dw3_tile2s1w8 = _make_dw3(2, 1, HALF)
dw3_tile2s2w16 = _make_dw3(2, 2, VL)
dw3_tile2s2w8 = _make_dw3(2, 2, HALF)
dw3_tile1s1w16 = _make_dw3(1, 1, VL)
dw3_tile1s1w8 = _make_dw3(1, 1, HALF)
dw3_tile1s2w16 = _make_dw3(1, 2, VL)
dw3_tile1s2w8 = _make_dw3(1, 2, HALF)
dw3_tile4s1v4 = _make_dw3(4, 1, VL, 4)
dw3_tile4s2v4 = _make_dw3(4, 2, VL, 4)
dw3_tile2s1v4 = _make_dw3(2, 1, VL, 4)
dw3_tile2s2v4 = _make_dw3(2, 2, VL, 4)
dw3_tile1s1v4 = _make_dw3(1, 1, VL, 4)
dw3_tile1s2v4 = _make_dw3(1, 2, VL, 4)
