"""Study recipes: a TOML schema, validated before any work starts.

A recipe is a TOML file with the sections below (every key optional unless marked; defaults in
:data:`SCHEMA`). Validation rejects, with a message naming the file and the dotted key: unknown
sections and keys, wrong types, out-of-range values and impossible combinations (``[quantize]``
together with ``[cluster]``, ``[distill]`` without ``[teacher]``, a model that does not fit the
dataset, an unknown device profile, a sweep over a key the recipe does not use, ...).

::

    [study]     name, seed, dataset ("mnist1d" | "mnist" | "fashion_mnist"), data_dir,
                train_limit, test_limit, description
    [teacher]   model, hidden, dropout, input_dropout, jitter, channels, epochs, lr, batch_size,
                schedule                                                  (optional)
    [student]   the same keys as [teacher]                                 (required)
    [distill]   temperature, alpha, epochs, lr, batch_size, finetune     (optional, needs teacher)
                finetune (default true): the later fine-tuning (prune retraining, quantization-
                aware training, centroid fine-tuning) uses the same distillation loss

Every training section also takes ``schedule = "constant" | "cosine"`` (learning-rate decay over
the section's steps). ``input_dropout`` (model = "mlp") drops input pixels while training;
``jitter = k`` (image datasets) shifts each training image by up to ``k`` pixels each way;
``channels`` sets the width of model = "cnn1d" (0 = the model's default, 25).
    [prune]     method ("magnitude" | "threshold" | "nm"), sparsity (float or {regex = s}),
                scope, quality (float or {regex = q}), n, m, where, rounds, epochs, lr,
                batch_size                                                (optional)
    [quantize]  bits, scheme, axis, group_size, where, qat_epochs, lr, batch_size (optional)
    [cluster]   bits, init, where, finetune_epochs, lr, batch_size, index_bits (optional)

``where`` is a regex searched in each leaf's ``/``-joined path; only kernels (``ndim >= 2``) are
ever selected (default: every kernel).
    [export]    enabled
    [edge]      devices, threads, iters, warmup, links_mbit, rtt_ms, split_edge, eval_limit
    [sweep]     key ("section.key"), values                              (optional)
    [paper]     dataset, title, reference, notes, [paper.values] {metric = number} (optional);
                a run on another dataset than ``paper.dataset`` prints the paper's numbers
                as not comparable
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
import tomllib
import types as types_
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "MODELS",
    "PAPER_METRICS",
    "CONFIGS",
    "ClusterConfig",
    "DistillConfig",
    "EdgeConfig",
    "ExportConfig",
    "PaperConfig",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "RecipeError",
    "SCHEMA",
    "StudyConfig",
    "SweepConfig",
    "TrainConfig",
    "section_config",
    "load_recipe",
    "parse_recipe",
    "shipped_recipes",
    "shipped_recipe_path",
]


class RecipeError(JaxCompressValueError):
    """A recipe that cannot run (missing, malformed, unknown key, wrong type, impossible mix)."""


# model name -> datasets it fits
MODELS = {
    "cnn1d": ("mnist1d",),
    "mlp1d": ("mnist1d",),
    "transformer": ("mnist1d",),
    "mlp": ("mnist1d", "mnist", "fashion_mnist"),
    "lenet300100": ("mnist", "fashion_mnist"),
    "lenet5": ("mnist", "fashion_mnist"),
}
DATASETS = ("mnist1d", "mnist", "fashion_mnist")

# Metric names a [paper.values] table may use; the report prints them beside ours.
PAPER_METRICS = {
    "dense_error_pct": "dense model test error %",
    "final_error_pct": "compressed model test error %",
    "teacher_errors": "teacher test errors",
    "student_errors": "student alone test errors",
    "distilled_errors": "distilled student test errors",
    "dense_kb": "dense weights KB",
    "pruned_kb": "size after pruning KB",
    "clustered_kb": "size after clustering KB",
    "huffman_kb": "size after Huffman KB",
    "compression_ratio": "compression ratio (x)",
    "ratio_before_huffman": "compression ratio before Huffman (x)",
    "weights_kept_pct": "weights kept %",
}


@dataclasses.dataclass(frozen=True)
class _Key:
    types: tuple  # allowed Python types (bool is never an int here)
    default: Any
    choices: tuple | None = None
    lo: float | None = None  # inclusive lower bound for numbers
    hi: float | None = None  # inclusive upper bound
    hi_open: bool = False  # upper bound exclusive
    item: type | None = None  # element type for lists / values type for tables


_I, _F, _S, _B, _L, _D = int, float, str, bool, list, dict


def _key(types: tuple, default: Any, choices: tuple | None = None, **kw: Any) -> Any:
    """A typed config field whose recipe key is validated by ``_Key(types, default, ...)``.

    The field's own default is the frozen form of ``default`` (lists become tuples, tables
    read-only mappings); ``SCHEMA`` keeps ``default`` as the recipe dict holds it.
    """
    spec = _Key(types, default, choices, **kw)
    if isinstance(default, list):
        return dataclasses.field(default=tuple(default), metadata={"key": spec})
    if isinstance(default, dict):
        return dataclasses.field(
            default_factory=lambda: types_.MappingProxyType(dict(default)),
            metadata={"key": spec},
        )
    return dataclasses.field(default=default, metadata={"key": spec})


_SCHEDULES = ("constant", "cosine")


# -- typed section configs: one frozen dataclass per section; their fields are the recipe keys --
@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """``[study]``: what the study is called, its seed and its data."""

    name: str = _key((_S,), "study")
    seed: int = _key((_I,), 0, lo=0)
    dataset: str = _key((_S,), "mnist1d", DATASETS)
    data_dir: str | None = _key((_S,), None)
    train_limit: int = _key((_I,), 0, lo=0)
    test_limit: int = _key((_I,), 0, lo=0)
    description: str = _key((_S,), "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """``[teacher]`` / ``[student]``: a model and how it is trained (Adam)."""

    model: str | None = _key((_S,), None, tuple(MODELS))
    hidden: tuple[int, ...] | None = _key((_L,), None, item=int)
    dropout: float = _key((_F,), 0.0, lo=0.0, hi=1.0, hi_open=True)
    input_dropout: float = _key((_F,), 0.0, lo=0.0, hi=1.0, hi_open=True)
    jitter: int = _key((_I,), 0, lo=0, hi=8)
    channels: int = _key((_I,), 0, lo=0)
    epochs: int = _key((_I,), 10, lo=0)
    lr: float = _key((_F,), 1e-3, lo=0.0)
    batch_size: int = _key((_I,), 100, lo=1)
    schedule: str = _key((_S,), "constant", _SCHEDULES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """``[distill]``: the student trained again against the teacher (Hinton et al. 2015)."""

    temperature: float = _key((_F,), 4.0, lo=1e-6)
    alpha: float = _key((_F,), 0.9, lo=0.0, hi=1.0)
    epochs: int = _key((_I,), 10, lo=0)
    lr: float = _key((_F,), 1e-3, lo=0.0)
    batch_size: int = _key((_I,), 100, lo=1)
    schedule: str = _key((_S,), "constant", _SCHEDULES)
    finetune: bool = _key((_B,), True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """``[prune]``: magnitude, threshold (Han et al. 2015) or N:M pruning, then retraining."""

    method: str = _key((_S,), "magnitude", ("magnitude", "threshold", "nm"))
    sparsity: float | Mapping[str, float] | None = _key(
        (_F, _D), None, lo=0.0, hi=1.0, hi_open=True, item=float
    )
    scope: str = _key((_S,), "layer", ("layer", "global"))
    quality: float | Mapping[str, float] | None = _key((_F, _D), None, lo=0.0, item=float)
    n: int = _key((_I,), 2, lo=1)
    m: int = _key((_I,), 4, lo=2)
    where: str | None = _key((_S,), None)
    rounds: int = _key((_I,), 1, lo=1)
    epochs: int = _key((_I,), 1, lo=0)
    lr: float = _key((_F,), 1e-4, lo=0.0)
    batch_size: int = _key((_I,), 100, lo=1)
    schedule: str = _key((_S,), "constant", _SCHEDULES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """``[quantize]``: optional quantization-aware training, then weight quantization."""

    bits: int = _key((_I,), 8, lo=2, hi=8)
    scheme: str = _key((_S,), "symmetric", ("symmetric", "affine"))
    axis: int = _key((_I,), -1)
    group_size: int = _key((_I,), 0, lo=0)
    where: str | None = _key((_S,), None)
    qat_epochs: int = _key((_I,), 0, lo=0)
    lr: float = _key((_F,), 1e-4, lo=0.0)
    batch_size: int = _key((_I,), 100, lo=1)
    schedule: str = _key((_S,), "constant", _SCHEDULES)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: k-means weight sharing, then optional centroid fine-tuning."""

    bits: int = _key((_I,), 5, lo=1, hi=8)
    init: str = _key((_S,), "linear", ("linear", "density", "kmeans++"))
    where: str | None = _key((_S,), None)
    finetune_epochs: int = _key((_I,), 0, lo=0)
    lr: float = _key((_F,), 1e-4, lo=0.0)
    batch_size: int = _key((_I,), 100, lo=1)
    schedule: str = _key((_S,), "constant", _SCHEDULES)
    index_bits: int = _key((_I,), 5, lo=1, hi=16)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """``[export]``: write one artifact per model stage."""

    enabled: bool = _key((_B,), True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """``[edge]``: the artifacts in the edge runtime: latency, projections, split plans."""

    devices: tuple[str, ...] = _key((_L,), ["rpi4", "stm32h7a3"], item=str)
    threads: int = _key((_I,), 1, lo=1)
    iters: int = _key((_I,), 100, lo=1)
    warmup: int = _key((_I,), 10, lo=0)
    links_mbit: tuple[float, ...] = _key((_L,), [], item=float)
    rtt_ms: float = _key((_F,), 20.0, lo=0.0)
    split_edge: str = _key((_S,), "rpi4")
    eval_limit: int = _key((_I,), 1000, lo=0)
    enabled: bool = _key((_B,), True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """``[sweep]``: the run repeated for each value of one ``section.key``."""

    key: str | None = _key((_S,), None)
    values: tuple | None = _key((_L,), None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperConfig:
    """``[paper]``: published numbers printed beside ours."""

    dataset: str = _key((_S,), "", ("",) + DATASETS)
    title: str = _key((_S,), "")
    reference: str = _key((_S,), "")
    notes: str = _key((_S,), "")
    values: Mapping[str, float] = _key((_D,), {}, item=float)


# section -> its config type, in the canonical section order
CONFIGS: dict[str, type] = {
    "study": StudyConfig,
    "teacher": TrainConfig,
    "student": TrainConfig,
    "distill": DistillConfig,
    "prune": PruneConfig,
    "quantize": QuantizeConfig,
    "cluster": ClusterConfig,
    "export": ExportConfig,
    "edge": EdgeConfig,
    "sweep": SweepConfig,
    "paper": PaperConfig,
}

# {section: {key: _Key}}: the recipe schema, read off the config types' fields
SCHEMA: dict[str, dict[str, _Key]] = {
    sec: {f.name: f.metadata["key"] for f in dataclasses.fields(cls)}
    for sec, cls in CONFIGS.items()
}


def _frozen(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return types_.MappingProxyType({k: _frozen(x) for k, x in v.items()})
    return v


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def section_config(section: str, body: Mapping, *, source: str = "<dict>") -> Any:
    """The typed config of one recipe section, validated (defaults filled in).

    Args:
      section: the section name (``"prune"``, ``"student"``, ...).
      body: ``{key: value}`` as in the TOML table.
      source: named in error messages.

    Returns:
      The section's frozen config (`PruneConfig`, `TrainConfig`, ...): lists as tuples, tables
      as read-only mappings.

    Raises:
      RecipeError: an unknown section or key ("did you mean"), or a value of the wrong type or
        out of range; the message names ``source`` and the dotted key.
    """
    if section not in CONFIGS:
        raise _fail(
            source,
            section,
            f"unknown section [{section}]; {_did_you_mean(section, CONFIGS)}"
            f"known: {sorted(CONFIGS)}",
        )
    schema = SCHEMA[section]
    values = {}
    for key, v in body.items():
        if key not in schema:
            raise _fail(
                source,
                f"{section}.{key}",
                f"unknown key; {_did_you_mean(key, schema)}[{section}] takes {sorted(schema)}",
            )
        values[key] = _frozen(_check_value(source, f"{section}.{key}", schema[key], v))
    return CONFIGS[section](**values)


REQUIRED_SECTIONS = ("study", "student")
# sections whose keys a sweep may vary
SWEEPABLE = ("distill", "prune", "quantize", "cluster")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe: ``sections`` holds every present section with defaults filled in.

    Attributes:
      source: the file the recipe came from (or ``"<default>"`` / ``"<string>"``).
      sections: ``{section: {key: value}}`` for the sections present (after defaults).
      text: the original TOML text.
    """

    source: str
    sections: dict
    text: str
    configs: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def config(self, section: str) -> Any:
        """The typed, validated config of a section (`TrainConfig`, `PruneConfig`, ...), or
        ``None`` when the recipe has no such section (``[export]`` and ``[edge]`` default to
        their defaults: they run unless disabled)."""
        if section not in CONFIGS:
            raise RecipeError(
                f"recipe {self.source}: {section}: unknown section; "
                f"{_did_you_mean(section, CONFIGS)}known: {sorted(CONFIGS)}"
            )
        cfg = self.configs.get(section)
        if cfg is None and section in self.sections:  # a Recipe built by hand from sections
            cfg = CONFIGS[section](**{k: _frozen(v) for k, v in self.sections[section].items()})
        if cfg is None and section in ("export", "edge"):
            cfg = CONFIGS[section]()
        return cfg

    def __contains__(self, section: str) -> bool:
        return section in self.sections

    def __getitem__(self, section: str) -> dict:
        return self.sections[section]

    def get(self, section: str, default: Any = None) -> Any:
        return self.sections.get(section, default)

    @property
    def name(self) -> str:
        return self.sections["study"]["name"]

    def to_dict(self) -> dict:
        return copy.deepcopy(self.sections)

    def to_toml(self) -> str:
        """The resolved recipe (defaults filled in) as TOML text that validates again."""
        lines = [f"# resolved recipe (source: {self.source})"]
        for sec, body in self.sections.items():
            scalars = {k: v for k, v in body.items() if not isinstance(v, dict) and v is not None}
            tables = {k: v for k, v in body.items() if isinstance(v, dict)}
            lines.append(f"\n[{sec}]")
            for k, v in scalars.items():
                lines.append(f"{k} = {_toml_value(v)}")
            for k, v in tables.items():
                lines.append(f"\n[{sec}.{k}]")
                for kk, vv in v.items():
                    lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
        return "\n".join(lines) + "\n"

    @property
    def sha256(self) -> str:
        """Hash of the resolved recipe (what decides whether a run folder holds this run)."""
        blob = json.dumps(self.sections, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_value(self, dotted: str, value: Any) -> Recipe:
        """A copy with ``section.key`` set to ``value`` (validated again)."""
        sec, key = dotted.split(".", 1)
        raw = self.to_dict()
        raw[sec][key] = value
        return parse_recipe(raw, source=self.source)


def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise JaxCompressTypeError(f"cannot write {v!r} as TOML")


def _fail(source: str, key: str, msg: str) -> RecipeError:
    return RecipeError(f"recipe {source}: {key}: {msg}")


def _type_name(types: tuple) -> str:
    names = {
        int: "integer",
        float: "number",
        str: "string",
        bool: "boolean",
        list: "array",
        dict: "table",
    }
    return " or ".join(names[t] for t in types)


def _check_scalar(source: str, dotted: str, spec: _Key, v: Any, types: tuple) -> Any:
    if isinstance(v, bool) and bool not in types:
        raise _fail(source, dotted, f"expected {_type_name(types)}, got boolean {v!r}")
    if isinstance(v, int) and not isinstance(v, bool) and float in types and int not in types:
        v = float(v)  # 1 is a fine float
    if not isinstance(v, types):
        raise _fail(source, dotted, f"expected {_type_name(types)}, got {type(v).__name__} {v!r}")
    if spec.choices is not None and v not in spec.choices:
        raise _fail(source, dotted, f"{v!r} is not one of {list(spec.choices)}")
    if isinstance(v, int | float) and not isinstance(v, bool):
        if spec.lo is not None and v < spec.lo:
            raise _fail(source, dotted, f"{v!r} must be >= {spec.lo}")
        if spec.hi is not None and (v >= spec.hi if spec.hi_open else v > spec.hi):
            rel = "<" if spec.hi_open else "<="
            raise _fail(source, dotted, f"{v!r} must be {rel} {spec.hi}")
    return v


def _check_value(source: str, dotted: str, spec: _Key, v: Any) -> Any:
    if v is None and spec.default is None:  # "unset" (only reachable from Python, not TOML)
        return None
    if isinstance(v, list) and list in spec.types:
        out = []
        for i, x in enumerate(v):
            it = spec.item
            if it is not None:
                x = _check_scalar(
                    source, f"{dotted}[{i}]", dataclasses.replace(spec, choices=None), x, (it,)
                )
            out.append(x)
        return out
    if isinstance(v, dict) and dict in spec.types:
        out = {}
        for k, x in v.items():
            x = _check_scalar(source, f"{dotted}.{k}", spec, x, (spec.item,))
            out[k] = x
        return out
    return _check_scalar(
        source, dotted, spec, v, tuple(t for t in spec.types if t not in (list, dict)) or spec.types
    )


def parse_recipe(raw: Mapping, *, source: str = "<string>", check_profiles: bool = True) -> Recipe:
    """Validate a recipe given as a parsed TOML mapping; returns a :class:`Recipe`.

    Raises:
      RecipeError: naming ``source`` and the dotted key for every problem found first.
    """
    if not isinstance(raw, Mapping):
        raise _fail(source, "<top>", "a recipe must be a TOML table")
    sections: dict[str, dict] = {}
    for sec, body in raw.items():
        if sec not in SCHEMA:
            raise _fail(
                source,
                sec,
                f"unknown section [{sec}]; {_did_you_mean(sec, SCHEMA)}known: {sorted(SCHEMA)}",
            )
        if not isinstance(body, Mapping):
            raise _fail(source, sec, f"[{sec}] must be a table, got {type(body).__name__}")
        schema = SCHEMA[sec]
        out = {}
        for key, v in body.items():
            if key not in schema:
                raise _fail(
                    source,
                    f"{sec}.{key}",
                    f"unknown key; {_did_you_mean(key, schema)}[{sec}] takes {sorted(schema)}",
                )
            out[key] = _check_value(source, f"{sec}.{key}", schema[key], v)
        for key, spec in schema.items():
            if key not in out:
                out[key] = copy.deepcopy(spec.default)
        sections[sec] = out
    for sec in REQUIRED_SECTIONS:
        if sec not in sections:
            if sec == "study":
                sections["study"] = {k: copy.deepcopy(s.default) for k, s in SCHEMA[sec].items()}
            else:
                raise _fail(source, sec, f"missing required section [{sec}]")
    # keep a canonical section order
    sections = {s: sections[s] for s in SCHEMA if s in sections}
    _check_combinations(source, sections, check_profiles=check_profiles)
    text = raw.get("__text__", "") if isinstance(raw, dict) else ""
    # the typed configs: built once here from the validated sections; the stages read only these
    configs = {
        sec: CONFIGS[sec](**{k: _frozen(v) for k, v in body.items()})
        for sec, body in sections.items()
    }
    return Recipe(source=source, sections=sections, text=text, configs=configs)


def _check_model(source: str, sec: str, body: dict, dataset: str) -> None:
    if body["model"] is None:
        raise _fail(source, f"{sec}.model", f"required; one of {list(MODELS)}")
    fits = MODELS[body["model"]]
    if dataset not in fits:
        raise _fail(
            source,
            f"{sec}.model",
            f"{body['model']!r} does not fit study.dataset={dataset!r} (fits {list(fits)})",
        )
    if body["hidden"] is not None:
        if body["model"] != "mlp":
            raise _fail(
                source,
                f"{sec}.hidden",
                f'only model = "mlp" takes hidden widths, not {body["model"]!r}',
            )
        if not body["hidden"] or any(h < 1 for h in body["hidden"]):
            raise _fail(source, f"{sec}.hidden", "must be a non-empty list of positive widths")
    elif body["model"] == "mlp":
        raise _fail(source, f"{sec}.hidden", 'model = "mlp" needs hidden = [widths...]')
    for k in ("dropout", "input_dropout"):
        if body[k] and body["model"] != "mlp":
            raise _fail(source, f"{sec}.{k}", f'only model = "mlp" has {k}, not {body["model"]!r}')
    if body["channels"] and body["model"] != "cnn1d":
        raise _fail(
            source, f"{sec}.channels", f'only model = "cnn1d" takes channels, not {body["model"]!r}'
        )
    if body["jitter"] and dataset == "mnist1d":
        raise _fail(source, f"{sec}.jitter", "jitter shifts 2-D images; mnist1d has none")


def _check_combinations(source: str, s: dict, *, check_profiles: bool) -> None:
    study = s["study"]
    ds = study["dataset"]
    if ds in ("mnist", "fashion_mnist") and study["data_dir"] is None:
        pass  # --data-dir may supply it at run time; checked when the data stage starts
    for sec in ("teacher", "student"):
        if sec in s:
            _check_model(source, sec, s[sec], ds)
    if "distill" in s and "teacher" not in s:
        raise _fail(source, "distill", "[distill] needs a [teacher] section")
    if "teacher" in s and "distill" not in s:
        raise _fail(source, "teacher", "a [teacher] is only used by [distill]; add [distill]")
    if "quantize" in s and "cluster" in s:
        raise _fail(source, "cluster", "[quantize] and [cluster] are alternatives; keep one")
    p = s.get("prune")
    if p is not None:
        m = p["method"]
        if m == "magnitude" and p["sparsity"] is None:
            raise _fail(source, "prune.sparsity", 'method = "magnitude" needs a sparsity')
        if m == "threshold" and p["quality"] is None:
            raise _fail(source, "prune.quality", 'method = "threshold" needs a quality')
        if m != "magnitude" and p["sparsity"] is not None:
            raise _fail(source, "prune.sparsity", f"method = {m!r} takes no sparsity")
        if m != "threshold" and p["quality"] is not None:
            raise _fail(source, "prune.quality", f"method = {m!r} takes no quality")
        if m == "nm" and p["n"] >= p["m"]:
            raise _fail(source, "prune.n", f"n={p['n']} must be < m={p['m']}")
        if isinstance(p["sparsity"], dict) and p["scope"] == "global":
            raise _fail(source, "prune.scope", 'a per-layer sparsity table needs scope = "layer"')
    import re

    for sec in ("prune", "quantize", "cluster"):
        if sec in s and s[sec].get("where") is not None:
            try:
                re.compile(s[sec]["where"])
            except re.error as e:
                raise _fail(source, f"{sec}.where", f"not a valid regex: {e}") from None
    q = s.get("quantize")
    if q is not None and q["group_size"] and q["axis"] is None:
        raise _fail(source, "quantize.group_size", "group_size needs an axis")
    e = s.get("edge")
    ex = s.get("export", {"enabled": True})
    if e is not None and e["enabled"] and not ex["enabled"]:
        raise _fail(
            source,
            "edge",
            "edge evaluation runs the exported artifact; it needs export.enabled = true",
        )
    if e is not None and check_profiles:
        from jaxcompress.edge import available_profiles

        known = available_profiles()
        for i, d in enumerate(e["devices"]):
            if d not in known:
                raise _fail(
                    source,
                    f"edge.devices[{i}]",
                    f"unknown device profile {d!r}; known: {list(known)}",
                )
        if e["split_edge"] not in known:
            raise _fail(
                source,
                "edge.split_edge",
                f"unknown device profile {e['split_edge']!r}; known: {list(known)}",
            )
    sw = s.get("sweep")
    if sw is not None:
        key, values = sw["key"], sw["values"]
        if key is None:
            raise _fail(source, "sweep.key", 'required, e.g. "prune.sparsity"')
        if not values:
            raise _fail(source, "sweep.values", "must be a non-empty list")
        if "." not in key:
            raise _fail(source, "sweep.key", f'{key!r} must be "section.key"')
        sec, k = key.split(".", 1)
        if sec not in SWEEPABLE:
            raise _fail(source, "sweep.key", f"can only sweep a key of {list(SWEEPABLE)}")
        if sec not in s:
            raise _fail(source, "sweep.key", f"{key!r}: the recipe has no [{sec}] section")
        if k not in SCHEMA[sec]:
            raise _fail(source, "sweep.key", f"{key!r}: [{sec}] has no key {k!r}")
        spec = SCHEMA[sec][k]
        for i, v in enumerate(values):
            v = _check_value(source, f"sweep.values[{i}]", spec, v)
            trial = copy.deepcopy(s)
            trial[sec][k] = v
            _check_combinations(
                source, {kk: vv for kk, vv in trial.items() if kk != "sweep"}, check_profiles=False
            )
    pa = s.get("paper")
    if pa is not None:
        for k in pa["values"]:
            if k not in PAPER_METRICS:
                raise _fail(
                    source, f"paper.values.{k}", f"unknown metric; known: {sorted(PAPER_METRICS)}"
                )


def load_recipe(path: str | os.PathLike | None = None, *, check_profiles: bool = True) -> Recipe:
    """Read and validate a recipe file; ``None`` loads the embedded default study.

    Raises:
      RecipeError: the file is missing or unreadable, is not valid TOML, or fails validation
        (the message names the file and the key).
    """
    if path is None:
        return load_recipe(shipped_recipe_path("default"), check_profiles=check_profiles)
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: file not found") from None
    except OSError as e:
        raise RecipeError(f"recipe {path}: cannot read: {e}") from None
    try:
        text = data.decode("utf-8")
        raw = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"recipe {path}: not valid TOML: {e}") from None
    r = parse_recipe(raw, source=path, check_profiles=check_profiles)
    return dataclasses.replace(r, text=text)


def shipped_recipes() -> tuple[str, ...]:
    """Names of the recipes shipped with the package (``jaxcompress/study/recipes/*.toml``)."""
    root = resources.files("jaxcompress.study") / "recipes"
    return tuple(sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml")))


def shipped_recipe_path(name: str) -> str:
    """The file of a shipped recipe by name (``"default"``, ``"deep_compression_lenet300100"``...)."""
    root = resources.files("jaxcompress.study") / "recipes"
    p = root / f"{name}.toml"
    if not p.is_file():
        raise RecipeError(
            f"recipe {name!r}: no shipped recipe of that name; shipped: {list(shipped_recipes())}"
        )
    return os.fspath(p)
