"""Full-integer graphs in the runtime: the integer kernels equal the NumPy reference
(`format.quant`) bit for bit on both GEMM paths, batches 1 and 7; the plan says which kernel runs
each node and never falls back to float silently. JAX-free: hand-built artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels import ArtifactError, JaxCompressValueError, _qkernels, runtime
from jaxcompress_kernels.format import quant as q

from ._qgraphs import cnn_graph, mlp_graph, reference_run

PATHS = ["portable"] + (["vnni"] if _qkernels.HAS_VNNI else [])


def _inputs(shape, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, size=(batch, *shape)).astype(np.float32)
    x.reshape(-1)[:4] = [1e9, -1e9, 0.0, 0.015]  # clipped both ways, exact zero, a half step
    return x


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [cnn_graph, mlp_graph, lambda: mlp_graph(1, (21, 33, 70, 10))])
def test_integer_runtime_equals_reference(tmp_path, path, make):
    g = make()
    art = g.write(tmp_path / "q.jcx", g.outputs)
    rt = runtime.load(art, int8_kernels=path)
    for batch in (1, 7):
        x = _inputs(g.input_shape, batch, batch)
        want = reference_run(*g.manifest(g.outputs), x)
        got = rt.run(x)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b)
        # the step-by-step path (edge-cloud splits) agrees too
        env = rt.run_nodes(rt.initial_env(x), 0, len(rt.nodes), batch)
        np.testing.assert_array_equal(env[g.outputs[0]], want[0])
    plan = rt.plan_for(7)
    assert plan.float_nodes == []
    for rec in plan.nodes:
        label = plan.steps[rec.step][1] if rec.step is not None else rec.kernel
        if rec.op.startswith("q") or rec.op == "quantize":
            assert rec.dtype == "int8"
            assert rec.kernel and "f32" not in label.replace("f32->int8", "")
        if rec.op in ("qlinear", "qconv2d") and "depthwise" not in label:
            assert path in label


def test_gemm_paths_agree_on_random_shapes():
    rng = np.random.default_rng(5)
    for m, k, n in [(1, 5, 3), (3, 64, 17), (9, 130, 33), (4, 4, 16)]:
        x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        ws = rng.uniform(1e-3, 2e-2, n).astype(np.float32)
        b = rng.integers(-(2**20), 2**20, n).astype(np.int32)
        zp = int(rng.integers(-128, 128))
        mult, shift = q.channel_multipliers(0.03, ws, 0.07)
        want = q.qlinear(x, 0.03, zp, w, ws, b, 0.07, -3, -120, 110)
        for path in PATHS:
            pw = _qkernels.pack_qgemm(w, b, zp, mult, shift, vnni=path == "vnni")
            xp = np.zeros((m, pw.kp), np.int8)
            xp[:, :k] = x
            out = np.empty((m, n), np.int8)
            _qkernels.qgemm(xp, pw, -3, -120, 110, out)
            np.testing.assert_array_equal(out, want, err_msg=f"{path} {(m, k, n)}")


def test_quantize_kernel_matches_reference_on_ties():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e30, -np.inf, np.nan, 0.0], np.float32)
    x = np.concatenate([x, np.random.default_rng(0).normal(0, 3, 1000).astype(np.float32)])
    for s, zp in [(1.0, 0), (0.5, -7), (0.0137, 100)]:
        out = np.empty(x.shape, np.int8)
        _qkernels.quantize_q(x, np.float32(s), zp, out)
        np.testing.assert_array_equal(out, q.quantize(x, s, zp))


def test_float_node_in_an_integer_graph_is_refused_unless_allowed(tmp_path):
    g = mlp_graph()
    deq = g.add("dequantize", [g.nodes[1]["out"]])
    tanh = g.add("tanh", [deq])
    rq = g.add("quantize", [tanh], (0.01, 0))
    last = g.nodes[2]
    last["in"] = [rq]
    # rq comes after the last qlinear in node order: rebuild a valid order
    g.nodes = [g.nodes[0], g.nodes[1], g.nodes[4], g.nodes[5], g.nodes[6], last, g.nodes[3]]
    path = g.write(tmp_path / "f.jcx", g.outputs)
    with pytest.raises(ArtifactError, match=r"node 3 \(tanh.*no integer kernel"):
        runtime.load(path)
    rt = runtime.load(path, allow_float_nodes=True)
    assert rt.plan.float_nodes == [3]
    x = _inputs(g.input_shape, 2, 0)
    np.testing.assert_array_equal(rt.run(x), reference_run_mixed(g, x))


def reference_run_mixed(g, x):
    man, parts = g.manifest(g.outputs)
    tens = {k: parts[t["parts"]["value"]] for k, t in man["tensors"].items()}
    env = {"input": x}
    for n in g.nodes:
        ins = [env[r] for r in n["in"]]
        env[n["out"]] = (
            np.tanh(ins[0]) if n["op"] == "tanh" else q.reference_node(n, ins, g.quant, tens)
        )
    return env[g.outputs[0]]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda g: g.quant[g.nodes[1]["out"]].update(scale=0.0), "malformed"),
        (lambda g: g.quant[g.nodes[1]["out"]].update(zero_point=-129), "malformed"),
        (lambda g: g.quant.pop(g.nodes[1]["out"]), "missing quantization record"),
    ],
)
def test_runtime_refuses_bad_quant_records(tmp_path, edit, match):
    g = mlp_graph()
    edit(g)
    with pytest.raises(ArtifactError, match=match):
        runtime.load(g.write(tmp_path / "b.jcx", g.outputs))


def test_kernel_path_option_is_checked(tmp_path, monkeypatch):
    g = mlp_graph()
    path = g.write(tmp_path / "m.jcx", g.outputs)
    with pytest.raises(JaxCompressValueError, match="int8_kernels"):
        runtime.load(path, int8_kernels="fast")
    monkeypatch.setattr(_qkernels, "HAS_VNNI", False)  # a CPU without VNNI
    with pytest.raises(JaxCompressValueError, match="avx512_vnni"):
        runtime.load(path, int8_kernels="vnni")
    plan = runtime.load(path).plan
    assert "portable" in plan.steps[plan.nodes[1].step][1]
