"""Element-wise operators on quantized tensors: Relu, Clip, Sign, Add, Mul, IntegerAdd, Concat;
BatchNormalization and FloatArithmetic (Add, Mul) in float32."""

from __future__ import annotations

import numpy as np

from accelsim.ops import Op, QLinearOp, out_storage, register
from accelsim.ops.quantize import dequantize, quantize


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


def fma_f32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add a * b + c with a single rounding (numpy has no fma).

    a * b is exact in float64; the float64 sum is rounded to odd (sticky last bit from its exact
    error term), which makes the final rounding to float32 the correctly rounded fma."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    even = (s.view(np.int64) & 1) == 0
    s = np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def cvtps_epi32(v: np.ndarray) -> np.ndarray:
    """x86 CVTPS2DQ: round half to even; NaN and out-of-range values become INT32_MIN."""
    ok = np.abs(v) < np.float32(2.0**31)
    return np.where(ok, np.rint(np.where(ok, v, 0)), -(2**31)).astype(np.int64)


def scalar_per_span(a_shape, b_shape) -> str | None:
    """Which operand onnxruntime's Broadcaster hands to the kernel as one scalar per span ("a",
    "b") or None when both are spans. It is decided by the innermost axis not 1 in both."""
    n = max(len(a_shape), len(b_shape))
    a = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b = (1,) * (n - len(b_shape)) + tuple(b_shape)
    for da, db in zip(reversed(a), reversed(b), strict=True):
        if da == db == 1:
            continue
        if da == db:
            return None
        return "a" if da == 1 else "b"
    return "b"


def broadcast_shape(attrs, a, b):
    """The output shape of a two-operand element-wise op: numpy broadcasting."""
    return [tuple(np.broadcast_shapes(tuple(a), tuple(b)))]


@register
class Add(QLinearOp):
    """QLinearAdd, exactly as onnxruntime computes it on an x86 CPU with AVX2 and FMA (MLAS
    MlasQLinearAddKernelAvx2Helper; no fixed-point path, no fallback on x86). All float32:

        rA = a_scale / c_scale,  rB = b_scale / c_scale
        fixed = c_zp - fma(rA, a_zp, rB * b_zp)      (the compiler contracts this into an FMA)
        c = saturate(cvtps2dq(fma(a, rA, fma(b, rB, fixed))))

    When the broadcaster passes input A as a scalar per span, onnxruntime calls the kernel with
    the operands swapped (A <-> B with their scales and zero points), which changes the roundings.
    cvtps2dq rounds half to even (and turns overflow into INT32_MIN, which saturates low).
    8-bit operands only, as onnxruntime's QLinearAdd.
    """

    op_type = "Add"
    zero_points = ("a_zero_point", "b_zero_point", "c_zero_point")

    def compute(self, at, lo, hi, a, b):
        sa, sb, sc = (np.float32(at[k]) for k in ("a_scale", "b_scale", "c_scale"))
        za, zb, zc = (int(at[k]) for k in ("a_zero_point", "b_zero_point", "c_zero_point"))
        if scalar_per_span(a.shape, b.shape) == "a":
            a, sa, za, b, sb, zb = b, sb, zb, a, sa, za
        ra, rb = sa / sc, sb / sc
        fixed = np.float32(zc) - fma_f32(ra, np.float32(za), rb * np.float32(zb))
        v = fma_f32(a.astype(np.float32), ra, fma_f32(b.astype(np.float32), rb, fixed))
        return np.clip(cvtps_epi32(v), lo, hi)

    shape = staticmethod(broadcast_shape)


@register
class Mul(QLinearOp):
    """QLinearMul, exactly as onnxruntime computes it on x86 (MLAS MlasQLinearMulKernel, SSE2:
    no FMA, and the same on every x86 CPU). The product of the centred operands is exact in int32;
    then, in float32 with separate roundings:

        ratio = (a_scale * b_scale) / c_scale
        c = saturate(cvtps2dq(float32((a - a_zp) * (b - b_zp)) * ratio + c_zp))

    The kernel's operand swap for a scalar A changes nothing here (both products commute).
    8-bit operands only, as onnxruntime's QLinearMul.
    """

    op_type = "Mul"
    zero_points = ("a_zero_point", "b_zero_point", "c_zero_point")

    def compute(self, at, lo, hi, a, b):
        ratio = np.float32(at["a_scale"]) * np.float32(at["b_scale"]) / np.float32(at["c_scale"])
        za, zb = at["a_zero_point"], at["b_zero_point"]
        prod = (a.astype(np.int32) - za) * (b.astype(np.int32) - zb)
        v = prod.astype(np.float32) * ratio + np.float32(at["c_zero_point"])
        return np.clip(cvtps_epi32(v), lo, hi)

    shape = staticmethod(broadcast_shape)


@register
class IntegerAdd(Op):
    """A residual add on an integer machine: both operands centred, aligned to the finer of their
    scales by a left shift (the scales are a power of two apart) and summed exactly:
    y = ((a - a_zp) << a_shift) + ((b - b_zp) << b_shift), int32. (QONNX graphs; qonnx adds the
    dequantized floats, which is the same value while float32 holds the sum exactly.)"""

    op_type = "IntegerAdd"
    shape = staticmethod(broadcast_shape)

    def run(self, a, b):
        at = self.attrs
        y = ((a.astype(np.int64) - at["a_zero_point"]) << at["a_shift"]) + (
            (b.astype(np.int64) - at["b_zero_point"]) << at["b_shift"])
        return [y.astype(out_storage(self))]


@register
class Concat(Op):
    """QLinearConcat: an input whose scale and zero point differ from the output's goes through
    onnxruntime's 256-entry lookup table, built as quantize(dequantize(x)) (MlasQuantizeLinear)."""

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
                q = quantize(dequantize(x, scale, zp), at["y_scale"], at["y_zero_point"],
                             t.min, t.max)
                parts.append(q.astype(t.storage))
        return [np.concatenate(parts, axis=at["axis"]).astype(out_storage(self))]


@register
class BatchNormalization(Op):
    """Inference batch norm in float32 as onnxruntime computes it: y = x * scale[c] + bias[c], a
    multiply then an add (no FMA), with scale = scale0 / sqrt(var + eps) and
    bias = B - mean * scale folded by the importer (channel axis 1)."""

    op_type = "BatchNormalization"

    def run(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = np.asarray(self.attrs["scale"], np.float32).reshape(shape)
        bias = np.asarray(self.attrs["bias"], np.float32).reshape(shape)
        return [np.multiply(x, scale, dtype=np.float32) + bias]


@register
class FloatArithmetic(Op):
    """Add or Mul (`kind`) of float32 tensors with numpy broadcasting: one float32 rounding, as
    onnxruntime's float kernels."""

    op_type = "FloatArithmetic"
    shape = staticmethod(broadcast_shape)

    def run(self, a, b):
        fn = np.add if self.attrs["kind"] == "Add" else np.multiply
        return [fn(a, b, dtype=np.float32)]
