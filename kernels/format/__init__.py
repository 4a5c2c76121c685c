"""The artifact format's single home (JAX-free): op specs, weight encodings, the container."""

from jaxcompress_kernels.format import ops

__all__ = ["ops"]
