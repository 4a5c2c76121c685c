"""Small helpers shared by the study modules (no imports from the other study modules, so
``_stages``, ``_report`` and ``_plots`` can all use them without an import cycle)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import time
from typing import Any

import numpy as np

from jaxcompress._core import atomic_write
from jaxcompress._core import machine_info as machine

# atomic_write and machine are the project's one implementation (jaxcompress._core), re-exported
# here for the study modules.
__all__ = ["atomic_write", "latency_percentiles", "log", "machine", "now", "to_json", "versions"]


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
