"""Exact global magnitude masks for a 100M-parameter pytree: ours vs sort / top_k / np.partition.

    flock /tmp/jaxcompress-bench.lock /work/venv/bin/python benchmarks/bench_prune.py

Every method prunes exactly ``k = round(s * N)`` weights (``s = 0.9``) of 25 float32 leaves of
2048x2048 (104.9M parameters). Ours (``jaxcompress.pruning.magnitude_masks(scope="global")``,
jitted) is a radix/histogram select over the float bits. The anchors are what a user would
otherwise write: the threshold from ``jnp.sort`` of all magnitudes, from ``jax.lax.top_k`` of the
negated magnitudes, and from NumPy's O(n) ``np.partition`` on the host (each anchor is timed up to
the threshold plus the mask comparison). Exactness: our masks are checked against the
``np.partition`` k-th value (count, ordering and the flat-order tie rule). Peak extra memory of the
jitted functions is XLA's ``temp_size_in_bytes`` (scratch beyond the arguments and outputs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcompress
from jaxcompress.pruning import magnitude_masks
from jaxcompress.pruning._select import magnitude_keys

ROOT = Path(__file__).resolve().parent


def cpu_model() -> str:
    from jaxcompress_kernels.machine import cpu_model

    return cpu_model()


def timed(fn, repeats, warmup=True):
    if warmup:
        jax.block_until_ready(fn())  # warm-up / compile
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def temp_bytes(jitted, *args):
    try:
        ma = jitted.lower(*args).compile().memory_analysis()
        return int(ma.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - backend without memory analysis
        return -1


def check_exact(params, masks, k):
    """Exactness against np.partition: count, ordering, and the flat-order tie rule."""
    mags = np.concatenate([np.abs(np.asarray(w)).ravel() for w in params])
    keep = np.concatenate([np.asarray(m).ravel() for m in masks])
    t = np.partition(mags, k - 1)[k - 1]
    pruned = ~keep
    assert int(pruned.sum()) == k, (int(pruned.sum()), k)
    assert mags[pruned].max() == t and (mags[keep] >= t).all()
    assert (pruned[mags < t]).all()
    ties = np.flatnonzero(mags == t)
    r = k - int((mags < t).sum())
    assert pruned[ties[:r]].all() and not pruned[ties[r:]].any(), "tie rule"
    return int(len(ties))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--leaves", type=int, default=25)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-sort", action="store_true", help="skip the (slow) jnp.sort / top_k")
    ap.add_argument("--quick", action="store_true", help="4 leaves of 512x512, 2 repeats")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_prune.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.leaves, args.dim, args.repeats = 4, 512, 2

    rng = np.random.default_rng(0)
    host = [rng.standard_normal((args.dim, args.dim), dtype=np.float32) for _ in range(args.leaves)]
    params = [jnp.asarray(w) for w in host]
    n = sum(w.size for w in host)
    k = int(round(args.sparsity * n))
    rows = []

    # ours
    ours = jax.jit(lambda p: magnitude_masks(p, args.sparsity, scope="global"))
    t_ours, masks = timed(lambda: ours(params), args.repeats)
    n_ties = check_exact(host, masks, k)
    mem_ours = temp_bytes(ours, params)
    rows.append(("jaxcompress radix select (jit)", t_ours, mem_ours, "yes (checked)"))
    print(
        f"ours {t_ours * 1e3:.1f} ms, temp {mem_ours / 2**20:.1f} MiB, ties at cut {n_ties}",
        flush=True,
    )

    # np.partition on the host (abs + partition + mask)
    def np_part():
        mags = np.abs(np.concatenate([w.ravel() for w in host]))
        t = np.partition(mags, k - 1)[k - 1]
        return [np.abs(w) > t for w in host]  # ties at t all pruned: not exact when tied

    t_np, _ = timed(np_part, args.repeats)
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc
    np_part()
    mem_np = tracemalloc.get_traced_memory()[1] - n  # peak minus the bool masks it returns
    tracemalloc.stop()
    rows.append(("np.partition (host, 1 thread)", t_np, mem_np, "threshold only"))
    print(f"np.partition {t_np * 1e3:.1f} ms", flush=True)

    def keys_concat(p):
        return jnp.concatenate([magnitude_keys(w).ravel() for w in p])

    if not args.skip_sort:
        sort_fn = jax.jit(
            lambda p: [
                jnp.abs(w) > jnp.sort(jnp.abs(jnp.concatenate([x.ravel() for x in p])))[k - 1]
                for w in p
            ]
        )
        sort_c = sort_fn.lower(params).compile()  # compile ahead; then one timed run
        t_sort, _ = timed(lambda: sort_c(params), 1, warmup=False)
        rows.append(
            (
                "jnp.sort of all magnitudes (jit)",
                t_sort,
                temp_bytes(sort_fn, params),
                "threshold only",
            )
        )
        print(f"jnp.sort {t_sort * 1e3:.1f} ms", flush=True)
        topk_fn = jax.jit(
            lambda p: [
                jnp.abs(w)
                > -jax.lax.top_k(-jnp.abs(jnp.concatenate([x.ravel() for x in p])), k)[0][-1]
                for w in p
            ]
        )
        topk_c = topk_fn.lower(params).compile()
        t_topk, _ = timed(lambda: topk_c(params), 1, warmup=False)
        rows.append(
            ("jax.lax.top_k(-|w|, k) (jit)", t_topk, temp_bytes(topk_fn, params), "threshold only")
        )
        print(f"top_k {t_topk * 1e3:.1f} ms", flush=True)

    # a single memory pass for scale
    sum_fn = jax.jit(lambda p: sum(jnp.sum(jnp.abs(w)) for w in p))
    t_sum, _ = timed(lambda: sum_fn(params), args.repeats)
    rows.append(("one pass sum(|w|) (jit, for scale)", t_sum, temp_bytes(sum_fn, params), "-"))

    lines = [
        "# bench_prune: exact global magnitude masks",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared), {platform.system()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, numpy "
        f"{np.__version__}, jaxcompress {jaxcompress.__version__}",
        f"- command: `flock /tmp/jaxcompress-bench.lock {Path(sys.executable).name} "
        f"benchmarks/bench_prune.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- input: {args.leaves} float32 leaves of {args.dim}x{args.dim} = {n:,} parameters "
        f"({n * 4 / 2**20:.0f} MiB), standard normal, seed 0; sparsity {args.sparsity} -> k = {k:,} "
        f"pruned; {n_ties} magnitudes tied at the cut",
        f"- times: median of {args.repeats} after a warm-up (sort and top_k: compiled ahead, 1 timed run); "
        "every method includes building the masks",
        "- extra memory: XLA temp buffers of the compiled function (beyond inputs and outputs); "
        "np.partition: peak of NumPy allocations (tracemalloc) minus its output masks",
        "",
        "| method | time (ms) | vs ours | extra memory (MiB) | exact k, tie rule |",
        "|---|---:|---:|---:|---|",
    ]
    for name, t, mem, exact in rows:
        mem_s = f"{mem / 2**20:.0f}" if mem >= 0 else "n/a"
        lines.append(f"| {name} | {t * 1e3:.1f} | {t / t_ours:.2f}x | {mem_s} | {exact} |")
    lines += [
        "",
        f"- ours / np.partition = {t_ours / t_np:.2f} (target <= 1.5)",
    ]
    if not args.skip_sort:
        lines.append(
            f"- jnp.sort / ours = {t_sort / t_ours:.0f}x (target >= 50x); "
            f"top_k / ours = {t_topk / t_ours:.0f}x"
        )
    lines.append(
        f"- ours extra memory / one copy of the magnitudes ({n * 4 / 2**20:.0f} MiB) = "
        f"{mem_ours / (n * 4):.2f} (target <= 1)"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
