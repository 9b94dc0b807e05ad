"""Requantization of accumulators to narrow outputs, exactly as onnxruntime's CPU kernels do it."""

from __future__ import annotations

import numba
import numpy as np
from numba import njit


@njit(cache=True, parallel=True)
def _requantize(acc, multiplier, zero_point, lo, hi, out):
    outer, channels, inner = acc.shape
    flo = np.float32(lo - zero_point)
    fhi = np.float32(hi - zero_point)
    for i in numba.prange(outer):
        for c in range(channels):
            m = multiplier[c]
            for j in range(inner):
                v = np.float32(acc[i, c, j]) * m
                v = min(max(v, flo), fhi)
                out[i, c, j] = np.int64(np.rint(v)) + zero_point


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    axis: int,
    zero_point: int,
    out_min: int,
    out_max: int,
    out_dtype: np.dtype | type,
) -> np.ndarray:
    """Scale accumulators to the output type, bit for bit as onnxruntime's CPU provider.

    onnxruntime (MLAS MlasRequantizeOutput, used by QLinearConv and QLinearMatMul) adds the bias
    to the int32 accumulator (here the bias is already in `acc`), converts it to float32, multiplies
    by the float32 multiplier x_scale * w_scale[c] / y_scale (one float32 multiply, no FMA),
    clamps the product in float to [out_min - zero_point, out_max - zero_point], converts to int32
    with round half to even (cvtps2dq under the default MXCSR), then adds the zero point. Clamping
    before rounding equals clamping after it, because the bounds are integers.

    `multiplier` has one element (per tensor) or acc.shape[axis] elements (per channel).
    """
    acc = np.asarray(acc)
    multiplier = np.ascontiguousarray(multiplier, dtype=np.float32).reshape(-1)
    axis = axis % acc.ndim if acc.ndim else 0
    if multiplier.size == 1:
        shape3 = (1, 1, acc.size)
    elif acc.ndim and multiplier.size == acc.shape[axis]:
        shape3 = (
            int(np.prod(acc.shape[:axis])),
            acc.shape[axis],
            int(np.prod(acc.shape[axis + 1 :])),
        )
    else:
        raise ValueError(
            f"multiplier has {multiplier.size} elements; expected 1 or {acc.shape[axis]} "
            f"(axis {axis} of accumulator shape {acc.shape})"
        )
    src = np.ascontiguousarray(acc).reshape(shape3)
    out = np.empty(shape3, dtype=out_dtype)
    _requantize(src, multiplier, int(zero_point), int(out_min), int(out_max), out)
    return out.reshape(acc.shape)
