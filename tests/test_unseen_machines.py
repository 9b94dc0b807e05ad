"""Hardware files, SCALE-Sim configs and topologies nobody wrote the code for: each test is a
machine or a file a fuzzing round broke (the smallest case found), plus a seeded hypothesis test
that draws random valid machines x small topologies through the whole run and checks the
invariants every run must keep."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, WORKLOADS, assert_one_line_error

import accelsim
from accelsim.cli import main
from accelsim.hardware import PEArray
from accelsim.kernels import accumulator

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
SCALESIM_CFG = ROOT / "hwconfigs" / "scalesim_default_32x32.cfg"
DIGITS = WORKLOADS / "digits_cnn_int8_qdq.onnx"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- accumulator widths ------------------------------------------------------------------------

def test_accumulator_range_is_what_the_kernels_execute():
    """The schema accepted 2- to 64-bit accumulators; the kernels raise a ValueError (a
    traceback from `run`) outside 8..62 bits."""
    bounds = {type(m).__name__: m for m in PEArray.model_fields["accumulator_bits"].metadata}
    assert (bounds["Ge"].ge, bounds["Le"].le) == (accumulator.MIN_BITS, accumulator.MAX_BITS)


@pytest.mark.parametrize("bits", [accumulator.MIN_BITS, accumulator.MAX_BITS])
def test_extreme_accumulators_run_the_network(capsys, bits):
    code, out, err = run_cli(capsys, "run", EDGE, DIGITS, "--json",
                             "--set", f"pe_array.accumulator_bits={bits}")
    assert code == 0, err
    assert json.loads(out)["corruption"]["metrics"]["bits_flipped"]["mean"] == 0


@pytest.mark.parametrize("bits", [2, 4, 63, 64])
def test_accumulators_the_kernels_cannot_run_are_refused(capsys, tmp_path, bits):
    hw = yaml.safe_load(EDGE.read_text())
    hw["pe_array"]["accumulator_bits"] = bits
    path = write(tmp_path / "acc.yaml", yaml.safe_dump(hw))
    code, _, err = run_cli(capsys, "run", path, DIGITS)
    assert_one_line_error(code, err, str(path), "pe_array.accumulator_bits")


# --- buffers shared by several roles ------------------------------------------------------------

@pytest.mark.parametrize("buffers", [
    {"unified": {"size_kib": 48}},  # every role in one buffer
    {"unified": {"size_kib": 3}, "weights": {"size_kib": 8}},  # tiling in the shared one
    {"ifmap": {}, "unified": {"size_kib": 6, "banks": 3, "bank_width_bits": 24}},
])
def test_roles_sharing_a_buffer_never_share_addresses(buffers):
    """Each role's transfers stayed at addresses from 0, so in a unified buffer the weights, the
    inputs and the outputs sat on the same cells (one faulty cell corrupted all three)."""
    from accelsim.mapping import plan

    hw = accelsim.load_hardware({"buffers": buffers})
    mapping = plan(hw, accelsim.load_workload(DIGITS))
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for step in mapping.steps:
        for t in step.loads + step.stores:
            assert 0 <= t.address and t.address + t.nbytes <= hw.buffers[t.buffer].size_bytes
            spans.setdefault((t.buffer, t.role), []).append((t.address, t.address + t.nbytes))
    shared = [(b, r) for b, r in spans if sum(1 for b2, _ in spans if b2 == b) > 1]
    assert shared
    for (b1, r1), (b2, r2) in itertools.combinations(shared, 2):
        if b1 == b2:
            lo1, hi1 = min(a for a, _ in spans[b1, r1]), max(e for _, e in spans[b1, r1])
            lo2, hi2 = min(a for a, _ in spans[b2, r2]), max(e for _, e in spans[b2, r2])
            assert hi1 <= lo2 or hi2 <= lo1, (b1, r1, r2)


# --- errors found when the machine meets the workload --------------------------------------------

@pytest.mark.parametrize(("overrides", "field"), [
    ({"buffers.weights.size_kib": 1 / 16}, "buffers.weights.size_kib"),  # no fold fits
    ({"pe_array.precisions": ["int4", "binary"]}, "pe_array.precisions"),  # 8-bit operands
    ({"buffers.weights.voltage_v": 0.6,
      "buffers.weights.error_model.curve": {"kind": "sram_14nm", "extrapolation": "error"}},
     "buffers.weights.error_model.curve"),  # below the measured table
])
def test_errors_against_the_workload_name_the_hardware_file(capsys, tmp_path, overrides, field):
    """Checks the mapping and the fault model make (once the network is known) named the field
    but not the file it is in."""
    hw = accelsim.load_hardware(EDGE, overrides)
    path = write(tmp_path / "machine.yaml", yaml.safe_dump(hw.model_dump()))
    code, _, err = run_cli(capsys, "run", path, DIGITS)
    assert_one_line_error(code, err, f"{path}: {field}")


@pytest.mark.parametrize(("buffers", "role"), [
    ({"unified": {"size_kib": 3 / 1024, "banks": 3, "bank_width_bits": 8}}, "ifmap"),
    ({"unified": {"size_kib": 1 / 8192, "bank_width_bits": 1}, "ifmap": {}}, "weights"),
])
def test_a_buffer_too_small_for_two_one_byte_slots_is_refused(capsys, tmp_path, buffers, role):
    """A 3-byte buffer shared by three roles left each 1 B, slots of 0 B: the binary network's
    first (vector) layer divided by the slot (ZeroDivisionError)."""
    path = write(tmp_path / "tiny.yaml", yaml.safe_dump({"buffers": buffers}))
    code, _, err = run_cli(capsys, "run", path, WORKLOADS / "digits_binary_qonnx.onnx")
    assert_one_line_error(code, err, f"{path}: buffers.unified.size_kib", f"leaves {role}")


# --- per-layer voltages --------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "says"), [
    ("conv_1", "has no layer 'conv_1' (did you mean conv1?)"),
    ("fc9", "has no layer 'fc9'"),
    (3, "has 3 Conv/MatMul layers (indices 0 to 2)"),
])
def test_a_layer_voltage_for_no_layer_is_refused(capsys, key, says):
    """A mistyped layer name or an index past the last Conv/MatMul was ignored: the layer ran
    at the buffer's voltage_v and the result said nothing."""
    code, _, err = run_cli(capsys, "run", EDGE, DIGITS, "--timing-only",
                           "--set", f"buffers.weights.layer_voltage_v.{key}=0.7")
    assert_one_line_error(code, err, f"{EDGE}: buffers.weights.layer_voltage_v.{key}: "
                                     f"{DIGITS}", says)


@pytest.mark.parametrize("key", ["conv1", 0, "pool1"])
def test_a_layer_voltage_for_a_layer_applies(key):
    """By name (compute or vector layer) or by Conv/MatMul index: that layer's SRAM energy
    changes, the others' do not."""
    base = accelsim.simulate(accelsim.load_hardware(EDGE), DIGITS)
    low = accelsim.simulate(
        accelsim.load_hardware(EDGE, {f"buffers.ofmap.layer_voltage_v.{key}": 0.8}), DIGITS)
    changed = [b.name for b, lo in zip(base.layers, low.layers, strict=True)
               if lo.energy_breakdown_pj["sram.ofmap"] != b.energy_breakdown_pj["sram.ofmap"]]
    assert changed == ["conv1" if key == 0 else key]


# --- SCALE-Sim .cfg ------------------------------------------------------------------------------

LAYOUT = """
[layout]
IfmapCustomLayout: {flag}
FilterCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 4
IfmapSRAMBankPort: 2
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2
"""


@pytest.mark.parametrize(("flag", "custom"), [("yes", True), ("1", True), ("On", True),
                                              ("no", False), ("0", False), ("FALSE", False)])
def test_custom_layout_flags_read_as_scalesim_reads_them(tmp_path, flag, custom):
    """SCALE-Sim reads the layout flags with configparser's getboolean; accelsim took only the
    word true, so `IfmapCustomLayout: yes` ran without the custom banks."""
    text = SCALESIM_CFG.read_text() + LAYOUT.format(flag=flag)
    ifmap = accelsim.load_hardware(write(tmp_path / "layout.cfg", text)).buffers["ifmap"]
    assert (ifmap.banks, ifmap.ports, ifmap.bank_width_bits) == ((4, 2, 80) if custom
                                                                 else (1, 2, 8 * 32))


def test_a_custom_layout_flag_that_is_no_boolean_is_refused(capsys, tmp_path):
    path = write(tmp_path / "maybe.cfg", SCALESIM_CFG.read_text() + LAYOUT.format(flag="maybe"))
    code, _, err = run_cli(capsys, "validate", path)
    assert_one_line_error(code, err, f"{path}: [layout] ifmapcustomlayout", "'maybe'")


# --- topology CSVs -------------------------------------------------------------------------------

CONV_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
               "Num Filter, Strides,\n")


@pytest.mark.parametrize(("text", "got"), [
    (CONV_HEADER + "L0, 10, 10, 3, 3, 8, 40, 1\n", 6),
    ("Layer Name, M, N, K,\n" + "g0, 64, 32, 16\n", 2),
])
def test_a_row_without_its_trailing_comma_says_so(capsys, tmp_path, text, got):
    """SCALE-Sim drops each row's last field; a row written without the trailing comma lost its
    stride (or K) and the message only said `needs 7 positive integers`."""
    path = write(tmp_path / "topo.csv", text)
    code, _, err = run_cli(capsys, "run", EDGE, path)
    assert_one_line_error(code, err, f"{path}: line 2: {got} values after the layer name",
                          "end each row with a comma")
