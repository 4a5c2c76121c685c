"""The report's vocabulary holds together: sizes add up, accuracies are on one set (or say
their n), and every relative figure is computed against the baseline it names."""

import json
import os
import re

import pytest

from jaxcompress.study._compress import pareto_front
from jaxcompress.study._report import to_markdown


@pytest.fixture(scope="module")
def rep(tiny_run):
    _, out, code = tiny_run
    assert code == 0
    return json.loads((out / "report.json").read_text()), out


def test_per_layer_rows_add_up_to_the_artifact(rep):
    r, out = rep
    final = r["stages"][-1]
    art = os.path.getsize(out / "model.jcx")
    assert final["artifact_bytes"] == art == r["edge"]["size"]["artifact_bytes"]
    kernels = sum(
        t["stored_bytes"]
        for name, t in final["tensors"].items()
        if len(t["shape"]) >= 2 and not name.startswith("const/")
    )
    # the kernels' bytes are the artifact's weight bytes, as the edge runtime counts them
    assert kernels == final["artifact_weight_bytes"] == r["edge"]["size"]["weight_bytes"]
    md = to_markdown(r)
    section = md.split("how the artifact stores it", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
    per_tensor = [
        ln for ln in rows if not ln.startswith(("| **", "| biases", "| graph", "| tensor"))
    ]
    assert len(per_tensor) == len(final["tensors"])
    byte_col = [int(ln.split("|")[5]) for ln in per_tensor]
    other = int(next(ln for ln in rows if ln.startswith("| graph")).split("|")[5])
    assert other > 0  # the graph and the sample input/output take room
    assert sum(byte_col) + other == art
    assert f"| **artifact** | | | | {art} |" in md
    # every stored tensor says how it is stored; the int4 kernels are packed codes
    assert all("packed" in t["encoding"] for n, t in final["tensors"].items() if "kernel" in n)


def test_every_accuracy_is_on_the_same_set_or_says_its_n(rep):
    r, _ = rep
    n = r["stages"][0]["n_test"]
    assert n == 200  # test_limit of the tiny recipe
    assert {s["n_test"] for s in r["stages"]} == {n}
    assert {p["n_test"] for p in r["sweep"]["points"]} == {n}
    md = to_markdown(r)
    assert f"test set n = {n}" in md
    acc_n = r["edge"]["accuracy"]["n"]
    assert acc_n == 50  # eval_limit: not the whole set, so the label must say so
    assert f"runtime top-1 (n = {acc_n} of {n}: first {acc_n})" in md
    # the split plan's per-cut accuracy is labelled with its own n
    assert r["edge_split_accuracy_n"] == 50
    assert "accuracy per cut on the first 50 test examples" in md


def test_relative_figures_use_the_baseline_they_name(rep):
    r, _ = rep
    rows = {s["stage"]: s for s in r["stages"]}
    sm = r["summary"]
    t, f = rows["teacher"], r["stages"][-1]
    assert sm["baseline"] == "teacher" and sm["final_stage"] == f["stage"]
    assert sm["times_smaller_than_teacher"] == pytest.approx(
        t["artifact_bytes"] / f["artifact_bytes"]
    )
    assert sm["accuracy_points_vs_teacher"] == pytest.approx(100 * (f["accuracy"] - t["accuracy"]))
    assert sm["times_faster_than_teacher"] == pytest.approx(
        t["latency_p50_ms"] / f["latency_p50_ms"]
    )
    # the runtime's relative top-1 is against the float stage the compression started from
    ref = r["edge_float_reference"]
    assert ref == "distill"
    acc = r["edge"]["accuracy"]
    assert acc["float_accuracy"] == pytest.approx(rows[ref]["accuracy"])
    assert acc["relative"] == pytest.approx(acc["accuracy"] / rows[ref]["accuracy"])
    md = to_markdown(r)
    assert f"relative to the float model the compression started from (`{ref}`" in md
    assert f"{sm['times_smaller_than_teacher']:.1f}x smaller" in md


def test_latency_has_its_spread_and_compile_time_its_own_line(rep):
    r, _ = rep
    for s in r["stages"]:
        assert s["latency_p10_ms"] <= s["latency_p50_ms"] <= s["latency_p90_ms"]
    md = to_markdown(r)
    assert re.search(r"edge runtime kernel compilation: \d+\.\d s", md)
    assert "compile (edge runtime kernel compilation)" in md


def test_paper_on_another_dataset_is_not_comparable(rep):
    r, _ = rep
    r = json.loads(json.dumps(r))
    r["paper"] = {
        "dataset": "mnist",
        "comparable": False,
        "title": "Some paper",
        "reference": "",
        "notes": "",
        "rows": [{"metric": "final_error_pct", "label": "x", "paper": 1.0, "ours": 9.0}],
    }
    md = to_markdown(r)
    assert "Published numbers (not comparable)" in md
    assert "paper's numbers are on mnist; this run is on mnist1d" in md
    r["paper"]["comparable"] = True
    r["paper"]["dataset"] = "mnist1d"
    assert "not comparable" not in to_markdown(r)


def test_pareto_front_treats_noise_as_ties():
    pts = [
        {"accuracy": 0.900, "latency_p50_ms": 0.050},
        {"accuracy": 0.899, "latency_p50_ms": 0.051},  # within noise of the first: a tie
        {"accuracy": 0.700, "latency_p50_ms": 0.200},  # beaten beyond the noise
    ]
    exact = pareto_front(pts, minimize=("latency_p50_ms",))
    assert exact == [True, False, False]
    tied = pareto_front(
        pts, minimize=("latency_p50_ms",), ties={"accuracy": 0.005, "latency_p50_ms": 0.01}
    )
    assert tied == [True, True, False]
