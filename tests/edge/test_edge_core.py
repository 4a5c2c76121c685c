"""Edge analyses on hand-made graphs: percentiles, latency, arena, roofline, profiles, split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress._core import JaxCompressValueError
from jaxcompress.edge import (
    DeviceProfile,
    EdgeGraph,
    Link,
    Op,
    chain_graph,
    check_fits,
    get_profile,
    load_profiles,
    measure_latency,
    percentile,
    plan_arena,
    plan_split,
    project,
    summarize,
)

# -- percentiles and latency ------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 10, 25, 50, 90, 95, 99, 100])
@pytest.mark.parametrize(
    "samples", [[3.0], [1.0, 2.0], [5, 1, 4, 2, 3], list(range(101)), [0.1, 0.1, 0.1, 9.0]]
)
def test_percentile_matches_numpy_known(samples, q):
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q), rel=1e-12, abs=0)


def test_percentile_golden_values():
    x = [10.0, 20.0, 30.0, 40.0, 50.0]
    # h = 4 * 0.9 = 3.6 -> 40 + 0.6 * 10
    assert percentile(x, 90) == pytest.approx(46.0)
    assert percentile(x, 50) == 30.0
    s = summarize(x)
    assert (s["n"], s["min"], s["max"], s["mean"]) == (5, 10.0, 50.0, 30.0)
    assert s["std"] == pytest.approx(np.std(x))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=60), st.floats(0, 100))
def test_percentile_matches_numpy_property(xs, q):
    assert percentile(xs, q) == pytest.approx(np.percentile(xs, q), rel=1e-9, abs=1e-9)


def test_percentile_errors():
    with pytest.raises(JaxCompressValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(JaxCompressValueError, match="q="):
        percentile([1.0], 101)


class FakeClock:
    """Each call returns the next tick; a call's duration is the gap between two reads."""

    def __init__(self, durations):
        self.t = 0.0
        self.d = list(durations)
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.t

    def run(self):
        self.t += self.d.pop(0)


def test_measure_latency_phases_with_fake_clock():
    # setup 0.5, first call 0.2, two warm-ups 0.01 each, then 5 steady calls
    clock = FakeClock([0.5, 0.2, 0.01, 0.01, 1.0, 2.0, 3.0, 4.0, 5.0])
    stats = measure_latency(clock.run, setup=lambda: clock.run(), warmup=2, iters=5, clock=clock)
    assert stats.init_s == pytest.approx(0.5)
    assert stats.first_s == pytest.approx(0.2)
    assert stats.warmup_s == pytest.approx(0.02)
    assert stats.samples == pytest.approx((1.0, 2.0, 3.0, 4.0, 5.0))
    assert stats.p90 == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))
    assert stats.headline == stats.p90
    assert (stats.n, stats.min, stats.max) == (5, 1.0, 5.0)
    assert stats.threads.cpu_count >= 1
    if stats.threads.affinity is not None:
        assert len(stats.threads.affinity) >= 1


def test_measure_latency_real_and_errors():
    a = np.ones((32, 32), np.float32)
    stats = measure_latency(lambda: a @ a, warmup=1, iters=7)
    assert stats.n == 7 and 0 < stats.min <= stats.p50 <= stats.p90 <= stats.max
    with pytest.raises(JaxCompressValueError, match="iters"):
        measure_latency(lambda: None, iters=0)
    with pytest.raises(Exception, match="callable"):
        measure_latency(3)


# -- arena ------------------------------------------------------------------------------------


def _dag():
    """x(100) -> a(200) -> b(50); c = a + b (200); r = reshape(c) (alias); d(10) = f(r)."""
    f32 = "uint8"
    ops = (
        Op("a", "layer", ("x",), (200,), f32),
        Op("b", "layer", ("a",), (50,), f32),
        Op("c", "add", ("a", "b"), (200,), f32),
        Op("r", "reshape", ("c",), (10, 20), f32, alias=True),
        Op("d", "layer", ("r",), (10,), f32),
    )
    return EdgeGraph(input="x", input_shape=(100,), input_dtype=f32, ops=ops, outputs=("d",))


def test_arena_hand_computed():
    plan = plan_arena(_dag())
    # lifetimes (op indices): x[-1,0] a[0,2] b[1,2] c[2,4] (extended by its alias r) d[4,5]
    assert plan.lifetimes == {
        "x": (-1, 0, 100),
        "a": (0, 2, 200),
        "b": (1, 2, 50),
        "c": (2, 4, 200),
        "d": (4, 5, 10),
    }
    # live totals per op: -1:100, 0:300, 1:250, 2:450, 3:200, 4:210, 5:10
    assert plan.peak_bytes == 450
    # greedy by size: a@0, c@200 (overlaps a at op 2), x@200 (overlaps a only), b@400, d@0
    assert plan.offsets == {"a": 0, "c": 200, "x": 200, "b": 400, "d": 0}
    assert plan.arena_bytes == 450


def test_arena_placement_is_valid_on_chains():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(1, 1000, rng.integers(1, 8))
        g = chain_graph(int(rng.integers(1, 1000)), [(0, 0, int(s)) for s in sizes])
        plan = plan_arena(g)
        items = [(plan.offsets[k], *v) for k, v in plan.lifetimes.items()]
        for i, (o1, a1, e1, s1) in enumerate(items):
            for o2, a2, e2, s2 in items[i + 1 :]:
                if a1 <= e2 and a2 <= e1:  # live together: must not overlap in memory
                    assert o1 + s1 <= o2 or o2 + s2 <= o1
        chain = [g.input_bytes, *map(int, sizes)]
        assert plan.peak_bytes == max(a + b for a, b in zip(chain, chain[1:], strict=False))
        assert plan.peak_bytes <= plan.arena_bytes


# -- profiles, roofline, fits -----------------------------------------------------------------


def _toy(**kw):
    base = dict(
        name="toy",
        description="round numbers",
        peak_flops=1e9,
        bandwidth=1e9,
        ram_bytes=10_000,
        flash_bytes=1_000_000,
        active_power_w=2.0,
        weights_in="flash",
    )
    base.update(kw)
    return DeviceProfile(**base)


def test_roofline_round_numbers():
    g = chain_graph(1000, [(4e6, 1000, 1000), (1e3, 1_000_000, 500)])
    pr = project(g, _toy())
    assert pr.label == "projected"
    a, b = pr.ops
    # op 0: compute 4e6 / 1e9 = 4 ms; bytes 1000 in + 1000 out + 1000 params = 3 us
    assert (a.flops, a.bytes, a.bound) == (4e6, 3000, "compute")
    assert a.seconds == pytest.approx(4e-3)
    # op 1: compute 1 us; bytes 1000 + 500 + 1e6 -> 1.0015 ms, memory-bound
    assert (b.bytes, b.bound) == (1_001_500, "memory")
    assert b.seconds == pytest.approx(1.0015e-3)
    assert pr.total_s == pytest.approx(5.0015e-3)
    assert pr.energy_j == pytest.approx(2.0 * 5.0015e-3)
    assert project(g, _toy(active_power_w=None)).energy_j is None


def test_alias_and_static_ops_cost_nothing():
    g = _dag()
    pr = project(g, _toy())
    assert pr.ops[3].bytes == 0 and pr.ops[3].seconds == 0.0


def test_fits_checks_and_messages():
    g = chain_graph(1000, [(0, 1_500_000, 4000), (0, 0, 10)])  # arena 5000 B, weights 1.5 MB
    ok = check_fits(g, _toy(flash_bytes=2_000_000))
    assert ok.fits is True and ok.flash_needed == 1_500_000 and ok.ram_needed == 5000
    assert ok.message.startswith("fits on toy")
    no = check_fits(g, _toy(flash_bytes=1_000_000, ram_bytes=4000))
    assert no.fits is False
    assert "flash" in no.message and "RAM" in no.message and "does not fit on toy" in no.message
    ram = check_fits(g, _toy(weights_in="ram", ram_bytes=1_000_000))
    assert ram.fits is False and ram.ram_needed == 1_505_000 and ram.flash_needed == 0
    unknown = check_fits(g, _toy(ram_bytes=None, flash_bytes=2_000_000))
    assert unknown.fits is None and "unknown" in unknown.message


def test_builtin_profiles_have_sources():
    profiles = load_profiles()
    assert {"rpi4", "pixel4-big", "stm32l4r5", "stm32h7a3"} <= set(profiles)
    rpi = profiles["rpi4"]
    assert rpi.peak_flops == 48e9 and rpi.bandwidth == 5.5e9
    assert profiles["pixel4-big"].bandwidth == 34.1e9
    l4 = profiles["stm32l4r5"]
    assert (l4.ram_bytes, l4.flash_bytes, l4.active_power_w) == (640 * 1024, 2 << 20, 0.075)
    assert profiles["stm32h7a3"].active_power_w == 0.14
    for p in profiles.values():
        flash = {"flash_wait_states", "flash_read_bytes"} if p.weights_in == "flash" else set()
        assert set(p.sources) == {
            "peak_flops",
            "bandwidth",
            "ram_bytes",
            "flash_bytes",
            "active_power_w",
            "core_class",
            "clock_hz",
            "cores",
            *flash,
        }
        assert all(s.strip() for s in p.sources.values())
    host = get_profile("host")
    assert host.measured and host.peak_flops > 1e6 and host.bandwidth > 1e6
    with pytest.raises(JaxCompressValueError, match="unknown profile 'nope'"):
        get_profile("nope")


def _profile_file(tmp_path, **override):
    spec = {
        "description": "my board",
        "weights_in": "flash",
        "peak_flops": {"value": 1e8, "source": "datasheet"},
        "bandwidth": {"value": 1e8, "source": "datasheet"},
        "ram_bytes": {"value": 262144, "source": "datasheet"},
        "flash_bytes": {"value": 1048576, "source": "datasheet"},
        "active_power_w": {"value": 0.05, "source": "datasheet"},
    }
    for k, v in override.items():
        if v is None:
            spec.pop(k)
        else:
            spec[k] = v
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"profiles": {"myboard": spec}}))
    return path


def test_user_profile_file(tmp_path):
    profiles = load_profiles(_profile_file(tmp_path))
    assert profiles["myboard"].ram_bytes == 262144 and "rpi4" in profiles
    assert get_profile("myboard", path=_profile_file(tmp_path)).flash_bytes == 1048576


@pytest.mark.parametrize(
    "field",
    [
        "peak_flops",
        "bandwidth",
        "ram_bytes",
        "flash_bytes",
        "active_power_w",
        "weights_in",
        "description",
    ],
)
def test_profile_missing_field_refused(tmp_path, field):
    with pytest.raises(JaxCompressValueError, match=f"'myboard': field '{field}' is missing"):
        load_profiles(_profile_file(tmp_path, **{field: None}))


@pytest.mark.parametrize(
    "field", ["peak_flops", "bandwidth", "ram_bytes", "flash_bytes", "active_power_w"]
)
def test_profile_negative_field_refused(tmp_path, field):
    bad = {field: {"value": -1, "source": "typo"}}
    with pytest.raises(JaxCompressValueError, match=f"field '{field}' is negative"):
        load_profiles(_profile_file(tmp_path, **bad))


def test_profile_other_bad_values_refused(tmp_path):
    with pytest.raises(JaxCompressValueError, match="'peak_flops' must be > 0"):
        load_profiles(_profile_file(tmp_path, peak_flops={"value": 0, "source": "x"}))
    with pytest.raises(JaxCompressValueError, match="'bandwidth' must be a number"):
        load_profiles(_profile_file(tmp_path, bandwidth={"value": None, "source": "x"}))
    with pytest.raises(JaxCompressValueError, match="'ram_bytes' has no source"):
        load_profiles(_profile_file(tmp_path, ram_bytes={"value": 1}))
    with pytest.raises(JaxCompressValueError, match="'weights_in'"):
        load_profiles(_profile_file(tmp_path, weights_in="disk"))
    with pytest.raises(JaxCompressValueError, match="negative"):
        _toy(ram_bytes=-5)


# -- split planner ----------------------------------------------------------------------------

SLOW_EDGE = DeviceProfile(
    name="slow",
    description="",
    peak_flops=1e9,
    bandwidth=1e12,
    ram_bytes=None,
    flash_bytes=None,
    active_power_w=None,
    weights_in="ram",
)
FAST_CLOUD = DeviceProfile(
    name="cloud",
    description="",
    peak_flops=1e13,
    bandwidth=1e13,
    ram_bytes=None,
    flash_bytes=None,
    active_power_w=None,
    weights_in="ram",
)


def _chain():
    # raw input 1 MB; layer0 (0.1 s on the edge) shrinks it to 1 KB; layer1 (1 s) to 10 B
    return chain_graph(1_000_000, [(1e8, 0, 1000), (1e9, 0, 10)])


def test_split_optimum_moves_with_link_speed():
    g = _chain()
    best = {}
    for bps in (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10):
        plan = plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=Link(bandwidth_bps=bps))
        assert [r.label for r in plan.rows] == ["all-cloud", "after layer0 (layer)", "all-edge"]
        # the totals are exactly the closed form
        t = [
            8e6 / bps + 80 / bps + 1.1e9 / 1e13,
            0.1 + 8000 / bps + 80 / bps + 1e9 / 1e13 + 20 / 1e13,
            1.1 + 2e6 / 1e12,
        ]
        for r, want in zip(plan.rows, t, strict=True):
            assert r.total_s == pytest.approx(want, rel=1e-3)
        best[bps] = plan.best.cut
    assert best[1e3] == 2  # slow link: all-edge
    assert best[1e5] == 1  # medium: ship the small activation after layer0
    assert best[1e10] == 0  # fast link, slow edge: all-cloud
    cuts = [best[k] for k in sorted(best)]
    assert cuts == sorted(cuts, reverse=True)  # the cut only moves towards the cloud


def test_split_rows_bytes_privacy_quantization():
    g = _chain()
    plan = plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=Link.mbit(10, rtt_ms=20))
    cloud, mid, edge = plan.rows
    assert (cloud.sent_bytes, cloud.raw_input_leaves_device, cloud.sent_vs_raw) == (
        1_000_000,
        True,
        1.0,
    )
    assert (mid.sent_bytes, mid.raw_input_leaves_device) == (1000, False)
    assert mid.sent_vs_raw == pytest.approx(1e-3)
    assert (edge.sent_bytes, edge.transfer_s, edge.raw_input_leaves_device) == (0, 0.0, False)
    assert mid.transfer_s == pytest.approx(0.02 + 8000 / 1e7 + 80 / 1e7)
    # float32 values: int8 at intermediate cuts (1 byte/element + 4-byte scale), raw input as is
    f = EdgeGraph(
        input="x",
        input_shape=(1, 100),
        input_dtype="float32",
        ops=(
            Op("h", "linear", ("x",), (1, 50), flops=1e4),
            Op("y", "linear", ("h",), (1, 10), flops=1e3),
        ),
        outputs=("y",),
    )
    q = plan_split(f, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=Link.mbit(1), quantize=True)
    assert [r.sent_bytes for r in q.rows] == [400, 50 + 4, 0]
    assert [r.quantized for r in q.rows] == [False, True, False]
    md = q.to_markdown()
    assert "all-edge" in md and "all-cloud" in md and "raw input leaves device" in md


def test_split_skip_connection_sends_every_live_value():
    ops = (
        Op("a", "layer", ("x",), (10,), "uint8"),
        Op("b", "layer", ("a",), (5,), "uint8"),
        Op("c", "add", ("x", "b"), (100,), "uint8"),
    )
    g = EdgeGraph(input="x", input_shape=(100,), input_dtype="uint8", ops=ops, outputs=("c",))
    plan = plan_split(g, edge=[0.0] * 3, cloud=[0.0] * 3, link=Link.mbit(1))
    mid = plan.rows[2]  # after b: the cloud still needs x (skip) and b
    assert set(mid.sent_values) == {"x", "b"} and mid.raw_input_leaves_device
    assert mid.sent_bytes == 105


def test_split_jitter_is_deterministic_and_common():
    g = _chain()
    link = Link(bandwidth_bps=1e6, rtt_s=0.01, jitter_s=0.005)
    p1 = plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=link, seed=3, trials=50)
    p2 = plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=link, seed=3, trials=50)
    p3 = plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=link, seed=4, trials=50)
    assert p1 == p2
    assert p1.rows[0].total_s != p3.rows[0].total_s
    # same draws for every cut: jitter adds the same amount to every transferring row
    extra = [r.transfer_s - (0.01 + 8 * (r.sent_bytes + 10) / 1e6) for r in p1.rows[:2]]
    assert extra[0] == pytest.approx(extra[1]) and extra[0] > 0
    assert p1.rows[0].total_p90_s >= p1.rows[0].total_s * 0.99


def test_split_errors():
    g = _chain()
    with pytest.raises(JaxCompressValueError, match="per-op times"):
        plan_split(g, edge=[0.1], cloud=FAST_CLOUD, link=Link.mbit(1))
    with pytest.raises(JaxCompressValueError, match="cut=5"):
        plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=Link.mbit(1), cuts=[5])
    with pytest.raises(JaxCompressValueError, match="bandwidth_bps"):
        Link(bandwidth_bps=0)
    with pytest.raises(JaxCompressValueError, match="rtt_s"):
        Link(bandwidth_bps=1, rtt_s=-1)
    with pytest.raises(JaxCompressValueError, match="trials"):
        plan_split(g, edge=SLOW_EDGE, cloud=FAST_CLOUD, link=Link.mbit(1), trials=0)
