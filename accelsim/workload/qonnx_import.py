"""QONNX importer: graphs as Brevitas/FINN export them (Quant/IntQuant, BipolarQuant, Trunc around
float Conv/MatMul/Gemm, BatchNormalization, Relu, MaxPool...) lowered to the integer IR.

Every float value of the graph is tracked as a `Chain`: an IR tensor (integer, or the float graph
input) and the float32 steps qonnx applies to it (accelsim/ops/affine.py). Quantizers on constants
are folded (weights to integer codes, biases to the floats qonnx computes); a quantizer on a chain
closes it with an AffineQuant, or with an exact integer Threshold when it is bipolar. A Conv or
MatMul whose two operands are quantized becomes the IR's integer accumulator (bipolar x bipolar:
xnor-popcount), and its dequantization, float32(acc) * float32(x_scale) * float32(w_scale[c]),
starts a new chain. That product is what qonnx's float Conv computes exactly when the scales are
powers of two and the accumulator stays within float32's 24-bit mantissa (the bundled binary
network is built so); otherwise qonnx's own float sums round, and the two may differ by that
(tests/test_qonnx.py measures it). Average pooling (SumPool, GlobalAveragePool) and the residual
Add of two quantized tensors (IntegerAdd, their scales a power of two apart) sum integers the
same way (so does ReduceMean over the spatial axes); a Concat of tensors quantized alike
concatenates the integers. Conv1d and MaxPool1d run as their 2-D forms over (1, L). Nodes of
constants only (torch's traced shape arithmetic, Constant) are evaluated at import.
Anything else is rejected naming the node, its op type and what it would need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from accelsim.errors import WorkloadError
from accelsim.ops import REGISTRY
from accelsim.ops.affine import ROUNDING, apply_steps, quantize
from accelsim.ops.pool import has_empty_windows, window_counts
from accelsim.workload.ir import BIPOLAR, FLOAT32, INT32, ElemType, Graph, Quant, int_type
from accelsim.workload.onnx_import import (
    LAYOUT_OPS,
    OnnxLowering,
    attrs_of,
    concat_attrs,
    conv_attrs,
    emit_conv,
    emit_matmul,
    layout_attrs,
    same_quant,
)

# Old FINN domains qonnx's ModelWrapper renames to its own on load (so their opset is qonnx's).
RENAMED_DOMAINS = {"finn": "qonnx.custom_op.general",
                   "finn.custom_op.general": "qonnx.custom_op.general"}
MONOTONE_KINDS = ("mul", "div")  # steps whose parameter's sign decides the direction


def declare_domains(model: onnx.ModelProto) -> None:
    """Import at version 1 a QONNX domain that nodes use but the model does not import: qonnx's
    cleanup moves Brevitas's nodes from onnx.brevitas to qonnx.custom_op.general without
    importing it, and qonnx runs such nodes at version 1 (ONNX's checker needs the import)."""
    used = {n.domain for n in model.graph.node} - {o.domain for o in model.opset_import}
    for domain in sorted(used & ({"qonnx.custom_op.general", "onnx.brevitas"} |
                                 set(RENAMED_DOMAINS))):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))


@dataclass(frozen=True)
class Chain:
    """A float value: apply_steps(IR tensor `src`, steps). `quant` is set when the value is exactly
    scale * (src - zero_point) of an integer src, i.e. an operand a compute node can take."""

    src: str
    steps: tuple = ()
    quant: Quant | None = None


@dataclass(frozen=True)
class Folded:
    """A quantizer applied to a constant: its integer codes, their type and scale/zero point."""

    codes: np.ndarray
    etype: ElemType
    quant: Quant


def trailing(p: np.ndarray, ndim: int) -> np.ndarray:
    """A parameter broadcastable against a tensor of `ndim` dimensions, without the batch axis."""
    p = np.asarray(p, np.float32)
    while p.ndim >= ndim and p.ndim and p.shape[0] == 1:
        p = p[0]
    if p.ndim >= ndim:
        raise ValueError(f"parameter of shape {p.shape} varies along the batch axis")
    return p


def channel_axis(p: np.ndarray, ndim: int) -> int | None:
    """The axis (of the full tensor) along which a trailing-dims parameter varies, if one."""
    varying = [i for i, d in enumerate(p.shape) if d != 1]
    if not varying:
        return None
    if len(varying) > 1:
        raise ValueError("parameter varies along several axes")
    return ndim - p.ndim + varying[0]


class QonnxLowering(OnnxLowering):
    """Walks the QONNX graph in order; ONNX values map to Chains or constants."""

    def __init__(self, model: onnx.ModelProto, source: str):
        super().__init__(model, source)
        self.chains: dict[str, Chain] = {}
        self.folded: dict[str, Folded] = {}
        self.opsets = {o.domain: o.version for o in model.opset_import}

    def lower(self) -> Graph:
        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        inputs = []
        for vi in g.input:
            if vi.name in self.consts:
                continue
            name = self.add_graph_input(vi)
            t = self.tensors[name]
            quant = None if t.type.kind == "float" else Quant(np.ones(1, np.float32),
                                                             np.zeros(1, np.int64))
            self.chains[name] = Chain(name, (), quant)
            inputs.append(name)
        for node in self.onnx_nodes:
            if node.op_type in FOLDED_OPS and node.domain in ("", "ai.onnx") and all(
                    self.is_const(n) for n in node.input if n):
                self.fold(node)
                continue
            handler = QONNX_HANDLERS.get(node.op_type)
            if handler is None:
                raise self.fail(node, "operator not supported in QONNX graphs; supported: "
                                + ", ".join(sorted(QONNX_HANDLERS)))
            handler(self, node)
        outputs = [self.output(o.name) for o in g.output]
        return Graph(g.name or "qonnx", self.tensors, self.nodes, inputs, outputs, self.source)

    def custom_opset(self, node) -> int:
        """The version qonnx runs a custom node at: its domain's opset import, else 1."""
        return self.opsets.get(RENAMED_DOMAINS.get(node.domain, node.domain), 1)

    def fold(self, node) -> None:
        """A node of constants only (Constant, torch's traced shape arithmetic before a Reshape):
        evaluated by onnx's reference implementation, numpy's, exact for these ops."""
        inputs = {n: self.consts[n] for n in node.input if n}
        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opsets.get("", 13)}).run(None, inputs)
        except Exception as e:  # the reference raises many types for inputs it cannot take
            raise self.fail(node, f"its constant inputs do not evaluate ({e})") from None
        self.consts.update(zip(node.output, (np.asarray(o) for o in outs), strict=True))

    # ----- values ----------------------------------------------------------------------------
    def chain(self, node, name: str) -> Chain:
        if name not in self.chains:
            raise self.fail(node, f"input {name} must be computed from the graph input "
                                  "(a constant is not supported here)")
        return self.chains[name]

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def ndim(self, c: Chain) -> int:
        return len(self.tensors[c.src].shape)

    def output(self, name: str) -> str:
        """A graph output: the float value qonnx returns, replayed on the integers."""
        c = self.chains.get(name)
        if c is None:
            raise WorkloadError(f"{self.source}: output {name} is a constant or not produced")
        self.emit("AffineQuant", f"{name}_out", [c.src], name, FLOAT32, steps=c.steps,
                  quantizer=None)
        return name

    def scalar_int(self, node, name: str, what: str) -> int:
        v = np.asarray(self.const(node, name, what))
        if v.size != 1 or v.reshape(-1)[0] != np.round(v.reshape(-1)[0]):
            raise self.fail(node, f"{what} {name} must be one integer, got {v.tolist()}")
        return int(v.reshape(-1)[0])

    def scale_of(self, node, name: str) -> np.ndarray:
        s = np.asarray(self.const(node, name, "scale"), np.float32)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise WorkloadError(f"{self.source}: node {node.name} ({node.op_type}): scale "
                                f"{name} must be finite and positive")
        return s

    def zero_point_of(self, node, name: str) -> np.ndarray:
        z = np.asarray(self.const(node, name, "zero point"), np.float32)
        if not np.all(z == np.round(z)):
            raise self.fail(node, f"zero point {name} is not an integer; accelsim needs "
                                  "integer zero points")
        return z

    # ----- closing a chain -------------------------------------------------------------------
    def close(self, node, c: Chain, quantizer: dict, etype: ElemType, out_quant: Quant | None,
              steps_out: tuple) -> None:
        """Emit the integer op computing the quantizer on chain c; its output continues as a
        chain whose steps are the dequantization qonnx applies (steps_out)."""
        out = f"{node.output[0]}_int"
        src = self.tensors[c.src]
        if quantizer["kind"] == "bipolar" and src.type.kind != "float":
            t, direction = self.thresholds(c, quantizer)
            self.emit("Threshold", node.name, [c.src], out, etype, out_quant, threshold=t,
                      direction=direction)
        else:
            self.emit("AffineQuant", node.name, [c.src], out, etype, out_quant, steps=c.steps,
                      quantizer=quantizer)
        self.chains[node.output[0]] = Chain(out, steps_out, out_quant)

    def thresholds(self, c: Chain, quantizer: dict) -> tuple[np.ndarray, np.ndarray]:
        """Exact integer thresholds of a monotone float chain + sign: per element of the
        parameters' broadcast shape, binary search for the first (or last) integer mapped to +1.
        Each float32 step is monotone, so the chain is; its direction is found by evaluation."""
        etype = self.tensors[c.src].type
        shapes = [np.shape(p) for _, p in c.steps] + [np.shape(quantizer["scale"]),
                                                     np.shape(quantizer["zero_point"])]
        shape = np.broadcast_shapes(*shapes)

        def positive(a: np.ndarray) -> np.ndarray:
            return quantize(apply_steps(a, c.steps), quantizer) > 0

        lo = np.full(shape, etype.min, np.int64)
        hi = np.full(shape, etype.max, np.int64)
        at_lo, at_hi = positive(lo), positive(hi)
        up = ~at_lo & at_hi  # -1 ... +1: threshold = first +1
        down = at_lo & ~at_hi  # +1 ... -1: threshold = last +1
        a, b = lo.copy(), hi.copy()  # invariant: answer in (a, b] for up, [a, b) for down
        while np.any(b - a > 1):
            mid = a + (b - a) // 2
            pm = positive(mid)
            go_right = np.where(up, ~pm, pm)
            a = np.where(go_right, mid, a)
            b = np.where(go_right, b, mid)
        t = np.where(up, b, np.where(down, a, 0))
        # Constant channels: +1 everywhere (x >= min) or -1 everywhere (x >= max + 1).
        t = np.where(~up & ~down, np.where(at_lo, etype.min, etype.max + 1), t)
        direction = np.where(down, -1, 1).astype(np.int8)
        return t.astype(np.int64), direction

    # ----- compute nodes ---------------------------------------------------------------------
    def operand(self, node, name: str, what: str, channel_scales: bool = False) -> Chain:
        """A quantized operand, per tensor (or with per-channel scales, where allowed)."""
        c = self.chain(node, name)
        if c.quant is None or self.tensors[c.src].type.kind == "float":
            raise self.fail(node, f"{what} {name} is not quantized: put a Quant or BipolarQuant "
                                  "right before it")
        per_channel = c.quant.scale.size != 1 and not (channel_scales and c.quant.axis == 1)
        if per_channel or c.quant.zero_point.size != 1:
            raise self.fail(node, f"{what} {name} has per-channel quantization; a compute node "
                                  "needs a per-tensor input scale and zero point")
        return c

    def weights(self, node, name: str, out_axis: int) -> Folded:
        f = self.folded.get(name)
        if f is None:
            raise self.fail(node, f"weights {name} must be a constant behind a Quant or "
                                  "BipolarQuant")
        for what, v in (("scale", f.quant.scale), ("zero point", f.quant.zero_point)):
            if v.size != 1 and (f.quant.axis is None or f.quant.axis % f.codes.ndim != out_axis):
                raise self.fail(node, f"weight {what} must be per tensor or per output channel")
        return f


# ----- handlers ----------------------------------------------------------------------------------
QONNX_HANDLERS: dict = {}


def handles(*op_types: str):
    def deco(fn):
        for t in op_types:
            QONNX_HANDLERS[t] = fn
        return fn
    return deco


def int_range(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    """qonnx's min_int/max_int."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def out_quant(scale: np.ndarray, zp: np.ndarray, ndim: int) -> Quant:
    """The IR Quant of a quantizer's output, given trailing-dims scale and zero point."""
    axes = {channel_axis(scale, ndim), channel_axis(zp, ndim)} - {None}
    return Quant(np.asarray(scale, np.float32).reshape(-1),
                 np.asarray(zp).astype(np.int64).reshape(-1), axes.pop() if axes else None)


def dequant_steps(scale: np.ndarray, zp: np.ndarray | None) -> tuple:
    """qonnx's (y_int - zero_point) * scale."""
    steps = ()
    if zp is not None and np.any(zp != 0):
        steps += (("add", -zp),)
    return steps + (("mul", scale),)


# Evaluated when all their inputs are constant (QonnxLowering.fold): the shape and index ops torch
# traces, and float32 arithmetic that IEEE rounds exactly (no transcendental functions).
FOLDED_OPS = frozenset({
    "Constant", "ConstantOfShape", "Shape", "Size", "Gather", "Slice", "Concat", "Cast", "Range",
    "Expand", "Where", "Equal", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Floor",
    "Ceil", "Sqrt", "Reciprocal",
})


@handles("Shape")
def shape(low: QonnxLowering, node) -> None:
    """A computed tensor's shape (the batch size the file gives; 1 if symbolic), as a constant."""
    t = low.tensors[low.chain(node, node.input[0]).src]
    a = attrs_of(node)
    low.consts[node.output[0]] = np.array(t.shape, np.int64)[a.get("start", 0):a.get("end")]


@handles("Quant", "IntQuant")
def quant(low: QonnxLowering, node) -> None:
    a = attrs_of(node)
    signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
    mode = a.get("rounding_mode", b"ROUND")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    if mode not in ROUNDING:
        raise low.fail(node, f"rounding_mode {mode}; supported: {', '.join(ROUNDING)}")
    bits = low.scalar_int(node, node.input[3], "bitwidth")
    if not 1 <= bits <= 32:
        raise low.fail(node, f"{bits}-bit quantization; accelsim supports 1 to 32 bits")
    scale = low.scale_of(node, node.input[1])
    zp = low.zero_point_of(node, node.input[2])
    if bits == 1 and signed:  # qonnx: bipolar; unsigned 1-bit is binary {0, 1}, an integer
        if np.any(zp != 0):
            raise low.fail(node, "1-bit quantization with a non-zero zero point")
        quantizer = dict(kind="bipolar", scale=scale, zero_point=zp)
        etype = BIPOLAR
    else:
        lo, hi = int_range(signed, narrow, bits)
        quantizer = dict(kind="int", scale=scale, zero_point=zp, lo=lo, hi=hi, rounding=mode)
        etype = int_type(bits, signed)
    apply_quantizer(low, node, quantizer, etype, scale, zp)


@handles("BipolarQuant")
def bipolar_quant(low: QonnxLowering, node) -> None:
    scale = low.scale_of(node, node.input[1])
    # qonnx tests the sign of x itself (not x / scale, which can underflow to -0).
    quantizer = dict(kind="bipolar", scale=np.float32(1), zero_point=np.float32(0))
    apply_quantizer(low, node, quantizer, BIPOLAR, scale, None)


def apply_quantizer(low: QonnxLowering, node, quantizer: dict, etype: ElemType,
                    scale: np.ndarray, zp: np.ndarray | None) -> None:
    """Fold the quantizer on a constant, or close the chain it quantizes."""
    x = node.input[0]
    if etype == BIPOLAR:
        zp = None
    if low.is_const(x):
        v = np.asarray(low.consts[x], np.float32)
        codes = quantize(v, quantizer)
        # qonnx's dequantization, kept as the float constant (used as bias, Mul operand...).
        low.consts[node.output[0]] = apply_steps(codes, dequant_steps(scale, zp))
        axes = {channel_axis(scale, v.ndim + 1)} - {None}  # +1: constants have no batch axis
        q = Quant(scale.reshape(-1), np.zeros(1, np.int64) if zp is None
                  else zp.astype(np.int64).reshape(-1), axes.pop() - 1 if axes else None)
        low.folded[node.output[0]] = Folded(codes.astype(etype.storage), etype, q)
        return
    c = low.chain(node, x)
    nd = low.ndim(c)
    try:
        for k in ("scale", "zero_point"):
            quantizer[k] = trailing(quantizer[k], nd)
        scale_t = trailing(scale, nd)
        zp_t = None if zp is None else trailing(zp, nd)
    except ValueError as e:
        raise low.fail(node, f"scale/zero point: {e}") from None
    q = out_quant(scale_t, np.zeros(1) if zp_t is None else zp_t, nd)
    low.close(node, c, quantizer, etype, q, dequant_steps(scale_t, zp_t))


@handles("Trunc")
def trunc(low: QonnxLowering, node) -> None:
    """qonnx Trunc (v1: x, scale, zero point, in bits, out bits; v2 adds the output scale)."""
    a = attrs_of(node)
    mode = a.get("rounding_mode", b"FLOOR")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    if mode not in ROUNDING:
        raise low.fail(node, f"rounding_mode {mode}; supported: {', '.join(ROUNDING)}")
    c = low.chain(node, node.input[0])
    nd = low.ndim(c)
    scale = trailing(low.scale_of(node, node.input[1]), nd)
    zp = trailing(low.zero_point_of(node, node.input[2]), nd)
    in_bits = low.scalar_int(node, node.input[3], "input bitwidth")
    if low.custom_opset(node) >= 2:
        out_scale = trailing(low.scale_of(node, node.input[4]), nd)
        out_bits = low.scalar_int(node, node.input[5], "output bitwidth")
        divisor = np.float32(2) ** np.round(np.log2(out_scale / scale))
        if np.size(divisor) != 1:
            raise low.fail(node, "per-channel truncation; accelsim needs one shift")
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        lo, hi = int_range(signed, narrow, out_bits)
        etype = int_type(out_bits, signed)
        out_zp = np.divide(zp, divisor, dtype=np.float32)  # v2 rescales the zero point too
    else:
        out_bits = low.scalar_int(node, node.input[4], "output bitwidth")
        divisor = np.float32(2.0 ** (in_bits - out_bits))
        lo = hi = None
        out_scale, out_zp = scale, zp  # v1 dequantizes as its input
    quantizer = dict(kind="trunc", scale=scale, zero_point=zp, divisor=float(divisor), lo=lo,
                     hi=hi, rounding=mode)
    if lo is None:  # v1 does not clamp: the type of the codes the input's range gives
        etype = code_type(low, c, quantizer)
    # A zero point the shift left fractional is no integer zero point for a next Conv.
    q = out_quant(out_scale, out_zp, nd) if np.all(out_zp == np.round(out_zp)) else None
    low.close(node, c, quantizer, etype, q, dequant_steps(out_scale, out_zp))


def source_range(low: QonnxLowering, c: Chain) -> tuple[int, int]:
    """The integers a chain's source holds: its type's range (int32's for a float input); for a
    pooled sum (an int32 accumulator), the sums of the pooled integers' range (what bounds an
    average pool's Trunc)."""
    node = next((n for n in reversed(low.nodes) if c.src in n.outputs), None)
    if node is None or node.op not in ("SumPool", "GlobalAveragePool"):
        t = low.tensors[c.src].type
        return (t.min, t.max) if t.kind != "float" else (INT32.min, INT32.max)
    x = low.tensors[node.inputs[0]]
    count = int(np.prod(node.attrs["kernel_shape"] if node.op == "SumPool" else x.shape[2:]))
    zp = node.attrs["x_zero_point"]
    return count * min(x.type.min - zp, 0), count * max(x.type.max - zp, 0)


def code_type(low: QonnxLowering, c: Chain, quantizer: dict) -> ElemType:
    """The smallest integer type of a quantizer's codes over the chain's source range: each float
    step and the quantizer are monotone, so the extremes come from the range's ends."""
    ends = [quantize(apply_steps(np.int64(v), c.steps), quantizer) for v in source_range(low, c)]
    lo, hi = int(min(e.min() for e in ends)), int(max(e.max() for e in ends))
    if lo >= 0:
        return int_type(min(max(hi.bit_length(), 2), 32), False)
    return int_type(min(max(hi.bit_length(), (-lo - 1).bit_length()) + 1, 32), True)


@handles("Conv")
def conv(low: QonnxLowering, node) -> None:
    """A depthwise Conv (one input channel per group) also takes per-channel input scales (FINN's
    MobileNet-v1 quantizes pointwise outputs per channel): each sum then has one input scale."""
    depthwise = np.shape(low.consts.get(node.input[1], ()))[1:2] == (1,)
    x = low.operand(node, node.input[0], "input", channel_scales=depthwise)
    w = low.weights(node, node.input[1], 0)
    one_d = w.codes.ndim == 3
    src, codes, node2 = x.src, w.codes, node
    if one_d:  # Conv1d: a 2-D Conv over (1, L) between two reshapes
        src, codes, node2 = to_2d(low, node, x.src), w.codes[:, :, None, :], as_2d(node)
    attrs = conv_attrs(low, node2, codes.shape, low.tensors[src].shape)
    acc = emit_conv(low, node2, src, f"{node.input[1]}_int", codes, w.etype, w.quant, None,
                    f"{node.output[0]}_acc", int(x.quant.zero_point[0]), attrs)
    if one_d:
        acc = from_2d(low, node, acc)
    channel = (-1,) + (1,) * (len(low.tensors[acc].shape) - 2)
    steps = (("mul", acc_scale(x, w, channel)),)
    if len(node.input) > 2 and node.input[2]:
        bias = low.const(node, node.input[2], "bias")
        steps += (("add", np.asarray(bias, np.float32).reshape(channel)),)
    low.chains[node.output[0]] = Chain(acc, steps)


def as_2d(node: onnx.NodeProto) -> onnx.NodeProto:
    """A 1-D Conv/MaxPool node's 2-D twin over (1, L) (its attributes given a leading 1)."""
    twin = onnx.NodeProto()
    twin.CopyFrom(node)
    for a in twin.attribute:
        if a.name in ("kernel_shape", "strides", "dilations"):
            a.ints[:] = [1, *a.ints]
        elif a.name == "pads":
            a.ints[:] = [0, a.ints[0], 0, a.ints[1]]
    return twin


def to_2d(low: QonnxLowering, node, src: str) -> str:
    """(N, C, L) integers as (N, C, 1, L)."""
    t = low.tensors[src]
    return low.emit("Reshape", f"{node.name}_to_2d", [src], f"{node.output[0]}_in_2d", t.type,
                    t.quant, shape=(0, t.shape[1], 1, t.shape[2]))


def from_2d(low: QonnxLowering, node, src: str) -> str:
    """(N, C, 1, L) integers back as (N, C, L)."""
    t = low.tensors[src]
    return low.emit("Reshape", f"{node.name}_to_1d", [src], f"{node.output[0]}_1d", t.type,
                    t.quant, shape=(0, t.shape[1], t.shape[3]))


def acc_scale(x: Chain, w: Folded, shape) -> np.ndarray:
    """float32(x_scale) * float32(w_scale[c]): the real value of one accumulator unit (x_scale of
    the input channel of output channel c's group, if per channel)."""
    xs = x.quant.scale.astype(np.float32)
    if xs.size != 1:
        xs = np.repeat(xs, w.codes.shape[0] // xs.size)
    return (xs * w.quant.scale.astype(np.float32)).reshape(shape)


@handles("MatMul", "Gemm")
def matmul(low: QonnxLowering, node) -> None:
    a = attrs_of(node)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise low.fail(node, "only Gemm with transA=0, alpha=1, beta=1 is supported")
    x = low.operand(node, node.input[0], "input")
    trans = bool(a.get("transB", 0))
    w = low.weights(node, node.input[1], 0 if trans else 1)
    if w.codes.ndim != 2:
        raise low.fail(node, "only a 2-D constant B is supported")
    if trans:
        w = Folded(w.codes.T, w.etype, Quant(w.quant.scale, w.quant.zero_point, 1))
    acc = emit_matmul(low, node, x.src, f"{node.input[1]}_int", w.codes, w.etype, w.quant, None,
                      f"{node.output[0]}_acc", int(x.quant.zero_point[0]))
    steps = (("mul", acc_scale(x, w, (-1,))),)
    if len(node.input) > 2 and node.input[2]:
        steps += (("add", np.asarray(low.const(node, node.input[2], "C"), np.float32)),)
    low.chains[node.output[0]] = Chain(acc, steps)


# ----- float ops on a chain ------------------------------------------------------------------
def const_operand(low: QonnxLowering, node) -> tuple[Chain, np.ndarray, bool]:
    """(the chain, the constant, whether the constant is the first input)."""
    a, b = node.input[0], node.input[1]
    if not low.is_const(a) and not low.is_const(b):
        raise low.fail(node, "both inputs computed; accelsim needs one constant operand")
    first = low.is_const(a)
    c = low.chain(node, b if first else a)
    p = np.asarray(low.consts[a if first else b], np.float32)
    shape = low.tensors[c.src].shape
    try:
        p = trailing(p, len(shape))
        if np.broadcast_shapes(p.shape, shape[1:]) != shape[1:]:
            raise ValueError(f"constant of shape {p.shape} does not broadcast to {shape}")
    except ValueError as e:
        raise low.fail(node, str(e)) from None
    return c, p, first


def extend(low: QonnxLowering, node, c: Chain, *steps) -> None:
    low.chains[node.output[0]] = Chain(c.src, c.steps + steps)


@handles("Mul", "Add")
def mul_add(low: QonnxLowering, node) -> None:
    if node.op_type == "Add" and not any(low.is_const(n) for n in node.input):
        residual_add(low, node)
        return
    c, p, _ = const_operand(low, node)
    extend(low, node, c, (node.op_type.lower(), p))


def residual_add(low: QonnxLowering, node) -> None:
    """Two quantized tensors, added on the integers at the finer of their scales (IntegerAdd);
    the sum continues as a chain: * that scale."""
    a, b = (low.operand(node, n, "input") for n in node.input)
    scales = [np.float32(c.quant.scale[0]) for c in (a, b)]
    fine = min(scales)
    shifts = [float(np.log2(np.float64(s) / np.float64(fine))) for s in scales]
    if any(k != round(k) for k in shifts):
        raise low.fail(node, f"operand scales {scales[0]} and {scales[1]} are not a power of two "
                             "apart; accelsim adds quantized tensors at a common scale")
    shifts = [round(k) for k in shifts]
    if max(low.tensors[c.src].type.bits + k for c, k in zip((a, b), shifts, strict=True)) > 30:
        raise low.fail(node, "operand scales too far apart for an int32 sum")
    out = low.emit("IntegerAdd", node.name, [a.src, b.src], f"{node.output[0]}_int", INT32,
                   a_zero_point=int(a.quant.zero_point[0]), b_zero_point=int(b.quant.zero_point[0]),
                   a_shift=shifts[0], b_shift=shifts[1])
    low.chains[node.output[0]] = Chain(out, (("mul", fine),))


@handles("Concat")
def concat(low: QonnxLowering, node) -> None:
    """Tensors quantized alike, concatenated on the integers (qonnx concatenates their
    dequantizations, the same values)."""
    cs = [low.operand(node, n, "input") for n in node.input]
    t = low.tensors[cs[0].src]
    if any(not same_quant(c.quant, cs[0].quant) or low.tensors[c.src].type != t.type
           for c in cs[1:]):
        raise low.fail(node, "inputs of different types, scales or zero points; accelsim "
                             "concatenates tensors quantized alike")
    axis = attrs_of(node)["axis"] % len(t.shape)
    if axis == 0:
        raise low.fail(node, "concatenation along the batch axis")
    out = low.emit("Concat", node.name, [c.src for c in cs], f"{node.output[0]}_int", t.type,
                   cs[0].quant, **concat_attrs(axis, [c.quant for c in cs], cs[0].quant))
    low.chains[node.output[0]] = Chain(out, cs[0].steps, cs[0].quant)


@handles("Sub")
def sub(low: QonnxLowering, node) -> None:
    c, p, first = const_operand(low, node)
    if first:  # p - x = (-x) + p, exactly in float32
        extend(low, node, c, ("mul", np.float32(-1)), ("add", p))
    else:
        extend(low, node, c, ("add", -p))


@handles("Div")
def div(low: QonnxLowering, node) -> None:
    c, p, first = const_operand(low, node)
    if first:
        raise low.fail(node, "division by a computed tensor is not supported")
    extend(low, node, c, ("div", p))


@handles("BatchNormalization")
def batch_norm(low: QonnxLowering, node) -> None:
    """onnxruntime's inference batch norm: x * s + (B - mean * s), s = gamma / sqrt(var + eps)."""
    if len([o for o in node.output if o]) > 1:
        raise low.fail(node, "training mode (running statistics outputs) is not supported")
    c = low.chain(node, node.input[0])
    gamma, beta, mean, var = (np.asarray(low.const(node, n, "parameter"), np.float32)
                              for n in node.input[1:5])
    eps = np.float32(attrs_of(node).get("epsilon", 1e-5))
    inv_std = np.float32(1) / np.sqrt(var + eps)
    s = inv_std * gamma
    b = beta - mean * s
    shape = (-1,) + (1,) * (low.ndim(c) - 2)
    extend(low, node, c, ("mul", s.reshape(shape)), ("add", b.reshape(shape)))


@handles("Relu")
def relu(low: QonnxLowering, node) -> None:
    """After a quantizer (a plain nn.ReLU behind a QuantIdentity): on the integers, as the value
    stays on the grid: max(s * (q - zp), 0) = s * (max(q, zp) - zp). Elsewhere a float step."""
    c = low.chain(node, node.input[0])
    t = low.tensors[c.src]
    if (c.quant is None or t.type.kind != "int" or c.quant.zero_point.size != 1
            or not t.type.min <= c.quant.zero_point[0] <= t.type.max):
        extend(low, node, c, ("max", np.float32(0)))
        return
    out = low.emit("Clip", node.name, [c.src], f"{node.output[0]}_int", t.type, t.quant,
                   lo=int(c.quant.zero_point[0]), hi=t.type.max)
    low.chains[node.output[0]] = Chain(out, c.steps, c.quant)


@handles("Clip")
def clip(low: QonnxLowering, node) -> None:
    c = low.chain(node, node.input[0])
    steps = []
    for k, kind in ((1, "max"), (2, "min")):
        v = low.opt_const(node, k, "bound")
        if v is not None:
            steps.append((kind, np.float32(v)))
    extend(low, node, c, *steps)


def non_decreasing(c: Chain) -> bool:
    return all(np.all(np.asarray(p) >= 0) for kind, p in c.steps if kind in MONOTONE_KINDS)


@handles("MaxPool")
def max_pool(low: QonnxLowering, node) -> None:
    """On the integers: max commutes with a non-decreasing chain whose parameters are constant
    over each channel's plane (float32 rounding is monotone)."""
    c = low.chain(node, node.input[0])
    if not non_decreasing(c):
        raise low.fail(node, "max pooling after a decreasing scale (negative multiplier); "
                             "accelsim needs it after the quantizer")
    spatial = low.ndim(c) - 2
    if spatial > 0 and any(any(d != 1 for d in np.shape(p)[-spatial:]) for _, p in c.steps):
        raise low.fail(node, "max pooling after per-pixel parameters")
    one_d = spatial == 1  # MaxPool1d: a 2-D MaxPool over (1, L) between two reshapes
    src, node2 = (to_2d(low, node, c.src), as_2d(node)) if one_d else (c.src, node)
    t = low.tensors[src]
    op, attrs = layout_attrs(low, node2, t.shape)
    if has_empty_windows(t.shape[2:], attrs):
        raise low.fail(node, "a window reads only padding (qonnx gives -FLT_MAX there, which "
                             "no integer stands for); reduce the dilations or pads")
    out = low.emit(op, node.name, [src], f"{node.output[0]}_int", t.type, t.quant, **attrs)
    low.chains[node.output[0]] = Chain(from_2d(low, node, out) if one_d else out, c.steps,
                                       c.quant)


def pooled(low: QonnxLowering, node) -> Chain:
    c = low.chain(node, node.input[0])
    if c.quant is None or c.quant.zero_point.size != 1:
        raise low.fail(node, "average pooling of a value that is not quantized per tensor; "
                             "accelsim needs a Quant right before it")
    return c


@handles("GlobalAveragePool")
def global_average_pool(low: QonnxLowering, node) -> None:
    low.chains[node.output[0]] = global_pool(low, node)


def global_pool(low: QonnxLowering, node) -> Chain:
    """sum(q - zero_point) on the integers, then qonnx's float steps: * scale, / (H * W)."""
    c = pooled(low, node)
    t = low.tensors[c.src]
    out = low.emit("GlobalAveragePool", node.name, [c.src], f"{node.output[0]}_acc", INT32,
                   x_zero_point=int(c.quant.zero_point[0]))
    n = np.float32(np.prod(t.shape[2:]))
    return Chain(out, c.steps[-1:] + (("div", n),))


@handles("ReduceMean")
def reduce_mean(low: QonnxLowering, node) -> None:
    """torch's x.mean((2, 3)): a global average pool (onnxruntime's ReduceMean also divides the
    sum by the count), reshaped to (N, C) without keepdims."""
    a = attrs_of(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = low.const(node, node.input[1], "axes")
    nd = low.ndim(low.chain(node, node.input[0]))
    if nd != 4 or axes is None or sorted(int(d) % nd for d in np.ravel(axes)) != [2, 3]:
        raise low.fail(node, "only the mean over the two spatial axes of an NCHW tensor is "
                             "supported")
    c = global_pool(low, node)
    if a.get("keepdims", 1):
        low.chains[node.output[0]] = c
    else:
        move_chain(low, node, c, "Reshape", dict(shape=(0, low.tensors[c.src].shape[1])),
                   f"{node.name}_squeeze")


@handles("AveragePool")
def average_pool(low: QonnxLowering, node) -> None:
    """Each window's sum(q - zero_point) on the integers (SumPool), then qonnx's float steps:
    * scale, / the window's count (onnxruntime's float AveragePool sums, then divides)."""
    c = pooled(low, node)
    t = low.tensors[c.src]
    a = attrs_of(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(t.shape) != 4:
        raise low.fail(node, "only 2-D AveragePool with explicit pads is supported")
    if any(d != 1 for d in a.get("dilations", (1, 1))):
        raise low.fail(node, "dilations are not supported")
    attrs = dict(kernel_shape=tuple(a["kernel_shape"]), strides=tuple(a.get("strides", (1, 1))),
                 pads=tuple(a.get("pads", (0, 0, 0, 0))), ceil_mode=bool(a.get("ceil_mode", 0)),
                 count_include_pad=bool(a.get("count_include_pad", 0)))
    out = low.emit("SumPool", node.name, [c.src], f"{node.output[0]}_acc", INT32,
                   x_zero_point=int(c.quant.zero_point[0]), **attrs)
    count = window_counts(t.shape[2:], attrs, cut_at_pads=True).astype(np.float32)
    low.chains[node.output[0]] = Chain(out, c.steps[-1:] + (("div", count),))


@handles(*[op for op in LAYOUT_OPS if op != "MaxPool"])
def layout(low: QonnxLowering, node) -> None:
    """On the integers; per-element parameters move with the data."""
    if low.is_const(node.input[0]):
        layout_const(low, node)
        return
    c = low.chain(node, node.input[0])
    t = low.tensors[c.src]
    op, attrs = layout_attrs(low, node, t.shape)
    move_chain(low, node, c, op, attrs)


def move_chain(low: QonnxLowering, node, c: Chain, op: str, attrs: dict,
               name: str | None = None) -> None:
    """A layout op (IR node `name`, default the node's) on a chain's integers; per-element
    parameters move with the data."""
    t = low.tensors[c.src]
    out = low.emit(op, name or node.name, [c.src], f"{node.output[0]}_int", t.type, **attrs)
    new_shape = low.tensors[out].shape
    if not new_shape or new_shape[0] != t.shape[0] or (op == "Transpose" and attrs["perm"][0]):
        raise low.fail(node, "moves the batch axis")

    def move(p):
        p = np.asarray(p, np.float32)
        if p.size == 1:
            return p.reshape(())
        full = np.broadcast_to(p, t.shape[1:])
        if op == "Transpose":
            return np.ascontiguousarray(full.transpose([d - 1 for d in attrs["perm"][1:]]))
        return full.reshape(new_shape[1:])

    steps = tuple((kind, move(p)) for kind, p in c.steps)
    keep = c.quant if c.quant is not None and c.quant.scale.size == 1 else None
    low.chains[node.output[0]] = Chain(out, steps, keep)
    if keep is not None:
        low.tensors[out].quant = keep


def layout_const(low: QonnxLowering, node) -> None:
    """A constant moved (Brevitas exports a Linear layer's weights as Quant -> Transpose ->
    MatMul): its integer codes move alike, and their channel axis with them."""
    v = np.asarray(low.consts[node.input[0]])
    op, attrs = layout_attrs(low, node, v.shape)

    def move(a: np.ndarray) -> np.ndarray:
        if op == "Transpose":
            return np.ascontiguousarray(a.transpose(attrs["perm"]))
        return a.reshape(REGISTRY[op].shape(attrs, a.shape)[0])

    low.consts[node.output[0]] = move(v)
    f = low.folded.get(node.input[0])
    if f is None:
        return
    axis = f.quant.axis
    if axis is not None and op == "Transpose":
        axis = list(attrs["perm"]).index(axis)
    elif axis is not None and op != "Identity":
        return  # reshaped per-channel codes: no channel axis left to scale them by
    low.folded[node.output[0]] = Folded(move(f.codes), f.etype,
                                        Quant(f.quant.scale, f.quant.zero_point, axis))


def lower_qonnx(model: onnx.ModelProto, source: str) -> Graph:
    """The IR of a QONNX model (see the module docstring)."""
    return QonnxLowering(model, source).lower()
