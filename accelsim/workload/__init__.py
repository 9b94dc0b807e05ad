"""Workloads: the IR and its importers. `load_workload` picks the importer from the file."""

from __future__ import annotations

import os
from pathlib import Path

from accelsim.errors import WorkloadError
from accelsim.workload.ir import Graph

# A node of these domains (Brevitas's, FINN's, qonnx's) or ops makes a file QONNX, so that even a
# QONNX op accelsim lacks (FloatQuant, MultiThreshold) is named by the QONNX importer.
QONNX_DOMAINS = ("qonnx", "onnx.brevitas", "finn")
QONNX_OPS = ("Quant", "BipolarQuant", "IntQuant", "Trunc")


def load_workload(path: str | os.PathLike, seed: int = 0) -> Graph:
    """Load an ONNX (QOperator or QDQ), QONNX or SCALE-Sim CSV workload into the IR.

    `seed` draws the data of shape-only workloads (SCALE-Sim CSV)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from accelsim.workload.topology_csv import load_topology_csv

        return load_topology_csv(path, seed)
    if suffix == ".onnx":
        from accelsim.workload.onnx_import import OnnxLowering, read_model

        model = read_model(path)
        if any(n.domain.startswith(QONNX_DOMAINS) or n.op_type in QONNX_OPS
               for n in model.graph.node):
            try:
                from accelsim.workload.qonnx_import import lower_qonnx
            except ImportError:
                raise WorkloadError(f"{path}: QONNX graphs are not supported yet") from None
            return lower_qonnx(model, str(path))
        return OnnxLowering(model, str(path)).lower()
    raise WorkloadError(f"{path}: unknown workload format {suffix or '(no suffix)'}; "
                        "expected .onnx (ONNX/QONNX) or .csv (SCALE-Sim topology)")


__all__ = ["Graph", "load_workload"]
