"""The project's error types, shared by the host side (`jaxcompress`) and the edge side.

They live in the edge package because it is the one with no heavy dependencies: `jaxcompress`
re-exports them, so `except jaxcompress.JaxCompressError` catches errors from both halves.

Every error raised for bad user input is a `JaxCompressError` *and* the matching builtin
(`ValueError` or `TypeError`), so callers that only know the builtins keep working.
"""

from __future__ import annotations

__all__ = [
    "JaxCompressError",
    "JaxCompressValueError",
    "JaxCompressTypeError",
    "DataError",
    "ArtifactError",
]


class JaxCompressError(Exception):
    """Base class of every error jaxcompress raises on purpose."""


class JaxCompressValueError(JaxCompressError, ValueError):
    """An argument has the right type but a bad value (range, shape, divisibility, content)."""


class JaxCompressTypeError(JaxCompressError, TypeError):
    """An argument has the wrong type (not a pytree, integer leaves where floats are needed, ...)."""


class DataError(JaxCompressValueError):
    """A data file is missing, truncated or malformed; the message names the file."""


class ArtifactError(JaxCompressValueError):
    """An exported artifact failed verification (version, checksum, header, truncation)."""
