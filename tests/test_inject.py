"""Fault injection through the mapping: layouts, exact faulty runs, persistence, corruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelsim import load_hardware, load_workload
from accelsim.inject import decode, encode, golden, run_faulty
from accelsim.mapping import plan

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
BINARY_HW = ROOT / "hwconfigs" / "binary_lowvolt.yaml"
DIGITS_INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
DIGITS_BINARY = ROOT / "workloads" / "digits_binary_qonnx.onnx"


def hardware(path, weights_v_over_vmin: float | None = None, **overrides):
    """A hardware file with the weight buffer at V/Vmin (when given) and other overrides."""
    if weights_v_over_vmin is not None:
        vmin = load_hardware(path).buffers["weights"].resolved_vmin_v
        overrides["buffers.weights.voltage_v"] = weights_v_over_vmin * vmin
    return load_hardware(path, overrides)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bits,kind,signed,lo,hi", [
    (1, "bipolar", True, -1, 1), (2, "int", True, -2, 1), (4, "int", True, -8, 7),
    (4, "int", False, 0, 15), (8, "int", True, -128, 127), (8, "int", False, 0, 255),
    (16, "int", True, -32768, 32767), (24, "int", True, -(1 << 23), (1 << 23) - 1),
    (32, "int", True, -(1 << 31), (1 << 31) - 1),
])
def test_encode_decode_round_trip_and_packing(bits, kind, signed, lo, hi):
    rng = np.random.default_rng(bits)
    v = rng.integers(lo, hi + 1, (3, 37))
    if kind == "bipolar":
        v = np.where(v > 0, 1, -1)
    data = encode(v, bits, kind)
    assert data.shape == (3, -(-37 * bits // 8))
    np.testing.assert_array_equal(decode(data, 37, bits, kind, signed), v)


def test_packing_is_lsb_first():
    assert encode(np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1]]), 1, "bipolar").tolist() == [
        [0b00001101, 0b1]]
    assert encode(np.array([[3, -1]]), 4).tolist() == [[0xF3]]
    assert encode(np.array([[0x1234]]), 16).tolist() == [[0x34, 0x12]]


@pytest.mark.parametrize("hw_path,workload", [(EDGE, DIGITS_INT8), (BINARY_HW, DIGITS_BINARY)])
def test_ber_zero_run_equals_golden_bit_for_bit(hw_path, workload, digits_test_set):
    graph = load_workload(workload)
    mapping = plan(hardware(hw_path, 1.0), graph)
    inputs = {graph.inputs[0]: digits_test_set[0][:40]}
    run = run_faulty(mapping, inputs, seed=3)
    assert same_tensors(run.intermediates, golden(mapping, inputs))
    assert sum(run.flips_by_buffer().values()) == 0
