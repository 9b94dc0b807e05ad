"""AffineQuant and Threshold: the integer-domain form of the float ops between QONNX quantizers.

A QONNX graph computes in float between its quantizers: an accumulator's dequantization, bias,
batch norm, Relu... then Quant/BipolarQuant/Trunc. accelsim keeps the integers and replays that
float arithmetic on them, step by step in float32 as qonnx (onnxruntime per node) does, so results
agree bit for bit wherever the float accumulator of the original is exact:

    AffineQuant  input x (integer or float32)
                 steps       tuple of (kind, p): v = float32(x), then for each step in order
                             v = v * p | v / p | v + p | max(v, p) | min(v, p) in float32
                             (kind mul, div, add, max, min; p broadcasts against x's trailing dims)
                 quantizer   None: y = v (float32; a dequantized output). Otherwise a dict:
                             kind "int":     y = round_mode(clip(v / scale + zero_point, lo, hi))
                                             (qonnx Quant: scale, add, clip, then round)
                             kind "trunc":   y = round_mode(clip(rint(v / scale + zero_point)
                                                 / divisor, lo, hi))  (qonnx Trunc; v1 no clip)
                             kind "bipolar": y = +1 where v / scale + zero_point >= 0 else -1
    Threshold    input x (integer), threshold (int64), direction (+1/-1), both broadcasting
                 against x's trailing dims: y = +1 where x >= threshold (direction +1) or
                 x <= threshold (direction -1), else -1. The exact integer form of a monotone
                 float chain closed by a bipolar quantizer (batch norm + sign).
"""

from __future__ import annotations

import numpy as np

from accelsim.ops import Op, out_storage, register


def _half_up(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def _half_down(v):
    return np.sign(v) * np.ceil(np.abs(v) - np.float32(0.5))


def _up(v):
    return np.sign(v) * np.ceil(np.abs(v))


# qonnx's rounding modes (qonnx.custom_op.general.intquant.resolve_rounding_mode); Brevitas's
# ROUND_TO_ZERO is DOWN.
ROUNDING = {
    "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
    "UP": _up, "DOWN": np.fix, "ROUND_TO_ZERO": np.fix, "HALF_UP": _half_up,
    "HALF_DOWN": _half_down,
}

STEP_KINDS = ("mul", "div", "add", "max", "min")


def apply_steps(x: np.ndarray, steps) -> np.ndarray:
    """float32(x), then each step in float32."""
    v = np.asarray(x).astype(np.float32)
    for kind, p in steps:
        p = np.asarray(p, np.float32)
        if kind == "mul":
            v = np.multiply(v, p, dtype=np.float32)
        elif kind == "div":
            v = np.divide(v, p, dtype=np.float32)
        elif kind == "add":
            v = np.add(v, p, dtype=np.float32)
        elif kind == "max":
            v = np.maximum(v, p, dtype=np.float32)
        elif kind == "min":
            v = np.minimum(v, p, dtype=np.float32)
        else:
            raise ValueError(f"unknown step {kind}")
    return v


def quantize(v: np.ndarray, q: dict) -> np.ndarray:
    """The quantizer's integer codes (as float32) of float32 values v."""
    y = np.add(np.divide(v, np.asarray(q["scale"], np.float32), dtype=np.float32),
               np.asarray(q["zero_point"], np.float32), dtype=np.float32)
    if q["kind"] == "bipolar":
        return np.where(y >= 0, np.float32(1), np.float32(-1))
    if q["kind"] == "trunc":
        y = np.divide(np.round(y), np.float32(q["divisor"]), dtype=np.float32)
    if q["lo"] is not None:
        y = np.clip(y, np.float32(q["lo"]), np.float32(q["hi"]))
    return ROUNDING[q["rounding"]](y).astype(np.float32)


@register
class AffineQuant(Op):
    op_type = "AffineQuant"

    def run(self, x):
        v = apply_steps(x, self.attrs["steps"])
        q = self.attrs.get("quantizer")
        if q is None:
            return [v]
        return [quantize(v, q).astype(out_storage(self))]


@register
class Threshold(Op):
    op_type = "Threshold"

    def run(self, x):
        t = np.asarray(self.attrs["threshold"], np.int64)
        up = np.asarray(self.attrs["direction"]) > 0
        x = x.astype(np.int64)
        return [np.where(np.where(up, x >= t, x <= t), 1, -1).astype(np.int8)]
