"""Edge kernels vs the CPU anchors a user would pick instead (issue 3).

One run, round robin over implementations inside each (shape, batch, threads) cell, the cache
flushed by reading a buffer (>= 128 MiB) before every timed call, medians of repeats. Anchors:
NumPy fp32 (its BLAS named via threadpoolctl), JAX fp32 on CPU, PyTorch CPU (fp32, int8 / int4
weight-only kernels with bf16 activations, sparse CSR), ONNX Runtime (MatMulNBits 4/8-bit g32 at
accuracy levels 0 and 4, DynamicQuantizeMatMul), SciPy CSR / BSR; plus the machine's read
bandwidth measured with a parallel Numba sum.

Run under the shared lock:
    flock /tmp/jaxcompress-bench.lock /work/venv/bin/python benchmarks/bench_kernels.py
    ... --quick   (one shape, batch 1, 2 threads, 3 repeats)
"""

from __future__ import annotations

import os

# Fairness: idle BLAS / OpenMP threads must not spin while another pool runs. Must be set before
# NumPy, Numba, ONNX Runtime or torch start their pools. Machine-specific OpenBLAS overrides are
# dropped so OpenBLAS picks its kernel for this CPU (the table reports the one it chose).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_DROPPED_ENV = {
    k: os.environ.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
}

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

import jaxcompress_kernels as jk  # noqa: E402
from jaxcompress_kernels import reference  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------
# machine


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _read_sum(a):
    s = 0.0
    for i in prange(a.shape[0]):
        s += a[i]
    return s


@njit(parallel=True, nogil=True, cache=True)
def _fill_par(a):
    """Writes every byte of `a` once (parallel chunks): the cost of producing a fresh output."""
    nch = 8
    per = (a.shape[0] + nch - 1) // nch
    for c in prange(nch):
        a[c * per : min(a.shape[0], (c + 1) * per)] = 0  # a memset per chunk


class Flusher:
    def __init__(self, mib: int):
        self.buf = np.ones(mib * MIB // 8, np.float64)
        _read_sum(self.buf)

    def __call__(self):
        _read_sum(self.buf)


def read_bandwidth(threads: int, mib: int = 1024, repeats: int = 5) -> float:
    numba.set_num_threads(threads)
    a = np.ones(mib * MIB // 8, np.float64)
    _read_sum(a)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _read_sum(a)
        ts.append(time.perf_counter() - t0)
    return a.nbytes / min(ts) / 1e9


def cpu_model() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


# ----------------------------------------------------------------------------------------------
# weights


def nm_prune(w: np.ndarray, keep: int) -> np.ndarray:
    k, n = w.shape
    g = w.reshape(k // 4, 4, n).copy()
    drop = np.argsort(np.abs(g), axis=1)[:, : 4 - keep]
    np.put_along_axis(g, drop, 0, axis=1)
    return g.reshape(k, n)


def sym_quant(w: np.ndarray, bits: int, group: int | None):
    """Symmetric round-half-even quantization along K: codes (K, N) int8, scales (G, N)."""
    k, n = w.shape
    qmax = (1 << (bits - 1)) - 1
    g = k if group is None else group
    wg = w.reshape(k // g, g, n)
    scales = (np.abs(wg).max(axis=1) / qmax).astype(np.float32)
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(wg / scales[:, None, :]), -qmax - 1, qmax).astype(np.int8)
    return codes.reshape(k, n), scales


class Impl:
    def __init__(self, name, category, fn, weight_bytes, check=None, note=""):
        self.name, self.category, self.fn = name, category, fn
        self.weight_bytes, self.check, self.note = weight_bytes, check, note


# ----------------------------------------------------------------------------------------------
# anchors


def try_import(name):
    try:
        return __import__(name)
    except Exception as e:  # pragma: no cover - reported in the table
        print(f"[bench] {name} unavailable: {e}", file=sys.stderr)
        return None


def ort_session(ort, nodes, inits, k, n, threads, extra_inputs=()):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


CUR = {"threads": 1}


def ort_impl(ort, nodes, inits, k, n, thread_counts):
    sessions = {t: ort_session(ort, nodes, inits, k, n, t) for t in thread_counts}
    return lambda x: sessions[CUR["threads"]].run(None, {"A": x})[0]


def matmulnbits_impls(ort, b, s, k, n, bits, category, check, thread_counts):
    """ONNX Runtime MatMulNBits (block 32) at accuracy levels 0 and 4 on the tensors (b, s)."""
    from onnx import helper, numpy_helper

    out = []
    for lvl in (0, 4):
        node = helper.make_node(
            "MatMulNBits",
            ["A", "B", "S"],
            ["Y"],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=bits,
            block_size=32,
            accuracy_level=lvl,
        )
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S")]
        fn = ort_impl(ort, [node], inits, k, n, thread_counts)
        name = f"ORT MatMulNBits {bits}-bit g32 acc{lvl}"
        out.append(Impl(name, category, fn, b.nbytes + s.nbytes, check=check))
    return out


def build_cell_impls(W, k, n, thread_counts, libs, args):
    """All implementations for one weight; x is bound later. Returns list of (Impl, setup)."""
    from onnx import helper, numpy_helper

    impls = []
    add = impls.append
    rng = np.random.default_rng(1)
    jax, torch, ort, scipy_sparse = libs["jax"], libs["torch"], libs["ort"], libs["scipy"]

    # ---------------- dense fp32
    add(Impl("NumPy fp32 (BLAS)", "fp32 dense", lambda x: x @ W, W.nbytes))
    if jax is not None:
        import jax.numpy as jnp

        Wj = jax.device_put(W)
        f = jax.jit(lambda x, w: jnp.matmul(x, w, precision="highest"))
        add(
            Impl(
                "JAX fp32 (XLA CPU)",
                "fp32 dense",
                lambda x: f(x, Wj).block_until_ready(),
                W.nbytes,
                note=f"XLA pool fixed at start-up ({os.cpu_count()} threads)",
            )
        )
    if torch is not None:
        Wt = torch.from_numpy(W)
        add(Impl("PyTorch fp32", "fp32 dense", lambda x: torch.from_numpy(x) @ Wt, W.nbytes))

    # ---------------- 4-bit g32
    c4, s4 = sym_quant(W, 4, 32)
    p4 = jk.pack_weight(c4, s4, bits=4, group_size=32)
    add(
        Impl(
            "ours qmatmul 4-bit g32",
            "4-bit",
            lambda x: jk.qmatmul(x, p4),
            p4.nbytes,
            check=lambda x: reference.qmatmul(x, p4),
        )
    )
    ref4 = lambda x: reference.qmatmul(x, p4)  # noqa: E731
    add(
        Impl(
            "ours qmatmul 4-bit g32 compute=int8",
            "4-bit",
            lambda x: jk.qmatmul(x, p4, compute="int8"),
            p4.nbytes,
            check=lambda x: reference.qmatmul(x, p4, compute="int8"),
            note="x rounded to int8 per block of 32 (as ORT acc4)",
        )
    )
    if ort is not None:
        u4 = (c4.astype(np.int16) + 8).astype(np.uint8)
        b, s, _ = jk.to_matmulnbits(u4, s4, bits=4, block_size=32)
        impls += matmulnbits_impls(ort, b, s, k, n, 4, "4-bit", ref4, thread_counts)
    if torch is not None:
        try:
            wq = torch.from_numpy((c4.astype(np.int32) + 8).T.copy())
            packed = torch._convert_weight_to_int4pack_for_cpu(wq, 2)
            sz = torch.zeros((k // 32, n, 2), dtype=torch.bfloat16)
            sz[:, :, 0] = torch.from_numpy(s4).to(torch.bfloat16)
            sz[:, :, 1] = 0.0
            fn = lambda x: torch._weight_int4pack_mm_for_cpu(  # noqa: E731
                torch.from_numpy(x).to(torch.bfloat16), packed, 32, sz
            )
            add(
                Impl(
                    "PyTorch int4 g32 (bf16 x)",
                    "4-bit",
                    fn,
                    packed.numel() * packed.element_size() + sz.numel() * 2,
                    check=ref4,
                    note="bf16 scales",
                )
            )
        except Exception as e:  # noqa: BLE001
            print(f"[bench] torch int4 unavailable: {e}", file=sys.stderr)

    # ---------------- 8-bit per channel (weight only) and int8 x int8
    c8, s8 = sym_quant(W, 8, None)
    p8 = jk.pack_weight(c8, s8, bits=8)
    ref8 = lambda x: reference.qmatmul(x, p8)  # noqa: E731
    add(
        Impl(
            "ours qmatmul 8-bit per-channel",
            "int8",
            lambda x: jk.qmatmul(x, p8),
            p8.nbytes,
            check=ref8,
        )
    )
    add(
        Impl(
            "ours qmatmul 8-bit per-channel compute=int8",
            "int8",
            lambda x: jk.qmatmul(x, p8, compute="int8"),
            p8.nbytes,
            check=lambda x: reference.qmatmul(x, p8, compute="int8"),
            note="x rounded to int8 per block of 32",
        )
    )
    w8 = jk.int8_weight(c8)
    wsc = s8[0]

    def ours_int8(x):
        sx = np.float32(max(np.abs(x).max(), 1e-12) / 127.0)
        xq = np.clip(np.rint(x / sx), -127, 127).astype(np.int8)
        return jk.qmatmul_int8(xq, w8).astype(np.float32) * (sx * wsc)

    add(
        Impl(
            "ours int8 x int8 (dynamic x quant)",
            "int8",
            ours_int8,
            w8.nbytes,
            check=ref8,
            note="x quantized per call, per tensor",
        )
    )
    if ort is not None:
        c8g, s8g = sym_quant(W, 8, 32)
        u8 = (c8g.astype(np.int16) + 128).astype(np.uint8)
        b, s, _ = jk.to_matmulnbits(u8, s8g, bits=8, block_size=32)
        impls += matmulnbits_impls(ort, b, s, k, n, 8, "int8", ref8, thread_counts)
        node = helper.make_node(
            "DynamicQuantizeMatMul", ["A", "B", "S"], ["Y"], domain="com.microsoft"
        )
        fn = ort_impl(
            ort,
            [node],
            [numpy_helper.from_array(c8, "B"), numpy_helper.from_array(s8[0], "S")],
            k,
            n,
            thread_counts,
        )
        add(Impl("ORT DynamicQuantizeMatMul int8", "int8", fn, c8.nbytes, check=ref8))
    if torch is not None:
        wt8 = torch.from_numpy(c8.T.copy())
        st8 = torch.from_numpy(s8[0]).to(torch.bfloat16)
        fn = lambda x: torch._weight_int8pack_mm(  # noqa: E731
            torch.from_numpy(x).to(torch.bfloat16), wt8, st8
        )
        add(
            Impl(
                "PyTorch int8 per-channel (bf16 x)",
                "int8",
                fn,
                c8.nbytes,
                check=ref8,
                note="bf16 scales",
            )
        )

    # ---------------- other low-bit widths (no CPU anchor exists)
    for bits in (2, 3):
        c, s = sym_quant(W, bits, 32)
        p = jk.pack_weight(c, s, bits=bits, group_size=32)
        add(
            Impl(
                f"ours qmatmul {bits}-bit g32",
                f"{bits}-bit",
                (lambda pw: lambda x: jk.qmatmul(x, pw))(p),
                p.nbytes,
                check=(lambda pw: lambda x: reference.qmatmul(x, pw))(p),
            )
        )

    # ---------------- N:M
    W24 = nm_prune(W, 2)
    nm = jk.nm_from_dense(W24, n=2)
    add(
        Impl(
            "ours 2:4 fp32 values",
            "2:4",
            lambda x: jk.spmm_nm(x, nm),
            nm.nbytes,
            check=lambda x: reference.spmm_nm(x, nm),
        )
    )
    c24, s24 = sym_quant(W24, 4, None)
    nmq = jk.nm_from_quantized(c24, s24[0], n=2)
    add(
        Impl(
            "ours 2:4 4-bit values",
            "2:4",
            lambda x: jk.spmm_nm(x, nmq),
            nmq.nbytes,
            check=lambda x: reference.spmm_nm(x, nmq),
        )
    )
    W14 = nm_prune(W, 1)
    nm1 = jk.nm_from_dense(W14, n=1)
    add(
        Impl(
            "ours 1:4 fp32 values",
            "1:4",
            lambda x: jk.spmm_nm(x, nm1),
            nm1.nbytes,
            check=lambda x: reference.spmm_nm(x, nm1),
        )
    )
    if torch is not None:
        Wt24 = torch.from_numpy(W24)
        add(
            Impl(
                "PyTorch fp32 dense on the 2:4 weight",
                "2:4",
                lambda x: torch.from_numpy(x) @ Wt24,
                W24.nbytes,
                note="no CPU 2:4 kernel exists",
            )
        )

    # ---------------- CSR (unstructured) at several sparsities, BSR
    for sp in args.csr_sparsities:
        Ws = W.copy()
        thr = np.quantile(np.abs(W), sp)
        Ws[np.abs(Ws) < thr] = 0
        cs = jk.csr_from_dense(Ws)
        cat = f"CSR {int(sp * 100)}%"
        add(
            Impl(
                f"ours CSR fp32 {int(sp * 100)}%",
                cat,
                (lambda c: lambda x: jk.spmm_csr(x, c))(cs),
                cs.nbytes,
                check=(lambda c: lambda x: reference.spmm_csr(x, c))(cs),
            )
        )
        if sp == 0.9:
            cq, sq = sym_quant(Ws, 8, None)
            csq = jk.csr_from_quantized(cq, sq[0], mask=Ws != 0)
            add(
                Impl(
                    "ours CSR int8 values 90%",
                    cat,
                    (lambda c: lambda x: jk.spmm_csr(x, c))(csq),
                    csq.nbytes,
                    check=(lambda c: lambda x: reference.spmm_csr(x, c))(csq),
                )
            )
        if scipy_sparse is not None:
            st = scipy_sparse.csr_matrix(Ws.T)
            add(
                Impl(
                    f"SciPy CSR {int(sp * 100)}%",
                    cat,
                    (lambda st: lambda x: (st @ x.T).T)(st),  # noqa: B023
                    st.data.nbytes + st.indices.nbytes + st.indptr.nbytes,
                )
            )
        if torch is not None:
            tt = torch.from_numpy(Ws.T.copy()).to_sparse_csr()
            add(
                Impl(
                    f"PyTorch sparse CSR {int(sp * 100)}%",
                    cat,
                    (lambda tt: lambda x: (tt @ torch.from_numpy(x).T).T)(tt),  # noqa: B023
                    tt.values().nbytes + tt.col_indices().nbytes + tt.crow_indices().nbytes,
                )
            )
    # block sparse: 90% of (4, 16) blocks zero
    r, c = 4, 16
    keepb = rng.random((n // r, k // c)) >= 0.9
    Wb = W * np.kron(keepb, np.ones((r, c), np.float32)).T
    bs = jk.bsr_from_dense(Wb, block=(r, c))
    add(
        Impl(
            "ours BSR 4x16 90%",
            "BSR 90%",
            lambda x: jk.spmm_bsr(x, bs),
            bs.nbytes,
            check=lambda x: reference.spmm_bsr(x, bs),
        )
    )
    if scipy_sparse is not None:
        sb = scipy_sparse.bsr_matrix(np.ascontiguousarray(Wb.T), blocksize=(r, c))
        add(
            Impl(
                "SciPy BSR 4x16 90%",
                "BSR 90%",
                lambda x: (sb @ x.T).T,
                sb.data.nbytes + sb.indices.nbytes + sb.indptr.nbytes,
            )
        )
    return impls


# ----------------------------------------------------------------------------------------------
# timing


def set_threads(t, libs):
    CUR["threads"] = t
    jk.set_num_threads(t)
    if libs["tpc"] is not None:
        libs["tpc"].threadpool_limits(t)
    if libs["torch"] is not None:
        libs["torch"].set_num_threads(t)


def run_cell(impls, x, repeats, flush, check=True):
    for im in impls:  # warm-up (compile, first-touch) and a sanity check against the twin
        y = im.fn(x)
        if hasattr(y, "float") and hasattr(y, "numpy"):  # torch tensor (maybe bf16)
            y = y.float().numpy()
        y = np.asarray(y, dtype=np.float32)
        im.err = None
        if check and im.check is not None:
            yr = im.check(x)
            im.err = float(np.abs(y - yr).max() / max(np.abs(yr).max(), 1e-30))
    times = {im.name: [] for im in impls}
    for _ in range(repeats):
        for im in impls:  # round robin
            flush()
            t0 = time.perf_counter()
            im.fn(x)
            times[im.name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def peak_extra_memory(fn, x):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    y = fn(x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, np.asarray(y).nbytes


# ----------------------------------------------------------------------------------------------
# pack / unpack


def np_pack(codes, bits):
    if bits == 4:
        return codes[0::2] | (codes[1::2] << 4)
    if bits == 2:
        return codes[0::4] | (codes[1::4] << 2) | (codes[2::4] << 4) | (codes[3::4] << 6)
    # 3 bits: 8 codes -> one uint32 of 24 bits -> 3 bytes
    c = codes.reshape(-1, 8).astype(np.uint32)
    v = (c << (3 * np.arange(8, dtype=np.uint32))).sum(1, dtype=np.uint32)
    return v.view(np.uint8).reshape(-1, 4)[:, :3].reshape(-1)


def np_unpack(packed, bits, n):
    out = np.empty(n, np.uint8)
    if bits == 4:
        out[0::2] = packed & 15
        out[1::2] = packed >> 4
        return out
    if bits == 2:
        for j in range(4):
            out[j::4] = (packed >> (2 * j)) & 3
        return out
    b = np.zeros((n // 8, 4), np.uint8)
    b[:, :3] = packed.reshape(-1, 3)
    v = b.view(np.uint32).reshape(-1, 1)
    return ((v >> (3 * np.arange(8, dtype=np.uint32))) & 7).astype(np.uint8).reshape(-1)


class NpPackOut:
    """The NumPy versions writing into preallocated outputs, with preallocated scratch (no
    allocation per call), so `out=` rows compare like with like."""

    def __init__(self, n, bits):
        self.bits = bits
        self.scratch = np.empty(n // (8 // bits) if bits in (2, 4) else n // 8, np.uint8)
        self.t32 = np.empty(n // 8 if bits == 3 else 0, np.uint32)
        self.v32 = np.empty(n // 8 if bits == 3 else 0, np.uint32)
        self.b4 = np.zeros((n // 8 if bits == 3 else 0, 4), np.uint8)

    def pack(self, codes, out):
        bits = self.bits
        if bits == 4:
            np.left_shift(codes[1::2], 4, out=out)
            np.bitwise_or(out, codes[0::2], out=out)
            return out
        if bits == 2:
            np.left_shift(codes[3::4], 6, out=out)
            for j in (2, 1):
                np.left_shift(codes[j::4], 2 * j, out=self.scratch)
                np.bitwise_or(out, self.scratch, out=out)
            np.bitwise_or(out, codes[0::4], out=out)
            return out
        c = codes.reshape(-1, 8)
        self.v32[:] = 0
        for j in range(8):
            np.left_shift(c[:, j], 3 * j, out=self.t32, dtype=np.uint32)
            np.bitwise_or(self.v32, self.t32, out=self.v32)
        out.reshape(-1, 3)[:] = self.v32.view(np.uint8).reshape(-1, 4)[:, :3]
        return out

    def unpack(self, packed, out):
        bits = self.bits
        if bits == 4:
            np.bitwise_and(packed, 15, out=out[0::2])
            np.right_shift(packed, 4, out=out[1::2])
            return out
        if bits == 2:
            for j in range(4):
                o = out[j::4]
                np.right_shift(packed, 2 * j, out=o)
                np.bitwise_and(o, 3, out=o)
            return out
        self.b4[:, :3] = packed.reshape(-1, 3)
        v = self.b4.view(np.uint32).reshape(-1)
        for j in range(8):
            np.right_shift(v, 3 * j, out=self.t32)
            np.bitwise_and(self.t32, 7, out=self.t32)
            np.copyto(out[j::8], self.t32, casting="unsafe")
        return out


def bench_packing(n, threads_list, repeats, libs, flush):
    rows = []
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = jk.pack_bits(codes, bits)
        assert np.array_equal(np_pack(codes, bits), packed)
        assert np.array_equal(np_unpack(packed, bits, n), codes)
        npo = NpPackOut(n, bits)
        assert np.array_equal(npo.pack(codes, np.empty_like(packed)), packed)
        assert np.array_equal(npo.unpack(packed, np.empty_like(codes)), codes)
        for t in threads_list:
            set_threads(t, libs)
            pbuf = np.empty_like(packed)
            ubuf = np.empty_like(codes)
            pbuf2 = np.empty_like(packed)
            ubuf2 = np.empty_like(codes)
            fns = {
                "ours pack": lambda: jk.pack_bits(codes, bits),  # noqa: B023
                "ours pack out=": lambda: jk.pack_bits(codes, bits, out=pbuf),  # noqa: B023
                "NumPy pack": lambda: np_pack(codes, bits),  # noqa: B023
                "NumPy pack out=": lambda: npo.pack(codes, pbuf2),  # noqa: B023
                "ours unpack": lambda: jk.unpack_bits(packed, bits, n),  # noqa: B023
                "ours unpack out=": lambda: jk.unpack_bits(packed, bits, n, out=ubuf),  # noqa: B023
                "NumPy unpack": lambda: np_unpack(packed, bits, n),  # noqa: B023
                "NumPy unpack out=": lambda: npo.unpack(packed, ubuf2),  # noqa: B023
                # lower bounds for any kernel returning a new array: allocate it, write it once
                "floor pack": lambda: _fill_par(np.empty(packed.size, np.uint8)),  # noqa: B023
                "floor unpack": lambda: _fill_par(np.empty(n, np.uint8)),  # noqa: B023
            }
            for f in fns.values():
                f()
            ts = {k: [] for k in fns}
            for _ in range(repeats):
                for k_, f in fns.items():
                    flush()
                    t0 = time.perf_counter()
                    f()
                    ts[k_].append(time.perf_counter() - t0)
            med = {k_: float(np.median(v)) for k_, v in ts.items()}
            rows.append((bits, t, med))
    return rows


# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one shape, batch 1, 2 threads, 3 repeats")
    ap.add_argument(
        "--shapes",
        default="4096x4096,4096x11008",
        help="comma list of KxN (W is (K, N) = (in, out), y = x @ W)",
    )
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flush-mib", type=int, default=512)
    ap.add_argument("--csr-sparsities", default="0.75,0.9")
    ap.add_argument("--pack-n", type=int, default=1 << 26)
    ap.add_argument(
        "--packing-only", action="store_true", help="only the pack / unpack tables and targets"
    )
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_kernels.md"))
    ap.add_argument(
        "--summarize",
        metavar="FILE",
        help="recompute the targets table of an existing results file (no timing) and exit",
    )
    a = ap.parse_args(argv)
    if a.quick:
        a.shapes, a.batches, a.threads, a.repeats = "4096x4096", "1", "2", 3
        a.csr_sparsities = "0.9"
        a.pack_n = 1 << 24
    a.shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    a.batches = [int(v) for v in a.batches.split(",")]
    a.threads = [int(v) for v in a.threads.split(",")]
    a.csr_sparsities = [float(v) for v in a.csr_sparsities.split(",")]
    return a


def _write_atomic(path: pathlib.Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def summarize_file(path):
    """Re-reads the per-cell tables of a results file and (re)writes its targets section."""
    import re

    text = pathlib.Path(path).read_text()
    by_cell, cur = {}, None
    pack, pcur = [], None
    for line in text.splitlines():
        mcell = re.match(r"## W (\d+)x(\d+), batch (\d+), (\d+) thread", line)
        mpack = re.match(r"## Bit packing, (\d+) codes \(uint8 in, (.*), median\)", line)
        if mcell:
            k, n, m, t = (int(v) for v in mcell.groups())
            cur, pcur = ((k, n), m, t), None
            by_cell[cur] = []
        elif mpack:
            pcur, cur = (int(mpack.group(1)), mpack.group(2), []), None
            pack.append(pcur)
        elif line.startswith("## "):
            cur = pcur = None
        elif cur and line.startswith("| ") and not line.startswith("| implementation"):
            c = [v.strip() for v in line.strip("|").split("|")]
            by_cell[cur].append((cur[0], cur[1], cur[2], c[0], c[1], float(c[2]) / 1e3))
        elif pcur and line.startswith("| ") and not line.startswith("| bits"):
            c = [v.strip() for v in line.strip("|").split("|")]
            if len(c) not in (14, 16):
                continue
            bits, t = int(c[0]), int(c[1])
            # Gvalue/s -> seconds per call (only ratios are used)
            names = [
                f"{who} {op}{sfx}"
                for op in ("pack", "unpack")
                for sfx in ("", " out=")
                for who in ("ours", "NumPy")
            ]
            med = {name: 1 / float(v) for name, v in zip(names, c[2:10], strict=True)}
            if len(c) == 16:
                med["floor pack"], med["floor unpack"] = 1 / float(c[14]), 1 / float(c[15])
            pcur[2].append((bits, t, med))
    summary = "\n".join(target_summary(by_cell, pack))
    head, sep, rest = text.partition("## Targets of issue 3")
    if sep:  # replace the old section
        rest = rest[rest.index("\n## ") + 1 :]
        text = head + summary + "\n" + rest
    else:
        first = text.index("\n## W ") + 1
        text = text[:first] + summary + "\n" + text[first:]
    _write_atomic(pathlib.Path(path), text)
    print(summary)


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        summarize_file(args.summarize)
        return
    t_start = time.time()
    libs = {
        "tpc": try_import("threadpoolctl"),
        "ort": try_import("onnxruntime"),
        "scipy": None,
        "torch": None if args.no_torch else try_import("torch"),
        "jax": None if args.no_jax else try_import("jax"),
    }
    try:
        import scipy.sparse as scipy_sparse

        libs["scipy"] = scipy_sparse
    except Exception:  # noqa: BLE001
        pass
    if libs["jax"] is not None:
        libs["jax"].config.update("jax_platforms", "cpu")
    print("[bench] warm-up / compile:", round(jk.warmup(), 2), "s", flush=True)
    flush = Flusher(args.flush_mib)
    bw = {t: read_bandwidth(t) for t in args.threads}
    print("[bench] read bandwidth GB/s:", bw, flush=True)

    results = []  # (shape, batch, threads, impl, category, seconds, weight_bytes, err, note)
    mem_rows = []
    for k, n in [] if args.packing_only else args.shapes:
        rng = np.random.default_rng(k * 7 + n)
        W = rng.standard_normal((k, n)).astype(np.float32) * 0.02
        impls = build_cell_impls(W, k, n, args.threads, libs, args)
        print(f"[bench] {k}x{n} weights built ({time.time() - t_start:.0f} s)", flush=True)
        for t in args.threads:
            set_threads(t, libs)
            for m in args.batches:
                x = rng.standard_normal((m, k)).astype(np.float32)
                # correctness does not depend on the thread count: check once per weight
                check = t == args.threads[0] and m == args.batches[0]
                med = run_cell(impls, x, args.repeats, flush, check=check)
                for im in impls:
                    results.append(
                        (
                            (k, n),
                            m,
                            t,
                            im.name,
                            im.category,
                            med[im.name],
                            im.weight_bytes,
                            im.err,
                            im.note,
                        )
                    )
                print(
                    f"[bench] {k}x{n} batch {m} threads {t} done ({time.time() - t_start:.0f} s)",
                    flush=True,
                )
                if t == max(args.threads) and m == max(args.batches):
                    for im in impls:
                        if im.name.startswith("ours") or im.name.startswith("NumPy"):
                            peak, outb = peak_extra_memory(im.fn, x)
                            mem_rows.append(((k, n), m, im.name, peak, outb, im.weight_bytes))
        del impls, W
        gc.collect()
    pack_rows = [
        (
            args.pack_n,
            "cache flushed",
            bench_packing(args.pack_n, args.threads, args.repeats, libs, flush),
        ),
        (
            1 << 20,
            "in cache (no flush)",
            bench_packing(1 << 20, args.threads, 2 * args.repeats, libs, lambda: None),
        ),
    ]
    write_table(args, results, mem_rows, pack_rows, bw, libs, time.time() - t_start)


def versions(libs):
    v = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for key, mod in (("onnxruntime", libs["ort"]), ("torch", libs["torch"]), ("jax", libs["jax"])):
        if mod is not None:
            v[key] = mod.__version__
    try:
        import scipy

        v["scipy"] = scipy.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        import onnx

        v["onnx"] = onnx.__version__
    except Exception:  # noqa: BLE001
        pass
    return v


def blas_info(libs):
    if libs["tpc"] is None:
        return "unknown (threadpoolctl missing)"
    out = []
    for info in libs["tpc"].threadpool_info():
        if info.get("user_api") == "blas":
            out.append(
                f"{info.get('internal_api')} {info.get('version')} "
                f"(kernel {info.get('architecture')}, {info.get('filepath', '').split('/')[-1]})"
            )
    return "; ".join(out) or "none found"


def _t(rows, name):
    for r in rows:
        if r[3] == name:
            return r[5]
    return None


def _best(rows, pred):
    ts = [r[5] for r in rows if pred(r)]
    return min(ts) if ts else None


def target_summary(by_cell, pack_rows):
    """The issue's targets as measured ratios (higher = faster than the reference)."""
    out = [
        "## Targets of issue 3 (ratios measured in this run; 'met' compares with the minimum)",
        "",
        "| target | W | threads | measured | minimum (goal) | met |",
        "|---|---|---:|---:|---:|---|",
    ]

    def add(label, shape, t, ratio, minimum, goal=None):
        if ratio is None:
            return
        g = f"{minimum:g}x" + (f" ({goal:g}x)" if goal else "")
        out.append(
            f"| {label} | {shape[0]}x{shape[1]} | {t} | {ratio:.2f}x | {g} | "
            f"{'yes' if ratio >= minimum else '**no**'} |"
        )

    def ratio(ref, ours):
        return None if ref is None or ours is None else ref / ours

    not_ours = lambda r: not r[3].startswith("ours")  # noqa: E731
    for (shape, m, t), rows in by_cell.items():
        # XLA's CPU pool is fixed at start-up (all cores) and ignores the thread limit, so JAX
        # is no anchor in 1-thread cells (its rows are not printed there either)
        dense = _best(
            rows,
            lambda r, t=t: (
                r[4] == "fp32 dense" and not_ours(r) and not (t == 1 and r[3].startswith("JAX"))
            ),
        )
        numpy_t = _t(rows, "NumPy fp32 (BLAS)")
        q4 = _t(rows, "ours qmatmul 4-bit g32")
        if m == 1:
            best4 = _best(rows, lambda r: r[4] == "4-bit" and not_ours(r))
            add("4-bit g32, batch 1, vs best 4-bit anchor", shape, t, ratio(best4, q4), 1.0, 1.5)
            best8 = _best(rows, lambda r: r[4] == "int8" and not_ours(r))
            q8 = _t(rows, "ours qmatmul 8-bit per-channel")
            add(
                "int8 per-channel, batch 1, vs best int8 anchor",
                shape,
                t,
                ratio(best8, q8),
                1.0,
                1.3,
            )
            add(
                "4-bit g32 compute=int8, batch 1, vs best 4-bit anchor",
                shape,
                t,
                ratio(best4, _t(rows, "ours qmatmul 4-bit g32 compute=int8")),
                1.0,
                1.5,
            )
            add(
                "int8 per-channel compute=int8, batch 1, vs best int8 anchor",
                shape,
                t,
                ratio(best8, _t(rows, "ours qmatmul 8-bit per-channel compute=int8")),
                1.0,
                1.3,
            )
            add(
                "2:4 fp32 values, batch 1, vs NumPy fp32",
                shape,
                t,
                ratio(numpy_t, _t(rows, "ours 2:4 fp32 values")),
                1.4,
                1.88,
            )
            add(
                "2:4 4-bit values, batch 1, vs NumPy fp32",
                shape,
                t,
                ratio(numpy_t, _t(rows, "ours 2:4 4-bit values")),
                3.0,
            )
            c90 = _t(rows, "ours CSR fp32 90%")
            if t == 2:
                add(
                    "CSR 90%, batch 1, vs SciPy CSR",
                    shape,
                    t,
                    ratio(_t(rows, "SciPy CSR 90%"), c90),
                    1.5,
                )
                add(
                    "CSR 90%, batch 1, vs best CSR anchor",
                    shape,
                    t,
                    ratio(_best(rows, lambda r: r[4] == "CSR 90%" and not_ours(r)), c90),
                    1.0,
                )
                add(
                    "CSR 75%, batch 1, vs best fp32 dense",
                    shape,
                    t,
                    ratio(dense, _t(rows, "ours CSR fp32 75%")),
                    1.0,
                )
        if m == 8:
            add("4-bit g32, batch 8, vs best fp32 dense", shape, t, ratio(dense, q4), 2.0)
        if m == 64:
            add("4-bit g32, batch 64, vs best fp32 dense", shape, t, ratio(dense, q4), 1.0)
    want = {4: 5.0, 2: 10.0, 3: 20.0}
    for npack, how, rows in pack_rows:
        for bits, t, med in rows:
            for op in ("pack", "unpack"):
                for sfx, what in (("", "new output"), (" out=", "both out=")):
                    if f"NumPy {op}{sfx}" not in med:
                        continue
                    r = med[f"NumPy {op}{sfx}"] / med[f"ours {op}{sfx}"]
                    bound = ""
                    if not sfx and f"floor {op}" in med:
                        b = med[f"NumPy {op}"] / med[f"floor {op}"]
                        bound = f"; any new-output kernel <= {b:.1f}x"
                    out.append(
                        f"| {op} {bits}-bit vs NumPy ({npack} codes, {how}, {what}{bound}) | - | "
                        f"{t} | {r:.2f}x | {want[bits]:g}x | "
                        f"{'yes' if r >= want[bits] else '**no**'} |"
                    )
    out.append("")
    return out


def write_table(args, results, mem_rows, pack_rows, bw, libs, elapsed):
    lines = []
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "flock /tmp/jaxcompress-bench.lock " + " ".join(
        shlex.quote(a) for a in [sys.executable, "benchmarks/bench_kernels.py", *sys.argv[1:]]
    )
    lines += [
        "# Edge kernel benchmark (issue 3)",
        "",
        f"- Date: {now}; total wall time {elapsed:.0f} s",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores (`lscpu` reports L2 4 MiB, L3 480 MiB "
        "for this VM); load average at start "
        f"{os.getloadavg()[0]:.1f} (the machine is shared; runs hold /tmp/jaxcompress-bench.lock)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions(libs).items()),
        f"- NumPy BLAS (threadpoolctl): {blas_info(libs)}",
        f"- Environment: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}, "
        f"dropped: {_DROPPED_ENV or 'none set'}; Numba threading layer {numba.threading_layer()}; "
        "ONNX Runtime with intra_op spinning off",
        f"- Command: `{cmd}`",
        f"- Method: W is (K, N) float32 N(0, 0.02) (seeded), x (batch, K); per cell the "
        f"implementations run round robin, {args.repeats} repeats, median; before every timed call "
        f"a {args.flush_mib} MiB buffer is read to flush the caches. Weight GB/s = bytes of the "
        "weight as stored (values + indices + scales) / time; % BW = that over the measured read "
        "bandwidth at the same thread count. 'vs NumPy' = NumPy fp32 time / time (higher is "
        "faster); 'vs best anchor' = best non-ours time of the same category / our time.",
        "- Read bandwidth (parallel Numba sum over 1 GiB): "
        + ", ".join(f"{t} thread(s) {v:.1f} GB/s" for t, v in bw.items()),
        "- rel err = max |y - y_twin| / max |y_twin| against the float64 NumPy twin of OUR format "
        "(anchors with their own quantization grid, bf16 activations or int8 activations differ "
        "by their quantization error).",
        "",
    ]
    by_cell = {}
    for r in results:
        by_cell.setdefault((r[0], r[1], r[2]), []).append(r)
    lines += target_summary(by_cell, pack_rows)
    for (shape, m, t), rows in by_cell.items():
        base = next(r[5] for r in rows if r[3].startswith("NumPy fp32"))
        if t == 1:
            rows = [r for r in rows if not r[3].startswith("JAX")]  # XLA ignores our thread limit
        lines += [
            f"## W {shape[0]}x{shape[1]}, batch {m}, {t} thread(s)",
            "",
            "| implementation | category | ms | weight MB | weight GB/s | % BW | vs NumPy fp32 "
            "| vs best anchor | rel err | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            _, _, _, name, cat, sec, wb, err, note = r
            anchors = [q[5] for q in rows if q[4] == cat and not q[3].startswith("ours")]
            if cat in ("2-bit", "3-bit", "1:4") or (cat == "2:4" and not anchors):
                anchors = []
            vs_anchor = ""
            if name.startswith("ours") and anchors:
                vs_anchor = f"{min(anchors) / sec:.2f}x"
            elif name.startswith("ours") and cat != "fp32 dense":
                vs_anchor = "no anchor"
            gbs = wb / sec / 1e9
            lines.append(
                f"| {name} | {cat} | {sec * 1e3:.2f} | {wb / 1e6:.1f} | {gbs:.1f} | "
                f"{100 * gbs / bw[t]:.0f}% | {base / sec:.2f}x | {vs_anchor} | "
                f"{'' if err is None else f'{err:.1e}'} | {note} |"
            )
        lines.append("")
    if mem_rows:
        lines += [
            "## Peak extra memory of one call (tracemalloc, includes Numba's allocations)",
            "",
            "| W | batch | implementation | peak extra MB | output MB | weight MB |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for shape, m, name, peak, outb, wb in mem_rows:
            lines.append(
                f"| {shape[0]}x{shape[1]} | {m} | {name} | {peak / 1e6:.2f} | "
                f"{outb / 1e6:.2f} | {wb / 1e6:.1f} |"
            )
        lines.append("")
    for npack, how, rows in pack_rows:
        lines += [
            f"## Bit packing, {npack} codes (uint8 in, {how}, median)",
            "",
            "| bits | threads | ours pack | NumPy pack | ours pack out= | NumPy pack out= | "
            "ours unpack | NumPy unpack | ours unpack out= | NumPy unpack out= | pack ratio | "
            "pack ratio out= | unpack ratio | unpack ratio out= | alloc+write floor pack | "
            "alloc+write floor unpack |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        keys = [
            f"{who} {op}{sfx}"
            for op in ("pack", "unpack")
            for sfx in ("", " out=")
            for who in ("ours", "NumPy")
        ]
        for bits, t, med in rows:
            gv = " | ".join(f"{npack / med[k_] / 1e9:.2f}" for k_ in keys)
            rt = " | ".join(
                f"{med[f'NumPy {op}{sfx}'] / med[f'ours {op}{sfx}']:.1f}x"
                for op in ("pack", "unpack")
                for sfx in ("", " out=")
            )
            fl = " | ".join(f"{npack / med[f'floor {op}'] / 1e9:.2f}" for op in ("pack", "unpack"))
            lines.append(f"| {bits} | {t} | {gv} | {rt} | {fl} |")
        lines.append("")
    lines += [
        "",
        "Columns 3-10 in Gvalue/s. NumPy versions: 2/4-bit strided shifts and ors; 3-bit via one "
        "uint32 per 8 codes (`np_pack` / `np_unpack` in the script); their out= forms "
        "(`NpPackOut`) write into a preallocated output with preallocated scratch. Without out= "
        "both sides allocate their output per call (page faults included); the alloc+write "
        "floor (last two columns) allocates the output and writes each byte once with the "
        "same thread count, a lower bound on any kernel returning a new array. The flushed table "
        "reads its input from DRAM (both sides are then largely memory bound); the in-cache "
        "table shows the compute ratio.",
        "",
    ]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, "\n".join(lines))
    print("\n".join(lines))
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
