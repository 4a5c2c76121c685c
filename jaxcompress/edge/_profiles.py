"""Device profiles kept as data (``profiles.json``), each number with its source.

A profile file is JSON::

    {"profiles": {"<name>": {"description": str, "weights_in": "flash" | "ram",
                             "peak_flops":     {"value": FLOP/s, "source": str},
                             "bandwidth":      {"value": bytes/s, "source": str},
                             "ram_bytes":      {"value": bytes | null, "source": str},
                             "flash_bytes":    {"value": bytes | null, "source": str},
                             "active_power_w": {"value": watts | null, "source": str}}}}

Every field must be present (``null`` says "unknown" where allowed); a missing field, a negative
number, or a zero peak/bandwidth is refused with an error naming the profile and the field. The
shipped file holds rpi4, pixel4-big, stm32l4r5 and stm32h7a3; ``host`` is calibrated by measuring
this machine (`calibrate_host`). Users add their own devices with ``load_profiles(path)``.

Example:
  >>> p = get_profile("stm32h7a3")
  >>> p.flash_bytes, p.sources["flash_bytes"][:20]
  (2097152, 'ST STM32H7A3 product')
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
import time

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = ["DeviceProfile", "load_profiles", "get_profile", "calibrate_host", "available_profiles"]

NUMERIC_FIELDS = ("peak_flops", "bandwidth", "ram_bytes", "flash_bytes", "active_power_w")
REQUIRED_POSITIVE = ("peak_flops", "bandwidth")  # never null, never 0 (they divide)
WEIGHTS_IN = ("flash", "ram")


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """One device: roofline numbers, capacities and active power, with sources.

    Attributes:
      name: profile name.
      description: free text.
      peak_flops: fp32 peak, FLOP/s (> 0).
      bandwidth: memory bandwidth, bytes/s (> 0).
      ram_bytes: RAM for activations (and weights when ``weights_in == "ram"``), or None.
      flash_bytes: flash for weights (``weights_in == "flash"``), or None.
      active_power_w: active power for the energy estimate, or None.
      weights_in: ``"flash"`` (MCU: weights read in place) or ``"ram"``.
      sources: ``{field: source text}``.
      measured: True when the numbers were measured on this machine (``host``).
    """

    name: str
    description: str
    peak_flops: float
    bandwidth: float
    ram_bytes: int | None
    flash_bytes: int | None
    active_power_w: float | None
    weights_in: str
    sources: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    measured: bool = False

    def __post_init__(self):
        _check_fields(self.name, {f: getattr(self, f) for f in NUMERIC_FIELDS}, self.weights_in)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_fields(name: str, values: dict, weights_in) -> None:
    for field in NUMERIC_FIELDS:
        v = values[field]
        if v is None:
            if field in REQUIRED_POSITIVE:
                raise JaxCompressValueError(
                    f"profile {name!r}: field {field!r} must be a number, got null"
                )
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise JaxCompressValueError(
                f"profile {name!r}: field {field!r} must be a finite number, got {v!r}"
            )
        if v < 0:
            raise JaxCompressValueError(f"profile {name!r}: field {field!r} is negative ({v!r})")
        if field in REQUIRED_POSITIVE and v == 0:
            raise JaxCompressValueError(f"profile {name!r}: field {field!r} must be > 0")
    if weights_in not in WEIGHTS_IN:
        raise JaxCompressValueError(
            f"profile {name!r}: field 'weights_in' must be one of {WEIGHTS_IN}, got {weights_in!r}"
        )


def _parse(name: str, spec) -> DeviceProfile:
    if not isinstance(spec, dict):
        raise JaxCompressValueError(f"profile {name!r} must be a JSON object")
    for field in ("description", "weights_in", *NUMERIC_FIELDS):
        if field not in spec:
            raise JaxCompressValueError(f"profile {name!r}: field {field!r} is missing")
    values, sources = {}, {}
    for field in NUMERIC_FIELDS:
        entry = spec[field]
        if not isinstance(entry, dict) or "value" not in entry:
            raise JaxCompressValueError(
                f'profile {name!r}: field {field!r} must be {{"value": ..., "source": "..."}}'
            )
        src = entry.get("source")
        if not isinstance(src, str) or not src.strip():
            raise JaxCompressValueError(f"profile {name!r}: field {field!r} has no source")
        values[field], sources[field] = entry["value"], src
    _check_fields(name, values, spec["weights_in"])
    for field in ("ram_bytes", "flash_bytes"):
        if values[field] is not None:
            values[field] = int(values[field])
    return DeviceProfile(
        name=name,
        description=str(spec["description"]),
        weights_in=spec["weights_in"],
        sources=sources,
        **values,
    )


def _parse_file(data, where: str) -> dict[str, DeviceProfile]:
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise JaxCompressValueError(f"profile file {where}: needs a top-level 'profiles' object")
    return {str(k): _parse(str(k), v) for k, v in data["profiles"].items()}


@functools.cache
def _builtin() -> dict[str, DeviceProfile]:
    text = importlib.resources.files("jaxcompress.edge").joinpath("profiles.json").read_text()
    return _parse_file(json.loads(text), "jaxcompress/edge/profiles.json")


def load_profiles(path: str | os.PathLike | None = None) -> dict[str, DeviceProfile]:
    """The shipped profiles, plus (overriding by name) those of a user file.

    Args:
      path: optional JSON profile file in the format of the module docstring.

    Returns:
      ``{name: DeviceProfile}`` (without ``host``, which `get_profile` calibrates on demand).

    Raises:
      JaxCompressValueError: the file is not valid JSON, or a profile has a missing, non-numeric
        or negative field (the message names the profile and the field).
    """
    out = dict(_builtin())
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise JaxCompressValueError(
                f"profile file {os.fspath(path)!r} is not valid JSON: {e}"
            ) from None
        out.update(_parse_file(data, repr(os.fspath(path))))
    return out


def available_profiles(path=None) -> tuple[str, ...]:
    """Names `get_profile` accepts (``host`` included)."""
    return ("host", *sorted(load_profiles(path)))


def get_profile(name, *, path=None) -> DeviceProfile:
    """A profile by name (``"host"`` is calibrated once per process), or a `DeviceProfile` as is.

    Raises:
      JaxCompressValueError: unknown name (the message lists the known ones).
    """
    if isinstance(name, DeviceProfile):
        return name
    if not isinstance(name, str):
        raise JaxCompressTypeError(
            f"profile must be a name or DeviceProfile, got {type(name).__name__}"
        )
    if name == "host":
        return calibrate_host()
    profiles = load_profiles(path)
    if name not in profiles:
        raise JaxCompressValueError(
            f"unknown profile {name!r}; known: {', '.join(available_profiles(path))}"
        )
    return profiles[name]


def _best_time(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure_flops(n: int = 512, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up (BLAS thread pool start)
    return 2.0 * n**3 / _best_time(lambda: a @ b, repeats)


def _measure_read_bandwidth(nbytes: int = 64 << 20, repeats: int = 5) -> float:
    a = np.ones(nbytes // 4, np.float32)
    a.sum()
    return a.nbytes / _best_time(a.sum, repeats)


def _total_ram() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@functools.cache
def calibrate_host() -> DeviceProfile:
    """Measures this machine: float32 matmul FLOP/s and read bandwidth (about a second).

    ``peak_flops`` is the best of 5 ``(512, 512) @ (512, 512)`` float32 NumPy matmuls (BLAS, with
    its current thread count); ``bandwidth`` the best of 5 ``sum`` passes over a 64 MiB float32
    array (a read stream). RAM is the physical memory; flash and power are unknown (None).
    The result is cached for the process.
    """
    flops = _measure_flops()
    bw = _measure_read_bandwidth()
    return DeviceProfile(
        name="host",
        description=f"this machine ({os.cpu_count()} CPUs), calibrated",
        peak_flops=float(flops),
        bandwidth=float(bw),
        ram_bytes=_total_ram(),
        flash_bytes=None,
        active_power_w=None,
        weights_in="ram",
        measured=True,
        sources={
            "peak_flops": "measured: best of 5 float32 512x512 NumPy matmuls",
            "bandwidth": "measured: best of 5 NumPy sum passes over 64 MiB float32",
            "ram_bytes": "os.sysconf physical pages",
            "flash_bytes": "not applicable (weights loaded into RAM)",
            "active_power_w": "unknown (no power meter)",
        },
    )
