"""pytest-benchmark form of bench_timing.py: `pytest benchmarks/test_timing_throughput.py`.

Times plan + simulate (timing only) of whole networks; extra_info records the simulated cycles
and simulated cycles per second. No wall-time assertion: the budget figure is bench_timing.py's.
"""

from __future__ import annotations

import pytest
from bench_timing import CASES, HW, WL

import accelsim
from accelsim.mapping import plan
from accelsim.sim import simulate_timing

SELECTED = ["resnet18-scalesim32-ws", "resnet18-scalesim32-os", "mobilenet-scalesim32-ws",
            "alexnet-scalesim32-ws", "alexnet-edge16", "mobilenet-eyeriss12x14"]


@pytest.mark.parametrize("case", SELECTED)
def test_timing_throughput(benchmark, case):
    hw_file, wl_file, overrides = CASES[case]
    hw = accelsim.load_hardware(HW / hw_file, overrides)
    graph = accelsim.load_workload(WL / wl_file)

    def timing_only():
        return simulate_timing(plan(hw, graph))

    timing = benchmark.pedantic(timing_only, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["cycles"] = timing.cycles
    benchmark.extra_info["cycles_per_s"] = timing.cycles / benchmark.stats.stats.median
