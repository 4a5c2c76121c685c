"""jaxcompress.quantization: integer grids, PTQ, QAT (fake quant + STE), observers, sensitivity.

Grid semantics are pinned down in :mod:`jaxcompress.quantization._numerics`. Storage accounting of
quantized (and clustered) trees: ``jaxcompress.clustering.size_report``.
"""

from jaxcompress.quantization._calibration import (
    CalibrationStats,
    LayerStats,
    capture_stats,
    select_calibrated,
)
from jaxcompress.quantization._fake_quant import FakeQuantize, fake_quant, fake_quantize, qat_step
from jaxcompress.quantization._gptq import check_damping, gptq, gptq_params, hessian_inverse_upper
from jaxcompress.quantization._integer import (
    IntegerReference,
    fake_quant_gap_bound,
    integer_reference,
    requantize,
)
from jaxcompress.quantization._numerics import SCHEMES, code_range, stored_offset
from jaxcompress.quantization._observers import (
    OBSERVERS,
    ActivationQuantization,
    ActivationRanges,
    activation_sites,
    observe_activations,
    quantize_activations,
)
from jaxcompress.quantization._ptq import PTQResult, ptq
from jaxcompress.quantization._qarray import QuantizedArray, validate_quantized_array
from jaxcompress.quantization._quantize import (
    QuantSpec,
    dequantize,
    dequantize_params,
    is_compressed,
    qparams_from_range,
    quantize,
    quantize_params,
)
from jaxcompress.quantization._sensitivity import (
    LayerSensitivity,
    SensitivityReport,
    mixed_precision,
    sensitivity,
)
from jaxcompress.quantization._smooth import awq, smooth_quant, smoothing_scales

__all__ = [
    "OBSERVERS",
    "SCHEMES",
    "ActivationQuantization",
    "ActivationRanges",
    "IntegerReference",
    "fake_quant_gap_bound",
    "integer_reference",
    "requantize",
    "CalibrationStats",
    "LayerStats",
    "awq",
    "capture_stats",
    "smooth_quant",
    "smoothing_scales",
    "gptq",
    "check_damping",
    "hessian_inverse_upper",
    "select_calibrated",
    "stored_offset",
    "gptq_params",
    "LayerSensitivity",
    "PTQResult",
    "SensitivityReport",
    "activation_sites",
    "mixed_precision",
    "observe_activations",
    "ptq",
    "quantize_activations",
    "sensitivity",
    "FakeQuantize",
    "QuantSpec",
    "QuantizedArray",
    "code_range",
    "dequantize",
    "dequantize_params",
    "fake_quant",
    "fake_quantize",
    "is_compressed",
    "qat_step",
    "qparams_from_range",
    "quantize",
    "quantize_params",
    "validate_quantized_array",
]
