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

__all__ = ["prefetch"]

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@intrinsic
def prefetch(typingctx, a, i):
    """prefetch(a, i): hint the CPU to bring ``&a.ravel()[i]`` into L1 (read, high locality)."""
    if not isinstance(a, types.Array) or not isinstance(i, types.Integer):
        return None
    sig = types.void(a, i)

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
        # rw = 0 (read), locality = 3 (keep in all levels), cache type = 1 (data)
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return sig, codegen
