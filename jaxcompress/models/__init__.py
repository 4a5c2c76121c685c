"""Reference models (Flax nnx; linen twins in :mod:`jaxcompress.models.linen`)."""

from jaxcompress.models import linen
from jaxcompress.models._functional import ApplyFn, functional
from jaxcompress.models._nnx import CNN1D, MLP, MLP1D, LeNet5, LeNet300100, TinyTransformer
from jaxcompress.models._lm import CharLM, char_lm_mappings  # noqa: I001 (kept apart for merges)

__all__ = [
    "ApplyFn",
    "CharLM",
    "CNN1D",
    "LeNet5",
    "LeNet300100",
    "MLP",
    "MLP1D",
    "TinyTransformer",
    "functional",
    "char_lm_mappings",
    "linen",
]
