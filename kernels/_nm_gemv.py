"""Batch-1 2:4 GEMV on AVX-512: the x value each kept weight multiplies, by one in-lane permute.

For one row of x and up to `MAX_TILES` 16-channel tiles of a float32 2:4 `NMSparse` (storage
described there), ``nm24_gemv_<R>(x, positions, values, t0, dst)`` computes
``dst[r * 16 + l] = sum_s values[t0 + r, s, l] * x[4 * (s // 2) + position(s, l)]``.

Per position byte (four slots: two groups of four K values), the two groups' x quads are broadcast
to every 128-bit lane (``vbroadcastf32x4``); ``vpermilps`` picks, in each lane, the quad element
named by the low two bits of the lane's 32-bit control, so the byte widened to 32 bits and
shifted by 0, 2, 4, 6 bits selects the x of slot 0, 1, 2, 3 for 16 channels in one instruction
each (`_nm_tile` does the same choice with two or three masked selects per slot, portably). The
R tiles' accumulators (two per tile, alternating slots, so consecutive FMAs are independent) stay
in registers over all of K; the values stream from memory once.

Why: at batch 1 the portable tile loop ran 17 us on an 800 x 500 2:4 weight here, about what the
dense float32 GEMV takes (the selects, not the weight reads, bound it). AVX-512 hosts only (the
caller checks `available`); the arguments are trusted: C-contiguous arrays of a validated
float32 2:4 `NMSparse`, x of length ``Kp`` (the padded K), ``t0 + R <= T``, ``dst`` of at least
``16 R`` floats.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["available", "MAX_TILES", "GEMVS"]

MAX_TILES = 4
_L = 16
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_VF = ir.VectorType(_F32, _L)
_VI = ir.VectorType(_I32, _L)
_V4 = ir.VectorType(_F32, 4)


def available() -> bool:
    """True if the host has AVX-512 and Numba compiles for the host CPU (the test the lanes
    tile uses for ``vpermps``)."""
    from jaxcompress_kernels._lanes_tile import _use_permvar

    return _use_permvar()


def _c(v):
    return ir.Constant(_I64, v)


def _make(tiles: int):
    @intrinsic
    def nm24_gemv(typingctx, x, positions, values, t0, dst):
        arr = types.Array
        if not (
            isinstance(x, arr)
            and isinstance(positions, arr)
            and isinstance(values, arr)
            and isinstance(dst, arr)
            and isinstance(t0, types.Integer)
            and x.dtype == types.float32
            and values.dtype == types.float32
            and positions.dtype == types.uint8
            and dst.dtype == types.float32
            and positions.ndim == 3
            and values.ndim == 3
            and all(a.layout == "C" for a in (x, positions, values, dst))
        ):
            return None
        sig = types.void(x, positions, values, t0, dst)

        def codegen(context, builder, signature, args):
            xty, pty, vty, tty, dty = signature.args
            xa = context.make_array(xty)(context, builder, args[0])
            pa = context.make_array(pty)(context, builder, args[1])
            va = context.make_array(vty)(context, builder, args[2])
            da = context.make_array(dty)(context, builder, args[4])
            t0v = args[3]
            if t0v.type.width < 64:
                t0v = builder.sext(t0v, _I64) if tty.signed else builder.zext(t0v, _I64)
            nq = builder.extract_value(pa.shape, 1)  # position bytes per lane: Kp / 8
            ns = builder.extract_value(va.shape, 1)  # slots: Kp / 2
            perm = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(_VF, [_VF, _VI]),
                "llvm.x86.avx512.vpermilvar.ps.512",
            )
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_VF, [_VF, _VF, _VF]), "llvm.fma.v16f32"
            )
            quad = ir.Constant(ir.VectorType(_I32, _L), [i % 4 for i in range(_L)])
            undef4 = ir.Constant(_V4, ir.Undefined)
            zero = ir.Constant(_VF, [0.0] * _L)
            # per tile: base of its positions (bytes) and values (floats)
            pbase = [
                builder.mul(builder.add(t0v, _c(r)), builder.mul(nq, _c(_L))) for r in range(tiles)
            ]
            vbase = [
                builder.mul(builder.add(t0v, _c(r)), builder.mul(ns, _c(_L))) for r in range(tiles)
            ]
            pre = builder.block
            head = builder.append_basic_block("nm.head")
            body = builder.append_basic_block("nm.body")
            done = builder.append_basic_block("nm.done")
            builder.branch(head)
            builder.position_at_end(head)
            q = builder.phi(_I64)
            q.add_incoming(_c(0), pre)
            accs = []
            for _ in range(2 * tiles):
                a = builder.phi(_VF)
                a.add_incoming(zero, pre)
                accs.append(a)
            builder.cbranch(builder.icmp_signed("<", q, nq), body, done)
            builder.position_at_end(body)
            xq = []
            for h in range(2):  # the two groups of this byte: x[8q .. 8q + 3], x[8q + 4 .. 8q + 7]
                p = builder.gep(xa.data, [builder.add(builder.mul(q, _c(8)), _c(4 * h))])
                v4 = builder.load(builder.bitcast(p, _V4.as_pointer()), align=4)
                xq.append(builder.shuffle_vector(v4, undef4, quad))
            new = []
            for r in range(tiles):
                pp = builder.gep(pa.data, [builder.add(pbase[r], builder.mul(q, _c(_L)))])
                pb = builder.load(builder.bitcast(pp, ir.VectorType(_I8, _L).as_pointer()), align=1)
                d = builder.zext(pb, _VI)
                a0, a1 = accs[2 * r], accs[2 * r + 1]
                for s in range(4):
                    ctrl = d if s == 0 else builder.lshr(d, ir.Constant(_VI, [2 * s] * _L))
                    xs = builder.call(perm, [xq[s // 2], ctrl])
                    vp = builder.gep(
                        va.data,
                        [
                            builder.add(
                                vbase[r],
                                builder.mul(builder.add(builder.mul(q, _c(4)), _c(s)), _c(_L)),
                            )
                        ],
                    )
                    wv = builder.load(builder.bitcast(vp, _VF.as_pointer()), align=4)
                    if s % 2 == 0:
                        a0 = builder.call(fma, [wv, xs, a0])
                    else:
                        a1 = builder.call(fma, [wv, xs, a1])
                new += [a0, a1]
            end = builder.block
            q.add_incoming(builder.add(q, _c(1)), end)
            for a, nv in zip(accs, new, strict=True):
                a.add_incoming(nv, end)
            builder.branch(head)
            builder.position_at_end(done)
            for r in range(tiles):
                s = builder.fadd(accs[2 * r], accs[2 * r + 1])
                p = builder.gep(da.data, [_c(r * _L)])
                builder.store(s, builder.bitcast(p, _VF.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return nm24_gemv


GEMVS = tuple(_make(r) for r in range(1, MAX_TILES + 1))
