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

__version__ = "0.1.0"

# Imported here, not lazily: a lazy `from accelsim.simulate import ...` inside a function would
# rebind the package attribute `simulate` (or `execute`) to the submodule of the same name.
from accelsim.errors import AccelsimError  # noqa: E402
from accelsim.execute import execute  # noqa: E402
from accelsim.hardware import load_hardware  # noqa: E402
from accelsim.simulate import simulate  # noqa: E402
from accelsim.sweep import load_sweep  # noqa: E402
from accelsim.workload import load_workload  # noqa: E402

__all__ = ["AccelsimError", "execute", "load_hardware", "load_sweep", "load_workload", "simulate",
           "__version__"]
