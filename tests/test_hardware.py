"""The hardware description: bundled files load, SCALE-Sim configs map right, bad input is named."""

import itertools
import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim.errors import AccelsimError, HardwareError
from accelsim.hardware import (
    SRAM_BER_14NM,
    Buffer,
    Hardware,
    json_schema,
    load_hardware,
    parse_override,
    qkeras_add_pj,
    qkeras_mult_pj,
    scalesim_to_dict,
    validate_file,
)

HWCONFIGS = Path(__file__).resolve().parent.parent / "hwconfigs"
BUNDLED = sorted(HWCONFIGS.glob("*.yaml")) + sorted(HWCONFIGS.glob("*.cfg"))

# scale-sim-v3 configs/scale.cfg and configs/google_ramulator.cfg, verbatim but trailing spaces.
SCALESIM_V3_DEFAULT = """[general]
run_name = scale_example_run_32x32_ws

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : os
MemoryBanks:   1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""
SCALESIM_V3_GOOGLE = """[general]
run_name = GoogleTPU_v1_ws

[architecture_presets]
ArrayHeight:    256
ArrayWidth:     256
IfmapSramSzkB:    6144
FilterSramSzkB:   6144
OfmapSramSzkB:    2048
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow : ws
Bandwidth : 10
ReadRequestBuffer: 128
WriteRequestBuffer: 128

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: True
"""
# scale-sim-v2 configs/scale_layout.cfg (layout keys inside architecture_presets), as above.
SCALESIM_V2_LAYOUT = """[general]
run_name = scale_example_run_32x32_os

[architecture_presets]
ArrayHeight:    128
ArrayWidth:     128
IfmapSramSzkB:   256
FilterSramSzkB:  256
OfmapSramSzkB:   256
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 64
Dataflow : os
IfmapCustomLayout: True
FilterCustomLayout: False
IfmapSRAMBankBandwidth: 64
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterSRAMBankBandwidth: 640
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[run_presets]
InterfaceBandwidth: USER
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source, *args, **kwargs) -> str:
    with pytest.raises(HardwareError) as info:
        load_hardware(source, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Bundled files


def test_bundled_set_is_complete():
    names = {p.name for p in BUNDLED}
    assert {
        "edge_int8_16x16.yaml",
        "tpu_like_256x256_ws.yaml",
        "eyeriss_like_12x14.yaml",
        "binary_lowvolt.yaml",
        "scalesim_default_32x32.cfg",
    } <= names


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_config_loads(path):
    hw = load_hardware(path)
    assert isinstance(hw, Hardware)
    assert hw.name == path.stem or path.suffix == ".cfg"
    for role in ("ifmap", "weights", "ofmap"):
        assert hw.buffer_for(role) in hw.buffers
    assert validate_file(path).startswith(hw.name)


@pytest.mark.parametrize("path", sorted(HWCONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_yaml_states_every_energy_number_with_a_source(path):
    """Each numeric line of the energy section carries a comment (its source)."""
    lines = path.read_text().split("energy:\n", 1)[1].splitlines()
    numeric = [ln for ln in lines if ":" in ln and ln.split(":", 1)[1].split("#")[0].strip()]
    assert numeric
    for line in numeric:
        value = line.split(":", 1)[1].split("#")[0].strip()
        if value.replace(".", "", 1).isdigit():
            assert "#" in line, line


def test_published_numbers():
    tpu = load_hardware(HWCONFIGS / "tpu_like_256x256_ws.yaml")
    assert (tpu.pe_array.rows, tpu.pe_array.cols, tpu.clock_mhz) == (256, 256, 700)
    assert tpu.buffers["unified"].size_bytes == 24 * 2**20
    assert tpu.buffers["ofmap"].size_bytes == 4096 * 256 * 4
    assert tpu.buffer_for("ifmap") == "unified" and tpu.buffer_for("weights") == "weights"
    eyeriss = load_hardware(HWCONFIGS / "eyeriss_like_12x14.yaml")
    assert (eyeriss.pe_array.rows, eyeriss.pe_array.cols, eyeriss.clock_mhz) == (12, 14, 200)
    assert sum(b.size_kib for b in eyeriss.buffers.values()) == 108


def test_binary_lowvolt_weights_run_below_vmin_except_first_layer():
    hw = load_hardware(HWCONFIGS / "binary_lowvolt.yaml")
    w = hw.buffers["weights"]
    assert w.voltage_for("conv_2", 2) / w.resolved_vmin_v == pytest.approx(0.875)
    assert w.voltage_for("conv_0", 0) == w.resolved_vmin_v
    assert "binary" in hw.pe_array.precisions
    assert hw.energy.mac_pj("binary", 32) < hw.energy.mac_pj("int8", 32) / 10


def test_bundled_energy_tables_equal_the_fits():
    """The YAML tables restate the code's defaults, so the two cannot drift apart."""
    hw = load_hardware(HWCONFIGS / "edge_int8_16x16.yaml")
    default = Hardware().energy
    for p, pj in hw.energy.mac.multiplier_pj.items():
        assert pj == pytest.approx(default.mac.multiplier_pj[p], rel=1e-3)
    assert hw.energy.mac.xnor_popcount_pj == pytest.approx(default.mac.xnor_popcount_pj)
    assert hw.energy.sram == default.sram and hw.energy.vector_op == default.vector_op


# ---------------------------------------------------------------------------------------------
# Defaults and derived quantities


def test_minimal_yaml_works(tmp_path):
    hw = load_hardware(write(tmp_path, "hw.yaml", "clock_mhz: 800\n"))
    assert hw.clock_mhz == 800 and set(hw.buffers) == {"ifmap", "weights", "ofmap"}
    assert hw.source_format == "accelsim"


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("2.5E+1", 25.0), ("-3e2", -300.0),
                                         ("0.8", 0.8), ("7", 7), ("1_000", 1000)])
def test_exponent_numbers_are_numbers(tmp_path, text, value):
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; users write it, so both --set and files read
    it as the number it is."""
    assert parse_override(f"dram.energy_pj_per_bit={text}") == ("dram.energy_pj_per_bit", value)
    hw = load_hardware(write(tmp_path, "hw.yaml", f"clock_mhz: {text.lstrip('-')}\n"))
    assert hw.clock_mhz == abs(value)


def test_energy_fits_match_horowitz():
    assert qkeras_mult_pj(8) == pytest.approx(0.2, abs=1e-5)
    assert qkeras_add_pj(32) == pytest.approx(0.1)
    hw = Hardware()
    assert hw.energy.mac_pj("int8", 32) == pytest.approx(0.3, abs=1e-5)
    # E64(S) = 10.2 pJ (S/8KB)^0.47: 32 KB -> ~20 pJ, 1 MB -> ~100 pJ (Horowitz's table).
    assert hw.energy.sram.access_pj(32 * 1024, 64) == pytest.approx(20, rel=0.05)
    assert hw.energy.sram.access_pj(2**20, 64) == pytest.approx(100, rel=0.05)
    one_bank = load_hardware({}, **{"buffers.weights.size_kib": 8})
    assert one_bank.sram_energy_pj("weights", "read") == pytest.approx(10.2)
    assert load_hardware({}, **{"energy.technology_node_nm": 22.5}).energy.node_scale == 0.5


def test_buffer_geometry_and_ecc():
    hw = load_hardware({}, **{"buffers.weights.banks": 4, "buffers.weights.ecc": "secded"})
    w = hw.buffers["weights"]
    assert w.rows_per_bank == 64 * 1024 * 8 // (4 * 64)
    assert w.ecc_check_bits == 8  # (72, 64) SECDED
    assert hw.buffers["ifmap"].ecc_check_bits == 0


def test_erfc_curve_fits_the_14nm_table_within_a_quarter():
    curve = (
        load_hardware({}, **{"buffers.weights.error_model.curve": {"kind": "erfc"}})
        .buffers["weights"]
        .error_model.curve
    )
    for v, ber in SRAM_BER_14NM:
        if 1e-4 < ber:
            assert math.isclose(curve.ber(v), ber, rel_tol=0.25), (v, ber, curve.ber(v))


# ---------------------------------------------------------------------------------------------
# Overrides


def test_overrides_all_forms_agree(tmp_path):
    path = HWCONFIGS / "edge_int8_16x16.yaml"
    a = load_hardware(path, {"buffers.weights.voltage_v": 0.8})
    b = load_hardware(path, **{"buffers.weights.voltage_v": 0.8})
    c = load_hardware(path, ["buffers.weights.voltage_v=0.8"])
    d = load_hardware(load_hardware(path), ["buffers.weights.voltage_v=0.8"])
    assert a == b == c == d
    assert a.buffers["weights"].voltage_v == 0.8
    assert a.buffers["ifmap"] == load_hardware(path).buffers["ifmap"]


def test_override_creates_missing_sections_and_keys():
    hw = load_hardware(
        {"clock_mhz": 100},
        [
            "pe_array.precisions=[int8, int4]",
            "buffers.weights.layer_voltage_v.3=0.7",
            "buffers.weights.layer_voltage_v.conv1=0.75",
            "dram.bandwidth_bytes_per_cycle=null",
            "buffers.weights.error_model.curve={kind: table, points: [[0.8, 0.01], [1.0, 0]]}",
        ],
    )
    w = hw.buffers["weights"]
    assert hw.pe_array.precisions == ["int8", "int4"]
    assert w.voltage_for(None, 3) == 0.7 and w.voltage_for("conv1", 0) == 0.75
    assert w.voltage_for("conv9", 9) == w.voltage_v
    assert hw.dram.bandwidth_bytes_per_cycle is None
    assert w.error_model.curve.points == [[0.8, 0.01], [1.0, 0.0]]
    assert set(hw.buffers) == {"ifmap", "weights", "ofmap"}


def test_override_inside_a_model_given_as_override():
    hw = load_hardware(
        {}, {"buffers.weights": Buffer(size_kib=8, banks=2), "buffers.weights.voltage_v": 0.7}
    )
    assert (hw.buffers["weights"].size_kib, hw.buffers["weights"].voltage_v) == (8, 0.7)
    assert hw.buffers["weights"].banks == 2


def test_override_does_not_touch_callers_dict():
    raw = {"buffers": {"weights": {"voltage_v": 0.9}, "ifmap": {}, "ofmap": {}}}
    load_hardware(raw, **{"buffers.weights.voltage_v": 0.7})
    assert raw["buffers"]["weights"]["voltage_v"] == 0.9


def test_override_can_repair_an_invalid_file(tmp_path):
    path = write(tmp_path, "hw.yaml", "clock_mhz: 0\n")
    assert load_hardware(path, ["clock_mhz=250"]).clock_mhz == 250


@pytest.mark.parametrize(
    "override, field",
    [
        ("buffers.weights.voltag=0.8", "buffers.weights.voltag"),
        ("pe_array.row=4", "pe_array.row"),
        ("clock_mhz.value=4", "clock_mhz.value"),
        ("energy.mac.multiplier_pj.int8.x=1", "energy.mac.multiplier_pj.int8.x"),
    ],
)
def test_override_unknown_path_is_named(override, field):
    message = error_of(HWCONFIGS / "edge_int8_16x16.yaml", [override])
    assert field in message and "edge_int8_16x16.yaml" in message


@pytest.mark.parametrize(
    "override, field",
    [
        ("buffers.weights.voltage_v=-0.8", "buffers.weights.voltage_v"),
        ("buffers.weights.voltage_v=fast", "buffers.weights.voltage_v"),
        ("pe_array.dataflow=rs", "pe_array.dataflow"),
        ("dram.bandwidth_bytes_per_cycle=0", "dram.bandwidth_bytes_per_cycle"),
        ("buffers.weights.error_model.curve.mu=0.7", "buffers.weights.error_model.curve.mu"),
    ],
)
def test_overrides_are_validated(override, field):
    message = error_of(HWCONFIGS / "edge_int8_16x16.yaml", [override])
    assert message.startswith(f"{HWCONFIGS / 'edge_int8_16x16.yaml'}: {field}:"), message


@pytest.mark.parametrize("text", ["clock_mhz", "=3", "clock_mhz=[1,"])
def test_malformed_set_strings(text):
    with pytest.raises(HardwareError):
        parse_override(text)


@settings(max_examples=40, deadline=None)
@given(v=st.floats(0.05, 2.0, allow_nan=False), clock=st.integers(1, 5000))
def test_override_values_round_trip(v, clock):
    hw = load_hardware({}, [f"buffers.ofmap.voltage_v={v!r}", f"clock_mhz={clock}"])
    assert hw.buffers["ofmap"].voltage_v == v and hw.clock_mhz == clock


# ---------------------------------------------------------------------------------------------
# Bad input: one line, naming the file and the field


def table(points):
    return {"buffers.weights.error_model.curve": {"kind": "table", "points": points}}


@pytest.mark.parametrize(
    "raw, overrides, field, words",
    [
        ({"clock_mhz": 500, "colck": 1}, {}, "colck", "unknown key"),
        ({"pe_array": {"rows": 16, "colums": 16}}, {}, "pe_array.colums", "did you mean cols"),
        ({"pe_array": {"rows": "16"}}, {}, "pe_array.rows", "integer"),
        ({"pe_array": {"rows": 16.0}}, {}, "pe_array.rows", "integer"),
        ({"buffers": {"weights": {"double_buffered": "yes"}}}, {}, "double_buffered", "boolean"),
        ({"pe_array": {"rows": -4}}, {}, "pe_array.rows", "greater than 0"),
        ({}, {"buffers.ifmap.size_kib": 0}, "buffers.ifmap.size_kib", "greater than 0"),
        ({}, {"buffers.ifmap.size_kib": -1}, "buffers.ifmap.size_kib", "greater than 0"),
        ({}, {"dram.bandwidth_bytes_per_cycle": 0}, "dram.bandwidth_bytes_per_cycle", "than 0"),
        ({}, {"interconnect.width_bits": 0}, "interconnect.width_bits", "greater than 0"),
        ({}, {"buffers.ifmap.banks": 0}, "buffers.ifmap.banks", "greater than 0"),
        (
            {"buffers": {"ifmap": {}, "ofmap": {}, "weights": {"size_kib": 0.0625, "banks": 16}}},
            {},
            "buffers.weights.size_kib",
            "smaller than one row",
        ),
        ({}, table([[0.8, 0.01], [0.9, 0.02]]), "curve.points", "must not rise"),
        ({}, table([[0.8, 0.6], [0.9, 0.0]]), "curve.points.0", "[0, 0.5]"),
        ({}, table([[0.8, -1e-3], [0.9, 0.0]]), "curve.points.0", "[0, 0.5]"),
        ({}, table([[0.8, 0.1], [0.8, 0.0]]), "curve.points", "twice"),
        ({}, table([[0.8, 0.1, 3], [0.9, 0.0]]), "curve.points.0", "at most 2"),
        ({}, {"buffers.weights.voltage_v": 0}, "buffers.weights.voltage_v", "greater than 0"),
        ({}, {"buffers.weights.vmin_v": -0.7}, "buffers.weights.vmin_v", "greater than 0"),
        (
            {},
            {"buffers.weights.layer_voltage_v": {"conv1": -0.7}},
            "buffers.weights.layer_voltage_v.conv1",
            "greater than 0",
        ),
        ({}, {"dram.energy_pj_per_bit": -1}, "dram.energy_pj_per_bit", "greater than or equal"),
        ({}, {"energy.sram.read_pj_64b_8kib": -1}, "energy.sram.read_pj_64b_8kib", "equal to 0"),
        ({}, {"energy.mac.multiplier_pj.int8": -0.2}, "multiplier_pj.int8", "equal to 0"),
        (
            {"pe_array": {"precisions": ["int8", "int4"]}},
            {"energy.mac.multiplier_pj": {"int8": 0.2}},
            "energy.mac.multiplier_pj",
            "no entry for int4",
        ),
        ({"pe_array": {"precisions": ["int3"]}}, {}, "pe_array.precisions.0", "'int8'"),
        ({"pe_array": {"precisions": ["int8", "int8"]}}, {}, "pe_array.precisions", "twice"),
        ({}, {"pe_array.accumulator_overflow": "clip"}, "accumulator_overflow", "saturate"),
        ({}, {"buffers.weights.error_model.mode": "sometimes"}, "error_model.mode", "transient"),
        ({"buffers": {"scratch": {}}}, {}, "buffers.scratch", "unknown buffer name"),
        ({"buffers": {"weights": {}}}, {}, "buffers", "no buffer holds ifmap, ofmap"),
        ({"buffers": {"unified": {}, "ifmap": {}, "weights": {}, "ofmap": {}}}, {}, "unified", ""),
        ({}, {"clock_mhz": float("nan")}, "clock_mhz", "finite"),
        ({}, {"buffers.weights.error_model.curve": {"kind": "spice"}}, "curve", "tag"),
    ],
)
def test_bad_input_names_the_field(raw, overrides, field, words):
    message = error_of(raw, overrides)
    location, _, detail = message.partition(": ")[2].partition(": ")
    assert message.startswith("hardware: ")
    assert location.endswith(field), message
    assert words in detail, message


def test_error_is_an_accelsim_error_with_one_line(tmp_path):
    path = write(tmp_path, "hw.yaml", "buffers:\n  weights:\n    voltage_v: -0.9\n")
    with pytest.raises(AccelsimError) as info:
        load_hardware(path)
    assert str(info.value) == (f"{path}: buffers.weights.voltage_v: Input should be greater than 0")


@pytest.mark.parametrize(
    "text, words",
    [
        ("clock_mhz: [1, 2\n", "invalid YAML at line"),
        ("clock_mhz: 1\nclock_mhz: 2\n", "duplicate key 'clock_mhz'"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("", "empty file"),
        ("\t clock: 3\n", "invalid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path, text, words):
    path = write(tmp_path, "hw.yaml", text)
    message = error_of(path)
    assert message.startswith(str(path)) and words in message


def test_missing_file_and_directory(tmp_path):
    assert "no such hardware file" in error_of(tmp_path / "nope.yaml")
    assert "no such hardware file" in error_of(tmp_path / "nope.cfg")
    assert "is a directory" in error_of(tmp_path)


# ---------------------------------------------------------------------------------------------
# SCALE-Sim


def test_scalesim_default_cfg():
    hw = load_hardware(HWCONFIGS / "scalesim_default_32x32.cfg")
    assert (hw.pe_array.rows, hw.pe_array.cols, hw.pe_array.dataflow) == (32, 32, "os")
    assert {n: b.size_bytes for n, b in hw.buffers.items()} == {
        "ifmap": 64 * 1024,
        "weights": 64 * 1024,
        "ofmap": 64 * 1024,
    }
    assert hw.source_format == "scalesim"
    assert hw.scalesim.interface_bandwidth == "CALC"
    assert hw.dram.bandwidth_bytes_per_cycle is None  # CALC: stall-free, unlimited
    assert hw.dram.latency_cycles == 0 and hw.interconnect.width_bits is None
    assert (hw.scalesim.filter_offset, hw.scalesim.ofmap_offset) == (10_000_000, 20_000_000)
    assert hw.name == hw.scalesim.run_name == "scale_example_run_32x32_os"


def test_scalesim_v3_user_bandwidth_and_ignored_sections(tmp_path):
    hw = load_hardware(write(tmp_path, "google.cfg", SCALESIM_V3_GOOGLE))
    assert (hw.pe_array.rows, hw.pe_array.cols, hw.pe_array.dataflow) == (256, 256, "ws")
    assert hw.buffers["ifmap"].size_kib == 6144 and hw.buffers["ofmap"].size_kib == 2048
    assert hw.scalesim.interface_bandwidth == "USER"
    assert hw.dram.bandwidth_bytes_per_cycle == 10  # words/cycle x 1-byte words
    assert hw.scalesim.read_request_buffer == 128
    assert hw.buffers["ifmap"].banks == 1  # custom layout off: layout keys do not apply


def test_scalesim_v3_default_and_v2_layout(tmp_path):
    v3 = load_hardware(write(tmp_path, "scale.cfg", SCALESIM_V3_DEFAULT))
    v2 = load_hardware(HWCONFIGS / "scalesim_default_32x32.cfg")
    assert v3.pe_array == v2.pe_array and v3.buffers == v2.buffers
    layout = load_hardware(write(tmp_path, "layout.cfg", SCALESIM_V2_LAYOUT))
    ifmap, weights = layout.buffers["ifmap"], layout.buffers["weights"]
    assert (ifmap.banks, ifmap.ports, ifmap.bank_width_bits) == (10, 2, 64 * 8)
    assert weights.banks == 1 and weights.bank_width_bits == 8 * 128  # FilterCustomLayout False
    assert layout.dram.bandwidth_bytes_per_cycle == 64


def test_scalesim_cfg_round_trips_through_yaml(tmp_path):
    """A .cfg converted to YAML keeps its SCALE-Sim provenance and loads to the same machine."""
    hw = load_hardware(HWCONFIGS / "scalesim_default_32x32.cfg")
    path = write(tmp_path, "converted.yaml", yaml.safe_dump(hw.model_dump()))
    assert load_hardware(path) == hw


def test_scalesim_cfg_overrides_apply(tmp_path):
    hw = load_hardware(HWCONFIGS / "scalesim_default_32x32.cfg", ["pe_array.dataflow=ws"])
    assert hw.pe_array.dataflow == "ws"
    assert scalesim_to_dict(HWCONFIGS / "scalesim_default_32x32.cfg")["pe_array"]["rows"] == 32


@pytest.mark.parametrize(
    "change, words",
    [
        (("ArrayHeight:    256", "ArrayHieght: 256"), "ArrayHieght: unknown SCALE-Sim key"),
        (("ArrayHeight:    256", "ArrayHeight: big"), "arrayheight: expected an integer"),
        (("Dataflow : ws", "Dataflow : rs"), "pe_array.dataflow"),
        (("InterfaceBandwidth: USER", "InterfaceBandwidth: FAST"), "InterfaceBandwidth"),
        (("InterfaceBandwidth: USER", "InterfaceBandwidth: USER\nx"), "invalid SCALE-Sim"),
        (("IfmapSramSzkB:    6144", "IfmapSramSzkB:    0"), "buffers.ifmap.size_kib"),
        (("[general]", "[general]\n[general]"), "invalid SCALE-Sim"),
        (("Bandwidth : 10", ""), "missing SCALE-Sim key"),
        (("Bandwidth : 10", "Bandwidth : 10,x"), "Bandwidth: expected integers"),
        (("Dataflow : ws", "Dataflow : ws\n[extra]\nDataflow: os"), "given twice"),
        (("IfmapCustomLayout: False", "IfmapCustomLayout: True\nSRAMBank: 3"), "unknown"),
    ],
)
def test_bad_scalesim_cfg(tmp_path, change, words):
    text = SCALESIM_V3_GOOGLE.replace(*change)
    assert text != SCALESIM_V3_GOOGLE
    message = error_of(write(tmp_path, "bad.cfg", text))
    assert "bad.cfg" in message and words in message


def test_scalesim_sparsity_is_rejected(tmp_path):
    text = SCALESIM_V3_GOOGLE.replace("SparsitySupport : false", "SparsitySupport : true")
    assert "SparsitySupport" in error_of(write(tmp_path, "sparse.cfg", text))


# ---------------------------------------------------------------------------------------------
# Schema


def test_json_schema_structure():
    schema = json_schema()
    json.dumps(schema)  # serialisable
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"clock_mhz", "pe_array", "buffers", "dram", "interconnect", "energy"} <= set(
        schema["properties"]
    )
    defs = schema["$defs"]
    for name, definition in defs.items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(schema):
        assert ref.startswith("#/$defs/") and ref.split("/")[-1] in defs, ref
    assert defs["Buffer"]["properties"]["size_kib"]["exclusiveMinimum"] == 0


@settings(max_examples=30, deadline=None)
@given(
    size_bytes=st.integers(1, 1 << 16),
    banks=st.integers(1, 64),
    width=st.sampled_from([8, 16, 32, 64, 128, 512]),
)
def test_buffer_fits_a_row_iff_large_enough(size_bytes, banks, width):
    overrides = {
        "buffers.weights.size_kib": size_bytes / 1024,
        "buffers.weights.banks": banks,
        "buffers.weights.bank_width_bits": width,
    }
    if size_bytes * 8 >= banks * width:
        w = load_hardware({}, overrides).buffers["weights"]
        assert w.rows_per_bank * banks * width <= size_bytes * 8
        assert w.rows_per_bank >= 1
    else:
        assert "smaller than one row" in error_of({}, overrides)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.5, 1.2), st.floats(0.0, 0.5)),
        min_size=2,
        max_size=8,
        unique_by=lambda p: p[0],
    )
)
def test_ber_table_accepted_iff_monotonic(points):
    ordered = sorted(points)
    monotonic = all(b1 <= b0 for (_, b0), (_, b1) in itertools.pairwise(ordered))
    raw_points = [list(p) for p in points]
    if monotonic:
        hw = load_hardware({}, table(raw_points))
        assert hw.buffers["weights"].error_model.curve.points == [list(p) for p in ordered]
    else:
        assert "must not rise" in error_of({}, table(raw_points))
