"""jaxcompress.study: whole compression studies from a TOML recipe (``jaxcompress run``).

* :func:`load_recipe`, :func:`parse_recipe` - read and validate a recipe (errors name the file and
  the key); :func:`shipped_recipes`, :func:`shipped_recipe_path` - the recipes in the package.
* ``Recipe.config(section)`` - a section as its typed, frozen config (:class:`TrainConfig`,
  :class:`DistillConfig`, :class:`PruneConfig`, :class:`QuantizeConfig`, :class:`ClusterConfig`,
  :class:`EdgeConfig`, ...); :func:`section_config` validates one section on its own.
* :func:`run_study`, :class:`Study` - run the stages over a resumable run folder and write
  ``report.md``, ``report.json``, plots and the artifact.
* :func:`pareto_front` - the trade-off front of a sweep.

See ``docs/study.md``.
"""

from jaxcompress.study._compress import pareto_front
from jaxcompress.study._recipe import (
    MODELS,
    PAPER_METRICS,
    SCHEMA,
    ClusterConfig,
    DistillConfig,
    EdgeConfig,
    ExportConfig,
    PaperConfig,
    PruneConfig,
    QuantizeConfig,
    Recipe,
    RecipeError,
    StudyConfig,
    SweepConfig,
    TrainConfig,
    load_recipe,
    parse_recipe,
    section_config,
    shipped_recipe_path,
    shipped_recipes,
)
from jaxcompress.study._stages import RunFolderError, Study, run_study

__all__ = [
    "MODELS",
    "PAPER_METRICS",
    "SCHEMA",
    "ClusterConfig",
    "DistillConfig",
    "EdgeConfig",
    "ExportConfig",
    "PaperConfig",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "RecipeError",
    "RunFolderError",
    "Study",
    "StudyConfig",
    "SweepConfig",
    "TrainConfig",
    "load_recipe",
    "pareto_front",
    "parse_recipe",
    "run_study",
    "section_config",
    "shipped_recipe_path",
    "shipped_recipes",
]
