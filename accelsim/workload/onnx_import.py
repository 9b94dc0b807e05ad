"""ONNX importer: QOperator graphs (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, QGemm,
QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearConcat, ...) and QDQ graphs (as written by
onnxruntime.quantization.quantize_static) lowered to the integer IR.

QDQ graphs are lowered the way onnxruntime's QDQ transformer fuses them, so that both forms of the
same network give the same IR: DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear becomes
Conv/MatMul + Requantize (as QLinearConv), DQ -> Add/Mul -> Q becomes the quantized Add/Mul,
DQ -> MaxPool/Reshape/... -> Q with equal parameters runs on the integers directly, and so on.
Each ONNX op has one small handler below; anything else is rejected naming the node and what it
would need.

In int8 QDQ graphs onnxruntime (x86) first turns Q -> DQ pairs into uint8, but not those of a
tensor several nodes read (OnnxLowering.s8_to_u8_pairs); a node unit whose inputs and output then
differ in type stays unfused, in float (OnnxLowering.qdq_domain). accelsim follows it: such an
Add, Mul, GlobalAveragePool or AveragePool runs in float32 as onnxruntime's kernels, a Softmax is
rejected, and a Conv/MatMul/Gemm keeps its integer form (onnxruntime convolves the dequantized
floats: one step apart where its float rounding crosses a tie, rarely).

Constant int4/uint4 weights (quantize_static's QInt4/QUInt4) are lowered like 8-bit ones, to the
integer Conv/MatMul + Requantize an int4 machine computes. onnxruntime has no integer kernel for
them: it convolves the dequantized floats in float32 (and may then leave a neighbouring Add
unfused, in float), so its result can differ from accelsim's by one quantization step where its
float rounding crosses a rounding tie (none on the bundled digits network's 450 test images, one
element in about 60 random small networks).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from accelsim.errors import UnsupportedError, WorkloadError
from accelsim.ops import REGISTRY
from accelsim.ops.activation import FLOAT_FUNCTIONS, lookup_table
from accelsim.ops.pool import has_empty_windows
from accelsim.ops.quantize import channel_view, dequantize, quantize, requant_multiplier
from accelsim.workload.ir import (
    FLOAT32,
    INT8,
    INT32,
    ElemType,
    Graph,
    Node,
    Quant,
    Tensor,
    int_type,
)

MAX_DIM = 1 << 31

_ONNX_INT_TYPES = {
    onnx.TensorProto.INT8: int_type(8, True),
    onnx.TensorProto.UINT8: int_type(8, False),
    onnx.TensorProto.INT16: int_type(16, True),
    onnx.TensorProto.UINT16: int_type(16, False),
    onnx.TensorProto.INT32: INT32,
    onnx.TensorProto.INT4: int_type(4, True),
    onnx.TensorProto.UINT4: int_type(4, False),
}


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and check an ONNX file; every failure is one WorkloadError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for truncated or garbage files
        raise WorkloadError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise WorkloadError(f"{path}: the ONNX graph has no nodes (empty or truncated file?)")
    folder = path.parent.resolve()
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in init.external_data}.get("location", "")
        target = (folder / location).resolve()
        if folder not in target.parents:
            raise WorkloadError(
                f"{path}: initializer {init.name}: external data {location!r} lies outside "
                "the model's folder"
            )
        if not target.is_file():
            raise WorkloadError(
                f"{path}: initializer {init.name}: external file {location} missing"
            )
    from accelsim.workload.qonnx_import import declare_domains  # QONNX: no import cycle

    declare_domains(model)
    try:
        onnx.load_external_data_for_model(model, str(folder))
        onnx.checker.check_model(model)
    except Exception as e:
        raise WorkloadError(f"{path}: invalid ONNX model: {str(e).splitlines()[0]}") from None
    name_nodes(model)
    return model


def name_nodes(model: onnx.ModelProto) -> None:
    """ONNX lets nodes go unnamed (or share a name), but a layer is known by its node's name
    (in the tables, in layer_voltage_v): such a node is named OpType_INDEX, its place in the
    graph, as qonnx's GiveUniqueNodeNames does."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
        seen.add(node.name)


def load_onnx(path: str | os.PathLike) -> Graph:
    model = read_model(path)
    return OnnxLowering(model, str(path)).lower()


@dataclass
class DQValue:
    """A float ONNX value that is the dequantization of an integer IR tensor."""

    int_name: str
    quant: Quant


class OnnxLowering:
    """Walks the ONNX graph once, in order, emitting IR nodes."""

    def __init__(self, model: onnx.ModelProto, source: str):
        self.model = model
        self.source = source
        self.consts: dict[str, np.ndarray] = {}
        self.dq: dict[str, DQValue] = {}
        self.alias: dict[str, str] = {}  # ONNX value name -> IR tensor name
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.consumed: set[int] = set()
        self.onnx_nodes = list(model.graph.node)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.onnx_nodes):
            for name in n.input:
                self.consumers.setdefault(name, []).append(i)
        self.graph_outputs = [o.name for o in model.graph.output]

    # ----- helpers -------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.source}: node {node.name or '?'} ({node.op_type}): {why}")

    def const(self, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.fail(node, f"{what} ({name}) must be a constant initializer")
        return self.consts[name]

    def opt_const(self, node, index: int, what: str) -> np.ndarray | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.const(node, node.input[index], what)

    def ir(self, onnx_name: str) -> str:
        return self.alias.get(onnx_name, onnx_name)

    def value(self, node: onnx.NodeProto, onnx_name: str) -> str:
        """The IR tensor of an integer operand: a produced tensor, or an initializer (a quantized
        constant operand of QLinearAdd, QLinearConcat, ...) as a constant tensor."""
        name = self.ir(onnx_name)
        if name in self.tensors:
            return name
        if onnx_name in self.consts:
            etype = _ONNX_INT_TYPES.get(self.initializer_types[onnx_name])
            if etype is None:
                raise self.fail(node, f"constant {onnx_name} must be an integer tensor")
            return self.const_tensor(onnx_name, self.consts[onnx_name].astype(etype.storage),
                                     etype)
        raise self.fail(node, f"input {onnx_name} is not produced by any node")

    def add_tensor(self, name: str, shape, etype: ElemType, quant=None, data=None) -> str:
        shape = tuple(int(d) for d in shape)
        if any(d < 0 or d > MAX_DIM for d in shape):
            raise WorkloadError(f"{self.source}: tensor {name} has an invalid shape {shape}")
        self.tensors[name] = Tensor(name, shape, etype, quant, data)
        return name

    def const_tensor(self, name: str, data: np.ndarray, etype: ElemType, quant=None) -> str:
        if name not in self.tensors:
            self.add_tensor(name, data.shape, etype, quant, data)
        return name

    def emit(self, op: str, name: str, inputs: list[str], out: str, etype: ElemType,
             quant: Quant | None = None, **attrs) -> str:
        """Append an IR node; its output shape comes from the operator's own shape rule."""
        in_shapes = [self.tensors[i].shape for i in inputs]
        (shape,) = REGISTRY[op].shape(attrs, *in_shapes)
        self.add_tensor(out, shape, etype, quant)
        self.nodes.append(Node(name, op, inputs, [out], attrs))
        return out

    def sole_q_consumer(self, value: str) -> tuple[int, onnx.NodeProto] | None:
        """The QuantizeLinear that alone consumes `value` (a fused QDQ pattern's end)."""
        users = self.consumers.get(value, [])
        if len(users) == 1 and value not in self.graph_outputs:
            node = self.onnx_nodes[users[0]]
            if node.op_type == "QuantizeLinear":
                return users[0], node
        return None

    def qparams(self, node, scale_name: str, zp_name: str | None, axis=None) -> Quant:
        scale = np.asarray(self.const(node, scale_name, "scale"), np.float32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise WorkloadError(
                f"{self.source}: node {node.name} ({node.op_type}): scale {scale_name} must be "
                "finite and positive"
            )
        zp = (
            np.asarray(self.consts[zp_name]).astype(np.int64)
            if zp_name and zp_name in self.consts
            else np.zeros(1, np.int64)
        )
        return Quant(scale.reshape(-1), zp.reshape(-1), axis)

    def zp_type(self, node, zp_name: str | None, default=onnx.TensorProto.UINT8) -> ElemType:
        if zp_name:
            init = self.initializer_types.get(zp_name)
            if init is None:
                raise self.fail(node, f"zero point {zp_name} must be a constant initializer")
            etype = _ONNX_INT_TYPES.get(init)
            if etype is None:
                raise self.fail(node, f"zero point type {onnx.TensorProto.DataType.Name(init)}")
            return etype
        return _ONNX_INT_TYPES[default]

    # ----- the walk ------------------------------------------------------------------------
    def lower(self) -> Graph:
        g = self.model.graph
        self.initializer_types: dict[str, int] = {}
        for init in g.initializer:
            self.initializer_types[init.name] = init.data_type
            self.consts[init.name] = numpy_helper.to_array(init)
        for i, node in enumerate(self.onnx_nodes):
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
                self.initializer_types[node.output[0]] = node.attribute[0].t.data_type
                self.consumed.add(i)
        self.u8_pairs = self.s8_to_u8_pairs()
        if not any(n.op_type in QUANTIZED_OPS for n in self.onnx_nodes):
            raise UnsupportedError(
                f"{self.source}: the graph has no quantized operators; accelsim runs integer "
                "networks: quantize it first (onnxruntime.quantization.quantize_static in QDQ or "
                "QOperator format, or Brevitas -> QONNX)"
            )
        inputs = []
        for vi in g.input:
            if vi.name in self.consts:
                continue
            inputs.append(self.add_graph_input(vi))
        self.model_inputs = set(inputs)
        for i, node in enumerate(self.onnx_nodes):
            if i in self.consumed:
                continue
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise self.fail(node, "operator not supported by accelsim; supported: "
                                + ", ".join(sorted(HANDLERS)))
            handler(self, i, node)
        outputs = [self.materialize(o.name) for o in g.output]
        return Graph(g.name or Path(self.source).stem, self.tensors, self.nodes, inputs, outputs,
                     self.source)

    def s8_to_u8_pairs(self) -> set[str]:
        """The values of the int8 Q -> DQ pairs that onnxruntime turns into uint8 before it fuses
        a QDQ graph (x86, QDQS8ToU8Transformer): a Q read by one DQ alone, with equal scalar
        int8 zero points, and that DQ read once (onnxruntime first gives each further reader of
        a DQ, a graph output too, its own copy, and a Q read by several DQs stays int8)."""
        producers = {o: n for n in self.onnx_nodes for o in n.output}
        pairs = set()
        for dq in self.onnx_nodes:
            q = producers.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or q.output[0] in self.graph_outputs:
                continue
            readers = len(self.consumers.get(dq.output[0], [])) + (
                dq.output[0] in self.graph_outputs)
            if len(self.consumers.get(q.output[0], [])) != 1 or readers > 1:
                continue
            zps = [n.input[2] if len(n.input) > 2 else "" for n in (q, dq)]
            if all(self.initializer_types.get(z) == onnx.TensorProto.INT8
                   and self.consts[z].size == 1 for z in zps) and (
                    self.consts[zps[0]].item() == self.consts[zps[1]].item()):
                pairs |= {q.output[0], dq.output[0]}
        return pairs

    def qdq_domain(self, node: onnx.NodeProto, inputs: list[str], q: onnx.NodeProto,
                   y_type: ElemType) -> bool | None:
        """How onnxruntime runs the node unit DQ(inputs) -> node -> Q: None when it leaves it
        unfused, in float (its 8-bit inputs and output differ in type once int8 pairs are
        turned into uint8), else whether it computes an int8 unit in uint8."""
        kinds = set()
        for name, etype in [(n, self.tensors[self.dq[n].int_name].type) for n in inputs] + [
                (q.output[0], y_type)]:
            if etype.bits == 8:
                kinds.add(not etype.signed or name in self.u8_pairs)
        if len(kinds) > 1:
            return None
        return y_type == INT8 and kinds == {True}

    def add_graph_input(self, vi: onnx.ValueInfoProto) -> str:
        tt = vi.type.tensor_type
        dims = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else 1)
        if tt.elem_type == onnx.TensorProto.FLOAT:
            etype = FLOAT32
        elif tt.elem_type in _ONNX_INT_TYPES:
            etype = _ONNX_INT_TYPES[tt.elem_type]
        else:
            raise UnsupportedError(
                f"{self.source}: input {vi.name}: element type "
                f"{onnx.TensorProto.DataType.Name(tt.elem_type)} not supported"
            )
        return self.add_tensor(vi.name, dims, etype)

    def materialize(self, onnx_name: str) -> str:
        """The IR tensor for an ONNX value; a pending dequantization becomes a real node."""
        if onnx_name in self.alias or onnx_name in self.tensors:
            return self.ir(onnx_name)
        if onnx_name in self.dq:
            d = self.dq[onnx_name]
            src = self.tensors[d.int_name]
            self.emit("DequantizeLinear", f"{onnx_name}_dq", [d.int_name], onnx_name, FLOAT32,
                      scale=d.quant.scale, zero_point=d.quant.zero_point,
                      axis=d.quant.axis if src.shape else None)
            return onnx_name
        raise WorkloadError(f"{self.source}: value {onnx_name} is used before it is produced")


# ----- handlers: one per ONNX operator --------------------------------------------------------
Handler = Callable[[OnnxLowering, int, onnx.NodeProto], None]
HANDLERS: dict[str, Handler] = {}
QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
    "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
    "QLinearConcat", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
}


def handles(*op_types: str):
    def deco(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn
    return deco


def attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def explicit_pads(low: OnnxLowering, node, a: dict, in_hw, kernel) -> tuple[int, ...]:
    """The 2-D pads (top, left, bottom, right), also those auto_pad stands for: VALID none;
    SAME_UPPER / SAME_LOWER as many as make the output ceil(input / stride), the odd one at the
    end / the start (the ONNX rule)."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "NOTSET":
        return tuple(int(p) for p in a.get("pads", (0, 0, 0, 0)))
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER") or in_hw is None:
        raise low.fail(node, f"auto_pad {auto} is not supported; export with explicit pads")
    head, tail = [], []
    for n, k, s, d in zip(in_hw, kernel, a.get("strides", (1, 1)), a.get("dilations", (1, 1)),
                          strict=True):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        head.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        tail.append(total - head[-1])
    return (*head, *tail)


def conv_attrs(low: OnnxLowering, node, w_shape, x_shape=None) -> dict:
    """A 2-D Conv's attributes; auto_pad needs the input's shape `x_shape`."""
    a = attrs_of(node)
    if len(w_shape) != 4:
        raise low.fail(node, f"only 2-D convolutions are supported (weights {tuple(w_shape)})")
    return dict(
        strides=tuple(a.get("strides", (1, 1))),
        pads=explicit_pads(low, node, a, None if x_shape is None else x_shape[2:], w_shape[2:]),
        dilations=tuple(a.get("dilations", (1, 1))),
        group=int(a.get("group", 1)),
    )


def weight_tensor(low: OnnxLowering, name: str, data: np.ndarray, etype: ElemType, quant) -> str:
    return low.const_tensor(name, np.ascontiguousarray(data).astype(etype.storage), etype, quant)


def per_channel(zp: np.ndarray, n: int) -> np.ndarray:
    zp = np.asarray(zp, np.int64).reshape(-1)
    return np.broadcast_to(zp, (n,)).copy() if zp.size == 1 else zp


def emit_conv(low, node, x: str, w_name: str, w: np.ndarray, w_type, w_quant, bias, out: str,
              x_zp: int, attrs: dict) -> str:
    inputs = [x, weight_tensor(low, w_name, w, w_type, w_quant)]
    if bias is not None:
        inputs.append(low.const_tensor(f"{node.name}_bias", bias.astype(np.int32), INT32))
    return low.emit("Conv", node.name, inputs, out, INT32, x_zero_point=x_zp,
                    w_zero_point=per_channel(w_quant.zero_point, w.shape[0]), **attrs)


def emit_matmul(low, node, a: str, b_name: str, b: np.ndarray, b_type, b_quant, bias, out: str,
                a_zp: int) -> str:
    inputs = [a, weight_tensor(low, b_name, b, b_type, b_quant)]
    if bias is not None:
        inputs.append(low.const_tensor(f"{node.name}_bias", bias.reshape(-1).astype(np.int32),
                                       INT32))
    return low.emit("MatMul", node.name, inputs, out, INT32, a_zero_point=a_zp,
                    b_zero_point=per_channel(b_quant.zero_point, b.shape[-1]))


def emit_requantize(low, node, acc: str, out: str, multiplier, y_quant: Quant, y_type, axis):
    return low.emit("Requantize", f"{node.name}_requant", [acc], out, y_type, y_quant,
                    multiplier=multiplier, axis=axis, zero_point=int(y_quant.zero_point[0]),
                    layer=node.name)


def same_quant(a: Quant, b: Quant) -> bool:
    return np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point)


def linear_params(low: OnnxLowering, node, with_axis: bool = False) -> tuple[Quant, str | None]:
    """A QuantizeLinear's or DequantizeLinear's scale and zero point, and the zero point's name."""
    a = attrs_of(node)
    if a.get("block_size", 0):
        raise low.fail(node, "blocked quantization (block_size) is not supported")
    zp_name = node.input[2] if len(node.input) > 2 else None
    quant = low.qparams(node, node.input[1], zp_name, a.get("axis", 1) if with_axis else None)
    return quant, zp_name


def identical_q(low: OnnxLowering, value: str, d: DQValue) -> tuple[int, onnx.NodeProto] | None:
    """The sole QuantizeLinear of `value` when it has d's parameters and type: Q(op(DQ(x)))
    then stays on the integers."""
    found = low.sole_q_consumer(value)
    if found is None:
        return None
    quant, zp_name = linear_params(low, found[1])
    same_type = low.zp_type(found[1], zp_name) == low.tensors[d.int_name].type
    return found if same_type and same_quant(quant, d.quant) else None


@handles("QuantizeLinear")
def quantize_linear(low: OnnxLowering, i: int, node) -> None:
    quant, zp_name = linear_params(low, node, with_axis=True)
    etype = low.zp_type(node, zp_name)
    if etype.bits < 8:
        raise low.fail(node, f"{etype} outputs are not supported (8- and 16-bit only)")
    d = low.dq.get(node.input[0])
    if d is not None and same_quant(d.quant, quant) and low.tensors[d.int_name].type == etype:
        low.alias[node.output[0]] = d.int_name  # Q(DQ(x)) with the same parameters is x
        return
    x = low.materialize(node.input[0])
    low.emit("QuantizeLinear", node.name, [x], node.output[0], etype, quant,
             scale=quant.scale, zero_point=quant.zero_point, axis=quant.axis)


@handles("DequantizeLinear")
def dequantize_linear(low: OnnxLowering, i: int, node) -> None:
    """Pending: consumers that fuse read the integers; others materialize a real node. Sub-byte
    (int4) data only as constant weights."""
    quant, zp_name = linear_params(low, node, with_axis=True)
    src = node.input[0]
    if src in low.consts:
        etype = low.zp_type(node, zp_name, low.initializer_types[src])
        low.const_tensor(src, low.consts[src].astype(etype.storage), etype, quant)
    elif low.ir(src) not in low.tensors:
        raise low.fail(node, f"input {src} is not produced by any node")
    else:
        etype = low.tensors[low.ir(src)].type
        if etype.bits < 8:
            raise low.fail(node, f"{etype} inputs are not supported (8- to 32-bit only)")
    low.dq[node.output[0]] = DQValue(low.ir(src), quant)


def dq_input(low: OnnxLowering, node, name: str) -> DQValue:
    d = low.dq.get(name)
    if d is None:
        raise low.fail(node, f"input {name} is float, not the output of a DequantizeLinear; "
                             "accelsim needs every operand of a compute node quantized")
    return d


def fused_output(low: OnnxLowering, i: int, node) -> tuple[onnx.NodeProto, Quant, ElemType]:
    """The QuantizeLinear closing a DQ -> op -> Q pattern, consumed here."""
    found = low.sole_q_consumer(node.output[0])
    if found is None:
        raise low.fail(node, "its float output is not requantized by a single QuantizeLinear; "
                             "accelsim needs integer outputs (quantize the whole graph)")
    qi, q = found
    low.consumed.add(qi)
    quant, zp_name = linear_params(low, q)
    return q, quant, low.zp_type(q, zp_name)


def const_operand(low, node, d: DQValue) -> tuple[np.ndarray, ElemType, Quant]:
    t = low.tensors[d.int_name]
    if not t.is_const:
        raise low.fail(node, f"weights {d.int_name} must be constant")
    return t.data, t.type, d.quant


def bias_of_dq(low, node, name: str | None) -> np.ndarray | None:
    if not name:
        return None
    d = low.dq.get(name)
    if d is None or not low.tensors[d.int_name].is_const:
        raise low.fail(node, "bias must be an int32 initializer behind a DequantizeLinear")
    return low.tensors[d.int_name].data


@handles("Conv")
def qdq_conv(low: OnnxLowering, i: int, node) -> None:
    x, w = dq_input(low, node, node.input[0]), dq_input(low, node, node.input[1])
    w_data, w_type, w_quant = const_operand(low, node, w)
    bias = bias_of_dq(low, node, node.input[2] if len(node.input) > 2 else None)
    q, y_quant, y_type = fused_output(low, i, node)
    acc = emit_conv(low, node, x.int_name, w.int_name, w_data, w_type, w_quant, bias,
                    f"{node.output[0]}_acc", int(x.quant.zero_point[0]),
                    conv_attrs(low, node, w_data.shape, low.tensors[x.int_name].shape))
    m = requant_multiplier(x.quant.scale, w_quant.scale, y_quant.scale)
    emit_requantize(low, node, acc, q.output[0], m, y_quant, y_type, axis=1)


@handles("MatMul", "Gemm")
def qdq_matmul(low: OnnxLowering, i: int, node) -> None:
    a_attrs = attrs_of(node)
    if a_attrs.get("transA", 0) or a_attrs.get("alpha", 1.0) != 1.0 or (
        a_attrs.get("beta", 1.0) != 1.0
    ):
        raise low.fail(node, "only Gemm with transA=0, alpha=1, beta=1 is supported")
    a, b = dq_input(low, node, node.input[0]), dq_input(low, node, node.input[1])
    b_data, b_type, b_quant = const_operand(low, node, b)
    if a_attrs.get("transB", 0):
        b_data = b_data.T
    bias = bias_of_dq(low, node, node.input[2] if len(node.input) > 2 else None)
    q, y_quant, y_type = fused_output(low, i, node)
    b_name = f"{b.int_name}_T" if a_attrs.get("transB", 0) else b.int_name
    acc = emit_matmul(low, node, a.int_name, b_name, b_data, b_type, b_quant, bias,
                      f"{node.output[0]}_acc", int(a.quant.zero_point[0]))
    m = requant_multiplier(a.quant.scale, b_quant.scale, y_quant.scale)
    emit_requantize(low, node, acc, q.output[0], m, y_quant, y_type, axis=-1)


@handles("QLinearConv")
def qlinear_conv(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (9 - len(node.input))
    x = low.value(node, inp[0])
    x_quant = low.qparams(node, inp[1], inp[2])
    w_data = low.const(node, inp[3], "weights")
    w_quant = low.qparams(node, inp[4], inp[5], 0)
    y_quant = low.qparams(node, inp[6], inp[7])
    bias = low.opt_const(node, 8, "bias")
    w_type = low.zp_type(node, inp[5])
    acc = emit_conv(low, node, x, inp[3], w_data, w_type, w_quant, bias,
                    f"{node.output[0]}_acc", int(x_quant.zero_point[0]),
                    conv_attrs(low, node, w_data.shape, low.tensors[x].shape))
    m = requant_multiplier(x_quant.scale, w_quant.scale, y_quant.scale)
    emit_requantize(low, node, acc, node.output[0], m, y_quant, low.zp_type(node, inp[7]), 1)


@handles("ConvInteger")
def conv_integer(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (4 - len(node.input))
    w_data = low.const(node, inp[1], "weights")
    x_zp = low.opt_const(node, 2, "x zero point")
    w_zp = low.opt_const(node, 3, "w zero point")
    w_type = _ONNX_INT_TYPES[low.initializer_types[inp[1]]]
    w_quant = Quant(np.ones(1, np.float32),
                    np.zeros(1, np.int64) if w_zp is None else w_zp.astype(np.int64).reshape(-1))
    x = low.value(node, inp[0])
    emit_conv(low, node, x, inp[1], w_data, w_type, w_quant, None,
              node.output[0], 0 if x_zp is None else int(np.asarray(x_zp).reshape(-1)[0]),
              conv_attrs(low, node, w_data.shape, low.tensors[x].shape))


@handles("QLinearMatMul")
def qlinear_matmul(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input)
    a_quant = low.qparams(node, inp[1], inp[2])
    b_data = low.const(node, inp[3], "weights")
    if b_data.ndim != 2:
        raise low.fail(node, "only a 2-D constant B is supported")
    b_quant = low.qparams(node, inp[4], inp[5], 1)
    y_quant = low.qparams(node, inp[6], inp[7])
    acc = emit_matmul(low, node, low.value(node, inp[0]), inp[3], b_data, low.zp_type(node, inp[5]),
                      b_quant, None, f"{node.output[0]}_acc", int(a_quant.zero_point[0]))
    m = requant_multiplier(a_quant.scale, b_quant.scale, y_quant.scale)
    emit_requantize(low, node, acc, node.output[0], m, y_quant, low.zp_type(node, inp[7]), -1)


@handles("MatMulInteger")
def matmul_integer(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (4 - len(node.input))
    b_data = low.const(node, inp[1], "B")
    if b_data.ndim != 2:
        raise low.fail(node, "only a 2-D constant B is supported")
    a_zp = low.opt_const(node, 2, "a zero point")
    b_zp = low.opt_const(node, 3, "b zero point")
    b_type = _ONNX_INT_TYPES[low.initializer_types[inp[1]]]
    b_quant = Quant(np.ones(1, np.float32),
                    np.zeros(1, np.int64) if b_zp is None else b_zp.astype(np.int64).reshape(-1))
    emit_matmul(low, node, low.value(node, inp[0]), inp[1], b_data, b_type, b_quant, None,
                node.output[0], 0 if a_zp is None else int(np.asarray(a_zp).reshape(-1)[0]))


@handles("QGemm")
def qgemm(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (9 - len(node.input))
    a = attrs_of(node)
    if a.get("transA", 0):
        raise low.fail(node, "transA=1 is not supported")
    if not inp[7]:
        raise low.fail(node, "QGemm with float output (no y_scale) is not supported")
    a_quant = low.qparams(node, inp[1], inp[2])
    b_data = low.const(node, inp[3], "B")
    b_name = inp[3]
    if a.get("transB", 0):
        b_data, b_name = b_data.T, f"{inp[3]}_T"
    b_quant = low.qparams(node, inp[4], inp[5], 1)
    bias = low.opt_const(node, 6, "C")
    y_quant = low.qparams(node, inp[7], inp[8])
    acc = emit_matmul(low, node, low.value(node, inp[0]), b_name, b_data, low.zp_type(node, inp[5]),
                      b_quant, bias, f"{node.output[0]}_acc", int(a_quant.zero_point[0]))
    alpha = np.float32(a.get("alpha", 1.0))
    m = requant_multiplier(alpha * np.float32(a_quant.scale[0]), b_quant.scale, y_quant.scale)
    emit_requantize(low, node, acc, node.output[0], m, y_quant, low.zp_type(node, inp[8]), -1)


def binary_attrs(low: OnnxLowering, node, qa: Quant, qb: Quant, qc: Quant, c_type) -> dict:
    """The quantized Add's or Mul's attributes; onnxruntime has QLinearAdd and QLinearMul for
    8-bit per-tensor quantization only."""
    if c_type.bits != 8 or any(q.scale.size != 1 for q in (qa, qb, qc)):
        raise low.fail(node, "only 8-bit per-tensor quantized operands are supported "
                             "(as onnxruntime)")
    return dict(a_scale=float(qa.scale[0]), a_zero_point=int(qa.zero_point[0]),
                b_scale=float(qb.scale[0]), b_zero_point=int(qb.zero_point[0]),
                c_scale=float(qc.scale[0]), c_zero_point=int(qc.zero_point[0]))


@handles("QLinearAdd", "QLinearMul")
def qlinear_binary(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input)
    qa, qb, qc = (low.qparams(node, inp[k], inp[k + 1]) for k in (1, 4, 6))
    c_type = low.zp_type(node, inp[7])
    low.emit(node.op_type.removeprefix("QLinear"), node.name,
             [low.value(node, inp[0]), low.value(node, inp[3])],
             node.output[0], c_type, qc, **binary_attrs(low, node, qa, qb, qc, c_type))


@handles("Add", "Mul")
def qdq_binary(low: OnnxLowering, i: int, node) -> None:
    """onnxruntime fuses DQ -> Add/Mul -> Q into QLinearAdd/QLinearMul; where it does not (the
    types differ, see qdq_domain; no single Q follows; float operands) it adds or multiplies
    the floats, one float32 rounding, and so does accelsim."""
    found = low.sole_q_consumer(node.output[0])
    if found is not None and all(n in low.dq for n in node.input[:2]):
        quant, zp_name = linear_params(low, found[1])
        c_type = low.zp_type(found[1], zp_name)
        domain = low.qdq_domain(node, list(node.input[:2]), found[1], c_type)
        if domain is not None:
            a, b = low.dq[node.input[0]], low.dq[node.input[1]]
            low.consumed.add(found[0])
            low.emit(node.op_type, node.name, [a.int_name, b.int_name], found[1].output[0],
                     c_type, quant, uint8_domain=domain,
                     **binary_attrs(low, node, a.quant, b.quant, quant, c_type))
            return
    xs = [low.materialize(n) for n in node.input[:2]]
    if any(low.tensors[x].type.kind != "float" for x in xs):
        raise low.fail(node, "an operand is an integer tensor without quantization parameters")
    low.emit("FloatArithmetic", node.name, xs, node.output[0], FLOAT32, kind=node.op_type)


def emit_global_pool(low, node, x: str, x_quant: Quant, y_quant: Quant, y_type, out: str,
                     uint8_domain: bool = False):
    """onnxruntime's QLinearGlobalAveragePool (the same in either domain)."""
    shape = low.tensors[x].shape
    n = int(np.prod(shape[2:]))
    acc = low.emit("GlobalAveragePool", node.name, [x], f"{out}_acc", INT32,
                   x_zero_point=int(x_quant.zero_point[0]))
    # MLAS: scale = x_scale / (y_scale * float(image_size)), in float32.
    m = np.float32(x_quant.scale[0]) / (np.float32(y_quant.scale[0]) * np.float32(n))
    emit_requantize(low, node, acc, out, np.asarray([m], np.float32), y_quant, y_type, 1)


def emit_average_pool(low, node, x: str, x_quant: Quant, y_quant: Quant, y_type, out: str,
                      uint8_domain: bool = False):
    """onnxruntime's QLinearAveragePool: a window covering the whole unpadded input takes its
    global-pool path (integer sum, then requantize), any other the float32 window average (in
    uint8 for int8 QDQ graphs, see QLinearOp)."""
    if any(q.scale.size != 1 for q in (x_quant, y_quant)):
        raise low.fail(node, "per-channel quantization is not supported")
    attrs = average_pool_attrs(low, node, low.tensors[x].shape)
    if attrs["kernel_shape"] == tuple(low.tensors[x].shape[2:]) and not any(attrs["pads"]):
        emit_global_pool(low, node, x, x_quant, y_quant, y_type, out)
        return
    low.emit("AveragePool", node.name, [x], out, y_type, y_quant, **attrs,
             x_scale=float(x_quant.scale[0]), x_zero_point=int(x_quant.zero_point[0]),
             y_scale=float(y_quant.scale[0]), y_zero_point=int(y_quant.zero_point[0]),
             uint8_domain=uint8_domain)


def average_pool_attrs(low: OnnxLowering, node, shape) -> dict:
    a = attrs_of(node)
    if len(shape) != 4:
        raise low.fail(node, "only 2-D AveragePool is supported")
    if any(d != 1 for d in a.get("dilations", (1, 1))):
        raise low.fail(node, "dilations are not supported")
    kernel = tuple(a["kernel_shape"])
    return dict(kernel_shape=kernel, strides=tuple(a.get("strides", (1, 1))),
                pads=explicit_pads(low, node, a, shape[2:], kernel),
                ceil_mode=bool(a.get("ceil_mode", 0)),
                count_include_pad=bool(a.get("count_include_pad", 0)))


POOLS = {"GlobalAveragePool": emit_global_pool, "AveragePool": emit_average_pool}


@handles("QLinearGlobalAveragePool", "QLinearAveragePool")
def qlinear_pool(low: OnnxLowering, i: int, node) -> None:
    if attrs_of(node).get("channels_last", 0):
        raise low.fail(node, "channels_last=1 is not supported")
    inp = list(node.input) + [""] * (5 - len(node.input))
    POOLS[node.op_type.removeprefix("QLinear")](
        low, node, low.value(node, inp[0]), low.qparams(node, inp[1], inp[2]),
        low.qparams(node, inp[3], inp[4]), low.zp_type(node, inp[4]), node.output[0])


UNFUSED = ("onnxruntime runs it in float32, unfused, which accelsim does not model: once it has "
           "turned int8 Q/DQ pairs into uint8 (not those of a tensor several nodes read), its "
           "input and output differ in type; quantize with uint8 activations (QUInt8) or in "
           "QOperator format")


@handles(*POOLS)
def qdq_pool(low: OnnxLowering, i: int, node) -> None:
    """DQ -> pool -> Q, fused by onnxruntime; elsewhere (float data that quantize_static left
    unquantized, a float output, a unit onnxruntime leaves unfused) the pool runs in float32 as
    onnxruntime's kernels do."""
    found = low.sole_q_consumer(node.output[0])
    domain = None
    if node.input[0] in low.dq and found is not None:
        y_quant, zp_name = linear_params(low, found[1])
        domain = low.qdq_domain(node, [node.input[0]], found[1], low.zp_type(found[1], zp_name))
    if domain is None:
        x = low.materialize(node.input[0])
        shape = low.tensors[x].shape
        if low.tensors[x].type.kind != "float" or len(shape) != 4:
            raise low.fail(node, "only 2-D pooling of a float or dequantized input is supported")
        if node.op_type == "GlobalAveragePool":
            low.emit("FloatGlobalAveragePool", node.name, [x], node.output[0], FLOAT32,
                     nchwc=x in low.model_inputs and shape[1] % 8 == 0)
        else:
            low.emit("FloatAveragePool", node.name, [x], node.output[0], FLOAT32,
                     **average_pool_attrs(low, node, shape))
        return
    x = dq_input(low, node, node.input[0])
    q, y_quant, y_type = fused_output(low, i, node)
    POOLS[node.op_type](low, node, x.int_name, x.quant, y_quant, y_type, q.output[0], domain)


def concat_attrs(axis, in_quants, y_quant) -> dict:
    return dict(axis=axis, y_scale=float(y_quant.scale[0]),
                y_zero_point=int(y_quant.zero_point[0]),
                input_quant=[(float(q.scale[0]), int(q.zero_point[0])) for q in in_quants])


@handles("QLinearConcat")
def qlinear_concat(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input)
    y_quant = low.qparams(node, inp[0], inp[1])
    xs, quants = [], []
    for k in range(2, len(inp), 3):
        xs.append(low.value(node, inp[k]))
        quants.append(low.qparams(node, inp[k + 1], inp[k + 2]))
    low.emit("Concat", node.name, xs, node.output[0], low.zp_type(node, inp[1]), y_quant,
             **concat_attrs(attrs_of(node)["axis"], quants, y_quant))


@handles("Concat")
def qdq_concat(low: OnnxLowering, i: int, node) -> None:
    ds = [dq_input(low, node, n) for n in node.input]
    q, y_quant, y_type = fused_output(low, i, node)
    low.emit("Concat", node.name, [d.int_name for d in ds], q.output[0], y_type, y_quant,
             **concat_attrs(attrs_of(node)["axis"], [d.quant for d in ds], y_quant))


def layout_attrs(low: OnnxLowering, node, shape) -> tuple[str, dict]:
    a = attrs_of(node)
    op = node.op_type
    if op == "MaxPool":
        if len(shape) != 4:
            raise low.fail(node, "only 2-D MaxPool is supported")
        if len(node.output) > 1 and node.output[1]:
            raise low.fail(node, "the Indices output is not supported")
        kernel = tuple(a["kernel_shape"])
        pads = explicit_pads(low, node, a, shape[2:], kernel)
        if any(p >= kernel[k % 2] for k, p in enumerate(pads)):
            raise low.fail(node, f"pads {pads} not smaller than the kernel {kernel} "
                                 "(onnxruntime rejects them too)")
        return "MaxPool", dict(
            kernel_shape=kernel, strides=tuple(a.get("strides", (1, 1))), pads=pads,
            dilations=tuple(a.get("dilations", (1, 1))), ceil_mode=bool(a.get("ceil_mode", 0)))
    if op == "Flatten":
        return "Flatten", dict(axis=a.get("axis", 1))
    if op == "Transpose":
        return "Transpose", dict(perm=tuple(a.get("perm", range(len(shape))[::-1])))
    if op == "Reshape":
        target = tuple(int(d) for d in low.const(node, node.input[1], "shape"))
        if target and shape and target[0] == shape[0]:
            # The file's batch size written out (torch's x.view(x.size(0), -1), folded): copied
            # from the input instead (the same at that size), so that other batch sizes run.
            target = (0, *target[1:])
        return "Reshape", dict(shape=target)
    if op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = low.const(node, node.input[1], "axes")
        # The batch dimension (input dimension 0) stays free: 0 (copy it) where it stays first,
        # -1 (infer it) where Unsqueeze moves it; Squeeze can remove it (it is 1 then).
        if op == "Squeeze":
            axes = [d % len(shape) for d in (axes if axes is not None else
                                              [k for k, s in enumerate(shape) if s == 1])]
            new = [s for k, s in enumerate(shape) if k not in axes]
            batch_at = None if 0 in axes or not shape else 0
        else:
            axes = sorted(int(d) % (len(shape) + len(axes)) for d in axes)
            new = list(shape)
            for d in axes:
                new.insert(d, 1)
            batch_at = next((k for k in range(len(new)) if k not in axes), None) if shape \
                else None
        if batch_at is not None:
            new[batch_at] = 0 if batch_at == 0 else -1
        return "Reshape", dict(shape=tuple(new))
    if op == "Identity":
        return "Identity", {}
    if op == "Pad":
        return "Pad", pad_attrs(low, node, a, len(shape))
    if op == "Resize":
        return "Resize", resize_attrs(low, node, a, shape)
    raise low.fail(node, "not a layout operator")


def pad_attrs(low: OnnxLowering, node, a: dict, rank: int) -> dict:
    """Pad's pads (begin of every axis, then end; negative ones crop), mode and constant (in the
    input's domain: a float, or an integer code in QOperator graphs)."""
    pads = low.opt_const(node, 1, "pads")
    pads = [int(p) for p in (pads if pads is not None else a.get("pads", ()))]
    axes = low.opt_const(node, 3, "axes")
    if axes is not None:
        full = [0] * (2 * rank)
        for k, axis in enumerate(int(x) % rank for x in axes):
            full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
        pads = full
    if len(pads) != 2 * rank:
        raise low.fail(node, f"pads {pads} do not fit the input's {rank} dimensions")
    value = low.opt_const(node, 2, "constant_value")
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise low.fail(node, f"mode {mode} is not supported")
    return dict(pads=tuple(pads), mode=mode,
                value=(np.asarray(value).reshape(-1)[0] if value is not None
                       else np.float32(a.get("value", 0.0))))


def resize_attrs(low: OnnxLowering, node, a: dict, shape) -> dict:
    """Resize in nearest mode (a gather, exact on integers): per axis, the scale onnxruntime
    computes its source coordinates with and the output length."""
    def text(key, default):
        v = a.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    mode, transform = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    if mode != "nearest":
        raise low.fail(node, f"mode {mode} is not supported (nearest only: it is exact on the "
                             "integers; linear and cubic interpolate in float)")
    if transform not in RESIZE_TRANSFORMS or a.get("antialias", 0) or "axes" in a or (
            text("keep_aspect_ratio_policy", "stretch") != "stretch"):
        raise low.fail(node, f"coordinate_transformation_mode {transform}, antialias, axes and "
                             "keep_aspect_ratio_policy other than stretch are not supported")
    if len(node.input) < 3 and node.op_type == "Resize":
        raise low.fail(node, "needs scales or sizes")
    scales = low.opt_const(node, 2, "scales")
    sizes = low.opt_const(node, 3, "sizes")
    rank = len(shape)
    if scales is not None and scales.size:
        scales = np.asarray(scales, np.float32).reshape(-1)
        out = [int(np.float32(s) * np.float32(n)) for s, n in zip(scales, shape, strict=True)]
    elif sizes is not None and sizes.size == rank:
        out = [int(v) for v in sizes]
        scales = np.array([np.float32(o) / np.float32(n) for o, n in zip(out, shape, strict=True)],
                          np.float32)
    else:
        raise low.fail(node, "needs constant scales or sizes, one per dimension")
    if scales.size != rank or scales[0] != 1 or out[0] != shape[0]:
        raise low.fail(node, f"scales {scales.tolist()} must keep the batch and fit the input")
    return dict(scales=tuple(float(v) for v in scales), sizes=tuple(out[1:]),
                transform=transform, nearest_mode=text("nearest_mode", "round_prefer_floor"))


RESIZE_TRANSFORMS = ("half_pixel", "asymmetric", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                     "align_corners")
LAYOUT_OPS = ("MaxPool", "Flatten", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")


@handles(*LAYOUT_OPS, "Pad", "Resize")
def layout(low: OnnxLowering, i: int, node) -> None:
    """On integers directly (QOperator), or between a DQ and a Q with equal parameters (QDQ), or
    on float data (exact in float32 too). Pad's constant becomes an integer code between a DQ and
    a Q: exact when the Q is the DQ's, or when the code dequantizes to the constant (0 does)."""
    src = node.input[0]
    d = low.dq.get(src)
    if d is None:
        x = low.value(node, src)
        t = low.tensors[x]
        op, attrs = layout_attrs(low, node, t.shape)
        low.emit(op, node.name, [x], node.output[0], t.type, t.quant, **attrs)
        return
    t = low.tensors[d.int_name]
    op, attrs = layout_attrs(low, node, t.shape)
    found = identical_q(low, node.output[0], d)
    if op == "Pad":
        if d.quant.scale.size != 1:
            raise low.fail(node, "per-channel quantized input")
        v = np.float32(attrs["value"])
        code = quantize(v, d.quant.scale[0], d.quant.zero_point[0], t.type.min, t.type.max)
        if found is None and dequantize(code, d.quant.scale[0], d.quant.zero_point[0]) != v:
            raise low.fail(node, f"constant_value {v} is no value of the quantized input")
        attrs["value"] = int(code)
    if op == "MaxPool" and found is None and has_empty_windows(t.shape[2:], attrs):
        # onnxruntime pools the floats: a window of padding only is -FLT_MAX, no integer.
        low.emit(op, node.name, [low.materialize(src)], node.output[0], FLOAT32, **attrs)
        return
    out = low.emit(op, node.name, [d.int_name], f"{node.output[0]}_int", t.type, d.quant,
                   **attrs)
    if found is not None:  # closed by an identical Q: onnxruntime drops the pair
        low.consumed.add(found[0])
        low.alias[found[1].output[0]] = out
        return
    # Not closed by an identical Q: the float result is the dequantized integer result.
    low.dq[node.output[0]] = DQValue(out, d.quant)


@handles("Relu", "Clip")
def relu(low: OnnxLowering, i: int, node) -> None:
    """Relu/Clip after a DQ. onnxruntime runs it in float32 (or drops it into the next Q when that
    Q saturates at its bounds anyway). A clamp of the integers is the same thing for Relu (0 is the
    zero point) and when the next Q has the DQ's parameters (the bounds are then Q(min), Q(max));
    otherwise accelsim keeps it in float too: DQ -> Clip -> Q. On a float tensor that is no DQ's
    (the network's input), it is a float clamp."""
    lo, hi = np.float32(0.0), np.float32(np.inf)
    if node.op_type == "Clip":
        a = attrs_of(node)
        lo_arr = low.opt_const(node, 1, "min")
        hi_arr = low.opt_const(node, 2, "max")
        lo = np.float32(lo_arr if lo_arr is not None else a.get("min", -np.inf))
        hi = np.float32(hi_arr if hi_arr is not None else a.get("max", np.inf))
    d = low.dq.get(node.input[0])
    if d is None or (node.op_type == "Clip" and identical_q(low, node.output[0], d) is None):
        x = low.materialize(node.input[0])
        if low.tensors[x].type.kind != "float":
            raise low.fail(node, f"input {node.input[0]} is an integer tensor without "
                                 "quantization parameters; put it between a DQ and a Q")
        low.emit("Clip", node.name, [x], node.output[0], FLOAT32, lo=lo, hi=hi)
        return
    t = low.tensors[d.int_name]
    if d.quant.scale.size != 1:
        raise low.fail(node, "per-channel quantized input")
    scale, zp = d.quant.scale[0], d.quant.zero_point[0]
    q_lo, q_hi = (int(quantize(v, scale, zp, t.type.min, t.type.max)) for v in (lo, hi))
    out = low.emit("Clip", node.name, [d.int_name], f"{node.output[0]}_int", t.type, d.quant,
                   lo=q_lo, hi=q_hi)
    low.dq[node.output[0]] = DQValue(out, d.quant)


def lookup_fits(low: OnnxLowering, x: str, x_quant: Quant, y_quant: Quant) -> bool:
    """Whether a table can stand for the function: an 8-bit input, per-tensor quantization."""
    x_type = low.tensors[x].type
    return (x_type.kind == "int" and x_type.bits <= 8 and x_quant.scale.size == 1
            and y_quant.scale.size == 1)


def emit_lookup(low: OnnxLowering, node, op_type: str, x: str, x_quant: Quant, y_quant: Quant,
                y_type: ElemType, out: str) -> None:
    """A unary float function between 8-bit quantized tensors as a 256-entry table."""
    table = lookup_table(op_type, attrs_of(node), low.tensors[x].type, x_quant.scale[0],
                         x_quant.zero_point[0], y_type, y_quant.scale[0], y_quant.zero_point[0])
    low.emit("Lookup", node.name, [x], out, y_type, y_quant, table=table, function=op_type)


@handles("QLinearSigmoid", "QLinearLeakyRelu")
def qlinear_lookup(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (5 - len(node.input))
    x = low.value(node, inp[0])
    x_quant, y_quant = low.qparams(node, inp[1], inp[2]), low.qparams(node, inp[3], inp[4])
    if not lookup_fits(low, x, x_quant, y_quant):
        raise low.fail(node, "only 8-bit per-tensor quantized tensors are supported")
    emit_lookup(low, node, node.op_type.removeprefix("QLinear"), x, x_quant, y_quant,
                low.tensors[x].type, node.output[0])


@handles(*FLOAT_FUNCTIONS)
def activation(low: OnnxLowering, i: int, node) -> None:
    """DQ -> Sigmoid/Tanh/HardSigmoid/HardSwish/LeakyRelu -> Q is a table (Lookup); anywhere
    else the function runs in float32 (Activation), as in onnxruntime."""
    d = low.dq.get(node.input[0])
    found = low.sole_q_consumer(node.output[0])
    if d is not None and found is not None:
        y_quant, zp_name = linear_params(low, found[1])
        if lookup_fits(low, d.int_name, d.quant, y_quant):
            low.consumed.add(found[0])
            emit_lookup(low, node, node.op_type, d.int_name, d.quant, y_quant,
                        low.zp_type(found[1], zp_name), found[1].output[0])
            return
    x = low.materialize(node.input[0])
    if low.tensors[x].type.kind != "float":
        raise low.fail(node, f"input {node.input[0]} is an integer tensor, not a float one")
    low.emit("Activation", node.name, [x], node.output[0], FLOAT32, function=node.op_type,
             **attrs_of(node))


def emit_softmax(low: OnnxLowering, node, x: str, x_quant: Quant, y_quant: Quant,
                 y_type: ElemType, out: str, opset: int, axis: int | None,
                 uint8_domain: bool) -> None:
    x_type = low.tensors[x].type
    if x_type.kind != "int" or x_type.bits != 8 or x_type != y_type:
        raise low.fail(node, "only 8-bit quantized input and output of one type are supported")
    if x_quant.scale.size != 1 or y_quant.scale.size != 1:
        raise low.fail(node, "per-channel quantization is not supported")
    low.emit("Softmax", node.name, [x], out, y_type, y_quant, opset=opset,
             axis=-1 if axis is None else axis,
             x_scale=float(x_quant.scale[0]), y_scale=float(y_quant.scale[0]),
             y_zero_point=int(y_quant.zero_point[0]), uint8_domain=uint8_domain)


@handles("QLinearSoftmax")
def qlinear_softmax(low: OnnxLowering, i: int, node) -> None:
    inp = list(node.input) + [""] * (5 - len(node.input))
    a = attrs_of(node)
    x = low.value(node, inp[0])
    emit_softmax(low, node, x, low.qparams(node, inp[1], inp[2]),
                 low.qparams(node, inp[3], inp[4]), low.tensors[x].type, node.output[0],
                 int(a.get("opset", 13)), a.get("axis"), False)


@handles("Softmax")
def qdq_softmax(low: OnnxLowering, i: int, node) -> None:
    """onnxruntime fuses DQ -> Softmax -> Q into QLinearSoftmax (int8 graphs in uint8), with
    Softmax's axis (ONNX's default: 1 before opset 13, -1 from it; QLinearSoftmax's is -1)."""
    d = dq_input(low, node, node.input[0])
    q, y_quant, y_type = fused_output(low, i, node)
    domain = low.qdq_domain(node, [node.input[0]], q, y_type)
    if domain is None:
        raise low.fail(node, UNFUSED)
    opset = next((o.version for o in low.model.opset_import if o.domain in ("", "ai.onnx")), 13)
    emit_softmax(low, node, d.int_name, d.quant, y_quant, y_type, q.output[0], opset,
                 attrs_of(node).get("axis", -1 if opset >= 13 else 1), domain)


def float_const(low: OnnxLowering, node, name: str, what: str) -> np.ndarray:
    """A float32 constant operand: an initializer, or the DequantizeLinear of a constant
    (quantize_static's QDQ form of a batch norm's scale and bias), dequantized exactly."""
    d = low.dq.get(name)
    if d is not None and low.tensors[d.int_name].is_const:
        data = low.tensors[d.int_name].data
        return dequantize(data, channel_view(d.quant.scale, data.ndim, d.quant.axis),
                          channel_view(d.quant.zero_point, data.ndim, d.quant.axis))
    value = low.const(node, name, what)
    if value.dtype != np.float32:
        raise low.fail(node, f"{what} ({name}) must be float32")
    return value


@handles("BatchNormalization")
def batch_norm(low: OnnxLowering, i: int, node) -> None:
    """An unfused batch norm stays float between its DQ and Q in onnxruntime: so here too, with
    onnxruntime's float32 folding of its parameters (accelsim.ops.elementwise)."""
    a = attrs_of(node)
    if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise low.fail(node, "training mode is not supported")
    x = low.materialize(node.input[0])
    if low.tensors[x].type.kind != "float":
        raise low.fail(node, f"input {node.input[0]} must be float (behind a DequantizeLinear)")
    scale, bias, mean, var = (float_const(low, node, node.input[k], what) for k, what in
                              enumerate(("scale", "B", "mean", "var"), start=1))
    f32 = np.float32
    new_scale = (f32(1) / np.sqrt(var + f32(a.get("epsilon", 1e-5)))) * scale
    low.emit("BatchNormalization", node.name, [x], node.output[0], FLOAT32,
             scale=new_scale.astype(f32), bias=(bias - mean * new_scale).astype(f32))
