"""Activation memory: liveness over the graph, a planned arena, and "fits on device" checks.

Every non-static value gets a buffer that lives from the op producing it (the input from before
the first op) to the last op reading it (graph outputs to the end). Alias ops (``reshape``,
``squeeze``, ``expand_dims``) share their input's buffer and extend its lifetime. Static values
(computed from parameters only) are constants a device would keep with the weights, so they are
counted with the weights, not in the arena.

Two numbers come out: ``peak_bytes``, the largest total of buffers live at any one op (a lower
bound for any arena), and ``arena_bytes``, the size of an actual placement: buffers sorted by size
(largest first) are each put at the lowest offset that overlaps no already-placed buffer whose
lifetime overlaps (the greedy-by-size planner of TensorFlow Lite's memory planner). An op's inputs
and output are live together (no in-place execution is assumed).

Example:
  >>> from jaxcompress.edge import chain_graph, plan_arena
  >>> plan_arena(chain_graph(100, [(0, 0, 50), (0, 0, 10)])).peak_bytes   # input + first output
  150
"""

from __future__ import annotations

import dataclasses

from jaxcompress.edge._graph import EdgeGraph
from jaxcompress.edge._profiles import DeviceProfile, get_profile

__all__ = ["ArenaPlan", "FitCheck", "plan_arena", "check_fits"]


@dataclasses.dataclass(frozen=True)
class ArenaPlan:
    """A planned activation arena.

    Attributes:
      peak_bytes: max over ops of the bytes of buffers live at that op.
      arena_bytes: size of the greedy-by-size placement (``>= peak_bytes``).
      offsets: ``{buffer: byte offset}``.
      lifetimes: ``{buffer: (first op, last op, bytes)}`` (the input starts at -1).
      static_bytes: bytes of static values (kept with the weights).
    """

    peak_bytes: int
    arena_bytes: int
    offsets: dict
    lifetimes: dict
    static_bytes: int


def plan_arena(graph: EdgeGraph) -> ArenaPlan:
    """Plans the activation arena of `graph` (see the module docstring).

    Args:
      graph: an `EdgeGraph`.

    Returns:
      An `ArenaPlan`.
    """
    n = len(graph.ops)
    root = {graph.input: graph.input}
    life = {graph.input: [-1, -1, graph.input_bytes]}
    static_bytes = 0
    for i, o in enumerate(graph.ops):
        if o.static:
            static_bytes += o.out_bytes
            root[o.name] = None
            continue
        for r in o.inputs:
            b = root[r]
            if b is not None:
                life[b][1] = max(life[b][1], i)
        if o.alias and root[o.inputs[0]] is not None:
            root[o.name] = root[o.inputs[0]]
        else:
            root[o.name] = o.name
            life[o.name] = [i, i, o.out_bytes]
    for r in graph.outputs:
        if root.get(r) is not None:
            life[root[r]][1] = n
    peak = 0
    for i in range(-1, n + 1):
        peak = max(peak, sum(s for a, e, s in life.values() if a <= i <= e))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    offsets = {}
    for name, (a, e, s) in sorted(life.items(), key=lambda kv: (-kv[1][2], kv[1][0], kv[0])):
        conflicts = sorted((off, size) for off, size, pa, pe in placed if pa <= e and a <= pe)
        off = 0
        for coff, csize in conflicts:
            if off + s <= coff:
                break
            off = max(off, coff + csize)
        offsets[name] = off
        placed.append((off, s, a, e))
    arena = max((off + s for off, s, _, _ in placed), default=0)
    return ArenaPlan(
        peak_bytes=int(peak),
        arena_bytes=int(arena),
        offsets=offsets,
        lifetimes={k: tuple(v) for k, v in life.items()},
        static_bytes=int(static_bytes),
    )


def _fmt(nbytes) -> str:
    if nbytes is None:
        return "unknown"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= div:
            return f"{nbytes / div:.2f} {unit}"
    return f"{int(nbytes)} B"


@dataclasses.dataclass(frozen=True)
class FitCheck:
    """Whether a model fits a device.

    Attributes:
      device: profile name.
      fits: True / False, or None when a needed capacity is unknown.
      ram_needed: arena (+ weights when the device keeps weights in RAM).
      ram_available: the profile's RAM.
      flash_needed: weights + static values when the device reads weights from flash, else 0.
      flash_available: the profile's flash.
      message: one human sentence saying what fits and what does not, by how much.
    """

    device: str
    fits: bool | None
    ram_needed: int
    ram_available: int | None
    flash_needed: int
    flash_available: int | None
    message: str


def check_fits(
    graph: EdgeGraph, profile, *, plan: ArenaPlan | None = None, weight_bytes: int | None = None
) -> FitCheck:
    """Checks the planned arena and the weights against a device's RAM and flash.

    Weights (stored encoding, plus static values) go to flash on devices with
    ``weights_in == "flash"`` (MCUs execute from flash) and to RAM otherwise.

    Args:
      graph: an `EdgeGraph`.
      profile: a `DeviceProfile` or a profile name.
      plan: a precomputed `plan_arena(graph)`.
      weight_bytes: override ``graph.weight_bytes`` (e.g. the artifact's weight bytes).

    Returns:
      A `FitCheck` whose ``message`` says e.g. ``"does not fit on stm32l4r5: weights need 1.66 MB
      of flash, the device has 2.00 MB; activations need ..."``.
    """
    p: DeviceProfile = get_profile(profile)
    plan = plan or plan_arena(graph)
    w = (graph.weight_bytes if weight_bytes is None else int(weight_bytes)) + plan.static_bytes
    ram_needed = plan.arena_bytes + (w if p.weights_in == "ram" else 0)
    flash_needed = w if p.weights_in == "flash" else 0
    problems, unknown = [], []
    what_ram = "activations" + (" + weights" if p.weights_in == "ram" else "")
    if p.ram_bytes is None:
        unknown.append("RAM")
    elif ram_needed > p.ram_bytes:
        problems.append(
            f"{what_ram} need {_fmt(ram_needed)} of RAM, the device has "
            f"{_fmt(p.ram_bytes)} ({ram_needed / p.ram_bytes:.1f}x)"
        )
    if p.weights_in == "flash":
        if p.flash_bytes is None:
            unknown.append("flash")
        elif flash_needed > p.flash_bytes:
            problems.append(
                f"weights need {_fmt(flash_needed)} of flash, the device has "
                f"{_fmt(p.flash_bytes)} ({flash_needed / p.flash_bytes:.1f}x)"
            )
    if problems:
        fits, msg = False, f"does not fit on {p.name}: " + "; ".join(problems)
    elif unknown:
        fits, msg = (
            None,
            f"unknown whether it fits on {p.name}: {' and '.join(unknown)} "
            "capacity not in the profile",
        )
    else:
        parts = [f"{what_ram} {_fmt(ram_needed)} of {_fmt(p.ram_bytes)} RAM"]
        if p.weights_in == "flash":
            parts.append(f"weights {_fmt(flash_needed)} of {_fmt(p.flash_bytes)} flash")
        fits, msg = True, f"fits on {p.name}: " + ", ".join(parts)
    return FitCheck(
        device=p.name,
        fits=fits,
        ram_needed=int(ram_needed),
        ram_available=p.ram_bytes,
        flash_needed=int(flash_needed),
        flash_available=p.flash_bytes,
        message=msg,
    )
