"""The full-integer arithmetic reference (`format.quant`) against plain Python ints, and the
artifact reader's checks of quantized graphs (format version 3). JAX-free."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from jaxcompress_kernels import ArtifactError, JaxCompressValueError, artifact
from jaxcompress_kernels.format import container, ops
from jaxcompress_kernels.format import quant as q

from ._qgraphs import cnn_graph, mlp_graph, reference_run


def _py_requantize(acc: int, m: int, r: int) -> int:
    return (acc * m + (1 << (r - 1))) >> r  # Python ints: exact, >> floors


def _py_round_half_even(fr: Fraction) -> int:
    fl = math.floor(fr)
    d = fr - fl
    if d > Fraction(1, 2) or (d == Fraction(1, 2) and fl % 2):
        return fl + 1
    return fl


def test_requantize_matches_python_ints_on_edge_values():
    accs = [2**31 - 1, -(2**31 - 1), -(2**31), 0, 1, -1, 12345, -98765]
    ms = [2**30, 2**31 - 1, 1518500250]
    rs = [1, 2, 31, 32, 61, 62]
    rng = np.random.default_rng(0)
    accs += [int(a) for a in rng.integers(-(2**31), 2**31, 50)]
    ms += [int(a) for a in rng.integers(2**30, 2**31, 10)]
    a = np.array(accs, np.int64)[:, None, None]
    m = np.array(ms, np.int64)[None, :, None]
    r = np.array(rs, np.int64)[None, None, :]
    got = q.requantize(a, m, r)
    want = np.array([[[_py_requantize(x, y, z) for z in rs] for y in ms] for x in accs])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "real", [1.0, 0.5, 0.999999999, 2.0**-31, 3.3e-5, 0.0078125, 1.7, 1e3, 1 - 2.0**-40]
)
def test_quantize_multiplier_is_the_nearest_fixed_point(real):
    m, r = q.quantize_multiplier(real)
    assert 2**30 <= m < 2**31 and 1 <= r <= 62
    f, e = math.frexp(real)
    want_m = _py_round_half_even(Fraction(f) * 2**31)
    want_r = 31 - e
    if want_m == 2**31:
        want_m, want_r = 2**30, want_r - 1
    assert (m, r) == (want_m, want_r)
    assert abs(Fraction(m, 2**r) - Fraction(real)) <= Fraction(1, 2 ** (r + 1))


@pytest.mark.parametrize("real", [0.0, -1.0, math.nan, math.inf, 2.0**31, 2.0**-40])
def test_quantize_multiplier_refuses_bad_ratios(real):
    with pytest.raises(JaxCompressValueError):
        q.quantize_multiplier(real)


def test_quantize_rounds_half_to_even_and_clips():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1e9, -1e9, 0.49999997], np.float32)
    got = q.quantize(x, 1.0, 0)
    np.testing.assert_array_equal(got, [0, 2, 2, 0, -2, 127, -128, 0])
    got = q.quantize(np.array([0.25, 0.75], np.float32), 0.5, 10)
    np.testing.assert_array_equal(got, [10, 12])  # 0.5 -> 0 (even), 1.5 -> 2
    back = q.dequantize(np.array([-128, 0, 127], np.int8), 0.25, -3)
    np.testing.assert_array_equal(back, np.float32([-31.25, 0.75, 32.5]))


def test_qlinear_against_python_ints():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (3, 17)).astype(np.int8)
    w = rng.integers(-127, 128, (17, 5)).astype(np.int8)
    ws = rng.uniform(0.001, 0.05, 5).astype(np.float32)
    b = rng.integers(-5000, 5000, 5).astype(np.int32)
    sx, zx, sy, zy = 0.02, -7, 0.1, 4
    got = q.qlinear(x, sx, zx, w, ws, b, sy, zy, -100, 120)
    for i in range(3):
        for n in range(5):
            acc = sum((int(x[i, k]) - zx) * int(w[k, n]) for k in range(17)) + int(b[n])
            real = float(np.float32(sx)) * float(ws[n]) / float(np.float32(sy))
            m, r = q.quantize_multiplier(real)
            want = min(max(zy + _py_requantize(acc, m, r), -100), 120)
            assert got[i, n] == want


def test_qadd_and_pools_against_python_ints():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (1, 4, 4, 3)).astype(np.int8)
    b = rng.integers(-128, 128, (1, 4, 4, 3)).astype(np.int8)
    got = q.qadd(a, 0.03, 2, b, 0.011, -9, 0.05, 1, qmin=1)
    ma, mb, r = q.add_multipliers(0.03, 0.011, 0.05)
    assert mb == round(float(np.float32(0.011)) / float(np.float32(0.05)) * 2**r)
    for idx in np.ndindex(a.shape):
        acc = (int(a[idx]) - 2) * ma + (int(b[idx]) + 9) * mb + (1 << (r - 1))
        assert got[idx] == min(max(1 + (acc >> r), 1), 127)
    mp = q.qmax_pool2d(a, (3, 3), (2, 2), ((1, 1), (1, 1)))
    assert mp.shape == (1, 2, 2, 3)
    assert mp[0, 0, 0, 0] == a[0, :2, :2, 0].max()  # padding never wins
    av = q.qavg_pool2d(a, 0.03, 2, 0.02, -1, (2, 2), (2, 2), count=4)
    m, r = q.pool_multiplier(0.03, 0.02, 4)
    acc = sum(int(a[0, i, j, 1]) - 2 for i in (2, 3) for j in (0, 1))
    assert av[0, 1, 0, 1] == min(max(-1 + _py_requantize(acc, m, r), -128), 127)
    mean = q.qmean(a, 0.03, 2, 0.02, -1, (1, 2))
    m, r = q.pool_multiplier(0.03, 0.02, 16)
    acc = int((a[0, :, :, 2].astype(np.int64) - 2).sum())
    assert mean[0, 2] == min(max(-1 + _py_requantize(acc, m, r), -128), 127)


def test_qconv2d_matches_im2col_qlinear():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 5, 6, 4)).astype(np.int8)
    w = rng.integers(-127, 128, (3, 3, 4, 6)).astype(np.int8)
    ws = rng.uniform(0.001, 0.02, 6).astype(np.float32)
    y = q.qconv2d(x, 0.02, 3, w, ws, None, 0.3, -2, pads=((1, 1), (1, 1)))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=3)  # zp = real zero
    cols = np.stack(
        [xp[:, i : i + 5, j : j + 6] for i in range(3) for j in range(3)], axis=3
    ).reshape(2, 5, 6, 36)
    want = q.qlinear(cols, 0.02, 3, w.reshape(36, 6), ws, None, 0.3, -2)
    np.testing.assert_array_equal(y, want)
    # depthwise = one group per channel
    wd = rng.integers(-127, 128, (3, 3, 1, 4)).astype(np.int8)
    yd = q.qconv2d(x, 0.02, 3, wd, ws[:4], None, 0.3, -2, groups=4, strides=(2, 2))
    for c in range(4):
        yc = q.qconv2d(
            x[..., c : c + 1],
            0.02,
            3,
            wd[..., c : c + 1],
            ws[c : c + 1],
            None,
            0.3,
            -2,
            strides=(2, 2),
        )
        np.testing.assert_array_equal(yd[..., c], yc[..., 0])


def test_activation_bounds():
    assert q.activation_bounds(0.1, -3, None) == (-128, 127)
    assert q.activation_bounds(0.1, -3, "relu") == (-3, 127)
    assert q.activation_bounds(0.1, -3, "relu6") == (-3, 57)
    assert q.activation_bounds(0.01, 100, "relu6") == (100, 127)


# ---------------------------------------------------------------------------------------------
# the reader


def test_quantized_graph_roundtrips_through_the_reader(tmp_path):
    g = cnn_graph()
    path = g.write(tmp_path / "q.jcx", g.outputs)
    art = artifact.load(path)
    assert art.manifest["format_version"] == container.FORMAT_VERSION == 3
    assert set(art.graph["quant"]) == set(g.quant)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype(np.float32)
    y, y2 = reference_run(*g.manifest(g.outputs), x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert y2.shape == (2, 4) and y2.dtype == np.float32


def _write_raw(path, manifest, parts, monkeypatch):
    # json with NaN allowed: what a hostile writer could produce
    monkeypatch.setattr(
        container,
        "_canonical",
        lambda obj: json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True),
    )
    container.write_artifact(path, manifest, parts)


def _first_rec(g):
    return next(iter(g.quant.values()))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda g: _first_rec(g).update(scale=float("nan")), "malformed"),
        (lambda g: _first_rec(g).update(scale=0.0), "malformed"),
        (lambda g: _first_rec(g).update(scale=-1.0), "malformed"),
        (lambda g: _first_rec(g).update(scale=1e-50), "malformed"),  # float32 flushes to 0
        (lambda g: _first_rec(g).update(zero_point=128), "malformed"),
        (lambda g: _first_rec(g).update(zero_point=1.5), "malformed"),
        (lambda g: g.quant.pop(g.nodes[2]["out"]), "missing quantization record"),
        (lambda g: g.quant.update(ghost=dict(_first_rec(g))), "no graph node"),
        (lambda g: g.nodes[1].update(qmin=-129), "qmin"),
        (lambda g: g.quant[g.nodes[2]["out"]].update(zero_point=7), "differs from its input"),
    ],
)
def test_bad_quant_records_are_refused(tmp_path, monkeypatch, edit, match):
    g = cnn_graph()
    edit(g)
    manifest, parts = g.manifest(g.outputs)
    _write_raw(tmp_path / "bad.jcx", manifest, parts, monkeypatch)
    with pytest.raises(ArtifactError, match=match):
        artifact.load(tmp_path / "bad.jcx")


def test_bad_weights_and_tiny_ratios_are_refused(tmp_path):
    g = mlp_graph()
    wname = g.nodes[1]["weight"]
    g.parts[f"{wname}:value"][0, 0] = -128
    path = g.write(tmp_path / "w.jcx", g.outputs)
    with pytest.raises(ArtifactError, match="-128"):
        artifact.load(path)
    g = mlp_graph()
    g.parts[f"{g.nodes[1]['weight_scale']}:value"][3] = 0.0
    with pytest.raises(ArtifactError, match="weight_scale"):
        artifact.load(g.write(tmp_path / "s.jcx", g.outputs))
    g = mlp_graph()
    g.quant[g.nodes[1]["out"]]["scale"] = 1e30  # s_x s_w / s_y below 2**-32: no multiplier
    with pytest.raises(ArtifactError, match="scale ratio out of range"):
        artifact.load(g.write(tmp_path / "r.jcx", g.outputs))


def test_int8_into_a_float_op_and_int8_outputs_are_refused(tmp_path):
    g = mlp_graph()
    g.nodes.append({"op": "neg", "in": [g.nodes[1]["out"]], "out": "z"})
    with pytest.raises(ArtifactError, match="float op reads int8"):
        artifact.load(g.write(tmp_path / "f.jcx", ["z"]))
    g = mlp_graph()
    with pytest.raises(ArtifactError, match="dequantize"):
        artifact.load(g.write(tmp_path / "o.jcx", [g.nodes[1]["out"]]))


def test_every_quant_op_has_a_spec():
    for name in ops.QUANT_OPS:
        assert name in ops.OPS
