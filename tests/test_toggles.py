"""energy.model toggles: bit toggles of the PE registers (accelsim/kernels/toggles.py) and their
energy (accelsim/energy.py).

Crafted streams with counts known by hand, a plain-Python reference of the same counting rule on
hypothesis-drawn layers for os, ws and is, the calibration against the table model, the simulate
hook, and the digits CNN report: how much more a signed accumulator toggles than PANN's unsigned
alternative.

"Unsigned" here is PANN's split accumulation (Spingarn-Eliezer et al. 2022): the same products,
the positive ones summed in one unsigned register and the magnitudes of the negative ones in
another, so that no register ever changes sign (the output is their difference, taken once).
It is compared in the output-stationary dataflow, where each PE's accumulator runs over the
reduction as in PANN's MAC; in ws and is the psum registers carry a different output's partial sum
every cycle, and there the second register of the split can cost more than the sign flips it
saves (the test prints those ratios too).
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.energy import (
    account,
    account_toggles,
    count_toggles,
    toggle_energy_per_bit_pj,
    toggle_mac_energy_pj,
)
from accelsim.errors import InputError
from accelsim.execute import execute, machine_accumulator
from accelsim.hardware import PRECISION_BITS, load_hardware
from accelsim.kernels.toggles import ToggleCounts, gemm_operands, stream_toggles
from accelsim.mapping import plan
from accelsim.sim import simulate_timing
from accelsim.simulate import simulate
from accelsim.workload import load_workload
from accelsim.workload.ir import COMPUTE_OPS

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
BINARY_HW = ROOT / "hwconfigs" / "binary_lowvolt.yaml"
DIGITS_QOP = ROOT / "workloads" / "digits_cnn_int8_qop.onnx"
DIGITS_QDQ = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
DIGITS_BINARY = ROOT / "workloads" / "digits_binary_qonnx.onnx"


def pop(v: int) -> int:
    return bin(v).count("1")


def one_pe(k: int) -> list:
    """The single fold of a 1 x 1 array in os: one output over k reduction steps."""
    return [(0, (0, 1), (0, k), (0, 1))]


def gemm_folds(dataflow, groups, p, k, n, rows, cols, segment=None):
    """Folds as the mapping orders them: group, column fold, stream segment, row fold (inner)."""
    row_ext, col_ext, stream = {"os": (p, n, k), "ws": (k, n, p), "is": (k, p, n)}[dataflow]
    if dataflow == "os" or segment is None:
        segment = stream
    out = []
    for g in range(groups):
        for j in range(0, col_ext, cols):
            c_rng = (j, min(col_ext, j + cols))
            for s in range(0, stream, segment):
                seg = (s, min(stream, s + segment))
                for i in range(0, row_ext, rows):
                    r_rng = (i, min(row_ext, i + rows))
                    if dataflow == "os":
                        out.append((g, r_rng, (0, k), c_rng))
                    elif dataflow == "ws":
                        out.append((g, seg, r_rng, c_rng))
                    else:
                        out.append((g, c_rng, r_rng, seg))
    return out


# ---------------------------------------------------------------------------------------------
# Crafted streams


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_constant_operands_toggle_only_when_first_loaded(dataflow):
    """Constant operands: no toggle per step; each register toggles once, from its reset 0 to
    the constant, and zero operands toggle nothing at all."""
    p, k, n, rows, cols = 7, 5, 6, 2, 4
    folds = gemm_folds(dataflow, 1, p, k, n, rows, cols)
    a = np.full((1, p, k), 0x5A)  # 4 bits set
    b = np.full((1, k, n), -3)  # int8 0xFD: 7 bits set
    t = stream_toggles(dataflow, a, b, folds, rows, cols, 8, 8)
    pes = rows * cols  # every PE is used by some fold, and each keeps its value afterwards
    assert (t.ifmap, t.weights) == (4 * pes, 7 * pes)
    zero = stream_toggles(dataflow, np.zeros_like(a), np.zeros_like(b), folds, rows, cols, 8, 8)
    assert zero == ToggleCounts(0, 0, 0)


def test_alternating_bytes_toggle_every_bit():
    """0x00/0xFF alternating: 8 toggles per step per 8-bit operand, in every dataflow."""
    k = 9
    alt = np.array([0, -1] * 5)[:k]  # int8 -1 is 0xFF
    a, b = alt.reshape(1, 1, k), (-1 - alt).reshape(1, k, 1)  # b starts at 0xFF
    t = stream_toggles("os", a, b, one_pe(k), 1, 1, 8, 8)
    assert t.ifmap == 8 * (k - 1)  # the first 0x00 meets the reset 0
    assert t.weights == 8 * k  # the first 0xFF toggles all 8 bits of the reset register
    assert t.accumulator == 0  # every product is 0

    # ws: the activations stream over p through each PE of a used column.
    p, cols = 6, 3
    a = np.array([0, 255] * 3, np.int64).reshape(1, p, 1)  # uint8 stored values
    t = stream_toggles("ws", a, np.ones((1, 1, cols)), [(0, (0, p), (0, 1), (0, cols))], 1,
                       cols, 8, 8)
    assert t.ifmap == cols * (p - 1) * 8
    assert t.weights == cols  # each weight register loads 1 once

    # is: the weights stream over n along each row.
    n = 5
    b = np.array([255, 0, 255, 0, 255]).reshape(1, 1, n)
    t = stream_toggles("is", np.ones((1, 2, 1)), b, [(0, (0, 2), (0, 1), (0, n))], 1, 2, 8, 8)
    assert t.weights == 2 * n * 8
    assert t.ifmap == 2


def test_single_pe_accumulator_by_hand():
    """One PE, products 3, -4, -5, -7 in a 16-bit register: 0 -> 3 -> -1 -> -6 -> -13."""
    a = np.array([3, -2, 5, -7]).reshape(1, 1, 4)
    b = np.array([1, 2, -1, 1]).reshape(1, 4, 1)
    t = stream_toggles("os", a, b, one_pe(4), 1, 1, 8, 8, accumulator_bits=16)
    # 0x0000^0x0003: 2; 0x0003^0xFFFF: 14; 0xFFFF^0xFFFA: 2; 0xFFFA^0xFFF3: 2
    assert t.accumulator == 2 + 14 + 2 + 2
    # split: positive register 0 -> 3 (2); negative register 0 -> 4 -> 9 -> 16 (1 + 3 + 3)
    s = stream_toggles("os", a, b, one_pe(4), 1, 1, 8, 8, accumulator_bits=16,
                       accumulation="split")
    assert s.accumulator == 2 + 1 + 3 + 3
    assert (s.ifmap, s.weights) == (t.ifmap, t.weights)
    # inputs 3, -2, 5, -7 as int8: 0x03, 0xFE, 0x05, 0xF9 from 0
    assert t.ifmap == pop(0x03) + pop(0x03 ^ 0xFE) + pop(0xFE ^ 0x05) + pop(0x05 ^ 0xF9)


def test_accumulator_overflow_wrap_and_saturate():
    """8-bit register, products 100, 100, -50.

    wrap: 100 -> -56 -> -106; saturate: 100 -> 127 -> 77."""
    a = np.array([100, 100, -50]).reshape(1, 1, 3)
    b = np.ones((1, 3, 1), np.int64)
    wrap = stream_toggles("os", a, b, one_pe(3), 1, 1, 8, 8, accumulator_bits=8)
    assert wrap.accumulator == pop(0x64) + pop(0x64 ^ 0xC8) + pop(0xC8 ^ 0x96)
    sat = stream_toggles("os", a, b, one_pe(3), 1, 1, 8, 8, accumulator_bits=8,
                         overflow="saturate")
    assert sat.accumulator == pop(100) + pop(100 ^ 127) + pop(127 ^ 77)


def test_ws_partial_sums_pass_down_the_column():
    """ws, 2 x 1 array, K = 2, P = 2: the psum registers hold the running sums over k for each
    p in turn, and the weights load once."""
    a = np.array([[1, 2], [3, -4]]).reshape(1, 2, 2)  # a[p, k]
    b = np.array([5, 1]).reshape(1, 2, 1)  # b[k, 0]
    t = stream_toggles("ws", a, b, [(0, (0, 2), (0, 2), (0, 1))], 2, 1, 8, 8,
                       accumulator_bits=16)
    # row 0 holds a[p,0]*5: 5, 15; row 1 holds that plus a[p,1]*1: 7, 11
    assert t.accumulator == pop(5) + pop(5 ^ 15) + pop(7) + pop(7 ^ 11)
    assert t.weights == pop(5) + pop(1)
    assert t.ifmap == pop(1) + pop(1 ^ 3) + pop(2) + pop(2 ^ 0xFC)


def test_stationary_operand_reloaded_unchanged_costs_nothing():
    """A register keeps its value between folds: ws folds that reload the same weights (two
    stream segments of one row fold) toggle the weight registers once."""
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (1, 8, 2))
    b = rng.integers(-128, 128, (1, 2, 2))
    one = stream_toggles("ws", a, b, [(0, (0, 8), (0, 2), (0, 2))], 2, 2, 8, 8)
    two = stream_toggles("ws", a, b, [(0, (0, 4), (0, 2), (0, 2)), (0, (4, 8), (0, 2), (0, 2))],
                         2, 2, 8, 8)
    assert one == two
    assert one.weights == sum(pop(int(v) & 0xFF) for v in b.ravel())


def test_bit_mode_counts_one_bit_per_bipolar_operand():
    """An xnor-popcount PE holds a bipolar value as one bit (> 0 -> 1)."""
    a = np.array([1, -1, -1, 1, 1]).reshape(1, 1, 5)
    b = np.array([1, 1, 1, 1, 1]).reshape(1, 5, 1)
    t = stream_toggles("os", a, b, one_pe(5), 1, 1, 1, 1, a_bit_mode=True, b_bit_mode=True)
    assert (t.ifmap, t.weights) == (1 + 1 + 0 + 1 + 0, 1)


def test_bad_arguments_are_rejected():
    a, b = np.ones((1, 2, 3)), np.ones((1, 3, 2))
    with pytest.raises(ValueError, match="dataflow"):
        stream_toggles("rs", a, b, [], 2, 2, 8, 8)
    with pytest.raises(ValueError, match="accumulation"):
        stream_toggles("os", a, b, [], 2, 2, 8, 8, accumulation="unsigned")
    with pytest.raises(ValueError, match="does not fit"):
        stream_toggles("os", a, b, [(0, (0, 2), (0, 3), (0, 2))], 1, 2, 8, 8)


# ---------------------------------------------------------------------------------------------
# The plain-Python reference


def reference_toggles(dataflow, a, b, folds, a_bits, b_bits, acc_bits, overflow, a_zp, b_zp,
                      a_bit_mode, b_bit_mode, split):
    """The counting rule written out directly: one dict of registers keyed by PE, every partial
    sum recomputed from k = 0 (quadratic, fine for small layers)."""
    a_mask, b_mask, c_mask = (1 << a_bits) - 1, (1 << b_bits) - 1, (1 << acc_bits) - 1
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    regs: dict = defaultdict(int)
    counts = [0, 0, 0]

    def load(name, pe, value, mask, slot):
        counts[slot] += pop((regs[name, pe] ^ value) & mask)
        regs[name, pe] = value

    def pattern(v, bit_mode, mask):
        return (1 if v > 0 else 0) if bit_mode else int(v) & mask

    def add(s, v):
        s += v
        return min(max(s, lo), hi) if overflow == "saturate" else s

    def sums(g, p, n, k_from, k_to):
        """(positive, negative) or (signed, 0) running sums after each k in [k_from, k_to)."""
        pos = neg = 0
        out = []
        for k in range(k_to):
            prod = (int(a[g, p, k]) - a_zp) * (int(b[g, k, n]) - int(b_zp[g, n]))
            if split and prod < 0:
                neg = add(neg, -prod)
            else:
                pos = add(pos, prod)
            if k >= k_from:
                out.append((pos, neg))
        return out

    for g, (p0, p1), (k0, k1), (n0, n1) in folds:
        if dataflow == "os":
            for r in range(p1 - p0):
                for c in range(n1 - n0):
                    p, n = p0 + r, n0 + c
                    for k, (s, sn) in zip(range(k0, k1), sums(g, p, n, k0, k1), strict=True):
                        load("a", (r, c), pattern(a[g, p, k], a_bit_mode, a_mask), a_mask, 0)
                        load("b", (r, c), pattern(b[g, k, n], b_bit_mode, b_mask), b_mask, 1)
                        load("s", (r, c), s, c_mask, 2)
                        load("sn", (r, c), sn, c_mask, 2)
            continue
        for r in range(k1 - k0):
            k = k0 + r
            if dataflow == "ws":
                for c in range(n1 - n0):
                    n = n0 + c
                    load("b", (r, c), pattern(b[g, k, n], b_bit_mode, b_mask), b_mask, 1)
                    for p in range(p0, p1):
                        load("a", (r, c), pattern(a[g, p, k], a_bit_mode, a_mask), a_mask, 0)
                        s, sn = sums(g, p, n, k, k + 1)[0]
                        load("s", (r, c), s, c_mask, 2)
                        load("sn", (r, c), sn, c_mask, 2)
            else:
                for c in range(p1 - p0):
                    p = p0 + c
                    load("a", (r, c), pattern(a[g, p, k], a_bit_mode, a_mask), a_mask, 0)
                    for n in range(n0, n1):
                        load("b", (r, c), pattern(b[g, k, n], b_bit_mode, b_mask), b_mask, 1)
                        s, sn = sums(g, p, n, k, k + 1)[0]
                        load("s", (r, c), s, c_mask, 2)
                        load("sn", (r, c), sn, c_mask, 2)
    return ToggleCounts(*counts)


@st.composite
def small_layers(draw):
    groups = draw(st.integers(1, 2))
    p, k, n = (draw(st.integers(1, 6)) for _ in range(3))
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    binary = draw(st.booleans())
    if binary:
        a_bits = b_bits = 1
        a = draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=groups * p * k,
                          max_size=groups * p * k))
        b = draw(st.lists(st.sampled_from([-1, 1]), min_size=groups * k * n,
                          max_size=groups * k * n))
        a_zp, b_zp = 0, np.zeros((groups, n), np.int64)
    else:
        a_bits, b_bits = draw(st.sampled_from([2, 4, 8, 16])), draw(st.sampled_from([2, 4, 8]))
        a_signed = draw(st.booleans())
        a_lo, a_hi = (-(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1) if a_signed else (
            0, (1 << a_bits) - 1)
        b_lo, b_hi = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
        a = draw(st.lists(st.integers(a_lo, a_hi), min_size=groups * p * k,
                          max_size=groups * p * k))
        b = draw(st.lists(st.integers(b_lo, b_hi), min_size=groups * k * n,
                          max_size=groups * k * n))
        a_zp = draw(st.integers(a_lo, a_hi))
        b_zp = np.array(draw(st.lists(st.integers(b_lo, b_hi), min_size=groups * n,
                                      max_size=groups * n))).reshape(groups, n)
    return dict(
        groups=groups, p=p, k=k, n=n, rows=rows, cols=cols, binary=binary,
        a=np.array(a).reshape(groups, p, k), b=np.array(b).reshape(groups, k, n),
        a_bits=a_bits, b_bits=b_bits, a_zp=a_zp, b_zp=b_zp,
        acc_bits=draw(st.sampled_from([8, 12, 16, 32])),
        overflow=draw(st.sampled_from(["wrap", "saturate"])),
        split=draw(st.booleans()),
        segment=draw(st.one_of(st.none(), st.integers(1, 4))),
    )


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@settings(max_examples=60, deadline=None)
@given(layer=small_layers())
def test_kernel_matches_reference(dataflow, layer):
    L = layer
    folds = gemm_folds(dataflow, L["groups"], L["p"], L["k"], L["n"], L["rows"], L["cols"],
                       L["segment"])
    got = stream_toggles(
        dataflow, L["a"], L["b"], folds, L["rows"], L["cols"], L["a_bits"], L["b_bits"],
        accumulator_bits=L["acc_bits"], overflow=L["overflow"], a_zero_point=L["a_zp"],
        b_zero_point=L["b_zp"], a_bit_mode=L["binary"], b_bit_mode=L["binary"],
        accumulation="split" if L["split"] else "signed",
    )
    want = reference_toggles(dataflow, L["a"], L["b"], folds, L["a_bits"], L["b_bits"],
                             L["acc_bits"], L["overflow"], L["a_zp"], L["b_zp"], L["binary"],
                             L["binary"], L["split"])
    assert got == want


# ---------------------------------------------------------------------------------------------
# Operands of real layers


def test_im2col_order_is_the_mappings():
    """K index order (kh, kw, c), c fastest; a padded tap holds the zero point."""
    from accelsim.workload.ir import Node

    x = np.arange(2 * 3 * 3).reshape(1, 2, 3, 3)  # c, y, x
    w = np.arange(3 * 2 * 2 * 2).reshape(3, 2, 2, 2)  # o, c, ky, kx
    node = Node("c", "Conv", ["x", "w"], ["y"], {
        "strides": (1, 1), "pads": (1, 0, 0, 0), "dilations": (1, 1), "group": 1,
        "x_zero_point": 7, "w_zero_point": np.array([1, 2, 3])})
    a, b, a_zp, b_zp = gemm_operands(node, x, w, binary=False)
    assert a.shape == (1, 3 * 2, 8) and b.shape == (1, 8, 3)
    # output pixel (oy=1, ox=0) reads input rows 0..1, cols 0..1; k = (ky*2 + kx)*2 + c
    assert a[0, 2].tolist() == [x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 0, 0, 1], x[0, 1, 0, 1],
                                x[0, 0, 1, 0], x[0, 1, 1, 0], x[0, 0, 1, 1], x[0, 1, 1, 1]]
    assert a[0, 0, :4].tolist() == [7] * 4  # the top row is padding
    assert b[0, :, 2].tolist() == [w[2, 0, 0, 0], w[2, 1, 0, 0], w[2, 0, 0, 1], w[2, 1, 0, 1],
                                   w[2, 0, 1, 0], w[2, 1, 1, 0], w[2, 0, 1, 1], w[2, 1, 1, 1]]
    assert a_zp == 7 and b_zp.tolist() == [[1, 2, 3]]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_operands_of_grouped_strided_convolutions(data):
    """im2col of any conv geometry: the centred products sum to conv2d_acc's accumulators."""
    from accelsim.kernels import conv2d_acc
    from accelsim.kernels.geometry import conv_output_hw
    from accelsim.workload.ir import Node

    group = data.draw(st.integers(1, 3))
    cg, og = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    strides = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dilations = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, 1)) for _ in range(4))
    h = data.draw(st.integers((kh - 1) * dilations[0] + 1, 6))
    wd = data.draw(st.integers((kw - 1) * dilations[1] + 1, 6))
    nb = data.draw(st.integers(1, 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.integers(0, 256, (nb, group * cg, h, wd)).astype(np.uint8)
    w = rng.integers(-128, 128, (group * og, cg, kh, kw)).astype(np.int8)
    x_zp, w_zp = int(rng.integers(0, 256)), rng.integers(-3, 4, group * og)
    node = Node("c", "Conv", ["x", "w"], ["y"], {
        "strides": strides, "pads": pads, "dilations": dilations, "group": group,
        "x_zero_point": x_zp, "w_zero_point": w_zp})
    a, b, a_zp, b_zp = gemm_operands(node, x, w, binary=False)
    oh, ow = conv_output_hw((h, wd), (kh, kw), strides, pads, dilations)
    assert a.shape == (group, nb * oh * ow, cg * kh * kw) and b.shape == (group, cg * kh * kw, og)
    acc = np.einsum("gpk,gkn->gpn", a.astype(np.int64) - a_zp,
                    b.astype(np.int64) - b_zp[:, None, :])
    want = conv2d_acc(x, w, x_zp, w_zp, None, strides, pads, dilations, group)
    want = want.reshape(nb, group, og, oh * ow).transpose(1, 0, 3, 2).reshape(group, -1, og)
    np.testing.assert_array_equal(acc, want)


@pytest.mark.parametrize("workload", [DIGITS_QOP, DIGITS_QDQ, DIGITS_BINARY])
def test_operands_reproduce_the_numerics(workload, digits_test_set):
    """The centred products the toggles sum are the executed accumulator (bias aside)."""
    graph = load_workload(workload)
    x = digits_test_set[0][:1]
    env = execute(graph, {graph.inputs[0]: x}, keep_intermediates=True)
    for node in graph.nodes:
        if node.op not in COMPUTE_OPS:
            continue
        binary = all(graph.tensors[t].type.kind == "bipolar" for t in node.inputs[:2])
        a, b, a_zp, b_zp = gemm_operands(node, env[node.inputs[0]], env[node.inputs[1]],
                                         binary)
        acc = np.einsum("gpk,gkn->gpn", a.astype(np.int64) - a_zp,
                        b.astype(np.int64) - b_zp[:, None, :])
        want = env[node.outputs[0]].astype(np.int64)
        if len(node.inputs) > 2:
            bias = env[node.inputs[2]].astype(np.int64)
            want = want - (bias.reshape(1, -1, 1, 1) if node.op == "Conv" else bias)
        if node.op == "Conv":  # (N, O, OH, OW) -> (G, N*OH*OW, O/G)
            nb, o, oh, ow = want.shape
            want = want.reshape(nb, a.shape[0], o // a.shape[0], oh * ow).transpose(
                1, 0, 3, 2).reshape(a.shape[0], nb * oh * ow, -1)
        else:
            want = want.reshape(1, -1, want.shape[-1])
        np.testing.assert_array_equal(acc, want, err_msg=node.name)


# ---------------------------------------------------------------------------------------------
# Energy: calibration and the simulate hook


def _random_layer(rng, p, k, n, bits=8):
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    return rng.integers(lo, hi, (1, p, k)), rng.integers(lo, hi, (1, k, n))


def test_calibration_uniform_random_operands_cost_the_table():
    """Uniform random int8 operands: in os both multiplier inputs take a new random value every
    MAC, so the per-toggle multiplier energy adds up to the table's multiplier energy; in ws each
    psum register takes an unrelated random partial sum every cycle (every bit toggling with
    probability ~1/2), so the per-toggle adder energy adds up to the table's adder energy."""
    hw = load_hardware(EDGE)
    rng = np.random.default_rng(0)
    p, k, n, rows, cols = 128, 256, 32, 16, 16
    a, b = _random_layer(rng, p, k, n)
    macs = p * k * n
    per_input, per_acc = toggle_energy_per_bit_pj(hw, "int8")
    table_mult = hw.energy.mac.multiplier_pj["int8"]
    table_add = hw.energy.mac.adder_pj_per_bit * hw.pe_array.accumulator_bits

    os_t = stream_toggles("os", a, b, gemm_folds("os", 1, p, k, n, rows, cols), rows, cols,
                          8, 8)
    mult_ratio = os_t.multiplier_input * per_input / (macs * table_mult)
    ws_t = stream_toggles("ws", a, b, gemm_folds("ws", 1, p, k, n, rows, cols), rows, cols,
                          8, 8)
    add_ratio = ws_t.accumulator * per_acc / (macs * table_add)
    print(f"\ncalibration: os multiplier {mult_ratio:.4f} x table, ws adder {add_ratio:.4f} x "
          f"table; os accumulator {os_t.accumulator / macs:.2f} toggles/MAC (a running sum), "
          f"ws multiplier inputs {ws_t.multiplier_input / macs:.2f} toggles/MAC (stationary "
          f"weights)")
    assert mult_ratio == pytest.approx(1.0, abs=0.01)
    assert add_ratio == pytest.approx(1.0, abs=0.03)
    # What the table cannot see: a stationary weight hardly toggles, a running sum's high bits
    # rarely do.
    assert ws_t.multiplier_input / macs < 0.55 * PRECISION_BITS["int8"]
    assert os_t.accumulator / macs < 0.5 * hw.pe_array.accumulator_bits / 2


def test_toggle_energy_per_bit():
    hw = load_hardware(EDGE)
    mac = hw.energy.mac
    assert toggle_energy_per_bit_pj(hw, "int4") == (mac.multiplier_pj["int4"] / 4,
                                                    2 * mac.adder_pj_per_bit)
    assert toggle_energy_per_bit_pj(hw, "binary") == (mac.xnor_popcount_pj, 0.0)


def test_simulate_toggles_needs_inputs():
    hw = load_hardware(EDGE, {"energy.model": "toggles"})
    with pytest.raises(InputError, match="energy.model toggles needs inputs"):
        simulate(hw, DIGITS_QOP)
    # The mapping is of the graph's batch (1); the toggles must follow the same folds.
    with pytest.raises(InputError, match="batch size"):
        simulate(hw, DIGITS_QOP, {"input": np.zeros((2, 1, 8, 8), np.float32)})


def test_bipolar_operands_on_an_integer_array():
    """Without an xnor-popcount mode a binary layer runs as int4 products of +-1: its registers
    hold 0b0001 and 0b1111, not one bit."""
    hw = load_hardware(EDGE, {"pe_array.dataflow": "os"})
    graph = load_workload(DIGITS_BINARY)
    mapping = plan(hw, graph)
    env = execute(graph, {"x": np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)},
                  machine_accumulator(hw), keep_intermediates=True)
    counts = count_toggles(mapping, env)
    lm = next(lm for lm in mapping.layers if lm.name == "fc1")
    assert lm.binary and lm.precision == "int4"
    x = env[next(n for n in graph.nodes if n.name == "fc1").inputs[0]]
    w = graph.tensors[next(n for n in graph.nodes if n.name == "fc1").inputs[1]].data
    a, b = np.where(x > 0, 1, -1)[None], np.where(w > 0, 1, -1)[None]
    as_int4 = stream_toggles("os", a, b, lm.folds, 16, 16, 4, 4)
    as_bits = stream_toggles("os", a, b, lm.folds, 16, 16, 1, 1, a_bit_mode=True,
                             b_bit_mode=True)
    assert counts[lm.index] == as_int4
    assert as_int4.multiplier_input > 2 * as_bits.multiplier_input


@pytest.mark.parametrize("workload,hw_path", [(DIGITS_QOP, EDGE), (DIGITS_BINARY, BINARY_HW)])
def test_simulate_toggles_charges_mac_by_toggles(workload, hw_path, digits_test_set):
    hw = load_hardware(hw_path, {"energy.model": "toggles"})
    table_hw = load_hardware(hw_path)
    graph = load_workload(workload)
    inputs = {graph.inputs[0]: digits_test_set[0][:1]}
    result = simulate(hw, graph, inputs)
    table = simulate(table_hw, graph, inputs)
    mapping = plan(hw, graph)
    env = execute(graph, inputs, machine_accumulator(hw), keep_intermediates=True)
    counts = count_toggles(mapping, env)
    assert set(counts) == {lm.index for lm in mapping.layers if lm.kind == "compute"}
    for lm, rec, rec0 in zip(mapping.layers, result.layers, table.layers, strict=True):
        if lm.kind == "compute":
            assert rec.toggles == counts[lm.index].as_dict()
            assert rec.toggles["multiplier_input"] > 0 and rec.toggles["accumulator"] > 0
            assert rec.energy_breakdown_pj["mac"] == toggle_mac_energy_pj(hw, lm,
                                                                          counts[lm.index])
        else:
            assert rec.toggles is None
            assert rec.energy_breakdown_pj["mac"] == 0.0
        assert rec0.toggles is None
        others = {k: v for k, v in rec.energy_breakdown_pj.items() if k != "mac"}
        assert others == {k: v for k, v in rec0.energy_breakdown_pj.items() if k != "mac"}
    assert result.totals.toggles == {
        key: sum(c.as_dict()[key] for c in counts.values())
        for key in ("multiplier_input", "accumulator")}
    assert table.totals.toggles is None
    assert result.totals.energy_pj == pytest.approx(sum(r.energy_pj for r in result.layers))
    for name, out in table.outputs.items():
        np.testing.assert_array_equal(result.outputs[name], out)
    # the same report from the notebook-level functions
    timing = simulate_timing(mapping)
    report = account_toggles(mapping, timing, counts)
    assert report.total_pj == pytest.approx(result.totals.energy_pj)
    assert account(mapping, timing).total_pj == pytest.approx(table.totals.energy_pj)
    # JSON keeps the counts
    from accelsim.result import Result

    again = Result.from_json(result.to_json())
    assert again.layers == result.layers and again.totals == result.totals


def test_cli_run_with_toggles(capsys):
    from accelsim.cli import main

    assert main(["run", str(EDGE), str(DIGITS_QOP), "--set", "energy.model=toggles"]) == 0
    assert "energy" in capsys.readouterr().out
    # A topology has no data of its own: the toggle model runs it on its seeded data...
    csv = ROOT / "workloads" / "gemm_mnk_test.csv"
    assert main(["run", str(EDGE), str(csv), "--set", "energy.model=toggles"]) == 0
    assert "executed bit-accurately" in capsys.readouterr().out
    # ...and refuses to run without numerics.
    assert main(["run", str(EDGE), str(csv), "--set", "energy.model=toggles",
                 "--timing-only"]) == 2
    assert "energy.model toggles needs inputs" in capsys.readouterr().err
    # --trials below 1 is refused on a timing-only run too (it was accepted without a word)
    assert main(["run", str(EDGE), str(csv), "--timing-only", "--trials", "0"]) == 2
    assert "trials must be at least 1, got 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The digits CNN report: signed against unsigned (split) accumulation


def _accumulator_toggles(workload, hw_path, dataflow, images):
    hw = load_hardware(hw_path, {"pe_array.dataflow": dataflow})
    graph = load_workload(workload)
    mapping = plan(hw, graph)
    totals = {"signed": 0, "split": 0}
    for image in images:
        env = execute(graph, {graph.inputs[0]: image[None]}, machine_accumulator(hw),
                      keep_intermediates=True)
        for mode in totals:
            totals[mode] += sum(t.accumulator for t in count_toggles(mapping, env, mode).values())
    return totals


@pytest.mark.parametrize("workload,hw_path", [(DIGITS_QOP, EDGE), (DIGITS_BINARY, BINARY_HW)])
def test_digits_cnn_signed_accumulation_toggles_more(workload, hw_path, digits_test_set,
                                                     record_property):
    """On real digits, an output-stationary signed accumulator toggles more than PANN's pair of
    unsigned ones summing the same products (see the module docstring)."""
    images = digits_test_set[0][:16]
    ratios = {}
    for dataflow in ("os", "ws", "is"):
        t = _accumulator_toggles(workload, hw_path, dataflow, images)
        ratios[dataflow] = t["signed"] / t["split"]
    name = workload.stem
    for dataflow, ratio in ratios.items():
        record_property(f"{name}_{dataflow}_signed_over_split", round(ratio, 3))
    print(f"\n{name}: accumulator toggles signed / split over {len(images)} digits: "
          + ", ".join(f"{df} {r:.3f}" for df, r in ratios.items()), file=sys.stderr)
    assert ratios["os"] > 1.1
