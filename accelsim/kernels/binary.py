"""Binary (bipolar, +-1) convolution and matrix multiplication by xnor-popcount on packed bits.

A +-1 operand is packed one bit per value (1 for +1, 0 for -1) into uint64 words along the
reduction index. Over n valid positions, the dot product is n - 2 * popcount(a xor b), which is
2 * popcount(xnor) - n. Bits past the end of the reduction are 0 in both operands, so they add
nothing to the xor. Padded taps of a convolution contribute 0 (as a float convolution of +-1
values with zero padding does, which is how QONNX/Brevitas binary layers execute); they are
removed by a per-pixel mask of valid taps.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from accelsim.kernels.geometry import check_conv

WORD = 64


@intrinsic
def popcount(typingctx, x):
    """llvm.ctpop.i64: one popcnt instruction on x86-64 (numba has no popcount builtin)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@njit(cache=True, parallel=True)
def _pack_rows(v, out):
    rows, k_len = v.shape
    for r in numba.prange(rows):
        for wi in range(out.shape[1]):
            word = np.uint64(0)
            for j in range(min(WORD, k_len - wi * WORD)):
                if v[r, wi * WORD + j] > 0:
                    word |= np.uint64(1) << np.uint64(j)
            out[r, wi] = word


def pack_bipolar(v: np.ndarray) -> np.ndarray:
    """Pack +-1 values along the last axis into uint64 words: bit j of word i is v[64 i + j] > 0."""
    v = np.asarray(v)
    k_len = v.shape[-1]
    rows = np.ascontiguousarray(v.reshape(-1, k_len))
    out = np.empty((rows.shape[0], -(-k_len // WORD)), dtype=np.uint64)
    _pack_rows(rows, out)
    return out.reshape(v.shape[:-1] + (out.shape[1],))


def binary_matmul_acc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, N) int32 dot products of +-1 matrices a (M, K) and b (K, N), by xnor-popcount."""
    m_rows, k_len = a.shape
    if b.shape[0] != k_len:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match")
    out = np.empty((m_rows, b.shape[1]), dtype=np.int32)
    _xnor_gemm(pack_bipolar(a), pack_bipolar(b.T), k_len, out)
    return out


@njit(cache=True, parallel=True)
def _xnor_gemm(a, b, k_len, out):
    """out[m, n] = k_len - 2 * popcount(a[m] xor b[n]) over all words."""
    m_rows, n_words = a.shape
    for m in numba.prange(m_rows):
        for n in range(b.shape[0]):
            diff = np.uint64(0)
            for i in range(n_words):
                diff += popcount(a[m, i] ^ b[n, i])
            out[m, n] = k_len - 2 * np.int64(diff)


@njit(cache=True, parallel=True)
def _im2col_bits(x, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, bits, mask):
    """Packed im2col: bits[g, n*oh*ow + p] holds the signs of the taps in (c, ky, kx) order, mask
    the taps that fall inside the image."""
    nb, channels, h, w = x.shape
    cg = channels // group
    npix = oh * ow
    for t in numba.prange(group * nb):
        g = t // nb
        n = t % nb
        for p in range(npix):
            oy = p // ow
            ox = p % ow
            row_bits = bits[g, n * npix + p]
            row_mask = mask[g, n * npix + p]
            row_bits[:] = 0
            row_mask[:] = 0
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
                            k = base + kx
                            bit = np.uint64(1) << np.uint64(k % WORD)
                            row_mask[k // WORD] |= bit
                            if plane[iy, ix] > 0:
                                row_bits[k // WORD] |= bit


@njit(cache=True, parallel=True)
def _xnor_conv(bits, mask, wbits, out):
    """out[g, o, m] = sum over valid taps of x*w = n_valid - 2 * popcount((x xor w) & valid)."""
    groups, m_rows, n_words = bits.shape
    og = wbits.shape[1]
    for t in numba.prange(groups * m_rows):
        g = t // m_rows
        m = t % m_rows
        valid = np.uint64(0)
        for i in range(n_words):
            valid += popcount(mask[g, m, i])
        for o in range(og):
            diff = np.uint64(0)
            for i in range(n_words):
                diff += popcount((bits[g, m, i] ^ wbits[g, o, i]) & mask[g, m, i])
            out[g, o, m] = np.int64(valid) - 2 * np.int64(diff)


def binary_conv2d_acc(
    x: np.ndarray,
    w: np.ndarray,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
) -> np.ndarray:
    """(N, O, OH, OW) int32 sums of x*w over the valid taps of a +-1 convolution (zero padding)."""
    nb, channels, h, wd = x.shape
    o_ch, cg, kh, kw = w.shape
    oh, ow = check_conv(x.shape, w.shape, strides, pads, dilations, group)
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    og = o_ch // group
    k_len = cg * kh * kw
    n_words = -(-k_len // WORD)
    bits = np.empty((group, nb * oh * ow, n_words), dtype=np.uint64)
    mask = np.empty_like(bits)
    _im2col_bits(np.ascontiguousarray(x), group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, bits, mask)
    wbits = pack_bipolar(w.reshape(group, og, k_len))
    out = np.empty((group, og, nb * oh * ow), dtype=np.int32)
    _xnor_conv(bits, mask, wbits, out)
    out = out.reshape(group, og, nb, oh, ow).transpose(2, 0, 1, 3, 4)
    return np.ascontiguousarray(out).reshape(nb, o_ch, oh, ow)
