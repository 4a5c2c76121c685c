"""Do containers that own immutable (``bytes``-backed) copies make the kernels slower? (issue 16)

Since issue 16 every kernel container copies its arrays at construction into memory owned by a
Python ``bytes`` object (so nobody can write them or set them writeable again). The kernels
validate nothing per call, so the only possible effect on the hot path is the memory itself
(allocator, alignment). This script builds each container once, then makes a twin whose arrays are
ordinary NumPy-allocated read-only arrays holding the same bytes (what containers held before:
read-only views of NumPy arrays), and times the kernel on both, round robin, in one process.

Usage:
    flock /tmp/jaxcompress-bench.lock python benchmarks/bench_container_copies.py \
        [--out benchmarks/results/bench_container_copies.md] [--repeats 21]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time

import numba
import numpy as np

import jaxcompress_kernels as jk

ROOT = os.path.dirname(os.path.abspath(__file__))


def _numpy_twin(c):
    """The same container with NumPy-owned read-only arrays (the pre-issue-16 memory)."""
    t = object.__new__(type(c))
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(v, np.ndarray):
            v = np.array(v, copy=True)
            v.flags.writeable = False
        elif isinstance(v, tuple) and all(isinstance(a, np.ndarray) for a in v):
            v = tuple(np.array(a, copy=True) for a in v)
            for a in v:
                a.flags.writeable = False
        object.__setattr__(t, f.name, v)
    return t


def _cases(k: int, n: int):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
    sparse = np.where(rng.random((k, n)) < 0.1, w, 0).astype(np.float32)
    w24 = w.copy()
    w24.reshape(k // 4, 4, n)[:, 2:] = 0
    codes4 = rng.integers(-8, 8, (k, n)).astype(np.int8)
    codes8 = rng.integers(-127, 128, (k, n)).astype(np.int8)
    g = np.full((k // 32, n), 0.01, np.float32)
    t0 = time.perf_counter()
    out = [
        ("qmatmul 4-bit g32", jk.pack_weight(codes4, g, bits=4, group_size=32), jk.qmatmul, "f"),
        ("qmatmul 8-bit per-channel", jk.pack_weight(codes8, g[0], bits=8), jk.qmatmul, "f"),
        ("qmatmul_int8", jk.int8_weight(codes8), jk.qmatmul_int8, "i"),
        ("spmm_csr 10% fp32", jk.csr_from_dense(sparse), jk.spmm_csr, "f"),
        ("spmm_nm 2:4 fp32", jk.nm_from_dense(w24, n=2), jk.spmm_nm, "f"),
    ]
    build = time.perf_counter() - t0
    return out, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "bench_container_copies.md"))
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    k = n = args.size
    cases, build = _cases(k, n)
    rng = np.random.default_rng(1)
    rows = []
    for batch in (1, 8):
        xf = rng.standard_normal((batch, k)).astype(np.float32)
        xi = rng.integers(-128, 128, (batch, k)).astype(np.int8)
        for name, c, fn, xkind in cases:
            x = xf if xkind == "f" else xi
            twin = _numpy_twin(c)
            np.testing.assert_array_equal(fn(x, c), fn(x, twin))  # same bytes, same answer
            fn(x, c)
            fn(x, twin)  # warm-up (compilation, caches)
            tb, tn = [], []
            for _ in range(args.repeats):
                for lst, w in ((tb, c), (tn, twin)):
                    t0 = time.perf_counter()
                    fn(x, w)
                    lst.append(time.perf_counter() - t0)
            mb, mn = statistics.median(tb), statistics.median(tn)
            rows.append((name, batch, mb, mn, mn / mb))
            print(
                f"{name:28s} batch {batch}: bytes-backed {mb * 1e6:9.1f} us, "
                f"numpy-owned {mn * 1e6:9.1f} us, ratio {mn / mb:.3f}",
                flush=True,
            )
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = float("nan")
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# Containers owning immutable copies: hot-path cost (issue 16)",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start "
        f"{load:.1f} (shared machine; run under /tmp/jaxcompress-bench.lock)",
        f"- Machine: {cpu}, {os.cpu_count()} cores; Numba threads {args.threads}",
        f"- Versions: python {platform.python_version()}, numpy {np.__version__}, numba "
        f"{numba.__version__}",
        f"- Command: `flock /tmp/jaxcompress-bench.lock python benchmarks/bench_container_copies.py "
        f"--size {args.size} --repeats {args.repeats} --threads {args.threads}`",
        f"- W is {k}x{n}; building the five containers (copies included) took {build:.2f} s.",
        "- Method: each container and a twin holding the same bytes in NumPy-owned read-only arrays "
        "(the memory containers held before issue 16) run round robin; median over the repeats. "
        "ratio = numpy-owned time / bytes-backed time (> 1: the copies are faster, < 1: slower).",
        "",
        "| kernel | batch | bytes-backed (us) | numpy-owned (us) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, batch, mb, mn, r in rows:
        lines.append(f"| {name} | {batch} | {mb * 1e6:.1f} | {mn * 1e6:.1f} | {r:.3f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
