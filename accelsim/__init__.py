"""accelsim: a cycle-level, bit-accurate simulator of DNN accelerators for quantized networks.

The notebook API:
    hw = accelsim.load_hardware("hwconfigs/edge_int8_16x16.yaml",
                                **{"buffers.weights.voltage_v": 0.8})
    graph = accelsim.load_workload("workloads/digits_cnn_int8_qdq.onnx")
    outputs = accelsim.execute(graph, {"input": x})
    result = accelsim.simulate(hw, graph)          # cycles and stalls per layer
    print(result.totals.cycles, result.layers[0].stall_breakdown)
"""

from __future__ import annotations

from accelsim.errors import AccelsimError

__version__ = "0.1.0"


def load_hardware(source, overrides=None, **kw_overrides):
    """A validated Hardware from a YAML/SCALE-Sim .cfg path or a dict, with dotted overrides."""
    from accelsim.hardware import load_hardware as _load

    return _load(source, overrides, **kw_overrides)


def load_workload(path, seed: int = 0):
    """The integer IR of an ONNX (QOperator/QDQ), QONNX or SCALE-Sim CSV workload."""
    from accelsim.workload import load_workload as _load

    return _load(path, seed)


def execute(graph, inputs, accumulator=None):
    """Run the graph bit-accurately; returns its outputs by name, as onnxruntime would."""
    from accelsim.execute import execute as _execute

    return _execute(graph, inputs, accumulator)


def simulate(hw, graph, inputs=None, seed: int = 0):
    """Simulate a workload on a machine: a Result with cycles and stalls per layer and total.

    hw: a Hardware, a YAML/.cfg path or a dict; graph: a Graph or a workload path. With inputs,
    the graph also runs bit-accurately and `result.outputs` holds its outputs.
    """
    from accelsim.simulate import simulate as _simulate

    return _simulate(hw, graph, inputs, seed)


__all__ = ["AccelsimError", "execute", "load_hardware", "load_workload", "simulate",
           "__version__"]
