"""The dynamic-range int8 kernels (`jaxcompress_kernels._dynkernels`) and the runtime's opt-in
``activations="dynamic_int8"`` mode. JAX-free: artifacts are written with the format package.

References are NumPy re-implementations of the documented scheme (per-row / per-image asymmetric
uint8 input quantization, int8 codes, float epilogue) evaluated in float64; the kernels must
match them to float32 rounding, and the float model within the documented quantization bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels import JaxCompressValueError, runtime
from jaxcompress_kernels import _dynkernels as dk
from jaxcompress_kernels.format import encodings as enc
from jaxcompress_kernels.format.container import write_artifact

PATHS = [False, True] if dk.HAS_VNNI else [False]
RTOL = 2e-6  # float32 epilogue vs the float64 reference of the same integers


# ---------------------------------------------------------------------------------------------
# NumPy references


def ref_quantize(x):
    """Rows of float32 ``x`` (M, K) -> (q uint8, scale float32, zero point int) as documented."""
    x = np.asarray(x, np.float32)
    lo = np.minimum(x.min(1), 0).astype(np.float32)
    hi = np.maximum(x.max(1), 0).astype(np.float32)
    s = np.where(hi > lo, (hi - lo) / np.float32(255.0), np.float32(1.0)).astype(np.float32)
    inv = (np.float32(1.0) / s).astype(np.float32)
    zp = np.clip(np.rint(-lo * inv), 0, 255).astype(np.int64)
    q = np.clip(np.rint(x * inv[:, None]) + zp[:, None], 0, 255).astype(np.uint8)
    return q, s, zp


def _act(y, act):
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    return y


def ref_linear(x, codes, scales, bias=None, act=None):
    q, s, zp = ref_quantize(x)
    xd = s[:, None].astype(np.float64) * (q.astype(np.float64) - zp[:, None])
    y = xd @ (codes.astype(np.float64) * scales.astype(np.float64))
    return _act(y + (0 if bias is None else bias), act)


def _patches(x, kh, kw, st, pads, dil):
    b, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    oh = (h + sum(pads[0]) - (kh - 1) * dil[0] - 1) // st[0] + 1
    ow = (w + sum(pads[1]) - (kw - 1) * dil[1] - 1) // st[1] + 1
    cols = np.empty((b, oh, ow, kh * kw * c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * st[0] : i * st[0] + (kh - 1) * dil[0] + 1 : dil[0]]
            win = win[:, :, j * st[1] : j * st[1] + (kw - 1) * dil[1] + 1 : dil[1]]
            cols[:, i, j] = win.reshape(b, -1)
    return cols


def ref_conv(x, codes, scales, kh, kw, st, pads, dil, bias=None, act=None):
    """Per-image quantization, then the float64 conv of the dequantized input."""
    b = x.shape[0]
    q, s, zp = ref_quantize(x.reshape(b, -1))
    xd = (s[:, None].astype(np.float64) * (q.astype(np.float64) - zp[:, None])).reshape(x.shape)
    cols = _patches(xd, kh, kw, st, pads, dil)
    y = cols @ (codes.astype(np.float64) * scales.astype(np.float64))
    return _act(y + (0 if bias is None else bias), act)


def _close(y, want, rtol=RTOL):
    assert y.dtype == np.float32 and y.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(y - want).max())
    assert err <= rtol * scale, (err, scale)


def _bound_linear(x, codes, scales):
    """The documented bound of |y_dyn - y_float| for one layer: (s / 2) sum_k |w[k, c]|."""
    _, s, _ = ref_quantize(x)
    return (s[:, None] / 2) * (np.abs(codes).astype(np.float64) * scales).sum(0)[None, :]


# ---------------------------------------------------------------------------------------------
# kernels


def test_quantize_rows_matches_the_documented_scheme():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 301)).astype(np.float32)
    x[1] = np.abs(x[1])  # after a ReLU: zero point 0
    x[2] = -np.abs(x[2])  # all negative: zero point 255
    x[3] = 0.0  # constant zero: scale 1, zero point 0
    q, s, zp = dk.quantize_rows(x)
    rq, rs, rzp = ref_quantize(x)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(zp, rzp)
    assert zp[1] == 0 and zp[2] == 255 and s[3] == 1.0 and not q[3].any()
    # the dequantized input is within half a step of x
    xd = s[:, None] * (q.astype(np.float32) - zp[:, None])
    assert np.all(np.abs(xd - x) <= s[:, None] * 0.5 + 1e-6)


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize(
    "k, n, m, act",
    [(784, 300, 1, "relu"), (300, 100, 7, None), (5, 3, 2, "relu6"), (33, 70, 7, None)],
)
def test_dyn_linear_matches_reference(vnni, k, n, m, act):
    rng = np.random.default_rng(k + n + m)
    codes = rng.integers(-127, 128, (k, n)).astype(np.int8)
    sc = rng.uniform(0.001, 0.01, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = dk.dyn_weight(codes, sc, vnni=vnni)
    y = dk.dyn_linear(x, w, bias, act)
    _close(y, ref_linear(x, codes, sc, bias, act))
    # against the float model: within the documented bound of the input rounding
    yf = _act(x.astype(np.float64) @ (codes.astype(np.float64) * sc) + bias, act)
    assert np.all(np.abs(y - yf) <= _bound_linear(x, codes, sc) * (1 + 1e-4) + 1e-5)
    # rows are independent: batch 7 equals one row at a time, bit for bit
    for i in range(m):
        np.testing.assert_array_equal(dk.dyn_linear(x[i : i + 1], w, bias, act)[0], y[i])


@pytest.mark.skipif(not dk.HAS_VNNI, reason="needs avx512_vnni to compare both paths")
def test_vnni_and_portable_paths_agree_bit_for_bit():
    rng = np.random.default_rng(5)
    codes = rng.integers(-128, 128, (77, 50)).astype(np.int8)
    sc = rng.uniform(0.01, 0.02, 50).astype(np.float32)
    x = rng.standard_normal((3, 77)).astype(np.float32)
    a = dk.dyn_linear(x, dk.dyn_weight(codes, sc, vnni=True))
    b = dk.dyn_linear(x, dk.dyn_weight(codes, sc, vnni=False))
    np.testing.assert_array_equal(a, b)
    xc = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    cc = rng.integers(-128, 128, (27, 40)).astype(np.int8)
    sc = np.full(40, 0.01, np.float32)
    kw = dict(kernel_hw=(3, 3), pads=((1, 1), (1, 1)))
    for kwidth in (3, None):
        a = dk.dyn_conv2d(xc, dk.dyn_weight(cc, sc, conv=True, cin=3, kw=kwidth, vnni=True), **kw)
        b = dk.dyn_conv2d(xc, dk.dyn_weight(cc, sc, conv=True, cin=3, kw=kwidth, vnni=False), **kw)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize(
    "b, hw, c, n, kern, st, pads, dil",
    [
        (1, (9, 8), 3, 20, (3, 3), (2, 1), ((1, 1), (1, 0)), (1, 1)),
        (7, (6, 6), 5, 6, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
        (2, (10, 4), 2, 33, (3, 1), (1, 1), ((0, 0), (0, 0)), (2, 1)),
        (1, (9, 9), 3, 5, (2, 3), (1, 2), ((1, 0), (2, 1)), (1, 2)),
        (3, (28, 28), 1, 20, (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),
        (1, (4, 4), 16, 64, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ],
)
def test_dyn_conv2d_matches_reference(vnni, b, hw, c, n, kern, st, pads, dil):
    rng = np.random.default_rng(b * 100 + n)
    x = rng.standard_normal((b, *hw, c)).astype(np.float32)
    k = kern[0] * kern[1] * c
    codes = rng.integers(-127, 128, (k, n)).astype(np.int8)
    sc = rng.uniform(0.001, 0.01, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    kw = kern[1] if dil[1] == 1 else None  # window-row packing, else per-tap packing
    w = dk.dyn_weight(codes, sc, conv=True, cin=c, kw=kw, vnni=vnni)
    y = dk.dyn_conv2d(
        x, w, kernel_hw=kern, strides=st, dilation=dil, pads=pads, bias=bias, act="relu"
    )
    want = ref_conv(x, codes, sc, *kern, st, pads, dil, bias, "relu")
    _close(y, want)
    # images are independent: each one alone gives the same result
    for i in range(b):
        yi = dk.dyn_conv2d(
            x[i : i + 1], w, kernel_hw=kern, strides=st, dilation=dil, pads=pads, bias=bias,
            act="relu",
        )  # fmt: skip
        np.testing.assert_array_equal(yi[0], y[i])


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize("dims, m", [([784, 300, 100, 10], 1), ([20, 7, 1, 5], 7)])
def test_dyn_chain_equals_layer_by_layer(vnni, dims, m):
    rng = np.random.default_rng(len(dims) + m)
    layers = []
    for i in range(len(dims) - 1):
        codes = rng.integers(-127, 128, (dims[i], dims[i + 1])).astype(np.int8)
        sc = rng.uniform(0.001, 0.01, dims[i + 1]).astype(np.float32)
        b = None if i == 1 else rng.standard_normal(dims[i + 1]).astype(np.float32)
        layers.append((dk.dyn_weight(codes, sc, vnni=vnni), b, ("relu", None, "relu6")[i % 3]))
    x = rng.standard_normal((m, dims[0])).astype(np.float32)
    h = x
    for w, b, a in layers:
        h = dk.dyn_linear(h, w, b, a)
    np.testing.assert_array_equal(dk.DynChain(layers)(x), h)


def test_kernel_arguments_are_validated():
    with pytest.raises(JaxCompressValueError, match="codes"):
        dk.dyn_weight(np.full((4, 2), 300), np.ones(2))
    with pytest.raises(JaxCompressValueError, match="scales"):
        dk.dyn_weight(np.ones((4, 2), np.int8), np.ones(3))
    w = dk.dyn_weight(np.ones((4, 2), np.int8), np.ones(2))
    with pytest.raises(JaxCompressValueError, match="x.shape"):
        dk.dyn_linear(np.ones((1, 5), np.float32), w)
    with pytest.raises(JaxCompressValueError, match="act"):
        dk.dyn_linear(np.ones((1, 4), np.float32), w, act="gelu")
    with pytest.raises(JaxCompressValueError, match="conv=True"):
        dk.dyn_conv2d(np.ones((1, 2, 2, 1), np.float32), w, kernel_hw=(2, 2))


# ---------------------------------------------------------------------------------------------
# the runtime mode


def _write(path, nodes, outputs, input_shape, tensors, parts, sample_output=None):
    parts = dict(parts)
    parts["__sample__:input"] = np.zeros((1, *input_shape), np.float32)
    parts["__sample__:output"] = (
        np.zeros((1,), np.float32) if sample_output is None else sample_output
    )
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
        "tensors": tensors,
        "sample": {"input": "__sample__:input", "output": "__sample__:output"},
    }
    write_artifact(path, manifest, parts)
    return path


def _add_packed(tensors, parts, name, codes, sc):
    entry, p = enc.encode_packed(
        codes.shape, codes.astype(np.int32), sc[None], None, bits=8, symmetric=True,
        group_size=None,
    )  # fmt: skip
    tensors[name] = {**entry, "parts": {r: f"{name}:{r}" for r in p}}
    parts.update({f"{name}:{r}": a for r, a in p.items()})


def _add_csr(tensors, parts, name, codes, sc):
    entry, p = enc.encode_csr(codes.shape, codes != 0, codes.astype(np.int8), scales=sc)
    tensors[name] = {**entry, "parts": {r: f"{name}:{r}" for r in p}}
    parts.update({f"{name}:{r}": a for r, a in p.items()})


def _add_dense(tensors, parts, name, v):
    tensors[name] = {
        "encoding": "dense",
        "shape": list(v.shape),
        "parts": {"value": f"{name}:value"},
    }
    parts[f"{name}:value"] = v


ZERO = {"lit": 0.0, "dtype": "float32"}


def _mlp_artifact(tmp_path, rng, sparse):
    """linear+bias+relu, linear+bias+relu, linear (int8; the middle one CSR when `sparse`)."""
    dims = [40, 32, 24, 10]
    tensors, parts, nodes, layers = {}, {}, [], []
    prev = "input"
    for i in range(3):
        codes = rng.integers(-127, 128, (dims[i], dims[i + 1])).astype(np.int8)
        if sparse and i == 1:
            codes[rng.random(codes.shape) < 0.8] = 0
        sc = rng.uniform(0.01, 0.05, dims[i + 1]).astype(np.float32)
        b = rng.standard_normal(dims[i + 1]).astype(np.float32)
        (_add_csr if sparse and i == 1 else _add_packed)(tensors, parts, f"w{i}", codes, sc)
        _add_dense(tensors, parts, f"b{i}", b)
        nodes.append({"op": "linear", "in": [prev], "out": f"h{i}", "weight": f"w{i}"})
        nodes.append({"op": "reshape", "in": [f"b{i}"], "out": f"bb{i}", "shape": [1, dims[i + 1]]})
        nodes.append({"op": "add", "in": [f"h{i}", f"bb{i}"], "out": f"a{i}"})
        prev = f"a{i}"
        act = None
        if i < 2:
            nodes.append({"op": "max", "in": [prev, ZERO], "out": f"r{i}"})
            prev, act = f"r{i}", "relu"
        layers.append((codes, sc, b, act))
    sample = _mlp_ref(np.zeros((1, dims[0]), np.float32), layers, False).astype(np.float32)
    p = _write(
        tmp_path / f"mlp{int(sparse)}.jcx", nodes, [prev], (dims[0],), tensors, parts, sample
    )
    return p, layers


def _mlp_ref(x, layers, dynamic):
    h = x.astype(np.float32)
    for codes, sc, b, act in layers:
        if dynamic:
            h = ref_linear(h, codes, sc, b, act).astype(np.float32)
        else:
            h = _act(h.astype(np.float64) @ (codes.astype(np.float64) * sc) + b, act)
    return h


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("autotune", [False, True])
def test_runtime_dynamic_mlp(tmp_path, sparse, autotune):
    rng = np.random.default_rng(11 + sparse)
    p, layers = _mlp_artifact(tmp_path, rng, sparse)
    rt = runtime.load(p, num_threads=1, autotune=autotune, activations="dynamic_int8")
    plan = rt.plan
    assert plan.activations == "dynamic_int8"
    assert len(plan.steps) == 1 and plan.steps[0][1].startswith("dyn_mlp_chain(3 layers")
    assert set(plan.values()) == {plan.steps[0][1]}  # every weight names the chain
    for m in (1, 7):
        x = rng.standard_normal((m, 40)).astype(np.float32)
        y = rt.run(x)
        _close(y, _mlp_ref(x, layers, True), rtol=1e-5)
        yf = _mlp_ref(x, layers, False)
        assert np.abs(y - yf).max() <= 0.05 * np.abs(yf).max()  # quantized, close to float
        if m == 7:  # each example's result does not depend on the rest of its batch
            np.testing.assert_array_equal(rt.run(x[3:4])[0], y[3])
    chk = rt.self_check()  # against the bundled float output: the quantization tolerance
    assert chk.ok and chk.rtol == runtime.DYNAMIC_SELF_CHECK_RTOL and chk.rel > 0
    # the default mode is untouched: exact float activations
    exact = runtime.load(p, num_threads=1, autotune=autotune)
    assert exact.self_check().ok and exact.self_check().rtol == 1e-5
    assert exact.plan.activations == "float"
    assert not any(v.startswith("dyn_") for v in exact.plan.values())
    x = rng.standard_normal((2, 40)).astype(np.float32)
    _close(exact.run(x), _mlp_ref(x, layers, False), rtol=1e-5)


def test_runtime_dynamic_conv_with_pool_and_fc(tmp_path):
    """conv(int8)+bias+relu+maxpool -> reshape -> linear(int8): dyn_qconv then dyn_qgemm."""
    rng = np.random.default_rng(21)
    cin, cout, n = 2, 8, 5
    codes = rng.integers(-127, 128, (3, 3, cin, cout)).astype(np.int8)
    sc = rng.uniform(0.01, 0.05, cout).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    fc = rng.integers(-127, 128, (4 * 4 * cout, n)).astype(np.int8)
    fsc = rng.uniform(0.001, 0.01, n).astype(np.float32)
    tensors, parts = {}, {}
    entry, pp = enc.encode_packed(
        codes.shape, codes.reshape(-1, cout).astype(np.int32), sc[None], None, bits=8,
        symmetric=True, group_size=None,
    )  # fmt: skip
    tensors["wc"] = {**entry, "parts": {r: f"wc:{r}" for r in pp}}
    parts.update({f"wc:{r}": a for r, a in pp.items()})
    _add_packed(tensors, parts, "wf", fc, fsc)
    _add_dense(tensors, parts, "bc", b)
    nodes = [
        {
            "op": "conv", "in": ["input"], "out": "c", "weight": "wc", "kernel": [3, 3, cin, cout],
            "strides": [1, 1], "pads": [[1, 1], [1, 1]], "dilation": [1, 1], "groups": 1,
        },
        {"op": "reshape", "in": ["bc"], "out": "bb", "shape": [1, 1, 1, cout]},
        {"op": "add", "in": ["c", "bb"], "out": "cb"},
        {"op": "max", "in": ["cb", ZERO], "out": "r"},
        {
            "op": "reduce_window_max", "in": ["r"], "out": "pl", "window": [1, 2, 2, 1],
            "strides": [1, 2, 2, 1], "pads": [[0, 0]] * 4,
        },
        {"op": "reshape", "in": ["pl"], "out": "f", "shape": [[1, 0], 4 * 4 * cout]},
        {"op": "linear", "in": ["f"], "out": "y", "weight": "wf"},
    ]  # fmt: skip
    p = _write(tmp_path / "cnn.jcx", nodes, ["y"], (8, 8, cin), tensors, parts)
    try:
        rt = runtime.load(p, num_threads=1, activations="dynamic_int8")
    except Exception as e:  # pragma: no cover - shows the op schema if the graph is malformed
        raise AssertionError(f"artifact refused: {e}") from e
    assert rt.plan["wc"].startswith("dyn_qconv(") and rt.plan["wf"].startswith("dyn_qgemm(")
    for bsz in (1, 7):
        x = rng.standard_normal((bsz, 8, 8, cin)).astype(np.float32)
        y = rt.run(x)
        c = ref_conv(x, codes.reshape(-1, cout), sc, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), b)
        c = np.maximum(c, 0).astype(np.float32)
        pooled = c.reshape(bsz, 4, 2, 4, 2, cout).max(axis=(2, 4))
        want = ref_linear(pooled.reshape(bsz, -1), fc, fsc)
        _close(y, want, rtol=1e-5)
        # the same graph piecewise (run_nodes) runs the same dynamic kernels
        env = rt.run_nodes(rt.initial_env(x), 0, len(rt.nodes), bsz)
        _close(np.asarray(env["y"]), want, rtol=1e-5)


@pytest.mark.parametrize("bad", ["int8", "dynamic", None, 8])
def test_bad_activations_option_is_a_clear_error(tmp_path, bad):
    p, _ = _mlp_artifact(tmp_path, np.random.default_rng(0), False)
    with pytest.raises(JaxCompressValueError, match="activations="):
        runtime.load(p, activations=bad)
    with pytest.raises(JaxCompressValueError, match="activations="):
        runtime.Runtime(p, activations=bad)


def test_float_weights_stay_float_in_dynamic_mode(tmp_path):
    """Only integer-coded weights switch kernels: a float layer keeps the exact float path."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 6)).astype(np.float32)
    tensors, parts = {}, {}
    _add_dense(tensors, parts, "w", w)
    nodes = [{"op": "linear", "in": ["input"], "out": "y", "weight": "w"}]
    p = _write(tmp_path / "f.jcx", nodes, ["y"], (12,), tensors, parts)
    rt = runtime.load(p, activations="dynamic_int8")
    assert not rt.plan["w"].startswith("dyn_")
    x = rng.standard_normal((3, 12)).astype(np.float32)
    _close(rt.run(x), x.astype(np.float64) @ w, rtol=1e-5)
