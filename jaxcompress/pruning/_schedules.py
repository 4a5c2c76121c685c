"""Sparsity schedules: pure ``step -> sparsity`` functions plus "is this a mask-update step".

A schedule is a frozen dataclass; ``schedule(step)`` works on Python ints and on traced int32
steps (inside ``jit``), and ``schedule.is_update_step(step)`` says when the pruning transform
recomputes its masks. ``final_sparsity`` is the value the schedule ends at.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxcompress._core import JaxCompressValueError
from jaxcompress.pruning._distributions import check_sparsity

__all__ = [
    "Schedule",
    "ConstantSchedule",
    "OneShotSchedule",
    "PolynomialSchedule",
    "constant",
    "one_shot",
    "polynomial",
]


class Schedule(abc.ABC):
    """Base class of sparsity schedules."""

    final_sparsity: float

    @abc.abstractmethod
    def __call__(self, step: Any) -> Any:
        """Target sparsity at ``step``."""

    @abc.abstractmethod
    def is_update_step(self, step: Any) -> Any:
        """Whether masks are recomputed at ``step``."""


def _check_step(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise JaxCompressValueError(f"{name}={v!r} must be an int >= 0")


@dataclasses.dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """``s(t) = sparsity``; masks recomputed at step 0 and then every ``frequency`` steps."""

    sparsity: float
    frequency: int | None = None

    def __post_init__(self):
        check_sparsity(self.sparsity)
        if self.frequency is not None and (
            not isinstance(self.frequency, int) or self.frequency < 1
        ):
            raise JaxCompressValueError(f"frequency={self.frequency!r} must be an int >= 1 or None")

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def __call__(self, step):
        return jnp.full(jnp.shape(step), self.sparsity, jnp.float32)

    def is_update_step(self, step):
        if self.frequency is None:
            return jnp.asarray(step) == 0
        return jnp.asarray(step) % self.frequency == 0


@dataclasses.dataclass(frozen=True)
class OneShotSchedule(Schedule):
    """``s(t) = 0`` before ``step``, ``sparsity`` from ``step`` on; masks computed once at ``step``."""

    sparsity: float
    step: int = 0

    def __post_init__(self):
        check_sparsity(self.sparsity)
        _check_step("step", self.step)

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def __call__(self, step):
        return jnp.where(
            jnp.asarray(step) >= self.step, jnp.float32(self.sparsity), jnp.float32(0.0)
        )

    def is_update_step(self, step):
        return jnp.asarray(step) == self.step


@dataclasses.dataclass(frozen=True)
class PolynomialSchedule(Schedule):
    """Zhu & Gupta's gradual schedule (``power=3``: cubic).

    ``s_t = s_f + (s_i - s_f) * (1 - (t_k - t0) / (t1 - t0)) ** power`` for ``t0 <= t``, where
    ``t_k = t0 + floor((t - t0) / dt) * dt`` is the last update step (clipped to ``t1``); ``0``
    before ``t0``. Masks are recomputed at ``t0, t0 + dt, ...`` up to ``t1``.
    """

    sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 100
    initial_sparsity: float = 0.0
    power: float = 3.0

    def __post_init__(self):
        check_sparsity(self.sparsity)
        check_sparsity(self.initial_sparsity, name="initial_sparsity")
        _check_step("begin_step", self.begin_step)
        _check_step("end_step", self.end_step)
        if self.end_step <= self.begin_step:
            raise JaxCompressValueError(
                f"end_step={self.end_step} must be > begin_step={self.begin_step}"
            )
        if not isinstance(self.frequency, int) or self.frequency < 1:
            raise JaxCompressValueError(f"frequency={self.frequency!r} must be an int >= 1")

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def __call__(self, step):
        t = jnp.asarray(step, jnp.int32)
        t0, t1, dt = self.begin_step, self.end_step, self.frequency
        tk = t0 + ((t - t0) // dt) * dt
        frac = jnp.clip((tk - t0).astype(jnp.float32) / (t1 - t0), 0.0, 1.0)
        s = self.sparsity + (self.initial_sparsity - self.sparsity) * (1.0 - frac) ** self.power
        return jnp.where(t >= t0, s, 0.0).astype(jnp.float32)

    def is_update_step(self, step):
        t = jnp.asarray(step, jnp.int32)
        t0, t1, dt = self.begin_step, self.end_step, self.frequency
        on_grid = (t - t0) % dt == 0
        return (t >= t0) & (on_grid & (t <= t1) | (t == t1))


def constant(sparsity: float, *, frequency: int | None = None) -> ConstantSchedule:
    """Constant sparsity; masks computed at step 0 (and every ``frequency`` steps if given)."""
    return ConstantSchedule(sparsity, frequency)


def one_shot(sparsity: float, *, step: int = 0) -> OneShotSchedule:
    """Prune once, at ``step``, to ``sparsity``."""
    return OneShotSchedule(sparsity, step)


def polynomial(
    sparsity: float,
    *,
    begin_step: int,
    end_step: int,
    frequency: int = 100,
    initial_sparsity: float = 0.0,
    power: float = 3.0,
) -> PolynomialSchedule:
    """Zhu & Gupta gradual pruning, ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3``.

    Args:
      sparsity: final sparsity ``s_f`` in ``[0, 1)``.
      begin_step: ``t0``, first pruning step.
      end_step: ``t0 + n dt``, the step at which ``s_f`` is reached.
      frequency: ``dt``, steps between mask updates (Zhu & Gupta use 100-1000).
      initial_sparsity: ``s_i``.
      power: 3 in the paper.

    Example:
      >>> s = polynomial(0.9, begin_step=0, end_step=1000, frequency=100)
      >>> float(s(0)), float(s(1000))
      (0.0, 0.9)

    References:
      Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of pruning for model
      compression", 2017.
    """
    return PolynomialSchedule(sparsity, begin_step, end_step, frequency, initial_sparsity, power)
