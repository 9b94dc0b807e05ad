"""Quantized ONNX networks of kinds no other test builds, against onnxruntime (CPU provider, default
session options: the fused QDQ graph DESIGN's numerics follow), bit for bit; and what accelsim does
not run is rejected in one line naming the node. Each test here pins a bug found by generating
random small CNNs/MLPs, quantizing them with quantize_static and comparing.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx import load as onnx_load
from onnx import save as onnx_save
from test_onnxruntime_agreement import assert_same, const, make_model


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary_with_a_constant_operand(op, tmp_path_factory):
    """quantize_static writes Add/Mul with a constant (a bias, a scale) as QLinearAdd/QLinearMul
    whose B is a quantized initializer."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 3, 1, 1), dtype=np.uint8)
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"],
                            domain="com.microsoft")
    inits = [const("as", np.float32(0.05)), const("az", np.uint8(120)), const("b", b),
             const("bs", np.float32(0.01)), const("bz", np.uint8(7)),
             const("cs", np.float32(0.07)), const("cz", np.uint8(100))]
    model = make_model([node], [vi("a", TensorProto.UINT8, a.shape)],
                       vi("c", TensorProto.UINT8, [None] * 4), inits, ms=True)
    assert_same(model, {"a": a}, tmp_path_factory)


def test_qlinear_concat_with_a_constant_input(tmp_path_factory):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (1, 2, 3, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 1, 3, 3), dtype=np.uint8)
    node = helper.make_node("QLinearConcat", ["ys", "yz", "a", "as", "az", "b", "bs", "bz"],
                            ["y"], domain="com.microsoft", axis=1)
    inits = [const("ys", np.float32(0.1)), const("yz", np.uint8(128)), const("as", np.float32(0.2)),
             const("az", np.uint8(100)), const("b", b), const("bs", np.float32(0.05)),
             const("bz", np.uint8(3))]
    model = make_model([node], [vi("a", TensorProto.UINT8, a.shape)],
                       vi("y", TensorProto.UINT8, [None] * 4), inits, ms=True)
    assert_same(model, {"a": a}, tmp_path_factory)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("kernel, strides", [((3, 3), (1, 1)), ((2, 3), (2, 1)), ((4, 1), (3, 2))])
def test_conv_auto_pad(auto_pad, kernel, strides, tmp_path_factory):
    """auto_pad instead of pads (TensorFlow exports write it)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 3, 7, 6), dtype=np.uint8)
    w = rng.integers(0, 256, (4, 3, *kernel), dtype=np.uint8)
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            kernel_shape=list(kernel), strides=list(strides), auto_pad=auto_pad)
    inits = [const("xs", np.float32(0.02)), const("xz", np.uint8(130)), const("w", w),
             const("ws", np.float32(0.004)), const("wz", np.uint8(128)),
             const("ys", np.float32(0.05)), const("yz", np.uint8(100))]
    model = make_model([node], [vi("x", TensorProto.UINT8, x.shape)],
                       vi("y", TensorProto.UINT8, [None] * 4), inits)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("op", ["MaxPool", "QLinearAveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_auto_pad(op, auto_pad, tmp_path_factory):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (1, 2, 7, 8), dtype=np.uint8)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad=auto_pad)
    inits = [const("xs", np.float32(0.02)), const("xz", np.uint8(130)),
             const("ys", np.float32(0.03)), const("yz", np.uint8(100))]
    if op == "MaxPool":  # as quantize_static writes it: DQ -> MaxPool -> Q
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
                 helper.make_node(op, ["xf"], ["yf"], **attrs),
                 helper.make_node("QuantizeLinear", ["yf", "xs", "xz"], ["y"])]
    else:
        nodes = [helper.make_node(op, ["x", "xs", "xz", "ys", "yz"], ["y"],
                                  domain="com.microsoft", **attrs)]
    model = make_model(nodes, [vi("x", TensorProto.UINT8, x.shape)],
                       vi("y", TensorProto.UINT8, [None] * 4), inits, ms=True)
    assert_same(model, {"x": x}, tmp_path_factory)


def qdq_unary(op: str, dtype, x_q, y_q, shape, **attrs):
    """float -> Q -> DQ -> op -> Q -> DQ, as quantize_static writes an activation."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node(op, ["xf"], ["yf"], **attrs),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    inits = [const("xs", np.float32(x_q[0])), const("xz", dtype(x_q[1])),
             const("ys", np.float32(y_q[0])), const("yz", dtype(y_q[1]))]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, shape)],
                      vi("y", TensorProto.FLOAT, [None] * len(shape)), inits, opset=17)


UNARY = [("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3,
         "beta": 0.4}), ("HardSwish", {}), ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.2})]


@pytest.mark.parametrize("op, attrs", UNARY)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qdq_activation(op, attrs, dtype, tmp_path_factory):
    """Every input code (a ramp over the input scale's range) through the activation, under
    seeded scales and zero points, power-of-two ones too (ties in the output quantization)."""
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    for trial in range(6):
        x_scale = 2.0 ** -int(rng.integers(3, 7)) if trial % 2 else float(rng.uniform(0.01, 0.1))
        y_scale = 2.0 ** -int(rng.integers(6, 9)) if trial % 2 else float(rng.uniform(0.002, 0.05))
        x_zp, y_zp = (int(rng.integers(info.min, info.max + 1)) for _ in range(2))
        x = ((np.arange(info.min, info.max + 1) - x_zp) * np.float32(x_scale)).astype(np.float32)
        model = qdq_unary(op, dtype, (x_scale, x_zp), (y_scale, y_zp), (2, 1, 8, 16), **attrs)
        assert_same(model, {"x": x.reshape(2, 1, 8, 16)}, tmp_path_factory)


@pytest.mark.parametrize("op, attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {}),
                                       ("QLinearLeakyRelu", {"alpha": 0.25})])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_activation(op, attrs, dtype, tmp_path_factory):
    """quantize_static's QOperator form of Sigmoid and LeakyRelu (com.microsoft)."""
    info = np.iinfo(dtype)
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    x = np.arange(info.min, info.max + 1).astype(dtype).reshape(1, 4, 8, 8)
    node = helper.make_node(op, ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
                            **attrs)
    inits = [const("xs", np.float32(0.0625)), const("xz", dtype(info.min + 100)),
             const("ys", np.float32(1 / 256)), const("yz", dtype(info.min + 3))]
    model = make_model([node], [vi("x", elem, x.shape)], vi("y", elem, [None] * 4), inits,
                       ms=True)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("op, attrs", UNARY)
@pytest.mark.parametrize("where", ["graph_output", "graph_input"])
def test_float_activation(op, attrs, where, tmp_path_factory):
    """An activation quantize_static leaves in float: the network's last op (DQ -> Tanh -> the
    float output) or its first (the float input -> Sigmoid -> Q)."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((3, 2, 5, 7)) * 4).astype(np.float32)
    if where == "graph_output":
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
                 helper.make_node(op, ["xf"], ["y"], **attrs)]
    else:
        nodes = [helper.make_node(op, ["x"], ["yf"], **attrs),
                 helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    model = make_model(nodes, [vi("x", TensorProto.FLOAT, x.shape)],
                       vi("y", TensorProto.FLOAT, [None] * 4),
                       [const("s", np.float32(0.03)), const("z", np.uint8(120))], opset=17)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("op, attrs", UNARY)
def test_float_functions_are_onnxruntimes(op, attrs):
    """accelsim.ops.activation's float kernels against onnxruntime's float operators on 300,000
    values: wide, narrow (near 0, where the polynomials matter most) and past the clamps."""
    import onnxruntime as ort

    from accelsim.ops.activation import FLOAT_FUNCTIONS

    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(100_000) * 8, rng.standard_normal(100_000) * 0.05,
                        np.linspace(-25, 25, 100_000)]).astype(np.float32)
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)],
                       [vi("x", TensorProto.FLOAT, x.shape)], vi("y", TensorProto.FLOAT, x.shape),
                       [], opset=17)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = FLOAT_FUNCTIONS[op](x, attrs)
    assert got.dtype == np.float32
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {x.size} differ"


@pytest.mark.parametrize("op, shape, axes", [
    ("Squeeze", (1, 6, 1, 1), None), ("Squeeze", (1, 6, 1, 1), [0, 2]),
    ("Squeeze", (2, 6, 1, 1), [-1, 2]), ("Unsqueeze", (2, 6), [0]),
    ("Unsqueeze", (2, 6), [0, 1, -1]), ("Unsqueeze", (2, 6), [2, 3])])
def test_squeeze_unsqueeze_axes(op, shape, axes, tmp_path_factory):
    """Axes that remove or move the batch dimension (Squeeze without axes removes a batch of 1)."""
    x = np.random.default_rng(9).integers(0, 256, shape, dtype=np.uint8)
    inits = [const("s", np.float32(0.1)), const("z", np.uint8(9))]
    inputs = ["xf"]
    if axes is not None:
        inits.append(const("axes", np.array(axes, np.int64)))
        inputs.append("axes")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
             helper.make_node(op, inputs, ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["y"])]
    rank = len(shape) + (len(axes) if op == "Unsqueeze" else -(len(axes) if axes else 3))
    model = make_model(nodes, [vi("x", TensorProto.UINT8, shape)],
                       vi("y", TensorProto.UINT8, [None] * rank), inits)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("first", ["Relu", "Clip", "Unsqueeze", "Transpose", "Flatten",
                                   "MaxPool"])
def test_float_op_on_the_network_input(first, tmp_path_factory):
    """quantize_static quantizes no Relu, Clip or layout op that reads the float input directly:
    accelsim runs it in float32 too (exact), then the Q."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 3, 4, 5)) * 8).astype(np.float32)
    inits = [const("s", np.float32(0.05)), const("z", np.int8(-3))]
    if first == "Clip":
        inits += [const("lo", np.float32(-1.5)), const("hi", np.float32(6.0))]
        node = helper.make_node("Clip", ["x", "lo", "hi"], ["yf"])
    elif first == "Unsqueeze":
        inits.append(const("axes", np.array([0], np.int64)))
        node = helper.make_node("Unsqueeze", ["x", "axes"], ["yf"])
    elif first == "Transpose":
        node = helper.make_node("Transpose", ["x"], ["yf"], perm=[0, 2, 3, 1])
    elif first == "MaxPool":
        node = helper.make_node("MaxPool", ["x"], ["yf"], kernel_shape=[2, 2], pads=[1, 0, 1, 1])
    else:
        node = helper.make_node(first, ["x"], ["yf"])
    nodes = [node, helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    rank = {"Unsqueeze": 5, "Flatten": 2}.get(first, 4)
    model = make_model(nodes, [vi("x", TensorProto.FLOAT, x.shape)],
                       vi("y", TensorProto.FLOAT, [None] * rank), inits)
    assert_same(model, {"x": x}, tmp_path_factory)


def weights_model(w: np.ndarray, w_elem: int, op: str, x_shape) -> object:
    """x (uint8) -> DQ -> Conv or Gemm (DQ'd weights of element type w_elem, per channel) -> Q."""
    o = w.shape[0]
    rng = np.random.default_rng(10)
    w_scale = rng.uniform(0.01, 0.05, o).astype(np.float32)
    inits = [const("xs", np.float32(0.04)), const("xz", np.uint8(120)),
             helper.make_tensor("w", w_elem, w.shape, w.flatten().tolist()),
             const("ws", w_scale), helper.make_tensor("wz", w_elem, (o,), [0] * o),
             const("b", rng.integers(-500, 500, o).astype(np.int32)),
             const("bs", (np.float32(0.04) * w_scale).astype(np.float32)),
             const("ys", np.float32(0.11)), const("yz", np.uint8(7))]
    attrs = dict(kernel_shape=list(w.shape[2:]), pads=[1, 0, 1, 2]) if op == "Conv" else \
        dict(transB=1)
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs"], ["bf"], axis=0),
             helper.make_node(op, ["xf", "wf", "bf"], ["yf"], **attrs),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    return make_model(nodes, [vi("x", TensorProto.UINT8, x_shape)],
                      vi("y", TensorProto.UINT8, [None] * len(x_shape)), inits, opset=21)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_int4_weights_compute_as_8_bit_weights_of_the_same_values(signed, op, tmp_path):
    """quantize_static's QInt4/QUInt4 weights: accelsim's result is the integer one, the same as
    onnxruntime's integer kernels give for the same weight values stored in 8 bits (onnxruntime
    itself runs int4 graphs in float)."""
    import onnxruntime as ort
    from test_onnxruntime_agreement import accelsim_run

    rng = np.random.default_rng(11)
    lo, hi = (-8, 7) if signed else (0, 15)
    w_shape, x_shape = ((5, 3, 3, 2), (2, 3, 6, 5)) if op == "Conv" else ((6, 20), (3, 20))
    w = rng.integers(lo, hi, w_shape, endpoint=True)
    x = rng.integers(0, 256, x_shape, dtype=np.uint8)
    four = TensorProto.INT4 if signed else TensorProto.UINT4
    eight = TensorProto.INT8 if signed else TensorProto.UINT8
    got = accelsim_run(weights_model(w, four, op, x_shape), {"x": x}, tmp_path)
    twin = weights_model(w, eight, op, x_shape)
    ref = ort.InferenceSession(twin.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_bundled_int4_digits_identical(digits_test_set):
    """workloads/digits_cnn_int4w_qdq.onnx on the 450 test digits: accelsim's integers equal
    onnxruntime's float path here."""
    import onnxruntime as ort
    from conftest import WORKLOADS

    from accelsim.execute import execute
    from accelsim.workload import load_workload

    x, _ = digits_test_set
    path = WORKLOADS / "digits_cnn_int4w_qdq.onnx"
    graph = load_workload(path)
    got = execute(graph, {"input": x})[graph.outputs[0]]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert np.array_equal(got, ref)


def dq_op_q(op_node, x, q_in, q_out, elem=TensorProto.UINT8, inits=(), opset=13):
    """x (8-bit) -> DQ -> op_node (reads xf, writes yf) -> Q, as quantize_static writes it."""
    dtype = np.uint8 if elem == TensorProto.UINT8 else np.int8
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]), op_node,
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    inits = [const("xs", np.float32(q_in[0])), const("xz", dtype(q_in[1])),
             const("ys", np.float32(q_out[0])), const("yz", dtype(q_out[1])), *inits]
    return make_model(nodes, [vi("x", elem, x.shape)], vi("y", elem, [None] * x.ndim), inits,
                      opset=opset)


@pytest.mark.parametrize("mode, pads", [
    ("constant", [0, 0, 1, 2, 0, 0, 2, 0]), ("constant", [0, 1, 0, -1, 0, 0, 1, 1]),
    ("reflect", [0, 0, 2, 1, 0, 0, 1, 2]), ("edge", [0, 0, 0, 3, 0, 0, 2, 0])])
@pytest.mark.parametrize("same_q", [True, False])
def test_qdq_pad(mode, pads, same_q, tmp_path_factory):
    """DQ -> Pad -> Q (quantize_static's QDQPad): on the integers, the constant 0 as the zero
    point; a different output Q requantizes."""
    x = np.random.default_rng(12).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    node = helper.make_node("Pad", ["xf", "pads"], ["yf"], mode=mode)
    q_out = (0.05, 17) if same_q else (0.07, 100)
    model = dq_op_q(node, x, (0.05, 17), q_out, inits=[const("pads", np.array(pads, np.int64))])
    assert_same(model, {"x": x}, tmp_path_factory)


def test_qoperator_pad(tmp_path_factory):
    """quantize_static's QOperator Pad: on uint8, the constant is the zero point's initializer."""
    x = np.random.default_rng(13).integers(0, 256, (1, 2, 3, 4), dtype=np.uint8)
    node = helper.make_node("Pad", ["x", "pads", "z"], ["y"])
    inits = [const("pads", np.array([0, 0, 1, 1, 0, 0, 2, 1], np.int64)),
             const("z", np.uint8(77)), const("s", np.float32(0.1))]
    model = make_model([node, helper.make_node("DequantizeLinear", ["y", "s", "z"], ["yf"])],
                       [vi("x", TensorProto.UINT8, x.shape)], vi("yf", TensorProto.FLOAT,
                                                                   [None] * 4), inits)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("transform, nearest", [
    ("half_pixel", "round_prefer_floor"), ("asymmetric", "floor"),
    ("align_corners", "round_prefer_ceil"), ("pytorch_half_pixel", "ceil"),
    ("tf_half_pixel_for_nn", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil")])
@pytest.mark.parametrize("scales, sizes", [((1, 1, 2, 2), None), ((1, 1, 3, 1.5), None),
                                           ((1, 1, 0.5, 0.75), None), (None, (2, 3, 7, 5))])
def test_qdq_resize_nearest(transform, nearest, scales, sizes, tmp_path_factory):
    """DQ -> Resize (nearest) -> Q, up and down, by scales and by sizes."""
    x = np.random.default_rng(14).integers(-128, 128, (2, 3, 6, 8), dtype=np.int8)
    names = ["xf", "", "scales"] if sizes is None else ["xf", "", "", "sizes"]
    inits = ([const("scales", np.array(scales, np.float32))] if sizes is None
             else [const("sizes", np.array(sizes, np.int64))])
    node = helper.make_node("Resize", names, ["yf"], mode="nearest",
                            coordinate_transformation_mode=transform, nearest_mode=nearest)
    model = dq_op_q(node, x, (0.05, -3), (0.05, -3), TensorProto.INT8, inits)
    assert_same(model, {"x": x}, tmp_path_factory)


def test_resize_linear_is_rejected(tmp_path):
    from test_onnxruntime_agreement import accelsim_run

    from accelsim.errors import UnsupportedError

    x = np.zeros((1, 1, 2, 2), np.uint8)
    node = helper.make_node("Resize", ["xf", "", "scales"], ["yf"], mode="linear")
    model = dq_op_q(node, x, (0.1, 0), (0.1, 0),
                    inits=[const("scales", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(UnsupportedError, match=r"node \S* \(Resize\): mode linear"):
        accelsim_run(model, {"x": x}, tmp_path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape, axis, opset", [((3, 10), -1, 13), ((2, 5, 3, 4), 1, 13),
                                                ((4, 1000), None, 13), ((2, 3, 4), 1, 11),
                                                ((2, 3, 4), None, 11)])
def test_qlinear_softmax(dtype, shape, axis, opset, tmp_path_factory):
    """QOperator softmax (com.microsoft QLinearSoftmax), as quantize_static writes it (output
    scale 1/256, zero point 0 or -128), and with other parameters; rows of one dominant value
    reach onnxruntime's int8 wrap of 128."""
    rng = np.random.default_rng(15)
    info = np.iinfo(dtype)
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    for x_scale, y_scale, y_zp in [(0.1, 1 / 256, info.min), (0.9, 1 / 256, info.min),
                                   (0.03, 1 / 200, info.min + 20)]:
        x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        x.reshape(-1)[:: 7] = info.max
        attrs = {"opset": opset} | ({} if axis is None else {"axis": axis})
        node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"],
                                domain="com.microsoft", **attrs)
        inits = [const("xs", np.float32(x_scale)), const("xz", dtype(info.min + 50)),
                 const("ys", np.float32(y_scale)), const("yz", dtype(y_zp))]
        model = make_model([node], [vi("x", elem, shape)], vi("y", elem, [None] * len(shape)),
                           inits, ms=True)
        assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("opset", [11, 13])
def test_qdq_softmax(dtype, opset, tmp_path_factory):
    """DQ -> Softmax -> Q (quantize_static's QDQ form; onnxruntime fuses it into
    QLinearSoftmax, computed in uint8 for int8 graphs), with Softmax's default axis of the
    opset (1, flattening the rest, before 13)."""
    rng = np.random.default_rng(16)
    info = np.iinfo(dtype)
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    for x_scale in (0.05, 0.3, 1.1):
        x = rng.integers(info.min, info.max + 1, (5, 3, 4), dtype=dtype)
        x[0, 1, 3] = info.max
        node = helper.make_node("Softmax", ["xf"], ["yf"])
        model = dq_op_q(node, x, (x_scale, info.min + 30), (1 / 256, info.min), elem,
                        opset=opset)
        assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("params", ["float", "dequantized"])
def test_unfused_batch_norm(params, tmp_path_factory):
    """DQ -> BatchNormalization -> Q: quantize_static keeps an unfused batch norm in float (its
    scale and B quantized and dequantized in QDQ form); onnxruntime computes it in float32."""
    rng = np.random.default_rng(17)
    c = 6
    x = rng.integers(0, 256, (2, c, 5, 7), dtype=np.uint8)
    scale = (rng.random(c) + 0.5).astype(np.float32)
    bias = (rng.standard_normal(c) * 0.3).astype(np.float32)
    inits = [const("mean", (rng.standard_normal(c) * 0.2).astype(np.float32)),
             const("var", (rng.random(c) + 0.2).astype(np.float32))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"])]
    if params == "float":
        inits += [const("scale", scale), const("bias", bias)]
    else:
        for name, v in (("scale", scale), ("bias", bias)):
            s = np.float32(np.abs(v).max() / 127)
            inits += [const(f"{name}_q", np.round(v / s).astype(np.int8)),
                      const(f"{name}_s", s), const(f"{name}_z", np.int8(0))]
            nodes.append(helper.make_node("DequantizeLinear",
                                          [f"{name}_q", f"{name}_s", f"{name}_z"], [name]))
    nodes += [helper.make_node("BatchNormalization", ["xf", "scale", "bias", "mean", "var"],
                               ["yf"], epsilon=1e-3),
              helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    inits += [const("xs", np.float32(0.02)), const("xz", np.uint8(128)),
              const("ys", np.float32(0.015)), const("yz", np.uint8(120))]
    model = make_model(nodes, [vi("x", TensorProto.UINT8, x.shape)],
                       vi("y", TensorProto.UINT8, [None] * 4), inits, opset=15)
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 4, 4), (3, 16, 9, 11), (1, 5, 13, 13),
                                   (2, 24, 1, 3), (1, 6, 2, 2)])
@pytest.mark.parametrize("source", ["float_input", "after_relu", "dequantized"])
def test_float_global_average_pool(shape, source, tmp_path_factory):
    """A GlobalAveragePool that quantize_static leaves in float (its input unquantized, e.g.
    after an unfused batch norm in QOperator form, or its output the network's): onnxruntime's
    float32 kernels, whose summation order depends on C and on where the input comes from."""
    rng = np.random.default_rng(18)
    inits = [const("s", np.float32(0.07)), const("z", np.uint8(100))]
    if source != "dequantized":
        x = (rng.standard_normal(shape) * 10).astype(np.float32)
        relu = source == "after_relu"
        nodes = [helper.make_node("Relu", ["x"], ["xr"])] if relu else []
        nodes += [helper.make_node("GlobalAveragePool", ["xr" if relu else "x"], ["yf"]),
                  helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
        elem = TensorProto.FLOAT
    else:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
                 helper.make_node("GlobalAveragePool", ["xf"], ["y"])]
        elem = TensorProto.UINT8
    model = make_model(nodes, [vi("x", elem, shape)], vi("y", TensorProto.FLOAT, [None] * 4),
                       inits)
    assert_same(model, {"x": x}, tmp_path_factory)



class RandomNet:
    """A small random float CNN or MLP (seeded) of the ops an architect's network has, each
    block's shapes from ONNX shape inference."""

    ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish")
    BLOCKS = ("conv", "conv", "bn", "pool", "residual", "se", "concat", "pad", "resize",
              "transpose", "reshape")

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], [], 0
        self.input_shape = (int(self.rng.choice([1, 2, 3])), int(self.rng.choice([1, 3])),
                            int(self.rng.integers(5, 13)), int(self.rng.integers(5, 13)))

    def const(self, value) -> str:
        self.k += 1
        self.inits.append(const(f"c{self.k}", np.asarray(value)))
        return f"c{self.k}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        self.k += 1
        self.nodes.append(helper.make_node(op, inputs, [f"t{self.k}"], name=f"{op}{self.k}",
                                           **attrs))
        return f"t{self.k}"

    def floats(self, *shape, scale=1.0) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def model(self, output: str, rank: int | None):
        return make_model(self.nodes, [vi("input", TensorProto.FLOAT, self.input_shape)],
                          vi(output, TensorProto.FLOAT, None if rank is None else [None] * rank),
                          self.inits, opset=17)

    def shape(self, x: str) -> tuple[int, ...]:
        from onnx import shape_inference

        inferred = shape_inference.infer_shapes(self.model(x, None), strict_mode=True)
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            if v.name == x:
                return tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        raise AssertionError(x)

    def conv(self, x: str, out: int | None = None, pointwise: bool = False) -> str:
        r, (_, c, h, w) = self.rng, self.shape(x)
        kind = "pointwise" if pointwise else str(r.choice(["plain", "depthwise", "group"]))
        group = c if kind == "depthwise" else (2 if kind == "group" and c % 2 == 0 else 1)
        o = out or (c * int(r.integers(1, 3)) if kind == "depthwise" else int(r.integers(2, 9)))
        o = o if o % group == 0 else group
        k = (1, 1) if pointwise else [(3, 3), (1, 3), (3, 1), (2, 2), (5, 5)][r.integers(0, 5)]
        d = [1, 1] if pointwise else [int(r.choice([1, 1, 2])) for _ in "hw"]
        attrs = dict(kernel_shape=list(k), dilations=d, group=group,
                     strides=[1, 1] if pointwise else [int(r.choice([1, 1, 2])) for _ in "hw"])
        if pointwise:  # keeps the shape (residual and concatenated branches)
            attrs["pads"] = [0, 0, 0, 0]
        elif d == [1, 1] and r.random() < 0.25:
            attrs["auto_pad"] = "SAME_UPPER"
        else:
            attrs["pads"] = [int(v) for v in r.integers(0, 3, 4)]
            if min(n + attrs["pads"][i] + attrs["pads"][i + 2] - d[i] * (k[i] - 1)
                   for i, n in enumerate((h, w))) < 1:
                return self.conv(x, out, pointwise=True)
        inputs = [x, self.floats(o, c // group, *k, scale=1.5 / np.sqrt(c // group * k[0] * k[1]))]
        if r.random() < 0.7:
            inputs.append(self.floats(o, scale=0.2))
        return self.node("Conv", inputs, **attrs)

    def act(self, x: str) -> str:
        op = str(self.rng.choice(self.ACTIVATIONS))
        if op == "Clip":
            return self.node("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))])
        return self.node(op, [x])

    def block(self, x: str) -> str:
        r, (_, c, h, w) = self.rng, self.shape(x)
        kind = str(r.choice(self.BLOCKS))
        if kind == "conv":
            return self.act(self.conv(x))
        if kind == "bn":
            return self.node("BatchNormalization", [
                x, self.const((r.random(c) + 0.5).astype(np.float32)), self.floats(c, scale=0.1),
                self.floats(c, scale=0.1), self.const((r.random(c) + 0.5).astype(np.float32))])
        if kind == "pool" and min(h, w) >= 3:
            op = str(r.choice(["MaxPool", "AveragePool"]))
            extra = {"count_include_pad": int(r.random() < 0.5)} if op == "AveragePool" else {}
            return self.node(op, [x], kernel_shape=[int(r.choice([2, 3]))] * 2,
                             strides=[int(r.choice([1, 2]))] * 2, pads=[0, 1, 1, 0],
                             ceil_mode=int(r.random() < 0.3), **extra)
        if kind == "residual":
            return self.node("Add", [x, self.act(self.conv(x, out=c, pointwise=True))])
        if kind == "se":
            z = self.node("Conv", [self.node("GlobalAveragePool", [x]),
                                   self.floats(c, c, 1, 1, scale=0.5)], kernel_shape=[1, 1])
            return self.node("Mul", [x, self.node("Sigmoid", [z])])
        if kind == "concat":
            return self.node("Concat", [self.conv(x, pointwise=True),
                                        self.conv(x, pointwise=True)], axis=1)
        if kind == "pad":
            return self.node("Pad", [x, self.const(np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64))])
        if kind == "resize" and h * w < 100:
            return self.node("Resize", [x, "", self.const(np.array([1, 1, 2, 2], np.float32))],
                             mode="nearest")
        if kind == "reshape" and h % 2 == 0:
            return self.node("Reshape", [x, self.const(np.array([0, 2 * c, h // 2, w],
                                                                np.int64))])
        return self.node("Transpose", [x], perm=[0, 1, 3, 2])

    def build(self):
        r = self.rng
        x = self.conv("input")
        for _ in range(int(r.integers(1, 4))):
            x = self.block(x)
        head = str(r.choice(["Flatten", "Squeeze", "Reshape"]))
        if head == "Reshape":
            x = self.node("Reshape", [x, self.const(np.array([0, -1], np.int64))])
        else:
            x = self.node("GlobalAveragePool", [x])
            x = self.node(head, [x, self.const(np.array([2, 3], np.int64))][: 1 + (
                head == "Squeeze")])
        for _ in range(int(r.integers(1, 3))):
            f, o = self.shape(x)[1], int(r.integers(3, 12))
            if r.random() < 0.5:
                x = self.node("Gemm", [x, self.floats(o, f, scale=1 / np.sqrt(f)),
                                       self.floats(o, scale=0.1)], transB=1)
            else:
                x = self.node("MatMul", [x, self.floats(f, o, scale=1 / np.sqrt(f))])
            x = self.act(x) if r.random() < 0.5 else x
        if r.random() < 0.4:
            x = self.node("Softmax", [x])
        return self.model(x, 2)


class Calibration:
    """quantize_static's calibration data: a few seeded random inputs."""

    def __init__(self, shape, seed: int):
        rng = np.random.default_rng(seed)
        self.data = iter([{"input": (rng.standard_normal(shape) * 1.5).astype(np.float32)}
                          for _ in range(3)])

    def get_next(self):
        return next(self.data, None)


@pytest.mark.parametrize("seed", range(24))
def test_random_quantized_networks(seed, tmp_path):
    """Random networks of the ops above, quantized by quantize_static in QDQ and QOperator
    form, uint8 and int8 activations, per tensor and per channel, are bit-identical with
    onnxruntime (weights in 7 bits: reduce_range, so that onnxruntime's uint8 x int8 kernel is
    exact on CPUs without VNNI)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from test_onnxruntime_agreement import accelsim_run, ort_run

    net = RandomNet(seed)
    model = net.build()
    float_path, path = tmp_path / "float.onnx", tmp_path / "model.onnx"
    onnx_save(model, float_path)
    quantize_static(str(float_path), str(path), Calibration(net.input_shape, seed),
                    quant_format=[QuantFormat.QDQ, QuantFormat.QOperator][seed % 2],
                    activation_type=[QuantType.QUInt8, QuantType.QInt8][seed // 2 % 2],
                    weight_type=QuantType.QInt8, per_channel=seed // 4 % 2 == 1,
                    reduce_range=True)
    quantized = onnx_load(path)
    x = (np.random.default_rng(seed + 100).standard_normal(net.input_shape) * 1.5
         ).astype(np.float32)
    ref = ort_run(quantized, {"input": x})
    got = accelsim_run(quantized, {"input": x}, tmp_path)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} differ"


@pytest.mark.parametrize("pool", [
    dict(kernel_shape=[2, 2]), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1,
                                    count_include_pad=1),
    dict(kernel_shape=[2, 3], strides=[1, 3]), dict(kernel_shape=[6, 7])])
@pytest.mark.parametrize("channels", [3, 8])
def test_int8_qdq_units_onnxruntime_leaves_unfused(pool, channels, tmp_path_factory):
    """int8 QDQ (quantize_static's default): onnxruntime turns a Q -> DQ pair into uint8 only if
    one node reads the DQ, so a unit reading a shared tensor and writing a private one mixes
    int8 and uint8 and runs unfused, in float: here the AveragePool (in MLAS's float summation
    orders, NCHWc's for 8 channels) and the Add (a float32 add)."""
    rng = np.random.default_rng(19)
    x = (rng.integers(-40, 40, (2, channels, 6, 7)) * 0.125).astype(np.float32)
    q = [("s", np.float32(0.125)), ("z", np.int8(-3)), ("s2", np.float32(0.0625)),
         ("z2", np.int8(5))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
             helper.make_node("AveragePool", ["xf"], ["af"], **pool),
             helper.make_node("QuantizeLinear", ["af", "s", "z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "s", "z"], ["a"]),
             helper.make_node("Relu", ["xf"], ["rf"]),
             helper.make_node("QuantizeLinear", ["rf", "s", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["gf"]),
             helper.make_node("QuantizeLinear", ["gf", "s2", "z2"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "s2", "z2"], ["g"]),
             helper.make_node("Add", ["a", "g"], ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "s2", "z2"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s2", "z2"], ["y"])]
    model = make_model(nodes, [vi("x", TensorProto.FLOAT, x.shape)],
                       vi("y", TensorProto.FLOAT, [None] * 4), [const(n, v) for n, v in q])
    assert_same(model, {"x": x}, tmp_path_factory)


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_unnamed_nodes_and_a_written_out_batch(fmt, tmp_path):
    """A hand-built network: no node names (ONNX allows it; each layer is then OpType_INDEX,
    not one nameless layer the mapping refused) and a Reshape to (1, -1) in a batch-1 file, run
    here at batch 3 (its batch is copied from the input; it was a ValueError traceback), equal to
    onnxruntime run on each sample."""
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from test_onnxruntime_agreement import ort_run

    from accelsim import load_hardware, simulate
    from accelsim.execute import execute
    from accelsim.workload import load_workload

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        ("b", rng.standard_normal(4).astype(np.float32)),
        ("shape", np.array([1, -1], np.int64)),
        ("g", rng.standard_normal((144, 5)).astype(np.float32))]]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "g"], ["y"])]
    graph = helper.make_graph(nodes, "unnamed", [vi("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [vi("y", TensorProto.FLOAT, [1, 5])], inits)
    float_path, path = tmp_path / "float.onnx", tmp_path / "model.onnx"
    onnx_save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), float_path)
    quantize_static(str(float_path), str(path), Calibration((1, 1, 8, 8), 7),
                    quant_format=getattr(QuantFormat, fmt), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True)
    g = load_workload(path)
    compute = [n.name for n in g.nodes if n.op in ("Conv", "MatMul")]
    assert len(compute) == 2 and all(compute), compute
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    ref = np.concatenate([ort_run(onnx_load(path), {"input": x[i:i + 1]}) for i in range(3)])
    got = execute(g, {"input": x})[g.outputs[0]]
    assert got.shape == ref.shape and np.array_equal(got, ref)
    result = simulate(load_hardware("hwconfigs/edge_int8_16x16.yaml"), g)
    assert [r.name for r in result.layers if r.kind == "compute"] == compute
