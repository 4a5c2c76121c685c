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
