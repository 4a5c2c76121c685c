"""Integer grids: the exact bucket semantics every quantizer in jaxcompress uses.

One table pins the grids down (``b`` = bits, ``s`` = scale, ``Z`` = integer zero point,
``round`` = round half to even, as ONNX ``QuantizeLinear`` and ``jnp.round``)::

  scheme        code range (real code q)       stored int8 ``qvalue``   scale             x -> q
  -----------   ----------------------------   ----------------------   ---------------   -------------------------
  symmetric     [-(2^(b-1)-1), 2^(b-1)-1]      q                        absmax / qmax     clip(round(x / s))
  fixed_point   [-(2^(b-1)-1), 2^(b-1)-1]      q                        2^-f              clip(round(x * 2^f))
  affine        [0, 2^b - 1]                   q - 2^(b-1)              (hi - lo)/(2^b-1) clip(round(x / s) + Z)

  dequantize:   x_hat = s * (qvalue - zero_point)   (zero_point is stored with the same offset as
                qvalue, so the difference is the real q - Z; symmetric/fixed_point store 0)

  b = 8, symmetric:   q in [-127, 127]   (-128 is never produced: the narrow range keeps -x exact)
  b = 4, symmetric:   q in [-7, 7]
  b = 8, affine:      q in [0, 255]      stored as [-128, 127] (= ONNX int8 asymmetric)
  b = 4, affine:      q in [0, 15]       stored as [-8, 7]
  b = 2, symmetric:   q in [-1, 1]       (ternary)

Bucket edges: a real ``x`` goes to code ``k`` iff ``(k - 1/2) s <= x - Z s <= (k + 1/2) s`` with ties
to the even ``k``; values beyond the outermost half-bucket saturate to the end codes. Real 0 is
always a grid point: code 0 (symmetric, fixed point) or ``Z`` (affine, where ``lo <= 0 <= hi`` is
forced before the scale is computed, Jacob et al. 2018 §2.1).

The clip range (where the straight-through estimator passes gradient 1) is
``[s * (qmin - Z), s * (qmax - Z)]`` in real units, inclusive.

Departure from the article's fixed point ``round(w * 2^b)``: the saturation range is the narrow
symmetric one (no ``-2^(b-1)``), the same as the symmetric scheme, so the two schemes share one
integer kernel and negation stays exact.
"""

from __future__ import annotations

from typing import Literal

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "SCHEMES",
    "Scheme",
    "code_range",
    "stored_offset",
    "check_bits",
    "check_scheme",
]

Scheme = Literal["symmetric", "affine", "fixed_point"]
SCHEMES: tuple[str, ...] = ("symmetric", "affine", "fixed_point")
MIN_BITS = 2
MAX_BITS = 8


def check_bits(bits: object) -> int:
    """Return ``bits`` as an int, raising unless it is an integer in 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        try:
            import numpy as np

            if isinstance(bits, np.integer):
                bits = int(bits)
            else:
                raise TypeError
        except TypeError:
            raise JaxCompressTypeError(
                f"{bits=} must be an int in {MIN_BITS}..{MAX_BITS}"
            ) from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise JaxCompressValueError(
            f"{bits=} must be in {MIN_BITS}..{MAX_BITS} (codes are stored in int8; 1-bit binary "
            "sign*mean|w| is not offered because it cannot represent 0 exactly)"
        )
    return bits


def check_scheme(scheme: object) -> str:
    """Raise unless ``scheme`` is one of :data:`SCHEMES`."""
    if scheme not in SCHEMES:
        raise JaxCompressValueError(f"{scheme=} must be one of {SCHEMES}")
    return str(scheme)


def code_range(bits: int, scheme: str) -> tuple[int, int]:
    """The real (unshifted) integer code range ``(qmin, qmax)`` of a scheme; see the table."""
    if scheme == "affine":
        return 0, 2**bits - 1
    qmax = 2 ** (bits - 1) - 1
    return -qmax, qmax


def stored_offset(bits: int, scheme: str) -> int:
    """The constant added to real codes (and zero points) so they fit int8: ``-2^(b-1)`` for affine."""
    return -(2 ** (bits - 1)) if scheme == "affine" else 0
