"""jaxcompress: compress JAX/Flax networks and emulate them on edge devices.

Capability subpackages: :mod:`jaxcompress.pruning`, :mod:`jaxcompress.quantization`,
:mod:`jaxcompress.clustering`, :mod:`jaxcompress.distillation`, :mod:`jaxcompress.data`,
:mod:`jaxcompress.models`, :mod:`jaxcompress.training`. The edge side (no JAX) is the separate
package ``jaxcompress_kernels``.
"""

from jaxcompress._core import (
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
    selected_paths,
    tree_stats,
)

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
    "__version__",
    "selected_paths",
    "tree_stats",
]
