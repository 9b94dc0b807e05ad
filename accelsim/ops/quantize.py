"""Requantize, QuantizeLinear, DequantizeLinear: the boundaries between integer domains.

All three follow onnxruntime's CPU kernels (MLAS) to the bit, float32 throughout:
    Requantize        y = saturate(rint(float32(acc) * multiplier[c]) + zero_point)
    QuantizeLinear    y = saturate(rint(x / scale[c]) + zero_point)   (a division, not a reciprocal)
    DequantizeLinear  x = float32(int32(y) - zero_point) * scale[c]
"""

from __future__ import annotations

import numpy as np

from accelsim.kernels import requantize
from accelsim.ops import Op, out_storage, register


def requant_multiplier(x_scale, w_scale, y_scale) -> np.ndarray:
    """onnxruntime's output scale of QLinearConv/QLinearMatMul: (x_scale * w_scale) / y_scale,
    each step rounded to float32."""
    xs = np.float32(np.asarray(x_scale, np.float32).reshape(-1)[0])
    ys = np.float32(np.asarray(y_scale, np.float32).reshape(-1)[0])
    ws = np.asarray(w_scale, np.float32).reshape(-1)
    return ((xs * ws) / ys).astype(np.float32)


def channel_view(values: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Broadcast a per-channel vector (or a scalar) against a tensor of `ndim` dimensions."""
    values = np.asarray(values).reshape(-1)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return values.reshape(shape)


@register
class Requantize(Op):
    op_type = "Requantize"

    def run(self, acc):
        t = self.out_tensors[0].type
        return [
            requantize(
                acc, np.asarray(self.attrs["multiplier"], np.float32),
                self.attrs.get("axis", 1), int(self.attrs["zero_point"]),
                t.min, t.max, t.storage,
            )
        ]


def quantize(x: np.ndarray, scale, zero_point, lo: int, hi: int) -> np.ndarray:
    """MLAS's MlasQuantizeLinear: float32 x / scale (a division, not a reciprocal), clamped in
    float to [lo - zp, hi - zp] (MAXPS maps NaN to the low bound), rounded half to even, plus zp.
    `scale` and `zero_point` broadcast against x (per tensor or per channel). Returns int64."""
    zp = np.asarray(zero_point, np.int64)
    with np.errstate(over="ignore", invalid="ignore"):  # huge / tiny -> inf, as in float32
        q = np.divide(np.asarray(x, np.float32), np.asarray(scale, np.float32), dtype=np.float32)
    q = np.where(np.isnan(q), np.float32(lo) - zp.astype(np.float32), q)
    q = np.minimum(np.maximum(q, (lo - zp).astype(np.float32)), (hi - zp).astype(np.float32))
    return np.rint(q).astype(np.int64) + zp


def dequantize(q: np.ndarray, scale, zero_point) -> np.ndarray:
    """float32(int32(q) - zero_point) * float32(scale), one float32 multiply."""
    centred = (np.asarray(q).astype(np.int64) - np.asarray(zero_point, np.int64))
    return np.multiply(centred.astype(np.float32), np.asarray(scale, np.float32),
                       dtype=np.float32)


@register
class QuantizeLinear(Op):
    op_type = "QuantizeLinear"

    def run(self, x):
        t = self.out_tensors[0].type
        axis = self.attrs.get("axis")
        scale = channel_view(np.asarray(self.attrs["scale"], np.float32), x.ndim, axis)
        zp = channel_view(np.asarray(self.attrs["zero_point"], np.int64), x.ndim, axis)
        return [quantize(x, scale, zp, t.min, t.max).astype(t.storage)]


@register
class DequantizeLinear(Op):
    op_type = "DequantizeLinear"

    def run(self, y):
        axis = self.attrs.get("axis")
        scale = channel_view(np.asarray(self.attrs["scale"], np.float32), y.ndim, axis)
        zp = channel_view(np.asarray(self.attrs["zero_point"], np.int64), y.ndim, axis)
        return [dequantize(y, scale, zp).astype(out_storage(self))]
