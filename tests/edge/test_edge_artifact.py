"""Edge analyses on real artifacts (jaxcompress.export.save + the JAX-free runtime)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcompress import export
from jaxcompress.cli import main as cli_main
from jaxcompress.edge import (
    GraphExecutor,
    Link,
    graph_from_artifact,
    plan_arena,
    plan_split,
    project,
    split_accuracy,
)
from jaxcompress.edge._report import benchmark, size_report
from jaxcompress_kernels import artifact as _artifact

K, H, C = 16, 32, 4


def apply(params, x):
    """A skip connection makes the raw input cross the early cuts."""
    h = jax.nn.relu(x @ params["l1"]["kernel"])
    return h @ params["l2"]["kernel"] + x @ params["skip"]["kernel"]


def _params(prune: float = 0.0):
    rng = np.random.default_rng(0)
    p = {
        "l1": {"kernel": rng.standard_normal((K, H)).astype(np.float32)},
        "l2": {"kernel": rng.standard_normal((H, C)).astype(np.float32)},
        "skip": {"kernel": rng.standard_normal((K, C)).astype(np.float32)},
    }
    if prune:
        w = p["l1"]["kernel"]
        w[np.abs(w) < np.quantile(np.abs(w), prune)] = 0.0
    return jax.tree.map(jnp.asarray, p)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    x = np.random.default_rng(1).standard_normal((8, K)).astype(np.float32)
    out = {}
    for name, prune in (("dense", 0.0), ("pruned", 0.75)):
        path = str(d / f"{name}.jcx")
        export.save(path, apply, _params(prune), x, nm=False)
        out[name] = path
    return out


def test_graph_from_artifact_shapes_flops_bytes(artifacts):
    g = graph_from_artifact(artifacts["dense"])
    assert g.input_shape == (1, K) and g.input_bytes == 4 * K
    lin = [o for o in g.ops if o.op == "linear"]
    assert sorted(o.flops for o in lin) == sorted([2.0 * K * H, 2.0 * H * C, 2.0 * K * C])
    assert {o.param_bytes for o in lin} == {4 * K * H, 4 * H * C, 4 * K * C}
    assert g.weight_bytes == 4 * (K * H + H * C + K * C)
    relu = next(o for o in g.ops if o.op == "max")
    assert relu.shape == (1, H) and relu.flops == H
    # the skip branch keeps the raw input alive past the first layer
    skip = next(i for i, o in enumerate(g.ops) if o.weight == "skip/kernel")
    l1 = next(i for i, o in enumerate(g.ops) if o.weight == "l1/kernel")
    for cut in range(1, len(g.ops)):
        assert (g.input in g.crossing(cut)) == (cut <= skip)
    assert g.crossing(l1 + 1) == [g.input, g.ops[l1].name]
    plan = plan_arena(g)
    assert plan.peak_bytes >= 4 * (K + H) and plan.arena_bytes >= plan.peak_bytes


def test_sparse_artifact_counts_nonzeros(artifacts):
    g = graph_from_artifact(artifacts["pruned"])
    l1 = next(o for o in g.ops if o.weight == "l1/kernel")
    nnz = int(np.count_nonzero(np.asarray(_params(0.75)["l1"]["kernel"])))
    assert l1.flops == 2.0 * nnz
    size = size_report(_artifact.load(artifacts["pruned"]))
    assert size.weight_bytes_by_encoding.get("csr", 0) > 0
    assert size.sparsity == pytest.approx((K * H - nnz) / (K * H + H * C + K * C))
    assert size.bits_per_weight < 32.0
    dense = size_report(_artifact.load(artifacts["dense"]))
    assert dense.bits_per_weight == 32.0 and dense.sparsity == 0.0
    # the CSR weights stream fewer bytes from flash and do fewer MACs; whether that beats the
    # dense op at 75% sparsity depends on the sparse-efficiency prior, and a projection where the
    # sparse form is slower says why
    sparse = project(g, "stm32h7a3")
    dense_g = graph_from_artifact(artifacts["dense"])
    dense = project(dense_g, "stm32h7a3")
    i = next(k for k, o in enumerate(g.ops) if o.weight == "l1/kernel")
    j = next(k for k, o in enumerate(dense_g.ops) if o.weight == "l1/kernel")
    assert 0 < sparse.ops[i].stream_s < dense.ops[j].stream_s
    assert sparse.ops[i].flops < dense.ops[j].flops
    if sparse.total_s >= dense.total_s:
        assert any("sparse weights" in n for n in sparse.notes)


def test_executor_prefix_suffix_equals_run_at_every_cut(artifacts):
    ex = GraphExecutor(artifacts["dense"])
    x = np.random.default_rng(2).standard_normal((5, K)).astype(np.float32)
    ref = ex.runtime.run(x)
    for cut in range(len(ex.nodes) + 1):
        y = ex.run_suffix(ex.run_prefix(x, cut), cut)
        # node by node vs the fused plan (a fused chain of layers sums in another order)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_split_accuracy_measured(artifacts):
    ex = GraphExecutor(artifacts["dense"])
    g = graph_from_artifact(ex.runtime)
    x = np.random.default_rng(3).standard_normal((200, K)).astype(np.float32)
    y = np.asarray(ex.runtime.run(x)).argmax(-1)
    n = len(g.ops)
    for cut in range(n + 1):
        assert split_accuracy(ex, g, cut, x, y, quantize=False) == 1.0
    accs = [split_accuracy(ex, g, c, x, None, quantize=True) for c in range(n + 1)]
    assert accs[0] == 1.0 and accs[-1] == 1.0  # nothing quantized at the ends
    assert min(accs) >= 0.9  # int8 at a cut moves few decisions of a 4-class toy model
    plan = plan_split(
        g,
        edge="stm32h7a3",
        cloud="host",
        link=Link.mbit(1),
        quantize=True,
        accuracy=lambda c: split_accuracy(ex, g, c, x, y, quantize=True),
    )
    assert plan.rows[0].accuracy == 1.0 and plan.rows[-1].accuracy == 1.0


def test_benchmark_report(artifacts):
    x = np.random.default_rng(4).standard_normal((50, K)).astype(np.float32)
    ref = export.reference_output(apply, _params(0.75), x)
    y = ref.argmax(-1)
    rep = benchmark(
        artifacts["pruned"],
        x=x,
        y=y,
        float_fn=lambda xe: export.reference_output(apply, _params(0.0), xe),
        devices=("rpi4", "stm32l4r5"),
        warmup=2,
        iters=15,
        links=[Link.mbit(1, rtt_ms=10)],
        quantize_cut=True,
        split_accuracy_n=50,
    )
    assert rep.self_check_ok and rep.latency.n == 15 and rep.latency.init_s > 0
    assert len(rep.op_seconds) == len(rep.graph.ops)
    assert rep.accuracy.accuracy == 1.0  # labels are the artifact's own model's decisions
    assert rep.accuracy.relative == pytest.approx(1.0 / rep.accuracy.float_accuracy)
    assert set(rep.projections) == {"host", "rpi4", "stm32l4r5"}
    assert all(p.label == "projected" for p in rep.projections.values())
    assert rep.fits["stm32l4r5"].fits is True
    md = rep.to_markdown()
    for word in (
        "p90 (headline)",
        "projected",
        "estimate",
        "bits per weight",
        "all-edge",
        "all-cloud",
        "99% of float",
    ):
        assert word in md
    d = json.loads(rep.to_json())
    assert d["size"]["artifact_bytes"] == rep.size.artifact_bytes
    # the kernel of every node is the one the runtime's plan ran, not a re-derivation
    from jaxcompress_kernels import runtime

    plan = runtime.load(artifacts["pruned"]).plan
    got = [n["kernel"] for n in d["graph"]["nodes"]]
    assert len(got) == len(plan.nodes) and all(got)
    for k, n in zip(got, plan.nodes, strict=True):
        if n.weight is None:
            assert k == n.kernel or k.startswith("fused into step")
        else:  # the autotuner may pick either candidate on a noisy machine
            fams = ("spmm_csr", "spmm_nm", "matmul", "gemv", "mlp_chain")
            assert k.split("(")[0] in fams or k.startswith("fused into step")
    assert [o.flops for o in rep.graph.ops] == [n.flops for n in plan.nodes]
    assert "kernel (the runtime's plan)" in md
    assert d["splits"][0]["rows"][0]["raw_input_leaves_device"] is True


def test_cli(artifacts, tmp_path, capsys):
    def main(argv):  # the one artifact-benchmark command: `jaxcompress bench`
        return cli_main(["bench", *argv])

    out = tmp_path / "rep.json"
    assert (
        main(
            [
                artifacts["dense"],
                "--iters",
                "3",
                "--warmup",
                "1",
                "--device",
                "stm32h7a3",
                "--link",
                "10",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "stm32h7a3" in text and "projected" in text
    d = json.loads(out.read_text())
    assert d["latency_measured_host"]["n"] == 3 and "stm32h7a3" in d["projected"]
    bad = tmp_path / "bad.jcx"
    bad.write_bytes(b"not an artifact at all")
    assert main([str(bad)]) == 2
    assert "refused" in capsys.readouterr().err
    assert main(["x", "--list-devices"]) == 0
    assert "rpi4" in capsys.readouterr().out


def test_benchmark_reports_the_dynamic_int8_kernels(tmp_path):
    """With ``activations="dynamic_int8"`` the report names the mode and the dyn_* kernels the
    runtime's plan ran for the int8 weights."""
    from jaxcompress.quantization import quantize_params
    from jaxcompress_kernels import JaxCompressValueError, runtime

    x = np.random.default_rng(1).standard_normal((4, K)).astype(np.float32)
    path = str(tmp_path / "int8.jcx")
    export.save(path, apply, quantize_params(_params(), bits=8, where="kernel"), x, nm=False)
    rep = benchmark(path, devices=("rpi4",), warmup=1, iters=3, activations="dynamic_int8")
    assert rep.activations == "dynamic_int8" and rep.self_check_ok
    assert "activations dynamic_int8" in rep.to_markdown()
    kernels = [o.kernel for o in rep.graph.ops if o.weight is not None]
    assert kernels and all(k.startswith("dyn_") or k.startswith("fused") for k in kernels)
    assert json.loads(rep.to_json())["activations"] == "dynamic_int8"
    rt = runtime.load(path)
    assert benchmark(rt, devices=(), warmup=1, iters=3).activations == "float"
    with pytest.raises(JaxCompressValueError, match="activations"):
        benchmark(rt, devices=(), warmup=1, iters=3, activations="dynamic_int8")
