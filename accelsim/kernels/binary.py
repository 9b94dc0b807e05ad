"""Binary (bipolar, +-1) convolution and matrix multiplication by xnor-popcount.

A +-1 value is one bit (1 for +1, 0 for -1). Over n positions the dot product is
n - 2 * popcount(x xor w). The kernel works on nibbles, four channels of one tap per byte:

- activations are packed once into nibble planes: plane (phase, q) holds, for every pixel of the
  zero-padded input, the nibble of channels q, q + cn, q + 2cn, q + 3cn (cn nibbles per tap).
  With stride s the padded image is split into
  its s x s phases (space to depth), so that every tap of every output pixel is at a fixed offset
  in one plane from the pixel's position: a convolution becomes a sum over taps of shifted planes,
  with no im2col. Output pixels are numbered on the phase grid (row length ws >= OW); the few
  columns past OW are computed and dropped;
- a weight nibble v selects the 16-entry table popcount(v xor i); one vpshufb of 32 activation
  nibbles (32 consecutive pixels) through it counts the differing bits of 32 pixels for that
  channel and tap. A register tile of ROWS x 32 pixels by COLS channels adds these counts in
  bytes, folded into 16-bit lanes every FOLD steps;
- with fewer than 4 channels (conv1's 3), the (tap, channel) bits are packed densely across
  nibbles instead, read from one tap-shifted plane per nibble step (_tap_planes);
- channels past C (in the last nibble of a tap) are 0 in both operands and add nothing; padded
  taps read bits 0, that is -1, where a zero-padded +-1 convolution (QONNX/Brevitas binary layers)
  adds 0, so the sum of the weights over each pixel's padded taps is added back at the end.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import config
from numba.extending import intrinsic

from accelsim.kernels.geometry import check_conv

WORD = 64
PIXELS = 32  # pixels per vector: one byte each
ROWS = 3  # pixel vectors per register tile
COLS = 3  # channels per register tile
FOLD = 63  # steps of at most 4 per byte before the byte counts would overflow
K_CHUNK = 16380  # nibble steps per call, so that a 16-bit count (<= 4 per step) cannot overflow
CHANNEL_CHUNK = 4 * COLS  # channels per parallel work item

# TABLE[v, i] = popcount(v xor (i mod 16)), one 16-entry table per 128-bit lane; a weight nibble
# is stored as 4 * v, the table row's offset in units of 8 bytes.
# Aligned to a cache line, so that no 32-byte row straddles two lines (numpy only guarantees 16
# bytes: half the rows were split loads).
_TABLE_BUF = np.empty(16 * PIXELS + 64, np.uint8)
_TABLE_AT = -_TABLE_BUF.ctypes.data % 64
TABLE = _TABLE_BUF[_TABLE_AT : _TABLE_AT + 16 * PIXELS].reshape(16, PIXELS)
TABLE[:] = [[bin(v ^ (i % 16)).count("1") for i in range(PIXELS)] for v in range(16)]
TABLE.flags.writeable = False


def _has_avx2() -> bool:
    """Whether numba compiles for a CPU with AVX2 (vpshufb on 32 bytes)."""
    features = config.CPU_FEATURES if config.CPU_NAME else None
    if features is not None:
        return "+avx2" in features.split(",")
    return bool(llvm.get_host_cpu_features().get("avx2"))


def _declare(module, name, ret, params):
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, params), name)


def _make_count_tile(rows, cols=COLS):
    """The register tile of `rows` pixel vectors by `cols` channels, as a numba intrinsic."""

    @intrinsic
    def count_tile(
        typingctx,
        planes,
        a_base,
        offsets,
        j_start,
        j_stop,
        widx,
        w_base,
        ldw,
        table,
        out,
        o_base,
        ldo,
        k_len,
    ):
        """out[o_base + c*ldo + r*32 + p] = k_len - 2 * popcount over steps j in
        [j_start, j_stop) of table[widx[w_base + c*ldw + j] / 4][planes[a_base + r*32 + p +
        offsets[j]]], the count being the differing bits of pixel r*32 + p and channel c: the
        xnor-popcount sum of +-1 values, padding ignored. When j_start > 0 (a later chunk of
        K) the -2 * popcount is added to out instead. j_stop - j_start is in [1, K_CHUNK]; out
        is int16 (when the sums fit: k_len < 2**15) or int32.

        LLVM IR, because numba cannot express vpshufb; without AVX2 the lookup becomes a generic
        ctpop of the xor.
        """
        ints = (a_base, j_start, j_stop, w_base, ldw, o_base, ldo, k_len)
        u8_arrays = (planes, widx, table)
        if not (
            all(isinstance(t, types.Integer) for t in ints)
            and all(isinstance(t, types.Array) and t.dtype == types.uint8 for t in u8_arrays)
            and isinstance(offsets, types.Array)
            and offsets.dtype == types.int64
            and isinstance(out, types.Array)
            and out.dtype in (types.int16, types.int32)
        ):
            return None
        sig = types.void(
            planes,
            a_base,
            offsets,
            j_start,
            j_stop,
            widx,
            w_base,
            ldw,
            table,
            out,
            o_base,
            ldo,
            k_len,
        )
        avx2 = _has_avx2()
        out_bits = out.dtype.bitwidth

        def codegen(context, builder, signature, args):
            i64, i32, i16, i8 = ir.IntType(64), ir.IntType(32), ir.IntType(16), ir.IntType(8)
            v32i8, v16i16 = ir.VectorType(i8, PIXELS), ir.VectorType(i16, PIXELS // 2)
            v32i32 = ir.VectorType(i32, PIXELS)

            def data(k):
                return context.make_array(signature.args[k])(context, builder, args[k]).data

            a_data, off_data, w_data, t_data, o_data = data(0), data(2), data(5), data(8), data(9)
            a_base_, j0, j1, w_base_, ldw_, o_base_, ldo_, k_len_ = (
                context.cast(builder, args[i], signature.args[i], types.int64)
                for i in (1, 3, 4, 6, 7, 10, 11, 12)
            )

            def const(v, ty=i64):
                return ir.Constant(ty, v)

            a_rows = [
                builder.gep(a_data, [builder.add(a_base_, const(PIXELS * r))]) for r in range(rows)
            ]
            w_rows = [
                builder.gep(w_data, [builder.add(w_base_, builder.mul(ldw_, const(c)))])
                for c in range(cols)
            ]
            module = builder.module
            pshufb = _declare(module, "llvm.x86.avx2.pshuf.b", v32i8, [v32i8, v32i8])
            ctpop = _declare(module, "llvm.ctpop.v32i8", v32i8, [v32i8])

            def vector_at(base, offset):
                ptr = builder.bitcast(builder.gep(base, [offset]), v32i8.as_pointer())
                return builder.load(ptr, align=1)

            def lookup(w_nibble4, a_vec):
                """popcount(v xor a) per byte, v = w_nibble4 / 4."""
                if avx2:
                    row = vector_at(t_data, builder.shl(builder.zext(w_nibble4, i64), const(3)))
                    return builder.call(pshufb, [row, a_vec])
                v = builder.lshr(w_nibble4, const(2, i8))
                splat = builder.insert_element(ir.Constant(v32i8, None), v, const(0, i32))
                splat = builder.shuffle_vector(splat, splat, ir.Constant(v32i32, None))
                return builder.call(ctpop, [builder.xor(a_vec, splat)])

            entry = builder.block
            chunk = builder.append_basic_block("chunk")
            step_block = builder.append_basic_block("step")
            fold = builder.append_basic_block("fold")
            done = builder.append_basic_block("done")
            builder.branch(chunk)

            builder.position_at_end(chunk)
            start = builder.phi(i64)
            start.add_incoming(j0, entry)
            wide = []
            for _ in range(2 * rows * cols):
                phi = builder.phi(v16i16)
                phi.add_incoming(ir.Constant(v16i16, None), entry)
                wide.append(phi)
            stop = builder.add(start, const(FOLD))
            stop = builder.select(builder.icmp_signed("<", stop, j1), stop, j1)
            builder.branch(step_block)

            builder.position_at_end(step_block)
            j = builder.phi(i64)
            j.add_incoming(start, chunk)
            sums = []
            for _ in range(rows * cols):
                phi = builder.phi(v32i8)
                phi.add_incoming(ir.Constant(v32i8, None), chunk)
                sums.append(phi)
            offset = builder.load(builder.gep(off_data, [j]))
            nibbles = [builder.load(builder.gep(w_row, [j])) for w_row in w_rows]
            a_vecs = [vector_at(a_row, offset) for a_row in a_rows]
            updated = [
                builder.add(sums[r * cols + c], lookup(nibbles[c], a_vecs[r]))
                for r in range(rows)
                for c in range(cols)
            ]
            j_next = builder.add(j, const(1))
            j.add_incoming(j_next, step_block)
            for phi, value in zip(sums, updated, strict=True):
                phi.add_incoming(value, step_block)
            builder.cbranch(builder.icmp_signed("<", j_next, stop), step_block, fold)

            builder.position_at_end(fold)
            # vpunpcklbw / vpunpckhbw with zero bytes: 16-bit counts of the pixels
            # [0..7, 16..23] (low) and [8..15, 24..31] (high), per 128-bit lane.
            zero = ir.Constant(v32i8, None)
            unpack = [
                ir.Constant(
                    v32i32,
                    [
                        (16 * (i // 16) + 8 * half + (i % 16) // 2) if i % 2 == 0 else PIXELS
                        for i in range(PIXELS)
                    ],
                )
                for half in (0, 1)
            ]
            widened = []
            for i, s in enumerate(updated):
                for half in (0, 1):
                    counts = builder.bitcast(builder.shuffle_vector(s, zero, unpack[half]), v16i16)
                    widened.append(builder.add(wide[2 * i + half], counts))
            for phi, value in zip(wide, widened, strict=True):
                phi.add_incoming(value, fold)
            start.add_incoming(stop, fold)
            builder.cbranch(builder.icmp_signed("<", stop, j1), chunk, done)

            builder.position_at_end(done)
            out_ty = ir.IntType(out_bits)
            v32out = ir.VectorType(out_ty, PIXELS)
            k_vec = builder.insert_element(
                ir.Constant(v32out, None), builder.trunc(k_len_, out_ty), const(0, i32)
            )
            k_vec = builder.shuffle_vector(k_vec, k_vec, ir.Constant(v32i32, None))
            is_first = builder.icmp_signed("==", j0, const(0))
            one = ir.Constant(v32out, [1] * PIXELS)
            # Pixel order from the unpacked halves: the low 128 bits of each, then the high.
            in_order = ir.Constant(
                v32i32, [i % 8 + 8 * (i // 16) + 16 * (i // 8 % 2) for i in range(PIXELS)]
            )
            twice, ptrs = [], []
            for r in range(rows):
                for c in range(cols):
                    low, high = widened[2 * (r * cols + c)], widened[2 * (r * cols + c) + 1]
                    counts = builder.shuffle_vector(low, high, in_order)
                    if out_bits > 16:
                        counts = builder.zext(counts, v32out)
                    twice.append(builder.shl(counts, one))
                    index = builder.add(
                        o_base_, builder.add(builder.mul(ldo_, const(c)), const(PIXELS * r))
                    )
                    ptrs.append(builder.bitcast(builder.gep(o_data, [index]), v32out.as_pointer()))
            # A branch, not a select: the first chunk must not read the (uninitialised) output.
            first = builder.append_basic_block("first")
            later = builder.append_basic_block("later")
            end = builder.append_basic_block("end")
            builder.cbranch(is_first, first, later)
            builder.position_at_end(first)
            for value, ptr in zip(twice, ptrs, strict=True):
                builder.store(builder.sub(k_vec, value), ptr, align=2)
            builder.branch(end)
            builder.position_at_end(later)
            for value, ptr in zip(twice, ptrs, strict=True):
                builder.store(builder.sub(builder.load(ptr, align=2), value), ptr, align=2)
            builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return sig, codegen

    return count_tile


_count_tile_1 = _make_count_tile(1)
_count_tile_2 = _make_count_tile(2)
_count_tile_3 = _make_count_tile(ROWS)
# Wider tiles for the last one or two pixel vectors of a row of tiles (l3, l4: 7 and 2 vectors):
# as many lookups per step as 3 x 3 (or nearly) for fewer loads of table rows per lookup.
_count_tile_2x4 = _make_count_tile(2, 4)
_count_tile_1x6 = _make_count_tile(1, 6)


@njit(cache=True)
def _sign_nibbles(s0, s1, s2, s3, m1, m2, m3, dst):
    """dst[i, j] = the nibble whose bit b is s_b[i, j] > 0 (and m_b, 0 or 1, for b > 0: a
    channel past the group's gives 0), for five 2-D views of the same shape: four channels in one
    pass. Indexed by the loop counters alone (non-negative), so that LLVM vectorises the inner
    loop; one call per plane, not per row."""
    rows, cols = dst.shape
    for i in range(rows):
        for j in range(cols):
            dst[i, j] = (
                np.uint8(s0[i, j] > 0)
                | (np.uint8(s1[i, j] > 0) & m1) << np.uint8(1)
                | (np.uint8(s2[i, j] > 0) & m2) << np.uint8(2)
                | (np.uint8(s3[i, j] > 0) & m3) << np.uint8(3)
            )


@njit(cache=True, parallel=True)
def _space_to_depth(x, sh, sw, out):
    """out[n, c, (y % sh)*sw + x % sw, y // sh, x // sw] = x[n, c, y, x]: the image split into
    its stride phases, so that every phase is read as contiguous rows. sw == 2 is written with a
    constant stride, which LLVM vectorises (even/odd deinterleave); other strides are scalar."""
    nb, channels, h, w = x.shape
    for t in numba.prange(nb * channels):
        n, c = t // channels, t % channels
        for y in range(h):
            row = x[n, c, y]
            py = (y % sh) * sw
            if sw == 2:
                even, odd = out[n, c, py, y // sh], out[n, c, py + 1, y // sh]
                for j in range(w // 2):
                    even[j] = row[2 * j]
                    odd[j] = row[2 * j + 1]
                if w % 2:
                    even[w // 2] = row[w - 1]
            else:
                for ix in range(w):
                    out[n, c, py + ix % sw, y // sh, ix // sw] = row[ix]


@njit(cache=True, parallel=True)
def _nibble_planes(xs, group, sh, sw, h, w, pt, pl, ws, out):
    """out[n, g, (py*sw + px)*cn + q, iy*ws + ix] = the nibble of channels q + b*cn (b < 4) of
    group g at padded position (iy*sh + py, ix*sw + px), bit b set when x > 0 there, for the
    (h, w) image x split by _space_to_depth into xs; out is zeroed, so padding stays 0.
    Branch-free: signs are random."""
    nb, channels = xs.shape[:2]
    cg = channels // group
    cn = (cg + 3) // 4
    phases = sh * sw
    hs = out.shape[3] // ws
    for t in numba.prange(nb * group * phases * cn):
        n = t // (group * phases * cn)
        g = (t // (phases * cn)) % group
        phase = (t // cn) % phases
        q = t % cn
        py, px = phase // sw, phase % sw
        plane = out[n, g, phase * cn + q, : hs * ws].reshape(hs, ws)
        ix_lo = (pl - px + sw - 1) // sw
        ix_hi = min((w + pl - px + sw - 1) // sw, ws)
        iy_lo = (pt - py + sh - 1) // sh
        iy_hi = min((h + pt - py + sh - 1) // sh, hs)
        if ix_hi <= ix_lo or iy_hi <= iy_lo:
            continue
        dst = plane[iy_lo:iy_hi, ix_lo:ix_hi]
        # The source pixel of dst[0, 0] and, in xs, its phase and position.
        y0, x0 = iy_lo * sh + py - pt, ix_lo * sw + px - pl
        src = xs[n, :, (y0 % sh) * sw + x0 % sw, y0 // sh : y0 // sh + iy_hi - iy_lo]
        src = src[:, :, x0 // sw : x0 // sw + ix_hi - ix_lo]
        # Channel q + b*cn of the group, or (masked out) channel q when it is past the group's.
        m1, m2, m3 = q + cn < cg, q + 2 * cn < cg, q + 3 * cn < cg
        c0 = g * cg + q
        _sign_nibbles(
            src[c0], src[c0 + cn * m1], src[c0 + 2 * cn * m2], src[c0 + 3 * cn * m3],
            np.uint8(m1), np.uint8(m2), np.uint8(m3), dst,
        )  # fmt: skip


@njit(cache=True)
def _tap_offsets(cn, kh, kw, sh, sw, dh, dw, ws, plane_len, offsets):
    """offsets[q*kh*kw + ky*kw + kx] = where nibble q of tap (ky, kx) sits in the planes, relative
    to the output pixel's position."""
    for ky in range(kh):
        for kx in range(kw):
            phase = ((ky * dh) % sh) * sw + (kx * dw) % sw
            shift = ((ky * dh) // sh) * ws + (kx * dw) // sw
            for q in range(cn):
                offsets[(q * kh + ky) * kw + kx] = (phase * cn + q) * plane_len + shift


@njit(cache=True)
def _tap_nibbles(s0, s1, s2, s3, b0, b1, b2, b3, dst):
    """dst[j] = the nibble whose bit k is set when s_k[j] & b_k (b_k one bit, or 0 for a bit past
    the reduction), for five 1-D uint8 views of the same length: byte compares, which LLVM
    vectorises (a variable shift per source would widen every lane to 64 bits)."""
    for j in range(dst.size):
        dst[j] = (
            np.uint8(s0[j] & b0 != 0)
            | np.uint8(s1[j] & b1 != 0) << np.uint8(1)
            | np.uint8(s2[j] & b2 != 0) << np.uint8(2)
            | np.uint8(s3[j] & b3 != 0) << np.uint8(3)
        )


@njit(cache=True, parallel=True)
def _tap_planes(planes, tap_offsets, cg, k_len, out):
    """out[n, g, i, p] = the nibble of reduction bits 4i..4i+3 at grid pixel p, bit k being
    channel k % cg of tap k // cg: bit k % cg of planes[n, g] (the phase planes flattened, one
    nibble per tap holding channels 0..cg-1, cg < 4) at p + tap_offsets[k // cg]. Taps packed
    densely across nibbles: conv1's 3 channels x 49 taps take 37 nibble steps instead of 49."""
    nb, groups, n_nib, m = out.shape
    for t in numba.prange(nb * groups * n_nib):
        n, g, i = t // (groups * n_nib), (t // n_nib) % groups, t % n_nib
        src = planes[n, g]
        # Bit k of the reduction, or (masked out by a zero bit) the last one again past its end.
        last = k_len - 1
        k0, k1, k2, k3 = 4 * i, min(4 * i + 1, last), min(4 * i + 2, last), min(4 * i + 3, last)
        a0, a1 = tap_offsets[k0 // cg], tap_offsets[k1 // cg]
        a2, a3 = tap_offsets[k2 // cg], tap_offsets[k3 // cg]
        _tap_nibbles(
            src[a0 : a0 + m], src[a1 : a1 + m], src[a2 : a2 + m], src[a3 : a3 + m],
            np.uint8(1 << (k0 % cg)), np.uint8((4 * i + 1 < k_len) << (k1 % cg)),
            np.uint8((4 * i + 2 < k_len) << (k2 % cg)), np.uint8((4 * i + 3 < k_len) << (k3 % cg)),
            out[n, g, i],
        )  # fmt: skip


@njit(cache=True)
def _ones_per_tap(widx_row, taps, ones):
    """ones[t] = the set bits of the weight nibbles of tap t (entries i with i % taps == t).
    Summed 32 rows of `taps` at a time into one long accumulator, so that the loop vectorises
    (a slice keeps the index non-negative, which LLVM needs), then folded."""
    span = 32 * taps
    acc = np.zeros(span, np.int32)
    full = widx_row.size // span * span
    for start in range(0, full + span, span):
        block = widx_row[start : start + span]
        for j in range(block.size):
            v = block[j] >> 2
            acc[j] += (v & 1) + (v >> 1 & 1) + (v >> 2 & 1) + (v >> 3)
    ones[:] = 0
    for row in range(32):
        for t in range(taps):
            ones[t] += acc[row * taps + t]


@njit(cache=True, parallel=True)
def _weight_nibbles(w, group, widx, wsum):
    """widx[g, o, q*T + t] = 4 * (the nibble of channels q + b*cn (b < 4) of tap t of filter
    g*og + o), for w viewed as (O, C, T); wsum[o, t] = the sum of the +-1 weights of tap t (what a
    padded tap must add back). widx is zeroed. With channels grouped q + b*cn, each bit b is one
    contiguous run of w, so the loops vectorise."""
    o_ch, cg, taps = w.shape
    og = o_ch // group
    cn = (cg + 3) // 4
    for oc in numba.prange(o_ch):
        dst = widx[oc // og, oc % og]
        src = w[oc].reshape(-1)
        for b in range(4):
            run = src[b * cn * taps : (b + 1) * cn * taps]
            shift = np.uint8(b + 2)
            for i in range(run.size):
                dst[i] |= np.uint8(run[i] > 0) << shift
        _ones_per_tap(dst[: cn * taps], taps, wsum[oc])
        for t in range(taps):
            wsum[oc, t] = 2 * wsum[oc, t] - cg


@njit(cache=True)
def _valid_taps(start, dilation, taps, size):
    """[lo, hi): the taps k of a window at `start` with 0 <= start + k*dilation < size."""
    lo = min(max(0, (-start + dilation - 1) // dilation), taps)
    hi = max(min(taps, (size - start + dilation - 1) // dilation), lo)
    return lo, hi


@njit(cache=True)
def _padding_sums(wsum, kh, kw):
    """Summed-area table of wsum (O, kh*kw) as (O, kh+1, kw+1), so that the sum over any window
    of valid taps is four lookups."""
    table = np.zeros((wsum.shape[0], kh + 1, kw + 1), np.int64)
    for oc in range(wsum.shape[0]):
        for ky in range(kh):
            for kx in range(kw):
                table[oc, ky + 1, kx + 1] = (
                    wsum[oc, ky * kw + kx]
                    + table[oc, ky, kx + 1]
                    + table[oc, ky + 1, kx]
                    - table[oc, ky, kx]
                )
    return table


@njit(cache=True, parallel=True)
def _xnor_counts(planes, offsets, widx, table, blocks, k_len, out):
    """out[n, g, o, p] = k_len - 2 * the differing bits of output pixel p (phase grid) and filter
    o, for p below blocks * 32 (padded taps counted as -1); out need not be initialised. Work
    items are (image, ROWS blocks, CHANNEL_CHUNK channels)."""
    nb, groups, n_planes, plane_len = planes.shape
    og_pad, k_steps = widx.shape[1], widx.shape[2]
    m_pad = out.shape[3]
    pf = planes.reshape(-1)
    wf = widx.reshape(-1)
    of = out.reshape(-1)
    pixel_tiles = (blocks + ROWS - 1) // ROWS
    chunks = (og_pad + CHANNEL_CHUNK - 1) // CHANNEL_CHUNK
    for t in numba.prange(nb * groups * pixel_tiles * chunks):
        img = t // (pixel_tiles * chunks)
        b0 = (t // chunks) % pixel_tiles * ROWS
        o_lo = t % chunks * CHANNEL_CHUNK
        g = img % groups
        rows = min(ROWS, blocks - b0)
        a_base = img * n_planes * plane_len + b0 * PIXELS
        o_hi = min(o_lo + CHANNEL_CHUNK, og_pad)
        # Wide tiles (2 x 4, 1 x 6) cover the chunk's channels in whole steps, leaving a multiple
        # of COLS (og_pad is one) to the 3-column tiles: 2 x 4 only on a full chunk of 12.
        wide = 4 if rows == 2 else 6
        n_wide = (o_hi - o_lo) // CHANNEL_CHUNK * 3 if rows == 2 else (o_hi - o_lo) // 6
        o_wide = o_lo + n_wide * wide if rows < ROWS else o_lo
        for o in range(o_lo, o_wide, wide):
            w_base = (g * og_pad + o) * k_steps
            o_base = (img * og_pad + o) * m_pad + b0 * PIXELS
            for j in range(0, k_steps, K_CHUNK):
                j_stop = min(j + K_CHUNK, k_steps)
                if rows == 2:
                    _count_tile_2x4(
                        pf, a_base, offsets, j, j_stop, wf, w_base, k_steps, table, of, o_base,
                        m_pad, k_len,
                    )  # fmt: skip
                else:
                    _count_tile_1x6(
                        pf, a_base, offsets, j, j_stop, wf, w_base, k_steps, table, of, o_base,
                        m_pad, k_len,
                    )  # fmt: skip
        for o in range(o_wide, o_hi, COLS):
            w_base = (g * og_pad + o) * k_steps
            o_base = (img * og_pad + o) * m_pad + b0 * PIXELS
            for j in range(0, k_steps, K_CHUNK):
                j_stop = min(j + K_CHUNK, k_steps)
                if rows == 3:
                    _count_tile_3(
                        pf, a_base, offsets, j, j_stop, wf, w_base, k_steps, table, of, o_base,
                        m_pad, k_len,
                    )  # fmt: skip
                elif rows == 2:
                    _count_tile_2(
                        pf, a_base, offsets, j, j_stop, wf, w_base, k_steps, table, of, o_base,
                        m_pad, k_len,
                    )  # fmt: skip
                else:
                    _count_tile_1(
                        pf, a_base, offsets, j, j_stop, wf, w_base, k_steps, table, of, o_base,
                        m_pad, k_len,
                    )  # fmt: skip


@njit(cache=True)
def _edge_pixels(oh, ow, kh, kw, h, w, sh, sw, pt, pl, dh, dw):
    """(E, 5): [oy*ow + ox, y_lo, y_hi, x_lo, x_hi] for each output pixel whose window of valid
    taps [y_lo, y_hi) x [x_lo, x_hi) is not the whole kernel (some taps fall in the padding)."""
    x_taps = np.empty((ow, 2), np.int64)
    n_edge_cols = 0
    for ox in range(ow):
        x_taps[ox] = _valid_taps(ox * sw - pl, dw, kw, w)
        n_edge_cols += x_taps[ox, 1] - x_taps[ox, 0] < kw
    count = 0
    for oy in range(oh):
        y_lo, y_hi = _valid_taps(oy * sh - pt, dh, kh, h)
        count += ow if y_hi - y_lo < kh else n_edge_cols
    edges = np.empty((count, 5), np.int64)
    e = 0
    for oy in range(oh):
        y_lo, y_hi = _valid_taps(oy * sh - pt, dh, kh, h)
        for ox in range(ow):
            x_lo, x_hi = x_taps[ox, 0], x_taps[ox, 1]
            if y_hi - y_lo < kh or x_hi - x_lo < kw:
                edges[e, 0] = oy * ow + ox
                edges[e, 1], edges[e, 2], edges[e, 3], edges[e, 4] = y_lo, y_hi, x_lo, x_hi
                e += 1
    return edges


@njit(cache=True)
def _copy_rows(src, dst):
    """dst[i, j] = src[i, j] for j < dst.shape[1]: the loop counters as indices, so that LLVM
    vectorises the row copy (no per-row slices)."""
    rows, cols = dst.shape
    for i in range(rows):
        for j in range(cols):
            dst[i, j] = src[i, j]


@njit(cache=True)
def _edge_corrections(sat, edges):
    """(O, E) int32: for each filter and border pixel of `edges` (_edge_pixels), the sum of the
    weights of its taps that fall in the padding (all taps minus the rectangle of valid ones,
    from `sat`, the weights' _padding_sums): what _xnor_counts' -1 padding must get back."""
    kh, kw = sat.shape[1] - 1, sat.shape[2] - 1
    corr = np.empty((sat.shape[0], edges.shape[0]), np.int32)
    for oc in range(sat.shape[0]):
        s = sat[oc]
        total = s[kh, kw]
        for e in range(edges.shape[0]):
            y_lo, y_hi, x_lo, x_hi = edges[e, 1], edges[e, 2], edges[e, 3], edges[e, 4]
            corr[oc, e] = total - (s[y_hi, x_hi] - s[y_lo, x_hi] - s[y_hi, x_lo] + s[y_lo, x_lo])
    return corr


@njit(cache=True, parallel=True)
def _finish(grids, pixels, corr, og, og_pad, rows, flat):
    """rows[n*O + o] (OH, OW) = the phase-grid sums of _xnor_counts (padded taps counted as -1),
    grids[(n*G + g)*og_pad + o % og] (rows of ws), plus corr[o, e] at the border pixel pixels[e]
    (= oy*ow + ox) of flat, the same output as (N*O, OH*OW). All views are made by numpy before
    the call: a reshape inside numba costs a C call, more than the copy of a 7 x 7 channel."""
    o_ch = corr.shape[0]
    groups = o_ch // og
    for t in numba.prange(rows.shape[0]):
        n, oc = t // o_ch, t % o_ch
        _copy_rows(grids[(n * groups + oc // og) * og_pad + oc % og], rows[t])
        dst, c = flat[t], corr[oc]
        for e in range(pixels.size):
            dst[pixels[e]] += c[e]


def _round_up(v: int, multiple: int) -> int:
    return -(-v // multiple) * multiple


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


class PackedBinaryWeights:
    """Constant +-1 convolution weights (O, C/group, kh, kw), packed once for the xnor kernel:
    the weight nibbles (widx), and the summed-area table of the weights per tap that corrects
    padded taps. Independent of the input's size, strides, pads and dilations."""

    def __init__(self, w: np.ndarray, group: int):
        w = np.asarray(w)
        if w.ndim != 4 or group < 1 or w.shape[0] % group:
            raise ValueError(f"weights of shape {w.shape} do not split into {group} groups")
        o_ch, cg, kh, kw = w.shape
        self.shape = (o_ch, cg, kh, kw)
        self.group = group
        cn = -(-cg // 4)
        og_pad = _round_up(o_ch // group, COLS)
        self.widx = np.zeros((group, og_pad, kh * kw * cn), np.uint8)
        wsum = np.empty((o_ch, kh * kw), np.int64)
        _weight_nibbles(np.ascontiguousarray(w).reshape(o_ch, cg, kh * kw), group, self.widx, wsum)
        # Fewer than 4 channels leave bits of every nibble unused: pack (tap, channel) bits
        # densely instead (bit k = channel k % cg of tap k // cg), read through _tap_planes.
        self.dense = cg < 4 and kh * kw > 1
        if self.dense:
            k_len = cg * kh * kw
            bits = np.zeros((o_ch, _round_up(k_len, 4)), np.uint8)
            bits[:, :k_len] = w.reshape(o_ch, cg, kh * kw).transpose(0, 2, 1).reshape(o_ch, -1) > 0
            nibbles = 4 * (bits.reshape(o_ch, -1, 4) << np.arange(4, dtype=np.uint8)).sum(-1)
            self.widx = np.zeros((group, og_pad, nibbles.shape[1]), np.uint8)
            self.widx[:, : o_ch // group] = nibbles.reshape(group, o_ch // group, -1)
        self.padding_sums = _padding_sums(wsum, kh, kw)
        for a in (self.widx, self.padding_sums):
            a.flags.writeable = False
        self._borders: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def borders(self, geometry: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, corrections) of the output pixels whose window reaches into the padding, for
        geometry (oh, ow, h, w, sh, sw, pt, pl, dh, dw): their indices oy*ow + ox (E,) and the
        weights of their padded taps per filter (O, E). Computed once per geometry: a constant
        weight meets the same input shape on every run."""
        found = self._borders.get(geometry)
        if found is None:
            oh, ow, h, w, sh, sw, pt, pl, dh, dw = geometry
            kh, kw = self.shape[2:]
            edges = _edge_pixels(oh, ow, kh, kw, h, w, sh, sw, pt, pl, dh, dw)
            found = (np.ascontiguousarray(edges[:, 0]), _edge_corrections(self.padding_sums, edges))
            for a in found:
                a.flags.writeable = False
            if len(self._borders) >= 8:
                self._borders.clear()
            self._borders[geometry] = found
        return found

    @property
    def nbytes(self) -> int:
        return self.widx.nbytes + self.padding_sums.nbytes


def pack_binary_conv_weights(w: np.ndarray, group: int) -> PackedBinaryWeights:
    """Pack constant +-1 weights (O, C/group, kh, kw) for binary_conv2d_acc_packed; a value
    counts as +1 when it is > 0, else as -1."""
    return PackedBinaryWeights(w, group)


def pack_binary_matmul_weights(b: np.ndarray) -> PackedBinaryWeights:
    """Pack a constant +-1 matrix b (K, N) for binary_matmul_acc_packed."""
    b = np.asarray(b)
    if b.ndim != 2:
        raise ValueError(f"matmul weights must be 2-D, not {b.shape}")
    return PackedBinaryWeights(b.T.reshape(b.shape[1], b.shape[0], 1, 1), 1)


def binary_conv2d_acc(
    x: np.ndarray,
    w: np.ndarray,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
) -> np.ndarray:
    """(N, O, OH, OW) int32 sums of x*w over the valid taps of a +-1 convolution (zero padding);
    a value counts as +1 when it is > 0, else as -1. Packs w and calls binary_conv2d_acc_packed;
    pack once with pack_binary_conv_weights when w is constant."""
    check_conv(x.shape, np.shape(w), strides, pads, dilations, group)
    packed = pack_binary_conv_weights(w, group)
    return binary_conv2d_acc_packed(x, packed, strides, pads, dilations)


def binary_conv2d_acc_packed(
    x: np.ndarray,
    packed: PackedBinaryWeights,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """binary_conv2d_acc with weights (and group) from pack_binary_conv_weights."""
    group = packed.group
    nb, channels, h, wd = x.shape
    o_ch, cg, kh, kw = packed.shape
    oh, ow = check_conv(x.shape, packed.shape, strides, pads, dilations, group)
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    cn = -(-cg // 4)
    hs, ws = -(-(h + pt + pb) // sh), -(-(wd + pl + pr) // sw)
    blocks = -(-(oh * ws) // PIXELS)
    reach = ((kh - 1) * dh // sh) * ws + (kw - 1) * dw // sw
    plane_len = max(hs * ws, blocks * PIXELS + reach)
    planes = np.zeros((nb, group, sh * sw * cn, plane_len), np.uint8)
    if sh == sw == 1:
        xs = x.reshape(nb, channels, 1, h, wd)
    else:
        xs = np.empty((nb, channels, sh * sw, -(-h // sh), -(-wd // sw)), x.dtype)
        _space_to_depth(x, sh, sw, xs)
    _nibble_planes(xs, group, sh, sw, h, wd, pt, pl, ws, planes)
    offsets = np.empty(kh * kw * cn, np.int64)
    _tap_offsets(cn, kh, kw, sh, sw, dh, dw, ws, plane_len, offsets)
    k_len = cg * kh * kw
    if packed.dense:
        steps = packed.widx.shape[2]
        taps = np.empty((nb, group, steps, blocks * PIXELS), np.uint8)
        _tap_planes(planes.reshape(nb, group, -1), offsets, cg, k_len, taps)
        planes, offsets = taps, np.arange(steps, dtype=np.int64) * (blocks * PIXELS)
    # The sums lie in [-k_len, k_len]: int16 halves the traffic of this intermediate.
    dtype = np.int16 if k_len <= np.iinfo(np.int16).max else np.int32
    # Rows of whole grid lines, so that numpy views each as (lines, ws) for _finish.
    og_pad = packed.widx.shape[1]
    m_pad = _round_up(blocks * PIXELS, ws)
    values = np.empty((nb, group, og_pad, m_pad), dtype)
    _xnor_counts(planes, offsets, packed.widx, TABLE, blocks, k_len, values)
    out = np.empty((nb, o_ch, oh, ow), np.int32)
    pixels, corr = packed.borders((oh, ow, h, wd, sh, sw, pt, pl, dh, dw))
    grids = values.reshape(nb * group * og_pad, m_pad // ws, ws)
    rows, flat = out.reshape(nb * o_ch, oh, ow), out.reshape(nb * o_ch, oh * ow)
    _finish(grids, pixels, corr, o_ch // group, og_pad, rows, flat)
    return out


def binary_matmul_acc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, N) int32 dot products of +-1 matrices a (M, K) and b (K, N): a 1x1 convolution of a
    one-row image of M pixels with K channels. Packs b and calls binary_matmul_acc_packed."""
    if np.ndim(b) != 2 or np.shape(b)[0] != np.shape(a)[1]:
        raise ValueError(f"matmul shapes {np.shape(a)} and {np.shape(b)} do not match")
    return binary_matmul_acc_packed(a, pack_binary_matmul_weights(b))


def binary_matmul_acc_packed(a: np.ndarray, packed: PackedBinaryWeights) -> np.ndarray:
    """binary_matmul_acc with b from pack_binary_matmul_weights."""
    m_rows, k_len = a.shape
    if packed.shape[1:] != (k_len, 1, 1) or packed.group != 1:
        raise ValueError(f"matmul shapes {a.shape} and {packed.shape[:2][::-1]} do not match")
    x = a.T.reshape(1, k_len, 1, m_rows)
    out = binary_conv2d_acc_packed(x, packed, (1, 1), (0, 0, 0, 0), (1, 1))
    return np.ascontiguousarray(out[0, :, 0, :].T)
