"""A description of the machine a measurement ran on: the project's one ``/proc/cpuinfo`` reader.

JAX-free (benchmarks of the edge runtime use it without importing JAX); the JAX side re-exports
it from ``jaxcompress._core``.
"""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_model", "cpu_flags", "machine_info"]


def _cpuinfo_field(key: str) -> str | None:
    """The value of the first ``key`` line of ``/proc/cpuinfo`` (None: no such line or file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``), else what ``platform``
    knows (processor, then machine), else ``"?"``."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "?"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s first ``flags`` line; x86 Linux), else an
    empty set."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def machine_info() -> dict:
    """``{"cpu", "cores", "usable_cores", "platform", "python"}`` for results tables.

    ``cores`` is ``os.cpu_count()``; ``usable_cores`` the CPUs this process may run on (its
    affinity mask, where the OS has one).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
