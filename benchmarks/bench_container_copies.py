"""Do containers that own immutable copies make the kernels slower? (issue 16)

Since issue 16 every kernel container copies its arrays at construction into a NumPy allocation
exposed through a read-only array interface (`formats._frozen`: nobody can write them or set them
writeable again). The kernels validate nothing per call, so the only possible effect on the hot
path is the memory itself (allocator, alignment, huge pages). This script builds each container
once and makes two twins holding the same bytes: NumPy-owned read-only arrays (what containers
held before: read-only views of NumPy arrays) and arrays over a Python ``bytes`` object (the first
design tried: immutable too, but its memory gets no transparent-huge-page advice). It times the
kernel on all three, round robin, in one process.

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


def _bytes_twin(c):
    """The same container with arrays over ``bytes`` objects (the first design tried)."""
    t = object.__new__(type(c))
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(v, np.ndarray):
            v = np.frombuffer(v.tobytes(), v.dtype).reshape(v.shape)
        elif isinstance(v, tuple) and all(isinstance(a, np.ndarray) for a in v):
            v = tuple(np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape) for a in v)
        object.__setattr__(t, f.name, v)
    return t


def _huge_kb(c) -> int:
    """kB of transparent huge pages in the mapping holding the container's largest array (Linux;
    0 elsewhere):
    on a shared machine whether a large allocation gets huge pages varies from run to run and
    moves kernel times by more than any other difference between the variants."""
    arrays = [getattr(c, f.name) for f in dataclasses.fields(c)]
    a = max((v for v in arrays if isinstance(v, np.ndarray)), key=lambda v: v.nbytes)
    addr, inside = a.ctypes.data, False
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    lo, hi = (int(v, 16) for v in head.split("-"))
                    inside = lo <= addr < hi
                elif inside and line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


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
            variants = (c, _numpy_twin(c), _bytes_twin(c))
            want = fn(x, c)
            for v in variants:  # same bytes, same answer; warm-up (compilation, caches)
                np.testing.assert_array_equal(fn(x, v), want)
            times = [[] for _ in variants]
            for r in range(args.repeats):
                for j in range(3):  # rotate the order: no variant always runs first
                    i = (r + j) % 3
                    t0 = time.perf_counter()
                    fn(x, variants[i])
                    times[i].append(time.perf_counter() - t0)
            mf, mn, mb = (statistics.median(t) for t in times)
            # paired: the ratio within each round, then the median (cancels load drifts)
            pn = statistics.median(b / a for a, b in zip(times[0], times[1], strict=True))
            pb = statistics.median(b / a for a, b in zip(times[0], times[2], strict=True))
            huge = "/".join(str(_huge_kb(v) // 1024) for v in variants)
            rows.append((name, batch, mf, mn, mb, pn, pb, huge))
            print(
                f"{name:28s} batch {batch}: frozen {mf * 1e6:9.1f} us, numpy-owned "
                f"{mn * 1e6:9.1f} us (ratio {pn:.3f}), bytes {mb * 1e6:9.1f} us "
                f"(ratio {pb:.3f})",
                flush=True,
            )
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = float("nan")
    from jaxcompress_kernels.machine import cpu_model

    cpu = cpu_model()
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
        "- Method: each container (frozen: the shipped immutable copies) and two twins holding the "
        "same bytes, NumPy-owned read-only arrays (what containers held before issue 16) and "
        "arrays over `bytes` objects (the first design tried), run round robin; median over the "
        "repeats, the order rotating every round. ratio = median over rounds of twin time / frozen "
        "time in the same round (> 1: frozen is faster, < 1: slower).",
        "",
        "- THP MiB: AnonHugePages of the memory mapping that holds the largest array of each "
        "variant (frozen/numpy-owned/bytes; /proc/self/smaps, per mapping, not per array). The "
        "kernel reads the same bytes in all three variants; on this shared machine whether a large "
        "allocation gets huge pages varies from run to run, and single cells move by up to ~1.5x "
        "with it (e.g. qmatmul_int8 batch 1 below, where only the twins differ).",
        "",
        "| kernel | batch | frozen (us) | numpy-owned (us) | ratio | bytes (us) | ratio | THP MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, batch, mf, mn, mb, pn, pb, huge in rows:
        lines.append(
            f"| {name} | {batch} | {mf * 1e6:.1f} | {mn * 1e6:.1f} | {pn:.3f} | "
            f"{mb * 1e6:.1f} | {pb:.3f} | {huge} |"
        )
    ratios = sorted(r[5] for r in rows)
    lines += [
        "",
        f"frozen vs numpy-owned over all {len(rows)} cells: median ratio "
        f"{statistics.median(ratios):.3f}, min {ratios[0]:.3f}, max {ratios[-1]:.3f}.",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
