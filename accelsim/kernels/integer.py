"""Integer convolution and matrix multiplication with a modelled accumulator.

Both reduce to one batched GEMM over centred operands: A[g, m, k] = x - x_zero_point (im2col
rows, one per output pixel; padded taps hold 0) and B[g, n, k] = w - w_zero_point[n] (one row per
output channel), both contiguous along the reduction index k, which runs over (c, ky, kx) for conv
and k for matmul. Centring in the packing pass makes the inner loop a pure dot product.

Three GEMMs, chosen per call from a worst-case bound |bias| + K * max|A| * max|B|:
- int16 operands, int32 sums: used when both centred operands fit int16 and either the
  accumulator wraps at <= 32 bits (int32 arithmetic is exact modulo 2**32, hence modulo 2**bits)
  or the bound proves that no sum leaves int32 nor the accumulator;
- int64 sums: exact whenever the accumulator wraps (reduced modulo 2**bits at the end) or the
  bound proves that it never saturates;
- sequential saturation: the accumulator's clamp after every addition, in the documented order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit

from accelsim.kernels.accumulator import Accumulator

INT16_MAX = 32767
INT32_MAX = 2**31 - 1
INT32_WRAP = Accumulator()


@njit(cache=True, parallel=True)
def _im2col(x, zero_point, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out):
    """out[g, n*oh*ow + p, (c, ky, kx)] = x - zero_point, 0 at padded taps and past K."""
    nb, channels, h, w = x.shape
    cg = channels // group
    npix = oh * ow
    for t in numba.prange(group * nb):
        g = t // nb
        n = t % nb
        for p in range(npix):
            oy = p // ow
            ox = p % ow
            row = out[g, n * npix + p]
            row[:] = 0
            for c in range(cg):
                plane = x[n, g * cg + c]
                for ky in range(kh):
                    iy = oy * sh - pt + ky * dh
                    if iy < 0 or iy >= h:
                        continue
                    base = (c * kh + ky) * kw
                    for kx in range(kw):
                        ix = ox * sw - pl + kx * dw
                        if 0 <= ix < w:
                            row[base + kx] = np.int64(plane[iy, ix]) - zero_point


@njit(cache=True, parallel=True)
def _gemm_i16(a, b, out):
    """out[g, n, m] = sum_k a[g, m, k] * b[g, n, k], int16 operands, int32 wrapping sums."""
    groups, m_rows, k_len = a.shape
    n_rows = b.shape[1]
    for t in numba.prange(groups * m_rows):
        g = t // m_rows
        m = t % m_rows
        for n in range(n_rows):
            s = np.int32(0)
            for k in range(k_len):
                s += np.int32(a[g, m, k]) * np.int32(b[g, n, k])
            out[g, n, m] = s


@njit(cache=True, parallel=True)
def _gemm_i64(a, b, out):
    """out[g, n, m] = sum_k a[g, m, k] * b[g, n, k] in int64 (exact for centred 17-bit operands)."""
    groups, m_rows, k_len = a.shape
    n_rows = b.shape[1]
    for t in numba.prange(groups * m_rows):
        g = t // m_rows
        m = t % m_rows
        for n in range(n_rows):
            s = np.int64(0)
            for k in range(k_len):
                s += np.int64(a[g, m, k]) * np.int64(b[g, n, k])
            out[g, n, m] = s


@njit(cache=True, parallel=True)
def _gemm_saturate(a, b, bias, lo, hi, out):
    """The saturating accumulator: clamp(bias), then clamp after adding each product in k order."""
    groups, m_rows, k_len = a.shape
    n_rows = b.shape[1]
    for t in numba.prange(groups * m_rows):
        g = t // m_rows
        m = t % m_rows
        for n in range(n_rows):
            s = min(max(np.int64(bias[g, n]), lo), hi)
            for k in range(k_len):
                s = min(max(s + np.int64(a[g, m, k]) * np.int64(b[g, n, k]), lo), hi)
            out[g, n, m] = s


def _span(values: np.ndarray, zero_point: np.ndarray | int) -> int:
    """max |values - zero_point|, the operand bound that the overflow proof uses."""
    if values.size == 0:
        return 0
    centred = values.astype(np.int64) - zero_point
    return int(np.abs(centred).max())


def _wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement reduction of int64 values to `bits` bits."""
    half = np.int64(1 << (bits - 1))
    return ((v & np.int64((1 << bits) - 1)) ^ half) - half


def _gemm(
    a: np.ndarray, b: np.ndarray, a_span: int, b_span: int, bias: np.ndarray, acc: Accumulator
) -> np.ndarray:
    """out[g, n, m] = bias[g, n] + sum_k a[g, m, k] * b[g, n, k] through the accumulator `acc`.

    a (G, M, K) and b (G, N, K) are centred operands (int64); bias is int64 (G, N).
    """
    k_len = a.shape[2]
    bias_span = int(np.abs(bias).max()) if bias.size else 0
    bound = bias_span + k_len * a_span * b_span
    fits_acc = bound <= acc.max
    out_shape = (a.shape[0], b.shape[1], a.shape[1])
    if max(a_span, b_span) <= INT16_MAX and (
        (acc.overflow == "wrap" and acc.bits <= 32) or (fits_acc and bound <= INT32_MAX)
    ):
        out = np.empty(out_shape, dtype=np.int32)
        _gemm_i16(
            np.ascontiguousarray(a, dtype=np.int16), np.ascontiguousarray(b, dtype=np.int16), out
        )
        out += bias.astype(np.int32)[:, :, None]
        if acc.overflow == "wrap" and acc.bits < 32:
            out = _wrap(out.astype(np.int64), acc.bits)
        return out.astype(acc.dtype, copy=False)
    out = np.empty(out_shape, dtype=np.int64)
    if acc.overflow == "wrap" or fits_acc:
        _gemm_i64(a, b, out)
        out += bias[:, :, None]
        if acc.overflow == "wrap":
            out = _wrap(out, acc.bits)
    else:
        _gemm_saturate(a, b, bias, -acc.max - 1, acc.max, out)
    return out.astype(acc.dtype, copy=False)


def _bias_array(bias: np.ndarray | None, channels: int) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, dtype=np.int64)
    bias = np.asarray(bias, dtype=np.int64).reshape(-1)
    if bias.size != channels:
        raise ValueError(f"bias has {bias.size} elements, expected {channels}")
    return bias


def conv2d_acc(
    x: np.ndarray,
    w: np.ndarray,
    x_zero_point: int,
    w_zero_point: np.ndarray,
    bias: np.ndarray | None,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
    acc: Accumulator = INT32_WRAP,
) -> np.ndarray:
    """Accumulators of a 2-D integer convolution, (N, O, OH, OW), as ONNX ConvInteger + bias.

    Value: bias[o] + sum over (c, ky, kx) of (x - x_zero_point) * (w - w_zero_point[o]); padded
    taps hold x_zero_point and so add 0. The sum goes through the accumulator `acc`.
    """
    nb, channels, h, wd = x.shape
    o_ch, cg, kh, kw = w.shape
    if channels != cg * group or o_ch % group:
        raise ValueError(f"conv shapes x {x.shape}, w {w.shape} do not match group {group}")
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv output would be empty ({oh}x{ow})")
    og = o_ch // group
    k_len = cg * kh * kw
    zp = int(x_zero_point)
    w_zp = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64).reshape(-1), (o_ch,))
    a = np.empty((group, nb * oh * ow, k_len), dtype=np.int64)
    _im2col(np.ascontiguousarray(x), zp, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, a)
    b = (w.reshape(o_ch, k_len).astype(np.int64) - w_zp[:, None]).reshape(group, og, k_len)
    out = _gemm(a, b, _span(x, zp), _span(b, 0), _bias_array(bias, o_ch).reshape(group, og), acc)
    out = out.reshape(group, og, nb, oh, ow).transpose(2, 0, 1, 3, 4)
    return np.ascontiguousarray(out).reshape(nb, o_ch, oh, ow)


def matmul_acc(
    a: np.ndarray,
    b: np.ndarray,
    a_zero_point: int,
    b_zero_point: np.ndarray,
    bias: np.ndarray | None,
    acc: Accumulator = INT32_WRAP,
) -> np.ndarray:
    """Accumulators of an integer matrix product, (M, N), as ONNX MatMulInteger + bias.

    Value: bias[n] + sum over k of (a - a_zero_point) * (b - b_zero_point[n]), through `acc`.
    """
    k_len = a.shape[1]
    k_b, n_cols = b.shape
    if k_b != k_len:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match")
    zp = int(a_zero_point)
    b_zp = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64).reshape(-1), (n_cols,))
    ac = (a.astype(np.int64) - zp)[None]
    bc = (b.T.astype(np.int64) - b_zp[:, None])[None]
    out = _gemm(ac, bc, _span(ac, 0), _span(bc, 0), _bias_array(bias, n_cols)[None], acc)
    return np.ascontiguousarray(out[0].T)
