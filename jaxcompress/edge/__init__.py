"""jaxcompress.edge: how a compressed model would run on an edge device.

Latency measured on the host (`measure_latency`), device profiles kept as data with their sources
(`get_profile`, `load_profiles`, `profile_from_datasheet`, `calibrate_host`), a per-op cost model
per op class and data type whose parameters are fitted per core class on MLPerf Tiny (`project`,
always labelled *projected* and carrying its calibration ``status``; the plain roofline stays as
``lower_bound_s``), planned activation memory and "fits on device" checks (`plan_arena`,
`check_fits`), the Neurosurgeon edge-cloud split planner (`plan_split`, `Link`) and one report over
an artifact (`benchmark`). See ``docs/edge.md``.
"""

from jaxcompress.edge._costmodel import CostParams, OpCost, op_class, weight_format
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
    profile_from_datasheet,
)
from jaxcompress.edge._report import (
    AccuracyReport,
    EdgeReport,
    SizeReport,
    benchmark,
    projection_rows,
    projection_table,
    size_report,
)
from jaxcompress.edge._roofline import (
    UNCALIBRATED,
    OpProjection,
    Projection,
    calibration_status,
    cost_params,
    op_bytes,
    project,
)
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
    "UNCALIBRATED",
    "CostParams",
    "OpCost",
    "calibration_status",
    "cost_params",
    "op_class",
    "profile_from_datasheet",
    "weight_format",
    "AccuracyReport",
    "EdgeReport",
    "SizeReport",
    "benchmark",
    "projection_rows",
    "projection_table",
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
