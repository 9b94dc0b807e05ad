"""Hardware files, SCALE-Sim configs and topologies nobody wrote the code for: each test is a
machine or a file a fuzzing round broke (the smallest case found), plus a seeded hypothesis test
that draws random valid machines x small topologies through the whole run and checks the
invariants every run must keep."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, WORKLOADS, assert_one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_gemm_rows_under_another_header_say_what_a_gemm_header_is(capsys, tmp_path):
    """Only the header tells a GEMM topology from a conv one: M, K, N (or any other) was read
    as a conv row short of four values, with a hint about trailing commas it already had."""
    path = write(tmp_path / "topo.csv", "Layer, M, K, N,\ng0, 64, 32, 16,\n")
    code, _, err = run_cli(capsys, "run", EDGE, path)
    assert_one_line_error(code, err, f"{path}: line 2: 3 values after the layer name, needs 7",
                          "a GEMM topology's header reads: Layer name, M, N, K")
    assert "comma" not in err


# --- random machines x small workloads through the whole run ------------------------------------

def fold_formula(df: str, rows: int, cols: int, p: int, k: int, n: int) -> int:
    """DESIGN.md's compute cycles of a (P x K).(K x N) layer on an R x C array."""
    def cdiv(a: int, b: int) -> int:
        return -(-a // b)

    if df == "os":
        return cdiv(p, rows) * cdiv(n, cols) * (rows + cols + k - 2)
    if df == "ws":
        return cdiv(k, rows) * cdiv(n, cols) * (2 * rows + cols + p - 2)
    return cdiv(k, rows) * cdiv(p, cols) * (2 * rows + cols + n - 2)


def formula_cycles(graph, hw) -> dict[str, int]:
    """Each Conv/MatMul layer's fold-formula cycles, from the graph's shapes (groups apart)."""
    pe = hw.pe_array
    out = {}
    for node in graph.nodes:
        if node.op not in ("Conv", "MatMul"):
            continue
        x, w, y = (graph.tensors[t].shape for t in (*node.inputs[:2], node.outputs[0]))
        if node.op == "Conv":
            g = int(node.attrs.get("group", 1))
            p, k, n = y[0] * y[2] * y[3], w[1] * w[2] * w[3], w[0] // g
        else:
            g, p, k, n = 1, math.prod(x[:-1]), w[0], w[1]
        out[node.layer] = g * fold_formula(pe.dataflow, pe.rows, pe.cols, p, k, n)
    return out


def check_run(data: dict, formula: dict[str, int], exact: bool) -> None:
    """What every run keeps: cycles = compute + stalls >= the fold formula (equal with unlimited
    memory), stalls by cause and energy by component sum to their totals, energy >= 0."""
    layers, totals = data["layers"], data["totals"]
    assert {r["name"] for r in layers} >= set(formula)
    for r in layers:
        assert r["cycles"] == r["compute_cycles"] + r["stall_cycles"], r
        assert sum(r["stall_breakdown"].values()) == r["stall_cycles"]
        assert min(r["stall_breakdown"].values()) >= 0
        assert min(r["energy_breakdown_pj"].values()) >= 0
        assert math.isclose(sum(r["energy_breakdown_pj"].values()), r["energy_pj"],
                            rel_tol=1e-9, abs_tol=1e-9)
        if r["name"] in formula:
            assert r["compute_cycles"] >= formula[r["name"]], r
            if exact:
                assert r["cycles"] == formula[r["name"]], r
    assert totals["cycles"] == sum(r["cycles"] for r in layers)
    assert sum(totals["stall_breakdown"].values()) == totals["stall_cycles"]
    assert math.isclose(sum(totals["energy_breakdown_pj"].values()), totals["energy_pj"],
                        rel_tol=1e-9)


@st.composite
def buffers(draw, names: tuple[str, ...]) -> dict:
    out = {}
    for name in names:
        banks = draw(st.sampled_from([1, 2, 3, 8]))
        width = draw(st.sampled_from([8, 24, 64, 256]))
        row = banks * width // 8
        out[name] = {
            "size_kib": row * draw(st.sampled_from([8192, 1024, 3])) / 1024,
            "banks": banks, "bank_width_bits": width, "ports": draw(st.sampled_from([1, 2])),
            "double_buffered": draw(st.booleans()),
            "bank_mapping": draw(st.sampled_from(["interleaved", "contiguous"])),
            "ecc": draw(st.sampled_from(["none", "secded"])),
            "error_model": {"mode": draw(st.sampled_from(["persistent", "transient"])),
                            "effect": draw(st.sampled_from(["flip", "stuck_at_0",
                                                            "stuck_at_1"]))},
        }
    return out


@st.composite
def machines(draw) -> dict:
    """A hardware YAML: any array shape, dataflow, precisions holding 8-bit operands,
    accumulator, buffers (one unified or three), memory path and energy model; voltages at
    nominal, so no run may report corruption."""
    names = draw(st.sampled_from([("ifmap", "weights", "ofmap"), ("unified",),
                                  ("weights", "unified")]))
    extra = draw(st.lists(st.sampled_from(["binary", "int2", "int4"]), unique=True))
    return {
        "pe_array": {"rows": draw(st.integers(1, 40)), "cols": draw(st.integers(1, 40)),
                     "dataflow": draw(st.sampled_from(["os", "ws", "is"])),
                     "precisions": [draw(st.sampled_from(["int8", "int16"])), *extra],
                     "accumulator_bits": draw(st.integers(accumulator.MIN_BITS,
                                                          accumulator.MAX_BITS)),
                     "accumulator_overflow": draw(st.sampled_from(["wrap", "saturate"]))},
        "buffers": draw(buffers(names)),
        "dram": {"bandwidth_bytes_per_cycle": draw(st.sampled_from([None, 0.3, 4, 64])),
                 "latency_cycles": draw(st.sampled_from([0, 30, 2000])),
                 "burst_bytes": draw(st.sampled_from([1, 64]))},
        "interconnect": {"width_bits": draw(st.sampled_from([None, 8, 512])),
                         "latency_cycles": draw(st.integers(0, 20)),
                         "hops": draw(st.integers(1, 3))},
        "energy": {"model": draw(st.sampled_from(["table", "table", "toggles"]))},
    }


@st.composite
def topologies(draw) -> str:
    """A SCALE-Sim topology of one or two layers, written the odd ways SCALE-Sim's own are."""
    if draw(st.booleans()):
        header = "Layer Name, M, N, K,"
        rows = [(f"g{i}", *(draw(st.integers(1, 70)) for _ in range(3)))
                for i in range(draw(st.integers(1, 2)))]
    else:
        header = CONV_HEADER.rstrip("\n")
        rows = []
        for i in range(draw(st.integers(1, 2))):
            fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            name = f"c{i}DP" if draw(st.integers(0, 5)) == 0 else f"c{i}"
            rows.append((name, fh + draw(st.integers(0, 9)), fw + draw(st.integers(0, 9)), fh,
                         fw, draw(st.integers(1, 20)), draw(st.integers(1, 40)),
                         draw(st.integers(1, 6))))
    sep = draw(st.sampled_from([",", ", ", " ,\t"]))
    lines = [header] + [sep.join(map(str, r)) + sep for r in rows]
    return "\n".join(lines) + draw(st.sampled_from(["\n", "\n\n  \n", ""]))


UNLIMITED = {"dram.bandwidth_bytes_per_cycle": None, "dram.latency_cycles": 0,
             "interconnect.width_bits": None, "interconnect.latency_cycles": 0}


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(machine=machines(), topology=topologies(), network=st.booleans(), seed=st.integers(0, 3))
def test_random_machines_keep_the_invariants(tmp_path, capsys, machine, topology, network, seed):
    """`accelsim run` on a random machine and a small topology (or the digits CNN, with its
    numerics and one fault trial): no traceback; a refusal is one line naming the hardware
    file; otherwise the invariants hold, the same seed gives the same JSON byte for byte, and
    with unlimited memory every Conv/MatMul layer takes exactly the fold formula's cycles."""
    hw_path = write(tmp_path / "machine.yaml", yaml.safe_dump(machine))
    workload = DIGITS if network else write(tmp_path / "topo.csv", topology)
    argv = ["run", hw_path, workload, "--json", "--seed", seed]
    code, out, err = run_cli(capsys, *argv)
    if code == 2:
        assert_one_line_error(code, err, str(hw_path))
        return
    assert code == 0, err
    data = json.loads(out)
    hw = accelsim.load_hardware(hw_path)
    graph = accelsim.load_workload(workload, seed=seed)
    check_run(data, formula_cycles(graph, hw), exact=False)
    if data.get("corruption"):
        assert data["corruption"]["metrics"]["bits_flipped"]["mean"] == 0
    assert run_cli(capsys, *argv)[1] == out
    sets = [f"{k}={'null' if v is None else v}" for k, v in UNLIMITED.items()]
    sets += [f"buffers.{b}.size_kib=65536" for b in machine["buffers"]]
    sets += [f"buffers.{b}.ports=100000" for b in machine["buffers"]]
    code, out, err = run_cli(capsys, "run", hw_path, workload, "--json", "--timing-only",
                             "--set", "energy.model=table",
                             *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    check_run(json.loads(out), formula_cycles(graph, hw), exact=True)


# --- hardware files ------------------------------------------------------------------------------

def test_a_key_the_chosen_curve_lacks_gets_no_hint_of_itself(capsys):
    """`points` on the (default) sram_14nm curve was refused as `unknown key (did you mean
    points?)`: the hint came from every curve kind's fields, not the chosen one's."""
    code, _, err = run_cli(capsys, "validate", EDGE,
                           "--set", "buffers.weights.error_model.curve.points=[[0.5, 0.1]]")
    assert_one_line_error(code, err, f"{EDGE}: buffers.weights.error_model.curve.points: "
                                     "unknown key")
    assert "did you mean" not in err


def test_a_typo_in_a_tagged_curve_gets_that_curve_s_hint(capsys, tmp_path):
    path = write(tmp_path / "typo.yaml", "buffers:\n  weights:\n    error_model:\n      curve: "
                 "{kind: table, points: [[0.8, 0.1], [0.9, 0.0]], extrapolaton: clamp}\n")
    code, _, err = run_cli(capsys, "validate", path)
    assert_one_line_error(code, err, f"{path}: buffers.weights.error_model.curve.extrapolaton: "
                                     "unknown key (did you mean extrapolation?)")
