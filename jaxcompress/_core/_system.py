"""Small infrastructure shared by the JAX side: atomic writes and the machine description.

Both are implemented once, JAX-free, in the edge package (`jaxcompress_kernels.fileio`,
`jaxcompress_kernels.machine`) and re-exported here, as the error types are.
"""

from jaxcompress_kernels.fileio import atomic_write, default_file_mode
from jaxcompress_kernels.machine import cpu_model, machine_info

__all__ = ["atomic_write", "cpu_model", "default_file_mode", "machine_info"]
