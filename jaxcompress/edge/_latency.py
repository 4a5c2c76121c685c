"""Latency measurement: init, first run, warm-up, then steady-state statistics.

The steady state is summarised as MLPerf's single-stream scenario does: the 90th percentile is the
headline, with n, mean, std, min, p50, p95, p99 and max beside it. Percentiles use linear
interpolation between order statistics (NumPy's default ``method="linear"``):
``p_q = x_(i) + (h - i) * (x_(i+1) - x_(i))`` with ``h = (n - 1) * q / 100``, ``i = floor(h)``.

Example:
  >>> import numpy as np
  >>> a = np.ones((64, 64), np.float32)
  >>> stats = measure_latency(lambda: a @ a, warmup=2, iters=20)
  >>> stats.p90 >= stats.p50 >= stats.min
  True
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "LatencyStats",
    "ThreadInfo",
    "measure_latency",
    "percentile",
    "summarize",
    "thread_info",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile of `samples` with linear interpolation (NumPy's default).

    Args:
      samples: one or more finite numbers.
      q: percentile in ``[0, 100]``.

    Returns:
      ``x_(i) + (h - i) * (x_(i+1) - x_(i))`` with ``h = (n - 1) q / 100`` over the sorted samples.

    Raises:
      JaxCompressValueError: empty `samples` or `q` outside ``[0, 100]``.
    """
    x = np.sort(np.asarray(samples, np.float64).ravel())
    if x.size == 0:
        raise JaxCompressValueError("samples must not be empty")
    if not 0.0 <= q <= 100.0:
        raise JaxCompressValueError(f"{q=} must be in [0, 100]")
    h = (x.size - 1) * (q / 100.0)
    i = math.floor(h)
    if i >= x.size - 1:
        return float(x[-1])
    return float(x[i] + (h - i) * (x[i + 1] - x[i]))


@dataclasses.dataclass(frozen=True)
class ThreadInfo:
    """Threads and CPU affinity in effect while measuring.

    Attributes:
      numba_threads: threads the Numba kernels use (``numba.get_num_threads()``).
      blas_threads: ``{library: threads}`` of NumPy's BLAS pools (threadpoolctl), empty if unknown.
      affinity: CPUs this process may run on (``os.sched_getaffinity(0)``), or None where the
        platform has no affinity call.
      cpu_count: ``os.cpu_count()``.
    """

    numba_threads: int | None
    blas_threads: dict
    affinity: tuple[int, ...] | None
    cpu_count: int | None


def thread_info() -> ThreadInfo:
    """Records the thread pools and the CPU affinity of this process."""
    try:
        import numba

        nthreads = int(numba.get_num_threads())
    except Exception:  # noqa: BLE001 - numba is optional here
        nthreads = None
    blas: dict = {}
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            blas[f"{p.get('internal_api')}:{os.path.basename(p.get('filepath') or '')}"] = int(
                p.get("num_threads") or 0
            )
    except Exception:  # noqa: BLE001 - threadpoolctl is optional
        blas = {}
    try:
        aff = tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        aff = None
    return ThreadInfo(
        numba_threads=nthreads, blas_threads=blas, affinity=aff, cpu_count=os.cpu_count()
    )


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Latency of a callable, in seconds.

    Attributes:
      init_s: time of the `setup` call (e.g. loading and verifying an artifact), or None.
      first_s: the first call (compilation, cache loading, page faults land here).
      warmup_s: total time of the warm-up calls after the first.
      n, mean, std, min, p50, p90, p95, p99, max: steady-state statistics over `n` timed calls;
        ``std`` is the population standard deviation (``ddof=0``); ``p90`` is the headline.
      samples: the steady-state samples in call order.
      threads: a `ThreadInfo`.
    """

    init_s: float | None
    first_s: float
    warmup_s: float
    n: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    samples: tuple[float, ...]
    threads: ThreadInfo

    @property
    def headline(self) -> float:
        """p90 (MLPerf single-stream)."""
        return self.p90

    def to_dict(self, *, samples: bool = False) -> dict:
        d = dataclasses.asdict(self)
        if not samples:
            d.pop("samples")
        return d


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """``{n, mean, std, min, p50, p90, p95, p99, max}`` of `samples` (see `percentile`)."""
    x = np.asarray(samples, np.float64).ravel()
    if x.size == 0:
        raise JaxCompressValueError("samples must not be empty")
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "p50": percentile(x, 50),
        "p90": percentile(x, 90),
        "p95": percentile(x, 95),
        "p99": percentile(x, 99),
        "max": float(x.max()),
    }


def measure_latency(
    fn: Callable[..., Any],
    *args: Any,
    setup: Callable[[], Any] | None = None,
    warmup: int = 10,
    iters: int = 100,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Times ``fn(*args)``: optional setup, the first call, warm-up, then `iters` steady calls.

    Args:
      fn: the callable to time; its result is discarded (NumPy/runtime results are ready when it
        returns; for JAX functions pass ``lambda: f(x).block_until_ready()``).
      *args: positional arguments for `fn`.
      setup: optional zero-argument callable timed once as ``init_s`` before anything else
        (e.g. ``lambda: runtime.load(path)``); when no `args` are given and it returns a value,
        `fn` is called with that value.
      warmup: calls after the first, untimed individually (their total is ``warmup_s``).
      iters: steady-state calls timed one by one (>= 1).
      max_seconds: stop the steady state early once this much time was spent (at least one
        sample is always taken).
      clock: the clock (seconds); injectable for tests.

    Returns:
      A `LatencyStats`.

    Raises:
      JaxCompressTypeError: `fn` is not callable.
      JaxCompressValueError: ``iters < 1``, ``warmup < 0`` or ``max_seconds <= 0``.
    """
    if not callable(fn):
        raise JaxCompressTypeError(f"fn must be callable, got {type(fn).__name__}")
    if int(iters) < 1:
        raise JaxCompressValueError(f"{iters=} must be >= 1")
    if int(warmup) < 0:
        raise JaxCompressValueError(f"{warmup=} must be >= 0")
    if max_seconds is not None and not max_seconds > 0:
        raise JaxCompressValueError(f"{max_seconds=} must be > 0")
    init_s = None
    if setup is not None:
        t0 = clock()
        obj = setup()
        init_s = clock() - t0
        if args == () and obj is not None:
            args = (obj,)
    t0 = clock()
    fn(*args)
    first = clock() - t0
    t0 = clock()
    for _ in range(int(warmup)):
        fn(*args)
    warm = clock() - t0
    samples = []
    start = clock()
    for _ in range(int(iters)):
        t0 = clock()
        fn(*args)
        samples.append(clock() - t0)
        if max_seconds is not None and clock() - start > max_seconds:
            break
    s = summarize(samples)
    return LatencyStats(
        init_s=init_s,
        first_s=first,
        warmup_s=warm,
        samples=tuple(samples),
        threads=thread_info(),
        **s,
    )
