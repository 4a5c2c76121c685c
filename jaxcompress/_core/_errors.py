"""Re-export of the project's error types (defined JAX-free in the edge package)."""

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
