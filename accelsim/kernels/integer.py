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

from collections.abc import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from accelsim.kernels.accumulator import Accumulator
from accelsim.kernels.geometry import check_conv

INT16_MAX = 32767
INT32_MAX = 2**31 - 1
INT32_WRAP = Accumulator()

# The register tile of the int16 GEMM: TILE_M rows of A (pixels) by TILE_N rows of B (channels),
# 12 ymm accumulators; K is padded with zeros to a multiple of LANES int16 values (one ymm).
TILE_M = 6
TILE_N = 2
LANES = 16
# Bytes of b that a thread keeps in its L2 while it sweeps row tiles of a.
B_BLOCK_BYTES = 192 * 1024
# int16 values of K per pass of a register tile (a 6-row tile of a: 12 KB, kept in L1).
K_BLOCK = 1024
# Bytes of im2col rows that a work item of the fused convolution builds and multiplies at once.
FUSED_A_BYTES = 16 * 1024


def _make_dot_tile(accumulate: bool):
    """The register tile of the int16 GEMM as a numba intrinsic: it stores its sums into out, or
    adds them to out's (wrapping) when `accumulate` (a later block of K)."""

    @intrinsic
    def dot_tile(typingctx, a, ia, b, ib, lda, k_vectors, out, io, ldo):
        return _dot_tile_typing(accumulate, a, ia, b, ib, lda, k_vectors, out, io, ldo)

    return dot_tile


def _dot_tile_typing(accumulate, a, ia, b, ib, lda, k_vectors, out, io, ldo):
    """out[io + c*ldo + r] (+)= sum_k a[ia + r*lda + k] * b[ib + c*lda + k] for the TILE_M x
    TILE_N tile, k < k_vectors*LANES (k_vectors >= 1); int16 operands, int32 wrapping sums.

    Written in LLVM IR because LLVM does not vectorise several dot products in one loop well
    (numba's int64 promotion defeats it). Each step multiplies sign-extended <16 x i16> vectors
    and adds even and odd products, the pattern that x86 instruction selection turns into one
    vpmaddwd; the accumulators stay in registers for the whole reduction.
    """
    int_args = (ia, ib, lda, k_vectors, io, ldo)
    if not (
        all(isinstance(t, types.Integer) for t in int_args)
        and isinstance(a, types.Array)
        and a.dtype == types.int16
        and a.ndim == 1
        and isinstance(b, types.Array)
        and b.dtype == types.int16
        and b.ndim == 1
        and isinstance(out, types.Array)
        and out.dtype == types.int32
        and out.ndim == 1
    ):
        return None
    sig = types.void(a, ia, b, ib, lda, k_vectors, out, io, ldo)

    def codegen(context, builder, signature, args):
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        v16i16, v16i32, v8i32 = (
            ir.VectorType(i16, LANES),
            ir.VectorType(i32, LANES),
            ir.VectorType(i32, 8),
        )
        a_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        b_data = context.make_array(signature.args[2])(context, builder, args[2]).data
        o_data = context.make_array(signature.args[6])(context, builder, args[6]).data
        ia_, ib_, lda_, kv_, io_, ldo_ = (
            context.cast(builder, args[i], signature.args[i], types.int64)
            for i in (1, 3, 4, 5, 7, 8)
        )

        def const(v):
            return ir.Constant(i64, v)

        a_rows = [
            builder.gep(a_data, [builder.add(ia_, builder.mul(lda_, const(r)))])
            for r in range(TILE_M)
        ]
        b_rows = [
            builder.gep(b_data, [builder.add(ib_, builder.mul(lda_, const(c)))])
            for c in range(TILE_N)
        ]
        entry = builder.block
        loop = builder.append_basic_block("dot_tile_loop")
        done = builder.append_basic_block("dot_tile_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        step = builder.phi(i64)
        step.add_incoming(const(0), entry)
        sums = []
        for _ in range(TILE_M * TILE_N):
            phi = builder.phi(v8i32)
            phi.add_incoming(ir.Constant(v8i32, None), entry)
            sums.append(phi)
        offset = builder.mul(step, const(LANES))

        def load(row):
            ptr = builder.bitcast(builder.gep(row, [offset]), v16i16.as_pointer())
            return builder.sext(builder.load(ptr, align=2), v16i32)

        va = [load(row) for row in a_rows]
        vb = [load(row) for row in b_rows]
        even = ir.Constant(v8i32, list(range(0, LANES, 2)))
        odd = ir.Constant(v8i32, list(range(1, LANES, 2)))
        updated = []
        for r in range(TILE_M):
            for c in range(TILE_N):
                prod = builder.mul(va[r], vb[c])
                pairs = builder.add(
                    builder.shuffle_vector(prod, prod, even),
                    builder.shuffle_vector(prod, prod, odd),
                )
                updated.append(builder.add(sums[r * TILE_N + c], pairs))
        nxt = builder.add(step, const(1))
        step.add_incoming(nxt, loop)
        for phi, value in zip(sums, updated, strict=True):
            phi.add_incoming(value, loop)
        builder.cbranch(builder.icmp_signed("<", nxt, kv_), loop, done)
        builder.position_at_end(done)
        module = builder.module
        name = "llvm.vector.reduce.add.v8i32"
        reduce_add = module.globals.get(name) or ir.Function(
            module, ir.FunctionType(i32, [v8i32]), name
        )
        for r in range(TILE_M):
            for c in range(TILE_N):
                index = builder.add(io_, builder.add(builder.mul(ldo_, const(c)), const(r)))
                ptr = builder.gep(o_data, [index])
                value = builder.call(reduce_add, [updated[r * TILE_N + c]])
                if accumulate:
                    value = builder.add(builder.load(ptr), value)
                builder.store(value, ptr)
        return context.get_dummy_value()

    return sig, codegen


_dot_tile = _make_dot_tile(False)
_dot_tile_add = _make_dot_tile(True)


# The register tile of the direct (broadcast) convolution: DIRECT_M output pixels by DIRECT_N
# channels in 12 ymm accumulators of 8 channels each, over pairs of int16 reduction values.
DIRECT_M = 6
DIRECT_N = 16
# Largest reduction (kh * kw * C/group) that takes the direct path. It beats the im2col GEMM on
# every ResNet-18 shape (1 thread: conv1 18 -> 46 GMAC/s, l1 49 -> 58, l2 55 -> 63, l4 46 -> 49):
# no im2col, no horizontal sums; 16 channels' weights (16 * K * 2 bytes, 147 KB for K = 4608)
# stream from L2 once per tile of pixels.
DIRECT_MAX_K = 1 << 16


@intrinsic
def _direct_tile(typingctx, img, bases, ib, offs, steps, bp, ibp, bias, n0, out, io, ldo):
    """out[io + c*ldo + r] = bias[n0 + c] + sum over s < steps of the pair product of
    img[bases[ib + r] + offs[s]] (one int32 word: two int16 values) and the two int16 values
    bp[ibp + (s*DIRECT_N + c)*2 : +2], for the DIRECT_M x DIRECT_N tile (steps >= 1); int32
    wrapping sums.

    The word of each pixel is broadcast to all lanes and multiplied by the pairs of DIRECT_N
    channels: sign-extended products of even and odd lanes added, which x86 selects as vpmaddwd
    (checked with inspect_asm). Channels are in the vector lanes, so no horizontal sum is left
    at the end; the tile is transposed by its stores.
    """
    int_args = (ib, steps, ibp, n0, io, ldo)
    if not (
        all(isinstance(t, types.Integer) for t in int_args)
        and isinstance(img, types.Array)
        and img.dtype == types.int32
        and img.ndim == 1
        and isinstance(bases, types.Array)
        and bases.dtype == types.int64
        and isinstance(offs, types.Array)
        and offs.dtype == types.int64
        and isinstance(bp, types.Array)
        and bp.dtype == types.int16
        and bp.ndim == 1
        and isinstance(bias, types.Array)
        and bias.dtype == types.int32
        and isinstance(out, types.Array)
        and out.dtype == types.int32
        and out.ndim == 1
    ):
        return None
    sig = types.void(img, bases, ib, offs, steps, bp, ibp, bias, n0, out, io, ldo)

    def codegen(context, builder, signature, args):
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        v16i16, v16i32, v8i32 = (
            ir.VectorType(i16, 16),
            ir.VectorType(i32, 16),
            ir.VectorType(i32, 8),
        )
        v2i16 = ir.VectorType(i16, 2)

        def data(k):
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        img_d, bases_d, offs_d, bp_d, bias_d, out_d = (data(k) for k in (0, 1, 3, 5, 7, 9))
        ib_, steps_, ibp_, n0_, io_, ldo_ = (
            context.cast(builder, args[i], signature.args[i], types.int64)
            for i in (2, 4, 6, 8, 10, 11)
        )

        def const(v):
            return ir.Constant(i64, v)

        halves = DIRECT_N // 8
        pix = [
            builder.gep(img_d, [builder.load(builder.gep(bases_d, [builder.add(ib_, const(r))]))])
            for r in range(DIRECT_M)
        ]
        b_start = builder.gep(bp_d, [ibp_])
        entry = builder.block
        loop = builder.append_basic_block("direct_loop")
        done = builder.append_basic_block("direct_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        step = builder.phi(i64)
        step.add_incoming(const(0), entry)
        sums = []
        for _ in range(DIRECT_M * halves):
            phi = builder.phi(v8i32)
            phi.add_incoming(ir.Constant(v8i32, None), entry)
            sums.append(phi)
        off = builder.load(builder.gep(offs_d, [step]))
        vb = []
        for h in range(halves):
            index = builder.add(builder.mul(step, const(2 * DIRECT_N)), const(16 * h))
            ptr = builder.bitcast(builder.gep(b_start, [index]), v16i16.as_pointer())
            vb.append(builder.sext(builder.load(ptr, align=2), v16i32))
        even = ir.Constant(v8i32, list(range(0, 16, 2)))
        odd = ir.Constant(v8i32, list(range(1, 16, 2)))
        splat = ir.Constant(v16i32, [i % 2 for i in range(16)])
        updated = []
        for r in range(DIRECT_M):
            word = builder.load(builder.gep(pix[r], [off]), align=4)
            pair = builder.bitcast(word, v2i16)
            va = builder.sext(builder.shuffle_vector(pair, pair, splat), v16i32)
            for h in range(halves):
                prod = builder.mul(va, vb[h])
                pairs = builder.add(
                    builder.shuffle_vector(prod, prod, even),
                    builder.shuffle_vector(prod, prod, odd),
                )
                updated.append(builder.add(sums[r * halves + h], pairs))
        nxt = builder.add(step, const(1))
        step.add_incoming(nxt, loop)
        for phi, value in zip(sums, updated, strict=True):
            phi.add_incoming(value, loop)
        builder.cbranch(builder.icmp_signed("<", nxt, steps_), loop, done)
        builder.position_at_end(done)
        for h in range(halves):
            ptr = builder.bitcast(
                builder.gep(bias_d, [builder.add(n0_, const(8 * h))]), v8i32.as_pointer()
            )
            b_vec = builder.load(ptr, align=4)
            for r in range(DIRECT_M):
                total = builder.add(updated[r * halves + h], b_vec)
                for lane in range(8):
                    c = 8 * h + lane
                    index = builder.add(io_, builder.add(builder.mul(ldo_, const(c)), const(r)))
                    value = builder.extract_element(total, ir.Constant(i32, lane))
                    builder.store(value, builder.gep(out_d, [index]))
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True)
def _conv_direct(img, bases, offs, bp, bias, out):
    """out[n, m] = bias[n] + the direct convolution of pixel m (its word offset bases[m] in img)
    with channel n, by _direct_tile over DIRECT_M pixels x DIRECT_N channels; bp is
    (N / DIRECT_N, steps, DIRECT_N, 2), bias (N padded to DIRECT_N), bases padded to a multiple
    of DIRECT_M. out (N, M) is not padded: partial tiles go through a small buffer."""
    n_rows, m_rows = out.shape
    n_blocks, steps = bp.shape[0], bp.shape[1]
    m_tiles = bases.size // DIRECT_M
    tiles_per_item = 8
    items = (m_tiles + tiles_per_item - 1) // tiles_per_item
    bf = bp.reshape(-1)
    of = out.reshape(-1)
    for t in numba.prange(items):
        tail = np.empty(DIRECT_M * DIRECT_N, np.int32)
        for mt in range(t * tiles_per_item, min((t + 1) * tiles_per_item, m_tiles)):
            m = mt * DIRECT_M
            for nb in range(n_blocks):
                n = nb * DIRECT_N
                ibp = nb * steps * DIRECT_N * 2
                if m + DIRECT_M <= m_rows and n + DIRECT_N <= n_rows:
                    _direct_tile(
                        img, bases, m, offs, steps, bf, ibp, bias, n, of, n * m_rows + m, m_rows
                    )
                else:
                    _direct_tile(img, bases, m, offs, steps, bf, ibp, bias, n, tail, 0, DIRECT_M)
                    for c in range(min(DIRECT_N, n_rows - n)):
                        for r in range(min(DIRECT_M, m_rows - m)):
                            of[(n + c) * m_rows + m + r] = tail[c * DIRECT_M + r]


@njit(cache=True)
def _direct_bases(nb, oh, ow, hp, line, sh, sw_cg, out):
    """out[m] = the int32 word offset, in the padded channels-last image, of the first tap of
    output pixel m = (n*oh + oy)*ow + ox; padding entries point at word 0."""
    out[:] = 0
    for n in range(nb):
        for oy in range(oh):
            row = ((n * hp + oy * sh) * line) // 2
            dst = out[(n * oh + oy) * ow : (n * oh + oy + 1) * ow]
            for ox in range(ow):
                dst[ox] = row + (ox * sw_cg) // 2


@njit(cache=True, parallel=True)
def _im2col(x, zero_point, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out):
    """out[g, n*oh*ow + p, (c, ky, kx)] = x - zero_point; out is zeroed, so padded taps and the
    padding of K and of the rows hold 0."""
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
def _pad_centre_hwc(x, zero_point, pt, pl, out):
    """out[n, pt + y, pl + x, c] = x[n, c, y, x] - zero_point: channels last and centred; the
    border of out is left as it is (zeroed by the caller), so padded taps hold 0."""
    nb, channels, h, w = x.shape
    for t in numba.prange(nb * h):
        n, y = t // h, t % h
        for c in range(channels):
            src = x[n, c, y]
            dst = out[n, pt + y, pl : pl + w, c]
            for i in range(w):
                dst[i] = np.int32(src[i]) - zero_point


@njit(cache=True)
def _copy_run(src, s, dst, d, run, d_limit):
    """dst[d : d+run] = src[s : s+run] for the short runs of _im2col_hwc_rows. A loop whose trip
    count is a compile-time constant becomes a few vector moves, a variable one mostly loop
    overhead: runs of 21 (a 7-tap row of 3 channels, the RGB stem) have their own loop, other
    runs up to 32 copy 32 values (the excess lands where later runs or the K padding go, below
    d_limit, and is overwritten)."""
    if run == 21:
        a = src[s : s + 21]
        b = dst[d : d + 21]
        for j in range(21):
            b[j] = a[j]
    elif run <= 32 and s + 32 <= src.size and d + 32 <= d_limit:
        a = src[s : s + 32]
        b = dst[d : d + 32]
        for j in range(32):
            b[j] = a[j]
    else:
        a = src[s : s + run]
        b = dst[d : d + run]
        for j in range(run):
            b[j] = a[j]


@njit(cache=True)
def _im2col_hwc_rows(xp, group, g, kh, kw, sh, sw, dh, dw, oh, ow, p0, out):
    """out[i, (ky, kx, c)] = the taps of output pixel p0 + i (p = (n*oh + oy)*ow + ox) of group
    g, from the padded, centred, channels-last image xp of _pad_centre_hwc, for the rows of out
    below the pixel count, each with its K padding zeroed (other rows are not written). With
    dw == 1 and one group the taps of one kernel row are one contiguous run of kw*cg values in
    xp, copied at once (for a 3-channel input, runs of 3 would leave the loop overhead
    dominant); runs are written in increasing order (see _copy_run)."""
    nb, hp, wp, channels = xp.shape
    cg = channels // group
    whole_rows = dw == 1 and group == 1
    run = kw * cg if whole_rows else cg
    runs = 1 if whole_rows else kw
    k_len = kh * kw * cg
    k_pad = out.shape[1]
    xf = xp.reshape(-1)
    of = out.reshape(-1)
    line_len = wp * channels
    rows = min(out.shape[0], nb * oh * ow - p0)
    for i in range(rows):
        p = p0 + i
        n = p // (oh * ow)
        oy = (p // ow) % oh
        ox = p % ow
        for ky in range(kh):
            line = (n * hp + oy * sh + ky * dh) * line_len
            for r in range(runs):
                start = line + (ox * sw + r * dw) * channels + g * cg
                _copy_run(xf, start, of, i * k_pad + (ky * runs + r) * run, run, (i + 1) * k_pad)
        padding = of[i * k_pad + k_len : (i + 1) * k_pad]
        for j in range(padding.size):
            padding[j] = 0


@njit(cache=True, parallel=True)
def _im2col_hwc(xp, group, kh, kw, sh, sw, dh, dw, oh, ow, out):
    """out[g, n*oh*ow + p, (ky, kx, c)] = xp at the tap (_im2col_hwc_rows), one row of output
    pixels per work item; the K padding and the padding rows must be zeroed by the caller. Only
    for order-free sums."""
    nb = xp.shape[0]
    for t in numba.prange(group * nb * oh):
        g = t // (nb * oh)
        p0 = t % (nb * oh) * ow
        _im2col_hwc_rows(xp, group, g, kh, kw, sh, sw, dh, dw, oh, ow, p0, out[g, p0 : p0 + ow])


@njit(cache=True, parallel=True)
def _conv_i16_fused(xp, b, bias, group, kh, kw, sh, sw, dh, dw, oh, ow, rows_per_block, out):
    """out[g, n, m] = bias[g, n] + the product of _im2col_hwc and _gemm_i16, fused per block of
    rows_per_block output pixels (a multiple of TILE_M): a work item builds its rows of a in a
    buffer that stays in L1, multiplies them by all of b (which must fit L2) and adds the bias,
    so that neither the im2col matrix nor a padded product goes through memory. out (G, N, M) is
    not padded: the last, partial tile of rows goes through a small buffer."""
    groups, n_rows, m_rows = out.shape
    n_pad, k_pad = b.shape[1], b.shape[2]
    blocks = (m_rows + rows_per_block - 1) // rows_per_block
    bf = b.reshape(-1)
    of = out.reshape(-1)
    for t in numba.prange(group * blocks):
        g = t // blocks
        m0 = t % blocks * rows_per_block
        m1 = min(m0 + rows_per_block, m_rows)
        rows = (m1 - m0 + TILE_M - 1) // TILE_M * TILE_M
        buf = np.zeros(rows * k_pad, np.int16)
        a_rows = buf.reshape(rows, k_pad)
        _im2col_hwc_rows(xp, group, g, kh, kw, sh, sw, dh, dw, oh, ow, m0, a_rows)
        tail = np.empty(TILE_M * TILE_N, np.int32)
        for n in range(0, n_pad, TILE_N):
            ib = (g * n_pad + n) * k_pad
            for m in range(m0, m1, TILE_M):
                ia = (m - m0) * k_pad
                if m + TILE_M <= m1 and n + TILE_N <= n_rows:
                    io = (g * n_rows + n) * m_rows + m
                    _dot_tile(buf, ia, bf, ib, k_pad, k_pad // LANES, of, io, m_rows)
                else:
                    _dot_tile(buf, ia, bf, ib, k_pad, k_pad // LANES, tail, 0, TILE_M)
                    for c in range(min(TILE_N, n_rows - n)):
                        for r in range(min(TILE_M, m1 - m)):
                            of[(g * n_rows + n + c) * m_rows + m + r] = tail[c * TILE_M + r]
        for n in range(n_rows):
            dst = out[g, n, m0:m1]
            v = np.int32(bias[g, n])
            for i in range(dst.size):
                dst[i] += v


@njit(cache=True, parallel=True)
def _pack_weights(w, zero_points, channels_last, out):
    """out[g, o, k] = w[g*og + o] - zero_points[g*og + o], with k in (c, ky, kx) order, or in
    (ky, kx, c) order (matching _im2col_hwc) when channels_last."""
    o_ch, cg, kh, kw = w.shape
    og = o_ch // out.shape[0]
    for oc in numba.prange(o_ch):
        row = out[oc // og, oc % og]
        zp = zero_points[oc]
        for c in range(cg):
            for ky in range(kh):
                for kx in range(kw):
                    k = (ky * kw + kx) * cg + c if channels_last else (c * kh + ky) * kw + kx
                    row[k] = np.int64(w[oc, c, ky, kx]) - zp


@njit(cache=True, parallel=True)
def _centre_rows(a, zero_point, out):
    """out[0, m, k] = a[m, k] - zero_point: the A operand of matmul_acc."""
    for m in numba.prange(a.shape[0]):
        row = out[0, m]
        for k in range(a.shape[1]):
            row[k] = np.int64(a[m, k]) - zero_point


@njit(cache=True, parallel=True)
def _centre_columns(b, zero_points, out):
    """out[0, n, k] = b[k, n] - zero_points[n]: the B operand of matmul_acc, transposed in blocks
    of 64 rows of b so that both reads and writes stay in cache."""
    k_len, n_cols = b.shape
    for k0 in numba.prange((k_len + 63) // 64):
        for n in range(n_cols):
            row = out[0, n]
            zp = zero_points[n]
            for k in range(k0 * 64, min(k0 * 64 + 64, k_len)):
                row[k] = np.int64(b[k, n]) - zp


@njit(cache=True)
def _column_span(b, zero_points):
    """max over (k, n) of |b[k, n] - zero_points[n]|."""
    span = np.int64(0)
    for k in range(b.shape[0]):
        for n in range(b.shape[1]):
            span = max(span, abs(np.int64(b[k, n]) - zero_points[n]))
    return span


@njit(cache=True)
def _weight_span(w, zero_points):
    """max over o of |w[o] - zero_points[o]|."""
    span = np.int64(0)
    for oc in range(w.shape[0]):
        zp = zero_points[oc]
        for v in w[oc].reshape(-1):
            span = max(span, abs(np.int64(v) - zp))
    return span


@njit(cache=True)
def _min_max(v):
    lo = v[0]
    hi = v[0]
    for e in v:
        lo = min(lo, e)
        hi = max(hi, e)
    return np.int64(lo), np.int64(hi)


@njit(cache=True, parallel=True)
def _gemm_i16(a, b, out):
    """out[g, n, m] = sum_k a[g, m, k] * b[g, n, k], int16 operands, int32 wrapping sums.

    a (G, Mp, Kp), b (G, Np, Kp), out (G, Np, Mp), all C-contiguous, with Mp a multiple of
    TILE_M, Np of TILE_N and Kp of LANES (zero padded). Work items are (block of rows of b, row
    tile of a), block-major, so that a thread sweeps its tiles of a against a block of b that
    stays in L2 (B_BLOCK_BYTES) instead of streaming all of b from memory for every tile. Within
    an item K is split in K_BLOCK pieces, so that the tile's rows of a stay in L1 while they meet
    every row of the block (a 6 x 4608 tile, 55 KB, would be read from L2 for each pair of rows).
    """
    groups, m_pad, k_pad = a.shape
    n_pad = b.shape[1]
    m_tiles = m_pad // TILE_M
    n_block = max(TILE_N, B_BLOCK_BYTES // (2 * k_pad) // TILE_N * TILE_N)
    n_blocks = (n_pad + n_block - 1) // n_block
    af = a.reshape(-1)
    bf = b.reshape(-1)
    of = out.reshape(-1)
    for t in numba.prange(groups * n_blocks * m_tiles):
        g = t // (n_blocks * m_tiles)
        n0 = (t // m_tiles) % n_blocks * n_block
        m = (t % m_tiles) * TILE_M
        for k0 in range(0, k_pad, K_BLOCK):
            kv = (min(k0 + K_BLOCK, k_pad) - k0) // LANES
            for n in range(n0, min(n0 + n_block, n_pad), TILE_N):
                ia = (g * m_pad + m) * k_pad + k0
                ib = (g * n_pad + n) * k_pad + k0
                io = (g * n_pad + n) * m_pad + m
                if k0 == 0:
                    _dot_tile(af, ia, bf, ib, k_pad, kv, of, io, m_pad)
                else:
                    _dot_tile_add(af, ia, bf, ib, k_pad, kv, of, io, m_pad)


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


@njit(cache=True, parallel=True)
def _crop_add_bias(out, bias, n_rows, m_rows):
    """out[:, :n_rows, :m_rows] + bias[:, :, None], wrapping in int32, as a new contiguous array
    (numpy's add over the strided crop was as slow as a small GEMM)."""
    groups = out.shape[0]
    result = np.empty((groups, n_rows, m_rows), np.int32)
    for t in numba.prange(groups * n_rows):
        g, n = t // n_rows, t % n_rows
        b = np.int32(bias[g, n])
        src = out[g, n, :m_rows]
        dst = result[g, n]
        for m in range(m_rows):
            dst[m] = src[m] + b
    return result


def _span(values: np.ndarray, zero_point: int) -> int:
    """max |values - zero_point|, the operand bound that the overflow proof uses."""
    if values.size == 0:
        return 0
    lo, hi = _min_max(values.reshape(-1))
    return max(abs(int(lo) - zero_point), abs(int(hi) - zero_point))


def _wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement reduction of int64 values to `bits` bits."""
    half = np.int64(1 << (bits - 1))
    return ((v & np.int64((1 << bits) - 1)) ^ half) - half


def _round_up(v: int, multiple: int) -> int:
    return -(-v // multiple) * multiple


def _gemm(
    pack_a: Callable[[type, int, int], np.ndarray],
    pack_b: Callable[[type, int, int], np.ndarray],
    shape: tuple[int, int, int, int],
    a_span: int,
    b_span: int,
    bias: np.ndarray,
    acc: Accumulator,
    gemm16: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """out[g, n, m] = bias[g, n] + sum_k a[g, m, k] * b[g, n, k] through the accumulator `acc`.

    shape is (G, M, N, K); bias is int64 (G, N). pack_a(dtype, rows, cols) and pack_b return the
    centred operands as zero-padded (G, rows, cols) arrays of dtype, so each path gets its own
    layout: for np.int16 (the order-free path) the reduction may run in any order, the same for
    both; otherwise in the documented order. gemm16(b, bias), when given, computes the int16 product
    plus bias itself, as int32 (G, N, M) (for a convolution: im2col fused into the GEMM), instead
    of pack_a, _gemm_i16 and _crop_add_bias.
    """
    groups, m_rows, n_rows, k_len = shape
    bias_span = int(np.abs(bias).max()) if bias.size else 0
    bound = bias_span + k_len * a_span * b_span
    fits_acc = bound <= acc.max
    if max(a_span, b_span) <= INT16_MAX and (
        (acc.overflow == "wrap" and acc.bits <= 32) or (fits_acc and bound <= INT32_MAX)
    ):
        m_pad, n_pad = _round_up(m_rows, TILE_M), _round_up(n_rows, TILE_N)
        k_pad = _round_up(k_len, LANES)
        b16 = pack_b(np.int16, n_pad, k_pad)
        if gemm16 is not None:
            out = gemm16(b16, bias)
        else:
            out = np.empty((groups, n_pad, m_pad), dtype=np.int32)
            _gemm_i16(pack_a(np.int16, m_pad, k_pad), b16, out)
            out = _crop_add_bias(out, bias, n_rows, m_rows)
        if acc.overflow == "wrap" and acc.bits < 32:
            out = _wrap(out.astype(np.int64), acc.bits)
        return out.astype(acc.dtype, copy=False)
    a = pack_a(np.int64, m_rows, k_len)
    b = pack_b(np.int64, n_rows, k_len)
    out = np.empty((groups, n_rows, m_rows), dtype=np.int64)
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


class PackedWeights:
    """Constant weights of a convolution or matrix product, centred and laid out once.

    What onnxruntime's PrePack does at session creation: the B operand of the GEMMs, b[g, n, k]
    = w - zero_point[n], zero padded, in the int16 layout of the order-free GEMM (built at
    packing, when the centred weights fit int16) and, only if a call needs it (wide operands or
    a saturating accumulator), in the int64 layout of the ordered GEMMs. `kind` is "conv"
    (weights (O, C/group, kh, kw), k in (ky, kx, c) order for int16, (c, ky, kx) for int64) or
    "matmul" (weights b (K, N), k in order). The packed weights are immutable: they do not follow
    later changes of the array they were packed from.
    """

    def __init__(self, kind: str, w: np.ndarray, zero_points: np.ndarray, group: int):
        self.kind = kind
        self.shape = tuple(w.shape)
        self.group = group
        self.source = np.array(w, copy=True, order="C")
        self.source.flags.writeable = False
        if kind == "conv":
            o_ch = w.shape[0]
            self.channels = o_ch
            self.k_len = int(np.prod(w.shape[1:]))
            self.zero_points = _broadcast_zero_points(zero_points, o_ch)
            self.span = int(_weight_span(self.source, self.zero_points)) if w.size else 0
        else:
            self.channels = w.shape[1]
            self.k_len = w.shape[0]
            self.zero_points = _broadcast_zero_points(zero_points, self.channels)
            self.span = int(_column_span(self.source, self.zero_points))
        self._b64: np.ndarray | None = None
        self.b16: np.ndarray | None = None
        if self.span <= INT16_MAX:
            og = self.channels // group
            self.b16 = self._pack(np.int16, _round_up(og, TILE_N), _round_up(self.k_len, LANES))
        self.direct: np.ndarray | None = None
        if kind == "conv" and group == 1 and self.b16 is not None and self.k_len <= DIRECT_MAX_K:
            self.direct = _pack_direct(self.b16[0], self.shape)
            self.direct.flags.writeable = False
        self.zero_points.flags.writeable = False

    def _pack(self, dtype: type, rows: int, cols: int) -> np.ndarray:
        b = np.zeros((self.group, rows, cols), dtype=dtype)
        if self.kind == "conv":
            _pack_weights(self.source, self.zero_points, dtype == np.int16, b)
        else:
            _centre_columns(self.source, self.zero_points, b)
        return b

    def operand(self, dtype: type, rows: int, cols: int) -> np.ndarray:
        """The B operand of the GEMM that `_gemm` chose, as its pack_b."""
        if dtype == np.int16:
            assert self.b16 is not None and self.b16.shape[1:] == (rows, cols)
            return self.b16
        if self._b64 is None:
            self._b64 = self._pack(np.int64, rows, cols)
        assert self._b64.shape[1:] == (rows, cols)
        return self._b64

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in (self.b16, self._b64, self.direct) if b is not None)


def _pack_direct(b16: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The weights of _conv_direct from the centred channels-last int16 rows b16 (N', K'):
    bp[n // DIRECT_N, ky*P + j, n % DIRECT_N, e] = the weight of channel n at position 2j + e of
    kernel row ky, a run of kw*C values in (kx, c) order padded with a 0 to 2P; channels padded
    to a multiple of DIRECT_N with zeros."""
    o_ch, cg, kh, kw = shape
    run = kw * cg
    pairs = -(-run // 2)
    rows = np.zeros((_round_up(o_ch, DIRECT_N), kh, 2 * pairs), np.int16)
    rows[:o_ch, :, :run] = b16[:o_ch, : kh * run].reshape(o_ch, kh, run)
    words = rows.view(np.int32).reshape(-1, DIRECT_N, kh * pairs)  # a pair per int32 word
    bp = np.ascontiguousarray(words.transpose(0, 2, 1)).view(np.int16)
    return bp.reshape(-1, kh * pairs, DIRECT_N, 2)


def _broadcast_zero_points(zero_points: np.ndarray, channels: int) -> np.ndarray:
    return np.ascontiguousarray(
        np.broadcast_to(np.asarray(zero_points, dtype=np.int64).reshape(-1), (channels,))
    )


def pack_conv_weights(w: np.ndarray, w_zero_point: np.ndarray, group: int) -> PackedWeights:
    """Pack constant convolution weights (O, C/group, kh, kw) for conv2d_acc_packed."""
    w = np.asarray(w)
    if w.ndim != 4 or group < 1 or w.shape[0] % group:
        raise ValueError(f"weights of shape {w.shape} do not split into {group} groups")
    return PackedWeights("conv", w, w_zero_point, group)


def pack_matmul_weights(b: np.ndarray, b_zero_point: np.ndarray) -> PackedWeights:
    """Pack a constant right-hand matrix b (K, N) for matmul_acc_packed."""
    b = np.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"matmul weights must be 2-D, not {b.shape}")
    return PackedWeights("matmul", b, b_zero_point, 1)


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
    taps hold x_zero_point and so add 0. The sum goes through the accumulator `acc`. Packs w and
    calls conv2d_acc_packed; pack once with pack_conv_weights when w is constant.
    """
    check_conv(x.shape, np.shape(w), strides, pads, dilations, group)
    packed = pack_conv_weights(w, w_zero_point, group)
    return conv2d_acc_packed(x, packed, x_zero_point, bias, strides, pads, dilations, acc)


def conv2d_acc_packed(
    x: np.ndarray,
    packed: PackedWeights,
    x_zero_point: int,
    bias: np.ndarray | None,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    acc: Accumulator = INT32_WRAP,
) -> np.ndarray:
    """conv2d_acc with weights (and their zero points and group) from pack_conv_weights."""
    if packed.kind != "conv":
        raise ValueError("conv2d_acc_packed needs weights from pack_conv_weights")
    group = packed.group
    nb, channels, h, wd = x.shape
    o_ch, cg, kh, kw = packed.shape
    oh, ow = check_conv(x.shape, packed.shape, strides, pads, dilations, group)
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    og = o_ch // group
    k_len = cg * kh * kw
    zp = int(x_zero_point)
    xc = np.ascontiguousarray(x)

    def pack_a(dtype: type, rows: int, cols: int) -> np.ndarray:
        if dtype != np.int16:
            a = np.zeros((group, rows, cols), dtype=dtype)
            _im2col(xc, zp, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, a)
            return a
        a = np.zeros((group, rows, cols), dtype=dtype)
        _im2col_hwc(centred_hwc(), group, kh, kw, sh, sw, dh, dw, oh, ow, a)
        return a

    def centred_hwc() -> np.ndarray:
        xp = np.zeros((nb, h + pt + pb, wd + pl + pr, channels), np.int16)
        _pad_centre_hwc(xc, zp, pt, pl, xp)
        return xp

    gemm16 = None
    if packed.direct is not None and dw == 1 and (sw * cg) % 2 == 0:
        # short reduction: direct convolution from the channels-last image, no im2col
        def gemm16(b: np.ndarray, bias: np.ndarray) -> np.ndarray:
            hp, wp = h + pt + pb, wd + pl + pr
            wp += (wp * channels) % 2  # an even row length: every tap run starts on a word
            line = wp * channels
            flat = np.zeros(nb * hp * line + 2, np.int16)  # a spare word for odd runs
            _pad_centre_hwc(xc, zp, pt, pl, flat[:-2].reshape(nb, hp, wp, channels))
            img = flat.view(np.int32)
            pairs = -(-(kw * cg) // 2)
            offs = (np.arange(kh)[:, None] * (dh * line // 2) + np.arange(pairs)).reshape(-1)
            m_rows = nb * oh * ow
            bases = np.empty(_round_up(m_rows, DIRECT_M), np.int64)
            _direct_bases(nb, oh, ow, hp, line, sh, sw * cg, bases)
            bias32 = np.zeros(packed.direct.shape[0] * DIRECT_N, np.int32)
            bias32[:og] = bias[0].astype(np.int32)
            out = np.empty((1, og, m_rows), np.int32)
            _conv_direct(img, bases, offs.astype(np.int64), packed.direct, bias32, out[0])
            return out

    elif packed.b16 is not None and packed.b16[0].nbytes <= B_BLOCK_BYTES:
        # b fits L2: im2col fused into the GEMM, FUSED_A_BYTES of rows of a per work item
        k_pad = packed.b16.shape[2]
        rows_per_block = max(TILE_M, FUSED_A_BYTES // (2 * k_pad) // TILE_M * TILE_M)

        def gemm16(b: np.ndarray, bias: np.ndarray) -> np.ndarray:
            out = np.empty((group, og, nb * oh * ow), np.int32)
            _conv_i16_fused(
                centred_hwc(), b, bias, group, kh, kw, sh, sw, dh, dw, oh, ow, rows_per_block, out
            )
            return out

    bias_g = _bias_array(bias, o_ch).reshape(group, og)
    shape = (group, nb * oh * ow, og, k_len)
    out = _gemm(pack_a, packed.operand, shape, _span(x, zp), packed.span, bias_g, acc, gemm16)
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
    Packs b and calls matmul_acc_packed; pack once with pack_matmul_weights when b is constant.
    """
    if np.ndim(b) != 2 or np.shape(b)[0] != np.shape(a)[1]:
        raise ValueError(f"matmul shapes {np.shape(a)} and {np.shape(b)} do not match")
    return matmul_acc_packed(a, pack_matmul_weights(b, b_zero_point), a_zero_point, bias, acc)


def matmul_acc_packed(
    a: np.ndarray,
    packed: PackedWeights,
    a_zero_point: int,
    bias: np.ndarray | None,
    acc: Accumulator = INT32_WRAP,
) -> np.ndarray:
    """matmul_acc with b (and its zero points) from pack_matmul_weights."""
    if packed.kind != "matmul":
        raise ValueError("matmul_acc_packed needs weights from pack_matmul_weights")
    k_len, n_cols = packed.shape
    if a.ndim != 2 or a.shape[1] != k_len:
        raise ValueError(f"matmul shapes {a.shape} and {packed.shape} do not match")
    zp = int(a_zero_point)
    m_rows = a.shape[0]
    ac = np.ascontiguousarray(a)

    def pack_a(dtype: type, rows: int, cols: int) -> np.ndarray:
        out = np.zeros((1, rows, cols), dtype=dtype)
        _centre_rows(ac, zp, out)
        return out

    bias_g = _bias_array(bias, n_cols)[None]
    shape = (1, m_rows, n_cols, k_len)
    out = _gemm(pack_a, packed.operand, shape, _span(ac, zp), packed.span, bias_g, acc)
    return np.ascontiguousarray(out[0].T)
