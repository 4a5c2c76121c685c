"""Low-level Numba intrinsics shared by the kernels.

`prefetch(a, i)` emits LLVM's ``llvm.prefetch`` (x86 ``prefetcht0``) for the address of element
``i`` of the contiguous array ``a`` (``a.ravel()[i]``). A prefetch never faults, so ``i`` may run
past either end of ``a`` (the hint is then simply wasted); it reads nothing into the program.

Why: a batch-1 low-bit matmul consumes its weight stream slower than a dense GEMV, and the
hardware prefetchers alone left ~half the run waiting on DRAM in our measurements
(benchmarks/results/bench_kernels.md); a software prefetch a few KiB ahead lets the loads overlap
the arithmetic.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch", "prefetch_l2", "wide_vectors"]

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _prefetch_codegen(locality):
    def codegen(context, builder, signature, args):
        aryty, ity = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = args[1]
        if idx.type.width < 64:
            idx = builder.sext(idx, _I64) if ity.signed else builder.zext(idx, _I64)
        itemsize = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        addr = builder.add(
            builder.ptrtoint(ary.data, _I64), builder.mul(idx, ir.Constant(_I64, itemsize))
        )
        ptr = builder.inttoptr(addr, ir.IntType(8).as_pointer())
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # rw = 0 (read), locality, cache type = 1 (data)
        builder.call(
            fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, locality), ir.Constant(_I32, 1)]
        )
        return context.get_dummy_value()

    return codegen


@intrinsic
def prefetch(typingctx, a, i):
    """prefetch(a, i): hint the CPU to bring ``&a.ravel()[i]`` into L1 (read, high locality)."""
    if not isinstance(a, types.Array) or not isinstance(i, types.Integer):
        return None
    return types.void(a, i), _prefetch_codegen(3)


@intrinsic
def prefetch_l2(typingctx, a, i):
    """prefetch_l2(a, i): as `prefetch`, into L2 only (locality 1, x86 ``prefetcht2``): does not
    evict L1 and suits streams read a few KiB later."""
    if not isinstance(a, types.Array) or not isinstance(i, types.Integer):
        return None
    return types.void(a, i), _prefetch_codegen(1)


@intrinsic
def wide_vectors(typingctx):
    """wide_vectors(): let LLVM vectorise the enclosing compiled function with 512-bit vectors.

    Numba compiles for the host CPU, where LLVM prefers 256-bit vectors on AVX-512 machines
    (``prefer-vector-width=256``: wide vectors can lower the clock of other code). This marks only
    the enclosing LLVM function ``"prefer-vector-width"="512"``, so a hot kernel can use the full
    width without changing every Numba function in the process (which the process-wide
    ``NUMBA_CPU_FEATURES`` would). On CPUs without AVX-512 it changes nothing. Call it once at
    the top of the function body (inside a ``prange`` body: that body is its own function).
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        # llvmlite's AttributeSet only admits enum attributes by name; a string attribute is
        # emitted verbatim, so add it to the underlying set.
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return sig, codegen


_V16 = ir.VectorType(_I32, 16)
_VNNI_TY = ir.FunctionType(_V16, [_V16, _V16, _V16])


def emit_vpdpbusd_tile(builder, xwords, wv, slots, name: str) -> None:
    """Emit one k-quad of an ``len(xwords) x len(wv)`` int8 register tile (LLVM IR, inside a
    codegen): ``slots[r * nr + b] += vpdpbusd(broadcast(xwords[r]), wv[b])``.

    `xwords` are i32 values holding 4 unsigned input bytes of row r, `wv` are <16 x i32> vectors
    of 4 signed weight bytes per output column, `slots` are allocas of <16 x i32> accumulators.
    Shared by the full-integer (`_qkernels`) and dynamic-range (`_dynkernels`) GEMM tiles; the
    caller checks that the CPU has AVX-512 VNNI.
    """
    undef = ir.Constant(_V16, ir.Undefined)
    zeros = ir.Constant(_V16, [0] * 16)
    nr = len(wv)
    for r, xi in enumerate(xwords):
        xv = builder.insert_element(undef, xi, ir.Constant(_I32, 0))
        xv = builder.shuffle_vector(xv, undef, zeros)
        for b in range(nr):
            s = slots[r * nr + b]
            acc = builder.asm(
                _VNNI_TY,
                "vpdpbusd $2, $1, $0",
                "=v,v,v,0",
                [xv, wv[b], builder.load(s)],
                False,
                name,
            )
            builder.store(acc, s)
