"""Whole-network timing: wall time, peak memory and simulated cycles per second.

    python benchmarks/bench_timing.py [--repeat 5] [--cases resnet18-scalesim32-ws ...] [--json]
    python benchmarks/bench_timing.py --ab REV [--repeat 11] [--cases ...]

Each case runs in a fresh subprocess (so its peak memory, ru_maxrss, is its own): it loads the
hardware and the workload, then times `repeat` runs of plan (mapping.plan) and simulate
(sim.simulate_timing) and one of the report (energy.account + simulate.gather: the Result), and
reports medians. "wall" is load + plan + simulate + report, as accelsim.simulate does it without
numerics (timing only). The budget case also times the
command `accelsim run HW WORKLOAD --timing-only --json` end to end, imports included.
The pytest-benchmark form is test_timing_throughput.py.

--ab REV compares the timing model (accelsim/sim) as it is with the one at git revision REV in
one process: for each case, `repeat` rounds that each time both on the same mapping, in
alternating order (so drifting load hits both alike), in CPU time of this process (other
engineers' processes share the 2 cores); it prints the median times and the median of the
per-round ratios old / new, and fails if the two give different timings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HW = REPO / "hwconfigs"
WL = REPO / "workloads"

# name -> (hardware, workload, overrides)
CASES: dict[str, tuple[str, str, dict]] = {
    "resnet18-scalesim32-ws": ("scalesim_default_32x32.cfg", "resnet18.csv",
                               {"pe_array.dataflow": "ws"}),  # the budget case
    "resnet18-scalesim32-os": ("scalesim_default_32x32.cfg", "resnet18.csv", {}),
    "resnet18-scalesim32-is": ("scalesim_default_32x32.cfg", "resnet18.csv",
                               {"pe_array.dataflow": "is"}),
    "mobilenet-scalesim32-ws": ("scalesim_default_32x32.cfg", "mobilenet.csv",
                                {"pe_array.dataflow": "ws"}),
    "alexnet-scalesim32-ws": ("scalesim_default_32x32.cfg", "alexnet.csv",
                              {"pe_array.dataflow": "ws"}),
    "resnet18-edge16": ("edge_int8_16x16.yaml", "resnet18.csv", {}),
    "mobilenet-edge16": ("edge_int8_16x16.yaml", "mobilenet.csv", {}),
    "alexnet-edge16": ("edge_int8_16x16.yaml", "alexnet.csv", {}),
    "resnet18-eyeriss12x14": ("eyeriss_like_12x14.yaml", "resnet18.csv", {}),
    "mobilenet-eyeriss12x14": ("eyeriss_like_12x14.yaml", "mobilenet.csv", {}),
    "alexnet-eyeriss12x14": ("eyeriss_like_12x14.yaml", "alexnet.csv", {}),
    "resnet18-tpu256": ("tpu_like_256x256_ws.yaml", "resnet18.csv", {}),
    "mobilenet-tpu256": ("tpu_like_256x256_ws.yaml", "mobilenet.csv", {}),
    "alexnet-tpu256": ("tpu_like_256x256_ws.yaml", "alexnet.csv", {}),
    "resnet18-binary": ("binary_lowvolt.yaml", "resnet18.csv", {}),
    "resnet18-int8-onnx-edge16": ("edge_int8_16x16.yaml", "resnet18_int8_qdq.onnx", {}),
    "resnet18-int8-onnx-eyeriss12x14": ("eyeriss_like_12x14.yaml", "resnet18_int8_qdq.onnx", {}),
}
BUDGET_CASE = "resnet18-scalesim32-ws"


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(name: str, repeat: int) -> dict:
    """Run one case in this process (call it in a fresh one) and return its figures."""
    hw_file, wl_file, overrides = CASES[name]
    t0 = time.perf_counter()
    import accelsim
    from accelsim.energy import account
    from accelsim.mapping import plan
    from accelsim.sim import simulate_timing
    from accelsim.simulate import gather

    t_import = time.perf_counter() - t0
    rss_import = maxrss_mib()
    t0 = time.perf_counter()
    hw = accelsim.load_hardware(HW / hw_file, overrides)
    graph = accelsim.load_workload(WL / wl_file)
    t_load = time.perf_counter() - t0
    plans, sims = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mapping = plan(hw, graph)
        t1 = time.perf_counter()
        timing = simulate_timing(mapping)
        t2 = time.perf_counter()
        plans.append(t1 - t0)
        sims.append(t2 - t1)
    t0 = time.perf_counter()
    result = gather(mapping, timing, account(mapping, timing))
    t_gather = time.perf_counter() - t0
    t_plan, t_sim = statistics.median(plans), statistics.median(sims)
    wall = t_load + t_plan + t_sim + t_gather
    return {
        "case": name, "hardware": hw_file, "workload": wl_file, "overrides": overrides,
        "layers": len(result.layers), "steps": sum(len(lm.steps) for lm in mapping.layers),
        "folds": sum(len(lm.folds) for lm in mapping.layers),
        "cycles": result.totals.cycles, "stall_cycles": result.totals.stall_cycles,
        "import_s": t_import, "load_s": t_load, "plan_s": t_plan, "simulate_s": t_sim,
        "gather_s": t_gather, "wall_s": wall,
        "plan_spread": (min(plans), max(plans)), "simulate_spread": (min(sims), max(sims)),
        "cycles_per_s": result.totals.cycles / wall,
        "rss_after_import_mib": rss_import, "peak_rss_mib": maxrss_mib(),
    }


def run_case(name: str, repeat: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--repeat", str(repeat)],
        check=True, capture_output=True, text=True, cwd=REPO,
    )
    return json.loads(out.stdout)


def cli_argv(name: str) -> list[str]:
    hw_file, wl_file, overrides = CASES[name]
    argv = [sys.executable, "-m", "accelsim.cli", "run", str(HW / hw_file), str(WL / wl_file),
            "--timing-only", "--json"]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def cli_once(name: str) -> dict:
    """Run the command once as this process's only child: its wall time and peak RSS."""
    t0 = time.perf_counter()
    subprocess.run(cli_argv(name), check=True, capture_output=True, cwd=REPO)
    wall = time.perf_counter() - t0
    return {"wall_s": wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cli_wall(name: str, repeat: int) -> tuple[float, float]:
    """Median wall time and peak RSS (MiB) of `accelsim run ... --timing-only --json`, each run
    from a fresh wrapper process so that no other child's peak is counted."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--cli-child", name], check=True,
                             capture_output=True, text=True, cwd=REPO)
        runs.append(json.loads(out.stdout))
    return statistics.median(r["wall_s"] for r in runs), max(r["peak_rss_mib"] for r in runs)


def timing_model_at(rev: str):
    """simulate_timing as it was at git revision `rev`: that revision's accelsim/sim files,
    imported as a package of their own beside the current accelsim."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout

    package = "accelsim_sim_" + git("rev-parse", "--short", rev).strip()
    root = Path(tempfile.mkdtemp(prefix="bench_timing_"))
    (root / package).mkdir()
    for path in git("ls-tree", "--name-only", rev, "accelsim/sim/").split():
        text = git("show", f"{rev}:{path}").replace("accelsim.sim", package)
        (root / package / Path(path).name).write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(package).simulate_timing


def compare(rev: str, cases: list[str], repeat: int) -> None:
    """Print old (at rev) / new timing-model figures per case; raise if the timings differ."""
    import accelsim
    from accelsim.mapping import plan
    from accelsim.sim import simulate_timing as new

    old = timing_model_at(rev)
    print(f"{'case':28} {'steps':>7} {'old s':>7} {'new s':>7} {'old/new':>8} "
          f"{'(min..max)':>12}")
    for name in cases:
        hw_file, wl_file, overrides = CASES[name]
        mapping = plan(accelsim.load_hardware(HW / hw_file, overrides),
                       accelsim.load_workload(WL / wl_file))
        times: dict = {old: [], new: []}
        results = {}
        for r in range(repeat):
            for model in (old, new) if r % 2 == 0 else (new, old):
                t0 = time.process_time()
                timing = model(mapping)
                times[model].append(time.process_time() - t0)
                results[model] = [(lt.name, lt.start_cycle, lt.cycles, lt.compute_cycles,
                                   dict(lt.stall_cycles), lt.dram_read_bytes,
                                   lt.dram_write_bytes) for lt in timing.layers], timing.cycles
        if results[old] != results[new]:
            raise SystemExit(f"{name}: the timing at {rev} and the current one differ")
        ratios = [a / b for a, b in zip(times[old], times[new], strict=True)]
        steps = sum(len(lm.steps) for lm in mapping.layers)
        print(f"{name:28} {steps:7d} {statistics.median(times[old]):7.3f} "
              f"{statistics.median(times[new]):7.3f} {statistics.median(ratios):7.2f}x "
              f"({min(ratios):.2f}..{max(ratios):.2f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end command timing")
    ap.add_argument("--ab", metavar="REV", help="compare the timing model with the one at REV")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cli-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cli_child:
        print(json.dumps(cli_once(args.cli_child)))
        return 0
    if args.child:
        print(json.dumps(measure(args.child, args.repeat)))
        return 0
    if args.ab:
        compare(args.ab, args.cases, args.repeat)
        return 0
    rows = []
    for name in args.cases:
        r = run_case(name, args.repeat)
        rows.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
    if not args.json:
        print(f"{'case':28} {'layers':>6} {'steps':>7} {'cycles':>13} {'load s':>7} "
              f"{'plan s':>7} {'sim s':>7} {'rep s':>6} {'wall s':>7} {'Mcyc/s':>8} "
              f"{'peak MiB':>9} {'(import)':>8}")
        for r in rows:
            print(f"{r['case']:28} {r['layers']:6d} {r['steps']:7d} {r['cycles']:13,d} "
                  f"{r['load_s']:7.3f} {r['plan_s']:7.3f} {r['simulate_s']:7.3f} "
                  f"{r['gather_s']:6.3f} {r['wall_s']:7.3f} {r['cycles_per_s'] / 1e6:8.2f} "
                  f"{r['peak_rss_mib']:9.0f} {r['rss_after_import_mib']:8.0f}")
    if BUDGET_CASE in args.cases and not args.no_cli:
        wall, peak = cli_wall(BUDGET_CASE, args.repeat)
        budget = next(r for r in rows if r["case"] == BUDGET_CASE)
        print(f"{BUDGET_CASE}: in-process {budget['wall_s']:.3f} s, "
              f"peak {budget['peak_rss_mib']:.0f} MiB; `accelsim run --timing-only --json` "
              f"end to end {wall:.3f} s (median of {args.repeat}), peak {peak:.0f} MiB; "
              "budget 2 s and 1024 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
