"""The project's error types (defined JAX-free in the edge package, re-exported here) and the
interruption a study runner raises."""

from jaxcompress_kernels.errors import (
    ArtifactError,
    DataError,
    JaxCompressError,
    JaxCompressTypeError,
    JaxCompressValueError,
)

__all__ = [
    "StageInterrupted",
    "ArtifactError",
    "DataError",
    "JaxCompressError",
    "JaxCompressTypeError",
    "JaxCompressValueError",
]


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C (``KeyboardInterrupt``) arrived while the named study stage ran.

    A study runner re-raises the interrupt as this subclass so that the command line can say
    which stage stopped (``jaxcompress run`` prints one line and exits with 130); code that
    catches ``KeyboardInterrupt`` still catches it.

    Attributes:
      stage: the name of the stage that was running.
    """

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage
