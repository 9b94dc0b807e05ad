"""Element-wise operators on quantized tensors: Relu, Clip, Sign, Add, Concat."""

from __future__ import annotations

import numpy as np

from accelsim.ops import Op, out_storage, register


@register
class Clip(Op):
    """Clamp in the quantized domain; Relu is Clip with lo = the zero point."""

    op_type = "Clip"

    def run(self, x):
        return [np.clip(x, self.attrs["lo"], self.attrs["hi"]).astype(x.dtype)]


@register
class Sign(Op):
    """To bipolar: +1 where x >= threshold (in x's integer domain), else -1."""

    op_type = "Sign"

    def run(self, x):
        return [np.where(x >= self.attrs["threshold"], 1, -1).astype(np.int8)]


def dequantize_f32(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32(scale) * float32(int32(q) - zero_point), as MLAS writes it."""
    return np.float32(scale) * (q.astype(np.int32) - np.int32(zero_point)).astype(np.float32)


def quantize_f32(v: np.ndarray, scale: float, zero_point: int, lo: int, hi: int) -> np.ndarray:
    """saturate(rint(v / scale) + zero_point), float32 division."""
    q = np.rint(np.divide(v, np.float32(scale), dtype=np.float32)).astype(np.int64) + zero_point
    return np.clip(q, lo, hi)


@register
class Add(Op):
    """QLinearAdd: c = saturate(rint((A + B) / c_scale) + c_zp), with A, B dequantized in float32.

    This is MLAS's portable formula; its AVX2 kernel uses a fixed-point form that can differ
    by one on rare inputs (see tests/test_onnxruntime_agreement.py).
    """

    op_type = "Add"

    def run(self, a, b):
        at = self.attrs
        t = self.out_tensors[0].type
        s = dequantize_f32(a, at["a_scale"], at["a_zero_point"]) + dequantize_f32(
            b, at["b_scale"], at["b_zero_point"]
        )
        return [quantize_f32(s, at["c_scale"], at["c_zero_point"], t.min, t.max).astype(t.storage)]

    @staticmethod
    def shape(attrs, a, b):
        return [tuple(np.broadcast_shapes(tuple(a), tuple(b)))]


@register
class Concat(Op):
    """QLinearConcat: inputs whose scale and zero point differ from the output's are requantized
    through float32 (onnxruntime builds a lookup table the same way)."""

    op_type = "Concat"

    @staticmethod
    def shape(attrs, *shapes):
        axis = attrs["axis"] % len(shapes[0])
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

    def run(self, *xs):
        at = self.attrs
        t = self.out_tensors[0].type
        parts = []
        for x, (scale, zp) in zip(xs, at["input_quant"], strict=True):
            if scale == at["y_scale"] and zp == at["y_zero_point"]:
                parts.append(x.astype(t.storage))
            else:
                v = dequantize_f32(x, scale, zp)
                q = quantize_f32(v, at["y_scale"], at["y_zero_point"], t.min, t.max)
                parts.append(q.astype(t.storage))
        return [np.concatenate(parts, axis=at["axis"]).astype(out_storage(self))]
