"""jaxcompress.export: capture a model's graph, write one verified artifact, export to ONNX.

The edge side reads artifacts without JAX: ``jaxcompress_kernels.artifact.load`` and
``jaxcompress_kernels.runtime.Runtime``.
"""

from jaxcompress.export._artifact import ExportInfo, reference_output, save
from jaxcompress.export._capture import SUPPORTED_PRIMITIVES, CapturedGraph, capture

__all__ = [
    "SUPPORTED_PRIMITIVES",
    "CapturedGraph",
    "ExportInfo",
    "capture",
    "reference_output",
    "save",
]
