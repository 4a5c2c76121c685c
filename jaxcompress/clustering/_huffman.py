"""Canonical Huffman coding of integer codes / cluster indices (host-side NumPy, exact round trip).

Used for honest size accounting (Deep Compression §4): the encoded bit length is measured from a
real bitstream, and the code table (one code length per alphabet symbol) is charged too.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

import numpy as np

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError

__all__ = ["HuffmanCode", "huffman_code", "huffman_encode", "huffman_decode", "huffman_bits"]

_LEN_FIELD_BITS = 8  # bits charged per alphabet symbol for its code length in the table


@dataclasses.dataclass(frozen=True)
class HuffmanCode:
    """A canonical prefix code over ``alphabet_size`` symbols.

    Attributes:
      lengths: ``(alphabet_size,)`` code length per symbol; 0 for symbols that never occur.
        Canonical codes follow from the lengths alone, so this is all a decoder needs.
    """

    lengths: tuple[int, ...]

    @property
    def alphabet_size(self) -> int:
        return len(self.lengths)

    @property
    def table_bits(self) -> int:
        """Bits to transmit the table: one 8-bit length per alphabet symbol."""
        return _LEN_FIELD_BITS * self.alphabet_size

    def codes(self) -> np.ndarray:
        """Canonical codewords (as integers, MSB first) per symbol; 0 where length is 0."""
        lengths = np.asarray(self.lengths, np.int64)
        order = sorted((int(lengths[s]), s) for s in range(len(lengths)) if lengths[s] > 0)
        codes = np.zeros(len(lengths), np.int64)
        code, prev = 0, 0
        for i, (ln, s) in enumerate(order):
            if i:
                code = (code + 1) << (ln - prev)
            else:
                code = 0
            codes[s] = code
            prev = ln
        return codes


def _check_symbols(symbols: Any) -> np.ndarray:
    s = np.asarray(symbols)
    if not np.issubdtype(s.dtype, np.integer):
        raise JaxCompressTypeError(f"symbols must be integers, got dtype {s.dtype}")
    s = s.reshape(-1).astype(np.int64)
    if s.size and s.min() < 0:
        raise JaxCompressValueError("symbols must be non-negative")
    return s


def huffman_code(symbols: Any, *, alphabet_size: int | None = None) -> HuffmanCode:
    """Build the optimal canonical Huffman code for the symbol frequencies in ``symbols``.

    Args:
      symbols: integer array of any shape, values in ``[0, alphabet_size)``.
      alphabet_size: default ``max(symbols) + 1``.

    A single distinct symbol gets a 1-bit code (a decoder needs at least one bit per symbol).
    """
    s = _check_symbols(symbols)
    if alphabet_size is None:
        alphabet_size = int(s.max()) + 1 if s.size else 1
    if s.size and s.max() >= alphabet_size:
        raise JaxCompressValueError(f"a symbol is >= {alphabet_size=}")
    freq = np.bincount(s, minlength=alphabet_size)
    present = [int(i) for i in np.flatnonzero(freq)]
    lengths = [0] * alphabet_size
    if len(present) == 1:
        lengths[present[0]] = 1
    elif present:
        # heap of (weight, tiebreak, symbols-in-subtree); each merge deepens its symbols by one
        heap = [(int(freq[i]), i, [i]) for i in present]
        heapq.heapify(heap)
        tie = alphabet_size
        while len(heap) > 1:
            w1, _, a = heapq.heappop(heap)
            w2, _, b = heapq.heappop(heap)
            for sym in a + b:
                lengths[sym] += 1
            heapq.heappush(heap, (w1 + w2, tie, a + b))
            tie += 1
    return HuffmanCode(tuple(lengths))


def huffman_encode(symbols: Any, code: HuffmanCode | None = None) -> tuple[bytes, int, HuffmanCode]:
    """Encode ``symbols`` MSB-first into bytes; returns ``(payload, n_bits, code)``."""
    s = _check_symbols(symbols)
    if code is None:
        code = huffman_code(s)
    lengths = np.asarray(code.lengths, np.int64)
    if s.size and (s.max() >= len(lengths) or np.any(lengths[s] == 0)):
        raise JaxCompressValueError("a symbol has no codeword in this code")
    codes = code.codes()
    ln = lengths[s]
    n_bits = int(ln.sum())
    if n_bits == 0:
        return b"", 0, code
    # bit j (MSB first) of each symbol's codeword, laid out consecutively
    rep = np.repeat(np.arange(s.size), ln)
    starts = np.cumsum(ln) - ln
    j = np.arange(n_bits) - np.repeat(starts, ln)
    bits = (codes[s][rep] >> (ln[rep] - 1 - j)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes(), n_bits, code


def huffman_decode(payload: bytes, n_symbols: int, code: HuffmanCode) -> np.ndarray:
    """Decode ``n_symbols`` symbols from ``payload`` (inverse of :func:`huffman_encode`).

    Raises:
      JaxCompressValueError: the payload is truncated or holds an invalid codeword.
    """
    if n_symbols == 0:
        return np.zeros(0, np.int64)
    lengths = np.asarray(code.lengths, np.int64)
    maxlen = int(lengths.max())
    if maxlen == 0:
        raise JaxCompressValueError("empty code cannot decode symbols")
    codes = code.codes()
    if maxlen > 20:  # a full lookup table would be too big: walk the bits with a dict
        return _decode_slow(payload, n_symbols, lengths, codes)
    # lookup table over all maxlen-bit prefixes: (symbol, length)
    table_sym = np.full(1 << maxlen, -1, np.int64)
    table_len = np.zeros(1 << maxlen, np.int64)
    for sym in np.flatnonzero(lengths):
        ln = int(lengths[sym])
        base = int(codes[sym]) << (maxlen - ln)
        table_sym[base : base + (1 << (maxlen - ln))] = sym
        table_len[base : base + (1 << (maxlen - ln))] = ln
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    total = bits.size
    bits = np.concatenate([bits, np.zeros(maxlen, np.uint8)])
    # integer value of the maxlen-bit window starting at every bit position
    weights = 1 << np.arange(maxlen - 1, -1, -1)
    windows = np.lib.stride_tricks.sliding_window_view(bits, maxlen)[:total] @ weights
    ts, tl = table_sym[windows].tolist(), table_len[windows].tolist()
    out = np.empty(n_symbols, np.int64)
    pos = 0
    for i in range(n_symbols):
        if pos >= total:
            raise JaxCompressValueError("Huffman payload is truncated")
        sym = ts[pos]
        if sym < 0:
            raise JaxCompressValueError(f"invalid Huffman codeword at bit {pos}")
        out[i] = sym
        pos += tl[pos]
    if pos > total:
        raise JaxCompressValueError("Huffman payload is truncated")
    return out


def _decode_slow(payload: bytes, n: int, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    lookup = {(int(lengths[s]), int(codes[s])): int(s) for s in np.flatnonzero(lengths)}
    bits = np.unpackbits(np.frombuffer(payload, np.uint8)).tolist()
    out = np.empty(n, np.int64)
    pos, maxlen = 0, int(lengths.max())
    for i in range(n):
        cur, ln = 0, 0
        while True:
            if pos >= len(bits) or ln >= maxlen:
                raise JaxCompressValueError("Huffman payload is truncated or invalid")
            cur = (cur << 1) | bits[pos]
            pos += 1
            ln += 1
            sym = lookup.get((ln, cur))
            if sym is not None:
                out[i] = sym
                break
    return out


def huffman_bits(symbols: Any, *, alphabet_size: int | None = None) -> int:
    """Total bits of the Huffman-coded ``symbols`` *including* the code table (``table_bits``)."""
    s = _check_symbols(symbols)
    code = huffman_code(s, alphabet_size=alphabet_size)
    freq = np.bincount(s, minlength=code.alphabet_size)
    return int((freq * np.asarray(code.lengths)).sum()) + code.table_bits
