"""Reference models (Flax nnx; linen twins in :mod:`jaxcompress.models.linen`)."""

from jaxcompress.models import linen
from jaxcompress.models._functional import ApplyFn, functional
from jaxcompress.models._lm import CharLM, char_lm_mappings
from jaxcompress.models._nnx import CNN1D, MLP, MLP1D, LeNet5, LeNet300100, TinyTransformer

__all__ = [
    "ApplyFn",
    "CNN1D",
    "CharLM",
    "LeNet5",
    "LeNet300100",
    "MLP",
    "MLP1D",
    "TinyTransformer",
    "char_lm_mappings",
    "functional",
    "linen",
]
