"""jaxcompress.export: capture a model's graph, write one verified artifact, export to ONNX.

The edge side reads artifacts without JAX: ``jaxcompress_kernels.artifact.load`` and
``jaxcompress_kernels.runtime.Runtime``. See ``docs/export.md``.
"""

from jaxcompress.export._artifact import ExportInfo, reference_output, save
from jaxcompress.export._capture import SUPPORTED_PRIMITIVES, CapturedGraph, capture
from jaxcompress.export._onnx import (
    ORT_OPTIONS,
    CrossCheck,
    cross_check,
    onnx_session,
    save_onnx,
    to_onnx,
)

__all__ = [
    "ORT_OPTIONS",
    "SUPPORTED_PRIMITIVES",
    "CapturedGraph",
    "CrossCheck",
    "ExportInfo",
    "capture",
    "cross_check",
    "onnx_session",
    "reference_output",
    "save",
    "save_onnx",
    "to_onnx",
]
