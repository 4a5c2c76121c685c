"""Reference models (Flax nnx; linen twins in :mod:`jaxcompress.models.linen`)."""

from jaxcompress.models import linen
from jaxcompress.models._functional import ApplyFn, functional
from jaxcompress.models._lm import CharLM, char_lm_mappings
from jaxcompress.models._mlperf import (
    DSCNN,
    MLPERF_TINY,
    FCAutoEncoder,
    MobileNetV1VWW,
    ResNet8,
    count_macs,
    count_params,
    mlperf_tiny_summary,
)
from jaxcompress.models._nnx import CNN1D, MLP, MLP1D, LeNet5, LeNet300100, TinyTransformer

__all__ = [
    "ApplyFn",
    "CNN1D",
    "CharLM",
    "DSCNN",
    "FCAutoEncoder",
    "LeNet5",
    "LeNet300100",
    "MLP",
    "MLP1D",
    "MLPERF_TINY",
    "MobileNetV1VWW",
    "ResNet8",
    "TinyTransformer",
    "char_lm_mappings",
    "count_macs",
    "count_params",
    "functional",
    "linen",
    "mlperf_tiny_summary",
]
