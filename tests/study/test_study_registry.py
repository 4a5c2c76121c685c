"""Typed stage configs and the stage registry: what each stage reads, and in which order."""

import ast
import dataclasses
import tomllib
from pathlib import Path

import pytest

from jaxcompress.study import load_recipe, parse_recipe, shipped_recipe_path, shipped_recipes
from jaxcompress.study._recipe import (
    CONFIGS,
    SCHEMA,
    PruneConfig,
    RecipeError,
    TrainConfig,
    section_config,
)
from jaxcompress.study._registry import STAGES, plan
from jaxcompress.study._report import RunInfo, build_report, to_markdown
from jaxcompress.study._types import PREVIOUS, StageOutput

STUDY_DIR = Path(__file__).resolve().parents[2] / "jaxcompress" / "study"

BASE = """
[study]
name = "t"
[student]
model = "mlp1d"
"""


def _recipe(extra: str = ""):
    return parse_recipe(tomllib.loads(BASE + extra), source="t.toml", check_profiles=False)


# -- typed configs ---------------------------------------------------------------------------
def test_schema_is_read_off_the_config_fields():
    for sec, cls in CONFIGS.items():
        assert list(SCHEMA[sec]) == [f.name for f in dataclasses.fields(cls)], sec
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = SCHEMA[sec][f.name].default
                frozen = tuple(default) if isinstance(default, list) else default
                assert f.default == frozen, (sec, f.name)


def test_configs_are_frozen_and_typed():
    r = load_recipe(None)
    student = r.config("student")
    assert isinstance(student, TrainConfig) and student.model == "cnn1d"
    with pytest.raises(dataclasses.FrozenInstanceError):
        student.epochs = 1
    edge = r.config("edge")
    assert isinstance(edge.devices, tuple) and isinstance(edge.links_mbit, tuple)
    assert r.config("cluster") is None  # the default study quantizes


def test_every_shipped_recipe_has_typed_configs_matching_its_sections():
    for name in shipped_recipes():
        r = load_recipe(shipped_recipe_path(name))
        for sec, body in r.sections.items():
            cfg = r.config(sec)
            assert type(cfg) is CONFIGS[sec]
            for k, v in body.items():
                got = getattr(cfg, k)
                if isinstance(v, list):
                    assert got == tuple(v), (name, sec, k)
                elif isinstance(v, dict):
                    assert dict(got) == v, (name, sec, k)
                else:
                    assert got == v, (name, sec, k)


def test_per_layer_tables_are_read_only():
    r = _recipe('[prune]\nsparsity = {"hidden" = 0.5}\n')
    p = r.config("prune")
    assert isinstance(p, PruneConfig) and dict(p.sparsity) == {"hidden": 0.5}
    with pytest.raises(TypeError):
        p.sparsity["hidden"] = 0.9


def test_export_and_edge_default_when_absent():
    r = _recipe()
    assert r.config("export").enabled and r.config("edge").enabled
    assert r.config("edge").devices == ("rpi4", "stm32h7a3")


def test_unknown_config_section_raises_with_did_you_mean():
    with pytest.raises(RecipeError, match=r"prunning: unknown section; did you mean 'prune'"):
        _recipe().config("prunning")


@pytest.mark.parametrize(
    ("section", "body", "match"),
    [
        ("prune", {"sparsty": 0.5}, r"prune\.sparsty: unknown key; did you mean 'sparsity'\?"),
        ("prune", {"sparsity": 1.5}, r"prune\.sparsity: 1\.5 must be < 1\.0"),
        ("quantize", {"bits": "4"}, r"quantize\.bits: expected integer, got str"),
        ("edge", {"devices": ["rpi4", 3]}, r"edge\.devices\[1\]: expected string"),
        ("prunning", {}, r"unknown section \[prunning\]; did you mean 'prune'\?"),
    ],
)
def test_section_config_names_the_key(section, body, match):
    with pytest.raises(RecipeError, match=match):
        section_config(section, body, source="r.toml")


def test_section_config_builds_the_frozen_config():
    q = section_config("quantize", {"bits": 4, "qat_epochs": 2})
    assert q.bits == 4 and q.qat_epochs == 2 and q.scheme == "symmetric"
    assert section_config("edge", {"links_mbit": [1, 10]}).links_mbit == (1.0, 10.0)


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("[prune]\nsparsty = 0.5\n", r"prune\.sparsty: unknown key; did you mean 'sparsity'\?"),
        ("[quantise]\nbits = 4\n", r"unknown section \[quantise\]; did you mean 'quantize'\?"),
        ("[prune]\nxyz = 0.5\n", r"prune\.xyz: unknown key; \[prune\] takes"),
    ],
)
def test_recipe_unknown_keys_suggest_the_closest(toml, match):
    with pytest.raises(RecipeError, match=match):
        _recipe(toml)


# -- the registry ----------------------------------------------------------------------------
def test_registry_order_and_declared_inputs_come_earlier():
    names = list(STAGES)
    assert names == [
        "teacher",
        "student",
        "distill",
        "prune",
        "quantize",
        "cluster",
        "sizes",
        "export",
        "compile",
        "edge",
        "sweep",
    ]
    for i, (name, stage) in enumerate(STAGES.items()):
        assert stage.name == name
        for inp in stage.inputs:
            assert inp == PREVIOUS or names.index(inp) < i, (name, inp)


def test_plan_of_the_default_study():
    steps = [(s.name, src) for s, src in plan(load_recipe(None))]
    assert steps == [
        ("teacher", {}),
        ("student", {}),
        ("distill", {"teacher": "teacher"}),
        ("prune", {PREVIOUS: "distill", "teacher": "teacher"}),
        ("quantize", {PREVIOUS: "prune", "teacher": "teacher"}),
        (
            "export",
            {k: k for k in ("teacher", "student", "distill", "prune", "quantize")},
        ),
        ("compile", {"export": "export"}),
        ("edge", {"export": "export", "student": "student", "distill": "distill"}),
        ("sweep", {k: k for k in ("teacher", "student", "distill", "prune", "quantize")}),
    ]


def test_plan_without_teacher_or_edge():
    r = _recipe("[prune]\nsparsity = 0.5\n[cluster]\nbits = 4\n[edge]\nenabled = false\n")
    steps = {s.name: src for s, src in plan(r)}
    assert list(steps) == ["student", "prune", "cluster", "sizes", "export"]
    assert steps["prune"] == {PREVIOUS: "student"}  # no teacher: fine-tuned with cross-entropy
    assert steps["cluster"] == {PREVIOUS: "prune"}
    assert steps["sizes"] == {"prune": "prune", "cluster": "cluster"}
    r2 = _recipe("[export]\nenabled = false\n[edge]\nenabled = false\n")
    assert [s.name for s, _ in plan(r2)] == ["student"]


def test_no_back_channel_attributes_between_study_modules():
    # stages and the report talk through outputs only: no getattr / setattr / hasattr on
    # another object, and the report never sees the Study
    for f in sorted(STUDY_DIR.glob("*.py")):
        tree = ast.parse(f.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                if n.func.id in ("setattr", "hasattr"):
                    raise AssertionError(f"{f.name}:{n.lineno}: {n.func.id}")
                if n.func.id == "getattr" and f.name != "_util.py":
                    # only the stage-state encoder reads the fields of compressed leaves
                    assert f.name == "_stages.py", f"{f.name}:{n.lineno}: getattr"
    report = ast.parse((STUDY_DIR / "_report.py").read_text())
    names = {n.id for n in ast.walk(report) if isinstance(n, ast.Name)}
    assert "study" not in names


def _metrics(acc: float, **extra) -> dict:
    return dict(
        accuracy=acc,
        error_pct=100 * (1 - acc),
        errors=round((1 - acc) * 100),
        n_test=100,
        sparsity=0.0,
        weight_bits_per_weight=32.0,
        storage_bytes=400,
        storage_bytes_huffman=300,
        fp32_bytes=400,
        params=100,
        per_layer=[],
        **extra,
    )


def test_report_is_built_from_the_outputs_alone():
    r = _recipe(
        "[prune]\nsparsity = 0.5\n[export]\nenabled = false\n[edge]\nenabled = false\n"
        '[sweep]\nkey = "prune.sparsity"\nvalues = [0.5]\n'
    )
    outputs = {
        "student": _metrics(0.9),
        "prune": _metrics(0.85, settings={"method": "magnitude"}),
        "sweep": {"key": "prune.sparsity", "points": [{"value": 0.5, "accuracy": 0.85}]},
    }
    run = RunInfo(
        created="then", timings={"student": 1.0, "prune": 2.0}, resumed=[], total_seconds=3.0
    )
    rep = build_report(r, ["student", "prune"], outputs, run)
    assert [s["stage"] for s in rep["stages"]] == ["student", "prune"]
    assert rep["stages"][1]["accuracy"] == 0.85 and rep["created"] == "then"
    assert rep["sweep"] == {"key": "prune.sparsity", "points": outputs["sweep"]["points"]}
    assert rep["timings_s"] == {"student": 1.0, "prune": 2.0}
    assert "## Results per stage (test set n = 100)" in to_markdown(
        dict(rep, sweep=None, machine={"cpu": "x", "cores": 1, "usable_cores": 1})
    )


def test_stage_output_is_a_state_and_its_metrics():
    out = StageOutput(None, {"a": 1})
    state, metrics = out
    assert state is None and metrics == {"a": 1}
