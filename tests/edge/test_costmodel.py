"""The calibrated cost model: neutral = roofline, datasheet profiles, deterministic calibration."""

from __future__ import annotations

import dataclasses
import math

import pytest

from jaxcompress._core import JaxCompressValueError
from jaxcompress.edge import (
    CostParams,
    DeviceProfile,
    EdgeGraph,
    Op,
    chain_graph,
    get_profile,
    profile_from_datasheet,
    project,
)
from jaxcompress.edge._calibrate import Measurement, fit_cost_model
from jaxcompress.edge._costmodel import (
    HOST_FIXED_FEATURES,
    HOST_UNIT_FEATURES,
    class_efficiency,
    kernel_family,
    op_class,
    op_cost,
    step_features,
    weight_format,
)


def _conv_graph(encoding="dense", bits=32, kernel=""):
    """input (1,8,8,4) -> conv 3x3 4->8 -> add (fused) -> depthwise conv -> linear."""
    ops = (
        Op(
            "c1",
            "conv",
            ("x",),
            (1, 8, 8, 8),
            flops=2 * 64 * 36 * 8,
            param_bytes=36 * 8 * 4,
            weight="w1",
            weight_elements=36 * 8,
            weight_bits=32,
            encoding="dense",
            kernel="conv(f32)",
        ),
        Op("a1", "add", ("c1",), (1, 8, 8, 8), flops=512, kernel="fused into step 0"),
        Op(
            "d1",
            "conv",
            ("a1",),
            (1, 8, 8, 8),
            flops=2 * 64 * 9 * 8,
            param_bytes=72 * 4,
            weight="w2",
            groups=8,
            weight_elements=72,
            weight_bits=32,
            encoding="dense",
            kernel="conv(f32)",
        ),
        Op("r", "reshape", ("d1",), (1, 512), alias=True),
        Op(
            "l1",
            "linear",
            ("r",),
            (1, 10),
            flops=2 * 512 * 10,
            param_bytes=5120 * bits // 8,
            weight="w3",
            weight_elements=5120,
            weight_bits=bits,
            encoding=encoding,
            kernel=kernel,
        ),
    )
    return EdgeGraph("x", (1, 8, 8, 4), "float32", ops, ("l1",))


def _toy(**kw):
    base = dict(
        name="toy",
        description="",
        peak_flops=1e8,
        bandwidth=4e8,
        ram_bytes=None,
        flash_bytes=None,
        active_power_w=None,
        weights_in="flash",
        core_class="cortex-m4f",
        clock_hz=1e8,
    )
    base.update(kw)
    return DeviceProfile(**base)


def test_op_classes_and_formats():
    g = _conv_graph()
    assert [op_class(o) for o in g.ops] == ["conv", "elementwise", "dwconv", "view", "linear"]
    assert weight_format(g.ops[0]) == "float32"
    assert weight_format(_conv_graph("packed", 4).ops[-1]) == "packed"
    assert weight_format(_conv_graph("packed", 8).ops[-1]) == "int8"
    assert weight_format(_conv_graph("csr", 32).ops[-1]) == "sparse"


@pytest.mark.parametrize("graph", [_conv_graph(), chain_graph(100, [(1e6, 10, 50), (10, 1e5, 5)])])
def test_neutral_parameters_reduce_to_the_roofline(graph):
    dev = _toy()
    pr = project(graph, dev, params=CostParams())
    for o, i in zip(pr.ops, range(len(graph.ops)), strict=True):
        op = graph.ops[i]
        if op.alias:
            continue
        from jaxcompress.edge import op_bytes

        expected = max(op.flops / dev.peak_flops, op_bytes(graph, i) / dev.bandwidth)
        assert o.seconds == pytest.approx(expected, rel=1e-12)
        assert o.lower_bound_s == pytest.approx(expected, rel=1e-12)
    assert pr.total_s == pytest.approx(pr.lower_bound_s, rel=1e-12)
    assert pr.status.startswith("uncalibrated lower bound")


def test_overheads_add_per_step_and_never_undercut_the_roofline():
    g = _conv_graph()
    dev = _toy()
    neutral = project(g, dev, params=CostParams())
    base = neutral.total_s
    pr = project(g, dev, params=CostParams(op_overhead_s=1e-3, graph_overhead_s=2e-3))
    # 3 executed steps (c1, d1, l1): the fused add (its work is in its step) and the reshape
    # view pay no overhead
    assert pr.ops[1].seconds == 0.0
    assert pr.total_s == pytest.approx(base - neutral.ops[1].seconds + 5e-3, rel=1e-9)
    slow = project(g, dev, params=CostParams(efficiency={"conv": 0.5, "dwconv": 0.5}))
    assert slow.total_s > base and slow.lower_bound_s == pytest.approx(base)


def test_decode_and_sparse_costs_explain_slower_compressed_ops():
    dev = _toy()
    cp = CostParams(decode_cycles_per_weight={"packed": 4.0}, sparse_efficiency=0.25)
    dense = project(_conv_graph(), dev, params=cp)
    packed = project(_conv_graph("packed", 4), dev, params=cp)
    assert packed.ops[-1].decode_s == pytest.approx(5120 * 4 / dev.clock_hz)
    assert packed.ops[-1].seconds > dense.ops[-1].seconds
    assert any("decoding the weights" in n for n in packed.notes)
    sparse = project(_conv_graph("csr", 32), dev, params=cp)
    assert any("sparse" in n for n in sparse.notes)


def test_calibrated_and_uncalibrated_status():
    g = _conv_graph()
    mcu = project(g, "stm32l4r5")
    assert mcu.calibrated and mcu.status.startswith("calibrated: median |error|")
    assert "cortex-m4f" in mcu.status and mcu.total_s >= mcu.lower_bound_s
    rpi = project(g, "rpi4")
    assert not rpi.calibrated and rpi.status.startswith("uncalibrated lower bound")
    assert rpi.total_s == pytest.approx(rpi.lower_bound_s)
    # a new board of a calibrated class, from its datasheet alone
    new = profile_from_datasheet(
        "my-m7", {"core_class": "cortex-m7", "clock_hz": 480e6, "ram_bytes": 1 << 20}
    )
    assert new.peak_flops == 960e6 and new.bandwidth == 480e6 * 8
    pn, ph = project(g, new), project(g, "stm32h7a3")
    assert pn.calibrated and pn.total_s < ph.total_s  # same class, faster clock


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"clock_hz": 1e8, "ram_bytes": 1}, "'core_class' is missing"),
        ({"core_class": "cortex-m4f", "ram_bytes": 1}, "'clock_hz' is missing"),
        ({"core_class": "cortex-m4f", "clock_hz": 0, "ram_bytes": 1}, "clock_hz"),
        ({"core_class": "cortex-m4f", "clock_hz": -5.0, "ram_bytes": 1}, "clock_hz"),
        ({"core_class": "cortex-m4f", "clock_hz": "fast", "ram_bytes": 1}, "clock_hz"),
        ({"core_class": "cortex-m4f", "clock_hz": math.nan, "ram_bytes": 1}, "clock_hz"),
        ({"core_class": "cortex-m4f", "clock_hz": 1e8, "ram_bytes": -1}, "'ram_bytes' is negative"),
        (
            {"core_class": "cortex-m4f", "clock_hz": 1e8, "ram_bytes": 1, "flash_bytes": -2},
            "'flash_bytes' is negative",
        ),
        ({"core_class": "z80", "clock_hz": 1e8, "ram_bytes": 1}, "unknown core class 'z80'"),
        ({"core_class": None, "clock_hz": 1e8, "ram_bytes": 1}, "'core_class'"),
        ({"core_class": "cortex-m4f", "clock_hz": None, "ram_bytes": 1}, "'clock_hz'"),
        (
            {
                "core_class": "cortex-m4f",
                "clock_hz": 1e8,
                "ram_bytes": 1,
                "flash_wait_states": -1,
                "flash_read_bytes": 8,
            },
            "'flash_wait_states' must be an int >= 0",
        ),
        (
            {
                "core_class": "cortex-m4f",
                "clock_hz": 1e8,
                "ram_bytes": 1,
                "flash_wait_states": 2,
                "flash_read_bytes": 0,
            },
            "'flash_read_bytes' must be an int >= 1",
        ),
        (
            {"core_class": "cortex-m4f", "clock_hz": 1e8, "ram_bytes": 1, "flash_wait_states": 2},
            "'flash_read_bytes' is missing",
        ),
        (
            {"core_class": "cortex-m4f", "clock_hz": 1e8, "ram_bytes": 1, "flash_clock_hz": 0},
            "'flash_clock_hz' must be a positive number",
        ),
        ({"core_class": "cortex-m4f", "clock_hz": 1e8, "ram_bytes": 1, "mhz": 3}, "unknown field"),
    ],
)
def test_datasheet_profile_errors(spec, match):
    with pytest.raises(JaxCompressValueError, match=match):
        profile_from_datasheet("board", spec)


def test_calibration_is_deterministic_and_recovers_known_parameters():
    graphs = {
        "a": _conv_graph(),
        "b": chain_graph(4000, [(2e6, 4000, 2000), (4e4, 400_000, 100)]),
    }
    profiles = {
        "m4": _toy(name="m4"),
        "m7": _toy(name="m7", core_class="cortex-m7", clock_hz=2e8, peak_flops=4e8),
    }
    profiles["m4"] = _toy(name="m4", flash_wait_states=3, flash_read_bytes=8)
    truth = {"cortex-m4f": 0.3, "cortex-m7": 0.6}
    rows = []
    for b, p in profiles.items():
        for m, g in graphs.items():
            for eng, f in (("ref", 1.0), ("fast", 0.8)):
                cp = CostParams(
                    efficiency=class_efficiency(p.core_class, truth[p.core_class]),
                    out_overhead_macs=10.0,
                    flash_stream_factor=1.5,
                    engine_factor=f,
                    dtype="int8",
                )
                rows.append(Measurement(b, m, eng, project(g, p, params=cp).total_s))
    # a light ridge: the prior (flash factor 1) must not mask what the data determine
    fit1 = fit_cost_model(rows, graphs, profiles, reference_engine="ref", ridge=1e-3)
    fit2 = fit_cost_model(
        list(rows), dict(graphs), dict(profiles), reference_engine="ref", ridge=1e-3
    )
    assert fit1 == fit2
    assert fit1.n_parameters == 2 + 2 + 1
    for c, e in truth.items():
        assert fit1.efficiency[c] == pytest.approx(e, rel=0.05)
    assert fit1.engine_factor["fast"] == pytest.approx(0.8, rel=0.05)
    assert fit1.flash_stream_factor == pytest.approx(1.5, rel=0.1)
    with pytest.raises(JaxCompressValueError, match="unknown board"):
        fit_cost_model(
            [dataclasses.replace(rows[0], board="nope")], graphs, profiles, reference_engine="ref"
        )


def test_host_projection_carries_its_measured_status():
    host = get_profile("host")
    assert host.cost is not None and host.cost.step_costs["step"] > 0
    assert host.cost.graph_overhead_s > 0
    pr = project(_conv_graph(), host)
    assert pr.calibrated and pr.status.startswith("calibrated by measurement on this host")


def test_integer_ops_get_their_float_twins_classes():
    def op(name, kind, groups=1):
        return Op(name, kind, ("x",), (1, 4, 4, 8), dtype="int8", groups=groups)

    got = [
        op_class(op("a", "qconv2d")),
        op_class(op("b", "qconv2d", groups=8)),
        op_class(op("c", "qlinear")),
        op_class(op("d", "qadd")),
        op_class(op("e", "qavg_pool2d")),
        op_class(op("f", "quantize")),
    ]
    assert got == ["conv", "dwconv", "linear", "elementwise", "pool", "elementwise"]


def _linear_graph(nbytes=10_000):
    op = Op(
        "l1",
        "qlinear",
        ("x",),
        (1, 10),
        dtype="int8",
        flops=2 * nbytes * 1.0,
        param_bytes=nbytes,
        weight="w",
        weight_elements=nbytes,
        weight_bits=8,
        encoding="dense",
        kernel="qgemm(int8)",
    )
    return EdgeGraph("x", (1, nbytes // 10), "int8", (op,), ("l1",))


def test_flash_read_term_is_the_datasheet_wait_states_per_streamed_weight_byte():
    g = _linear_graph()
    flash = _toy(flash_wait_states=4, flash_read_bytes=16)
    assert flash.flash_cycles_per_byte == pytest.approx(5 / 16)
    cp = CostParams(flash_stream_factor=2.0, dtype="int8")
    pr = project(g, flash, params=cp)
    assert pr.ops[0].stream_s == pytest.approx(10_000 * 2.0 * 5 / 16 / flash.clock_hz)
    assert pr.by_part()["stream"] == pytest.approx(pr.ops[0].stream_s)
    no_flash = project(g, flash, params=CostParams(dtype="int8"))
    assert pr.total_s == pytest.approx(no_flash.total_s + pr.ops[0].stream_s)
    # more wait states (a faster clock on the same flash) cost proportionally more
    slow = project(g, _toy(flash_wait_states=9, flash_read_bytes=16), params=cp)
    assert slow.ops[0].stream_s == pytest.approx(2 * pr.ops[0].stream_s)
    # no flash term without the datasheet fields, with weights in RAM, or with factor 0
    assert project(g, _toy(), params=cp).ops[0].stream_s == 0.0
    ram = _toy(weights_in="ram", flash_wait_states=4, flash_read_bytes=16)
    assert project(g, ram, params=cp).ops[0].stream_s == 0.0
    neutral = project(g, flash, params=CostParams())
    assert neutral.total_s == pytest.approx(neutral.lower_bound_s)
    # conv weights are reused over the output positions: not streamed
    assert project(_conv_graph(), flash, params=cp).ops[0].stream_s == 0.0


def test_datasheet_flash_fields_reach_the_projection():
    spec = {"core_class": "cortex-m33", "clock_hz": 160e6, "ram_bytes": 786432}
    plain = profile_from_datasheet("u5-like", spec)
    flash = profile_from_datasheet(
        "u5-like", {**spec, "flash_wait_states": 4, "flash_read_bytes": 16}
    )
    assert plain.flash_cycles_per_byte is None and flash.flash_cycles_per_byte == 5 / 16
    # a flash on a bus at half the core clock: its wait states cost twice the core cycles
    h743 = profile_from_datasheet(
        "h743-like",
        {
            "core_class": "cortex-m7",
            "clock_hz": 480e6,
            "ram_bytes": 1 << 20,
            "flash_wait_states": 4,
            "flash_read_bytes": 32,
            "flash_clock_hz": 240e6,
        },
    )
    assert h743.flash_cycles_per_byte == pytest.approx(2 * 5 / 32)
    assert h743.sources["flash_clock_hz"]
    g = _linear_graph(100_000)
    assert project(g, flash).total_s > project(g, plain).total_s
    # the shipped MCU profiles carry their flash read cost with a source
    for name in ("stm32l4r5", "stm32h7a3", "stm32u575", "stm32u585"):
        p = get_profile(name)
        assert p.flash_cycles_per_byte > 0
        assert "wait states" in p.sources["flash_wait_states"]
        assert p.sources["flash_read_bytes"]


def test_linear_layers_use_the_class_instruction_count_ratio():
    eff = class_efficiency("cortex-m4f", 0.3)
    assert eff["conv"] == 0.3 and eff["linear"] == pytest.approx(0.3 / 1.44)
    assert class_efficiency("cortex-a72", 0.5)["linear"] == 0.5  # no ratio given: 1


# ---- the host: measured per-kernel-family costs (step_costs) ------------------------------------

_HOST_COSTS = {f: (i + 1) * 1e-6 for i, f in enumerate(HOST_FIXED_FEATURES)} | {
    f: (i + 1) * 1e-12 for i, f in enumerate(HOST_UNIT_FEATURES)
}


def _host_params():
    return CostParams(
        graph_overhead_s=3e-6, op_overhead_s=0.25e-6, memory_ceiling=False, step_costs=_HOST_COSTS
    )


def _lin(name, inp, kernel, *, encoding="dense", bits=32, flops=None, k=64, n=32):
    return Op(
        name,
        "linear",
        (inp,),
        (1, n),
        flops=2 * k * n if flops is None else flops,
        weight=f"w_{name}",
        weight_elements=k * n,
        weight_bits=bits,
        encoding=encoding,
        kernel=kernel,
        param_bytes=99,
    )


def _host_cost(g, i):
    return op_cost(
        g, i, peak_flops=1e9, bandwidth=1e9, clock_hz=None, int8_ratio=1.0, params=_host_params()
    )


def test_host_cost_of_compressed_ops_uses_their_kernel_familys_constants():
    ops = (
        _lin("a", "x", "spmm_csr(int8, density=0.100)", encoding="csr", bits=8, flops=410),
        _lin("b", "a", "qmatmul(4-bit, g=32)", encoding="packed", bits=4),
        _lin("c", "b", "matmul(f32), decoded csr", encoding="csr", bits=8, flops=410),
        _lin("d", "c", "spmm_nm(2:4, 4-bit per-channel)", encoding="nm", bits=4, flops=2048),
        _lin("e", "d", "codebook_matmul(4-bit, 16 centroids, LUT)", encoding="codebook", bits=4),
    )
    g = EdgeGraph("x", (1, 64), "float32", ops, ("e",))
    c = dict(_HOST_COSTS, step=0.25e-6)  # a kernel step: the run loop's time, no NumPy step cost
    bw = c["bytes:weights"]
    dense = 2.0 * 64 * 32
    want = [
        # the CSR kernel: its nonzero FLOPs, the rows of W it walks (M x K), its stored bytes
        c["step"] + c["mac:csr"] + 410 * c["flops:csr"] + 64 * c["rows:csr"] + 99 * bw,
        c["step"] + c["mac:qmatmul"] + dense * c["flops:qmatmul"] + 99 * bw,
        # decoded to float32 at load: the dense kernel's constants and the dense FLOPs
        c["step"] + c["mac"] + dense * c["flops:linear"] + 4 * 64 * 32 * bw,
        c["step"] + c["mac:nm"] + 2048 * c["flops:nm"] + 99 * bw,
        c["step"] + c["mac:codebook"] + dense * c["flops:codebook"] + 99 * bw,
    ]
    got = [_host_cost(g, i).seconds for i in range(len(ops))]
    assert got == pytest.approx(want, rel=1e-12)
    assert [kernel_family(o) for o in ops] == ["csr", "qmatmul", "float", "nm", "codebook"]
    # fixed parts are the overhead, per-unit parts the compute
    oc = _host_cost(g, 0)
    assert oc.overhead_s == pytest.approx(0.25e-6 + c["mac:csr"])
    assert oc.compute_s == pytest.approx(410 * c["flops:csr"] + 64 * c["rows:csr"] + 99 * bw)


def test_host_overheads_counted_once_per_call_and_per_step():
    ops = (
        _lin("a", "x", "mlp_chain(2 layers, f32)"),
        _lin("b", "a", "fused into step 0", k=32),
        Op("r", "reshape", ("b",), (1, 32), alias=True, kernel="view"),
        Op("s", "add", ("r",), (1, 32), flops=32, kernel="add"),
        Op("t", "max", ("s",), (1, 32), flops=32, kernel="fused into step 1"),
    )
    g = EdgeGraph("x", (1, 64), "float32", ops, ("t",))
    pr = project(
        g, DeviceProfile("h", "", 1e9, 1e9, None, None, None, "ram"), params=_host_params()
    )
    c = _HOST_COSTS
    want = (
        3e-6  # per call, once
        + 2 * 0.25e-6  # the run loop, per executed step: the chain and the add
        + c["mac:chain"]  # one kernel call for the chain
        + c["step"]  # one NumPy step for the add
        + (2 * 64 * 32 + 2 * 32 * 32) * c["flops:chain"]  # both layers' FLOPs, chain rate
        + 4 * (64 * 32 + 32 * 32) * c["bytes:weights"]  # and their float32 weights
        + 32 * c["elems:ew"]  # the add (an in-place ufunc: no generic cost)
    )
    assert pr.total_s == pytest.approx(want, rel=1e-12)
    assert pr.by_part()["overhead"] == pytest.approx(
        3e-6 + 2 * 0.25e-6 + c["mac:chain"] + c["step"]
    )
    assert [pr.ops[i].seconds for i in (2, 4)] == [0.0, 0.0]  # view, fused epilogue


def test_host_features_of_transformer_and_integer_ops():
    ops = (
        Op("d", "dot_general", ("x",), (1, 4, 10, 10), flops=6400, kernel="dot_general"),
        Op("m", "reduce_max", ("d",), (1, 4, 10), flops=400, kernel="reduce_max"),
        Op("b", "broadcast_in_dim", ("m",), (1, 4, 10, 1), kernel="broadcast_in_dim"),
        Op("e", "exp", ("d",), (1, 4, 10, 10), flops=400, kernel="exp"),
        Op("v", "div", ("e",), (1, 4, 10, 10), flops=400, kernel="div"),
        Op("t", "transpose", ("v",), (1, 10, 4, 10), kernel="transpose"),
        Op("q", "qlinear", ("t",), (1, 10, 4, 8), dtype="int8", flops=640, kernel="qgemm(int8)"),
        Op("z", "quantize", ("q",), (1, 10, 4, 8), dtype="int8", kernel="quantize(f32->int8)"),
    )
    g = EdgeGraph("x", (1, 4, 10, 8), "float32", ops, ("z",))
    feats = [step_features(g, i) for i in range(len(ops))]
    assert feats[0] == {"step": 1.0, "dot": 1.0, "flops:dot": 6400.0}
    assert feats[1] == {"step": 1.0, "reduce": 1.0, "elems:reduce": 400.0}
    assert feats[2] == {"step": 1.0, "broadcast": 1.0, "elems:move": 40.0}
    assert feats[3] == {"step": 1.0, "elems:ew": 400.0}  # np.exp in place
    assert feats[4] == {"step": 1.0, "generic": 1.0, "elems:ew": 400.0}  # the generic path
    assert feats[5] == {"step": 1.0, "move": 1.0, "elems:move": 400.0}
    assert feats[6] == {"mac:int8": 1.0, "flops:int8": 640.0, "bytes:weights": 0.0}
    assert feats[7] == {"qop": 1.0, "elems:ew": 320.0}


def test_host_step_costs_are_validated():
    with pytest.raises(JaxCompressValueError, match="unknown feature 'nope'"):
        CostParams(step_costs={"nope": 1.0})
    with pytest.raises(JaxCompressValueError, match="must be a number >= 0"):
        CostParams(step_costs={"step": -1.0})
    assert not CostParams(step_costs={"step": 1e-6}).neutral


def test_fused_layers_take_their_steps_kernel_family():
    ops = (
        Op("a", "qlinear", ("x",), (1, 16), dtype="int8", flops=256, kernel="qmlp_chain(2, int8)"),
        Op("b", "qlinear", ("a",), (1, 16), dtype="int8", flops=512, kernel="fused into step 0"),
    )
    g = EdgeGraph("x", (1, 8), "int8", ops, ("b",))
    assert step_features(g, 1) == {"flops:int8": 512.0, "bytes:weights": 0.0}  # no fixed cost
    assert kernel_family(ops[1], ops[0]) == "int8"


def test_host_cost_cache_key_tracks_the_kernel_sources(tmp_path, monkeypatch):
    """An edited kernel with an unchanged version string must not reuse a cached host fit."""
    import jaxcompress_kernels
    from jaxcompress.edge import _hostcal

    (tmp_path / "__init__.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "k.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(jaxcompress_kernels, "__file__", str(tmp_path / "__init__.py"))
    _hostcal._kernels_fingerprint.cache_clear()
    try:
        k1 = _hostcal._key(1)
        _hostcal._kernels_fingerprint.cache_clear()
        assert _hostcal._key(1) == k1  # deterministic
        (tmp_path / "sub" / "k.py").write_text("def f():\n    return 2\n")
        _hostcal._kernels_fingerprint.cache_clear()
        k2 = _hostcal._key(1)
        assert k2 != k1 and "kernels=" in k2
        (tmp_path / "sub" / "notes.txt").write_text("not source")
        _hostcal._kernels_fingerprint.cache_clear()
        assert _hostcal._key(1) == k2  # only Python sources count
    finally:
        _hostcal._kernels_fingerprint.cache_clear()
