"""Device profiles kept as data (``profiles.json``), each number with its source.

A profile file is JSON::

    {"profiles": {"<name>": {"description": str, "weights_in": "flash" | "ram",
                             "peak_flops":     {"value": FLOP/s, "source": str},
                             "bandwidth":      {"value": bytes/s, "source": str},
                             "ram_bytes":      {"value": bytes | null, "source": str},
                             "flash_bytes":    {"value": bytes | null, "source": str},
                             "active_power_w": {"value": watts | null, "source": str}}}}

Every field must be present (``null`` says "unknown" where allowed); a missing field, a negative
number, or a zero peak/bandwidth is refused with an error naming the profile and the field.
Optional fields, each ``{"value": ..., "source": str}``: ``core_class``, ``clock_hz``, ``cores``
and, for boards that execute weights in place from flash, ``flash_wait_states`` (the flash read
latency at ``clock_hz`` from the reference manual's table) and ``flash_read_bytes`` (bytes per
flash read), and ``flash_clock_hz`` when the flash interface is not clocked at the core clock;
they give the datasheet flash read cost ``(wait states + 1) / read bytes`` cycles per weight byte
(`DeviceProfile.flash_cycles_per_byte`). The shipped file holds rpi4,
pixel4-big, stm32l4r5, stm32h7a3, stm32u575, stm32u585 and nrf5340; ``host`` is calibrated by
measuring this machine (`calibrate_host`). Users add their own devices with
``load_profiles(path)`` or `profile_from_datasheet`.

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
import platform
import time

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "DeviceProfile",
    "load_profiles",
    "get_profile",
    "calibrate_host",
    "available_profiles",
    "profile_from_datasheet",
]

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
      core_class: the core class (a key of ``core_classes.json``: ``cortex-m4f``, ``cortex-m7``,
        ``cortex-m33``, ``cortex-a72``, ``cortex-a76``, ``x86-host``), or None (roofline only).
      clock_hz: core clock (Hz), or None.
      cores: cores the projection assumes busy.
      cost: the `CostParams` measured for this very device (``host``), else None (the class's
        calibrated parameters from ``calibration.json`` apply).
      flash_wait_states: wait states of a flash read at ``clock_hz`` (the reference manual's
        flash-latency table for this clock and voltage range), or None (unknown / no flash).
      flash_read_bytes: bytes one flash read access delivers (the flash word / read-port width),
        or None.
      flash_clock_hz: the clock the flash interface runs at, when it is not the core clock (e.g.
        an STM32H743's AXI bus at half the core clock); None: ``clock_hz``. Its wait states
        are counted in its own cycles.
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
    core_class: str | None = None
    clock_hz: float | None = None
    cores: int = 1
    cost: object = dataclasses.field(default=None, compare=False, hash=False)
    flash_wait_states: int | None = None
    flash_read_bytes: int | None = None
    flash_clock_hz: float | None = None

    def __post_init__(self):
        _check_fields(self.name, {f: getattr(self, f) for f in NUMERIC_FIELDS}, self.weights_in)
        _check_core(self.name, self.core_class, self.clock_hz, self.cores)
        _check_flash(self.name, self.flash_wait_states, self.flash_read_bytes)
        _check_flash_clock(self.name, self.flash_clock_hz, self.clock_hz)

    @property
    def flash_cycles_per_byte(self) -> float | None:
        """Core cycles per byte of a flash read stream that misses every cache:
        ``(flash_wait_states + 1) / flash_read_bytes``, times ``clock_hz / flash_clock_hz`` when
        the flash runs on a slower clock (None when the datasheet fields are not given)."""
        if self.flash_wait_states is None or self.flash_read_bytes is None:
            return None
        ratio = 1.0
        if self.flash_clock_hz is not None and self.clock_hz is not None:
            ratio = self.clock_hz / self.flash_clock_hz
        return (self.flash_wait_states + 1) / self.flash_read_bytes * ratio

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


def _check_core(name, core_class, clock_hz, cores) -> None:
    from jaxcompress.edge._costmodel import core_classes

    if core_class is not None and core_class not in core_classes():
        raise JaxCompressValueError(
            f"profile {name!r}: unknown core class {core_class!r}; known: "
            f"{', '.join(sorted(core_classes()))}"
        )
    if clock_hz is not None and (
        isinstance(clock_hz, bool)
        or not isinstance(clock_hz, (int, float))
        or not math.isfinite(clock_hz)
        or clock_hz <= 0
    ):
        raise JaxCompressValueError(
            f"profile {name!r}: field 'clock_hz' must be a positive number of Hz, got {clock_hz!r}"
        )
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise JaxCompressValueError(f"profile {name!r}: field 'cores' must be an int >= 1")


def _check_flash(name, wait_states, read_bytes) -> None:
    for field, v, lo in (
        ("flash_wait_states", wait_states, 0),
        ("flash_read_bytes", read_bytes, 1),
    ):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise JaxCompressValueError(
                f"profile {name!r}: field {field!r} must be an int >= {lo}, got {v!r}"
            )
    if (wait_states is None) != (read_bytes is None):
        missing = "flash_read_bytes" if read_bytes is None else "flash_wait_states"
        raise JaxCompressValueError(
            f"profile {name!r}: field {missing!r} is missing (the flash read cost needs both "
            "flash_wait_states and flash_read_bytes)"
        )


def _check_flash_clock(name, flash_clock_hz, clock_hz) -> None:
    if flash_clock_hz is None:
        return
    if (
        isinstance(flash_clock_hz, bool)
        or not isinstance(flash_clock_hz, (int, float))
        or not math.isfinite(flash_clock_hz)
        or flash_clock_hz <= 0
    ):
        raise JaxCompressValueError(
            f"profile {name!r}: field 'flash_clock_hz' must be a positive number of Hz, "
            f"got {flash_clock_hz!r}"
        )
    if clock_hz is None:
        raise JaxCompressValueError(
            f"profile {name!r}: field 'flash_clock_hz' needs the core clock 'clock_hz'"
        )


def profile_from_datasheet(name: str, spec: dict) -> DeviceProfile:
    """A `DeviceProfile` for a new board from its datasheet: core class, clock and memories.

    The fp32 peak is ``clock_hz * cores * fp32_flops_per_cycle`` of the class and the bandwidth
    ``clock_hz * bus_bytes_per_cycle`` unless the datasheet dict gives ``bandwidth``; a board of
    a calibrated class (``cortex-m4f``, ``cortex-m7``, ``cortex-m33``) then gets the class's
    fitted efficiencies, so its projection is as trustworthy as the class's calibration says.
    A board that executes its weights in place from flash should also give the flash read cost
    at its clock: ``flash_wait_states`` (the reference manual's flash-latency table for
    ``clock_hz`` and the voltage range) and ``flash_read_bytes`` (the flash word width); the cost
    model charges ``(wait states + 1) / read bytes`` cycles per weight byte streamed from flash,
    scaled by the calibrated factor. Without them the flash term is 0 for that board.

    Args:
      name: the profile name.
      spec: ``{"core_class": str, "clock_hz": Hz, "ram_bytes": int, "flash_bytes": int | None,
        "cores": int (default 1), "bandwidth": bytes/s (optional), "active_power_w": W
        (optional), "flash_wait_states": int >= 0 and "flash_read_bytes": int >= 1 (optional,
        both or neither), "flash_clock_hz": Hz (optional, the flash interface's clock when it is
        not the core clock; its wait states count in its cycles), "description": str (optional), "sources": {field: text}
        (optional)}``.

    Returns:
      The `DeviceProfile`.

    Raises:
      JaxCompressValueError: missing or non-positive clock, missing or negative memory, unknown
        core class, unknown field, a negative flash wait-state count or non-positive read width,
        one flash field without the other (the message names the profile and the field).

    Example:
      >>> p = profile_from_datasheet("my-m4", {"core_class": "cortex-m4f", "clock_hz": 80e6,
      ...                                      "ram_bytes": 320 << 10, "flash_bytes": 1 << 20})
      >>> p.peak_flops
      80000000.0
    """
    from jaxcompress.edge._costmodel import core_classes

    if not isinstance(spec, dict):
        raise JaxCompressTypeError(f"profile {name!r}: the datasheet must be a dict")
    known = {
        "core_class",
        "clock_hz",
        "ram_bytes",
        "flash_bytes",
        "cores",
        "bandwidth",
        "active_power_w",
        "description",
        "sources",
        "weights_in",
        "flash_wait_states",
        "flash_read_bytes",
        "flash_clock_hz",
    }
    extra = sorted(set(spec) - known)
    if extra:
        raise JaxCompressValueError(
            f"profile {name!r}: unknown field(s) {extra}; known {sorted(known)}"
        )
    for field in ("core_class", "clock_hz", "ram_bytes"):
        if field not in spec:
            raise JaxCompressValueError(f"profile {name!r}: field {field!r} is missing")
    cc = spec["core_class"]
    cores = spec.get("cores", 1)
    if cc is None:
        raise JaxCompressValueError(f"profile {name!r}: field 'core_class' must be a class name")
    if spec["clock_hz"] is None:
        raise JaxCompressValueError(f"profile {name!r}: field 'clock_hz' must be a number of Hz")
    _check_core(name, cc, spec["clock_hz"], cores)
    _check_flash(name, spec.get("flash_wait_states"), spec.get("flash_read_bytes"))
    _check_flash_clock(name, spec.get("flash_clock_hz"), spec["clock_hz"])
    cls = core_classes()[cc]
    clock = float(spec["clock_hz"])
    values = {
        "peak_flops": clock * cores * cls["fp32_flops_per_cycle"],
        "bandwidth": spec.get("bandwidth", clock * cls["bus_bytes_per_cycle"]),
        "ram_bytes": spec.get("ram_bytes"),
        "flash_bytes": spec.get("flash_bytes"),
        "active_power_w": spec.get("active_power_w"),
    }
    weights_in = spec.get("weights_in", cls["weights_in"])
    _check_fields(name, values, weights_in)
    src = dict(spec.get("sources") or {})
    src.setdefault(
        "peak_flops",
        f"clock x cores x {cls['fp32_flops_per_cycle']:g} FLOP/cycle "
        f"({cc}: {cls['sources']['fp32_flops_per_cycle']})",
    )
    if "bandwidth" not in spec:
        src.setdefault("bandwidth", f"clock x {cls['bus_bytes_per_cycle']:g} B/cycle bus ({cc})")
    for field in ("flash_wait_states", "flash_read_bytes", "flash_clock_hz"):
        if spec.get(field) is not None:
            src.setdefault(field, "datasheet dict (no source given)")
    return DeviceProfile(
        name=name,
        description=str(spec.get("description", f"{cc} @ {clock / 1e6:g} MHz (datasheet)")),
        peak_flops=float(values["peak_flops"]),
        bandwidth=float(values["bandwidth"]),
        ram_bytes=None if values["ram_bytes"] is None else int(values["ram_bytes"]),
        flash_bytes=None if values["flash_bytes"] is None else int(values["flash_bytes"]),
        active_power_w=values["active_power_w"],
        weights_in=weights_in,
        sources=src,
        core_class=cc,
        clock_hz=clock,
        cores=int(cores),
        flash_wait_states=spec.get("flash_wait_states"),
        flash_read_bytes=spec.get("flash_read_bytes"),
        flash_clock_hz=None
        if spec.get("flash_clock_hz") is None
        else float(spec["flash_clock_hz"]),
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
    core = {}
    for field in (
        "core_class",
        "clock_hz",
        "cores",
        "flash_wait_states",
        "flash_read_bytes",
        "flash_clock_hz",
    ):
        if field in spec:
            entry = spec[field]
            core[field] = entry["value"] if isinstance(entry, dict) else entry
            if isinstance(entry, dict) and entry.get("source"):
                sources[field] = entry["source"]
    return DeviceProfile(
        name=name,
        description=str(spec["description"]),
        weights_in=spec["weights_in"],
        sources=sources,
        **values,
        **core,
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
    """Measures this machine: float32 matmul FLOP/s, read bandwidth and the runtime's costs.

    The cost-model parameters (per-step overhead, per-op-class throughput of the edge runtime)
    come from `jaxcompress.edge._hostcal` (measured once per machine, cached on disk).

    ``peak_flops`` is the best of 5 ``(512, 512) @ (512, 512)`` float32 NumPy matmuls (BLAS, with
    its current thread count); ``bandwidth`` the faster of ``sum`` passes over a 64 MiB and a
    1 MiB (cache-resident) float32 array (read streams). RAM is the physical memory; flash and power are unknown (None).
    The result is cached for the process.
    """
    from jaxcompress.edge._hostcal import host_cost

    flops = _measure_flops()
    # the edge models' weights and activations live in the caches: the best of a DRAM-sized and
    # a cache-sized read stream, so the roofline stays a lower bound of what the runtime measures
    bw = max(_measure_read_bandwidth(), _measure_read_bandwidth(1 << 20, repeats=20))
    cost, info = host_cost(flops)
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
        core_class="x86-host" if platform.machine() in ("x86_64", "AMD64", "i686") else None,
        cost=cost,
        sources={
            "cost": (
                f"per-call {1e6 * info['run_overhead_s']:.1f} us, run loop per step "
                f"{1e6 * cost.op_overhead_s:.2f} us and per-kernel-family costs of "
                f"the edge runtime, measured on {info['steps']} steps of {info['graphs']} "
                f"calibration graphs (fit median |error| {100 * info['fit_median_rel_error']:.0f}%)"
            ),
            "peak_flops": "measured: best of 5 float32 512x512 NumPy matmuls",
            "bandwidth": "measured: the faster of NumPy sum passes over 64 MiB (best of 5) and "
            "over 1 MiB (cache-resident, best of 20) float32",
            "ram_bytes": "os.sysconf physical pages",
            "flash_bytes": "not applicable (weights loaded into RAM)",
            "active_power_w": "unknown (no power meter)",
        },
    )
