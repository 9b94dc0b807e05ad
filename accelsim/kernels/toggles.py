"""Bit toggles of the operand and partial-sum registers of a systolic array, in the mapping's order.

A compute layer is `groups` products (P x K) . (K x N) (accelsim/mapping.py). Its folds run in the
mapping's order; inside a fold every used PE (r, c) sees:

    os  (rows <- P, cols <- N, stream K): a[p, k] and b[k, n] over k (p = p0 + r, n = n0 + c);
        the accumulator runs over k in place: 0 + a b + a b + ...
    ws  (rows <- K, cols <- N, stream P): a[p, k] over p (k = k0 + r, n = n0 + c); the weight
        b[k, n] is loaded once per fold; the partial sum enters the column at the top with the sum
        of the earlier row folds over k < k0, and the psum register of PE (r, c) holds, for each
        p in turn, the sum over k' <= k0 + r
    is  (rows <- K, cols <- P, stream N): b[k, n] over n (k = k0 + r, p = p0 + c); a[p, k] is
        loaded once per fold; the psum registers hold, for each n in turn, the sum over k' <= k0 + r

What is counted, per PE, as popcount(new xor old) of each register every time it takes a value:
- multiplier inputs: the two operand registers, in the operand's stored bit width (the value as
  the buffer holds it: an int8 -1 is 0xFF, a uint8 is itself; a zero point is subtracted behind
  the register, so it does not change what toggles). A bipolar operand of an xnor-popcount PE is
  one bit (1 for +1); a bipolar operand of an integer PE is its +-1 in the PE's width. A padded
  tap of a convolution holds the zero point (0 for bipolar), as the numerics do;
- the accumulator: the running partial sum in accumulator_bits two's complement (the low
  accumulator_bits of the exact sum when it wraps; the clamped sum when it saturates, clamped
  after every addition in the mapping's order). The sum is of the centred products
  (a - a_zero_point) (b - b_zero_point[n]), the value the numerics compute; the bias is added on
  the output path and is not in the register.

The first value of a fold: every register keeps its content from the last fold that used its PE
(idle PEs are clock-gated and hold), and starts at 0 at the start of each layer; so the first value
of a fold toggles against what the register held (a weight the next fold reloads unchanged costs
nothing). The output-stationary accumulator starts each output's sum from 0 without a separate
clear, i.e. its first partial sum toggles against the previous output's final sum. The systolic
skew (when a value arrives) does not change what a register holds in turn, so it is not modelled;
nor are the transient values that shift through the array while weights or inputs are preloaded.

accumulation="split" counts the PANN alternative to a signed accumulator (Spingarn-Eliezer et al.
2022): each PE keeps two accumulators of magnitudes, one for the positive products and one for the
negative ones (the result is their difference, taken once on the output path), so neither register
ever changes sign. Both registers hold their partial sums at every step (in os the one that gets no
product keeps its value, except that a new output starts both from 0; in ws and is both are
pipeline registers that take a new value every step).

The counting is MAC-count work: one numba loop per layer, parallel over the physical columns (ws,
is) or rows (os), each of which walks every fold in order with its PEs' registers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from accelsim.kernels.geometry import conv_output_hw

DATAFLOWS = ("os", "ws", "is")
ACCUMULATIONS = ("signed", "split")


@intrinsic
def _ctpop(typingctx, x):
    """popcount of an int64 (llvm.ctpop)."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.int64(x)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        fn = builder.module.declare_intrinsic("llvm.ctpop", [i64])
        return builder.call(fn, [v])

    return sig, codegen


@njit(cache=True, inline="always")
def _pattern(v, bit_mode, mask):
    """The register's bits for a stored value: one bit (1 for +1) or the low bits."""
    if bit_mode:
        return np.int64(1) if v > 0 else np.int64(0)
    return np.int64(v) & mask


@njit(cache=True, inline="always")
def _accumulate(s, prod, saturate, lo, hi):
    s += prod
    if saturate:
        if s > hi:
            s = hi
        elif s < lo:
            s = lo
    return s


@njit(cache=True, parallel=True)
def _toggles_os(a, a_zp, a_bit, a_mask, b, b_zp, b_bit, b_mask, folds, rows, cols,
                acc_mask, lo, hi, saturate, split):
    """Per physical row r (p = p0 + r), each used PE (r, c) over k; out[r] = (a, b, acc)."""
    out = np.zeros((rows, 3), np.int64)
    for r in prange(rows):
        areg = np.zeros(cols, np.int64)
        breg = np.zeros(cols, np.int64)
        preg = np.zeros(cols, np.int64)
        nreg = np.zeros(cols, np.int64)
        ta = np.int64(0)
        tb = np.int64(0)
        tc = np.int64(0)
        for f in range(folds.shape[0]):
            g, p0, p1, k0, k1, n0, n1 = folds[f]
            if r >= p1 - p0:
                continue
            p = p0 + r
            for c in range(n1 - n0):
                n = n0 + c
                zb = b_zp[g, n]
                s = np.int64(0)
                sn = np.int64(0)
                av, bv, ps, ns = areg[c], breg[c], preg[c], nreg[c]
                for k in range(k0, k1):
                    x = a[g, p, k]
                    y = b[g, n, k]
                    v = _pattern(x, a_bit, a_mask)
                    ta += _ctpop(v ^ av)
                    av = v
                    w = _pattern(y, b_bit, b_mask)
                    tb += _ctpop(w ^ bv)
                    bv = w
                    prod = (np.int64(x) - a_zp) * (np.int64(y) - zb)
                    if split:
                        if prod < 0:
                            sn = _accumulate(sn, -prod, saturate, lo, hi)
                        else:
                            s = _accumulate(s, prod, saturate, lo, hi)
                        tc += _ctpop((sn ^ ns) & acc_mask)
                        ns = sn
                    else:
                        s = _accumulate(s, prod, saturate, lo, hi)
                    tc += _ctpop((s ^ ps) & acc_mask)
                    ps = s
                areg[c], breg[c], preg[c], nreg[c] = av, bv, ps, ns
        out[r, 0] = ta
        out[r, 1] = tb
        out[r, 2] = tc
    return out


@njit(cache=True, parallel=True)
def _toggles_ws(a, a_zp, a_bit, a_mask, b, b_zp, b_bit, b_mask, folds, rows, cols,
                acc_mask, lo, hi, saturate, split):
    """Per physical column c (n = n0 + c): weights loaded per fold, then the stream over p.

    a_zp is per streamed row (G, P), b_zp per column (G, N), so the input-stationary dataflow
    is this kernel with the operands' roles swapped (see _toggles_is).
    """
    groups, n_p, _ = a.shape
    n_n = b.shape[1]
    # sums of the earlier row folds, [g, n, p]: a column walks its n along p
    acc = np.zeros((groups, n_n, n_p), np.int64)
    accn = np.zeros((groups, n_n, n_p) if split else (1, 1, 1), np.int64)
    out = np.zeros((cols, 3), np.int64)
    for c in prange(cols):
        areg = np.zeros(rows, np.int64)
        breg = np.zeros(rows, np.int64)
        preg = np.zeros(rows, np.int64)
        nreg = np.zeros(rows, np.int64)
        ta = np.int64(0)
        tb = np.int64(0)
        tc = np.int64(0)
        for f in range(folds.shape[0]):
            g, p0, p1, k0, k1, n0, n1 = folds[f]
            if c >= n1 - n0:
                continue
            n = n0 + c
            zb = b_zp[g, n]
            used = k1 - k0
            for r in range(used):
                w = _pattern(b[g, n, k0 + r], b_bit, b_mask)
                tb += _ctpop(w ^ breg[r])
                breg[r] = w
            for p in range(p0, p1):
                s = acc[g, n, p]
                sn = accn[g, n, p] if split else np.int64(0)
                for r in range(used):
                    k = k0 + r
                    x = a[g, p, k]
                    v = _pattern(x, a_bit, a_mask)
                    ta += _ctpop(v ^ areg[r])
                    areg[r] = v
                    prod = (np.int64(x) - a_zp[g, p]) * (np.int64(b[g, n, k]) - zb)
                    if split:
                        if prod < 0:
                            sn = _accumulate(sn, -prod, saturate, lo, hi)
                        else:
                            s = _accumulate(s, prod, saturate, lo, hi)
                        tc += _ctpop((sn ^ nreg[r]) & acc_mask)
                        nreg[r] = sn
                    else:
                        s = _accumulate(s, prod, saturate, lo, hi)
                    tc += _ctpop((s ^ preg[r]) & acc_mask)
                    preg[r] = s
                acc[g, n, p] = s
                if split:
                    accn[g, n, p] = sn
        out[c, 0] = ta
        out[c, 1] = tb
        out[c, 2] = tc
    return out


def _toggles_is(a, a_zp, a_bit, a_mask, b, b_zp, b_bit, b_mask, folds, rows, cols,
                acc_mask, lo, hi, saturate, split):
    """Input stationary = weight stationary with the operands' roles swapped: the inputs stay
    in the PEs (one column per pixel p) and the weights stream over n."""
    swapped = np.ascontiguousarray(folds[:, [0, 5, 6, 3, 4, 1, 2]])  # p and n ranges exchanged
    out = _toggles_ws(b, b_zp, b_bit, b_mask, a, a_zp, a_bit, a_mask, swapped, rows, cols,
                      acc_mask, lo, hi, saturate, split)
    return out[:, [1, 0, 2]]  # ifmap, weights, accumulator


_KERNELS = {"os": _toggles_os, "ws": _toggles_ws, "is": _toggles_is}


@dataclass(frozen=True)
class ToggleCounts:
    """Bit toggles of one layer: the two multiplier-input registers and the accumulator(s)."""

    ifmap: int
    weights: int
    accumulator: int

    @property
    def multiplier_input(self) -> int:
        return self.ifmap + self.weights

    def as_dict(self) -> dict[str, int]:
        return {"multiplier_input": self.multiplier_input, "accumulator": self.accumulator}


def _fold_table(folds: Sequence[Any]) -> np.ndarray:
    """(F, 7) int64: group, p0, p1, k0, k1, n0, n1 of each fold (Fold tuples or plain tuples
    (group, (p0, p1), (k0, k1), (n0, n1)))."""
    rows = []
    for f in folds:
        if hasattr(f, "group"):
            g, p, k, n = f.group, f.p, f.k, f.n
        else:
            g, p, k, n = f
        rows.append((g, *p, *k, *n))
    return np.asarray(rows, np.int64).reshape(-1, 7)


def stream_toggles(
    dataflow: str,
    a: np.ndarray,
    b: np.ndarray,
    folds: Sequence[Any],
    rows: int,
    cols: int,
    a_bits: int,
    b_bits: int,
    accumulator_bits: int = 32,
    overflow: str = "wrap",
    a_zero_point: int = 0,
    b_zero_point: np.ndarray | int = 0,
    a_bit_mode: bool = False,
    b_bit_mode: bool = False,
    accumulation: str = "signed",
) -> ToggleCounts:
    """Toggles of the GEMM a . b (a: (G, P, K) stored values, b: (G, K, N)) on a rows x cols array.

    folds: the mapping's folds in order (each with group, p, k and n ranges that fit the array).
    a_bits, b_bits: the registers' widths; with a_bit_mode/b_bit_mode an operand is one bit
    (> 0 -> 1) as an xnor-popcount PE holds a bipolar value. b_zero_point: a scalar or one per
    (G, N) column. The product of the PE is (a - a_zero_point) (b - b_zero_point).
    """
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    if accumulation not in ACCUMULATIONS:
        raise ValueError(f"accumulation must be one of {ACCUMULATIONS}, got {accumulation!r}")
    a = np.ascontiguousarray(a, dtype=np.int32)
    b = np.asarray(b)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"operands (G, P, K) and (G, K, N) expected, got {a.shape} and {b.shape}")
    bt = np.ascontiguousarray(np.swapaxes(b, 1, 2), dtype=np.int32)  # (G, N, K)
    groups, _, n_n = b.shape
    b_zp = np.ascontiguousarray(
        np.broadcast_to(np.asarray(b_zero_point, np.int64), (groups, n_n)))
    table = _fold_table(folds)
    if len(table):
        extent = {"os": (table[:, 2] - table[:, 1], table[:, 6] - table[:, 5]),
                  "ws": (table[:, 4] - table[:, 3], table[:, 6] - table[:, 5]),
                  "is": (table[:, 4] - table[:, 3], table[:, 2] - table[:, 1])}[dataflow]
        if extent[0].max() > rows or extent[1].max() > cols:
            raise ValueError(f"a fold does not fit the {rows} x {cols} array")
    lo, hi = -(1 << (accumulator_bits - 1)), (1 << (accumulator_bits - 1)) - 1
    a_zp = (np.int64(a_zero_point) if dataflow == "os"
            else np.full(a.shape[:2], a_zero_point, np.int64))
    out = _KERNELS[dataflow](
        a, a_zp, bool(a_bit_mode), np.int64((1 << a_bits) - 1),
        bt, b_zp, bool(b_bit_mode), np.int64((1 << b_bits) - 1),
        table, int(rows), int(cols), np.int64((1 << accumulator_bits) - 1),
        np.int64(lo), np.int64(hi), overflow == "saturate", accumulation == "split",
    )
    ta, tb, tc = (int(v) for v in out.sum(axis=0))
    return ToggleCounts(ifmap=ta, weights=tb, accumulator=tc)


@njit(cache=True)
def _im2col(x, fill, group, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out):
    """out[g, b*oh*ow + oy*ow + ox, (ky*kw + kx)*cg + c] = x[b, g*cg + c, iy, ix], or fill for
    a padded tap (the mapping's K order: kh, kw, c with c fastest)."""
    nb, channels, h, wd = x.shape
    cg = channels // group
    for g in range(group):
        for bi in range(nb):
            for oy in range(oh):
                for ox in range(ow):
                    p = (bi * oh + oy) * ow + ox
                    for ky in range(kh):
                        iy = oy * sh - pt + ky * dh
                        for kx in range(kw):
                            ix = ox * sw - pl + kx * dw
                            base = (ky * kw + kx) * cg
                            inside = 0 <= iy < h and 0 <= ix < wd
                            for c in range(cg):
                                out[g, p, base + c] = (x[bi, g * cg + c, iy, ix] if inside
                                                       else fill)


def gemm_operands(node: Any, x: np.ndarray, w: np.ndarray, binary: bool) -> tuple:
    """(a, b, a_zero_point, b_zero_point) of a Conv or MatMul node: a (G, P, K), b (G, K, N).

    Bipolar operands of a binary layer become +-1 (a value > 0 is +1, as the binary kernel reads
    it) and padded taps 0, the zero-padded sum of the numerics.
    """
    at = node.attrs
    if binary:
        x = np.where(x > 0, 1, -1).astype(np.int32)
        w = np.where(w > 0, 1, -1).astype(np.int32)
    if node.op == "Conv":
        a_zp = 0 if binary else int(at.get("x_zero_point", 0))
        w_zp = 0 if binary else at.get("w_zero_point", 0)
        group = int(at.get("group", 1))
        o_ch, cg, kh, kw = w.shape
        (sh, sw), (dh, dw) = at["strides"], at["dilations"]
        pt, pl, pb, pr = at["pads"]
        oh, ow = conv_output_hw(x.shape[2:], (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw))
        a = np.empty((group, x.shape[0] * oh * ow, cg * kh * kw), np.int32)
        _im2col(np.ascontiguousarray(x, dtype=np.int32), np.int32(a_zp), group, kh, kw, sh, sw,
                pt, pl, dh, dw, oh, ow, a)
        og = o_ch // group
        # b[g, (ky, kx, c), n] = w[g*og + n, c, ky, kx]
        b = w.reshape(group, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(
            group, kh * kw * cg, og)
        b_zp = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (o_ch,)).reshape(
            group, og)
        return a, b, a_zp, b_zp
    if node.op == "MatMul":
        a_zp = 0 if binary else int(at.get("a_zero_point", 0))
        b_zp = 0 if binary else at.get("b_zero_point", 0)
        a = x.reshape(1, -1, x.shape[-1])
        b = w.reshape(1, *w.shape)
        b_zp = np.broadcast_to(np.asarray(b_zp, np.int64).reshape(-1), (w.shape[1],)).reshape(
            1, -1)
        return a, b, a_zp, b_zp
    raise ValueError(f"node {node.name}: {node.op} is not a compute op")


def layer_toggles(hw: Any, layer: Any, graph: Any, env: Mapping[str, np.ndarray],
                  accumulation: str = "signed") -> ToggleCounts:
    """Toggles of one compute layer of a mapping (accelsim.mapping.LayerMapping) on the tensors
    of an execution (`env`: every tensor by name, as execute(..., keep_intermediates=True))."""
    from accelsim.hardware import PRECISION_BITS
    from accelsim.workload.ir import COMPUTE_OPS

    names = set(layer.nodes)
    node = next(n for n in graph.nodes if n.name in names and n.op in COMPUTE_OPS)
    x, w = env[node.inputs[0]], env[node.inputs[1]]
    a, b, a_zp, b_zp = gemm_operands(node, x, w, layer.binary)
    if a.shape[1] != layer.gemm.p:
        from accelsim.errors import InputError

        raise InputError(
            f"layer {layer.name}: the inputs give {a.shape[1]} output pixels where the mapping "
            f"has {layer.gemm.p}; energy.model toggles needs inputs of the graph's batch size")
    bit_mode = layer.precision == "binary"
    widths = []
    for role, i in (("ifmap", 0), ("weights", 1)):
        kind = graph.tensors[node.inputs[i]].type.kind
        if kind == "bipolar" and not bit_mode:
            widths.append(PRECISION_BITS[layer.precision])  # +-1 in the PE's integer width
        else:
            widths.append(1 if bit_mode else layer.bits[role])
    pe = hw.pe_array
    return stream_toggles(
        pe.dataflow, a, b, layer.folds, pe.rows, pe.cols, widths[0], widths[1],
        accumulator_bits=pe.accumulator_bits, overflow=pe.accumulator_overflow,
        a_zero_point=a_zp, b_zero_point=b_zp, a_bit_mode=bit_mode, b_bit_mode=bit_mode,
        accumulation=accumulation,
    )
