"""The workload IR: a DAG of integer operations over quantized tensors.

Every importer (ONNX QOperator, ONNX QDQ, QONNX, SCALE-Sim CSV) lowers its format to this IR, and
every later phase (execute, map, time, energy, faults) reads only this IR. The IR is plain data:
a `Graph` holds `Tensor`s by name and `Node`s in topological order.

Operators and their attributes (the executor's ops in accelsim/ops/ give the exact arithmetic):

    Conv        inputs x, w[, bias]     strides (sh, sw), pads (top, left, bottom, right),
                                         dilations (dh, dw), group, x_zero_point (int),
                                         w_zero_point (int64 array, one per output channel)
                output: the integer accumulator  sum((x - x_zp) * (w - w_zp)) + bias  (NCHW)
                Both operands bipolar -> the same sum over {-1, +1}, computed by xnor-popcount.
    MatMul      inputs a, b[, bias]     a_zero_point (int), b_zero_point (int64 array, one per
                                         column of b); a is (..., M, K), b is (K, N)
                output: the integer accumulator (..., M, N)
    Requantize  input acc               multiplier (float32 array, one per channel or one),
                                         axis (channel axis), zero_point (int)
                output: saturate(rint(float32(acc) * multiplier) + zero_point), as onnxruntime
    QuantizeLinear / DequantizeLinear   scale (float32 array), zero_point (int64 array), axis
    MaxPool     kernel_shape, strides, pads, dilations, ceil_mode
    AveragePool, GlobalAveragePool, Add, Mul, Concat: quantized forms, attrs hold the in/out
                scales and zero points (see accelsim/ops/)
    SumPool, IntegerAdd: exact integer window sums and shifted residual sums (QONNX graphs)
    FloatGlobalAveragePool  float32, in onnxruntime's summation order (nchwc: in order)
    FloatAveragePool  float32, AveragePool's attributes, in onnxruntime's summation orders
    FloatArithmetic   float32 Add or Mul (kind) with broadcasting
    Relu, Clip  integer bounds in the quantized domain: lo, hi
    BatchNormalization  float32 y = x * scale[c] + bias[c] (folded as onnxruntime folds them)
    Lookup      table: one output code per input code (8-bit input; y = table[x - min]), the
                quantized form of Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu
    Activation  function (one of those), its attributes: float32 -> float32 as onnxruntime's
                kernel (ops/activation.py)
    Softmax     quantized (onnxruntime's QLinearSoftmax): axis, opset (13: that axis; before: the
                axes from it on), x_scale, y_scale, y_zero_point, uint8_domain
    Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity: layout only
    Pad         pads (begins, then ends; negative crop), mode (constant, reflect, edge, wrap),
                value (the constant, in the tensor's domain)
    Resize      nearest only: scales, sizes (but the batch), transform, nearest_mode (ONNX names)
    Sign        to bipolar (+1 where x >= threshold, else -1)

A node's `layer` attribute (optional) names the network layer it belongs to, so that a Conv and
the Requantize that follows it are reported as one layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Kind = Literal["int", "bipolar", "float"]


@dataclass(frozen=True)
class ElemType:
    """A tensor's element type: a `bits`-bit integer, a bipolar {-1,+1} bit, or float32."""

    kind: Kind
    bits: int
    signed: bool = True

    @property
    def min(self) -> int:
        if self.kind == "bipolar":
            return -1
        if self.kind != "int":
            raise TypeError(f"{self} has no integer range")
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.kind == "bipolar":
            return 1
        if self.kind != "int":
            raise TypeError(f"{self} has no integer range")
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype that holds values of this type in the executor."""
        if self.kind == "float":
            return np.dtype(np.float32)
        if self.kind == "bipolar":
            return np.dtype(np.int8)
        for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64):
            info = np.iinfo(dt)
            if info.min <= self.min and self.max <= info.max:
                return np.dtype(dt)
        raise TypeError(f"no storage for {self}")

    def __str__(self) -> str:
        if self.kind == "float":
            return "float32"
        if self.kind == "bipolar":
            return "bipolar"
        return f"{'int' if self.signed else 'uint'}{self.bits}"


def int_type(bits: int, signed: bool) -> ElemType:
    return ElemType("int", bits, signed)


BIPOLAR = ElemType("bipolar", 1, True)
FLOAT32 = ElemType("float", 32, True)
INT32 = int_type(32, True)
INT8 = int_type(8, True)
UINT8 = int_type(8, False)

_NUMPY_TO_ELEM = {
    np.dtype(np.int8): INT8,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int16): int_type(16, True),
    np.dtype(np.uint16): int_type(16, False),
    np.dtype(np.int32): INT32,
    np.dtype(np.float32): FLOAT32,
}


def elem_type_of(dtype: np.dtype) -> ElemType:
    """The IR type of a numpy dtype (int8, uint8, int16, uint16, int32, float32)."""
    try:
        return _NUMPY_TO_ELEM[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"unsupported dtype {dtype}") from None


@dataclass(frozen=True, eq=False)
class Quant:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel (axis)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: ElemType
    quant: Quant | None = None
    data: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(eq=False)
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.attrs.get("layer", self.name)


@dataclass(eq=False)
class Graph:
    name: str
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    source: str = ""

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def producer(self, tensor_name: str) -> Node | None:
        for node in self.nodes:
            if tensor_name in node.outputs:
                return node
        return None

    def consumers(self, tensor_name: str) -> list[Node]:
        return [n for n in self.nodes if tensor_name in n.inputs]

    @property
    def compute_nodes(self) -> list[Node]:
        """The nodes that run on the PE array (convolutions, matrix products)."""
        return [n for n in self.nodes if n.op in COMPUTE_OPS]


COMPUTE_OPS = frozenset({"Conv", "MatMul"})


def macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of a compute node: output elements x reduction length."""
    out = graph.tensors[node.outputs[0]]
    w = graph.tensors[node.inputs[1]]
    if node.op == "Conv":
        # w is (O, C/group, kh, kw): each output element reduces over C/group * kh * kw.
        return out.size * int(np.prod(w.shape[1:]))
    if node.op == "MatMul":
        return out.size * w.shape[0]
    return 0
