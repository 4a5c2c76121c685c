"""The runtime's load-time plan: bounds that refuse crafted graphs before anything large is
allocated, the arena, fusion and the published per-node plan. JAX-free: artifacts are written
directly with the format package's container (checksums recomputed, so only the plan can
catch them)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from jaxcompress_kernels import ArtifactError, JaxCompressValueError, runtime
from jaxcompress_kernels._plan import Limits, assign_arena
from jaxcompress_kernels.format import ops
from jaxcompress_kernels.format.container import write_artifact


def _write(path, nodes, outputs, input_shape, tensors=None, parts=None):
    parts = dict(parts or {})
    x = np.zeros((1, *input_shape), np.float32)
    parts["__sample__:input"] = x
    parts["__sample__:output"] = np.zeros((1,), np.float32)
    graph = {
        "inputs": ["input"],
        "outputs": outputs,
        "nodes": nodes,
        "batch": "symbolic",
        "input_shapes": [list(input_shape)],
        "input_dtypes": ["float32"],
    }
    manifest = {
        "graph": graph,
        "tensors": tensors or {},
        "sample": {"input": "__sample__:input", "output": "__sample__:output"},
    }
    write_artifact(path, manifest, parts)
    return path


def _refused_quickly(path, match, **kw):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ArtifactError, match=match):
            runtime.load(path, **kw)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 200 << 20, peak


def test_chain_of_concatenate_is_refused(tmp_path):
    nodes, prev = [], "input"
    for i in range(40):  # doubles every node: 2^40 floats at the end
        nodes.append({"op": "concatenate", "in": [prev, prev], "out": f"v{i}", "axis": 1})
        prev = f"v{i}"
    p = _write(tmp_path / "cat.jcx", nodes, [prev], (1024,))
    _refused_quickly(p, r"graph node \d+ \(concatenate\).*max_activation_bytes")


def test_broadcast_add_is_refused(tmp_path):
    const = np.zeros((65536, 1), np.float32)
    tensors = {"c": {"encoding": "dense", "shape": [65536, 1], "parts": {"value": "c:value"}}}
    nodes = [{"op": "add", "in": ["input", "c"], "out": "y"}]
    p = _write(tmp_path / "bc.jcx", nodes, ["y"], (1, 65536), tensors, {"c:value": const})
    _refused_quickly(p, r"graph node 0 \(add\)")


def test_chain_of_pad_is_refused(tmp_path):
    nodes, prev = [], "input"
    lit = {"lit": 0.0, "dtype": "float32"}
    for i in range(20):
        pads = [[0, 0], [4000, 4000], [4000, 4000]]
        nodes.append({"op": "pad", "in": [prev], "out": f"p{i}", "value": lit, "pads": pads})
        prev = f"p{i}"
    p = _write(tmp_path / "pad.jcx", nodes, [prev], (4, 4))
    _refused_quickly(p, r"graph node \d+ \(pad\)")


def _window_sums(n, window=64):
    nodes = []
    for i in range(n):
        nodes.append(
            {
                "op": "reduce_window_sum",
                "in": ["input"],
                "out": f"s{i}",
                "window": [1, window, window],
                "strides": [1, 1, 1],
                "pads": [[0, 0], [window // 2, window // 2], [window // 2, window // 2]],
            }
        )
    return nodes


def test_many_large_window_sums_are_refused_by_flops(tmp_path):
    nodes = _window_sums(100)
    p = _write(tmp_path / "rws.jcx", nodes, [n["out"] for n in nodes], (1024, 1024))
    _refused_quickly(p, r"reduce_window_sum.*max_flops")


def test_a_raised_bound_lets_a_large_graph_load(tmp_path):
    nodes = _window_sums(30)  # 30 x 1025^2 x 4096 = 1.3e11 FLOPs, 126 MB of outputs
    p = _write(tmp_path / "big.jcx", nodes, [n["out"] for n in nodes], (1024, 1024))
    _refused_quickly(p, "max_flops")
    rt = runtime.load(p, limits=Limits(max_flops=1e12))
    assert rt.plan.flops > 1e11
    _refused_quickly(
        p, "max_activation_bytes", limits=Limits(max_flops=1e12, max_activation_bytes=1 << 26)
    )


def test_tensors_sharing_one_part_are_refused(tmp_path):
    idx = np.zeros(32768, np.uint8)  # 256 KB of 4-bit indices, claimed by 300 tensors
    cb = np.arange(16, dtype=np.float32)
    tensors = {
        f"w{i}": {
            "encoding": "codebook",
            "shape": [256, 256],
            "bits": 4,
            "axis": None,
            "parts": {"indices": "w:indices", "codebook": "w:codebook"},
        }
        for i in range(300)
    }
    nodes = [
        {"op": "linear", "in": ["input"], "out": f"y{i}", "weight": f"w{i}"} for i in range(300)
    ]
    parts = {"w:indices": idx[:32768], "w:codebook": cb}
    p = _write(tmp_path / "share.jcx", nodes, ["y0"], (256,), tensors, parts)
    _refused_quickly(p, "reuses the part")


@pytest.mark.parametrize(
    "node, match",
    [
        ({"op": "convert", "in": ["input"], "out": "y", "dtype": "S300000000"}, "dtype"),
        ({"op": "reshape", "in": ["input"], "out": "y", "shape": [1, 5]}, "element counts"),
        ({"op": "transpose", "in": ["input"], "out": "y", "perm": [0, 0]}, "permutation"),
        ({"op": "neg", "in": ["input"], "out": "y", "extra": 1}, "unknown attribute"),
        (
            {
                "op": "slice",
                "in": ["input"],
                "out": "y",
                "start": [0, 0],
                "limit": [1, 9],
                "strides": [1, 1],
            },
            "out of bounds",
        ),  # fmt: skip
    ],
)
def test_attribute_schema_and_shapes_are_checked_at_load(tmp_path, node, match):
    p = _write(tmp_path / "n.jcx", [node], ["y"], (4,))
    _refused_quickly(p, match)


def test_weight_bytes_bound(tmp_path):
    w = np.ones((64, 32), np.float32)
    tensors = {"w": {"encoding": "dense", "shape": [64, 32], "parts": {"value": "w:value"}}}
    nodes = [{"op": "linear", "in": ["input"], "out": "y", "weight": "w"}]
    p = _write(tmp_path / "w.jcx", nodes, ["y"], (64,), tensors, {"w:value": w})
    _refused_quickly(p, "max_weight_bytes", limits=Limits(max_weight_bytes=1000))
    rt = runtime.load(p)
    np.testing.assert_allclose(rt.run(np.ones((3, 64), np.float32)), np.full((3, 32), 64.0))


def test_limits_are_validated():
    with pytest.raises(JaxCompressValueError, match="max_flops"):
        Limits(max_flops=0)


def test_every_op_has_a_spec_and_runtime_coverage():
    from jaxcompress_kernels.runtime import exec_op

    lit = {"lit": 1.0, "dtype": "float32"}
    for name in ops.UNARY_OPS + ops.BINARY_OPS:
        spec = ops.OPS[name]
        ins = [np.ones((2, 3), np.float32)] * spec.arity[0]
        if name in ("not", "and", "or"):
            ins = [np.ones((2, 3), np.bool_)] * spec.arity[0]
        out = exec_op({"op": name, "in": [lit] * spec.arity[0]}, ins, 1)
        assert out.shape == (2, 3)
    assert set(ops.OPS) >= set(ops.UNARY_OPS) | set(ops.BINARY_OPS)


def test_arena_never_overlaps_live_buffers():
    rng = np.random.default_rng(0)
    sizes, live = {}, {}
    for i in range(60):
        a = int(rng.integers(0, 30))
        sizes[f"b{i}"] = int(rng.integers(1, 5000))
        live[f"b{i}"] = (a, a + int(rng.integers(0, 6)))
    offs, total = assign_arena(sizes, live)
    names = list(sizes)
    for i, p in enumerate(names):
        for q in names[i + 1 :]:
            if live[p][1] < live[q][0] or live[q][1] < live[p][0]:
                continue
            assert offs[p] + sizes[p] <= offs[q] or offs[q] + sizes[q] <= offs[p]
    assert total <= sum(-(-s // 64) * 64 for s in sizes.values())


def test_plan_fuses_and_reuses_the_arena(tmp_path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    b1 = rng.standard_normal((16,)).astype(np.float32)
    tensors = {
        n: {"encoding": "dense", "shape": list(a.shape), "parts": {"value": f"{n}:value"}}
        for n, a in (("w1", w1), ("w2", w2), ("b1", b1))
    }
    zero = {"lit": 0.0, "dtype": "float32"}
    nodes = [
        {"op": "linear", "in": ["input"], "out": "h", "weight": "w1"},
        {"op": "reshape", "in": ["b1"], "out": "b", "shape": [1, 16]},
        {"op": "add", "in": ["h", "b"], "out": "hb"},
        {"op": "max", "in": ["hb", zero], "out": "r"},
        {"op": "linear", "in": ["r"], "out": "y", "weight": "w2"},
    ]
    parts = {"w1:value": w1, "w2:value": w2, "b1:value": b1}
    p = _write(tmp_path / "mlp.jcx", nodes, ["y"], (8,), tensors, parts)
    rt = runtime.load(p, num_threads=1, autotune=False)  # no measured choices: fixed structure
    plan = rt.plan
    assert [n.kernel for n in plan.nodes][1:4] == [
        "folded at load",
        "fused into step 0",
        "fused into step 0",
    ]
    assert plan.nodes[0].kernel.endswith("+bias+relu") and len(plan.steps) == 2
    assert plan.flops == 2 * 8 * 16 + 2 * 16 + 2 * 16 * 4  # linear, add, max, linear
    x = rng.standard_normal((5, 8)).astype(np.float32)
    want = np.maximum(x @ w1 + b1, 0) @ w2
    for _ in range(2):  # the arena is reused: a second run gives the same answer
        np.testing.assert_allclose(rt.run(x), want, rtol=1e-5, atol=1e-6)
    assert rt.plan_for(5).arena_bytes >= 5 * 4 * (8 + 4)
    y1 = rt.run(x[:1])
    np.testing.assert_allclose(y1, want[:1], rtol=1e-5, atol=1e-6)
    tuned = runtime.load(p, num_threads=1)  # may fuse both layers into one chain step
    assert len(tuned.plan.steps) in (1, 2)
    np.testing.assert_allclose(tuned.run(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("autotune", [False, True])
def test_per_channel_affine_chain_is_fused_into_packed_weights(tmp_path, autotune):
    """Inference batch norm after a compressed kernel (export folds it only into float kernels):
    ((x @ W - mean) * s + beta) then ReLU is one step, on the packed kernel or a scaled copy."""
    from jaxcompress_kernels.format import encodings as enc

    rng = np.random.default_rng(3)
    k, n = 64, 128
    codes = rng.integers(-7, 8, (k, n)).astype(np.int32)
    sc = (rng.random((1, n)) + 0.5).astype(np.float32)
    entry, parts = enc.encode_packed(
        (k, n), codes, sc, None, bits=4, symmetric=True, group_size=None
    )
    w = (codes * sc).astype(np.float32)
    mean, s, beta = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    tensors = {"w": {**entry, "parts": {r: f"w:{r}" for r in parts}}}
    stored = {f"w:{r}": a for r, a in parts.items()}
    for name, v in (("mean", mean), ("s", s), ("beta", beta)):
        tensors[name] = {"encoding": "dense", "shape": [n], "parts": {"value": f"{name}:value"}}
        stored[f"{name}:value"] = v
    zero = {"lit": 0.0, "dtype": "float32"}
    nodes = [
        {"op": "linear", "in": ["input"], "out": "h", "weight": "w"},
        {"op": "sub", "in": ["h", "mean"], "out": "a"},
        {"op": "mul", "in": ["a", "s"], "out": "b"},
        {"op": "add", "in": ["b", "beta"], "out": "c"},
        {"op": "max", "in": ["c", zero], "out": "y"},
    ]
    p = _write(tmp_path / "bn.jcx", nodes, ["y"], (k,), tensors, stored)
    rt = runtime.load(p, num_threads=1, autotune=autotune)
    assert len(rt.plan.steps) == 1 and "+affine+bias+relu" in rt.plan.steps[0][1]
    x = rng.standard_normal((3, k)).astype(np.float32)
    want = np.maximum((x.astype(np.float64) @ w - mean) * s + beta, 0)
    np.testing.assert_allclose(rt.run(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dims, m", [([640, 128, 8, 128, 640], 1), ([20, 7, 1, 5], 3)])
def test_mlp_chain_matches_layer_by_layer(dims, m):
    from jaxcompress_kernels._graph_kernels import mlp_chain

    rng = np.random.default_rng(len(dims) + m)
    layers, want = [], None
    x = rng.standard_normal((m, dims[0])).astype(np.float32)
    h = x.astype(np.float64)
    for i in range(len(dims) - 1):
        w = rng.standard_normal((dims[i], dims[i + 1])).astype(np.float32)
        b = None if i == 1 else rng.standard_normal(dims[i + 1]).astype(np.float32)
        act = (1, 0, 2, 1)[i % 4]
        layers.append((w, b, act))
        h = h @ w + (0 if b is None else b)
        h = np.maximum(h, 0) if act else h
        h = np.minimum(h, 6) if act == 2 else h
    want = h
    y = np.empty((m, dims[-1]), np.float32)
    mlp_chain(layers, x, y)()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_fused_float_chain_reads_its_input_before_writing_overlapping_output(tmp_path):
    """The arena may give a fused chain's output the memory of its input (dead after the first
    layer of the unfused plan): batches of several rows must still be exact."""
    rng = np.random.default_rng(11)
    dims, tensors, parts, nodes, ws, prev = [40, 32, 24, 10], {}, {}, [], [], "input"
    zero = {"lit": 0.0, "dtype": "float32"}
    for i in range(3):
        w = rng.standard_normal((dims[i], dims[i + 1])).astype(np.float32)
        ws.append(w)
        tensors[f"w{i}"] = {
            "encoding": "dense", "shape": list(w.shape), "parts": {"value": f"w{i}:value"}
        }  # fmt: skip
        parts[f"w{i}:value"] = w
        nodes.append({"op": "linear", "in": [prev], "out": f"h{i}", "weight": f"w{i}"})
        prev = f"h{i}"
        if i < 2:
            nodes.append({"op": "max", "in": [prev, zero], "out": f"r{i}"})
            prev = f"r{i}"
    p = _write(tmp_path / "chain.jcx", nodes, [prev], (40,), tensors, parts)
    rt = runtime.load(p, num_threads=1)
    for m in (1, 3, 7):
        x = rng.standard_normal((m, 40)).astype(np.float32)
        h = x.astype(np.float64)
        for i, w in enumerate(ws):
            h = h @ w
            h = np.maximum(h, 0) if i < 2 else h
        np.testing.assert_allclose(rt.run(x), h, rtol=1e-5, atol=1e-5 * np.abs(h).max())
