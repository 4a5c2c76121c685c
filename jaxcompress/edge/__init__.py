"""jaxcompress.edge: how a compressed model would run on an edge device.

Latency measured on the host (`measure_latency`), device profiles kept as data with their sources
(`get_profile`, `load_profiles`, `calibrate_host`), a per-op roofline projection (`project`,
always labelled *projected*), planned activation memory and "fits on device" checks (`plan_arena`,
`check_fits`), the Neurosurgeon edge-cloud split planner (`plan_split`, `Link`) and one report over
an artifact (`benchmark`). See ``docs/edge.md``.
"""

from jaxcompress.edge._graph import EdgeGraph, GraphExecutor, Op, chain_graph, graph_from_artifact
from jaxcompress.edge._latency import (
    LatencyStats,
    ThreadInfo,
    measure_latency,
    percentile,
    summarize,
    thread_info,
)
from jaxcompress.edge._memory import ArenaPlan, FitCheck, check_fits, plan_arena
from jaxcompress.edge._profiles import (
    DeviceProfile,
    available_profiles,
    calibrate_host,
    get_profile,
    load_profiles,
)
from jaxcompress.edge._report import AccuracyReport, EdgeReport, SizeReport, benchmark, size_report
from jaxcompress.edge._roofline import OpProjection, Projection, op_bytes, project
from jaxcompress.edge._split import (
    Link,
    SplitPlan,
    SplitRow,
    VirtualClock,
    default_cuts,
    plan_split,
    quantize_activation,
    split_accuracy,
)

__all__ = [
    "AccuracyReport",
    "EdgeReport",
    "SizeReport",
    "benchmark",
    "size_report",
    "ArenaPlan",
    "DeviceProfile",
    "EdgeGraph",
    "FitCheck",
    "GraphExecutor",
    "LatencyStats",
    "Link",
    "Op",
    "OpProjection",
    "Projection",
    "SplitPlan",
    "SplitRow",
    "ThreadInfo",
    "VirtualClock",
    "available_profiles",
    "calibrate_host",
    "chain_graph",
    "check_fits",
    "default_cuts",
    "get_profile",
    "graph_from_artifact",
    "load_profiles",
    "measure_latency",
    "op_bytes",
    "percentile",
    "plan_arena",
    "plan_split",
    "project",
    "quantize_activation",
    "split_accuracy",
    "summarize",
    "thread_info",
]
