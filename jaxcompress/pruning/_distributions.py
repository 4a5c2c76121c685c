"""Per-layer sparsity distributions: uniform, ERK, explicit regex -> sparsity map.

A distribution turns one target into one sparsity per selected leaf. ``progress`` in ``[0, 1]`` is
how far a schedule has come (``schedule(step) / final sparsity``); one-shot calls use 1.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "Distribution",
    "Uniform",
    "ERK",
    "Explicit",
    "uniform",
    "erk",
    "explicit",
    "check_sparsity",
]


def check_sparsity(sparsity: Any, name: str = "sparsity") -> None:
    """Raise unless a static ``sparsity`` lies in ``[0, 1)`` (traced values are not checked)."""
    if isinstance(sparsity, jax.core.Tracer):
        return
    if isinstance(sparsity, (str, bytes, bytearray)):  # float("0.5") would accept a string
        raise JaxCompressTypeError(f"{name}={sparsity!r} must be a float in [0, 1), not a string")
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise JaxCompressTypeError(f"{name}={sparsity!r} must be a float in [0, 1)") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise JaxCompressValueError(f"{name}={value} must be in [0, 1)")


class Distribution(abc.ABC):
    """Base class: ``layer_sparsities(named_shapes, progress) -> list`` (one per selected leaf)."""

    @property
    @abc.abstractmethod
    def final_sparsity(self) -> float:
        """The overall sparsity the distribution reaches at ``progress = 1``."""

    @abc.abstractmethod
    def layer_sparsities(
        self, named_shapes: Sequence[tuple[str, tuple[int, ...]]], progress: Any = 1.0
    ) -> list[Any]:
        """One sparsity per selected leaf, given ``(path, shape)`` pairs."""


@dataclasses.dataclass(frozen=True)
class Uniform(Distribution):
    """Every selected leaf gets the same sparsity."""

    sparsity: float

    def __post_init__(self):
        check_sparsity(self.sparsity)

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def layer_sparsities(self, named_shapes, progress=1.0):
        return [self.sparsity * progress for _ in named_shapes]


@dataclasses.dataclass(frozen=True)
class ERK(Distribution):
    """Erdos-Renyi-Kernel: density of a leaf proportional to ``sum(shape) / prod(shape)``.

    The scale ``eps`` is solved so that the selected leaves together reach ``sparsity``; leaves
    whose density would exceed 1 are kept dense and the rest re-scaled (Evci et al. 2020).
    ``power`` raises the raw score to a power (1 = ERK; 0 = uniform).
    """

    sparsity: float
    power: float = 1.0

    def __post_init__(self):
        check_sparsity(self.sparsity)

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def layer_sparsities(self, named_shapes, progress=1.0):
        sizes = jnp.asarray([math.prod(s) for _, s in named_shapes], jnp.float32)
        raw = jnp.asarray(
            [(sum(s) / math.prod(s)) ** self.power for _, s in named_shapes], jnp.float32
        )
        s = jnp.asarray(self.sparsity * progress, jnp.float32)
        budget = (1.0 - s) * jnp.sum(sizes)
        dense = jnp.zeros(len(named_shapes), bool)
        eps = jnp.float32(0.0)
        for _ in range(len(named_shapes)):
            free = jnp.sum(jnp.where(dense, 0.0, sizes * raw))
            eps = (budget - jnp.sum(jnp.where(dense, sizes, 0.0))) / jnp.maximum(free, 1e-30)
            dense = dense | (eps * raw > 1.0)
        density = jnp.where(dense, 1.0, jnp.clip(eps * raw, 0.0, 1.0))
        return [1.0 - density[i] for i in range(len(named_shapes))]


@dataclasses.dataclass(frozen=True)
class Explicit(Distribution):
    """Per-leaf sparsity from ``((regex, sparsity), ...)``; the first regex found in the path wins.

    Leaves that no regex matches get ``default``. Under a schedule each leaf follows the schedule's
    shape to its own target: ``s_leaf(t) = s_leaf * schedule(t) / schedule.final_sparsity``.
    """

    rules: tuple[tuple[str, float], ...]
    default: float = 0.0

    def __post_init__(self):
        for pattern, s in self.rules:
            try:
                re.compile(pattern)
            except re.error as e:
                raise JaxCompressValueError(
                    f"explicit: {pattern=} is not a valid regex: {e}"
                ) from None
            check_sparsity(s, name=f"sparsity for {pattern!r}")
        check_sparsity(self.default, name="default")

    @property
    def final_sparsity(self) -> float:
        return max([s for _, s in self.rules] + [self.default])

    def layer_sparsities(self, named_shapes, progress=1.0):
        out = []
        used = set()
        for path, _ in named_shapes:
            for pattern, s in self.rules:
                if re.search(pattern, path):
                    used.add(pattern)
                    out.append(s * progress)
                    break
            else:
                out.append(self.default * progress)
        unused = [p for p, _ in self.rules if p not in used]
        if unused:
            raise JaxCompressValueError(
                f"explicit: regex {unused[0]!r} matches no selected leaf; paths are "
                f"{[p for p, _ in named_shapes][:6]}"
            )
        return out


def uniform(sparsity: float) -> Uniform:
    """Same ``sparsity`` in every selected leaf."""
    return Uniform(sparsity)


def erk(sparsity: float, *, power: float = 1.0) -> ERK:
    """Erdos-Renyi-Kernel distribution reaching ``sparsity`` over the selected leaves.

    References:
      Evci, Gale, Menick, Castro, Elsen. "Rigging the Lottery: Making All Tickets Winners", 2020.
    """
    return ERK(sparsity, power)


def explicit(mapping: Mapping[str, float], *, default: float = 0.0) -> Explicit:
    """Explicit per-layer targets, e.g. ``explicit({"Dense_0": 0.92, "Dense_2": 0.74})``."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise JaxCompressTypeError(
            f"explicit: {mapping=} must be a non-empty dict regex -> sparsity"
        )
    return Explicit(tuple((str(k), float(v)) for k, v in mapping.items()), float(default))


def resolve(sparsity: Any) -> Distribution:
    """A float -> :class:`Uniform`; a dict -> :class:`Explicit`; a distribution as is."""
    if isinstance(sparsity, Distribution):
        return sparsity
    if isinstance(sparsity, Mapping):
        return explicit(sparsity)
    check_sparsity(sparsity)
    return Uniform(sparsity)
