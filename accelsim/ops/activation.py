"""Activations: onnxruntime's float kernels of Sigmoid, Tanh, HardSigmoid, HardSwish and
LeakyRelu (Activation, float32 -> float32), and their quantized form (Lookup).

Between a DequantizeLinear and a QuantizeLinear, onnxruntime computes Sigmoid and LeakyRelu as
QLinearSigmoid / QLinearLeakyRelu, whose kernel is a table built as Q(f(DQ(code))) for every
code, and HardSigmoid, HardSwish and Tanh in float32 between the two; per element both are that
table, Lookup's. Elsewhere (a float graph output, a wider input) the function runs in float32
(Activation). The functions are onnxruntime's CPU kernels on x86 with FMA3, to the bit (checked
against onnxruntime's float operators on ~10^6 values each):

    Sigmoid      MLAS logistic (FMA3 kernel): v clamped to [-18, 18], odd/even rational
                 polynomials in v*v evaluated with fused multiply-adds, p / q + 0.5, then
                 max(., 0) (but no min(., 1): 1.0000001 stays)
    Tanh         MLAS tanh (FMA3 kernel): v clamped to [-9, 9], p / q likewise
    HardSigmoid  min(max(alpha * v + beta, 0), 1), a separate multiply and add (Eigen, no FMA)
    HardSwish    v * HardSigmoid(v; 1/6, 0.5) (onnxruntime expands the function)
    LeakyRelu    v if v >= 0 else alpha * v

Lookup reads table[x - min(x's type)].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from accelsim.ops import Op, register
from accelsim.ops.elementwise import fma_f32
from accelsim.ops.quantize import dequantize, quantize
from accelsim.workload.ir import ElemType

F32 = np.float32

# MlasLogisticConstants and MlasTanhConstants: (clamp, numerator and denominator coefficients
# from the highest power of v*v down).
_LOGISTIC = (18.0, (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                    8.51377133304701e-03, 2.48287947061529e-01),
             (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
              1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01))
_TANH = (9.0, (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
               5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
               4.89352455891786e-03),
         (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
          4.89352518554385e-03))


def _rational(v: np.ndarray, constants) -> np.ndarray:
    """MLAS's p(v) / q(v) after clamping v, each Horner step one fused multiply-add."""
    bound, num, den = constants
    v = np.minimum(np.maximum(v, F32(-bound)), F32(bound))
    squared = v * v

    def horner(coefficients):
        acc = fma_f32(squared, F32(coefficients[0]), F32(coefficients[1]))
        for c in coefficients[2:]:
            acc = fma_f32(acc, squared, F32(c))
        return acc

    return np.divide(horner(num) * v, horner(den), dtype=F32)


def logistic(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    return np.maximum(_rational(v, _LOGISTIC) + F32(0.5), F32(0))


def tanh(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    return _rational(v, _TANH)


def hard_sigmoid(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    y = v * F32(attrs.get("alpha", 0.2)) + F32(attrs.get("beta", 0.5))
    return np.maximum(np.minimum(y, F32(1)), F32(0))


def hard_swish(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    return v * hard_sigmoid(v, {"alpha": 1 / 6, "beta": 0.5})


def leaky_relu(v: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    return np.where(v >= 0, v, F32(attrs.get("alpha", 0.01)) * v).astype(F32)


FLOAT_FUNCTIONS: dict[str, Callable[[np.ndarray, dict[str, Any]], np.ndarray]] = {
    "Sigmoid": logistic, "Tanh": tanh, "HardSigmoid": hard_sigmoid, "HardSwish": hard_swish,
    "LeakyRelu": leaky_relu,
}


def lookup_table(op_type: str, attrs: dict[str, Any], x_type: ElemType, x_scale, x_zero_point,
                 y_type: ElemType, y_scale, y_zero_point) -> np.ndarray:
    """Q(f(DQ(code))) for every code of x_type, in y_type's storage."""
    codes = np.arange(x_type.min, x_type.max + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        v = FLOAT_FUNCTIONS[op_type](dequantize(codes, x_scale, x_zero_point), attrs)
    return quantize(v.astype(F32), y_scale, y_zero_point, y_type.min, y_type.max
                    ).astype(y_type.storage)


@register
class Lookup(Op):
    op_type = "Lookup"

    def run(self, x):
        table = np.asarray(self.attrs["table"])
        return [table[x.astype(np.int64) - self.in_tensors[0].type.min]]


@register
class Activation(Op):
    op_type = "Activation"

    def run(self, x):
        with np.errstate(over="ignore", invalid="ignore"):
            return [FLOAT_FUNCTIONS[self.attrs["function"]](x.astype(F32), self.attrs).astype(F32)]


def softmax_table(x_scale: float, reduce_len: int, signed: bool) -> np.ndarray:
    """onnxruntime's QLinearSoftmax table (float32 exp of each code's offset from the largest,
    shifted up so that sums of reduce_len entries stay finite), computed in double as it does:
    entry uint8(i - 128) (signed) or i holds exp((i - 255 + shift) * x_scale)."""
    s = float(np.float32(x_scale))
    shift = max(0.0, math.log(float(np.float32(np.finfo(F32).max) / F32(reduce_len))) - 5) / s
    table = np.empty(256, F32)
    for i in range(256):
        table[(i - 128) & 0xFF if signed else i] = F32(math.exp((i - 255 + shift) * s))
    return table


@register
class Softmax(Op):
    """QLinearSoftmax as onnxruntime's CPU kernel computes it (and its DQ -> Softmax -> Q fusion),
    along `axis` (opset 13: that axis; before: the axes from it on, flattened):

        t = softmax_table(x_scale, D) read at (x - max(x) + 255) mod 256 (uint8 / int8 rows),
        sum = t summed in order in float32,  y = nearbyint(t * floor(1 / y_scale) / sum) + y_zp,
        saturated high (y is never below the zero point). int8 QDQ graphs run in uint8
        (`uint8_domain`, see QLinearOp).
    """

    op_type = "Softmax"

    def run(self, x):
        a = self.attrs
        t = self.out_tensors[0].type
        signed = x.dtype == np.int8 and not a.get("uint8_domain")
        if a.get("uint8_domain"):
            x = (x.astype(np.int16) + 128).astype(np.uint8)
        axis = a["axis"] % x.ndim
        if a["opset"] >= 13:
            rows = np.moveaxis(x, axis, -1)
            back = rows.shape
            rows = rows.reshape(-1, back[-1])
        else:
            back = x.shape
            rows = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        table = softmax_table(a["x_scale"], rows.shape[1], signed)
        v = rows.astype(np.int64)
        index = (v - v.max(axis=1, keepdims=True) + (127 if signed else 255)) & 0xFF
        e = table[index]
        total = np.zeros(len(e), F32)
        for k in range(e.shape[1]):
            total = total + e[:, k]
        y_zp = int(a["y_zero_point"]) + (128 if a.get("uint8_domain") else 0)
        q = np.rint(np.divide(e * np.floor(F32(1) / F32(a["y_scale"])), total[:, None],
                              dtype=F32)).astype(np.int64) + y_zp
        if signed:
            y = np.minimum(q, 127).astype(np.int8)
        else:
            y = np.minimum(q, 255).astype(np.uint8)
        if a.get("uint8_domain"):
            y = (y.astype(np.int16) - 128).astype(np.int8)
        y = y.reshape(back)
        if a["opset"] >= 13:
            y = np.moveaxis(y, -1, axis)
        return [np.ascontiguousarray(y).astype(t.storage)]
