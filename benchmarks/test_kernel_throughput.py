"""pytest-benchmark form of bench_kernels.py: `pytest benchmarks/` (not part of the test run).

Each benchmark records its GMAC/s (the pack_* ones: ms) in extra_info; compare rows of the same
layer for ratios. The accelsim kernels run on weights packed beforehand, as onnxruntime's
session.run does.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from bench_kernels import CONVS, IMPLS, conv_macs

CASES = [
    (layer, label, factory, threads)
    for layer in CONVS
    for label, factory, threaded in IMPLS
    for threads in ((1, 2) if threaded else (1,))
]


@pytest.mark.parametrize(
    ("layer", "label", "factory", "threads"),
    CASES,
    ids=[f"{layer}-{label}-{threads}t" for layer, label, _, threads in CASES],
)
def test_throughput(benchmark, layer, label, factory, threads):
    numba.set_num_threads(threads)
    fn = factory(layer, np.random.default_rng(0), threads)
    fn()
    benchmark.pedantic(fn, rounds=7, iterations=1, warmup_rounds=1)
    if label.startswith("pack_"):
        benchmark.extra_info["ms"] = benchmark.stats.stats.median * 1e3
    else:
        benchmark.extra_info["gmac_per_s"] = conv_macs(layer) / benchmark.stats.stats.median / 1e9
