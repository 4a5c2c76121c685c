"""The registry of study stages, in run order, and the plan of one recipe.

::

    teacher -+
    student -+-> distill -> prune -> quantize | cluster -> sizes -> export -> compile -> edge -> sweep

:func:`plan` keeps the stages the recipe runs and resolves each declared input to the stage that
provides it (:data:`~jaxcompress.study._types.PREVIOUS`: the model stage before, in the chain).
The runner (`Study.run`) walks the plan, hands each stage the outputs it names and nothing else,
and builds the report from the outputs.
"""

from __future__ import annotations

from jaxcompress.study._compress import MODEL_STAGES
from jaxcompress.study._deploy import DEPLOY_STAGES
from jaxcompress.study._sweep import SWEEP_STAGE
from jaxcompress.study._types import PREVIOUS, Stage

__all__ = ["STAGES", "plan"]

STAGES: dict[str, Stage] = {**MODEL_STAGES, **DEPLOY_STAGES, SWEEP_STAGE.name: SWEEP_STAGE}


def plan(recipe) -> list[tuple[Stage, dict[str, str]]]:
    """The stages `recipe` runs, in order, each with ``{declared input: providing stage}``.

    An input naming a stage the recipe does not run is left out (the stage treats it as
    absent, e.g. no teacher: fine-tuning with cross-entropy).
    """
    out: list[tuple[Stage, dict[str, str]]] = []
    ran: list[str] = []
    last_model: str | None = None
    for stage in STAGES.values():
        if not stage.enabled(recipe):
            continue
        inputs = {}
        for name in stage.inputs:
            src = last_model if name == PREVIOUS else name
            if src is not None and src in ran:
                inputs[name] = src
        out.append((stage, inputs))
        ran.append(stage.name)
        if stage.name in MODEL_STAGES and stage.name != "teacher":
            last_model = stage.name
    return out
