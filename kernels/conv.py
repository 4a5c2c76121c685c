"""Direct NHWC float32 convolutions and pooling (no im2col copy), for small edge models.

``y[b, oh, ow, co] = act(bias[co] + sum_{kh, kw, ci} xpad[b, oh*sh + kh*dh, ow*sw + kw*dw, ci]
* W[kh, kw, ci, co])`` with the Flax kernel ``W`` of shape ``(KH, KW, Cin, Cout)`` and ``xpad``
the input padded by ``pads = ((top, bottom), (left, right))`` zeros (negative pads crop, as in
``lax.conv_general_dilated``); ``OH = (H + top + bottom - ((KH - 1) dh + 1)) // sh + 1``.

How it runs (see docs/kernels.md): `prepare_conv2d` validates and repacks the kernel once into
a `Conv2dWeight`: ``W`` as ``(KH KW Cin, Coutp)`` with ``Coutp`` = Cout rounded up to 16 lanes
(zero columns), the bias padded alike. A call pads the input once (only when ``pads`` are not
zero), builds the tap offset table of ``(kh, kw, ci)`` and runs the register microkernels of
`_conv_tile` over tiles of up to 12 output pixels (flattened over batch, rows and columns, so
1-D convs with ``H = 1`` and narrow rows fill whole tiles) x up to 64 output channels; bias and
activation are fused into the output write. Depthwise convolutions (``feature_group_count ==
Cin``) run the same tiling with SIMD lanes over channels.

Pooling (`max_pool2d`, `avg_pool2d`, `global_avg_pool2d`) are Numba loops with SIMD lanes over
channels. Flax's ``avg_pool`` (``count_include_pad=True``) divides the window sum by the full
window size, padding included; ``count_include_pad=False`` divides by the number of input
elements in the window.

Every public wrapper validates its arguments; ``Conv2dWeight.call_unchecked`` /
``DepthwiseConv2dWeight.call_unchecked`` are the hot entries for a runtime plan that validated
shapes once (`Conv2dWeight.output_shape`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numba import njit, prange
from numba.np.ufunc.parallel import _iget_num_threads

from jaxcompress_kernels._conv_tile import (  # noqa: F401 (tiles used in compiled code)
    DW3_PIXELS,
    DW_TILE_PIXELS,
    HALF,
    TILE_PIXELS,
    VL,
    conv_tile0h,
    conv_tile1,
    conv_tile1h,
    conv_tile2,
    conv_tile2h,
    conv_tile3,
    conv_tile3h,
    conv_tile4,
    dw3_tile1s1v4,
    dw3_tile1s1w8,
    dw3_tile1s1w16,
    dw3_tile1s2v4,
    dw3_tile1s2w8,
    dw3_tile1s2w16,
    dw3_tile2s1v4,
    dw3_tile2s1w8,
    dw3_tile2s1w16,
    dw3_tile2s2v4,
    dw3_tile2s2w8,
    dw3_tile2s2w16,
    dw3_tile4s1v4,
    dw3_tile4s1w8,
    dw3_tile4s1w16,
    dw3_tile4s2v4,
    dw3_tile4s2w8,
    dw3_tile4s2w16,
    dw3_tile8s1w8,
    dw3_tile8s1w16,
    dw3_tile8s2w8,
    dw3_tile8s2w16,
    dw_tile0h,
    dw_tile1,
    dw_tile1h,
    dw_tile2,
    dw_tile2h,
    dw_tile3,
    dw_tile3h,
    dw_tile4,
    max_tile0h,
    max_tile1,
    max_tile1h,
    max_tile2,
    max_tile2h,
    max_tile3,
    max_tile3h,
    max_tile4,
)
from jaxcompress_kernels._validate import check_array, check_int, check_no_overlap
from jaxcompress_kernels.errors import JaxCompressTypeError, JaxCompressValueError

__all__ = [
    "ACTIVATIONS",
    "Conv2dWeight",
    "DepthwiseConv2dWeight",
    "prepare_conv2d",
    "prepare_depthwise_conv2d",
    "conv2d",
    "depthwise_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "Pool2d",
    "prepare_max_pool2d",
    "prepare_avg_pool2d",
    "conv_output_size",
]

ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}
_MAXV = 4  # 16-lane vectors of output channels per tile
_BLOCK = _MAXV * 16  # output channels per column block
_P_MAX = max(max(TILE_PIXELS.values()), max(DW_TILE_PIXELS.values()))
# geometry vector handed to the compiled drivers (one int64 array: fewer arguments to dispatch)
(
    _G_KH,
    _G_KW,
    _G_CIN,
    _G_COUT,
    _G_SH,
    _G_SW,
    _G_DH,
    _G_DW,
    _G_PT,
    _G_PB,
    _G_PL,
    _G_PR,
    _G_ACT,
    _G_KIND,
) = range(14)
_CONV, _DEPTHWISE, _MAXPOOL = 0, 1, 2  # g[_G_KIND]
_P1, _P2, _P3, _P4 = (TILE_PIXELS[v] for v in (1, 2, 3, 4))
_D1, _D2, _D3, _D4 = (DW_TILE_PIXELS[v] for v in (1, 2, 3, 4))
# below this many multiply-adds (padded channels) a parallel region costs more than it saves
_PARALLEL_MIN_MACS = 1 << 21


# ----------------------------------------------------------------------------------------------
# compiled drivers


@njit(cache=True, nogil=True)
def _pad_input(x, pt, pb, pl, pr, fill):
    """x padded with `fill` by (pt, pb) rows and (pl, pr) columns; negative pads crop. Returns x
    itself when every pad is 0. Rows are copied as flat runs of ``W * C`` floats (vectorised)."""
    if pt == 0 and pb == 0 and pl == 0 and pr == 0:
        return x
    bb, hh, ww, cc = x.shape
    hp = hh + pt + pb
    wp = ww + pl + pr
    xp = np.empty((bb, hp, wp, cc), np.float32)
    xf = x.reshape(bb * hh, ww * cc)
    pf = xp.reshape(bb * hp, wp * cc)
    # interior columns [j0, j1) of the padded row come from source columns [j0 - pl, j1 - pl)
    j0 = max(pl, 0)
    j1 = min(wp, ww + pl)
    lo = j0 * cc
    hi = j1 * cc
    sh = (j0 - pl) * cc
    rowlen = wp * cc
    f32 = np.float32(fill)
    # Numba wraps negative indices: `dst[lo + j]` with an offset it cannot prove non-negative
    # compiles to a select per element and does not vectorise, so every loop indexes a slice
    # with its bare counter (a 48 x 48 x 8 pad took 15 us the other way)
    for b in range(bb):
        for i in range(hp):
            dst = pf[b * hp + i]
            si = i - pt
            if si < 0 or si >= hh:
                for j in range(rowlen):
                    dst[j] = f32
                continue
            src = xf[b * hh + si][sh : sh + hi - lo]
            head = dst[:lo]
            mid = dst[lo:hi]
            tail = dst[hi:]
            for j in range(lo):
                head[j] = f32
            for j in range(hi - lo):
                mid[j] = src[j]
            for j in range(rowlen - hi):
                tail[j] = f32
    return xp


@njit(cache=True, nogil=True)
def _tap_offsets(kh_, kw_, cin, dh, dw, wp):
    """Element offsets of the taps (kh, kw, ci) from a window origin in the padded NHWC image."""
    toff = np.empty(kh_ * kw_ * cin, np.int64)
    t = 0
    for i in range(kh_):
        for j in range(kw_):
            base = (i * dh * wp + j * dw) * cin
            for c in range(cin):
                toff[t] = base + c
                t += 1
    return toff


@njit(cache=True, nogil=True, inline="always")
def _pixel_offsets(offs, ntile, q0, npix, ohw, ow_, sh, sw, hp, wp, cin):
    """offs[p] = offset of the window origin of output pixel q0 + p (p < npix); the slots up to
    ntile repeat the first (valid memory, results not stored). Two divisions per tile, then
    the (b, oh, ow) position is stepped."""
    b = q0 // ohw
    r = q0 - b * ohw
    oh = r // ow_
    ow = r - oh * ow_
    for p in range(npix):
        offs[p] = ((b * hp + oh * sh) * wp + ow * sw) * cin
        ow += 1
        if ow == ow_:
            ow = 0
            oh += 1
            if oh * ow_ == ohw:
                oh = 0
                b += 1
    for p in range(npix, ntile):
        offs[p] = offs[0]


@njit(cache=True, nogil=True, inline="always")
def _run_conv_tile(code, kind, xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act):
    """Runs the tile of block layout `code` = 2 * (16-lane vectors) + (8-lane tail)."""
    if kind == _MAXPOOL:
        if code == 2:
            max_tile1(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 4:
            max_tile2(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 6:
            max_tile3(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 8:
            max_tile4(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 1:
            max_tile0h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 3:
            max_tile1h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 5:
            max_tile2h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        else:  # 7
            max_tile3h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
    elif kind == _DEPTHWISE:
        if code == 2:
            dw_tile1(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 4:
            dw_tile2(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 6:
            dw_tile3(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 8:
            dw_tile4(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 1:
            dw_tile0h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 3:
            dw_tile1h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 5:
            dw_tile2h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        else:  # 7
            dw_tile3h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
    elif kind == _CONV:
        if code == 2:
            conv_tile1(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 4:
            conv_tile2(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 6:
            conv_tile3(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 8:
            conv_tile4(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 1:
            conv_tile0h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 3:
            conv_tile1h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        elif code == 5:
            conv_tile2h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)
        else:  # 7
            conv_tile3h(xp, offs, toff, w, c0, out, o0, cout, npix, nlast, act)


@njit(cache=True, nogil=True, inline="always")
def _block_code(cout, blk):
    """Layout of column block blk (64 channels each, the last one shorter): 2 * (16-lane vectors)
    + (1 if an 8-lane tail vector covers the last <= 8 channels)."""
    rem = cout - blk * _BLOCK
    if rem >= _BLOCK:
        return 2 * _MAXV
    v = rem // VL
    r = rem - v * VL
    if r == 0:
        return 2 * v
    if r <= HALF:
        return 2 * v + 1
    return 2 * (v + 1)


@njit(cache=True, nogil=True, inline="always")
def _tile_pixels(code, depthwise):
    """TILE_PIXELS / DW_TILE_PIXELS of the block's vector count."""
    nv = code // 2 + code % 2
    if depthwise:
        if nv == 1:
            return _D1
        if nv == 2:
            return _D2
        if nv == 3:
            return _D3
        return _D4
    if nv == 1:
        return _P1
    if nv == 2:
        return _P2
    if nv == 3:
        return _P3
    return _P4


@njit(cache=True, nogil=True, inline="always")
def _do_tile(xp, w, out, g, toff, offs, blk, q0, ohw, ow_, hp, wp):
    kind = g[_G_KIND]
    depthwise = kind != _CONV
    cout = g[_G_COUT]
    code = _block_code(cout, blk)
    p = _tile_pixels(code, depthwise)
    npix = min(p, out.shape[0] * ohw - q0)
    # depthwise tiles add the channel themselves: the pixel stride is the image's channel count
    cstride = cout if depthwise else g[_G_CIN]
    _pixel_offsets(offs, p, q0, npix, ohw, ow_, g[_G_SH], g[_G_SW], hp, wp, cstride)
    c0 = blk * _BLOCK
    nvec = code // 2 + code % 2
    nlast = min(HALF if code % 2 else VL, cout - c0 - (nvec - 1) * VL)
    _run_conv_tile(
        code, kind, xp, offs, toff, w, c0, out, q0 * cout + c0, cout, npix, nlast, g[_G_ACT]
    )


@njit(cache=True, nogil=True, inline="always")
def _run_dw3(p, sw, x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm):
    """The `dw3_tile` of P = p pixels, W-stride sw and lane width 16 (8 when nl <= 8)."""
    if nl > HALF:
        if sw == 1:
            if p == 8:
                dw3_tile8s1w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            elif p == 4:
                dw3_tile4s1w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            elif p == 2:
                dw3_tile2s1w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            else:
                dw3_tile1s1w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        else:
            if p == 8:
                dw3_tile8s2w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            elif p == 4:
                dw3_tile4s2w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            elif p == 2:
                dw3_tile2s2w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
            else:
                dw3_tile1s2w16(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
    elif sw == 1:
        if p == 8:
            dw3_tile8s1w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 4:
            dw3_tile4s1w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 2:
            dw3_tile2s1w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        else:
            dw3_tile1s1w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
    else:
        if p == 8:
            dw3_tile8s2w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 4:
            dw3_tile4s2w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 2:
            dw3_tile2s2w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        else:
            dw3_tile1s2w8(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)


@njit(cache=True, nogil=True, inline="always")
def _run_dw3v4(p, sw, x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm):
    """The 4-vector (64-channel) `dw3_tile` of P = p pixels and W-stride sw."""
    if sw == 1:
        if p == 4:
            dw3_tile4s1v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 2:
            dw3_tile2s1v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        else:
            dw3_tile1s1v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
    else:
        if p == 4:
            dw3_tile4s2v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        elif p == 2:
            dw3_tile2s2v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)
        else:
            dw3_tile1s2v4(x, w, x0, cc, rowstep, nrows, wr0, brow, c0, out, o0, nl, act, cm)


@njit(cache=True, nogil=True, inline="always")
def _dw3_rows(x, w, out, g, r0, r1):
    """Output rows r0 <= r < r1 (r = b * OH + oh) of a depthwise conv with a 3-wide kernel, W
    stride 1 or 2 and no W dilation, from the unpadded input: the kernel rows inside the image
    only; per block of 64 channels (4 vectors) the row in runs of 4 / 2 / 1 pixels, per remaining
    16-lane (or 8-lane tail) vector in runs of 8 / 4 / 2 / 1, the input columns of a run that
    fall in the left / right padding masked off."""
    cc = g[_G_COUT]
    kh = g[_G_KH]
    sh = g[_G_SH]
    sw = g[_G_SW]
    dh = g[_G_DH]
    pt = g[_G_PT]
    pl = g[_G_PL]
    act = g[_G_ACT]
    hh = x.shape[1]
    ww = x.shape[2]
    oh_n = out.shape[1]
    ow_n = out.shape[2]
    rowstep = dh * ww * cc
    brow = kh * 3
    for r in range(r0, r1):
        b = r // oh_n
        oh = r - b * oh_n
        ih0 = oh * sh - pt
        # kernel rows i with 0 <= ih0 + i dh < H
        i_lo = 0 if ih0 >= 0 else (-ih0 + dh - 1) // dh
        i_hi = kh if ih0 + (kh - 1) * dh < hh else (hh - 1 - ih0) // dh + 1 if ih0 < hh else 0
        nrows = max(i_hi - i_lo, 0)
        xrow = (b * hh + ih0 + i_lo * dh) * ww * cc
        wr0 = i_lo * 3
        orow = r * ow_n * cc
        c0 = 0
        while c0 < cc:
            # 64 channels at a time while they last (narrow rows: 4x fewer tiles), then 16 / 8
            v4 = cc - c0 >= 4 * VL
            nl = VL if v4 else min(VL, cc - c0)
            pmax = 4 if v4 else 8
            ow = 0
            while ow < ow_n:
                left = ow_n - ow
                p = pmax if left >= pmax else (4 if left >= 4 else (2 if left >= 2 else 1))
                iw0 = ow * sw - pl
                cm = (1 << ((p - 1) * sw + 3)) - 1
                if iw0 < 0 or iw0 + (p - 1) * sw + 2 >= ww:  # the tile touches the padding
                    cm = 0
                    for col in range((p - 1) * sw + 3):
                        if 0 <= iw0 + col < ww:
                            cm |= 1 << col
                if v4:
                    _run_dw3v4(p, sw, x, w, xrow + iw0 * cc + c0, cc, rowstep, nrows, wr0, brow,
                               c0, out, orow + ow * cc + c0, nl, act, cm)  # fmt: skip
                else:
                    _run_dw3(p, sw, x, w, xrow + iw0 * cc + c0, cc, rowstep, nrows, wr0, brow,
                             c0, out, orow + ow * cc + c0, nl, act, cm)  # fmt: skip
                ow += p
            c0 += 4 * VL if v4 else VL


@njit(cache=True, nogil=True, inline="always")
def _dw3_ok(g):
    """A depthwise conv the `dw3_tile`s serve (3-wide kernel, W stride <= 2, no W dilation,
    no cropping)."""
    return (
        g[_G_KIND] == _DEPTHWISE
        and g[_G_KW] == 3
        and g[_G_DW] == 1
        and g[_G_SW] <= 2
        and g[_G_PT] >= 0
        and g[_G_PB] >= 0
        and g[_G_PL] >= 0
        and g[_G_PR] >= 0
    )


@njit(cache=True, nogil=True, parallel=True)
def _conv_kernel(x, w, out, g):
    """out (B, OH, OW, Cout) = act(conv(x, W) + bias) (see module docstring).

    Tiles of output pixels x column blocks; on the calling thread unless Numba's pool has more
    than one thread and the layer has at least `_PARALLEL_MIN_MACS` multiply-adds, then the
    tiles are split in contiguous runs over the threads.
    """
    if _dw3_ok(g):  # no padded copy
        rows = out.shape[0] * out.shape[1]
        nth = _iget_num_threads()
        if nth == 1 or rows * out.shape[2] * 9 * w.shape[1] < _PARALLEL_MIN_MACS:
            _dw3_rows(x, w, out, g, 0, rows)
            return
        nch = min(rows, nth)
        for ch in prange(nch):
            _dw3_rows(x, w, out, g, ch * rows // nch, (ch + 1) * rows // nch)
        return
    depthwise = g[_G_KIND] != _CONV
    fill = -np.inf if g[_G_KIND] == _MAXPOOL else 0.0
    xp = _pad_input(x, g[_G_PT], g[_G_PB], g[_G_PL], g[_G_PR], fill)
    hp = xp.shape[1]
    wp = xp.shape[2]
    cin = 1 if depthwise else g[_G_CIN]
    toff = _tap_offsets(g[_G_KH], g[_G_KW], cin, g[_G_DH], g[_G_DW], wp)
    if depthwise:
        cx = xp.shape[3]
        for t in range(toff.shape[0]):
            toff[t] *= cx
    ow_ = out.shape[2]
    ohw = out.shape[1] * ow_
    total = out.shape[0] * ohw
    cout = g[_G_COUT]
    nblk = (cout + _BLOCK - 1) // _BLOCK
    # numba.get_num_threads() inside a compiled function embeds a ctypes pointer (no caching);
    # this intrinsic (Numba's own, used by its parallel code) calls the pool's symbol by name
    nth = _iget_num_threads()
    serial = nth == 1 or total * toff.shape[0] * w.shape[1] < _PARALLEL_MIN_MACS
    if serial:
        offs = np.empty(_P_MAX, np.int64)
        for blk in range(nblk):
            p = _tile_pixels(_block_code(cout, blk), depthwise)
            for q0 in range(0, total, p):
                _do_tile(xp, w, out, g, toff, offs, blk, q0, ohw, ow_, hp, wp)
        return
    for blk in range(nblk):
        p = _tile_pixels(_block_code(cout, blk), depthwise)
        ntiles = (total + p - 1) // p
        nch = min(ntiles, nth)
        for ch in prange(nch):
            offs_c = np.empty(_P_MAX, np.int64)
            t0 = ch * ntiles // nch
            t1 = (ch + 1) * ntiles // nch
            for t in range(t0, t1):
                _do_tile(xp, w, out, g, toff, offs_c, blk, t * p, ohw, ow_, hp, wp)


# ----------------------------------------------------------------------------------------------
# argument checks


def _pair(name, v, lo):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v, v)
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise JaxCompressTypeError(f"{name}={v!r} must be an int or a pair of ints")
    return tuple(check_int(f"{name}[{i}]", e, lo) for i, e in enumerate(v))


def _pads(v):
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise JaxCompressTypeError(
            f"pads={v!r} must be ((top, bottom), (left, right)) pairs of ints"
        )
    out = []
    for i, p in enumerate(v):
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise JaxCompressTypeError(f"pads[{i}]={p!r} must be a (before, after) pair of ints")
        out.append(tuple(check_int(f"pads[{i}][{j}]", e) for j, e in enumerate(p)))
    return tuple(out)


def _activation(activation):
    if activation not in ACTIVATIONS:
        raise JaxCompressValueError(
            f"activation={activation!r} must be one of {tuple(ACTIVATIONS)}"
        )
    return ACTIVATIONS[activation]


def conv_output_size(n: int, k: int, stride: int, dilation: int, pad: tuple[int, int]) -> int:
    """Output length of one spatial axis: ``(n + pad[0] + pad[1] - ((k - 1) dilation + 1))
    // stride + 1`` (can be <= 0 when the padded input is shorter than the dilated window)."""
    span = (k - 1) * dilation + 1
    return (n + pad[0] + pad[1] - span) // stride + 1


def _check_x(x, cin, name="x"):
    check_array(name, x, dtype=np.float32, ndim=4)
    if x.shape[3] != cin:
        raise JaxCompressValueError(
            f"{name}.shape={x.shape} must end in Cin={cin} (NHWC; the kernel is (KH, KW, Cin, Cout))"
        )


def _spatial_out(x_shape, kh, kw, strides, dilation, pads, what):
    _, h, w, _ = x_shape
    for ax, n, k, s, d, p in (
        ("H", h, kh, strides[0], dilation[0], pads[0]),
        ("W", w, kw, strides[1], dilation[1], pads[1]),
    ):
        if n + min(p[0], 0) <= 0 or n + min(p[1], 0) <= 0 or n + p[0] + p[1] < 0:
            raise JaxCompressValueError(f"pads={pads} crop all of x's {ax}={n}")
        if conv_output_size(n, k, s, d, p) < 1:
            raise JaxCompressValueError(
                f"x's padded {ax} = {n} + {p[0]} + {p[1]} is shorter than the {what} window "
                f"(size {k}, dilation {d})"
            )
    return (
        conv_output_size(h, kh, strides[0], dilation[0], pads[0]),
        conv_output_size(w, kw, strides[1], dilation[1], pads[1]),
    )


def _check_out(out, shape, x):
    if out is None:
        return np.empty(shape, np.float32)
    check_array("out", out, dtype=np.float32, shape=shape, writeable=True)
    check_no_overlap("out", out, "x", x)
    return out


# ----------------------------------------------------------------------------------------------
# containers


def _freeze(a):
    # an immutable copy: nobody can set it writeable again (docs/security.md)
    from jaxcompress_kernels.formats import _frozen

    return _frozen(np.ascontiguousarray(a))


@dataclasses.dataclass(frozen=True, eq=False)
class Conv2dWeight:
    """A 2-D convolution prepared once: kernel repacked, bias, strides, pads, activation.

    Attributes:
      w: ``(KH * KW * Cin + 1, Coutp)`` float32: the Flax kernel ``(KH, KW, Cin, Cout)``
        reshaped (rows in ``(kh, kw, ci)`` order), then the bias as the last row (zeros without
        a bias), with ``Coutp = ceil(Cout / 16) * 16`` (zero columns).
      kernel_shape: ``(KH, KW, Cin, Cout)``.
      strides, dilation: ``(sh, sw)``, ``(dh, dw)``, >= 1.
      pads: ``((top, bottom), (left, right))``; negative values crop.
      activation: None, ``"relu"`` or ``"relu6"``.
      geometry: int64 vector handed to the compiled driver.
    """

    w: np.ndarray
    kernel_shape: tuple[int, int, int, int]
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    activation: str | None
    geometry: np.ndarray
    depthwise: bool = False
    # output shapes already validated, by input shape (a validated call then costs ~2 us less)
    _shapes: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def out_channels(self) -> int:
        return self.kernel_shape[3]

    @property
    def in_channels(self) -> int:
        return self.kernel_shape[2] if not self.depthwise else self.kernel_shape[3]

    def output_shape(self, x_shape) -> tuple[int, int, int, int]:
        """``(B, OH, OW, Cout)`` for an input of shape ``x_shape`` = ``(B, H, W, Cin)``.

        Raises:
          JaxCompressValueError: wrong rank or channel count, or a padded input shorter than the
            dilated window.
        """
        hit = self._shapes.get(x_shape) if isinstance(x_shape, tuple) else None
        if hit is not None:
            return hit
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 4 or x_shape[3] != self.in_channels:
            raise JaxCompressValueError(
                f"x.shape={x_shape} must be (B, H, W, {self.in_channels}) (NHWC)"
            )
        kh, kw = self.kernel_shape[:2]
        oh, ow = _spatial_out(x_shape, kh, kw, self.strides, self.dilation, self.pads, "kernel")
        shape = (x_shape[0], oh, ow, self.out_channels)
        if len(self._shapes) < 64:
            self._shapes[x_shape] = shape
        return shape

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Validated call: ``act(conv(x, W) + bias)``.

        Args:
          x: ``(B, H, W, Cin)`` float32, C-contiguous (NHWC).
          out: optional ``(B, OH, OW, Cout)`` float32 C-contiguous writeable buffer, not
            overlapping x.

        Returns:
          ``(B, OH, OW, Cout)`` float32 (`out` when given).

        Raises:
          JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
        """
        _check_x(x, self.in_channels)
        out = _check_out(out, self.output_shape(x.shape), x)
        if out.size:
            self.call_unchecked(x, out)
        return out

    def call_unchecked(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Hot entry: no validation. `x` must be ``(B, H, W, Cin)`` float32 C-contiguous and
        `out` a C-contiguous float32 buffer of ``self.output_shape(x.shape)`` (B >= 1), not
        overlapping x; anything else is undefined behaviour (reads or writes out of bounds).
        Runs on the calling thread unless Numba's pool has more than one thread and the layer
        is large enough to pay for a parallel region."""
        _conv_kernel(x, self.w, out, self.geometry)
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class DepthwiseConv2dWeight(Conv2dWeight):
    """A depthwise convolution (``feature_group_count == Cin``, multiplier 1) prepared once.

    ``w`` is ``(KH * KW + 1, Cp)``: tap-major, then the bias row, channels padded to 16 lanes; ``kernel_shape`` is the
    Flax ``(KH, KW, 1, C)``. ``y[., c] = act(bias[c] + sum_{kh, kw} xpad[., c] W[kh, kw, 0, c])``.
    """


def _check_common(strides, pads, dilation, activation):
    return (
        _pair("strides", strides, 1),
        _pads(pads),
        _pair("dilation", dilation, 1),
        _activation(activation),
    )


def _geometry(kh, kw, cin, cout, strides, pads, dilation, act, depthwise):
    g = [kh, kw, cin, cout, *strides, *dilation, *pads[0], *pads[1], act, int(depthwise)]
    # int(depthwise): _CONV = 0 / _DEPTHWISE = 1; pooling objects set _MAXPOOL themselves
    return _freeze(np.array(g, dtype=np.int64))


def _padded_cols(a, cout):
    cp = -(-cout // VL) * VL
    out = np.zeros(a.shape[:-1] + (cp,), np.float32)
    out[..., :cout] = a
    return out


def prepare_conv2d(
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
) -> Conv2dWeight:
    """Validates and repacks a Flax conv kernel once for `conv2d` / `Conv2dWeight.__call__`.

    Args:
      w: ``(KH, KW, Cin, Cout)`` float32 (Flax ``nn.Conv`` kernel, output channels last).
      bias: optional ``(Cout,)`` float32.
      strides: ``(sh, sw)`` (or one int) >= 1.
      pads: ``((top, bottom), (left, right))`` ints; negative values crop the input.
      dilation: ``(dh, dw)`` kernel (rhs) dilation >= 1.
      activation: None, ``"relu"`` or ``"relu6"`` (applied after the bias).

    Returns:
      A `Conv2dWeight` (read-only arrays).

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    check_array("w", w, dtype=np.float32, ndim=4, contiguous=False)
    kh, kw, cin, cout = w.shape
    if min(w.shape) < 1:
        raise JaxCompressValueError(f"w.shape={w.shape} must have every dimension >= 1")
    strides, pads, dilation, act = _check_common(strides, pads, dilation, activation)
    if bias is not None:
        check_array("bias", bias, dtype=np.float32, shape=(cout,), contiguous=False)
    b = np.zeros((1, cout), np.float32) if bias is None else np.asarray(bias).reshape(1, cout)
    wp = _padded_cols(np.concatenate([np.asarray(w).reshape(kh * kw * cin, cout), b]), cout)
    return Conv2dWeight(
        w=_freeze(wp),
        kernel_shape=(kh, kw, cin, cout),
        strides=strides,
        pads=pads,
        dilation=dilation,
        activation=activation,
        geometry=_geometry(kh, kw, cin, cout, strides, pads, dilation, act, False),
    )


def prepare_depthwise_conv2d(
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    multiplier: int | None = None,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
) -> Conv2dWeight:
    """Validates and repacks a depthwise kernel (``feature_group_count == Cin``) once.

    With channel multiplier ``m`` = 1 (``Cin = Cout``, the default) the result is a `DepthwiseConv2dWeight`
    (SIMD lanes over channels). With ``m > 1`` (output channel ``o`` reads input channel
    ``o // m``, as in ``lax.conv_general_dilated``) the kernel is expanded into an equivalent
    dense `Conv2dWeight` with zeros off the block diagonal (``Cin`` times the arithmetic, but
    the same results); such layers are rare in edge models.

    Args:
      w: ``(KH, KW, 1, Cin * m)`` float32 (Flax ``nn.Conv(feature_group_count=Cin)`` kernel).
      bias: optional ``(Cin * m,)`` float32.
      multiplier: the channel multiplier ``m`` (default 1: ``Cin = w.shape[3]``).
      strides, pads, dilation, activation: as in `prepare_conv2d`.

    Returns:
      A `DepthwiseConv2dWeight` (m = 1) or `Conv2dWeight` (m > 1); both are called as
      ``weight(x)`` with x ``(B, H, W, Cin)``.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    check_array("w", w, dtype=np.float32, ndim=4, contiguous=False)
    kh, kw, one, cout = w.shape
    if one != 1 or min(w.shape) < 1:
        raise JaxCompressValueError(
            f"w.shape={w.shape} must be (KH, KW, 1, Cin * multiplier) with every dimension >= 1"
        )
    if bias is not None:
        check_array("bias", bias, dtype=np.float32, shape=(cout,), contiguous=False)
    if multiplier is None:
        multiplier = 1
    m = check_int("multiplier", multiplier, 1)
    if cout % m:
        raise JaxCompressValueError(f"w.shape[3]={cout} must be a multiple of {multiplier=}")
    if m > 1:
        cin = cout // m
        dense = np.zeros((kh, kw, cin, cout), np.float32)
        for c in range(cin):
            dense[:, :, c, c * m : (c + 1) * m] = w[:, :, 0, c * m : (c + 1) * m]
        return prepare_conv2d(
            dense, bias, strides=strides, pads=pads, dilation=dilation, activation=activation
        )
    strides, pads, dilation, act = _check_common(strides, pads, dilation, activation)
    b = np.zeros((1, cout), np.float32) if bias is None else np.asarray(bias).reshape(1, cout)
    wp = _padded_cols(np.concatenate([np.asarray(w).reshape(kh * kw, cout), b]), cout)
    return DepthwiseConv2dWeight(
        w=_freeze(wp),
        kernel_shape=(kh, kw, 1, cout),
        strides=strides,
        pads=pads,
        dilation=dilation,
        activation=activation,
        geometry=_geometry(kh, kw, cout, cout, strides, pads, dilation, act, True),
        depthwise=True,
    )


def conv2d(
    x: np.ndarray,
    w,
    bias: np.ndarray | None = None,
    *,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Direct NHWC convolution ``act(conv(x, W) + bias)`` (see the module docstring for the math).

    Args:
      x: ``(B, H, W, Cin)`` float32, C-contiguous.
      w: the Flax kernel ``(KH, KW, Cin, Cout)`` float32 (prepared on every call; prepare it
        once with `prepare_conv2d` for repeated calls), or a prepared `Conv2dWeight`, in which
        case `bias`, `strides`, `pads`, `dilation` and `activation` must be left at their
        defaults (the weight carries them).
      bias: optional ``(Cout,)`` float32.
      strides, pads, dilation, activation: as in `prepare_conv2d`.
      out: optional ``(B, OH, OW, Cout)`` float32 buffer.

    Returns:
      ``(B, OH, OW, Cout)`` float32.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    if isinstance(w, Conv2dWeight):
        given = {
            "bias": bias is not None,
            "strides": strides != (1, 1),
            "pads": pads != ((0, 0), (0, 0)),
            "dilation": dilation != (1, 1),
            "activation": activation is not None,
        }
        bad = [k for k, v in given.items() if v]
        if bad:
            raise JaxCompressValueError(
                f"{', '.join(bad)} must not be given with a prepared Conv2dWeight (it carries them)"
            )
    else:
        if not isinstance(w, np.ndarray):
            raise JaxCompressTypeError(
                f"w must be a numpy.ndarray or a Conv2dWeight, got {type(w).__name__}"
            )
        w = prepare_conv2d(
            w, bias, strides=strides, pads=pads, dilation=dilation, activation=activation
        )
    return w(x, out)


def depthwise_conv2d(
    x: np.ndarray,
    w,
    bias: np.ndarray | None = None,
    *,
    multiplier: int | None = None,
    strides=(1, 1),
    pads=((0, 0), (0, 0)),
    dilation=(1, 1),
    activation: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Depthwise NHWC convolution (``feature_group_count == Cin``):
    ``y[., c*m + j] = act(bias[c*m + j] + sum_{kh, kw} xpad[., c] W[kh, kw, 0, c*m + j])``.

    Args:
      x: ``(B, H, W, Cin)`` float32, C-contiguous.
      w: the Flax kernel ``(KH, KW, 1, Cin * m)`` float32, or a weight prepared by
        `prepare_depthwise_conv2d` (then leave the other keyword arguments at their defaults).
      bias, multiplier, strides, pads, dilation, activation: as in `prepare_depthwise_conv2d`.
      out: optional ``(B, OH, OW, Cin * m)`` float32 buffer.

    Returns:
      ``(B, OH, OW, Cin * m)`` float32.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    if not isinstance(w, Conv2dWeight):
        if not isinstance(w, np.ndarray):
            raise JaxCompressTypeError(
                f"w must be a numpy.ndarray or a prepared weight, got {type(w).__name__}"
            )
        w = prepare_depthwise_conv2d(
            w,
            bias,
            multiplier=multiplier,
            strides=strides,
            pads=pads,
            dilation=dilation,
            activation=activation,
        )
        bias = None
        strides, pads, dilation, activation = (1, 1), ((0, 0), (0, 0)), (1, 1), None
    return conv2d(
        x, w, bias, strides=strides, pads=pads, dilation=dilation, activation=activation, out=out
    )


# ----------------------------------------------------------------------------------------------
# pooling


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _avg_pool_valid_kernel(x, out, g):
    """Average over the window taps inside x (``count_include_pad=False``);
    g = (kh, kw, sh, sw, pt, pl). A window entirely in the padding gives 0 / 0 = NaN, as Flax's
    ``avg_pool(count_include_pad=False)``."""
    kh_, kw_, sh, sw, pt, pl = g[0], g[1], g[2], g[3], g[4], g[5]
    bb, hh, ww, cc = x.shape
    oh_n = out.shape[1]
    ow_n = out.shape[2]
    xf = x.reshape(bb * hh * ww, cc)
    of = out.reshape(bb * oh_n * ow_n, cc)
    q = 0
    for b in range(bb):
        for oh in range(oh_n):
            i0 = oh * sh - pt
            ilo = max(i0, 0)
            ihi = min(i0 + kh_, hh)
            for ow in range(ow_n):
                j0 = ow * sw - pl
                jlo = max(j0, 0)
                jhi = min(j0 + kw_, ww)
                o = of[q]
                q += 1
                for c in range(cc):
                    o[c] = 0.0
                for i in range(ilo, ihi):
                    for j in range(jlo, jhi):
                        xr = xf[(b * hh + i) * ww + j]
                        for c in range(cc):
                            o[c] += xr[c]
                n = max(ihi - ilo, 0) * max(jhi - jlo, 0)
                scale = np.float32(1.0) / np.float32(n) if n else np.float32(np.nan)
                for c in range(cc):
                    o[c] *= scale


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _global_avg_pool_kernel(x, out):
    """out[b, c] = mean over (h, w) of x[b, h, w, c], summed in float64."""
    bb, hh, ww, cc = x.shape
    xf = x.reshape(bb, hh * ww, cc)
    acc = np.empty(cc, np.float64)
    inv = 1.0 / (hh * ww)
    for b in range(bb):
        for c in range(cc):
            acc[c] = 0.0
        for p in range(hh * ww):
            xr = xf[b, p]
            for c in range(cc):
                acc[c] += xr[c]
        for c in range(cc):
            out[b, c] = np.float32(acc[c] * inv)


@dataclasses.dataclass(frozen=True, eq=False)
class Pool2d:
    """A max or average pooling over ``channels`` channels prepared once (`prepare_max_pool2d`,
    `prepare_avg_pool2d`).

    Max pooling and average pooling with ``count_include_pad=True`` run the depthwise tiles
    (``max``: ``llvm.maximum`` from ``-inf``; average: weights ``1 / (KH KW)``, i.e. Flax's
    window sum divided by the window size, padding included); ``count_include_pad=False`` with
    nonzero pads runs a Numba loop dividing by the taps inside x.

    Attributes:
      kind: ``"max"`` or ``"avg"``.
      window, strides: ``(KH, KW)``, ``(sh, sw)``.
      pads: ``((top, bottom), (left, right))`` >= 0.
      count_include_pad: the average's divisor (see `avg_pool2d`).
      channels: C.
      w: ``(KH KW + 1, Cp)`` float32 tap weights and start row for the tiles.
      geometry: int64 vector for the compiled driver.
    """

    kind: str
    window: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    count_include_pad: bool
    channels: int
    w: np.ndarray
    geometry: np.ndarray
    _shapes: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def output_shape(self, x_shape) -> tuple[int, int, int, int]:
        """``(B, OH, OW, C)`` for ``x_shape = (B, H, W, C)``; raises JaxCompressValueError."""
        hit = self._shapes.get(x_shape) if isinstance(x_shape, tuple) else None
        if hit is not None:
            return hit
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 4 or x_shape[3] != self.channels:
            raise JaxCompressValueError(
                f"x.shape={x_shape} must be (B, H, W, {self.channels}) (NHWC)"
            )
        oh, ow = _spatial_out(x_shape, *self.window, self.strides, (1, 1), self.pads, "pooling")
        shape = (x_shape[0], oh, ow, self.channels)
        if len(self._shapes) < 64:
            self._shapes[x_shape] = shape
        return shape

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Validated call (see `max_pool2d` / `avg_pool2d`)."""
        check_array("x", x, dtype=np.float32, ndim=4)
        out = _check_out(out, self.output_shape(x.shape), x)
        if out.size:
            self.call_unchecked(x, out)
        return out

    def call_unchecked(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Hot entry, no validation (same contract as `Conv2dWeight.call_unchecked`)."""
        if self.geometry[_G_KIND] < 0:
            _avg_pool_valid_kernel(x, out, self.geometry[14:])
        else:
            _conv_kernel(x, self.w, out, self.geometry)
        return out


def _prepare_pool(kind, window, channels, strides, pads, count_include_pad):
    window = _pair("window", window, 1)
    strides = _pair("strides", (1, 1) if strides is None else strides, 1)
    pads = _pads(pads)
    for i, p in enumerate(pads):
        for j, e in enumerate(p):
            if e < 0:
                raise JaxCompressValueError(f"pads[{i}][{j}]={e} must be >= 0 for pooling")
    channels = check_int("channels", channels, 1)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise JaxCompressTypeError(f"count_include_pad={count_include_pad!r} must be a bool")
    taps = window[0] * window[1]
    if kind == "max":
        rows = np.zeros((taps + 1, channels), np.float32)
        rows[-1] = -np.inf
    else:
        rows = np.full((taps + 1, channels), 1.0 / taps, np.float32)
        rows[-1] = 0.0
    g = _geometry(*window, channels, channels, strides, pads, (1, 1), 0, True)
    g = np.array(g)
    if kind == "max":
        g[_G_KIND] = _MAXPOOL
    valid_only = kind == "avg" and not count_include_pad and any(e for p in pads for e in p)
    if valid_only:
        g[_G_KIND] = -1
    g = np.concatenate([g, [*window, *strides, pads[0][0], pads[1][0]]]).astype(np.int64)
    return Pool2d(
        kind=kind,
        window=window,
        strides=strides,
        pads=pads,
        count_include_pad=bool(count_include_pad),
        channels=channels,
        w=_freeze(_padded_cols(rows, channels)),
        geometry=_freeze(g),
    )


def prepare_max_pool2d(window, channels: int, *, strides=None, pads=((0, 0), (0, 0))) -> Pool2d:
    """Validates a max pooling once (see `max_pool2d` for the arguments); ``channels`` = C."""
    return _prepare_pool("max", window, channels, strides, pads, True)


def prepare_avg_pool2d(
    window, channels: int, *, strides=None, pads=((0, 0), (0, 0)), count_include_pad: bool = True
) -> Pool2d:
    """Validates an average pooling once (see `avg_pool2d` for the arguments); ``channels`` = C."""
    return _prepare_pool("avg", window, channels, strides, pads, count_include_pad)


def _channels_of(x):
    check_array("x", x, dtype=np.float32, ndim=4)
    return max(x.shape[3], 1)


def max_pool2d(
    x: np.ndarray, window, *, strides=None, pads=((0, 0), (0, 0)), out: np.ndarray | None = None
) -> np.ndarray:
    """NHWC max pooling, Flax ``nn.max_pool`` semantics: padding taps are ``-inf`` (a window
    entirely in the padding gives ``-inf``), NaN propagates.

    ``y[b, oh, ow, c] = max_{i < KH, j < KW} xpad[b, oh*sh + i, ow*sw + j, c]``,
    ``OH = (H + top + bottom - KH) // sh + 1``.

    Args:
      x: ``(B, H, W, C)`` float32, C-contiguous.
      window: ``(KH, KW)`` (or one int) >= 1.
      strides: ``(sh, sw)`` >= 1; default ``(1, 1)`` (as Flax: pass ``window`` for the usual
        non-overlapping pooling).
      pads: ``((top, bottom), (left, right))`` >= 0.
      out: optional ``(B, OH, OW, C)`` float32 buffer.

    Returns:
      ``(B, OH, OW, C)`` float32.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    return prepare_max_pool2d(window, _channels_of(x), strides=strides, pads=pads)(x, out)


def avg_pool2d(
    x: np.ndarray,
    window,
    *,
    strides=None,
    pads=((0, 0), (0, 0)),
    count_include_pad: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """NHWC average pooling, Flax ``nn.avg_pool`` semantics.

    ``y = sum_{window} xpad / D`` with ``D = KH * KW`` when `count_include_pad` (Flax's default:
    ``reduce_window`` sum, then divide by the window size, padding included), else ``D`` = the
    number of window taps inside x (a window entirely in the padding gives NaN, 0 / 0).

    Args:
      x: ``(B, H, W, C)`` float32, C-contiguous.
      window, strides, pads, out: as in `max_pool2d`.
      count_include_pad: divisor as above.

    Returns:
      ``(B, OH, OW, C)`` float32.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    pool = prepare_avg_pool2d(
        window, _channels_of(x), strides=strides, pads=pads, count_include_pad=count_include_pad
    )
    return pool(x, out)


def global_avg_pool2d(
    x: np.ndarray, *, keepdims: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Mean over the spatial axes: ``y[b, c] = mean_{h, w} x[b, h, w, c]`` (summed in float64).

    Args:
      x: ``(B, H, W, C)`` float32, C-contiguous, ``H * W >= 1``.
      keepdims: return ``(B, 1, 1, C)`` instead of ``(B, C)``.
      out: optional float32 buffer of the returned shape.

    Returns:
      ``(B, C)`` (or ``(B, 1, 1, C)``) float32.

    Raises:
      JaxCompressTypeError / JaxCompressValueError: naming the bad argument.
    """
    check_array("x", x, dtype=np.float32, ndim=4)
    if x.shape[1] * x.shape[2] < 1:
        raise JaxCompressValueError(f"x.shape={x.shape} must have H * W >= 1")
    shape = (x.shape[0], 1, 1, x.shape[3]) if keepdims else (x.shape[0], x.shape[3])
    out = _check_out(out, shape, x)
    if out.size:
        _global_avg_pool_kernel(x, out.reshape(x.shape[0], x.shape[3]))
    return out
