"""Bit packing: golden values, round trips for every width and odd lengths, ONNX Runtime layout."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress_kernels as jk
from jaxcompress_kernels import packing, reference

LENGTHS = (0, 1, 2, 7, 8, 9, 15, 17, 63, 1001)
# Long enough to take the parallel kernels, not a multiple of 8.
LONG = packing._PARALLEL_MIN + 13


def test_golden_values():
    np.testing.assert_array_equal(jk.pack_bits(np.array([1, 2, 3], np.uint8), 4), [0x21, 0x03])
    # 3-bit: codes 0..7 fill exactly three bytes, LSB first
    p = jk.pack_bits(np.arange(8, dtype=np.uint8), 3)
    bits = sum(int(v) << (3 * i) for i, v in enumerate(range(8)))
    np.testing.assert_array_equal(p, [bits & 255, (bits >> 8) & 255, bits >> 16])
    np.testing.assert_array_equal(jk.pack_bits(np.array([1, 0, 1], np.uint8), 1), [0b101])
    assert jk.packed_size(5, 3) == 2


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", LENGTHS + (LONG,))
def test_pack_matches_twin_and_round_trips(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
    packed = jk.pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (jk.packed_size(n, bits),)
    np.testing.assert_array_equal(packed, reference.pack_bits(codes, bits))
    np.testing.assert_array_equal(jk.unpack_bits(packed, bits, n), codes)
    np.testing.assert_array_equal(reference.unpack_bits(packed, bits, n), codes)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_round_trip_property(bits, data):
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    codes = np.array(values, np.uint8)
    packed = jk.pack_bits(codes, bits)
    np.testing.assert_array_equal(jk.unpack_bits(packed, bits, len(values)), codes)
    # unused high bits of the last byte are zero
    if len(values) * bits % 8:
        assert packed[-1] >> (len(values) * bits % 8) == 0


@pytest.mark.parametrize("bits", (2, 4, 8))
@pytest.mark.parametrize("k", (32, 50, 64))
def test_matmulnbits_layout(bits, k):
    rng = np.random.default_rng(k + bits)
    n, bs = 3, 32
    kb = -(-k // bs)
    codes = rng.integers(0, 1 << bits, (k, n)).astype(np.uint8)
    scales = rng.random((kb, n)).astype(np.float32)
    zps = rng.integers(0, 1 << bits, (kb, n)).astype(np.uint8)
    b, s, z = jk.to_matmulnbits(codes, scales, zps, bits=bits, block_size=bs)
    assert b.shape == (n, kb, bs * bits // 8)
    assert s.shape == (n * kb,) and z.shape == (n * -(-kb * bits // 8),)
    if bits == 4:  # low nibble first along K
        assert b[1, 0, 0] == codes[0, 1] | (codes[1, 1] << 4)
        assert b[2, 0, 3] == codes[6, 2] | (codes[7, 2] << 4)
    if bits == 8:
        assert b[1, 0, 5] == codes[5, 1]
    c2, s2, z2 = jk.from_matmulnbits(b, s, z, k=k, bits=bits)
    np.testing.assert_array_equal(c2, codes)
    np.testing.assert_array_equal(s2, scales)
    np.testing.assert_array_equal(z2, zps)
    b0, _, z0 = jk.to_matmulnbits(codes, scales, bits=bits, block_size=bs)
    assert z0 is None
    np.testing.assert_array_equal(b0, b)


def test_matmulnbits_runs_in_onnxruntime_when_present():
    """The produced layout gives onnxruntime's own result (checked only if onnxruntime exists)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    k, n, bs = 64, 5, 32
    codes = rng.integers(0, 16, (k, n)).astype(np.uint8)
    scales = rng.random((k // bs, n)).astype(np.float32)
    zps = rng.integers(0, 16, (k // bs, n)).astype(np.uint8)
    b, s, z = jk.to_matmulnbits(codes, scales, zps, bits=4, block_size=bs)
    node = helper.make_node(
        "MatMulNBits",
        ["A", "B", "scales", "zp"],
        ["Y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=bs,
        accuracy_level=0,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
        initializer=[
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(s, "scales"),
            numpy_helper.from_array(z, "zp"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, k)).astype(np.float32)
    y = sess.run(None, {"A": x})[0]
    w = np.repeat(scales, bs, 0) * (codes.astype(np.float32) - np.repeat(zps, bs, 0))
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)
    del onnx


def test_out_buffers_are_used_and_checked():
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 8, 1003).astype(np.uint8)
    buf = np.full(jk.packed_size(1003, 3), 255, np.uint8)  # garbage must be overwritten
    res = jk.pack_bits(codes, 3, out=buf)
    assert res is buf
    np.testing.assert_array_equal(buf, reference.pack_bits(codes, 3))
    back = np.empty(1003, np.uint8)
    assert jk.unpack_bits(buf, 3, 1003, out=back) is back
    np.testing.assert_array_equal(back, codes)
    with pytest.raises(jk.JaxCompressValueError, match=r"out\.shape=\(5,\) must be \(377,\)"):
        jk.pack_bits(codes, 3, out=np.empty(5, np.uint8))
    with pytest.raises(jk.JaxCompressTypeError, match=r"out\.dtype=int8 must be uint8"):
        jk.unpack_bits(buf, 3, 1003, out=np.empty(1003, np.int8))
