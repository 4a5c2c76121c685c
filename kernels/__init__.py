"""jaxcompress edge side: NumPy + Numba kernels and the artifact runtime. Never imports JAX.

Import name: ``jaxcompress_kernels`` (the folder is ``kernels/``; the PyPI name ``kernels`` belongs
to an unrelated project).
"""

from jaxcompress_kernels.errors import (
    ArtifactError,
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
)

__all__ = [
    "ArtifactError",
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
]
