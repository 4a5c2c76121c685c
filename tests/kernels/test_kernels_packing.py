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


# --- fast-path edges: word / chunk boundaries, fused range check, alignment, portable kernels


@pytest.mark.parametrize("bits", range(1, 9))
def test_lengths_around_word_boundaries(bits):
    rng = np.random.default_rng(bits)
    for n in (3, 4, 5, 6, 8, 16, 23, 24, 25, 31, 32, 33, 64, 65, 127, 128, 129):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = jk.pack_bits(codes, bits)
        np.testing.assert_array_equal(packed, reference.pack_bits(codes, bits))
        np.testing.assert_array_equal(jk.unpack_bits(packed, bits, n), codes)


@pytest.mark.parametrize("bits", range(1, 8))
@pytest.mark.parametrize("portable", (False, True))
def test_chunked_kernels_match_reference(bits, portable):
    """Parallel drivers with awkward chunk counts: every chunk boundary must be exact (the
    unaligned 8-byte stores of the BMI2 kernel must not clobber the next chunk's bytes)."""
    rng = np.random.default_rng(bits + 10 * portable)
    for ng in (1, 2, 3, 5, 9, 40, 101):
        codes = rng.integers(0, 1 << bits, 8 * ng).astype(np.uint8)
        want = reference.pack_bits(codes, bits)
        for nchunks in (1, 2, 3, 7):
            out = np.full(want.shape[0] + 16, 0xAA, np.uint8)
            run, par, src, extra = packing._kernels(bits, True, codes, portable)
            acc = par(src, out[: want.shape[0]], *extra, nchunks)
            np.testing.assert_array_equal(out[: want.shape[0]], want)
            assert (out[want.shape[0] :] == 0xAA).all()  # nothing written past the end
            # the returned word OR covers every code: its bytes OR to the OR of the codes
            acc_bytes = np.array([int(acc)], np.uint64).view(np.uint8)
            assert np.bitwise_or.reduce(acc_bytes) == np.bitwise_or.reduce(codes)
            back = np.full(8 * ng + 8, 0xAA, np.uint8)
            run, par, dst, extra = packing._kernels(bits, False, back[: 8 * ng], portable)
            par(want, dst, *extra, nchunks)
            np.testing.assert_array_equal(back[: 8 * ng], codes)
            assert (back[8 * ng :] == 0xAA).all()
            if nchunks == 1:  # the serial entry points agree
                run, _, dst, extra = packing._kernels(bits, False, back[: 8 * ng], portable)
                back[:] = 0
                run(want, dst, *extra, 0, dst.shape[0])
                np.testing.assert_array_equal(back[: 8 * ng], codes)


@pytest.mark.parametrize("bits", range(1, 8))
@pytest.mark.parametrize("n", (9, 64, 67, LONG))
def test_out_of_range_code_anywhere_is_rejected(bits, n):
    """The range check is fused into the kernel: a bad code in a word, in the last word, in the
    tail or on the parallel path gives the same error as before, and never a result."""
    rng = np.random.default_rng(n + bits)
    codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
    hi = (1 << bits) - 1
    for pos in (0, n // 2, (n // 8) * 8 - 1, n - 1):
        bad = codes.copy()
        bad[pos] = hi + 1 + pos % (255 - hi)
        lo_v, hi_v = int(bad.min()), int(bad.max())
        msg = rf"codes has codes in \[{lo_v}, {hi_v}\], outside the allowed range \[0, {hi}\]"
        with pytest.raises(jk.JaxCompressValueError, match=msg):
            jk.pack_bits(bad, bits)
        with pytest.raises(jk.JaxCompressValueError, match=msg):
            jk.pack_bits(bad, bits, out=np.empty(jk.packed_size(n, bits), np.uint8))
    bad = codes.copy()
    bad[-1] = 255
    with pytest.raises(jk.JaxCompressValueError, match=rf"\[{bad.min()}, 255\], outside"):
        jk.pack_bits(bad, bits)


def test_bad_codes_reported_before_bad_out():
    codes = np.array([0, 1, 16], np.uint8)
    with pytest.raises(jk.JaxCompressValueError, match="outside the allowed range"):
        jk.pack_bits(codes, 4, out=np.empty(7, np.uint8))
    with pytest.raises(jk.JaxCompressValueError, match=r"out\.shape=\(7,\) must be \(1,\)"):
        jk.pack_bits(codes[:2], 4, out=np.empty(7, np.uint8))


@pytest.mark.parametrize("bits", range(1, 9))
def test_misaligned_and_guarded_buffers(bits):
    """Inputs / outputs at odd addresses (word views are unaligned) and bytes next to `out` are
    never touched."""
    rng = np.random.default_rng(bits)
    for n, off in ((1001, 1), (4096, 3), (LONG, 5)):
        buf = rng.integers(0, 1 << bits, n + 16).astype(np.uint8)
        codes = buf[off : off + n]
        size = jk.packed_size(n, bits)
        big = np.full(size + 24, 0x5A, np.uint8)
        out = big[off + 1 : off + 1 + size]
        assert jk.pack_bits(codes, bits, out=out) is out
        np.testing.assert_array_equal(out, reference.pack_bits(codes, bits))
        assert (big[: off + 1] == 0x5A).all() and (big[off + 1 + size :] == 0x5A).all()
        ubig = np.full(n + 24, 0x5A, np.uint8)
        uout = ubig[off + 2 : off + 2 + n]
        np.testing.assert_array_equal(jk.unpack_bits(out, bits, n, out=uout), codes)
        assert (ubig[: off + 2] == 0x5A).all() and (ubig[off + 2 + n :] == 0x5A).all()


@pytest.mark.parametrize("bits", range(1, 8))
def test_nontemporal_unpack_into_mapped_out(bits, monkeypatch):
    """Large unpacks into an already-written `out=` use non-temporal stores (BMI2 hosts only);
    exact, chunk boundaries included, and nothing written outside `out`."""
    monkeypatch.setattr(packing, "_NT_MIN", 64)
    rng = np.random.default_rng(bits)
    for n in (64, 200, 8 * 1001 + 5):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = reference.pack_bits(codes, bits)
        big = np.full(n + 32, 0xAA, np.uint8)  # written, so resident; out at an 8-aligned address
        off = (-big.ctypes.data) % 8
        out = big[off : off + n]
        assert packing._mapped(out) == packing._HAS_BMI2
        assert jk.unpack_bits(packed, bits, n, out=out) is out
        np.testing.assert_array_equal(out, codes)
        assert (big[:off] == 0xAA).all() and (big[off + n :] == 0xAA).all()
        if packing._HAS_BMI2:
            ng = n // 8
            for nchunks in (2, 3, 7):
                out[:] = 0
                packing._unpack_nt_par(packed, out[: 8 * ng], bits, nchunks)
                np.testing.assert_array_equal(out[: 8 * ng], codes[: 8 * ng])
    assert not packing._mapped(np.zeros(0, np.uint8))


@pytest.mark.parametrize("bits", (2, 3, 4, 8))
@pytest.mark.parametrize("n", (13, 1 << 20))
def test_out_must_be_writeable_and_not_overlap_the_input(bits, n):
    # kernels store through raw pointers: a read-only or overlapping out= must be refused up
    # front (a read-only mmap would crash, an immutable bytes object would be changed)
    codes = np.random.default_rng(bits).integers(0, 1 << bits, n).astype(np.uint8)
    packed = jk.pack_bits(codes, bits)
    ro_p = np.frombuffer(bytes(packed.size), np.uint8)
    ro_u = np.frombuffer(bytes(n), np.uint8)
    with pytest.raises(jk.JaxCompressValueError, match="out must be writeable"):
        jk.pack_bits(codes, bits, out=ro_p)
    with pytest.raises(jk.JaxCompressValueError, match="out must be writeable"):
        jk.unpack_bits(packed, bits, n, out=ro_u)
    assert not ro_p.any() and not ro_u.any()  # untouched
    buf = np.zeros(n + packed.size, np.uint8)
    buf[: packed.size] = packed
    with pytest.raises(jk.JaxCompressValueError, match="out must not overlap packed"):
        jk.unpack_bits(buf[: packed.size], bits, n, out=buf[:n])
    buf[:n] = codes
    with pytest.raises(jk.JaxCompressValueError, match="out must not overlap codes"):
        jk.pack_bits(
            buf[:n], bits, out=buf[n - packed.size // 2 : n - packed.size // 2 + packed.size]
        )
    # a bad code is still reported before a bad out
    bad = codes.copy()
    bad[0] = 255 if bits < 8 else 0
    if bits < 8:
        with pytest.raises(jk.JaxCompressValueError, match="codes"):
            jk.pack_bits(bad, bits, out=ro_p)
