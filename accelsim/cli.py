"""The `accelsim` command. User errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from accelsim.errors import AccelsimError, InputError

EXAMPLES = {
    "run": "accelsim run hwconfigs/edge_int8_16x16.yaml workloads/digits_cnn_int8_qdq.onnx",
    "info": "accelsim info workloads/digits_cnn_int8_qop.onnx",
    "validate": "accelsim validate hwconfigs/edge_int8_16x16.yaml",
    "schema": "accelsim schema > hw.schema.json",
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


def load_inputs(graph, path: str | None, seed: int) -> dict[str, np.ndarray]:
    """Inputs from an .npz named after the graph's inputs, or seeded random data of their type."""
    if path:
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files if k != "labels"}
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read inputs ({e})") from None
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.type.kind == "float":
            inputs[name] = rng.random(t.shape, dtype=np.float32)
        else:
            inputs[name] = rng.integers(t.type.min, t.type.max + 1, t.shape).astype(t.type.storage)
    return inputs


def cmd_run(args) -> int:
    from accelsim import load_hardware
    from accelsim.execute import execute, machine_accumulator
    from accelsim.workload import load_workload

    hw = load_hardware(args.hardware, overrides=args.set)
    graph = load_workload(args.workload, seed=args.seed)
    inputs = load_inputs(graph, args.input, args.seed)
    outputs = execute(graph, inputs, accumulator=machine_accumulator(hw))
    rows = layer_rows(graph)
    result = {
        "hardware": str(args.hardware),
        "workload": str(args.workload),
        "seed": args.seed,
        "layers": [r for r in rows if r["macs"]],
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
        "not_modelled": ["cycles", "energy", "corruption"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    source = args.input or f"seeded random data (seed {args.seed})"
    print(f"{graph.name} on {args.hardware}: executed bit-accurately on {source} "
          f"({sum(r['macs'] for r in rows):,} MACs, accumulator {machine_accumulator(hw)})")
    print_table(result["layers"], ["name", "op", "output", "precision", "macs"])
    for name, v in outputs.items():
        print(f"output {name}: {v.dtype}{list(v.shape)}")
    print("cycles, energy and corruption: not modelled yet (the timing model is not built)")
    return 0


def cmd_validate(args) -> int:
    from accelsim import load_hardware

    hw = load_hardware(args.hardware, overrides=args.set)
    print(f"{args.hardware}: valid ({hw.summary()})")
    return 0


def cmd_schema(args) -> int:
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
        sp = sub.add_parser(name, help=help_, description=help_,
                            epilog=f"example:\n  {EXAMPLES[name]}",
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
    r.add_argument("--json", action="store_true", help="print the result as JSON")

    i = add("info", "list a workload's layers with shapes, precisions and MACs", cmd_info)
    i.add_argument("workload")

    v = add("validate", "check a hardware description", cmd_validate)
    v.add_argument("hardware")
    v.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")

    add("schema", "print the JSON Schema of hardware descriptions", cmd_schema)
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
