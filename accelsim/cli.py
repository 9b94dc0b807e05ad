"""The `accelsim` command. User errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from accelsim.errors import AccelsimError, InputError
from accelsim.progress import progress_bar

EXAMPLES = {
    "run": "accelsim run hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx",
    "run --out": "accelsim run hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx "
                 "--set buffers.weights.voltage_v=0.8 --trials 5 --out results/ --quiet",
    "info": "accelsim info workloads/digits_cnn_int8_qop.onnx",
    "validate": "accelsim validate hwconfigs/edge_int8_16x16.yaml",
    "schema": "accelsim schema > hw.schema.json",
    "schema --result": "accelsim schema --result > result.schema.json",
}


def layer_rows(graph) -> list[dict]:
    """One row per compute node: what `info` prints and what `run` reports per layer."""
    from accelsim.workload.ir import macs

    rows = []
    for node in graph.nodes:
        ins = [graph.tensors[i] for i in node.inputs]
        out = graph.tensors[node.outputs[0]]
        row = dict(name=node.layer, op=node.op, input=list(ins[0].shape), output=list(out.shape),
                   precision=str(ins[0].type), weights="", macs=0)
        if node.op in ("Conv", "MatMul"):
            row["weights"] = f"{ins[1].type} {list(ins[1].shape)}"
            row["precision"] = f"{ins[0].type} x {ins[1].type}"
            row["macs"] = macs(graph, node)
        rows.append(row)
    return rows


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns))


def cmd_info(args) -> int:
    from accelsim.workload import load_workload

    graph = load_workload(args.workload)
    rows = layer_rows(graph)
    print(f"{graph.name}: {len(graph.nodes)} nodes, inputs "
          + ", ".join(f"{n} {list(graph.tensors[n].shape)} {graph.tensors[n].type}"
                      for n in graph.inputs))
    print_table(rows, ["name", "op", "input", "output", "precision", "weights", "macs"])
    print(f"total MACs: {sum(r['macs'] for r in rows):,}")
    return 0


def load_inputs(graph, path: str | None,
                seed: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Inputs (and labels, if any) from an .npz named after the graph's inputs, or seeded random
    data of their type (no labels)."""
    if path:
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read inputs ({e})") from None
        labels = arrays.pop("labels", None)
        return arrays, labels
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.type.kind == "float":
            inputs[name] = rng.random(t.shape, dtype=np.float32)
        else:
            inputs[name] = rng.integers(t.type.min, t.type.max + 1, t.shape).astype(t.type.storage)
    return inputs, None


def run_inputs(hw, graph, path: str | None, seed: int, timing_only: bool = False
               ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    """What `run` and `sweep` simulate on: load_inputs' arrays and labels, or (None, None) to
    time the graph only. A SCALE-Sim topology carries shapes only: its seeded weights compute
    nothing real, so its numerics run only when the toggle energy model asks for data."""
    csv = str(graph.source).lower().endswith(".csv")
    if timing_only or (csv and hw.energy.model != "toggles"):
        return None, None
    return load_inputs(graph, path, seed)


def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f}"


def print_timing(result) -> None:
    """The per-layer and total figures of a Result, as plain text tables."""
    causes = list(result.totals.stall_breakdown)
    rows = []
    for r in [*result.layers, result.totals]:
        is_total = r is result.totals
        row = {
            "layer": "total" if is_total else r.name,
            "unit": "" if is_total else ("array" if r.kind == "compute" else "vector"),
            "MACs": f"{r.macs:,}",
            "cycles": f"{r.cycles:,}",
            "compute": f"{r.compute_cycles:,}",
            "stalls": f"{r.stall_cycles:,}",
        }
        row.update({c: f"{r.stall_breakdown[c]:,}" for c in causes})
        row["util %"] = f"{100 * r.utilisation:.1f}"
        row["DRAM rd KiB"] = _kib(r.dram_read_bytes)
        row["DRAM wr KiB"] = _kib(r.dram_write_bytes)
        row["SRAM rd/wr (accesses)"] = ", ".join(
            f"{b} {r.sram_reads.get(b, 0):,}/{r.sram_writes.get(b, 0):,}"
            for b in sorted(set(r.sram_reads) | set(r.sram_writes))
        )
        row["latency us"] = f"{r.latency_s * 1e6:,.2f}"
        row["energy nJ"] = f"{r.energy_pj / 1e3:,.2f}"
        rows.append(row)
    print_table(rows, list(rows[0]))


def cmd_run(args) -> int:
    from accelsim import load_hardware
    from accelsim.simulate import simulate
    from accelsim.workload import load_workload

    hw = load_hardware(args.hardware, overrides=args.set)
    graph = load_workload(args.workload, seed=args.seed)
    inputs, labels = run_inputs(hw, graph, args.input, args.seed, args.timing_only)
    with progress_bar("fault trials", args.trials, enabled=not args.quiet) as progress:
        result = simulate(hw, graph, inputs, seed=args.seed, trials=args.trials, labels=labels,
                          progress=progress)
    if args.out:
        write_outputs(result, args.out)
    if args.json:
        print(result.to_json())
        return 0
    if args.quiet:
        return 0
    h = result.hardware
    print(f"{graph.name} on {hw.name}: {h['rows']}x{h['cols']} {h['dataflow']} array at "
          f"{hw.clock_mhz:g} MHz; cycles and energy of one pass of the graph's own batch")
    print_timing(result)
    t = result.totals
    print(f"total: {t.cycles:,} cycles = {t.latency_s * 1e3:.4g} ms at {hw.clock_mhz:g} MHz; "
          f"stalls {t.stall_cycles:,} ({100 * t.stall_cycles / max(t.cycles, 1):.1f} %); "
          f"utilisation {100 * t.utilisation:.1f} %")
    parts = sorted(t.energy_breakdown_pj.items(), key=lambda kv: -kv[1])
    print(f"energy: {t.energy_per_inference_pj / 1e6:.4g} uJ per inference, average power "
          f"{t.average_power_mw:.4g} mW; by component: "
          + ", ".join(f"{k} {100 * v / t.energy_pj:.1f} %" for k, v in parts if v)
          if t.energy_pj else "energy: 0")
    if result.outputs is not None:
        source = args.input or f"seeded random data (seed {args.seed})"
        print(f"executed bit-accurately on {source}: "
              + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in result.outputs.items()))
        print_corruption(result.corruption)
    else:
        print("numerics not run (timing only): no corruption figures")
    if args.out:
        print(f"wrote {os.path.join(args.out, 'result.json')} and "
              f"{os.path.join(args.out, 'layers.csv')}")
    return 0


def write_outputs(result, out: str) -> None:
    """DIR/result.json and DIR/layers.csv. Both are made in memory first, then each written to a
    temporary file in DIR and renamed: an error leaves no half-written file."""
    from accelsim.result import write_atomic

    files = {"result.json": result.to_json() + "\n", "layers.csv": result.to_csv()}
    try:
        os.makedirs(out, exist_ok=True)
        for name, text in files.items():
            write_atomic(os.path.join(out, name), text)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write results ({e.strerror or e})") from None


def _fmt(summary: dict, scale: float = 1.0, unit: str = "") -> str:
    """mean [95% interval] of a trials() summary; a null mean is no error (e.g. infinite SNR)."""
    mean = summary["mean"]
    if mean is None:
        return "no error"
    text = f"{scale * mean:.4g}{unit}"
    lo, hi = summary["ci95"]
    if summary["n"] > 1 and lo is not None:
        text += f" [{scale * lo:.4g}, {scale * hi:.4g}]"
    return text


def print_corruption(c: dict) -> None:
    """The corruption figures of a Result (mean and 95% interval over the trials)."""
    m = c["metrics"]
    print(f"corruption over {c['trials']} trial(s) (mean [95% interval]): "
          f"bits flipped {_fmt(m['bits_flipped'])}, outputs changed "
          f"{_fmt(m['fraction_changed'], 100, ' %')}, SNR {_fmt(m['snr_db'], 1, ' dB')}, "
          f"max |error| {_fmt(m['max_abs_error'])}, top-1 agreement "
          f"{_fmt(m['top1_agreement'], 100, ' %')}")
    if "accuracy" in m:
        print(f"accuracy {_fmt(m['accuracy'], 100, ' %')} (fault-free "
              f"{_fmt(m['golden_accuracy'], 100, ' %')})")
    flips = c["per_trial"][0]["bits_flipped_by_buffer"] if c["per_trial"] else {}
    if any(flips.values()):
        print("first trial, bits flipped by buffer: "
              + ", ".join(f"{b} {n:,}" for b, n in flips.items()))


def cmd_validate(args) -> int:
    from accelsim import load_hardware

    hw = load_hardware(args.hardware, overrides=args.set)
    print(f"{args.hardware}: valid ({hw.summary()})")
    return 0


def cmd_schema(args) -> int:
    if args.result:
        from accelsim.result import json_schema
    else:
        from accelsim.hardware import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="accelsim",
        description="Cycle-level, bit-accurate simulator of DNN accelerators.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help_, fn):
        examples = [v for k, v in EXAMPLES.items() if k.split()[0] == name]
        sp = sub.add_parser(name, help=help_, description=help_,
                            epilog=("examples:\n  " if len(examples) > 1 else "example:\n  ")
                            + "\n  ".join(examples),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
        return sp

    r = add("run", "run a workload on a hardware description", cmd_run)
    r.add_argument("hardware", help="hardware YAML or SCALE-Sim .cfg")
    r.add_argument("workload", help="ONNX, QONNX or SCALE-Sim topology CSV")
    r.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a hardware field, e.g. buffers.weights.voltage_v=0.8")
    r.add_argument("--input", help=".npz with arrays named after the graph inputs")
    r.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    r.add_argument("--trials", type=int, default=1,
                   help="Monte Carlo fault trials (seeds seed, seed+1, ...); mean and 95%% "
                        "interval")
    r.add_argument("--json", action="store_true",
                   help="print the result as JSON (schema: accelsim schema --result)")
    r.add_argument("--out", metavar="DIR",
                   help="write DIR/result.json and DIR/layers.csv (one row per layer)")
    r.add_argument("--quiet", action="store_true", help="print no table")
    r.add_argument("--timing-only", action="store_true",
                   help="time the network without running its numerics (always so for CSV)")

    i = add("info", "list a workload's layers with shapes, precisions and MACs", cmd_info)
    i.add_argument("workload")

    v = add("validate", "check a hardware description", cmd_validate)
    v.add_argument("hardware")
    v.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")

    s = add("schema", "print the JSON Schema of hardware descriptions (or of run's JSON)",
            cmd_schema)
    s.add_argument("--result", action="store_true",
                   help="the schema of `run --json` and result.json instead "
                        "(docs/result.schema.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except AccelsimError as e:
        print(f"accelsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `accelsim info net.onnx | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # silences the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
