"""The `accelsim` command. User errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable

from accelsim.errors import AccelsimError, HardwareError, InputError
from accelsim.progress import progress_bar

EXAMPLES = {
    "run": "accelsim run hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx",
    "run --out": "accelsim run hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx "
                 "--set buffers.weights.voltage_v=0.8 --trials 5 --out results/ --quiet",
    "info": "accelsim info workloads/digits_cnn_int8_qop.onnx",
    "validate": "accelsim validate hwconfigs/edge_int8_16x16.yaml",
    "schema": "accelsim schema > hw.schema.json",
    "schema --result": "accelsim schema --result > result.schema.json",
    "sweep": "accelsim sweep hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx "
             "--grid buffers.weights.voltage_v=0.70:0.95:0.05 --grid energy.model=table,toggles "
             "--trials 3 --db results.sqlite",
    "sweep machines": "accelsim sweep hwconfigs/edge_int8_16x16.yaml "
                      "hwconfigs/eyeriss_like_12x14.yaml workloads/digits_cnn_int8_qdq.onnx "
                      "--grid buffers.weights.voltage_v=0.80,0.85,0.90 --db machines.sqlite",
    "sweep --export": "accelsim sweep --db results.sqlite --export points.csv",
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
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())


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


def _exact(n: int) -> str:
    """A count in plain text: every digit, thousands separated."""
    return f"{n:,}"


def _short(n: int) -> str:
    """A count on the terminal: exact below 10,000, else three significant digits and an SI
    prefix (--json and --out keep the exact figures)."""
    if abs(n) < 10_000:
        return f"{n:,}"
    for prefix, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        text = f"{n / scale:.3g}"
        if "e" not in text and abs(float(text)) < 1000:
            return f"{text}{prefix}"
    return f"{n / 1e12:.3g}T"


def _fixed(largest: float) -> Callable[[float], str]:
    """A formatter of a column whose largest layer value is `largest` (in the column's unit,
    chosen to make it 1 to 999): as many decimals as give it four significant digits, so the
    column's points line up; exact zeros print as 0."""
    decimals = max(0, 3 - int(math.floor(math.log10(largest)))) if largest > 0 else 0
    return lambda v: "0" if v == 0 else f"{v:,.{decimals}f}"


def _time_unit(seconds: float) -> tuple[str, float]:
    for name, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return name, scale
    return "ns", 1e-9


# Stall causes' headers on a terminal (two short lines instead of one long word).
_STALL_HEADERS = {"dram_bandwidth": "DRAM\nbw", "dram_latency": "DRAM\nlat",
                  "interconnect": "link", "bank_conflict": "banks"}
_TOP_COMPONENTS = 3  # energy components with a column of their own; the rest summed as other

Table = tuple[str, list[tuple[str, str]], list[list[str]]]


def run_tables(result, count: Callable[[int], str] = _exact) -> list[Table]:
    """The per-layer tables of a Result, timing then memory and energy, each (title, headers as
    (plain, terminal) pairs, rows with the totals last); count formats the integers."""
    from accelsim.plots import energy_unit

    t = result.totals
    records = [*result.layers, t]
    names = [r.name for r in result.layers] + ["total"]
    causes = list(t.stall_breakdown)
    longest = max((r.latency_s for r in result.layers), default=0.0)
    tu, ts = _time_unit(longest)
    latency = _fixed(longest / ts)
    timing_headers = [("layer", "layer"), ("unit", "unit"), ("MACs", "MACs"),
                      ("cycles", "cycles"), ("compute", "compute"), ("stalls", "stalls"),
                      *((c, _STALL_HEADERS.get(c, c.replace("_", "\n"))) for c in causes),
                      ("util %", "util\n%"), (f"latency {tu}", f"latency\n{tu}")]
    timing = []
    for name, r in zip(names, records, strict=True):
        unit = "" if r is t else ("array" if r.kind == "compute" else "vector")
        timing.append([name, unit, count(r.macs), count(r.cycles), count(r.compute_cycles),
                       count(r.stall_cycles), *(count(r.stall_breakdown.get(c, 0))
                                                for c in causes),
                       "-" if unit == "vector" else f"{100 * r.utilisation:.1f}",
                       latency(r.latency_s / ts)])

    buffers = list(dict.fromkeys([*t.sram_reads, *t.sram_writes]))
    parts = sorted(t.energy_breakdown_pj, key=lambda c: -t.energy_breakdown_pj[c])
    top, rest = parts[:_TOP_COMPONENTS], parts[_TOP_COMPONENTS:]
    largest = max((r.energy_pj for r in result.layers), default=0.0)
    eu, es = energy_unit(largest)
    energy = _fixed(largest / es)
    memory_headers = [("layer", "layer"), ("DRAM rd B", "DRAM\nread B"),
                      ("DRAM wr B", "DRAM\nwrite B"),
                      *((f"{b} accesses", f"{b}\nSRAM") for b in buffers),
                      (f"energy {eu}", f"energy\n{eu}"),
                      *((f"{c} {eu}", c.replace(".", "\n").replace("_", "\n")) for c in top),
                      *([(f"other {eu}", "other")] if rest else [])]
    memory = []
    for name, r in zip(names, records, strict=True):
        e = r.energy_breakdown_pj
        memory.append([name, count(r.dram_read_bytes), count(r.dram_write_bytes),
                       *(count(r.sram_reads.get(b, 0) + r.sram_writes.get(b, 0))
                         for b in buffers),
                       energy(r.energy_pj / es), *(energy(e.get(c, 0.0) / es) for c in top),
                       *([energy(sum(e.get(c, 0.0) for c in rest) / es)] if rest else [])])
    return [("cycles per layer; stall cycles by cause (link: interconnect, banks: bank "
             "conflicts)", timing_headers, timing),
            (f"memory traffic (SRAM: bank-width reads + writes) and energy ({eu}) by "
             f"component per layer", memory_headers, memory)]


def summary_lines(result, source: str | None) -> list[str]:
    """The run in sentences: what ran where, then cycles and stalls, energy and power, and what
    the numerics ran on (source: the inputs' origin; None when timed only)."""
    from accelsim.plots import energy_unit

    h, t = result.hardware, result.totals
    lines = [f"{result.workload['name']} on {h['name']}: {h['rows']}x{h['cols']} {h['dataflow']} "
             f"array at {h['clock_mhz']:g} MHz; cycles and energy of one pass of the graph's "
             f"own batch",
             f"total: {t.cycles:,} cycles = {t.latency_s * 1e3:.4g} ms at {h['clock_mhz']:g} "
             f"MHz; stalls {t.stall_cycles:,} ({100 * t.stall_cycles / max(t.cycles, 1):.1f} "
             f"%); utilisation {100 * t.utilisation:.1f} %"]
    parts = sorted(t.energy_breakdown_pj.items(), key=lambda kv: -kv[1])
    eu, es = energy_unit(t.energy_per_inference_pj)
    lines.append(f"energy: {_g4(t.energy_per_inference_pj / es)} {eu} per inference, average "
                 f"power {_g4(t.average_power_mw)} mW; by component: "
                 + ", ".join(f"{k} {100 * v / t.energy_pj:.1f} %" for k, v in parts if v)
                 if t.energy_pj else "energy: 0")
    if result.outputs is None:
        lines.append("numerics not run (timing only): no corruption figures")
    else:
        lines.append(f"executed bit-accurately on {source}: " + ", ".join(
            f"{k} {v.dtype}{list(v.shape)}" for k, v in result.outputs.items()))
    return lines


def _g4(value: float) -> str:
    """Four significant digits, whole numbers instead of an exponent from 1000 on."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _mean(summary: dict, scale: float = 1.0, unit: str = "") -> str:
    """A trials() summary's mean; a null mean is no error (e.g. infinite SNR)."""
    return "no error" if summary["mean"] is None else f"{_g4(scale * summary['mean'])}{unit}"


def _interval(summary: dict, scale: float = 1.0, unit: str = "") -> str:
    """A trials() summary's 95% interval, empty for one trial or no spread."""
    lo, hi = summary["ci95"]
    if summary["n"] < 2 or lo is None or summary["mean"] is None:
        return ""
    return f"[{_g4(scale * lo)}, {_g4(scale * hi)}]{unit}"


# Corruption metrics as shown: label, key in corruption["metrics"], scale, unit.
_METRICS = [
    ("bits flipped", "bits_flipped", 1, ""),
    ("outputs changed", "fraction_changed", 100, " %"),
    ("SNR", "snr_db", 1, " dB"),
    ("max |error|", "max_abs_error", 1, ""),
    ("top-1 agreement", "top1_agreement", 100, " %"),
    ("accuracy", "accuracy", 100, " %"),
    ("fault-free accuracy", "golden_accuracy", 100, " %"),
]


def corruption_rows(c: dict) -> list[tuple[str, str, str]]:
    """(metric, mean, 95% interval) of a Result's corruption, for the metrics it has. A null
    mean is an infinite one (SNR): "no error" only when no trial had one."""
    m = c["metrics"]
    rows = []
    for label, key, scale, unit in _METRICS:
        if key in m:
            mean = _mean(m[key], scale, unit)
            clean = [t.get(key) is None for t in c["per_trial"]]
            if m[key]["mean"] is None and not all(clean):
                mean = f"inf in {sum(clean)} of {len(clean)} trials"
            rows.append((label, mean, _interval(m[key], scale, unit)))
    return rows


def _flips_by_buffer(c: dict) -> str | None:
    """Where the first trial's flipped bits were, when it had any."""
    flips = c["per_trial"][0]["bits_flipped_by_buffer"] if c["per_trial"] else {}
    if not any(flips.values()):
        return None
    return "first trial, bits flipped by buffer: " + ", ".join(f"{b} {n:,}"
                                                              for b, n in flips.items())


def print_corruption(c: dict) -> None:
    """The corruption figures of a Result (mean and 95% interval over the trials), plain."""
    print(f"corruption over {c['trials']} trial(s) (mean [95% interval]): "
          + ", ".join(f"{label} {mean}" + (f" {ci}" if ci else "")
                      for label, mean, ci in corruption_rows(c)))


def _rich_table(title: str, headers: list[str], rows: list[list[str]], width: int,
                dim: list[bool] | None = None):
    """A rich Table at most `width` wide: text columns (layer, unit, metric) left, numbers
    right. With dim (one flag per row but the last), the last row is a bold total under a rule
    and flagged rows are dim. Too wide, the first column's names are cut short (an ellipsis),
    never the numbers."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    total = rows[-1] if dim is not None else None
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE,
                  show_edge=False, show_footer=total is not None, padding=(0, 1, 0, 0),
                  pad_edge=False)
    for i, header in enumerate(headers):
        text = header in ("layer", "unit", "metric")
        table.add_column(header, footer=total[i] if total else "", no_wrap=True,
                         justify="left" if text else "right", footer_style="bold",
                         overflow="ellipsis")
    for i, row in enumerate(rows if total is None else rows[:-1]):
        table.add_row(*row, style="dim" if dim and dim[i] else None)
    excess = Console(width=10_000).measure(table).maximum - width
    if excess > 0:
        first = max(len(line) for cell in [headers[0], *(r[0] for r in rows)]
                    for line in cell.splitlines())
        table.columns[0].max_width = max(8, first - excess)
    return table


def print_run(result, source: str | None, written: list[str], console=None) -> None:
    """The run's tables, totals and corruption: with a rich Console (stdout is a terminal) as
    rich tables with short numbers, else as plain text with exact ones (easy to parse)."""
    def say(line: str) -> None:
        console.print(line, markup=False) if console else print(line)

    lines = summary_lines(result, source)
    say(lines[0])
    vector = [r.kind == "vector" for r in result.layers]
    for title, headers, rows in run_tables(result, _short if console else _exact):
        if console:
            console.print(_rich_table(title, [t for _, t in headers], rows, console.width,
                                      vector))
        else:
            plain = [p for p, _ in headers]
            print(f"{title}:")
            print_table([dict(zip(plain, row, strict=True)) for row in rows], plain)
    for line in lines[1:]:
        say(line)
    c = result.corruption
    if c is not None:
        if console:
            console.print(_rich_table(f"corruption over {c['trials']} trial(s)",
                                      ["metric", "mean", "95% interval"],
                                      [list(row) for row in corruption_rows(c)],
                                      console.width))
        else:
            print_corruption(c)
        if flips := _flips_by_buffer(c):
            say(flips)
    if written:
        say("wrote " + ", ".join(written))


def cmd_run(args) -> int:
    from accelsim import load_hardware
    from accelsim.simulate import run_inputs, simulate
    from accelsim.workload import load_workload

    show_progress = not (args.quiet or args.json)
    with progress_bar("loading hardware", enabled=show_progress, transient=True) as progress:
        hw = load_hardware(args.hardware, overrides=args.set)
        progress(0, None, "loading workload")
        graph = load_workload(args.workload, seed=args.seed)
        inputs, labels = run_inputs(hw, graph, args.input, args.seed, args.timing_only)
        try:
            result = simulate(hw, graph, inputs, seed=args.seed, trials=args.trials,
                              labels=labels, progress=progress)
        except HardwareError as e:  # the machine met the workload: the message names the field
            raise HardwareError(f"{args.hardware}: {e}") from None
    written, note = write_outputs(result, args.out) if args.out else ([], None)
    if note:
        print(note, file=sys.stderr)
    if args.json:
        print(result.to_json())
        return 0
    if args.quiet:
        return 0
    console = None
    if sys.stdout.isatty():
        from rich.console import Console

        console = Console()
    source = None
    if result.outputs is not None:
        source = args.input or f"seeded random data (seed {args.seed})"
    print_run(result, source, written, console)
    return 0


def write_outputs(result, out: str) -> tuple[list[str], str | None]:
    """DIR/result.json, DIR/layers.csv and, with matplotlib, energy.png, cycles.png and
    utilisation.png (accelsim.plots). All are made in memory first, then each written to a
    temporary file in DIR and renamed: an error leaves no half-written file. Returns the paths
    written and a note when plots could not be made."""
    from accelsim.result import write_atomic

    files: dict[str, str | bytes] = {"result.json": result.to_json() + "\n",
                                     "layers.csv": result.to_csv()}
    note = None
    try:
        files.update(_figures(result))
    except ImportError:
        note = "accelsim: no plots written: they need matplotlib (pip install 'accelsim[plots]')"
    try:
        os.makedirs(out, exist_ok=True)
        for name, data in files.items():
            write_atomic(os.path.join(out, name), data)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write results ({e.strerror or e})") from None
    return [os.path.join(out, name) for name in files], note


def _figures(result) -> dict[str, bytes]:
    """run --out's plots as PNG bytes; ImportError without matplotlib."""
    import io

    from accelsim import plots

    figures = {"energy.png": plots.energy_breakdown(result), "cycles.png": plots.cycles(result),
               "utilisation.png": plots.utilisation(result)}
    out = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        out[name] = buf.getvalue()
    return out


def cmd_sweep(args) -> int:
    from accelsim.hardware import parse_override
    from accelsim.sweep import SweepError, export_csv, parse_grids, run_sweep

    if args.export:
        if args.hardware or args.workloads or args.grid:
            raise SweepError("sweep --export reads the store only: give no HW, WORKLOAD or --grid")
        rows = export_csv(args.db, args.export)
        print(f"wrote {rows} point(s) of {args.db} to {args.export}")
        return 0
    hardware, workloads = split_hardware([args.hardware, *args.workloads])
    if not workloads:
        raise SweepError("sweep needs HW and at least one WORKLOAD (or --export CSV)")
    summary = run_sweep(hardware, workloads, parse_grids(args.grid), args.db,
                        overrides=dict(map(parse_override, args.set)), inputs=args.input,
                        seed=args.seed, trials=args.trials, workers=args.workers,
                        scheduler=args.scheduler)
    print(summary)
    return 0


HARDWARE_SUFFIXES = (".yaml", ".yml", ".cfg")


def split_hardware(files: list[str]) -> tuple[list[str], list[str]]:
    """sweep's HW [HW ...] WORKLOAD [...]: the first file is hardware, and so is each one after
    it that is YAML or a SCALE-Sim .cfg, up to the first workload."""
    n = 1
    while n < len(files) and files[n].lower().endswith(HARDWARE_SUFFIXES):
        n += 1
    return files[:n], files[n:]


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
                   help="print the result as JSON (schema: accelsim schema --result) instead "
                        "of the tables")
    r.add_argument("--out", metavar="DIR",
                   help="write DIR/result.json, DIR/layers.csv (one row per layer) and, with "
                        "the plots extra, energy.png, cycles.png and utilisation.png")
    r.add_argument("--quiet", action="store_true",
                   help="print no table and no progress bars")
    r.add_argument("--timing-only", action="store_true",
                   help="time the network without running its numerics (always so for CSV)")

    i = add("info", "list a workload's layers with shapes, precisions and MACs", cmd_info)
    i.add_argument("workload")

    w = add("sweep", "run a grid of hardware settings (and workloads) into a resumable SQLite "
                     "store, or export a store as CSV", cmd_sweep)
    w.add_argument("hardware", nargs="?",
                   help="hardware YAML or SCALE-Sim .cfg (several, before the workloads: each "
                        "is swept)")
    w.add_argument("workloads", nargs="*", metavar="workload",
                   help="ONNX, QONNX or SCALE-Sim topology CSV (several: each is swept)")
    w.add_argument("--grid", action="append", default=[], metavar="PATH=START:STOP:STEP|a,b,c",
                   help="sweep a hardware field over a range (STOP included when on the grid) "
                        "or a list; repeated: the cartesian product")
    w.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a hardware field in every point")
    w.add_argument("--input", help=".npz with arrays named after the graphs' inputs (and "
                                   "labels); default: seeded random data")
    w.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    w.add_argument("--trials", type=int, default=1, help="Monte Carlo fault trials per point")
    w.add_argument("--workers", type=int, help="local worker processes (default: the CPUs)")
    w.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster of this scheduler (e.g. tcp://host:8786) "
                        "instead of local processes")
    w.add_argument("--db", required=True,
                   help="SQLite store: created if missing, else added to (finished points are "
                        "skipped)")
    w.add_argument("--export", metavar="CSV",
                   help="write the store's points as CSV (one row each) instead of running")

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
