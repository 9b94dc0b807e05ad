"""The timing model gives, on a fixed set of networks and machines, the per-layer cycles, stalls
and DRAM bytes it gave when tests/data/timing_recorded.json was written (its "commit"), to the
last cycle: a change meant to make the simulation faster must not change what it simulates.

The cases cover the mapping's corners that reach the engine: ResNet-18 on the small edge and
Eyeriss-like arrays (tens of thousands of steps, DRAM- and interconnect-bound, layers gated on
the one before), the digits CNNs on every bundled machine, SCALE-Sim's topologies in the three
dataflows, single buffering, contiguous banks and unlimited memory.

    python tests/test_timing_recorded.py   # rewrite the file (on purpose only, from a clean tree)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "data" / "timing_recorded.json"
SMALL = "scalesim_default_32x32.cfg"
SINGLE = {f"buffers.{b}.double_buffered": False for b in ("ifmap", "weights", "ofmap")}
CONTIGUOUS = {f"buffers.{b}.{k}": v for b in ("ifmap", "weights", "ofmap")
              for k, v in (("banks", 4), ("bank_mapping", "contiguous"), ("bank_width_bits", 32))}
LIMITED = {"dram.bandwidth_bytes_per_cycle": 6.4, "dram.latency_cycles": 60, "dram.burst_bytes": 64,
           "interconnect.width_bits": 32, "interconnect.latency_cycles": 3, "interconnect.hops": 2}

# name -> (hardware file, workload file, overrides)
CASES: dict[str, tuple[str, str, dict]] = {
    "resnet18-int8-edge16": ("edge_int8_16x16.yaml", "resnet18_int8_qdq.onnx", {}),
    "resnet18-int8-eyeriss12x14": ("eyeriss_like_12x14.yaml", "resnet18_int8_qdq.onnx", {}),
    **{f"{wl.removesuffix('.onnx')}-{hw.split('.')[0]}": (hw, wl, {})
       for wl in ("digits_cnn_int8_qdq.onnx", "digits_cnn_int8_qop.onnx",
                  "digits_binary_qonnx.onnx")
       for hw in ("edge_int8_16x16.yaml", "eyeriss_like_12x14.yaml", "binary_lowvolt.yaml",
                  "tpu_like_256x256_ws.yaml", SMALL)},
    **{f"resnet18-scalesim32-{df}": (SMALL, "resnet18.csv", {"pe_array.dataflow": df})
       for df in ("ws", "os", "is")},
    "mobilenet-binary_lowvolt": ("binary_lowvolt.yaml", "mobilenet.csv", {}),
    "alexnet-edge16-single-buffered": ("edge_int8_16x16.yaml", "alexnet.csv", SINGLE),
    "mobilenet-scalesim32-ws-limited": (SMALL, "mobilenet.csv",
                                        {"pe_array.dataflow": "ws", **LIMITED}),
    "mobilenet-scalesim32-is-limited-single": (SMALL, "mobilenet.csv",
                                               {"pe_array.dataflow": "is", **LIMITED, **SINGLE}),
    "alexnet-scalesim32-os-limited-contiguous": (SMALL, "alexnet.csv", {**LIMITED, **CONTIGUOUS}),
    "digits_cnn_int8_qdq-eyeriss12x14-single-unlimited": (
        "eyeriss_like_12x14.yaml", "digits_cnn_int8_qdq.onnx",
        {**SINGLE, "dram.bandwidth_bytes_per_cycle": None, "interconnect.width_bits": None}),
}


def simulate_case(name: str, resnet18_onnx: Path) -> dict:
    """Total cycles and, per layer, [name, start, cycles, compute, stalls by cause, read and
    written DRAM bytes] (the causes in STALL_CAUSES order). resnet18_onnx: the ResNet-18 ONNX
    as workloads/build.py makes it (not in git)."""
    import accelsim
    from accelsim.mapping import plan
    from accelsim.sim import STALL_CAUSES, simulate_timing

    hw_file, wl_file, overrides = CASES[name]
    hw = accelsim.load_hardware(ROOT / "hwconfigs" / hw_file, overrides)
    workload = resnet18_onnx if wl_file == resnet18_onnx.name else ROOT / "workloads" / wl_file
    timing = simulate_timing(plan(hw, accelsim.load_workload(workload)))
    return {"cycles": timing.cycles,
            "layers": [[lt.name, lt.start_cycle, lt.cycles, lt.compute_cycles,
                        [lt.stall_cycles[c] for c in STALL_CAUSES],
                        lt.dram_read_bytes, lt.dram_write_bytes] for lt in timing.layers]}


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_the_recording_covers_every_case(recorded):
    assert sorted(recorded["cases"]) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_timing_as_recorded(recorded, name, resnet18_onnx):
    expected = recorded["cases"][name]
    got = simulate_case(name, resnet18_onnx)
    assert [row[0] for row in got["layers"]] == [row[0] for row in expected["layers"]]
    for row, want in zip(got["layers"], expected["layers"], strict=True):
        assert row == want, (name, row[0])
    assert got["cycles"] == expected["cycles"]


def record() -> None:
    """Write the file from the checked-out code; refuses a tree with uncommitted changes to the
    code that the cycles depend on."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()

    if git("status", "--porcelain", "--", "accelsim", "hwconfigs", "workloads"):
        sys.exit("uncommitted changes under accelsim/, hwconfigs/ or workloads/: commit first")
    head = {"commit": git("rev-parse", "HEAD"),
            "note": "written by `python tests/test_timing_recorded.py` at this commit"}
    sys.path.insert(0, str(ROOT / "workloads"))
    import resnet18

    with tempfile.TemporaryDirectory() as folder:
        built = resnet18.build(Path(folder))
        cases = ",\n".join(f"{json.dumps(name)}: {json.dumps(simulate_case(name, built))}"
                            for name in CASES)
    tmp = RECORDED.with_suffix(".tmp")
    tmp.write_text(json.dumps(head)[:-1] + ', "cases": {\n' + cases + "\n}}\n")
    tmp.replace(RECORDED)


if __name__ == "__main__":
    record()
