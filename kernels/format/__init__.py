"""The artifact format's single home (JAX-free): op specs, weight encodings, the container."""

from jaxcompress_kernels.format import container, encodings, ops

__all__ = ["container", "encodings", "ops"]
