"""The small-batch N:M tile dot product, written as portable LLVM vector IR.

``nm_tile_dot(x, r0, positions, values, t, dst)`` computes, for the 16 output channels (lanes) of
tile `t` of an `NMSparse` (storage described there) and row ``r0`` of ``x``,
``dst[0, l] = sum_s value[s, l] * x[r0, k(s, l)]``, where ``k(s, l) = 4 * group(s) +
position(s, l)`` is the K index slot ``s`` of lane ``l`` points at. 4-bit values enter as the
signed codes ``code - 8`` (the caller applies the per-channel scale). ``nm_tile_dot4`` does rows
``r0..r0+3`` into ``dst[0..3]``, sharing the position masks and the decoded values between the
four rows; ``nm_tile_dot_pair`` does one row for tiles ``t`` and ``t + 1`` into ``dst[0..1]``
(two weight streams in flight and the x broadcasts shared: ~5% faster than two single-tile calls
for float32 values at batch 1, ~10% slower for 4-bit ones, whose loop is compute bound).

Why an intrinsic: the natural Numba loop (lanes innermost, accumulators in a heap array) kept the
accumulators in memory, re-checked aliasing of every array on every K step and widened the 2-bit
positions to 64-bit lanes; it ran ~3x slower than the weight reads it waits for. Here the 16 lanes
of an accumulator are one ``<16 x float>`` SSA value (a register), positions stay bytes, and the x
value a lane multiplies is chosen with two (2:4) or three (1:4) vector selects on single position
bits among the group's broadcast x values: no gathers, no per-call layout. The IR is target
independent (LLVM lowers ``<16 x float>`` to one AVX-512 register, two AVX2 or four NEON ones);
on AVX-512 a 2:4 K step is ``vptestnmb`` (bit -> mask), ``vblendmps`` / masked broadcasts and
``vfmadd231ps`` with the values as a memory operand (4-bit: ``vpmovsxbd`` + ``vcvtdq2ps`` first).
A software prefetch `PREFETCH_BYTES` ahead into L2 (``llvm.prefetch`` locality 1, x86
``prefetcht2``; one per 64-byte line of both weight streams) lets the DRAM reads overlap the
arithmetic: on 4096x4096 2:4 fp32 at batch 1 it took 2.8 -> 2.5 ms (L1 prefetches, locality 3,
were no better than none).

Per K step ``qi`` (4 slots; 8 K values for 2:4, 16 for 1:4) and lane ``l``, with ``pb`` the lane's
position byte and bit ``i`` of it written ``b_i``:

- 2:4 (positions of a group strictly increase, so slot 0 is in {0, 1, 2} and slot 1 in {1, 2, 3}):
  slot 0 takes ``b1 ? x2 : (b0 ? x1 : x0)``, slot 1 takes ``b2 ? (b3 ? x3 : x1) : x2``
  (position 1 = b2 only, 2 = b3 only, 3 = both); slots 2, 3 the same on bits 4..7 and the next
  group's x.
- 1:4: slot j in {0, 1, 2, 3}: ``b_hi ? (b_lo ? x3 : x2) : (b_lo ? x1 : x0)``.

The arguments are trusted: the caller passes C-contiguous arrays of a validated `NMSparse`, ``x`` of
shape ``(M, Kp)`` float32 (Kp = padded K), ``0 <= t`` and ``t + tiles <= T``, ``r0 + rows <= M`` and
``dst`` float32 C-contiguous of at least ``(tiles * rows, 16)``.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["nm_tile_dot", "nm_tile_dot4", "nm_tile_dot_pair", "PREFETCH_BYTES"]

PREFETCH_BYTES = 8192  # software prefetch distance on the values stream (positions: scaled)
_PREFETCH_LOCALITY = 1  # llvm.prefetch locality 1: into L2, not L1 (x86 prefetcht2)

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_L = 16
_V8 = ir.VectorType(_I8, _L)
_VF = ir.VectorType(_F32, _L)


def _splat(builder, scalar, vty):
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, _L), [0] * _L))


def _bit(builder, pb, i):
    m = builder.and_(pb, ir.Constant(_V8, [1 << i] * _L))
    return builder.icmp_unsigned("!=", m, ir.Constant(_V8, [0] * _L))


def _prefetch(builder, base_i8, offset_bytes):
    fnty = ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    # a GEP without inbounds may point past the array: a prefetch never faults
    ptr = builder.gep(base_i8, [offset_bytes])
    builder.call(
        fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, _PREFETCH_LOCALITY), ir.Constant(_I32, 1)]
    )


def _fmuladd(builder, a, b, c):
    fnty = ir.FunctionType(_VF, [_VF, _VF, _VF])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fmuladd.v16f32")
    return builder.call(fn, [a, b, c])


def _make_tile_dot(rows: int, tiles: int = 1):
    @intrinsic
    def tile_dot(typingctx, x, r0, positions, values, t, dst):
        arr = types.Array
        if not (
            isinstance(x, arr)
            and isinstance(positions, arr)
            and isinstance(values, arr)
            and isinstance(dst, arr)
            and isinstance(t, types.Integer)
            and isinstance(r0, types.Integer)
            and x.dtype == types.float32
            and dst.dtype == types.float32
            and positions.dtype == types.uint8
            and values.dtype in (types.float32, types.uint8)
            and x.ndim == 2
            and positions.ndim == 3
            and values.ndim == 3
            and dst.ndim == 2
            and all(a.layout == "C" for a in (x, positions, values, dst))  # raw pointer arithmetic
        ):
            return None
        sig = types.void(x, r0, positions, values, t, dst)
        return sig, lambda context, builder, signature, args: _codegen(
            context, builder, signature, args, rows, tiles
        )

    return tile_dot


def _as_i64(builder, v, ty):
    if v.type.width < 64:
        return builder.sext(v, _I64) if ty.signed else builder.zext(v, _I64)
    return v


def _codegen(context, builder, signature, args, rows, tiles):
    xty, r0ty, pty, vty, tty, dty = signature.args
    q4 = vty.dtype == types.uint8
    xa = context.make_array(xty)(context, builder, args[0])
    pa = context.make_array(pty)(context, builder, args[2])
    va = context.make_array(vty)(context, builder, args[3])
    da = context.make_array(dty)(context, builder, args[5])
    r0 = _as_i64(builder, args[1], r0ty)
    ti = _as_i64(builder, args[4], tty)
    kp = builder.extract_value(xa.shape, 1)
    nq = builder.extract_value(pa.shape, 1)
    s = builder.extract_value(va.shape, 1)  # slots (float) or slot pairs (4-bit)
    slots = builder.shl(s, _c(1)) if q4 else s
    # 2:4 keeps Kp / 2 slots, 1:4 keeps Kp / 4: both loops are emitted, picked at run time
    is24 = builder.icmp_signed("==", builder.shl(slots, _c(1)), kp)

    xrows = [builder.gep(xa.data, [builder.mul(builder.add(r0, _c(r)), kp)]) for r in range(rows)]
    pbases = [
        builder.gep(
            builder.bitcast(pa.data, _I8.as_pointer()),
            [builder.mul(builder.add(ti, _c(u)), builder.mul(nq, _c(16)))],
        )
        for u in range(tiles)
    ]
    vrow = builder.mul(s, _c(16))  # elements per tile of values
    elem = _I8 if q4 else _F32
    vbases = [
        builder.gep(
            builder.bitcast(va.data, elem.as_pointer()), [builder.mul(builder.add(ti, _c(u)), vrow)]
        )
        for u in range(tiles)
    ]
    step_bytes = 32 if q4 else 256  # values bytes per K step
    nacc = 4 if rows == 1 else 2
    zero = ir.Constant(_VF, [0.0] * _L)
    accs = [
        [cgutils.alloca_once_value(builder, zero) for _ in range(nacc)] for _ in range(tiles * rows)
    ]

    def load_vec(ptr_elem, vty_):
        return builder.load(builder.bitcast(ptr_elem, vty_.as_pointer()), align=1)

    def slot_values(qi, vbase):
        if q4:
            out = []
            for half in range(2):
                off = builder.add(builder.mul(qi, _c(32)), _c(16 * half))
                c = load_vec(builder.gep(vbase, [off]), _V8)
                lo = builder.and_(c, ir.Constant(_V8, [15] * _L))
                hi = builder.lshr(c, ir.Constant(_V8, [4] * _L))
                for u in (lo, hi):
                    out.append(builder.sitofp(builder.sub(u, ir.Constant(_V8, [8] * _L)), _VF))
            return out
        base = builder.mul(qi, _c(64))
        return [
            load_vec(builder.gep(vbase, [builder.add(base, _c(16 * j))]), _VF) for j in range(4)
        ]

    def step(qi, variant24):
        vq = builder.mul(qi, _c(step_bytes))
        pq = builder.mul(qi, _c(16))
        per_tile = []
        for u in range(tiles):
            vbase_i8 = builder.bitcast(vbases[u], _I8.as_pointer())
            for line in range(0, step_bytes, 64):
                _prefetch(builder, vbase_i8, builder.add(vq, _c(PREFETCH_BYTES + line)))
            _prefetch(builder, pbases[u], builder.add(pq, _c(PREFETCH_BYTES * 16 // step_bytes)))
            pb = load_vec(builder.gep(pbases[u], [pq]), _V8)
            per_tile.append((slot_values(qi, vbases[u]), [_bit(builder, pb, i) for i in range(8)]))
        span = 8 if variant24 else 16
        k0 = builder.mul(qi, _c(span))
        for r in range(rows):
            xs = [
                _splat(builder, builder.load(builder.gep(xrows[r], [builder.add(k0, _c(i))])), _VF)
                for i in range(span)
            ]
            for u, (vals, b) in enumerate(per_tile):
                for j, sel in enumerate(_select_x(builder, xs, b, variant24)):
                    a = accs[u * rows + r][j % nacc]
                    builder.store(_fmuladd(builder, vals[j], sel, builder.load(a)), a)

    with builder.if_else(is24) as (then24, then14):
        with then24:
            with cgutils.for_range(builder, nq) as loop:
                step(loop.index, True)
        with then14:
            with cgutils.for_range(builder, nq) as loop:
                step(loop.index, False)
    for r in range(tiles * rows):
        a = [builder.load(p) for p in accs[r]]
        while len(a) > 1:
            a = [builder.fadd(a[i], a[i + 1]) for i in range(0, len(a), 2)]
        dst = builder.gep(da.data, [_c(16 * r)])
        builder.store(a[0], builder.bitcast(dst, _VF.as_pointer()), align=4)
    return context.get_dummy_value()


def _select_x(builder, xs, b, variant24):
    """The x value each of the 4 slots of a K step multiplies, per lane (see module docstring)."""
    sel = []
    if variant24:
        for g in range(2):
            x0, x1, x2, x3 = xs[4 * g : 4 * g + 4]
            bb = b[4 * g : 4 * g + 4]
            sel.append(builder.select(bb[1], x2, builder.select(bb[0], x1, x0)))
            sel.append(builder.select(bb[2], builder.select(bb[3], x3, x1), x2))
    else:
        for j in range(4):
            x0, x1, x2, x3 = xs[4 * j : 4 * j + 4]
            blo, bhi = b[2 * j], b[2 * j + 1]
            sel.append(
                builder.select(bhi, builder.select(blo, x3, x2), builder.select(blo, x1, x0))
            )
    return sel


nm_tile_dot = _make_tile_dot(1)
nm_tile_dot4 = _make_tile_dot(4)
nm_tile_dot_pair = _make_tile_dot(1, 2)


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I64, v)
