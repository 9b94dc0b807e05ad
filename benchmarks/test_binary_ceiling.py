"""pytest-benchmark form of bench_binary_ceiling.py: `pytest benchmarks/` (not part of the test
run). Each inner loop records its MACs/cycle (at the clock of a timed imul chain) and GMAC/s in
extra_info, and its instructions per 256 MACs from the assembly."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from bench_binary_ceiling import clock_ghz, inner_loops, instruction_counts

LOOPS = inner_loops(np.random.default_rng(0))


@pytest.mark.parametrize("loop", LOOPS, ids=[loop.name for loop in LOOPS])
def test_inner_loop(benchmark, loop):
    numba.set_num_threads(1)
    loop.run()
    benchmark.pedantic(loop.run, rounds=7, iterations=1, warmup_rounds=1)
    ghz = clock_ghz()[0]
    gmacs = loop.macs / benchmark.stats.stats.median / 1e9
    per, _ = instruction_counts(loop)
    benchmark.extra_info.update(
        gmac_per_s=gmacs,
        macs_per_cycle=gmacs / ghz,
        clock_ghz=ghz,
        instructions_per_256_macs=sum(per.values()),
        **{f"per_256_macs_{k}": v for k, v in per.items()},
    )
