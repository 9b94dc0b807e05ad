"""The IR's operators: one small class per operator, whose `run` is its exact integer semantics.

Modelled on onnx.reference.ops: an operator is constructed once per node (so it can prepare
constants, e.g. pack weights) and then `run` maps input arrays to output arrays. `shape` gives the
output shapes from the input shapes without running anything, for importers and the timing model.
Operators register themselves in REGISTRY under their IR op name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from accelsim.kernels import Accumulator
from accelsim.workload.ir import Graph, Node, Tensor


@dataclass(frozen=True)
class ExecConfig:
    """What the machine imposes on the arithmetic: the PE accumulator."""

    accumulator: Accumulator = field(default_factory=Accumulator)


class Op:
    op_type: ClassVar[str]

    def __init__(self, node: Node, graph: Graph, config: ExecConfig | None = None):
        self.node = node
        self.attrs: dict[str, Any] = node.attrs
        self.config = config or ExecConfig()
        self.in_tensors: list[Tensor] = [graph.tensors[n] for n in node.inputs]
        self.out_tensors: list[Tensor] = [graph.tensors[n] for n in node.outputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError(f"{self.op_type} has no run")

    @staticmethod
    def shape(attrs: dict[str, Any], *shapes: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Output shapes from input shapes (default: one output shaped like the first input)."""
        return [tuple(shapes[0])]


class QLinearOp(Op):
    """An onnxruntime quantized op whose float rounding depends on the zero points' values.

    On x86, onnxruntime turns every int8 QuantizeLinear -> DequantizeLinear pair into uint8
    (QDQS8ToU8Transformer) before it fuses a QDQ graph, so the fused op computes on values and
    zero points raised by 128, in uint8's range; the attribute `uint8_domain` says so. Subclasses
    give `compute(attrs, lo, hi, *xs)`, the saturated integer result for the given zero points.
    """

    zero_points: ClassVar[tuple[str, ...]]

    def compute(self, attrs: dict[str, Any], lo: int, hi: int, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        t = self.out_tensors[0].type
        if not self.attrs.get("uint8_domain"):
            return [self.compute(self.attrs, t.min, t.max, *xs).astype(t.storage)]
        attrs = dict(self.attrs, **{k: self.attrs[k] + 128 for k in self.zero_points})
        y = self.compute(attrs, 0, 255, *(x.astype(np.int16) + 128 for x in xs))
        return [(y - 128).astype(t.storage)]


REGISTRY: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    REGISTRY[cls.op_type] = cls
    return cls


def out_storage(op: Op, index: int = 0) -> np.dtype:
    return op.out_tensors[index].type.storage


from accelsim.ops import (  # noqa: E402,F401
    activation,
    affine,
    conv,
    elementwise,
    layout,
    matmul,
    pool,
    quantize,
)
