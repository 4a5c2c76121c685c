"""The fast full-integer kernels against the NumPy reference (`format.quant`), bit for bit: the
VNNI direct convolution (`_qkernels.QConvDirect`) on odd shapes, batches 1 and 7, the paddings,
strides and dilations the models use."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcompress_kernels import JaxCompressValueError, _qkernels
from jaxcompress_kernels.format import quant as q

needs_vnni = pytest.mark.skipif(not _qkernels.HAS_VNNI, reason="the CPU has no avx512_vnni")

# (H, W, C_in, C_out, KH, KW, strides, pads, dilation)
CONV_CASES = [
    (12, 12, 3, 8, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),  # SAME, 3 channels (9-byte rows)
    (9, 11, 5, 20, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),  # odd sizes, 2 channel blocks
    (28, 28, 1, 6, 5, 5, (1, 1), ((0, 0), (0, 0)), (1, 1)),  # LeNet-5, VALID, 1 channel
    (13, 10, 1, 17, 10, 4, (2, 2), ((4, 5), (1, 2)), (1, 1)),  # DS-CNN-like, asymmetric
    (10, 10, 16, 32, 3, 3, (2, 2), ((0, 1), (0, 1)), (1, 1)),  # stride 2 SAME on even size
    (8, 9, 16, 70, 1, 1, (2, 2), ((0, 0), (0, 0)), (1, 1)),  # 1x1 stride 2 (a residual branch)
    (11, 7, 6, 33, 3, 2, (1, 2), ((2, 2), (0, 1)), (2, 1)),  # vertical dilation, 5 blocks
    (6, 6, 64, 64, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1)),  # K = 576
]


def _conv_case(rng, case, batch):
    h, w, cin, cout, kh, kw, strides, pads, dilation = case
    x = rng.integers(-128, 128, (batch, h, w, cin)).astype(np.int8)
    wq = rng.integers(-127, 128, (kh, kw, cin, cout)).astype(np.int8)
    wq.reshape(-1)[:2] = [-127, 127]
    bias = rng.integers(-(2**18), 2**18, cout).astype(np.int32)
    ws = rng.uniform(2e-3, 2e-2, cout).astype(np.float32)
    x_zp, y_zp = int(rng.integers(-128, 128)), int(rng.integers(-30, 30))
    return x, wq, bias, ws, x_zp, y_zp


@needs_vnni
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batch", (1, 7))
def test_direct_conv_equals_reference(case, batch):
    rng = np.random.default_rng(hash((case, batch)) % 2**32)
    h, w, cin, cout, kh, kw, strides, pads, dilation = case
    x, wq, bias, ws, x_zp, y_zp = _conv_case(rng, case, batch)
    want = q.qconv2d(
        x, 0.03, x_zp, wq, ws, bias, 0.05, y_zp,
        strides=strides, pads=pads, dilation=dilation, qmin=-120, qmax=125,
    )  # fmt: skip
    mult, shift = q.channel_multipliers(0.03, ws, 0.05)
    d = _qkernels.QConvDirect(wq, bias, x_zp, mult, shift, x.shape, want.shape, strides, dilation,
                              pads)  # fmt: skip
    for tile in (None, (4, 1), (8, 1), (4, 2), (4, 4)):
        out = np.full((want.size // cout, cout), 99, np.int8)
        d.bind(x, out, y_zp, -120, 125, tile=tile)()
        np.testing.assert_array_equal(out.reshape(want.shape), want, err_msg=str(tile))
    # a second call reuses the padded buffer: the border is intact
    x2 = rng.integers(-128, 128, x.shape).astype(np.int8)
    out = np.empty((want.size // cout, cout), np.int8)
    d.bind(x2, out, y_zp, -120, 125)()
    want2 = q.qconv2d(
        x2, 0.03, x_zp, wq, ws, bias, 0.05, y_zp,
        strides=strides, pads=pads, dilation=dilation, qmin=-120, qmax=125,
    )  # fmt: skip
    np.testing.assert_array_equal(out.reshape(want.shape), want2)


def test_direct_conv_refuses_unsupported_geometry():
    wq = np.zeros((3, 3, 4, 8), np.int8)
    m, r = np.full(8, 1 << 30), np.full(8, 8)
    with pytest.raises(JaxCompressValueError, match="dilation"):
        _qkernels.QConvDirect(wq, None, 0, m, r, (1, 8, 8, 4), (1, 4, 4, 8), (1, 1), (1, 2),
                              ((0, 0), (0, 0)))  # fmt: skip
    with pytest.raises(JaxCompressValueError, match="does not fit"):
        _qkernels.QConvDirect(wq, None, 0, m, r, (1, 8, 8, 4), (1, 8, 8, 8), (1, 1), (1, 1),
                              ((0, 0), (0, 0)))  # fmt: skip


# (H, W, C, strides, pads, dilation, KH, KW)
DW_CASES = [
    (12, 12, 8, (1, 1), ((1, 1), (1, 1)), (1, 1), 3, 3),  # MobileNet stride 1
    (12, 12, 16, (2, 2), ((0, 1), (0, 1)), (1, 1), 3, 3),  # MobileNet stride 2 SAME
    (25, 5, 64, (1, 1), ((1, 1), (1, 1)), (1, 1), 3, 3),  # DS-CNN
    (9, 11, 5, (2, 2), ((1, 1), (1, 1)), (1, 1), 3, 3),  # odd, 5 channels
    (10, 9, 3, (1, 2), ((2, 2), (2, 2)), (2, 2), 3, 3),  # dilated, mixed strides
    (8, 7, 6, (1, 1), ((2, 2), (1, 1)), (1, 1), 5, 3),  # not 3x3: the generic tap loop
    (7, 8, 4, (3, 3), ((0, 0), (0, 0)), (1, 1), 3, 3),  # stride 3, VALID
]


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("batch", (1, 7))
def test_depthwise_equals_reference(case, batch):
    rng = np.random.default_rng(hash((case, batch, "dw")) % 2**32)
    h, w, c, strides, pads, dilation, kh, kw = case
    x = rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8)
    wq = rng.integers(-127, 128, (kh, kw, 1, c)).astype(np.int8)
    wq.reshape(-1)[:2] = [-127, 127]
    bias = rng.integers(-(2**18), 2**18, c).astype(np.int32)
    ws = rng.uniform(2e-3, 2e-2, c).astype(np.float32)
    x_zp, y_zp = int(rng.integers(-128, 128)), int(rng.integers(-30, 30))
    mult, shift = q.channel_multipliers(0.03, ws, 0.05)
    for x_ in (x, rng.integers(-128, 128, x.shape).astype(np.int8)):  # second call: same border
        want = q.qconv2d(
            x_, 0.03, x_zp, wq, ws, bias, 0.05, y_zp,
            strides=strides, pads=pads, dilation=dilation, groups=c, qmin=-120, qmax=125,
        )  # fmt: skip
        d = _qkernels.QDepthwise(wq, bias, x_zp, mult, shift, x.shape, want.shape, strides,
                                 dilation, pads)  # fmt: skip
        out = np.full(want.shape, 99, np.int8)
        d.bind(x_, out, y_zp, -120, 125)()
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("vnni", [False] + ([True] if _qkernels.HAS_VNNI else []))
@pytest.mark.parametrize("dims", [(21, 33, 70, 10), (640, 128, 8, 128, 640), (5, 3)])
@pytest.mark.parametrize("batch", (1, 7))
@pytest.mark.parametrize("ends", ["float", "int8"])
def test_qmlp_chain_equals_reference(vnni, dims, batch, ends):
    rng = np.random.default_rng(len(dims) * 100 + batch)
    x = rng.normal(0, 1.5, (batch, dims[0])).astype(np.float32)
    s_in, zp_in = np.float32(0.02), -7
    xq = q.quantize(x, s_in, zp_in)
    layers, want = [], xq
    s_x, zp_x = s_in, zp_in
    for k, n in zip(dims[:-1], dims[1:], strict=True):
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        ws = rng.uniform(2e-3, 2e-2, n).astype(np.float32)
        b = rng.integers(-3000, 3000, n).astype(np.int32)
        s_y, zp_y = np.float32(rng.uniform(0.05, 0.2)), int(rng.integers(-20, 20))
        lo = max(-128, zp_y)  # a ReLU on every layer but the last
        lo = -128 if n == dims[-1] and k == dims[-2] else lo
        want = q.qlinear(want, s_x, zp_x, w, ws, b, s_y, zp_y, lo, 127)
        mult, shift = q.channel_multipliers(s_x, ws, s_y)
        layers.append((_qkernels.pack_qgemm(w, b, zp_x, mult, shift, vnni=vnni), zp_y, lo, 127))
        s_x, zp_x = s_y, zp_y
    if ends == "float":
        y = np.full((batch, dims[-1]), np.nan, np.float32)
        _qkernels.qmlp_chain(layers, x, y, (s_in, zp_in), (s_x, zp_x))()
        np.testing.assert_array_equal(y, q.dequantize(want, s_x, zp_x))
    else:
        y = np.full((batch, dims[-1]), 99, np.int8)
        _qkernels.qmlp_chain(layers, xq, y)()
        np.testing.assert_array_equal(y, want)


def test_qmlp_chain_refuses_layers_that_do_not_chain():
    m, r = np.full(8, 1 << 30), np.full(8, 8)
    a = _qkernels.pack_qgemm(np.zeros((4, 8), np.int8), None, 0, m, r, vnni=False)
    b = _qkernels.pack_qgemm(np.zeros((6, 8), np.int8), None, 0, m, r, vnni=False)
    with pytest.raises(JaxCompressValueError, match="do not chain"):
        _qkernels.qmlp_chain([(a, 0, -128, 127), (b, 0, -128, 127)],
                             np.zeros((1, 4), np.int8), np.zeros((1, 8), np.int8))  # fmt: skip
