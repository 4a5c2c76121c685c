"""What a study stage is: a small unit with declared inputs and one typed output.

A :class:`Stage` names the stages whose outputs it reads (``inputs``), says when the recipe runs
it (``enabled``) and computes a :class:`StageOutput` from a :class:`StageContext` (the run's data,
keys and models), the recipe's typed configs and those inputs. Stages never talk to each other
through attributes: everything one stage gives another goes through its output, and the report
is built from the outputs alone.

This module imports nothing from the other study modules, so each of them can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

__all__ = ["PREVIOUS", "Stage", "StageContext", "StageOutput"]

# the symbolic input "the model stage before this one in the chain" (student, distill, prune...)
PREVIOUS = "previous"


class StageOutput(NamedTuple):
    """What a stage produces.

    Attributes:
      state: the stage's params pytree (model stages; stored in the run folder as data) or
        ``None``.
      metrics: JSON-able figures (written in the stage marker; the report reads them).
    """

    state: Any
    metrics: dict


class StageContext(Protocol):
    """What a stage may use from the run (a :class:`~jaxcompress.study.Study` provides it)."""

    progress: bool

    @property
    def data(self) -> Any:
        """The study's dataset (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""

    def key(self, name: str) -> Any:
        """The PRNG key of stage `name` (derived from ``study.seed``)."""

    def model(self, section: str) -> tuple[Callable, Any]:
        """``(apply_fn, initial params)`` of ``[teacher]`` or ``[student]``."""

    def evaluate(self, apply_fn: Callable, tree: Any) -> dict:
        """Test accuracy, errors and n of `tree` (compressed leaves dequantized)."""

    def path(self, *parts: str) -> str:
        """A path inside the run folder."""

    def say(self, msg: str) -> None:
        """A log line (unless quiet)."""

    def checkpoint(self, name: str, fn: Callable[[], StageOutput]) -> StageOutput:
        """Run ``fn`` as the resumable sub-stage `name` (its output stored in the run folder)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One study stage.

    Attributes:
      name: the stage's name (its marker is ``stages/<name>.json``).
      inputs: names of the stages whose outputs ``run`` reads; :data:`PREVIOUS` is the model
        stage before this one. An input whose stage the recipe does not run is left out.
      run: ``run(ctx, recipe, inputs) -> StageOutput`` with ``inputs`` keyed by the names above.
      enabled: ``enabled(recipe) -> bool``: whether the recipe runs this stage.
      checkpoint: whether the runner stores the output in the run folder (a stage that
        checkpoints its own parts, like the sweep, does not).
      announce: a log line printed before the stage runs (when it runs).
    """

    name: str
    inputs: tuple[str, ...]
    run: Callable[[StageContext, Any, Mapping[str, StageOutput]], StageOutput]
    enabled: Callable[[Any], bool]
    checkpoint: bool = True
    announce: str | None = None
