"""Canonical Huffman coding: exact round trip (hypothesis), optimality bounds, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress._core import JaxCompressTypeError, JaxCompressValueError
from jaxcompress.clustering import huffman_bits, huffman_code, huffman_decode, huffman_encode


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=400))
def test_round_trip_exact(symbols):
    s = np.array(symbols, np.int64)
    payload, n_bits, code = huffman_encode(s)
    assert len(payload) == (n_bits + 7) // 8
    np.testing.assert_array_equal(huffman_decode(payload, len(s), code), s)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=30), st.integers(0, 2**31 - 1))
def test_length_between_entropy_and_entropy_plus_one_and_prefix_free(freqs, seed):
    s = np.repeat(np.arange(len(freqs)), freqs)
    np.random.RandomState(seed).shuffle(s)
    _, n_bits, code = huffman_encode(s)
    p = np.array(freqs) / sum(freqs)
    h = -(p * np.log2(p)).sum()
    assert h * len(s) - 1e-6 <= n_bits < (h + 1) * len(s)
    # Kraft equality for a full binary code and no codeword is a prefix of another
    lengths = np.array(code.lengths)
    assert np.sum(2.0 ** -lengths[lengths > 0]) == pytest.approx(1.0)
    codes = code.codes()
    words = [format(int(codes[i]), f"0{lengths[i]}b") for i in range(len(lengths)) if lengths[i]]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)


def test_golden_small_code_and_edge_cases():
    s = np.array([0] * 8 + [1] * 4 + [2] * 2 + [3] * 2)
    code = huffman_code(s)
    assert code.lengths == (1, 2, 3, 3)
    assert list(code.codes()) == [0b0, 0b10, 0b110, 0b111]
    payload, n_bits, _ = huffman_encode(s, code)
    assert n_bits == 8 * 1 + 4 * 2 + 2 * 3 + 2 * 3
    assert huffman_bits(s) == n_bits + 8 * 4  # the 8-bit length table is charged
    # a single distinct symbol still needs one bit each
    payload, n_bits, code = huffman_encode(np.full(10, 3))
    assert n_bits == 10
    np.testing.assert_array_equal(huffman_decode(payload, 10, code), np.full(10, 3))
    payload, n_bits, code = huffman_encode(np.zeros(0, np.int64))
    assert payload == b"" and n_bits == 0


def test_long_codes_use_slow_path():
    freqs = [
        int(x)
        for x in (
            1,
            1,
            2,
            3,
            5,
            8,
            13,
            21,
            34,
            55,
            89,
            144,
            233,
            377,
            610,
            987,
            1597,
            2584,
            4181,
            6765,
            10946,
            17711,
            28657,
        )
    ]
    s = np.repeat(np.arange(len(freqs)), freqs)
    payload, n_bits, code = huffman_encode(s)
    assert max(code.lengths) > 20
    np.testing.assert_array_equal(huffman_decode(payload, len(s), code), s)


def test_errors():
    with pytest.raises(JaxCompressTypeError, match="integers"):
        huffman_encode(np.array([0.5, 1.0]))
    with pytest.raises(JaxCompressValueError, match="non-negative"):
        huffman_encode(np.array([-1, 2]))
    code = huffman_code(np.array([0, 1, 1]))
    with pytest.raises(JaxCompressValueError, match="no codeword"):
        huffman_encode(np.array([2]), code)
    payload, _, code = huffman_encode(np.array([0, 1, 2, 2, 2, 1]))
    with pytest.raises(JaxCompressValueError, match="truncated"):
        huffman_decode(payload, 40, code)
