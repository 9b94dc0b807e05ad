"""Pooling on integer tensors: MaxPool, the accumulator of a global average pool, and the
quantized AveragePool."""

from __future__ import annotations

import math

import numpy as np

from accelsim.ops import Op, QLinearOp, register
from accelsim.ops.elementwise import cvtps_epi32
from accelsim.ops.quantize import dequantize


def pool_output_hw(hw, kernel, strides, pads, dilations, ceil_mode: bool) -> tuple[int, int]:
    """Output height and width of a pooling window (onnxruntime's rule, ceil mode included:
    a window that would start inside the end padding is dropped)."""
    out = []
    for i in range(2):
        span = hw[i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1
        n = (math.ceil(span / strides[i]) if ceil_mode else span // strides[i]) + 1
        if ceil_mode and (n - 1) * strides[i] >= hw[i] + pads[i]:
            n -= 1
        out.append(n)
    return tuple(out)


def has_empty_windows(hw, attrs) -> bool:
    """Whether some MaxPool window reads only padding (dilated taps can step over the input)."""
    out = pool_output_hw(hw, attrs["kernel_shape"], attrs["strides"], attrs["pads"],
                         attrs["dilations"], attrs["ceil_mode"])
    for i in range(2):
        starts = np.arange(out[i]) * attrs["strides"][i] - attrs["pads"][i]
        taps = starts[:, None] + np.arange(attrs["kernel_shape"][i]) * attrs["dilations"][i]
        if not np.all(np.any((taps >= 0) & (taps < hw[i]), axis=1)):
            return True
    return False


def lowest(dtype: np.dtype):
    """The identity of max: what onnxruntime's MaxPool gives a window of padding only."""
    return np.iinfo(dtype).min if np.issubdtype(dtype, np.integer) else np.finfo(dtype).min


@register
class MaxPool(Op):
    """Integers, or float32 where onnxruntime pools dequantized values and some window reads
    only padding (its -FLT_MAX has no integer form)."""

    op_type = "MaxPool"

    @staticmethod
    def shape(attrs, x):
        oh, ow = pool_output_hw(
            x[2:], attrs["kernel_shape"], attrs["strides"], attrs["pads"], attrs["dilations"],
            attrs["ceil_mode"],
        )
        return [(x[0], x[1], oh, ow)]

    def run(self, x):
        a = self.attrs
        (kh, kw), (sh, sw), (dh, dw) = a["kernel_shape"], a["strides"], a["dilations"]
        top, left, bottom, right = a["pads"]
        n, c, h, w = x.shape
        oh, ow = self.shape(a, x.shape)[0][2:]
        # Pad far enough for every window (ceil mode can reach past the end padding).
        need_h = (oh - 1) * sh + dh * (kh - 1) + 1
        need_w = (ow - 1) * sw + dw * (kw - 1) + 1
        low = lowest(x.dtype)
        xp = np.full((n, c, max(need_h, top + h), max(need_w, left + w)), low, x.dtype)
        xp[:, :, top : top + h, left : left + w] = x
        out = np.full((n, c, oh, ow), low, x.dtype)
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dh, kx * dw
                win = xp[:, :, y0 : y0 + (oh - 1) * sh + 1 : sh, x0 : x0 + (ow - 1) * sw + 1 : sw]
                np.maximum(out, win, out=out)
        return [out]


@register
class GlobalAveragePool(Op):
    """Produces the accumulator sum(x - x_zero_point) over H x W; the Requantize that follows
    divides by H*W through its multiplier, as onnxruntime's QLinearGlobalAveragePool does."""

    op_type = "GlobalAveragePool"

    @staticmethod
    def shape(attrs, x):
        return [(x[0], x[1], 1, 1)]

    def run(self, x):
        zp = int(self.attrs["x_zero_point"])
        s = x.astype(np.int64).sum(axis=(2, 3), keepdims=True) - zp * x.shape[2] * x.shape[3]
        return [s.astype(np.int32)]


def window_sums(x: np.ndarray, attrs, columns_first: bool = False) -> np.ndarray:
    """Per window [oh*sh - top, +kh) x [ow*sw - left, +kw), the sum of x over the part inside the
    input (padding adds nothing), kernel row by row from zero, in x's dtype; or `columns_first`,
    each kernel column summed from zero and the column sums added in turn (MLAS's vector
    kernel)."""
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    top, left = attrs["pads"][:2]
    n, c, h, w = x.shape
    oh, ow = average_pool_shape(attrs, x.shape)[0][2:]
    xp = np.zeros((n, c, top + max(h, (oh - 1) * sh + kh), left + max(w, (ow - 1) * sw + kw)),
                  x.dtype)
    xp[:, :, top : top + h, left : left + w] = x
    total = np.zeros((n, c, oh, ow), x.dtype)
    if columns_first:
        for kx in range(kw):
            column = np.zeros_like(total)
            for ky in range(kh):
                column += xp[:, :, ky : ky + (oh - 1) * sh + 1 : sh,
                             kx : kx + (ow - 1) * sw + 1 : sw]
            total += column
        return total
    for ky in range(kh):
        for kx in range(kw):
            total += xp[:, :, ky : ky + (oh - 1) * sh + 1 : sh, kx : kx + (ow - 1) * sw + 1 : sw]
    return total


def window_counts(hw, attrs, cut_at_pads: bool = False) -> np.ndarray:
    """The divisor of each average, shape (oh, ow): without count_include_pad, the input elements
    the window covers; with it, kh*kw (QLinearAveragePool), or with `cut_at_pads` the part of the
    window inside the padded input (onnxruntime's float AveragePool: a ceil-mode window hanging
    past the end padding counts less)."""
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    top, left, bottom, right = attrs["pads"]
    oh, ow = average_pool_shape(attrs, (1, 1, *hw))[0][2:]
    hs, ws = np.arange(oh) * sh - top, np.arange(ow) * sw - left
    if not attrs["count_include_pad"]:
        rows = np.minimum(hs + kh, hw[0]) - np.maximum(hs, 0)
        cols = np.minimum(ws + kw, hw[1]) - np.maximum(ws, 0)
    elif cut_at_pads:
        rows = np.minimum(hs + kh, hw[0] + bottom) - hs
        cols = np.minimum(ws + kw, hw[1] + right) - ws
    else:
        rows, cols = np.full(oh, kh), np.full(ow, kw)
    return rows[:, None] * cols[None, :]


def average_pool_shape(attrs, x):
    oh, ow = pool_output_hw(x[2:], attrs["kernel_shape"], attrs["strides"], attrs["pads"],
                            (1, 1), attrs["ceil_mode"])
    return [(x[0], x[1], oh, ow)]


@register
class AveragePool(QLinearOp):
    """QLinearAveragePool as onnxruntime's CPU kernel computes it, in float32:
    x is dequantized (x_scale * (x - x_zp)); each window, cut to the input, is summed row by row
    from 0.0 (window_sums) and divided by its element count (window_counts); then
    y = saturate(int32(nearbyint(avg / y_scale + y_zp))) -- the zero point is added before
    rounding, unlike QuantizeLinear. (A window covering the whole unpadded input takes onnxruntime's
    global-pool path instead; the importer lowers that case to GlobalAveragePool.)"""

    op_type = "AveragePool"
    zero_points = ("x_zero_point", "y_zero_point")
    shape = staticmethod(average_pool_shape)

    def compute(self, a, lo, hi, x):
        total = window_sums(dequantize(x, a["x_scale"], a["x_zero_point"]), a)
        count = window_counts(x.shape[2:], a).astype(np.float32)
        avg = np.divide(total, count, dtype=np.float32)
        v = np.divide(avg, np.float32(a["y_scale"]), dtype=np.float32) + np.float32(
            a["y_zero_point"])
        return np.clip(cvtps_epi32(v), lo, hi)


@register
class SumPool(Op):
    """The integer half of an average pool: per window, the exact int32 sum of (x - x_zero_point)
    over the part inside the input. The division by the count is left to what follows (QONNX:
    qonnx's own float steps)."""

    op_type = "SumPool"
    shape = staticmethod(average_pool_shape)

    def run(self, x):
        centred = x.astype(np.int64) - int(self.attrs["x_zero_point"])
        return [window_sums(centred, self.attrs).astype(np.int32)]


@register
class FloatGlobalAveragePool(Op):
    """onnxruntime's float32 GlobalAveragePool on x86 with AVX2, per (n, c) plane of H*W values:
    MLAS's global kernel sums 4 lanes (element i into lane i % 4) over the first 4 * (H*W // 4),
    adds the lanes as (l0 + l2) + (l1 + l3), then the rest in order; its NCHWc kernel (`nchwc`:
    onnxruntime uses it on a graph input with C a multiple of 8) sums them in order. Either way
    the sum is divided by H*W."""

    op_type = "FloatGlobalAveragePool"

    @staticmethod
    def shape(attrs, x):
        return [(x[0], x[1], 1, 1)]

    def run(self, x):
        return [global_mean(x, bool(self.attrs.get("nchwc")))]


def global_mean(x: np.ndarray, nchwc: bool) -> np.ndarray:
    """FloatGlobalAveragePool's arithmetic: the float32 mean of each (n, c) plane."""
    n, c = x.shape[:2]
    v = x.reshape(n * c, -1).astype(np.float32)
    size = v.shape[1]
    if nchwc:
        total, start = np.zeros(n * c, np.float32), 0
    else:
        start = size // 4 * 4
        lanes = np.zeros((n * c, 4), np.float32)
        for k in range(0, start, 4):
            lanes = lanes + v[:, k : k + 4]
        total = (lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])
    for k in range(start, size):
        total = total + v[:, k]
    return np.divide(total, np.float32(size), dtype=np.float32).reshape(n, c, 1, 1)


@register
class FloatAveragePool(Op):
    """onnxruntime's float32 AveragePool on x86 with AVX2: with C a multiple of 8 its NCHWc
    kernel sums each window's kernel rows in order; otherwise a window the size of the unpadded
    input with strides 1 takes MLAS's global kernel (global_mean), a stride along W of at most 2
    its vector kernel (window_sums columns first) except with both ceil_mode and
    count_include_pad, any other the kernel rows in order. Each sum is divided by the window's
    part inside the padded input (count_include_pad) or inside the input."""

    op_type = "FloatAveragePool"
    shape = staticmethod(average_pool_shape)

    def run(self, x):
        a = self.attrs
        nchwc = x.shape[1] % 8 == 0
        if not nchwc and (tuple(a["kernel_shape"]) == x.shape[2:] and not any(a["pads"])
                          and tuple(a["strides"]) == (1, 1)):
            return [global_mean(x, False)]
        columns = not nchwc and a["strides"][1] <= 2 and max(a["kernel_shape"]) <= 32 and not (
            a["ceil_mode"] and a["count_include_pad"])
        total = window_sums(x.astype(np.float32), a, columns_first=columns)
        count = window_counts(x.shape[2:], a, cut_at_pads=True).astype(np.float32)
        return [np.divide(total, count, dtype=np.float32)]
