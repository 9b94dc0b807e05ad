"""What caps the binary / int8 MAC-rate ratio on this CPU: L1-resident inner loops against the
real kernels on ResNet-18 shapes, in one process, single-threaded.

    python benchmarks/bench_binary_ceiling.py [--rounds 21] [--asm]

Every round times each kernel once (interleaved, so that a disturbance from other processes hits
one round of every kernel, not all rounds of one); figures are medians over the rounds. The clock
is measured in every round by a dependent imul chain (3 cycles per imul on Zen 3; /proc/cpuinfo
shows the nominal clock of a VM, not the boost clock), and MACs/cycle = MACs / (time * clock).

Inner loops (operands in L1, one register tile, no output written), all compiled by numba/LLVM:
- lookup tiles (accelsim's, binary._count_tile_*): a weight nibble selects a 16-byte table
  popcount(v xor i), one vpshufb counts 4 channels of 32 pixels: 128 MACs per vpshufb;
- the same with the table rows held in registers (no offset, nibble or table loads): the bound of
  the lookups and byte adds alone;
- xor + popcount on 256-bit words, the nibble-lookup popcount (LLVM's ctpop.v32i8: vpand, vpsrlw,
  vpand, 2 vpshufb, vpaddb) accumulated in bytes and folded by vpsadbw every 31 words, over a
  register tile of activation x weight rows;
- xor + Harley-Seal carry-save adders over 16 words of one pair (the fastest AVX2 popcount of
  long arrays, Mula, Kurz, Lemire), weights of two pairs sharing the activation word;
- int8: accelsim's direct-convolution tile (integer._direct_tile: 6 pixels x 16 channels, 12
  vpmaddwd on int16 pairs) and the u8 x s8 tile of onnxruntime's AVX2 kernels (vpmaddubsw,
  vpmaddwd by ones, vpaddd; it saturates at int16, so it is a speed reference, not exact).
--asm prints each inner loop's instructions (from inspect_asm) and their counts per 256 MACs.
The pytest-benchmark form is test_binary_ceiling.py.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from bench_kernels import CONVS, accelsim_binary_conv, accelsim_conv, conv_macs
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from accelsim.kernels import binary, integer

I64, I32, I16, I8 = ir.IntType(64), ir.IntType(32), ir.IntType(16), ir.IntType(8)
V32I8, V16I16, V8I32, V4I64 = (
    ir.VectorType(I8, 32),
    ir.VectorType(I16, 16),
    ir.VectorType(I32, 8),
    ir.VectorType(I64, 4),
)
CHAIN = 1 << 22  # imuls of the clock measurement (~4 ms)


@njit
def _imul_chain(x, m, n):
    """n links of imul (3 cycles on Zen 3) then xor (1 cycle); the shift runs beside the imul.
    Not x * m alone: LLVM reassociates an unrolled product into powers of m."""
    for _ in range(n):
        x = (x * m) ^ (x >> np.uint64(7))
    return x


@njit
def _shift_add_chain(x, n):
    """n links of shr then add (1 + 1 cycles): a second clock estimate that shares no unit with
    the imul chain."""
    for _ in range(n):
        x = x + (x >> np.uint64(3))
    return x


def clock_ghz() -> tuple[float, float]:
    """The core clock from two timed dependency chains: imul + xor (4 cycles a link) and
    shr + add (2 cycles a link)."""
    x, m = np.uint64(12345), np.uint64(0x9E3779B97F4A7C15)
    _imul_chain(x, m, 1000)
    _shift_add_chain(x, 1000)
    start = time.perf_counter()
    _imul_chain(x, m, CHAIN)
    mid = time.perf_counter()
    _shift_add_chain(x, CHAIN)
    end = time.perf_counter()
    return 4 * CHAIN / (mid - start) / 1e9, 2 * CHAIN / (end - mid) / 1e9


def nominal_mhz() -> float | None:
    """/proc/cpuinfo's "cpu MHz" (a VM reports its nominal clock there)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1])
    except OSError:
        pass
    return None


def _declare(module, name, ret, params):
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, params), name)


def _load(builder, base, byte_offset, ty):
    ptr = builder.gep(base, [byte_offset])
    return builder.load(builder.bitcast(ptr, ty.as_pointer()), align=1)


def _splat(builder, value, ty):
    vec = builder.insert_element(ir.Constant(ty, None), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(I32, ty.count), None))


def _loop(builder, n, state, body):
    """for j in range(n): state = body(j, state) (n >= 1); returns the final state."""
    entry = builder.block
    loop = builder.append_basic_block("loop")
    done = builder.append_basic_block("done")
    builder.branch(loop)
    builder.position_at_end(loop)
    j = builder.phi(I64)
    j.add_incoming(ir.Constant(I64, 0), entry)
    phis = []
    for value in state:
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        phis.append(phi)
    updated = body(j, phis)
    end = builder.block
    nxt = builder.add(j, ir.Constant(I64, 1))
    j.add_incoming(nxt, end)
    for phi, value in zip(phis, updated, strict=True):
        phi.add_incoming(value, end)
    builder.cbranch(builder.icmp_signed("<", nxt, n), loop, done)
    builder.position_at_end(done)
    return updated


def _ir_kernel(build):
    """An intrinsic f(a, b, n, out) of u8 arrays a, b, out and an int n whose body is
    build(builder, a, b, n, out) on raw pointers; out receives the accumulators (kept live)."""

    @intrinsic
    def kernel(typingctx, a, b, n, out):
        def codegen(context, builder, signature, args):
            def data(k):
                return context.make_array(signature.args[k])(context, builder, args[k]).data

            n_ = context.cast(builder, args[2], signature.args[2], types.int64)
            results = build(builder, data(0), data(1), n_)
            out_ = data(3)
            for i, value in enumerate(results):
                ptr = builder.gep(out_, [ir.Constant(I64, 32 * i)])
                builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=1)
            return context.get_dummy_value()

        return types.void(a, b, n, out), codegen

    return kernel


def _byte_tile(rows, cols, fold, count):
    """A rows x cols tile of byte counters over n steps, folded every `fold` steps into 16-bit
    (or, for vpsadbw, 64-bit) sums: count(builder, a, b, j) gives the rows*cols byte counts of
    step j; the fold is vpsadbw when fold == 31, else the even/odd 16-bit split of binary.py."""

    def fold_into(builder, wide, acc):
        if fold == 31:
            psad = _declare(builder.module, "llvm.x86.avx2.psad.bw", V4I64, [V32I8, V32I8])
            return [builder.add(wide[0], builder.call(psad, [acc, ir.Constant(V32I8, None)]))]
        pairs = builder.bitcast(acc, V16I16)
        low, eight = ir.Constant(V16I16, [0xFF] * 16), ir.Constant(V16I16, [8] * 16)
        return [
            builder.add(wide[0], builder.and_(pairs, low)),
            builder.add(wide[1], builder.lshr(pairs, eight)),
        ]

    def build(builder, a, b, n):
        per = 1 if fold == 31 else 2
        wide_ty = V4I64 if fold == 31 else V16I16
        chunks = builder.sdiv(n, ir.Constant(I64, fold))

        def chunk(c, wide):
            j0 = builder.mul(c, ir.Constant(I64, fold))

            def step(j, accs):
                counts = count(builder, a, b, builder.add(j0, j))
                return [builder.add(s, v) for s, v in zip(accs, counts, strict=True)]

            zeros = [ir.Constant(V32I8, None)] * (rows * cols)
            accs = _loop(builder, ir.Constant(I64, fold), zeros, step)
            out = []
            for i, acc in enumerate(accs):
                out += fold_into(builder, wide[per * i : per * (i + 1)], acc)
            return out

        return _loop(builder, chunks, [ir.Constant(wide_ty, None)] * (per * rows * cols), chunk)

    return build


def _hoisted_lookups(rows, cols):
    """Lookup tile with the table rows in registers: step j reads rows activation vectors of
    a[(j*rows + r)*32], then rows*cols vpshufb + vpaddb; b is the table."""

    def count(builder, a, b, j):
        pshufb = _declare(builder.module, "llvm.x86.avx2.pshuf.b", V32I8, [V32I8, V32I8])
        tables = [_load(builder, b, ir.Constant(I64, 32 * (3 + 5 * c)), V32I8) for c in range(cols)]
        base = builder.mul(j, ir.Constant(I64, 32 * rows))
        acts = [
            _load(builder, a, builder.add(base, ir.Constant(I64, 32 * r)), V32I8)
            for r in range(rows)
        ]
        return [
            builder.call(pshufb, [tables[c], acts[r]]) for r in range(rows) for c in range(cols)
        ]

    return _byte_tile(rows, cols, binary.FOLD, count)


def _xor_popcount(rows, cols):
    """xor + ctpop.v32i8 tile: a holds rows and b cols rows of n 256-bit words; step j counts
    a[r][j] xor b[c][j] for every (r, c), bytes folded by vpsadbw every 31 words."""

    def count(builder, a, b, j):
        ctpop = _declare(builder.module, "llvm.ctpop.v32i8", V32I8, [V32I8])
        at = builder.mul(j, ir.Constant(I64, 32))
        acts = [
            _load(builder, a, builder.add(at, ir.Constant(I64, 32 * 1024 * r)), V32I8)
            for r in range(rows)
        ]
        ws = [
            _load(builder, b, builder.add(at, ir.Constant(I64, 32 * 1024 * c)), V32I8)
            for c in range(cols)
        ]
        return [builder.call(ctpop, [builder.xor(x, w)]) for x in acts for w in ws]

    return _byte_tile(rows, cols, 31, count)


def _harley_seal(pairs):
    """xor + Harley-Seal over blocks of 16 words: `pairs` weight rows (b, 32 KiB apart) against
    one activation row a; per pair the carry-save state ones, twos, fours, eights and the
    vpsadbw total of the sixteens."""

    def build(builder, a, b, n):
        ctpop = _declare(builder.module, "llvm.ctpop.v32i8", V32I8, [V32I8])
        psad = _declare(builder.module, "llvm.x86.avx2.psad.bw", V4I64, [V32I8, V32I8])

        def csa(x, y, z):
            u = builder.xor(x, y)
            return builder.or_(builder.and_(x, y), builder.and_(u, z)), builder.xor(u, z)

        def block(i, state):
            base = builder.mul(i, ir.Constant(I64, 16 * 32))
            acts = [
                _load(builder, a, builder.add(base, ir.Constant(I64, 32 * k)), V32I8)
                for k in range(16)
            ]
            out = []
            for p in range(pairs):
                ones, twos, fours, eights, total = state[5 * p : 5 * p + 5]
                d = [
                    builder.xor(
                        acts[k],
                        _load(builder, b, builder.add(base, ir.Constant(I64, 32768 * p + 32 * k)),
                              V32I8),
                    )
                    for k in range(16)
                ]  # fmt: skip
                twos_a, ones = csa(ones, d[0], d[1])
                twos_b, ones = csa(ones, d[2], d[3])
                fours_a, twos = csa(twos, twos_a, twos_b)
                twos_a, ones = csa(ones, d[4], d[5])
                twos_b, ones = csa(ones, d[6], d[7])
                fours_b, twos = csa(twos, twos_a, twos_b)
                eights_a, fours = csa(fours, fours_a, fours_b)
                twos_a, ones = csa(ones, d[8], d[9])
                twos_b, ones = csa(ones, d[10], d[11])
                fours_a, twos = csa(twos, twos_a, twos_b)
                twos_a, ones = csa(ones, d[12], d[13])
                twos_b, ones = csa(ones, d[14], d[15])
                fours_b, twos = csa(twos, twos_a, twos_b)
                eights_b, fours = csa(fours, fours_a, fours_b)
                sixteens, eights = csa(eights, eights_a, eights_b)
                counted = builder.call(
                    psad, [builder.call(ctpop, [sixteens]), ir.Constant(V32I8, None)]
                )
                out += [ones, twos, fours, eights, builder.add(total, counted)]
            return out

        zero8, zero64 = ir.Constant(V32I8, None), ir.Constant(V4I64, None)
        blocks = builder.sdiv(n, ir.Constant(I64, 16))
        return _loop(builder, blocks, ([zero8] * 4 + [zero64]) * pairs, block)

    return build


def _madd_tile(m_pixels, n_vectors, bytes_, hoisted):
    """An int8 register tile of m_pixels x n_vectors int32 accumulators (8 lanes each): step j
    broadcasts one 4-byte word of each pixel (a[(j*m + r)*4]) against n_vectors weight vectors
    (b[(j*n + h)*32], or b[h*32] loaded once when hoisted). bytes_: onnxruntime's AVX2 u8 x s8
    form, vpmaddubsw (4 u8 x s8 products per lane, pairs saturated at int16) then vpmaddwd by
    ones, 32 MACs per vpmaddubsw; else int16 pairs by vpmaddwd, 16 MACs each."""

    def build(builder, a, b, n):
        maddubs = _declare(builder.module, "llvm.x86.avx2.pmadd.ub.sw", V16I16, [V32I8, V32I8])
        madd = _declare(builder.module, "llvm.x86.avx2.pmadd.wd", V8I32, [V16I16, V16I16])
        ones = ir.Constant(V16I16, [1] * 16)
        const = lambda v: ir.Constant(I64, v)  # noqa: E731
        fixed = [_load(builder, b, const(32 * h), V32I8) for h in range(n_vectors)]

        def step(j, accs):
            ws = fixed
            if not hoisted:
                at = builder.mul(j, const(32 * n_vectors))
                ws = [
                    _load(builder, b, builder.add(at, const(32 * h)), V32I8)
                    for h in range(n_vectors)
                ]
            out = []
            for r in range(m_pixels):
                at = builder.mul(builder.add(builder.mul(j, const(m_pixels)), const(r)), const(4))
                x = builder.bitcast(_splat(builder, _load(builder, a, at, I32), V8I32), V32I8)
                for h in range(n_vectors):
                    if bytes_:
                        prod = builder.call(madd, [builder.call(maddubs, [x, ws[h]]), ones])
                    else:
                        prod = builder.call(
                            madd, [builder.bitcast(x, V16I16), builder.bitcast(ws[h], V16I16)]
                        )
                    out.append(builder.add(accs[r * n_vectors + h], prod))
            return out

        return _loop(builder, n, [ir.Constant(V8I32, None)] * (m_pixels * n_vectors), step)

    return build


def _issue_probe(kind, chains=12):
    """12 independent chains of vpshufb (x = pshufb(x, t)), of vpaddb (x_i += x_(i+1), which
    LLVM cannot fold into a multiply) or half of each: the issue rate of the two instructions
    the lookup tiles are made of, alone and mixed 1:1."""

    def build(builder, a, b, n):
        pshufb = _declare(builder.module, "llvm.x86.avx2.pshuf.b", V32I8, [V32I8, V32I8])
        t = _load(builder, b, ir.Constant(I64, 0), V32I8)
        init = [_load(builder, a, ir.Constant(I64, 32 * i), V32I8) for i in range(chains)]

        def step(j, xs):
            out = []
            for i, x in enumerate(xs):
                if kind == "vpshufb" or (kind == "mixed" and i % 2):
                    out.append(builder.call(pshufb, [x, t]))
                else:
                    out.append(builder.add(x, xs[(i + 1) % chains]))
            return out

        return _loop(builder, n, init, step)

    return build


@dataclass
class Loop:
    """An L1-resident inner loop: run() does `macs` MACs; `key` is the instruction whose count in
    the hot loop gives the MACs per pass (key_macs each)."""

    name: str
    run: Callable[[], object]
    jitted: Callable
    macs: int
    key: str
    key_macs: int


def _ir_loop(name, build, a, b, n, reps, macs_per_step, key, key_macs):
    kernel = _ir_kernel(build)
    out = np.zeros(4096, np.uint8)

    @njit
    def run(a, b, n, reps, out):
        for _ in range(reps):
            kernel(a, b, n, out)

    return Loop(name, lambda: run(a, b, n, reps, out), run, macs_per_step * n * reps, key, key_macs)


def issue_probes(rng: np.random.Generator) -> list[Loop]:
    """Loops whose "MACs" are instructions (vpshufb, vpaddb, or both): rates in ops/cycle."""
    a, t = rng.integers(0, 256, 1024, dtype=np.uint8), rng.integers(0, 16, 32, dtype=np.uint8)
    return [
        _ir_loop(f"probe {kind}", _issue_probe(kind), a, t, 50000, 10, 12, key, 1)
        for kind, key in (("vpshufb", "vpshufb"), ("vpaddb", "vpaddb"), ("mixed", "vpshufb"))
    ]


def _accelsim_lookup_loop(rows, cols, steps, reps, rng):
    """binary._count_tile_<rows x cols> over steps nibble steps of l2-like tap offsets (32
    nibble planes of 400 bytes, 9 taps of a 30-pixel row): all operands in L1."""
    tile = {
        (3, 3): binary._count_tile_3,
        (2, 4): binary._count_tile_2x4,
        (1, 6): binary._count_tile_1x6,
    }[rows, cols]
    cn, plane_len, ws = 32, 400, 30
    offsets = np.array(
        [q * plane_len + ky * ws + kx for q in range(cn) for ky in range(3) for kx in range(3)],
        np.int64,
    )[:steps]
    planes = rng.integers(0, 16, cn * plane_len + 128, dtype=np.uint8)
    widx = (4 * rng.integers(0, 16, cols * steps)).astype(np.uint8)
    out = np.zeros(cols * 128, np.int32)
    table = binary.TABLE

    @njit
    def run(planes, offsets, widx, table, out, steps, reps):
        for _ in range(reps):
            tile(planes, 0, offsets, 0, steps, widx, 0, steps, table, out, 0, 128, 4 * steps)

    return Loop(
        f"lookup {rows}x{cols} (accelsim tile)",
        lambda: run(planes, offsets, widx, table, out, steps, reps),
        run,
        128 * rows * cols * steps * reps,
        "vpshufb",
        128,
    )


def _direct_loop(steps, reps, rng):
    """integer._direct_tile (6 pixels x 16 channels of int16 pairs) over `steps` words."""
    m, n = integer.DIRECT_M, integer.DIRECT_N
    img = rng.integers(-(2**31), 2**31, 4096, dtype=np.int64).astype(np.int32)
    bases = np.arange(m, dtype=np.int64) * 37
    offs = (np.arange(steps, dtype=np.int64) * 7) % (4096 - 256)
    bp = rng.integers(-128, 128, steps * n * 2).astype(np.int16)
    bias = np.zeros(n, np.int32)
    out = np.zeros(n * m, np.int32)
    tile = integer._direct_tile

    @njit
    def run(img, bases, offs, bp, bias, out, steps, reps):
        for _ in range(reps):
            tile(img, bases, 0, offs, steps, bp, 0, bias, 0, out, 0, m)

    return Loop(
        "int16 vpmaddwd 6x16 (accelsim direct tile)",
        lambda: run(img, bases, offs, bp, bias, out, steps, reps),
        run,
        2 * m * n * steps * reps,
        "vpmaddwd",
        16,
    )


def inner_loops(rng: np.random.Generator) -> list[Loop]:
    """The L1-resident loops, each call ~1-3 ms. The u8 x s8 tile with loaded weights is 4 x 16:
    at 6 x 16 (12 accumulators, 2 weights, the ones, a broadcast) LLVM spills."""
    u8 = lambda size: rng.integers(0, 256, size, dtype=np.uint8)  # noqa: E731
    table = np.ascontiguousarray(binary.TABLE).reshape(-1)
    loops = [_accelsim_lookup_loop(r, c, 288, 800, rng) for r, c in ((3, 3), (2, 4), (1, 6))]
    for rows, cols in ((3, 3), (2, 4)):
        loops.append(
            _ir_loop(
                f"lookup {rows}x{cols}, table rows in registers",
                _hoisted_lookups(rows, cols), u8(32 * rows * 252), table, 252, 800,
                128 * rows * cols, "vpshufb", 128,
            )
        )  # fmt: skip
    for rows, cols in ((1, 1), (2, 2), (1, 3)):
        loops.append(
            _ir_loop(
                f"xor+popcount nibble lookup {rows}x{cols}, vpsadbw",
                _xor_popcount(rows, cols), u8(32 * 1024 * rows), u8(32 * 1024 * cols), 124,
                4000 // (rows * cols), 256 * rows * cols, "vpshufb", 128,
            )
        )  # fmt: skip
    for pairs in (1, 2):
        loops.append(
            _ir_loop(
                f"xor+Harley-Seal, {pairs} pair(s)",
                _harley_seal(pairs), u8(32 * 256), u8(32768 * pairs), 256, 1000 // pairs,
                256 * pairs, "vpsadbw", 16 * 256,
            )
        )  # fmt: skip
    loops.append(_direct_loop(288, 2000, rng))
    for bytes_, hoisted, m, n in (
        (False, True, 6, 2),
        (True, False, 4, 2),
        (True, True, 6, 2),
    ):
        form = "u8s8 vpmaddubsw (onnxruntime AVX2 form)" if bytes_ else "int16 vpmaddwd"
        where = ", weights in registers" if hoisted else ""
        macs = m * n * (32 if bytes_ else 16)
        loops.append(
            _ir_loop(
                f"{form} {m}x{8 * n}{where}", _madd_tile(m, n, bytes_, hoisted),
                u8(4 * m * 144), u8(32 * n * 144), 144, 2000 * 192 // macs, macs,
                "vpmaddubsw" if bytes_ else "vpmaddwd", 32 if bytes_ else 16,
            )
        )  # fmt: skip
    return loops


_MNEMONIC = re.compile(r"^\s+([a-z][a-z0-9]*)\b")


def hot_loop(asm: str, key: str) -> list[str]:
    """The mnemonics of the innermost loop (one that holds no other) with the most `key`
    instructions; a loop runs from a label to a jump back to it (numba's assembly has no loop
    comments)."""
    lines = asm.splitlines()
    labels = {ln.split(":")[0]: i for i, ln in enumerate(lines) if re.match(r"^\.\w+:", ln)}
    loops = []
    for k, line in enumerate(lines):
        jump = re.match(r"^\s+j\w+\s+(\.\w+)\s*$", line)
        if jump and labels.get(jump.group(1), k) < k:
            loops.append((labels[jump.group(1)], k))
    innermost = [(s, e) for s, e in loops if not any(s < s2 and e2 <= e for s2, e2 in loops)]
    best: list[str] = []
    for start, end in innermost:
        body = [m.group(1) for ln in lines[start + 1 : end + 1] if (m := _MNEMONIC.match(ln))]
        if body.count(key) > best.count(key):
            best = body
    return best


def instruction_counts(loop: Loop) -> tuple[dict[str, float], float]:
    """Instructions of the hot loop per 256 MACs, by mnemonic, and the MACs per pass."""
    asm = loop.jitted.inspect_asm(loop.jitted.signatures[0])
    body = hot_loop(asm, loop.key)
    macs = body.count(loop.key) * loop.key_macs
    if macs == 0:
        raise RuntimeError(f"{loop.name}: no {loop.key} in an inner loop of the assembly")
    counts = Counter(body)
    return {k: v * 256 / macs for k, v in counts.most_common()}, macs


def layer_kernels(rng: np.random.Generator) -> list[tuple[str, str, Callable[[], object], int]]:
    """(layer, kind, call, MACs) of accelsim's int8 and binary convolutions on ResNet-18 shapes."""
    out = []
    for layer in CONVS:
        out.append((layer, "int8", accelsim_conv(layer, rng, 1), conv_macs(layer)))
        out.append((layer, "binary", accelsim_binary_conv(layer, rng, 1), conv_macs(layer)))
    return out


def measure(rounds: int, rng: np.random.Generator) -> dict:
    """Medians over interleaved rounds: clock (GHz), inner loops (MACs/cycle, GMAC/s), layers
    (GMAC/s, each round's figure the median of 5 calls)."""
    numba.set_num_threads(1)
    loops = inner_loops(rng) + issue_probes(rng)
    layers = layer_kernels(rng)
    for loop in loops:
        loop.run()
    for _, _, call, _ in layers:
        call()
    imul, shift_add = [], []
    loop_t: dict[str, list[float]] = {lp.name: [] for lp in loops}
    layer_t: dict[tuple[str, str], list[float]] = {(ly, k): [] for ly, k, _, _ in layers}

    def clock() -> None:
        a, b = clock_ghz()
        imul.append(a)
        shift_add.append(b)

    for _ in range(rounds):
        clock()
        for loop in loops:
            start = time.perf_counter()
            loop.run()
            loop_t[loop.name].append(time.perf_counter() - start)
        for layer, kind, call, _ in layers:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            layer_t[layer, kind].append(float(np.median(times)))
        clock()
    ghz = float(np.median(imul))
    loop_rates = {}
    for loop in loops:
        t = float(np.median(loop_t[loop.name]))
        loop_rates[loop.name] = (loop.macs / t / 1e9 / ghz, loop.macs / t / 1e9)
    layer_rates = {
        (layer, kind): macs / float(np.median(layer_t[layer, kind])) / 1e9
        for layer, kind, _, macs in layers
    }
    return {
        "ghz": ghz,
        "imul": imul,
        "shift_add": shift_add,
        "loops": loops,
        "loop_rates": loop_rates,
        "layer_rates": layer_rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--asm", action="store_true", help="print each hot loop's instructions")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}; /proc/cpuinfo: {nominal_mhz()} MHz")
    r = measure(args.rounds, rng)
    print(f"load average after: {os.getloadavg()}")
    for label in ("imul", "shift_add"):
        v = r[label]
        print(f"clock ({label} chain): median {np.median(v):.2f} GHz, {min(v):.2f}-{max(v):.2f}")
    print(f"\nMACs/cycle at the imul chain's {r['ghz']:.2f} GHz")
    print("| inner loop (L1) | MACs/cycle | GMAC/s | instructions per 256 MACs |")
    print("|---|---|---|---|")
    for loop in r["loops"]:
        if loop.name.startswith("probe"):
            continue
        per, pass_macs = instruction_counts(loop)
        top = ", ".join(f"{k} {v:.2f}" for k, v in per.items() if v >= 0.05)
        mpc, gmacs = r["loop_rates"][loop.name]
        print(f"| {loop.name} | {mpc:.1f} | {gmacs:.0f} | {sum(per.values()):.1f}: {top} |")
        if args.asm:
            print(f"    {pass_macs} MACs per pass of the loop")
    probes = [lp for lp in r["loops"] if lp.name.startswith("probe")]
    print("\nIssue rates, 12 independent chains: " + ", ".join(
        f"{lp.name[6:]} {r['loop_rates'][lp.name][0]:.2f}/cycle" for lp in probes
    ))  # fmt: skip
    rates, loops = r["layer_rates"], r["loop_rates"]
    tile = loops["lookup 3x3 (accelsim tile)"][1]
    bound = max(loops["lookup 3x3, table rows in registers"][1],
                loops["lookup 2x4, table rows in registers"][1])  # fmt: skip
    print(
        f"\nCeilings: binary tile {tile:.0f} GMAC/s (accelsim 3x3, L1), lookups bound {bound:.0f}"
        " (table rows in registers)"
    )
    print("| layer | int8 GMAC/s | binary GMAC/s | binary / int8 | tile / int8 | bound / int8 "
          "| 10x needs, MACs/cycle |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for layer in CONVS:
        i8, b = rates[layer, "int8"], rates[layer, "binary"]
        print(
            f"| {layer} | {i8:.1f} | {b:.0f} | {b / i8:.1f} | {tile / i8:.1f} | {bound / i8:.1f} "
            f"| {10 * i8 / r['ghz']:.0f} |"
        )


if __name__ == "__main__":
    main()
