"""Timing model: per-layer cycles against SCALE-Sim's systolic model, the physics of stalls,
bad hardware, the Result and the `run` command.

SCALE-Sim's model is written here from DESIGN.md (section Timing) and SCALE-Sim's topology
rules, independently of accelsim.mapping: with P output pixels, K = filter volume, N filters,

    os: ceil(P/R) * ceil(N/C) folds of R + C + K - 2 cycles
    ws: ceil(K/R) * ceil(N/C) folds of 2R + C + P - 2 cycles
    is: ceil(K/R) * ceil(P/C) folds of 2R + C + N - 2 cycles

and SCALE-Sim reports the 0-based index of the last cycle ("Total Cycles"), one less than the
count. SCALE-Sim derives the output size as ceil((H - F + S) / S) (no padding), runs a layer
whose name contains "DP" as one single-channel layer per channel, and a GEMM row (M, N, K) as
P = M, K = K, N = N.
"""

from __future__ import annotations

import csv
import functools
import gc
import itertools
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ROOT, WORKLOADS, assert_one_line_error
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import accelsim
from accelsim.cli import main
from accelsim.errors import AccelsimError, HardwareError
from accelsim.result import Result
from accelsim.sim import STALL_CAUSES
from accelsim.simulate import simulate  # accelsim.simulate is shadowed: see test_simulate_twice

HWCONFIGS = ROOT / "hwconfigs"
SCALESIM_CFG = HWCONFIGS / "scalesim_default_32x32.cfg"
REFERENCE = ROOT / "tests" / "data" / "scalesim" / "reference_layers.csv"
REFERENCE_RESNET18 = REFERENCE.with_name("resnet18_32x32_ws.csv")
CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, " \
              "Num Filter, Strides,\n"
GEMM_HEADER = "Layer Name, M, N, K,\n"
# ACCELSIM_TIMING_EXAMPLES=2000 for a long search; the default keeps the file to seconds.
EXAMPLES = int(os.environ.get("ACCELSIM_TIMING_EXAMPLES", "40"))
FAST = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# --- SCALE-Sim's model, written from DESIGN.md -------------------------------------------------

def scalesim_layer_count(P: int, K: int, N: int, R: int, C: int, df: str) -> int:
    """Cycles SCALE-Sim's model takes for one (P x K).(K x N) layer (Total Cycles + 1)."""
    if df == "os":
        return cdiv(P, R) * cdiv(N, C) * (R + C + K - 2)
    if df == "ws":
        return cdiv(K, R) * cdiv(N, C) * (2 * R + C + P - 2)
    return cdiv(K, R) * cdiv(P, C) * (2 * R + C + N - 2)


def scalesim_pkn(row: tuple) -> list[tuple[int, int, int]]:
    """The (P, K, N) of each layer SCALE-Sim simulates for one topology row."""
    if len(row) == 4:  # GEMM: name, M, N, K
        _, m, n, k = row
        return [(m, k, n)]
    name, h, w, fh, fw, c, nf, s = row
    oh, ow = math.ceil((h - fh + s) / s), math.ceil((w - fw + s) / s)
    if "DP" in name:
        return [(oh * ow, fh * fw, nf)] * c
    return [(oh * ow, fh * fw * c, nf)]


def scalesim_cfg_text(rows: int, cols: int, dataflow: str) -> str:
    """SCALE-Sim's configs/scale.cfg with the array and dataflow replaced."""
    text = SCALESIM_CFG.read_text()
    text = text.replace("ArrayHeight:    32", f"ArrayHeight:    {rows}")
    text = text.replace("ArrayWidth:     32", f"ArrayWidth:     {cols}")
    return text.replace("Dataflow : os", f"Dataflow : {dataflow}")


class Files:
    """A scratch folder for the CSVs and .cfgs the tests write (hypothesis reuses it)."""

    def __init__(self, root: Path):
        self.root = root
        self.hw_cache: dict = {}

    def topology(self, rows: list[tuple], name: str = "topo.csv") -> Path:
        gemm = len(rows[0]) == 4
        path = self.root / name
        with open(path, "w") as f:
            f.write(GEMM_HEADER if gemm else CONV_HEADER)
            for r in rows:
                f.write(",".join(str(x) for x in r) + ",\n")
        return path

    def graph(self, rows: list[tuple]):
        return accelsim.load_workload(self.topology(rows))

    def scalesim_hw(self, rows: int, cols: int, dataflow: str):
        key = (rows, cols, dataflow)
        if key not in self.hw_cache:
            path = self.root / f"scale_{rows}x{cols}_{dataflow}.cfg"
            path.write_text(scalesim_cfg_text(rows, cols, dataflow))
            self.hw_cache[key] = accelsim.load_hardware(path)
        return self.hw_cache[key]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    return Files(tmp_path_factory.mktemp("timing"))


# --- (a) per-layer cycles = SCALE-Sim's -------------------------------------------------------

DATAFLOWS = st.sampled_from(["os", "ws", "is"])
ARRAY_SIDE = st.integers(1, 40)


@st.composite
def conv_row(draw, name: str):
    """A conv row, strided or not; (H - F) need not be a multiple of S."""
    fh, fw, s = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    h, w = fh + draw(st.integers(0, 16)), fw + draw(st.integers(0, 16))
    depthwise = draw(st.booleans())
    c = draw(st.integers(1, 6 if depthwise else 12))
    nf = draw(st.integers(1, 3 if depthwise else 48))
    return (f"{name}DP" if depthwise else name, h, w, fh, fw, c, nf, s)


@st.composite
def topologies(draw):
    """One to three conv layers (some depthwise) or one to three GEMM layers."""
    n = draw(st.integers(1, 3))
    if draw(st.booleans()):
        return [(f"g{i}", draw(st.integers(1, 90)), draw(st.integers(1, 90)),
                 draw(st.integers(1, 90))) for i in range(n)]
    return [draw(conv_row(f"c{i}")) for i in range(n)]


def check_against_scalesim(files: Files, rows: list[tuple], R: int, C: int, df: str) -> None:
    hw = files.scalesim_hw(R, C, df)
    result = simulate(hw, files.graph(rows))
    assert [r.name for r in result.layers] == [row[0] for row in rows]
    for row, layer in zip(rows, result.layers, strict=True):
        expected = sum(scalesim_layer_count(*pkn, R, C, df) for pkn in scalesim_pkn(row))
        got = (layer.cycles, layer.compute_cycles, layer.stall_cycles)
        assert got == (expected, expected, 0), (row, R, C, df)
    assert result.totals.cycles == sum(r.cycles for r in result.layers)


@FAST
@given(rows=topologies(), R=ARRAY_SIDE, C=ARRAY_SIDE, df=DATAFLOWS)
# layers smaller than the array in every dimension
@example(rows=[("tiny", 3, 3, 2, 2, 2, 3, 1)], R=32, C=32, df="os")
@example(rows=[("tiny", 3, 3, 2, 2, 2, 3, 1)], R=32, C=32, df="ws")
@example(rows=[("tiny", 3, 3, 2, 2, 2, 3, 1)], R=32, C=32, df="is")
# exact multiples, then one more of each (a partial last fold), non-square arrays
@example(rows=[("g", 64, 32, 16)], R=16, C=8, df="os")
@example(rows=[("g", 65, 33, 17)], R=16, C=8, df="ws")
@example(rows=[("g", 65, 33, 17)], R=8, C=16, df="is")
@example(rows=[("c1DP", 9, 9, 3, 3, 4, 2, 2)], R=4, C=12, df="ws")
@example(rows=[("pw", 7, 7, 1, 1, 40, 36, 1), ("full", 4, 4, 4, 4, 3, 10, 1)],
         R=12, C=14, df="os")
def test_cycles_equal_scalesim_model(files, rows, R, C, df):
    """With unlimited bandwidth (SCALE-Sim's CALC), every layer takes SCALE-Sim's cycles."""
    check_against_scalesim(files, rows, R, C, df)


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_strided_output_size_as_scalesim(files, df):
    """SCALE-Sim sizes outputs ceil((H - F + S) / S): 5 x 5 here, not floor((10-3)/2)+1 = 4."""
    check_against_scalesim(files, [("s2", 10, 10, 3, 3, 3, 20, 2), ("s3", 13, 12, 5, 2, 2, 9, 3)],
                           8, 8, df)


def test_resnet18_32x32_ws_total_as_scalesim():
    """SCALE-Sim v3 reports 2,519,815 (sum of Total Cycles) for ResNet-18 on 32x32 ws; that is the
    model above with SCALE-Sim's output sizes, minus one per layer."""
    rows = []
    with open(WORKLOADS / "resnet18.csv") as f:
        next(f)
        for line in f:
            e = [x.strip() for x in line.split(",")]
            rows.append((e[0], *map(int, e[1:8])))
    counts = [scalesim_layer_count(*pkn, 32, 32, "ws") for r in rows for pkn in scalesim_pkn(r)]
    assert sum(counts) - len(counts) == 2_519_815


def test_resnet18_32x32_ws_cycles():
    """The issue's figure: SCALE-Sim v3's 2,519,815, plus one per layer; and, when the real
    SCALE-Sim's per-layer report is there, every layer's Total Cycles + 1."""
    hw = accelsim.load_hardware(SCALESIM_CFG, {"pe_array.dataflow": "ws"})
    result = simulate(hw, WORKLOADS / "resnet18.csv")
    assert result.totals.cycles == 2_519_815 + len(result.layers)
    assert result.totals.stall_cycles == 0
    if REFERENCE_RESNET18.is_file():
        with open(REFERENCE_RESNET18) as f:
            reference = {r["layer"]: int(float(r["total_cycles"])) + 1 for r in csv.DictReader(f)}
        assert {r.name: r.cycles for r in result.layers} == reference


def reference_rows() -> list[dict]:
    if not REFERENCE.is_file():
        return []
    with open(REFERENCE) as f:
        return list(csv.DictReader(f))


def reference_cases() -> list:
    """(topology row, R, C, dataflow, SCALE-Sim's cycles = sum of (Total Cycles + 1)) per layer."""
    groups: dict[tuple, dict] = {}
    for r in reference_rows():
        key = (r["topology_kind"], r["layer"], int(r["array_rows"]), int(r["array_cols"]),
               r["dataflow"])
        g = groups.setdefault(key, {"row": r, "cycles": 0, "subs": 0})
        g["cycles"] += int(float(r["total_cycles"])) + 1
        g["subs"] += 1  # a depthwise row is one SCALE-Sim layer per channel
    cases = []
    for (kind, layer, R, C, df), g in groups.items():
        r = g["row"]
        if kind == "gemm":
            row = (layer, int(r["gemm_m"]), int(r["gemm_n"]), int(r["gemm_k"]))
        else:
            h, w, fh, fw, s = (int(r[k]) for k in ("ifmap_h", "ifmap_w", "filter_h",
                                                    "filter_w", "stride"))
            c = g["subs"] if "DP" in layer else int(r["channels"])
            row = (layer, h, w, fh, fw, c, int(r["num_filters"]), s)
        cases.append(pytest.param(row, R, C, df, g["cycles"], id=f"{layer}-{R}x{C}-{df}"))
    return cases


def test_real_scalesim_follows_the_model_above():
    """The model this file checks accelsim against is SCALE-Sim's: every reference row's Total
    Cycles + 1 is the closed form of the P, K, N SCALE-Sim derived, with no stalls."""
    rows = reference_rows()
    assert rows
    for r in rows:
        P, K, N, R, C = (int(r[k]) for k in ("P", "K", "N", "array_rows", "array_cols"))
        assert int(float(r["total_cycles"])) + 1 == scalesim_layer_count(P, K, N, R, C,
                                                                         r["dataflow"]), r
        assert float(r["stall_cycles"]) == 0
        if r["topology_kind"] == "conv":
            (pkn,) = set(scalesim_pkn((r["layer"], *(int(r[k]) for k in (
                "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filters",
                "stride")))))
            assert pkn == (P, K, N), r


@pytest.mark.parametrize(("row", "R", "C", "df", "cycles"), reference_cases())
def test_real_scalesim_reference(files, row, R, C, df, cycles):
    """Every layer that real SCALE-Sim ran (tests/data/scalesim): accelsim's cycles equal its
    Total Cycles + 1 (summed over the sub-layers of a depthwise row)."""
    result = simulate(files.scalesim_hw(R, C, df), files.graph([row]))
    assert result.layers[0].cycles == cycles
    assert result.layers[0].stall_cycles == 0


# --- (b) physics with finite memory -------------------------------------------------------------

BUFFERS = ("ifmap", "weights", "ofmap")


@st.composite
def small_topologies(draw):
    n = draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) == 0:
        return [(f"g{i}", draw(st.integers(1, 40)), draw(st.integers(1, 40)),
                 draw(st.integers(1, 40))) for i in range(n)]
    rows = []
    for i in range(n):
        fh, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        h = draw(st.integers(fh, 12))
        depthwise = draw(st.integers(0, 4)) == 0
        c = draw(st.integers(1, 4 if depthwise else 16))
        nf = draw(st.integers(1, 2 if depthwise else 32))
        rows.append((f"c{i}DP" if depthwise else f"c{i}", h, h, fh, fh, c, nf, s))
    return rows


@st.composite
def machines(draw) -> dict:
    """Overrides of the default machine: a small array, small buffers, a finite memory path.

    Buffers of at least 0.5 KiB hold one 8x8 fold's 32-bit partial sums in half a buffer, so
    every machine can run every layer."""
    o = {
        "pe_array.rows": draw(st.integers(2, 8)),
        "pe_array.cols": draw(st.integers(2, 8)),
        "pe_array.dataflow": draw(DATAFLOWS),
        "dram.bandwidth_bytes_per_cycle": draw(st.sampled_from([0.5, 1, 2, 3, 4, 6.4, 12.8, 32])),
        "dram.latency_cycles": draw(st.integers(0, 150)),
        "dram.burst_bytes": draw(st.sampled_from([1, 8, 32, 64])),
        "interconnect.width_bits": draw(st.sampled_from([None, 32, 64, 256])),
        "interconnect.latency_cycles": draw(st.integers(0, 4)),
        "interconnect.hops": draw(st.integers(1, 3)),
    }
    for b in ("unified",) if draw(st.integers(0, 4)) == 0 else BUFFERS:
        o[f"buffers.{b}.size_kib"] = draw(st.sampled_from([0.5, 1, 2, 8, 64]))
        o[f"buffers.{b}.banks"] = draw(st.sampled_from([1, 2, 4]))
        o[f"buffers.{b}.bank_width_bits"] = draw(st.sampled_from([32, 64, 128]))
        o[f"buffers.{b}.double_buffered"] = draw(st.booleans())
    if "buffers.unified.size_kib" in o:  # a third of it per role: 0.5 KiB is too small
        o["buffers.unified.size_kib"] = max(2, o["buffers.unified.size_kib"])
    return o


def hardware(overrides: dict):
    """The default machine with `overrides`; keys under buffers.unified replace its three
    buffers by one shared buffer."""
    unified = any(k.startswith("buffers.unified.") for k in overrides)
    return accelsim.load_hardware({"buffers": {"unified": {}}} if unified else {}, overrides)


def run(files: Files, rows, overrides: dict, **more):
    return simulate(hardware({**overrides, **more}), files.graph(rows))


def check_invariants(result, overrides: dict) -> None:
    """What every Result must satisfy, whatever the machine."""
    t = result.totals
    for layer in result.layers:
        assert set(layer.stall_breakdown) == set(STALL_CAUSES)
        assert all(v >= 0 for v in layer.stall_breakdown.values()), layer
        assert layer.stall_cycles == sum(layer.stall_breakdown.values())
        assert layer.cycles == layer.compute_cycles + layer.stall_cycles, layer
        assert layer.cycles >= layer.compute_cycles > 0
    assert t.cycles == sum(r.cycles for r in result.layers)
    assert t.compute_cycles == sum(r.compute_cycles for r in result.layers)
    assert t.stall_cycles == sum(t.stall_breakdown.values())
    assert t.cycles == t.compute_cycles + t.stall_cycles
    assert [r.start_cycle for r in result.layers] == list(
        itertools.accumulate([0] + [r.cycles for r in result.layers[:-1]]))
    moved = t.dram_read_bytes + t.dram_write_bytes
    bw = overrides["dram.bandwidth_bytes_per_cycle"]
    if bw is not None:
        assert t.cycles >= math.ceil(moved / Fraction(str(bw))), (t.cycles, moved, bw)
    width = overrides.get("interconnect.width_bits")
    if width is not None:
        assert t.cycles >= cdiv(moved * 8, width)


@settings(FAST, max_examples=max(1, EXAMPLES * 2 // 3))
@given(rows=small_topologies(), hw=machines())
def test_stalls_obey_physics(files, rows, hw):
    """Cycles >= compute, >= bytes / bandwidth; cycles = compute + stalls per layer; more
    bandwidth, less latency or unlimited memory never cost cycles."""
    base = run(files, rows, hw)
    check_invariants(base, hw)
    bw = hw["dram.bandwidth_bytes_per_cycle"]
    doubled = run(files, rows, hw, **{"dram.bandwidth_bytes_per_cycle": 2 * bw})
    check_invariants(doubled, {**hw, "dram.bandwidth_bytes_per_cycle": 2 * bw})
    assert doubled.totals.cycles <= base.totals.cycles
    slower = run(files, rows, hw, **{"dram.latency_cycles": hw["dram.latency_cycles"] + 40})
    assert slower.totals.cycles >= base.totals.cycles
    ideal = {"dram.bandwidth_bytes_per_cycle": None, "dram.latency_cycles": 0,
             "interconnect.width_bits": None, "interconnect.latency_cycles": 0}
    free = run(files, rows, hw, **ideal)
    check_invariants(free, {**hw, **ideal})
    assert free.totals.cycles <= base.totals.cycles
    # a memory that costs nothing leaves only the array's own cycles
    assert free.totals.cycles == free.totals.compute_cycles + \
        free.totals.stall_breakdown["bank_conflict"]
    # the same mapping moves the same bytes whatever the memory's speed
    for other in (doubled, slower, free):
        assert other.totals.dram_read_bytes == base.totals.dram_read_bytes
        assert other.totals.dram_write_bytes == base.totals.dram_write_bytes
        assert other.totals.compute_cycles == base.totals.compute_cycles


NETWORKS = {  # chained layers (each reads the one before), with vector-unit layers between
    "digits_cnn_int8_qop.onnx": ["int8"],
    "digits_cnn_int8_qdq.onnx": ["int8"],
    "digits_binary_qonnx.onnx": ["binary", "int8"],
}


@functools.cache
def network(name: str):
    return accelsim.load_workload(WORKLOADS / name)


def check_causes(result, hw: dict) -> None:
    """A stall is charged to a cause only if the machine has that limit."""
    s = result.totals.stall_breakdown
    if hw["dram.bandwidth_bytes_per_cycle"] is None:
        assert s["dram_bandwidth"] == 0, s
    if hw["dram.latency_cycles"] == 0:
        assert s["dram_latency"] == 0, s
    if hw["interconnect.width_bits"] is None and hw["interconnect.latency_cycles"] == 0:
        assert s["interconnect"] == 0, s


@FAST
@given(name=st.sampled_from(sorted(NETWORKS)), hw=machines(),
       unlimited=st.sampled_from([(), ("dram.bandwidth_bytes_per_cycle",),
                                  ("dram.latency_cycles",), ("interconnect.width_bits",
                                                             "interconnect.latency_cycles")]))
def test_stalls_obey_physics_on_networks(name, hw, unlimited):
    """The same physics on whole networks, where a layer waits for the one before to be written
    back, and stalls go to the causes the machine has."""
    hw = {**hw, "pe_array.precisions": NETWORKS[name]}
    for field in unlimited:
        hw[field] = 0 if field.endswith("latency_cycles") else None
    graph = network(name)
    base = simulate(hardware(hw), graph)
    check_invariants(base, hw)
    check_causes(base, hw)
    if hw["dram.bandwidth_bytes_per_cycle"] is not None:
        more = {**hw, "dram.bandwidth_bytes_per_cycle": 2 * hw["dram.bandwidth_bytes_per_cycle"]}
        doubled = simulate(hardware(more), graph)
        check_invariants(doubled, more)
        assert doubled.totals.cycles <= base.totals.cycles
    double = simulate(hardware(all_double_buffered(hw)), graph)
    single = simulate(hardware(single_buffered(hw)), graph)
    check_invariants(single, hw)
    check_causes(single, hw)
    check_single_buffering_costs(double, single)
    check_single_buffering_costs(double, base)  # base: some buffers single, some double


def buffer_names(hw: dict) -> tuple[str, ...]:
    return ("unified",) if any(k.startswith("buffers.unified.") for k in hw) else BUFFERS


def single_buffered(hw: dict) -> dict:
    return {**hw, **{f"buffers.{b}.double_buffered": False for b in buffer_names(hw)}}


def all_double_buffered(hw: dict) -> dict:
    return {**hw, **{f"buffers.{b}.double_buffered": True for b in buffer_names(hw)}}


def check_single_buffering_costs(double, single) -> None:
    """Double buffering changes only whether loads and stores overlap compute: the same folds,
    the same DRAM traffic, and never more cycles than without it."""
    for field in ("compute_cycles", "dram_read_bytes", "dram_write_bytes"):
        assert getattr(single.totals, field) == getattr(double.totals, field), field
    assert single.totals.cycles >= double.totals.cycles


# Regressions. SINGLE_BUFFER_WINS: the mapping used to tile by the double-buffer slot, so single
# buffering meant bigger stream tiles (29,583 cycles single vs 29,669 double). SLOT_REUSE: a
# single-buffered ofmap let a step write its outputs into the slot whose earlier outputs were
# still being written back, because the array waited for the store of step s - 1 even when step
# s - 1 stored nothing (650 single vs 651 double).
SINGLE_BUFFER_WINS = dict(
    rows=[("L0", 13, 13, 1, 1, 12, 31, 1)],
    hw={"pe_array.rows": 8, "pe_array.cols": 8, "pe_array.dataflow": "ws",
        "dram.bandwidth_bytes_per_cycle": 1, "dram.latency_cycles": 100,
        "dram.burst_bytes": 64, "interconnect.width_bits": 256,
        "interconnect.latency_cycles": 1, "interconnect.hops": 1,
        **{f"buffers.{b}.size_kib": 4 for b in BUFFERS}},
)
SLOT_REUSE = dict(
    rows=[("c0", 6, 6, 1, 1, 3, 4, 1)],
    hw={"pe_array.rows": 2, "pe_array.cols": 2, "pe_array.dataflow": "ws",
        "dram.bandwidth_bytes_per_cycle": 3, "dram.latency_cycles": 0, "dram.burst_bytes": 1,
        "interconnect.width_bits": None, "interconnect.latency_cycles": 0,
        "interconnect.hops": 1,
        **{f"buffers.{b}.{k}": v for b in BUFFERS
           for k, v in (("size_kib", 0.5), ("banks", 1), ("bank_width_bits", 32))}},
)


@FAST
@given(rows=small_topologies(), hw=machines())
@example(**SINGLE_BUFFER_WINS)
@example(**SLOT_REUSE)
def test_single_buffering_never_helps(files, rows, hw):
    """Without double buffering a load cannot overlap the compute before it, nor a store the
    compute after it: cycles never decrease."""
    double = run(files, rows, all_double_buffered(hw))
    single = run(files, rows, single_buffered(hw))
    check_invariants(single, hw)
    check_single_buffering_costs(double, single)


@st.composite
def conflict_cases(draw):
    """A machine whose buffers have many narrow banks, and a layer whose operands need more than
    one bank word per cycle (at least two rows and two columns of the array busy)."""
    R, C = draw(st.integers(2, 8)), draw(st.integers(2, 8))
    df = draw(DATAFLOWS)
    rows = draw(small_topologies())
    hw = {"pe_array.rows": R, "pe_array.cols": C, "pe_array.dataflow": df,
          "dram.bandwidth_bytes_per_cycle": draw(st.sampled_from([None, 4, 16])),
          "dram.latency_cycles": draw(st.sampled_from([0, 50]))}
    for b in BUFFERS:
        hw[f"buffers.{b}.size_kib"] = 64
        hw[f"buffers.{b}.banks"] = 64  # enough for 2 x 8 partial sums of 32 bits per cycle
        hw[f"buffers.{b}.bank_width_bits"] = 8
        hw[f"buffers.{b}.ports"] = 1
    return rows, hw


def array_extents(rows, hw) -> bool:
    """Whether some fold of some layer uses two or more rows and two or more columns."""
    R, C, df = hw["pe_array.rows"], hw["pe_array.cols"], hw["pe_array.dataflow"]
    for row in rows:
        if len(row) == 4:
            P, K, N = row[1], row[3], row[2]
        else:
            name, h, w, fh, fw, c, nf, s = row
            P = ((h - fh) // s + 1) * ((w - fw) // s + 1)
            K, N = fh * fw * (1 if "DP" in name else c), nf
        ext = {"os": (P, N), "ws": (K, N), "is": (K, P)}[df]
        if min(ext[0], R) >= 2 and min(ext[1], C) >= 2:
            return True
    return False


@FAST
@given(case=conflict_cases(), layout=st.sampled_from(["contiguous", "one_bank"]))
def test_bank_conflicts_cost_cycles(files, case, layout):
    """Interleaved over enough banks, one cycle's operands never collide; laid out in one bank
    (contiguous mapping, or a single bank) they queue: with an ideal memory the layers take
    exactly the bank stalls longer, and behind a finite memory never less long (the array may
    have been waiting for DRAM anyway)."""
    rows, hw = case
    assume(array_extents(rows, hw))
    bad = dict(hw)
    for b in BUFFERS:
        if layout == "contiguous":
            bad[f"buffers.{b}.bank_mapping"] = "contiguous"
        else:
            bad[f"buffers.{b}.banks"] = 1
    ideal = {"dram.bandwidth_bytes_per_cycle": None, "dram.latency_cycles": 0,
             "interconnect.width_bits": None, "interconnect.latency_cycles": 0}
    for memory in (ideal, {}):
        free = run(files, rows, {**hw, **memory})
        conflicted = run(files, rows, {**bad, **memory})
        check_invariants(conflicted, {**hw, **memory})
        assert free.totals.stall_breakdown["bank_conflict"] == 0
        stall = conflicted.totals.stall_breakdown["bank_conflict"]
        assert stall > 0
        assert conflicted.totals.compute_cycles == free.totals.compute_cycles
        if memory is ideal:
            assert conflicted.totals.cycles == free.totals.cycles + stall
            for a, b in zip(free.layers, conflicted.layers, strict=True):
                assert b.cycles == a.cycles + b.stall_breakdown["bank_conflict"]
        else:
            assert conflicted.totals.cycles >= free.totals.cycles


def test_result_json_round_trip(files):
    rows = [("c0", 8, 8, 3, 3, 4, 10, 1), ("c1DP", 6, 6, 3, 3, 3, 1, 1), ]
    result = run(files, rows, {"pe_array.rows": 4, "pe_array.cols": 8, "buffers.ofmap.size_kib": 1,
                               "dram.bandwidth_bytes_per_cycle": 2})
    text = result.to_json()
    again = Result.from_json(text)
    assert again == result
    assert again.to_json() == text
    data = json.loads(text)
    assert isinstance(data["schema_version"], int)
    assert data["totals"]["cycles"] == result.totals.cycles > 0
    assert data["totals"]["stall_cycles"] == result.totals.stall_cycles > 0
    for i, layer in enumerate(data["layers"]):
        assert layer["name"] == rows[i][0]
        assert layer["cycles"] == layer["compute_cycles"] + layer["stall_cycles"]
    # the same inputs and seed give the same result, byte for byte
    assert run(files, rows, {"pe_array.rows": 4, "pe_array.cols": 8, "buffers.ofmap.size_kib": 1,
                             "dram.bandwidth_bytes_per_cycle": 2}).to_json() == text


def test_simulate_twice(files):
    graph = files.graph([("g", 4, 4, 4)])
    first = accelsim.simulate(SCALESIM_CFG, graph)
    assert accelsim.simulate(SCALESIM_CFG, graph).totals.cycles == first.totals.cycles


# --- (c) bad hardware --------------------------------------------------------------------------

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


BAD_HARDWARE = [
    # (overrides, dataflow, the field the message must name)
    ({"buffers.weights.size_kib": 0.25}, "ws", "buffers.weights.size_kib"),  # 128 B slot < 256 B
    ({"buffers.ifmap.size_kib": 0.0625}, "is", "buffers.ifmap.size_kib"),
    ({"buffers.ofmap.size_kib": 0.0625}, "os", "buffers.ofmap.size_kib"),  # 16x16 psums
    # a ws/is fold streams C partial sums per cycle into the ofmap: 64 B, a 32 B slot
    ({"buffers.ofmap.size_kib": 0.0625}, "ws", "buffers.ofmap.size_kib"),
    ({"buffers.ofmap.size_kib": 0.0625}, "is", "buffers.ofmap.size_kib"),
    # ... and R ifmap values per cycle: 16 B, an 8 B slot
    ({"buffers.ifmap.size_kib": 1 / 64, "buffers.ifmap.banks": 1}, "ws",
     "buffers.ifmap.size_kib"),
    ({"dram.bandwidth_bytes_per_cycle": 0}, "ws", "dram.bandwidth_bytes_per_cycle"),
    ({"dram.bandwidth_bytes_per_cycle": -4}, "ws", "dram.bandwidth_bytes_per_cycle"),
    ({"interconnect.width_bits": 0}, "ws", "interconnect.width_bits"),
    ({"dram.burst_bytes": 0}, "ws", "dram.burst_bytes"),
    ({"buffers.ofmap.size_kib": 1 / 128}, "ws", "buffers.ofmap.size_kib"),  # 8 B < one row 64 B
    ({"buffers.ifmap.banks": 2048, "buffers.ifmap.bank_width_bits": 256}, "ws",
     "buffers.ifmap.size_kib"),  # 32 KiB < one row of 2048 banks x 256 bits
    ({"buffers.weights.ports": 0}, "ws", "buffers.weights.ports"),
    ({"vector_unit.lanes": 0}, "ws", "vector_unit.lanes"),
]


@pytest.mark.parametrize(("overrides", "df", "field"), BAD_HARDWARE,
                         ids=[f for _, _, f in BAD_HARDWARE])
def test_bad_hardware_names_the_field(files, capsys, overrides, df, field):
    topo = files.topology([("L0", 10, 10, 3, 3, 8, 40, 1)], "bad_hw.csv")
    hw = HWCONFIGS / "edge_int8_16x16.yaml"
    with pytest.raises(AccelsimError, match=field.replace(".", r"\.")):
        simulate(accelsim.load_hardware(hw, {"pe_array.dataflow": df, **overrides}), topo)
    sets = [a for k, v in {"pe_array.dataflow": df, **overrides}.items()
            for a in ("--set", f"{k}={v}")]
    code, out, err = run_cli(capsys, "run", hw, topo, *sets)
    assert_one_line_error(code, err, field)


def test_fold_that_does_not_fit_is_a_hardware_error(files):
    """The error is a HardwareError that names the layer too."""
    topo = files.topology([("big_layer", 10, 10, 3, 3, 8, 40, 1)], "bad_hw2.csv")
    hw = accelsim.load_hardware(HWCONFIGS / "edge_int8_16x16.yaml",
                                {"buffers.weights.size_kib": 0.25})
    with pytest.raises(HardwareError, match="big_layer"):
        simulate(hw, topo)
    assert gc.isenabled()  # the collector paused for planning is back, also after an error


@settings(max_examples=max(1, EXAMPLES * 2 // 3), deadline=None)
@given(rows=small_topologies(), data=st.data())
def test_any_machine_runs_or_says_why(files, rows, data):
    """Whatever the geometry, a machine either runs (with sane cycles) or raises an
    AccelsimError: never a ZeroDivisionError, a hang or another exception."""
    o = {"pe_array.rows": data.draw(st.integers(1, 24)),
         "pe_array.cols": data.draw(st.integers(1, 24)),
         "pe_array.dataflow": data.draw(DATAFLOWS),
         "dram.bandwidth_bytes_per_cycle": data.draw(st.sampled_from([None, 0.01, 0.3, 1, 64])),
         "dram.latency_cycles": data.draw(st.integers(0, 300)),
         "interconnect.width_bits": data.draw(st.sampled_from([None, 1, 8, 512]))}
    for b in BUFFERS:
        o[f"buffers.{b}.size_kib"] = data.draw(st.sampled_from([1 / 64, 1 / 8, 0.25, 1, 4]))
        o[f"buffers.{b}.banks"] = data.draw(st.sampled_from([1, 2, 3]))
        o[f"buffers.{b}.bank_width_bits"] = data.draw(st.sampled_from([8, 24, 32]))
        o[f"buffers.{b}.ports"] = data.draw(st.sampled_from([1, 2]))
        o[f"buffers.{b}.double_buffered"] = data.draw(st.booleans())
    try:
        result = run(files, rows, o)
    except AccelsimError as e:
        assert any(f"{k}" in str(e) or k.split(".")[0] in str(e) for k in o), str(e)
        return
    check_invariants(result, o)


# --- (d) the command --------------------------------------------------------------------------

def test_cli_run_scalesim_json(files, capsys):
    topo = files.topology([("c0", 9, 9, 3, 3, 4, 40, 1), ("g1DP", 6, 6, 2, 2, 3, 1, 2)],
                          "cli.csv")
    code, out, err = run_cli(capsys, "run", SCALESIM_CFG, topo, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data["schema_version"], int)
    assert data["totals"]["stall_cycles"] == 0
    names = [r["name"] for r in data["layers"]]
    assert names == ["c0", "g1DP"]
    expected = [sum(scalesim_layer_count(*pkn, 32, 32, "os") for pkn in scalesim_pkn(row))
                for row in [("c0", 9, 9, 3, 3, 4, 40, 1), ("g1DP", 6, 6, 2, 2, 3, 1, 2)]]
    assert [r["cycles"] for r in data["layers"]] == expected
    assert [r["compute_cycles"] for r in data["layers"]] == expected
    assert [r["stall_cycles"] for r in data["layers"]] == [0, 0]
    assert data["totals"]["cycles"] == sum(expected)
    assert Result.from_json(out).totals.cycles == sum(expected)


def test_cli_run_prints_a_table(capsys):
    code, out, err = run_cli(capsys, "run", HWCONFIGS / "edge_int8_16x16.yaml",
                             WORKLOADS / "digits_cnn_int8_qdq.onnx", "--timing-only")
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    for column in ("cycles", "compute", "stalls", *STALL_CAUSES):
        assert column in header.split(), column
    assert any(line.startswith("conv1") for line in lines)
    assert any(line.startswith("total") for line in lines)
    json_code, json_out, _ = run_cli(capsys, "run", HWCONFIGS / "edge_int8_16x16.yaml",
                                     WORKLOADS / "digits_cnn_int8_qdq.onnx", "--timing-only",
                                     "--json")
    total = json.loads(json_out)["totals"]["cycles"]
    assert f"{total:,} cycles" in out


@pytest.mark.parametrize("hw_name", ["edge_int8_16x16.yaml", "binary_lowvolt.yaml",
                                     "eyeriss_like_12x14.yaml"])
@pytest.mark.parametrize("workload", ["digits_cnn_int8_qdq.onnx", "digits_binary_qonnx.onnx",
                                      "alexnet.csv"])
@pytest.mark.parametrize("kib", [None, 0.25, 1])
def test_every_transfer_lies_inside_its_buffer(hw_name, workload, kib):
    """The fault model corrupts a value with the cells at its address: none may fall outside
    (small buffers make resident blocks with halos crowd the end of the buffer)."""
    from accelsim.mapping import plan

    sizes = {} if kib is None else {f"buffers.{b}.size_kib": kib for b in BUFFERS}
    try:
        hw = accelsim.load_hardware(HWCONFIGS / hw_name, sizes)
        mapping = plan(hw, accelsim.load_workload(WORKLOADS / workload))
    except HardwareError:
        return  # too small for one fold: another test checks that error
    for step in mapping.steps:
        for t in step.loads + step.stores:
            assert 0 <= t.address and t.address + t.nbytes <= hw.buffers[t.buffer].size_bytes, t
