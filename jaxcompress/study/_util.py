"""Small helpers shared by the study modules (no imports from the other study modules, so
``_stages``, ``_report`` and ``_plots`` can all use them without an import cycle)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

__all__ = ["atomic_write", "latency_percentiles", "machine", "now", "versions"]


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, replace)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=True)


def _json_default(o: Any):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def log(msg: str) -> None:
    print(f"[jaxcompress run] {msg}", file=sys.stderr, flush=True)


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def versions() -> dict:
    import platform

    out = {"python": platform.python_version()}
    for mod in ("jaxcompress", "jax", "flax", "optax", "numpy", "numba"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:  # pragma: no cover
            out[mod] = None
    try:
        from importlib.metadata import version

        out["jaxcompress"] = version("jaxcompress")
    except Exception:  # pragma: no cover - not installed
        pass
    return out


def machine() -> dict:
    import platform

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "platform": platform.platform(),
    }


def latency_percentiles(runs: dict, *, iters: int, warmup: int = 3) -> dict:
    """Batch-1 latency of several callables, measured round-robin so that they share the same
    machine load.

    Each round calls every ``runs[name]()`` once (in turn) and records its wall time with
    ``time.perf_counter``; ``warmup`` rounds are discarded first.

    Args:
      runs: ``{name: fn}``, each ``fn()`` one inference.
      iters: measured rounds (>= 1).
      warmup: discarded rounds.

    Returns:
      ``{name: {"n", "p10", "p50", "p90", "mean"}}`` in milliseconds.
    """
    names = list(runs)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + max(1, iters)):
        for k in names:
            t0 = time.perf_counter()
            runs[k]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                samples[k].append(1e3 * dt)
    out = {}
    for k, s in samples.items():
        a = np.asarray(s)
        p10, p50, p90 = np.percentile(a, [10, 50, 90])
        out[k] = {
            "n": int(a.size),
            "p10": float(p10),
            "p50": float(p50),
            "p90": float(p90),
            "mean": float(a.mean()),
        }
    return out
