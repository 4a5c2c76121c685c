"""A tiny recipe end to end: run folder, report numbers from the run, resume, refusals, CLI."""

import json
import os

import numpy as np
import pytest

from jaxcompress.cli import main
from jaxcompress.study import RunFolderError, load_recipe, run_study


def test_run_writes_folder_and_report(tiny_run):
    _, out, code = tiny_run
    assert code == 0
    for f in ("report.md", "report.json", "recipe.toml", "run.json", "model.jcx"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == [
        "teacher",
        "student",
        "distill",
        "prune",
        "quantize",
    ]
    assert rep["seed"] == 3 and rep["versions"]["jax"] and rep["machine"]["cores"]
    assert set(rep["timings_s"]) >= {"teacher", "student", "prune", "quantize", "export", "edge"}
    final = rep["stages"][-1]
    assert abs(final["sparsity"] - 0.5) < 0.01
    assert final["weight_bits_per_weight"] < 6  # int4 codes + per-channel scales
    assert final["artifact_bytes"] == os.path.getsize(out / "model.jcx")
    assert rep["edge"]["self_check_ok"] and rep["edge"]["accuracy"]["n"] == 50
    assert rep["edge"]["splits"] and "rpi4" in rep["edge"]["projected"]
    # a sweep over the bit width: two points, at least one on the Pareto front
    pts = rep["sweep"]["points"]
    assert [p["value"] for p in pts] == [2, 8] and any(p["pareto_size"] for p in pts)
    assert pts[0]["weight_bits_per_weight"] < pts[1]["weight_bits_per_weight"]
    md = (out / "report.md").read_text()
    assert (
        "## Results per stage" in md and "Pareto" in md and f"{100 * final['accuracy']:.2f}" in md
    )
    for p in rep["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {
        "plots/accuracy_vs_sparsity.png",
        "plots/accuracy_vs_bits.png",
        "plots/size_latency.png",
        "plots/per_layer.png",
        "plots/sweep.png",
    } <= set(rep["plots"])


def test_report_numbers_come_from_the_run(tiny_run):
    """Re-evaluate the stored final params: the report's accuracy is exactly that number."""
    from jaxcompress.quantization import dequantize_params
    from jaxcompress.study._stages import Study

    recipe, out, _ = tiny_run
    study = Study(load_recipe(recipe), out, progress=False, quiet=True)
    tree = study.state("quantize")  # read back from the run folder (data only)
    apply_fn, _ = study.model("student")
    acc = study.evaluate(apply_fn, tree)["accuracy"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["stages"][-1]["accuracy"] == pytest.approx(acc, abs=1e-9)
    dense = dequantize_params(tree)
    import jax

    kernels = [np.asarray(w) for w in jax.tree.leaves(dense) if np.ndim(w) >= 2]
    assert np.mean(np.concatenate([k.ravel() for k in kernels]) == 0) == pytest.approx(
        0.5, abs=0.01
    )


def test_resume_runs_only_unfinished_stages(tiny_run, capsys):
    recipe, out, _ = tiny_run
    before = (out / "stages" / "prune.json").read_text()
    os.remove(out / "stages" / "edge.json")  # as if interrupted during the edge stage
    os.remove(out / "stages" / "sweep_01.json")
    rep = run_study(str(recipe), out, progress=False, quiet=True)
    assert set(rep["resumed_stages"]) >= {
        "teacher",
        "student",
        "distill",
        "prune",
        "quantize",
        "export",
        "sweep_00",
    }
    assert "edge" not in rep["resumed_stages"] and "sweep_01" not in rep["resumed_stages"]
    assert (out / "stages" / "edge.json").is_file()
    assert (out / "stages" / "prune.json").read_text() == before  # finished work untouched


def test_corrupted_stage_state_is_never_loaded_and_the_stage_reruns(tiny_run):
    recipe, out, _ = tiny_run
    blob = out / "stages" / "quantize.safetensors"
    blob.write_bytes(blob.read_bytes()[:-7])  # truncated: its sha256 no longer matches
    rep = run_study(str(recipe), out, progress=False, quiet=True)
    assert "quantize" not in rep["resumed_stages"] and "prune" in rep["resumed_stages"]
    marker = json.loads((out / "stages" / "quantize.json").read_text())
    assert marker["state"]["sha256"] == __import__("hashlib").sha256(blob.read_bytes()).hexdigest()


def test_folder_holding_another_run_is_refused(tiny_run, tmp_path, capsys):
    recipe, out, _ = tiny_run
    other = tmp_path / "other.toml"
    other.write_text(recipe.read_text().replace("sparsity = 0.5", "sparsity = 0.6"))
    stamp = (out / "report.json").stat().st_mtime_ns
    with pytest.raises(RunFolderError, match="holds another run"):
        run_study(str(other), out, progress=False, quiet=True)
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    assert "holds another run" in capsys.readouterr().err
    assert (out / "report.json").stat().st_mtime_ns == stamp  # nothing overwritten
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no jaxcompress run"):
        run_study(str(recipe), junk, progress=False, quiet=True)
    assert (junk / "notes.txt").read_text() == "mine"


def test_mnist_without_data_dir_is_a_clear_error(tmp_path):
    from jaxcompress.study import RecipeError

    p = tmp_path / "m.toml"
    p.write_text(
        '[study]\nname = "m"\ndataset = "mnist"\n[student]\nmodel = "lenet300100"\n'
        "[export]\nenabled = false\n"
    )
    with pytest.raises(RecipeError, match="--data-dir"):
        run_study(str(p), tmp_path / "o", progress=False, quiet=True)


def test_inspect_bench_export_commands(tiny_run, tmp_path, capsys):
    _, out, _ = tiny_run
    art = str(out / "model.jcx")
    assert main(["inspect", art]) == 0
    text = capsys.readouterr().out
    assert "checksums verified" in text and "self-check against the bundled output: passed" in text
    assert (
        main(["bench", art, "--device", "rpi4", "--threads", "1", "--iters", "5", "--warmup", "1"])
        == 0
    )
    assert "rpi4" in capsys.readouterr().out
    assert main(["bench", art, "--device", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    copy = tmp_path / "prune.jcx"
    assert main(["export", str(out), "--stage", "prune", "--out", str(copy)]) == 0
    assert copy.read_bytes() == (out / "artifacts" / "prune.jcx").read_bytes()
    bad = tmp_path / "bad.jcx"
    data = bytearray((out / "model.jcx").read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert main(["inspect", str(bad)]) == 2
    assert "refused" in capsys.readouterr().err
