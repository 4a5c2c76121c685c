"""Recipe validation: every bad input names the file and the key."""

import tomllib

import pytest

from jaxcompress.cli import main
from jaxcompress.clustering._deep_compression import _relative_positions
from jaxcompress.study import (
    RecipeError,
    load_recipe,
    pareto_front,
    parse_recipe,
    shipped_recipe_path,
    shipped_recipes,
)

GOOD = """
[study]
name = "t"
dataset = "mnist1d"
[student]
model = "mlp1d"
epochs = 1
"""


def _write(tmp_path, text, name="r.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_recipe_fills_defaults(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD))
    assert r.name == "t"
    assert r["student"]["lr"] == 1e-3 and r["student"]["batch_size"] == 100
    assert "prune" not in r


def test_resolved_recipe_round_trips():
    for name in shipped_recipes():
        r = load_recipe(shipped_recipe_path(name))
        again = parse_recipe(tomllib.loads(r.to_toml()), source="<resolved>")
        assert again.sections == r.sections, name


def test_shipped_recipes_exist_and_validate():
    names = set(shipped_recipes())
    assert {
        "default",
        "han2015_lenet300100",
        "han2015_lenet5",
        "deep_compression_lenet300100",
        "hinton2015_distillation",
        "edge_int4_2of4_rpi4",
    } <= names
    for n in names:
        assert load_recipe(shipped_recipe_path(n)).name == n or n == "default"
    assert load_recipe(None)["study"]["dataset"] == "mnist1d"


def test_missing_file(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(RecipeError, match=r"nope\.toml: file not found"):
        load_recipe(p)


def test_malformed_toml(tmp_path):
    p = _write(tmp_path, "[study\nname = 1", "bad.toml")
    with pytest.raises(RecipeError, match=r"bad\.toml: not valid TOML"):
        load_recipe(p)


@pytest.mark.parametrize(
    "extra, key, what",
    [
        ("[prune]\nsparsty = 0.5\n", r"prune\.sparsty", "unknown key"),
        ("[prunning]\nsparsity = 0.5\n", "prunning", "unknown section"),
        ("[prune]\nsparsity = 1.5\n", r"prune\.sparsity", "must be <"),
        ('[prune]\nsparsity = "half"\n', r"prune\.sparsity", "expected number"),
        ('[prune]\nmethod = "nm"\nn = 4\nm = 4\n', r"prune\.n", "must be < m"),
        ('[prune]\nmethod = "random"\n', r"prune\.method", "not one of"),
        ('[prune]\nsparsity = 0.5\nwhere = "("\n', r"prune\.where", "regex"),
        ("[quantize]\nbits = 4\n[cluster]\nbits = 4\n", "cluster", "alternatives"),
        ("[distill]\ntemperature = 2.0\n", "distill", "needs a \\[teacher\\]"),
        ("[quantize]\nbits = 9\n", r"quantize\.bits", "must be <= 8"),
        ("[quantize]\nbits = true\n", r"quantize\.bits", "expected integer, got boolean"),
        ('[edge]\ndevices = ["rpi4", "rpi9"]\n', r"edge\.devices\[1\]", "unknown device"),
        ('[sweep]\nkey = "prune.sparsity"\nvalues = [0.5]\n', r"sweep\.key", "no \\[prune\\]"),
        (
            '[prune]\nsparsity = 0.5\n[sweep]\nkey = "prune.sparsity"\nvalues = [0.5, 2.0]\n',
            r"sweep\.values\[1\]",
            "must be <",
        ),
        (
            "[paper]\n[paper.values]\naccuracy_of_doom = 1.0\n",
            r"paper\.values\.accuracy_of_doom",
            "unknown metric",
        ),
        ("[export]\nenabled = false\n[edge]\nthreads = 1\n", "edge", "needs export"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, extra, key, what):
    p = _write(tmp_path, GOOD + extra, "bad_recipe.toml")
    with pytest.raises(RecipeError, match=rf"bad_recipe\.toml: {key}: .*{what}"):
        load_recipe(p)


def test_model_must_fit_dataset(tmp_path):
    p = _write(tmp_path, GOOD.replace("mlp1d", "lenet5"), "m.toml")
    with pytest.raises(RecipeError, match=r"m\.toml: student\.model: 'lenet5' does not fit"):
        load_recipe(p)


def test_missing_student(tmp_path):
    p = _write(tmp_path, '[study]\nname = "x"\n', "s.toml")
    with pytest.raises(RecipeError, match=r"s\.toml: student: missing required section"):
        load_recipe(p)


def test_cli_reports_bad_recipe(tmp_path, capsys):
    p = _write(tmp_path, GOOD + "[prune]\nsparsty = 0.5\n", "cli_bad.toml")
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cli_bad.toml" in err and "prune.sparsty" in err
    assert not (tmp_path / "o").exists()  # validated before any work
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: file not found" in capsys.readouterr().err


def test_cli_check_and_recipes(capsys):
    assert main(["run", "--check"]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["recipes"]) == 0
    assert "deep_compression_lenet300100" in capsys.readouterr().out


def test_pareto_front_golden():
    pts = [
        {"accuracy": 0.9, "artifact_bytes": 100},
        {"accuracy": 0.8, "artifact_bytes": 50},
        {"accuracy": 0.7, "artifact_bytes": 60},  # dominated by the 2nd
        {"accuracy": 0.9, "artifact_bytes": 120},  # dominated by the 1st
        {"accuracy": 0.5, "artifact_bytes": 10},
    ]
    assert pareto_front(pts) == [True, True, False, False, True]


def test_relative_index_fillers():
    # Deep Compression Fig. 2 with 3-bit gaps (span 8): a gap of 10 needs one filler zero
    nz = [False] * 20
    for p in (1, 4, 15):
        nz[p] = True
    entries, gaps = _relative_positions(__import__("numpy").array(nz), 3)
    assert entries.tolist() == [1, 4, 12, 15]  # 12 is the filler
    assert gaps.tolist() == [1, 2, 7, 2]
    assert max(gaps) < 8


def test_dataset_override_adapts_models_and_epochs():
    from jaxcompress.study._stages import override_dataset

    r, notes = override_dataset(load_recipe(None), "mnist", "/data")
    assert r["study"]["dataset"] == "mnist" and r["study"]["data_dir"] == "/data"
    assert r["teacher"]["model"] == "lenet5" and r["student"]["model"] == "lenet5"
    assert r["student"]["channels"] == 0 and r["teacher"]["channels"] == 0  # cnn1d widths reset
    assert r["student"]["epochs"] == 4 and any("15x" in n for n in notes)
