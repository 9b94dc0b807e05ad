"""Energy (table model): closed-form energy of small layers, derived here by hand, to the last pJ.

The energy model, restated from DESIGN.md (section Energy) and the issue, independently of
accelsim.energy: per layer and component,

    mac            MACs x (multiplier[precision] + adder_pj_per_bit x accumulator bits),
                   or MACs x xnor_popcount_pj for a binary layer
    register_file  MACs x (ifmap bits + weight bits + 2 x accumulator bits) x pJ/bit
                   (the passing and the kept operand read once, the accumulator read and written)
    sram.<buffer>  bank-width reads and writes x E64(S) x (width / 64) x (V / Vnom)^2, with
                   E64(S) = read_pj_64b_8kib x (S / 8 KiB)^size_exponent, S one bank's bytes, and
                   writes x write_over_read (or the buffer's own read/write energy when given)
    sram_leakage   sum over buffers of uW/KiB x KiB x (V / Vnom)^leakage_voltage_exponent x time
    dram           DRAM bytes x 8 x pJ/bit (an interface energy: not scaled with the logic node)
    interconnect   DRAM bytes x 8 x hops x pJ/bit/hop
    vector         lane ops x (adds x add_pj + compares x compare_pj + multiplies x multiply_pj)

every one but dram times (technology_node_nm / tables_node_nm)^node_scaling_exponent. MACs,
operand bits and the vector work come from the layer's shape, written here; the SRAM access
counts, DRAM bytes and cycles are the timing model's outputs and come from the Result's own
per-layer records (energy and timing must agree on them, not re-derive them).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelsim.cli import main
from accelsim.hardware import load_hardware
from accelsim.simulate import simulate
from accelsim.workload import load_workload
from accelsim.workload.ir import BIPOLAR, INT32, Graph, Node, Tensor, int_type

HWCONFIGS = ROOT / "hwconfigs"
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, " \
              "Num Filter, Strides,\n"
GEMM_HEADER = "Layer Name, M, N, K,\n"
COMPONENTS = {"mac", "register_file", "sram.ifmap", "sram.weights", "sram.ofmap", "sram_leakage",
              "dram", "interconnect", "vector"}

# A machine whose every energy number differs from the defaults, so a default, a swapped
# entry or a missing factor shows. ofmap carries its own access and leakage energies.
HW: dict = {
    "name": "energy_test",
    "clock_mhz": 400,
    "pe_array": {"rows": 4, "cols": 4, "dataflow": "ws", "accumulator_bits": 24,
                 "precisions": ["binary", "int2", "int4", "int8", "int16"]},
    "buffers": {
        "ifmap": {"size_kib": 16, "banks": 2, "bank_width_bits": 64,
                  "voltage_v": 0.9, "nominal_voltage_v": 0.9},
        "weights": {"size_kib": 32, "banks": 4, "bank_width_bits": 128,
                    "voltage_v": 0.85, "nominal_voltage_v": 0.95},
        "ofmap": {"size_kib": 8, "banks": 1, "bank_width_bits": 128, "ports": 2,
                  "voltage_v": 1.0, "nominal_voltage_v": 1.0,
                  "read_energy_pj": 13.0, "write_energy_pj": 15.5, "leakage_uw": 5.0},
    },
    "dram": {"bandwidth_bytes_per_cycle": 8, "latency_cycles": 20, "burst_bytes": 16,
             "energy_pj_per_bit": 17.5},
    "interconnect": {"width_bits": 64, "hops": 3, "energy_pj_per_bit_per_hop": 0.07},
    "energy": {
        "technology_node_nm": 45, "tables_node_nm": 45, "node_scaling_exponent": 1.0,
        "mac": {"multiplier_pj": {"int2": 0.011, "int4": 0.05, "int8": 0.21, "int16": 0.8},
                "adder_pj_per_bit": 0.004, "xnor_popcount_pj": 0.009},
        "register_file_pj_per_bit": 0.05,
        "sram": {"read_pj_64b_8kib": 9.0, "size_exponent": 0.5, "write_over_read": 1.25,
                 "leakage_uw_per_kib": 3.0, "leakage_voltage_exponent": 2.0},
        "vector_op": {"add_pj": 0.11, "compare_pj": 0.07, "multiply_pj": 2.9},
    },
}
TWO_LAYERS = [("first", 9, 9, 3, 3, 4, 6, 1), ("second", 7, 7, 2, 2, 6, 5, 1)]


def qkeras_mult(b: int) -> float:
    """google/qkeras qtools/settings.py (Horowitz ISSCC 2014 fit), as accelsim's tables use it."""
    return 0.0029948 * b**2 + 0.0010417 * b


def with_(hw: dict, **paths) -> dict:
    """A deep copy of `hw` with dotted paths (written with __ for .) set."""
    out = copy.deepcopy(hw)
    for path, value in paths.items():
        node = out
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


# --- the closed form ------------------------------------------------------------------------

class Layer:
    """What the closed form needs of one layer, from its shape: MACs, operand bits, the PE mode
    it runs in, and its vector-unit work as {(adds, compares, multiplies): lane ops}."""

    def __init__(self, name, index, macs=0, x_bits=8, w_bits=8, mode="int8", vector=None):
        self.name, self.index, self.macs = name, index, macs
        self.x_bits, self.w_bits, self.mode = x_bits, w_bits, mode
        self.vector = vector or {}


def voltage(buf: dict, layer: Layer) -> float:
    per_layer = buf.get("layer_voltage_v", {})
    if layer.name in per_layer:
        return per_layer[layer.name]
    if layer.index in per_layer:
        return per_layer[layer.index]
    return buf["voltage_v"]


def sram_access_pj(hw: dict, buf: dict, access: str) -> float:
    own = buf.get(f"{access}_energy_pj")
    if own is not None:
        return own
    s = hw["energy"]["sram"]
    bank_bytes = buf["size_kib"] * 1024 / buf["banks"]
    e = s["read_pj_64b_8kib"] * (bank_bytes / 8192) ** s["size_exponent"] \
        * buf["bank_width_bits"] / 64
    return e if access == "read" else e * s["write_over_read"]


def expected(hw: dict, layer: Layer, rec) -> dict[str, float]:
    """The breakdown of one layer by the closed form; rec is the Result's record of the layer
    (for its SRAM accesses, DRAM bytes and cycles only)."""
    e = hw["energy"]
    node = (e["technology_node_nm"] / e["tables_node_nm"]) ** e["node_scaling_exponent"]
    acc = hw["pe_array"]["accumulator_bits"]
    if layer.mode == "binary":
        per_mac = e["mac"]["xnor_popcount_pj"]
    elif layer.macs:
        per_mac = e["mac"]["multiplier_pj"][layer.mode] + e["mac"]["adder_pj_per_bit"] * acc
    else:
        per_mac = 0.0
    out = {
        "mac": layer.macs * per_mac * node,
        "register_file": layer.macs * (layer.x_bits + layer.w_bits + 2 * acc)
        * e["register_file_pj_per_bit"] * node,
    }
    seconds = rec.cycles / (hw["clock_mhz"] * 1e6)
    leakage = 0.0
    for name, buf in hw["buffers"].items():
        v = voltage(buf, layer) / buf["nominal_voltage_v"]
        dynamic = rec.sram_reads.get(name, 0) * sram_access_pj(hw, buf, "read") \
            + rec.sram_writes.get(name, 0) * sram_access_pj(hw, buf, "write")
        out[f"sram.{name}"] = dynamic * v**2 * node
        uw = buf.get("leakage_uw")
        if uw is None:
            uw = e["sram"]["leakage_uw_per_kib"] * buf["size_kib"]
        leakage += uw * 1e-6 * v ** e["sram"]["leakage_voltage_exponent"] * seconds * 1e12 * node
    out["sram_leakage"] = leakage
    bits = 8 * (rec.dram_read_bytes + rec.dram_write_bytes)
    out["dram"] = bits * hw["dram"]["energy_pj_per_bit"]
    link = hw["interconnect"]
    out["interconnect"] = bits * link["hops"] * link["energy_pj_per_bit_per_hop"] * node
    vo = e["vector_op"]
    out["vector"] = node * sum(
        ops * (a * vo["add_pj"] + c * vo["compare_pj"] + m * vo["multiply_pj"])
        for (a, c, m), ops in layer.vector.items()
    )
    return out


def check(hw: dict, layers: list[Layer], result) -> None:
    """Every component of every layer as the closed form says, and the sums consistent."""
    assert [r.name for r in result.layers] == [la.name for la in layers]
    for layer, rec in zip(layers, result.layers, strict=True):
        want = expected(hw, layer, rec)
        assert set(rec.energy_breakdown_pj) == set(want)
        for k, v in want.items():
            assert rec.energy_breakdown_pj[k] == pytest.approx(v, rel=1e-12, abs=1e-9), \
                (layer.name, k)
    check_sums(result)


def check_sums(result) -> None:
    """Breakdowns sum to totals per layer and overall; per inference and power follow."""
    t = result.totals
    for rec in result.layers:
        assert sum(rec.energy_breakdown_pj.values()) == pytest.approx(rec.energy_pj, rel=1e-12)
        assert all(v >= 0 for v in rec.energy_breakdown_pj.values())
    assert sum(r.energy_pj for r in result.layers) == pytest.approx(t.energy_pj, rel=1e-12)
    assert sum(t.energy_breakdown_pj.values()) == pytest.approx(t.energy_pj, rel=1e-12)
    for k, v in t.energy_breakdown_pj.items():
        assert sum(r.energy_breakdown_pj.get(k, 0.0) for r in result.layers) == \
            pytest.approx(v, rel=1e-12, abs=1e-12), k
    if t.cycles:
        # pJ over the run's time at the clock, in mW: 1 pJ / 1 us = 1 uW.
        assert t.average_power_mw == pytest.approx(
            t.energy_pj * 1e-12 / (t.cycles / (result.hardware["clock_mhz"] * 1e6)) * 1e3,
            rel=1e-12)


# --- workloads written here ---------------------------------------------------------------

def conv_rows_csv(path: Path, rows: list[tuple]) -> Path:
    gemm = len(rows[0]) == 4
    text = (GEMM_HEADER if gemm else CONV_HEADER) + "".join(
        ", ".join(map(str, r)) + ",\n" for r in rows)
    path.write_text(text)
    return path


def topology_layers(rows: list[tuple]) -> list[Layer]:
    """SCALE-Sim rows as the closed form sees them: int8 operands, MACs from the shape."""
    layers = []
    for i, row in enumerate(rows):
        if len(row) == 4:
            name, m, n, k = row
            macs = m * n * k
        else:
            name, h, w, fh, fw, c, nf, s = row
            oh, ow = math.ceil((h - fh + s) / s), math.ceil((w - fw + s) / s)
            macs = oh * ow * nf * fh * fw * c
        layers.append(Layer(name, i, macs, 8, 8, "int8"))
    return layers


def run_topology(tmp_path: Path, hw: dict, rows: list[tuple], name="topo.csv"):
    graph = load_workload(conv_rows_csv(tmp_path / name, rows))
    return simulate(load_hardware(hw), graph)


def conv_graph(x_type, w_type, *, c=3, h=6, w=6, nf=5, k=3, stride=1, batch=1, pool=False,
               seed=0) -> Graph:
    """One Conv (with a Requantize and a Relu on its output path, or a Sign when binary) and
    optionally a 2x2 MaxPool layer: an IR graph built by hand, weights seeded."""
    rng = np.random.default_rng(seed)
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    binary = x_type.kind == "bipolar"
    wdata = (rng.choice([-1, 1], size=(nf, c, k, k)) if w_type.kind == "bipolar"
             else rng.integers(w_type.min, w_type.max + 1, size=(nf, c, k, k)))
    tensors = {
        "x": Tensor("x", (batch, c, h, w), x_type),
        "w": Tensor("w", (nf, c, k, k), w_type, data=wdata.astype(w_type.storage)),
        "acc": Tensor("acc", (batch, nf, oh, ow), INT32),
    }
    conv = Node("conv", "Conv", ["x", "w"], ["acc"],
                dict(strides=(stride, stride), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
                     x_zero_point=0, w_zero_point=np.zeros(nf, np.int64), layer="conv"))
    nodes = [conv]
    if binary:
        tensors["y"] = Tensor("y", (batch, nf, oh, ow), BIPOLAR)
        nodes.append(Node("sign", "Sign", ["acc"], ["y"], dict(threshold=0, layer="conv")))
    else:
        out_t = int_type(8, True)
        tensors["q"] = Tensor("q", (batch, nf, oh, ow), out_t)
        tensors["y"] = Tensor("y", (batch, nf, oh, ow), out_t)
        nodes.append(Node("requant", "Requantize", ["acc"], ["q"],
                          dict(multiplier=np.float32([0.01]), axis=1, zero_point=0,
                               layer="conv")))
        nodes.append(Node("relu", "Relu", ["q"], ["y"], dict(lo=0, hi=127, layer="conv")))
    outputs = ["y"]
    if pool:
        tensors["p"] = Tensor("p", (batch, nf, oh // 2, ow // 2), tensors["y"].type)
        nodes.append(Node("pool", "MaxPool", ["y"], ["p"],
                          dict(kernel_shape=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                               dilations=(1, 1), ceil_mode=False)))
        outputs = ["p"]
    return Graph("conv_graph", tensors, nodes, ["x"], outputs)


def conv_graph_layers(x_bits, w_bits, mode, *, c=3, h=6, w=6, nf=5, k=3, stride=1, batch=1,
                      pool=False) -> list[Layer]:
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = batch * nf * oh * ow
    post = {(0, 1, 0): out} if mode == "binary" else {(1, 2, 1): out, (0, 1, 0): out}
    layers = [Layer("conv", 0, out * c * k * k, x_bits, w_bits, mode, post)]
    if pool:
        layers.append(Layer("pool", 1, vector={(0, 1, 0): batch * nf * (oh // 2) * (ow // 2) * 4}))
    return layers


# --- closed form --------------------------------------------------------------------------

def test_one_gemm_by_hand(tmp_path):
    """A 4x4x4 GEMM on the 4x4 array, its compute terms written out as numbers."""
    result = run_topology(tmp_path, HW, [("g", 4, 4, 4)])
    b = result.layers[0].energy_breakdown_pj
    assert set(b) == COMPONENTS
    # 64 MACs x (0.21 pJ int8 multiplier + 24 bits x 0.004 pJ adder) = 64 x 0.306
    assert b["mac"] == pytest.approx(19.584, rel=1e-12)
    # 64 MACs x (8 + 8 + 2 x 24) bits x 0.05 pJ/bit = 64 x 3.2
    assert b["register_file"] == pytest.approx(204.8, rel=1e-12)
    rec = result.layers[0]
    # Per weights access: 9 pJ x (8 KiB / 8 KiB)^0.5 x 128/64 = 18 pJ; x 1.25 for a write;
    # at 0.85 V of 0.95 V nominal.
    w = (18.0 * rec.sram_reads["weights"] + 22.5 * rec.sram_writes["weights"]) * (0.85 / 0.95)**2
    assert b["sram.weights"] == pytest.approx(w, rel=1e-12)
    # ifmap banks are 8 KiB and 64 bits wide: 9 pJ a read, 11.25 a write, at nominal voltage.
    assert b["sram.ifmap"] == pytest.approx(
        9.0 * rec.sram_reads["ifmap"] + 11.25 * rec.sram_writes["ifmap"], rel=1e-12)
    assert b["sram.ofmap"] == pytest.approx(
        13.0 * rec.sram_reads["ofmap"] + 15.5 * rec.sram_writes["ofmap"], rel=1e-12)
    nbytes = rec.dram_read_bytes + rec.dram_write_bytes
    # int8 a (16 B) and b (16 B) in, int32 c (64 B) out.
    assert (rec.dram_read_bytes, rec.dram_write_bytes) == (32, 64)
    assert b["dram"] == pytest.approx(nbytes * 8 * 17.5, rel=1e-12)
    assert b["interconnect"] == pytest.approx(nbytes * 8 * 3 * 0.07, rel=1e-12)
    # 3 uW/KiB x 16 KiB (ifmap) + 3 x 32 (weights) x (0.85/0.95)^2 + 5 uW (ofmap's own), over
    # the layer's cycles at 400 MHz (1 uW for 1 us is 1 pJ).
    leak_uw = 48 + 96 * (0.85 / 0.95) ** 2 + 5
    assert b["sram_leakage"] == pytest.approx(leak_uw * rec.cycles / 400, rel=1e-12)
    assert b["vector"] == 0


conv_rows = st.builds(
    lambda name, h, w, fh, fw, c, nf, s: (name, max(h, fh), max(w, fw), fh, fw, c, nf, s),
    st.just("c"), st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4),
    st.integers(1, 6), st.integers(1, 9), st.integers(1, 3))
gemm_rows = st.tuples(st.just("g"), st.integers(1, 40), st.integers(1, 20), st.integers(1, 40))


@FAST
@given(rows=st.one_of(st.lists(conv_rows, min_size=1, max_size=3),
                      st.lists(gemm_rows, min_size=1, max_size=3)),
       dataflow=st.sampled_from(["os", "ws", "is"]), rows_cols=st.sampled_from([(4, 4), (3, 5)]),
       unlimited=st.booleans())
def test_closed_form_on_topologies(tmp_path, rows, dataflow, rows_cols, unlimited):
    rows = [(f"{r[0]}{i}", *r[1:]) for i, r in enumerate(rows)]
    hw = with_(HW, pe_array__dataflow=dataflow, pe_array__rows=rows_cols[0],
               pe_array__cols=rows_cols[1])
    if unlimited:
        hw = with_(hw, dram__bandwidth_bytes_per_cycle=None)
    result = run_topology(tmp_path, hw, rows)
    check(hw, topology_layers(rows), result)


@pytest.mark.parametrize("path", sorted(HWCONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_closed_form_on_bundled_hardware(tmp_path, path):
    """The bundled tables (read from the YAML text, with the code's defaults for what a file
    leaves out) give the closed form too, node scaling included (Eyeriss 65 nm, TPU 28 nm)."""
    raw = yaml.safe_load(path.read_text())
    for buf in raw["buffers"].values():
        buf.setdefault("layer_voltage_v", {})
    raw["energy"]["sram"].setdefault("leakage_voltage_exponent", 1.0)
    raw["pe_array"]["dataflow"] = "os"  # a 256x256 ws fold would not fit a tiny layer's slot
    rows = [("c0", 10, 10, 3, 3, 4, 8, 1), ("c1", 8, 8, 1, 1, 8, 16, 1)]
    result = run_topology(tmp_path, raw, rows)
    check(raw, topology_layers(rows), result)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("x_type, w_type, mode", [
    (int_type(8, True), int_type(8, True), "int8"),
    (int_type(8, False), int_type(4, True), "int8"),
    (int_type(4, True), int_type(4, True), "int4"),
    (int_type(3, True), int_type(2, True), "int4"),   # no int3 mode: the next wider one
    (int_type(2, True), int_type(2, True), "int2"),
    (int_type(16, True), int_type(8, True), "int16"),
    (BIPOLAR, BIPOLAR, "binary"),
])
def test_closed_form_with_output_path_and_vector_layer(x_type, w_type, mode, dataflow):
    """An IR graph: Conv + Requantize + Relu (or + Sign) on the array's output path, then a
    MaxPool layer on the vector unit; MACs and vector work from the shapes, at each precision."""
    hw = with_(HW, pe_array__dataflow=dataflow)
    graph = conv_graph(x_type, w_type, c=3, h=7, w=7, nf=6, k=2, pool=True)
    layers = conv_graph_layers(x_type.bits, w_type.bits, mode, c=3, h=7, w=7, nf=6, k=2,
                               pool=True)
    check(hw, layers, simulate(load_hardware(hw), graph))


def test_closed_form_on_the_digits_cnn():
    """The bundled int8 digits CNN on the edge array: per layer, with its vector layers."""
    hw = yaml.safe_load((HWCONFIGS / "edge_int8_16x16.yaml").read_text())
    for buf in hw["buffers"].values():
        buf.setdefault("layer_voltage_v", {})
    hw["energy"]["sram"].setdefault("leakage_voltage_exponent", 1.0)
    result = simulate(load_hardware(hw), load_workload(ROOT / "workloads/digits_cnn_int8_qdq.onnx"))
    requant, quant, maxpool, dequant = (1, 2, 1), (1, 2, 1), (0, 1, 0), (1, 0, 1)
    # Shapes of `accelsim info workloads/digits_cnn_int8_qdq.onnx`.
    layers = [
        Layer("input_QuantizeLinear", 0, vector={quant: 64}),
        Layer("conv1", 1, 8 * 8 * 8 * 9, vector={requant: 512}),
        Layer("pool1", 2, vector={maxpool: 128 * 4}),
        Layer("conv2", 3, 16 * 4 * 4 * 72, vector={requant: 256}),
        Layer("pool2", 4, vector={maxpool: 64 * 4}),
        Layer("fc", 5, 10 * 64, vector={requant: 10}),
        Layer("logits_dq", 6, vector={dequant: 10}),
    ]
    check(hw, layers, result)


def test_batch_divides_energy_per_inference(tmp_path):
    hw = load_hardware(HW)
    one = simulate(hw, conv_graph(int_type(8, True), int_type(8, True), batch=1))
    three = simulate(hw, conv_graph(int_type(8, True), int_type(8, True), batch=3))
    check(HW, conv_graph_layers(8, 8, "int8", batch=3), three)
    assert one.totals.energy_per_inference_pj == one.totals.energy_pj
    assert three.totals.energy_per_inference_pj == pytest.approx(three.totals.energy_pj / 3,
                                                                 rel=1e-15)
    assert three.totals.energy_breakdown_pj["mac"] == pytest.approx(
        3 * one.totals.energy_breakdown_pj["mac"], rel=1e-12)



def test_leakage_runs_for_the_whole_simulated_time(tmp_path):
    """At one voltage per buffer, leakage over all layers is the buffers' leakage power times
    the run's cycles at the clock: no cycle of the run goes unpowered or counts twice."""
    result = run_topology(tmp_path, HW, TWO_LAYERS + [("third", 5, 5, 3, 3, 2, 7, 2)])
    leak_uw = 3 * 16 + 3 * 32 * (0.85 / 0.95) ** 2 + 5
    assert result.totals.energy_breakdown_pj["sram_leakage"] == pytest.approx(
        leak_uw * result.totals.cycles / 400, rel=1e-12)
    assert result.totals.average_power_mw * 1e3 > leak_uw  # uW: dynamic energy on top

# --- voltage --------------------------------------------------------------------------------

@FAST
@given(buffer=st.sampled_from(["ifmap", "weights", "ofmap"]),
       v=st.floats(0.4, 1.3, allow_nan=False), exponent=st.floats(0.0, 4.0, allow_nan=False))
def test_sram_dynamic_energy_scales_with_v_squared_only(tmp_path, buffer, v, exponent):
    """Only one buffer's voltage changes: its SRAM dynamic energy scales by exactly
    (V/V0)^2 in every layer; leakage by its exponent; no other figure moves."""
    base_hw = with_(HW, energy__sram__leakage_voltage_exponent=exponent)
    low_hw = with_(base_hw, **{f"buffers__{buffer}__voltage_v": v})
    base = run_topology(tmp_path, base_hw, TWO_LAYERS)
    low = run_topology(tmp_path, low_hw, TWO_LAYERS)
    buf = base_hw["buffers"][buffer]
    ratio = (v / buf["voltage_v"]) ** 2
    for b, lo in zip(base.layers, low.layers, strict=True):
        assert (lo.cycles, lo.sram_reads, lo.sram_writes, lo.dram_read_bytes) == \
            (b.cycles, b.sram_reads, b.sram_writes, b.dram_read_bytes)
        for k, e in b.energy_breakdown_pj.items():
            if k == f"sram.{buffer}":
                assert lo.energy_breakdown_pj[k] == pytest.approx(e * ratio, rel=1e-12)
            elif k != "sram_leakage":
                assert lo.energy_breakdown_pj[k] == e, k
        # Leakage: this buffer's share moves with (V/Vnom)^exponent, the others' stay.
        uw = buf.get("leakage_uw") or HW["energy"]["sram"]["leakage_uw_per_kib"] * buf["size_kib"]
        vn = buf["nominal_voltage_v"]
        share = uw * ((v / vn) ** exponent - (buf["voltage_v"] / vn) ** exponent) * b.cycles / 400
        assert lo.energy_breakdown_pj["sram_leakage"] == pytest.approx(
            b.energy_breakdown_pj["sram_leakage"] + share, rel=1e-9, abs=1e-9)
    check(low_hw, topology_layers(TWO_LAYERS), low)


@pytest.mark.parametrize("key", ["second", 1])
def test_per_layer_voltage_applies_to_that_layer_only(tmp_path, key):
    base = run_topology(tmp_path, HW, TWO_LAYERS)
    hw = with_(HW, buffers__weights__layer_voltage_v={key: 0.6})
    low = run_topology(tmp_path, hw, TWO_LAYERS)
    check(hw, topology_layers(TWO_LAYERS), low)
    assert low.layers[0].energy_breakdown_pj == base.layers[0].energy_breakdown_pj
    b, lo = base.layers[1].energy_breakdown_pj, low.layers[1].energy_breakdown_pj
    assert lo["sram.weights"] == pytest.approx(b["sram.weights"] * (0.6 / 0.85) ** 2, rel=1e-12)
    assert lo["sram_leakage"] < b["sram_leakage"]
    assert {k: v for k, v in lo.items() if k not in ("sram.weights", "sram_leakage")} == \
        {k: v for k, v in b.items() if k not in ("sram.weights", "sram_leakage")}


def test_per_layer_voltage_by_name_wins_over_index(tmp_path):
    hw = with_(HW, buffers__ifmap__layer_voltage_v={"second": 0.7, 1: 0.5, 0: 0.8})
    result = run_topology(tmp_path, hw, TWO_LAYERS)
    check(hw, topology_layers(TWO_LAYERS), result)
    base = run_topology(tmp_path, HW, TWO_LAYERS)
    for i, v in enumerate([0.8, 0.7]):
        assert result.layers[i].energy_breakdown_pj["sram.ifmap"] == pytest.approx(
            base.layers[i].energy_breakdown_pj["sram.ifmap"] * (v / 0.9) ** 2, rel=1e-12)


def test_bundled_binary_lowvolt_first_layer_at_its_own_voltage(tmp_path):
    """binary_lowvolt.yaml: weights at 0.7 V except layer 0 at 0.8 V, nominal 0.9 V."""
    path = HWCONFIGS / "binary_lowvolt.yaml"
    rows = [("l0", 8, 8, 3, 3, 4, 8, 1), ("l1", 8, 8, 3, 3, 4, 8, 1)]
    graph = load_workload(conv_rows_csv(tmp_path / "t.csv", rows))
    low = simulate(load_hardware(path), graph)
    nominal = simulate(load_hardware(path, {"buffers.weights.voltage_v": 0.9,
                                            "buffers.weights.layer_voltage_v": {}}), graph)
    for i, v in enumerate([0.8, 0.7]):
        assert low.layers[i].energy_breakdown_pj["sram.weights"] == pytest.approx(
            nominal.layers[i].energy_breakdown_pj["sram.weights"] * (v / 0.9) ** 2, rel=1e-12)


# --- precision ------------------------------------------------------------------------------

def test_halving_operand_bits_lowers_mac_energy_as_the_qkeras_fit_says():
    """int8 -> int4 -> int2 on one array with the default (fitted) multiplier table: the MAC
    energy of the same conv drops by exactly MACs x (mult(b) - mult(b/2)); the adder (by the
    accumulator's width) stays."""
    hw = load_hardware({"pe_array": {"precisions": ["int2", "int4", "int8"],
                                     "accumulator_bits": 32}})
    macs = 4 * 4 * 5 * 3 * 9
    mac = {}
    for b in (8, 4, 2):
        t = int_type(b, True)
        result = simulate(hw, conv_graph(t, t))
        mac[b] = result.layers[0].energy_breakdown_pj["mac"]
        assert mac[b] == pytest.approx(macs * (qkeras_mult(b) + 0.003125 * 32), rel=1e-12)
    assert mac[8] - mac[4] == pytest.approx(macs * (qkeras_mult(8) - qkeras_mult(4)), rel=1e-9)
    assert mac[4] - mac[2] == pytest.approx(macs * (qkeras_mult(4) - qkeras_mult(2)), rel=1e-9)
    # The multiplier alone goes ~quadratically: mult(8)/mult(4) = 3.84, mult(4)/mult(2) = 3.70.
    adder = macs * 0.003125 * 32
    assert (mac[8] - adder) / (mac[4] - adder) == pytest.approx(3.84, abs=0.005)
    assert (mac[4] - adder) / (mac[2] - adder) == pytest.approx(3.70, abs=0.005)


def test_narrow_operands_on_a_wide_only_array_pay_the_wide_multiplier():
    hw = load_hardware({"pe_array": {"precisions": ["int8"]}})
    t = int_type(2, True)
    result = simulate(hw, conv_graph(t, t))
    macs = 4 * 4 * 5 * 3 * 9
    assert result.layers[0].energy_breakdown_pj["mac"] == pytest.approx(
        macs * (qkeras_mult(8) + 0.003125 * 32), rel=1e-12)


# --- technology node ------------------------------------------------------------------------

@FAST
@given(node=st.floats(3.0, 130.0, allow_nan=False),
       exponent=st.floats(0.0, 2.5, allow_nan=False))
def test_technology_node_scales_all_but_dram(tmp_path, node, exponent):
    """Every component but DRAM (an interface energy) scales by (node / 45 nm)^exponent; the
    conv graph brings output-path and vector-unit work."""
    hw = with_(HW, energy__technology_node_nm=node, energy__node_scaling_exponent=exponent)
    graph = conv_graph(int_type(8, True), int_type(4, True), h=7, w=7, k=2, pool=True)
    base = [run_topology(tmp_path, HW, TWO_LAYERS), simulate(load_hardware(HW), graph)]
    scaled = [run_topology(tmp_path, hw, TWO_LAYERS), simulate(load_hardware(hw), graph)]
    factor = (node / 45) ** exponent
    for b_run, s_run in zip(base, scaled, strict=True):
        for b, s in zip(b_run.layers, s_run.layers, strict=True):
            assert s.cycles == b.cycles
            for k, e in b.energy_breakdown_pj.items():
                want = e if k == "dram" else e * factor
                assert s.energy_breakdown_pj[k] == pytest.approx(want, rel=1e-12, abs=1e-12), k
    assert base[1].totals.energy_breakdown_pj["vector"] > 0
    check(hw, topology_layers(TWO_LAYERS), scaled[0])
    check(hw, conv_graph_layers(8, 4, "int8", h=7, w=7, k=2, pool=True), scaled[1])


# --- bad tables -----------------------------------------------------------------------------

@pytest.mark.parametrize("path, value, field", [
    ("energy.mac.multiplier_pj.int8", -0.2, "energy.mac.multiplier_pj.int8"),
    ("energy.mac.adder_pj_per_bit", -0.003, "energy.mac.adder_pj_per_bit"),
    ("energy.mac.xnor_popcount_pj", -1, "energy.mac.xnor_popcount_pj"),
    ("energy.register_file_pj_per_bit", -0.05, "energy.register_file_pj_per_bit"),
    ("energy.sram.read_pj_64b_8kib", -10.2, "energy.sram.read_pj_64b_8kib"),
    ("energy.sram.write_over_read", -1, "energy.sram.write_over_read"),
    ("energy.sram.leakage_uw_per_kib", -1, "energy.sram.leakage_uw_per_kib"),
    ("energy.vector_op.multiply_pj", -3.1, "energy.vector_op.multiply_pj"),
    ("energy.technology_node_nm", 0, "energy.technology_node_nm"),
    ("buffers.weights.read_energy_pj", -5, "buffers.weights.read_energy_pj"),
    ("buffers.ofmap.leakage_uw", -5, "buffers.ofmap.leakage_uw"),
    ("dram.energy_pj_per_bit", -20.3, "dram.energy_pj_per_bit"),
    ("interconnect.energy_pj_per_bit_per_hop", -0.1, "interconnect.energy_pj_per_bit_per_hop"),
    ("energy.mac.multiplier_pj.int8", ".nan", "energy.mac.multiplier_pj.int8"),
])
def test_validate_rejects_a_bad_energy_table(tmp_path, capsys, path, value, field):
    """Written into the file (not a --set), so the YAML loader's path is the one tested."""
    raw = copy.deepcopy(HW)
    node = raw
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = float("nan") if value == ".nan" else value
    hw_path = tmp_path / "hw.yaml"
    hw_path.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["validate", str(hw_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert f"{hw_path}: {field}: " in err, err


@pytest.mark.parametrize("claimed, table, missing", [
    (["int8", "int4"], {"int8": 0.2}, "int4"),
    (["binary", "int2", "int16"], {"int2": 0.014, "int8": 0.2}, "int16"),
    (["int2", "int4", "int8", "int16"], {"int8": 0.2}, "int2, int4, int16"),
])
def test_validate_rejects_a_precision_the_table_lacks(tmp_path, capsys, claimed, table, missing):
    raw = with_(HW, pe_array__precisions=claimed, energy__mac__multiplier_pj=table)
    hw_path = tmp_path / "hw.yaml"
    hw_path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(hw_path)]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1, err
    assert f"{hw_path}: energy.mac.multiplier_pj: no entry for {missing}, " in err, err
    # The same table passes once the array stops claiming what it lacks.
    keep = [p for p in claimed if p == "binary" or p in table]
    raw["pe_array"]["precisions"] = keep
    hw_path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(hw_path)]) == 0


def test_validate_names_a_bad_energy_override(capsys):
    path = HWCONFIGS / "edge_int8_16x16.yaml"
    assert main(["validate", str(path), "--set", "energy.sram.size_exponent=-0.47"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "energy.sram.size_exponent: " in err, err
    assert main(["validate", str(path), "--set", "energy.mac.multiplier_pj.int3=0.1"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "energy.mac.multiplier_pj.int3" in err, err
# --- the sources in the hardware files ------------------------------------------------------

# The papers the tables come from, the papers of the chips the files describe, or reasoning.
SOURCES = ("Horowitz", "qkeras", "Eyeriss", "Jouppi", "assumption:")


def energy_lines(path: Path) -> list[str]:
    """Lines of a YAML file that set an energy number: the energy section's numbers and any
    *_pj*, *_uw*, *energy* or nominal_voltage_v key elsewhere."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.startswith("energy:")
        key, sep, rest = line.partition(":")
        value = rest.split("#")[0].strip()
        if not sep or not value:
            continue
        energyish = inside or any(s in key for s in ("_pj", "_uw", "energy", "nominal_volt"))
        try:
            float(value)
        except ValueError:
            continue
        if energyish:
            lines.append(line)
    return lines


@pytest.mark.parametrize("path", sorted(HWCONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_energy_number_has_its_source_beside_it(path):
    lines = energy_lines(path)
    assert len(lines) >= 20 + 3  # the energy section, DRAM, interconnect, three buffers
    for line in lines:
        comment = line.partition("#")[2]
        assert any(s in comment for s in SOURCES), f"{path.name}: no source: {line.strip()}"


def test_layer_index_counts_compute_layers_only():
    """layer_voltage_v's integer keys count Conv/MatMul layers: on the binary digits network,
    whose first layer is an input quantizer on the vector unit, key 0 is conv1."""
    graph = load_workload(ROOT / "workloads" / "digits_binary_qonnx.onnx")
    base = simulate(load_hardware(HWCONFIGS / "binary_lowvolt.yaml",
                                  {"buffers.weights.layer_voltage_v": {}}), graph)
    keyed = simulate(load_hardware(HWCONFIGS / "binary_lowvolt.yaml",
                                   {"buffers.weights.layer_voltage_v": {0: 0.8}}), graph)
    names = [r.name for r in base.layers]
    assert names[0] == "quant_x" and names[1] == "conv1"
    changed = [r.name for r, s in zip(base.layers, keyed.layers, strict=True)
               if r.energy_breakdown_pj["sram.weights"] != s.energy_breakdown_pj["sram.weights"]]
    assert changed == ["conv1"]
    b, k = (x.layers[1].energy_breakdown_pj["sram.weights"] for x in (base, keyed))
    assert k == pytest.approx(b * (0.8 / 0.7) ** 2, rel=1e-12)


def test_gemm_topology_is_one_inference(tmp_path):
    """A SCALE-Sim GEMM row's M is rows of the product, not a batch."""
    path = tmp_path / "g.csv"
    path.write_text("Layer, M, N, K,\ng, 12, 8, 16,\n")
    result = simulate(load_hardware(HWCONFIGS / "edge_int8_16x16.yaml"), load_workload(path))
    assert result.totals.energy_per_inference_pj == result.totals.energy_pj


def test_secded_charges_its_check_bits(tmp_path):
    """SECDED on a 64-bit-wide buffer stores 8 check bits per word: its SRAM dynamic energy and
    leakage grow by 72/64 exactly, and nothing else changes."""
    path = tmp_path / "t.csv"
    path.write_text("Layer, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                    "Num Filter, Strides,\nl0, 8, 8, 3, 3, 4, 8, 1,\n")
    graph = load_workload(path)
    base = simulate(load_hardware(HWCONFIGS / "edge_int8_16x16.yaml"), graph)
    ecc = simulate(load_hardware(HWCONFIGS / "edge_int8_16x16.yaml",
                                 {"buffers.weights.ecc": "secded"}), graph)
    b, e = base.totals.energy_breakdown_pj, ecc.totals.energy_breakdown_pj
    assert e["sram.weights"] == pytest.approx(b["sram.weights"] * 72 / 64, rel=1e-12)
    hw = load_hardware(HWCONFIGS / "edge_int8_16x16.yaml")
    leak_w = hw.sram_leakage_uw("weights") * base.totals.latency_s * 1e6
    assert e["sram_leakage"] - b["sram_leakage"] == pytest.approx(leak_w * 8 / 64, rel=1e-9)
    assert {k: v for k, v in e.items() if k not in ("sram.weights", "sram_leakage")} == \
        {k: v for k, v in b.items() if k not in ("sram.weights", "sram_leakage")}
