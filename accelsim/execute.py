"""The functional, bit-accurate model: run a Graph on inputs with the kernels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from accelsim.errors import InputError, UnsupportedError
from accelsim.kernels import Accumulator
from accelsim.ops import REGISTRY, ExecConfig
from accelsim.workload.ir import Graph


def check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs named and shaped as the graph's (any batch size), converted to their dtypes."""
    missing = [n for n in graph.inputs if n not in inputs]
    if missing:
        raise InputError(f"{graph.source or graph.name}: missing input(s) {', '.join(missing)}")
    unknown = [n for n in inputs if n not in graph.inputs]
    if unknown:
        raise InputError(
            f"{graph.source or graph.name}: unknown input(s) {', '.join(unknown)}; "
            f"the graph's inputs are {', '.join(graph.inputs)}"
        )
    out = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        x = np.asarray(inputs[name])
        if x.ndim != len(t.shape) or tuple(x.shape[1:]) != tuple(t.shape[1:]):
            raise InputError(
                f"{graph.source or graph.name}: input {name} has shape {x.shape}, "
                f"expected (batch, {', '.join(map(str, t.shape[1:]))})"
            )
        if t.type.kind == "float":
            out[name] = x.astype(np.float32, copy=False)
        else:
            if not np.issubdtype(x.dtype, np.integer) or x.min(initial=t.type.min) < t.type.min or (
                x.max(initial=t.type.max) > t.type.max
            ):
                raise InputError(f"{graph.source or graph.name}: input {name} must be {t.type}")
            out[name] = x.astype(t.type.storage, copy=False)
    return out


def machine_accumulator(hw) -> Accumulator:
    """The PE accumulator a hardware description specifies."""
    return Accumulator(hw.pe_array.accumulator_bits, hw.pe_array.accumulator_overflow)


def execute(
    graph: Graph,
    inputs: Mapping[str, np.ndarray],
    accumulator: Accumulator | None = None,
    keep_intermediates: bool = False,
) -> dict[str, np.ndarray]:
    """Run `graph` and return its outputs by name (with intermediates too if asked)."""
    config = ExecConfig(accumulator or Accumulator())
    env: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    env.update(check_inputs(graph, inputs))
    for node in graph.nodes:
        op_class = REGISTRY.get(node.op)
        if op_class is None:
            raise UnsupportedError(f"{graph.source}: node {node.name}: no IR operator {node.op}")
        results = op_class(node, graph, config).run(*(env[i] for i in node.inputs))
        env.update(zip(node.outputs, results, strict=True))
    if keep_intermediates:
        return env
    return {name: env[name] for name in graph.outputs}
