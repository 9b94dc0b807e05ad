"""accelsim's functional model against onnxruntime, the oracle, on random quantized graphs.

Outputs must be bit-identical wherever onnxruntime's own kernels are exact. On x86 CPUs without
VNNI, onnxruntime's uint8 x int8 GEMM adds pairs of products in saturating int16, so there the
uint8 x int8 cases use 7-bit weights (quantize_static's reduce_range remedy); `ORT_U8S8_EXACT`
probes which case this machine is in, and `test_u8s8_saturation_is_the_only_difference` measures
what happens with full-range weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import WORKLOADS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from accelsim.execute import execute
from accelsim.workload import load_workload

NP_TO_ONNX = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.int32: TensorProto.INT32,
              np.float32: TensorProto.FLOAT}
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort_session(model).run(None, feeds)[0]


def accelsim_run(model: onnx.ModelProto, feeds: dict, tmp_path) -> np.ndarray:
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    graph = load_workload(path)
    return execute(graph, feeds)[graph.outputs[0]]


def assert_same(model: onnx.ModelProto, feeds: dict, tmp_path_factory) -> None:
    """accelsim's output has onnxruntime's dtype, shape and values, bit for bit."""
    ref = ort_run(model, feeds)
    got = accelsim_run(model, feeds, tmp_path_factory.mktemp("m"))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} differ"


def make_model(nodes, inputs, output, inits, opset=13, ms=False) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)]
                                                 if ms else [])
    graph = helper.make_graph(nodes, "g", inputs, [output], inits)
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def const(name: str, value) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(value), name)


def probe_u8s8_exact() -> bool:
    """Does this machine's onnxruntime compute uint8 x int8 products exactly (VNNI) or saturate?"""
    a = np.full((1, 2), 255, np.uint8)
    b = np.full((2, 1), 127, np.int8)
    model = make_model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                       [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2])],
                       helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1]),
                       [const("b", b)])
    return int(ort_run(model, {"a": a})[0, 0]) == 2 * 255 * 127


ORT_U8S8_EXACT = probe_u8s8_exact()


def int_range(dtype, seven_bit=False) -> tuple[int, int]:
    if seven_bit:
        return -64, 63
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@st.composite
def scales(draw, n=1, tie_friendly=None):
    """Positive float32 scales; powers of two make requantization land exactly on .5 ties."""
    if tie_friendly is None:
        tie_friendly = draw(st.booleans())
    if tie_friendly:
        return np.array([2.0 ** draw(st.integers(-8, 2)) for _ in range(n)], np.float32)
    return np.array([draw(st.floats(1 / 8192, 4.0, width=32)) for _ in range(n)], np.float32)


@st.composite
def conv_case(draw):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and group == 1
    cin_g = 1 if depthwise else draw(st.integers(1, 4))
    cout_g = 1 if depthwise else draw(st.integers(1, 4))
    if depthwise:
        group = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 9))
    n = draw(st.integers(1, 2))
    return dict(n=n, c=cin_g * group, o=cout_g * group, h=h, w=w, k=(kh, kw), d=(dh, dw),
                s=(sh, sw), pads=pads, group=group)


def types_strategy():
    # onnxruntime's QLinearConv/QLinearMatMul: uint8 x {uint8, int8} and int8 x int8.
    return st.sampled_from([(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])


@HYP
@given(case=conv_case(), types=types_strategy(), data=st.data())
def test_qlinearconv_matches_onnxruntime(case, types, data, tmp_path_factory):
    xt, wt = types
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    seven = xt == np.uint8 and wt == np.int8 and not ORT_U8S8_EXACT
    x = rng.integers(*int_range(xt), (case["n"], case["c"], case["h"], case["w"]),
                     endpoint=True).astype(xt)
    wshape = (case["o"], case["c"] // case["group"], *case["k"])
    w = rng.integers(*int_range(wt, seven), wshape, endpoint=True).astype(wt)
    per_channel = data.draw(st.booleans())
    ties = data.draw(st.booleans())
    x_scale = data.draw(scales(1, ties))
    w_scale = data.draw(scales(case["o"] if per_channel else 1, ties))
    y_scale = data.draw(scales(1, ties))
    x_zp = xt(rng.integers(*int_range(xt), endpoint=True))
    # onnxruntime needs one weight zero point for all channels; int8 weights are symmetric.
    w_zp = wt(0 if wt == np.int8 else rng.integers(0, 256))
    y_zp = xt(rng.integers(*int_range(xt), endpoint=True))
    use_bias = data.draw(st.booleans())
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"] + (["b"] if use_bias else [])
    inits = [const("xs", x_scale[0]), const("xz", x_zp), const("w", w),
             const("ws", w_scale if per_channel else w_scale[0]),
             const("wz", np.full(case["o"], w_zp) if per_channel else w_zp),
             const("ys", y_scale[0]), const("yz", y_zp)]
    if use_bias:
        inits.append(const("b", rng.integers(-5000, 5000, case["o"]).astype(np.int32)))
    node = helper.make_node("QLinearConv", inputs, ["y"], kernel_shape=list(case["k"]),
                            strides=list(case["s"]), pads=case["pads"], dilations=list(case["d"]),
                            group=case["group"])
    model = make_model([node], [helper.make_tensor_value_info("x", NP_TO_ONNX[xt], x.shape)],
                       helper.make_tensor_value_info("y", NP_TO_ONNX[xt], [None] * 4), inits)
    assert_same(model, {"x": x}, tmp_path_factory)


@st.composite
def matmul_case(draw):
    lead = draw(st.sampled_from([(), (2,), (1, 3)]))
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 40)), draw(st.integers(1, 9))
    return lead, m, k, n


def matmul_operands(case, types, rng) -> tuple[np.ndarray, np.ndarray, bool]:
    """Random A (..., M, K) and B (K, N); B 7-bit where onnxruntime's u8 x s8 kernel saturates."""
    lead, m, k, n = case
    at, bt = types
    seven = at == np.uint8 and bt == np.int8 and not ORT_U8S8_EXACT
    a = rng.integers(*int_range(at), (*lead, m, k), endpoint=True).astype(at)
    b = rng.integers(*int_range(bt, seven), (k, n), endpoint=True).astype(bt)
    return a, b, seven


@HYP
@given(case=matmul_case(), types=types_strategy(), data=st.data())
def test_qlinearmatmul_matches_onnxruntime(case, types, data, tmp_path_factory):
    at, bt = types
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a, b, _ = matmul_operands(case, types, rng)
    n = b.shape[1]
    ties = data.draw(st.booleans())
    per_column = data.draw(st.booleans())
    a_scale, y_scale = data.draw(scales(1, ties)), data.draw(scales(1, ties))
    b_scale = data.draw(scales(n if per_column else 1, ties))
    a_zp = at(rng.integers(*int_range(at), endpoint=True))
    b_zp = bt(0 if bt == np.int8 else rng.integers(0, 256))
    y_zp = at(rng.integers(*int_range(at), endpoint=True))
    inits = [const("as", a_scale[0]), const("az", a_zp), const("b", b),
             const("bs", b_scale if per_column else b_scale[0]),
             const("bz", np.full(n, b_zp) if per_column else b_zp),
             const("ys", y_scale[0]), const("yz", y_zp)]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("a", NP_TO_ONNX[at], a.shape)],
                       helper.make_tensor_value_info("y", NP_TO_ONNX[at], [None] * a.ndim), inits)
    assert_same(model, {"a": a}, tmp_path_factory)


@HYP
@given(case=matmul_case(), types=types_strategy(), data=st.data())
def test_matmulinteger_matches_onnxruntime(case, types, data, tmp_path_factory):
    at, bt = types
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a, b, seven = matmul_operands(case, types, rng)
    n = b.shape[1]
    a_zp = at(rng.integers(*int_range(at), endpoint=True))
    b_zp = rng.integers(*int_range(bt, seven), n, endpoint=True).astype(bt)
    if bt == np.int8:
        b_zp[:] = 0  # onnxruntime's int8 B path assumes symmetric weights per column
    inits = [const("b", b), const("az", a_zp), const("bz", b_zp)]
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("a", NP_TO_ONNX[at], a.shape)],
                       helper.make_tensor_value_info("y", TensorProto.INT32, [None] * a.ndim),
                       inits)
    assert_same(model, {"a": a}, tmp_path_factory)


@HYP
@given(case=conv_case(), data=st.data())
def test_convinteger_matches_onnxruntime(case, data, tmp_path_factory):
    # onnxruntime's ConvInteger kernel takes uint8 x uint8.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 256, (case["n"], case["c"], case["h"], case["w"])).astype(np.uint8)
    w = rng.integers(0, 256, (case["o"], case["c"] // case["group"], *case["k"])).astype(np.uint8)
    x_zp, w_zp = np.uint8(rng.integers(0, 256)), np.uint8(rng.integers(0, 256))
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"],
                            kernel_shape=list(case["k"]), strides=list(case["s"]),
                            pads=case["pads"], dilations=list(case["d"]), group=case["group"])
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
                       helper.make_tensor_value_info("y", TensorProto.INT32, [None] * 4),
                       [const("w", w), const("xz", x_zp), const("wz", w_zp)], opset=10)
    assert_same(model, {"x": x}, tmp_path_factory)


def qdq_conv_model(case, act, wt, rng, x_scale, w_scale, y_scale, relu_fold: bool, seven: bool):
    """float -> Q -> DQ -> Conv(DQ w, DQ bias) -> Q -> DQ -> float, as quantize_static writes."""
    o = case["o"]
    w = rng.integers(*int_range(wt, seven), (o, case["c"] // case["group"], *case["k"]),
                     endpoint=True).astype(wt)
    act_info = np.iinfo(act)
    x_zp = act(rng.integers(act_info.min, act_info.max, endpoint=True))
    y_zp = act(act_info.min if relu_fold else rng.integers(act_info.min, act_info.max,
                                                          endpoint=True))
    bias_scale = (x_scale[0] * w_scale).astype(np.float32)
    inits = [const("xs", x_scale[0]), const("xz", x_zp), const("w", w), const("ws", w_scale),
             const("wz", np.zeros(o, wt)),
             const("b", rng.integers(-3000, 3000, o).astype(np.int32)),
             const("bs", bias_scale), const("bz", np.zeros(o, np.int32)),
             const("ys", y_scale[0]), const("yz", y_zp)]
    conv_attrs = dict(kernel_shape=list(case["k"]), strides=list(case["s"]), pads=case["pads"],
                      dilations=list(case["d"]), group=case["group"])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], **conv_attrs),
        helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    shape = (case["n"], case["c"], case["h"], case["w"])
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4), inits)


@HYP
@given(case=conv_case(), act=st.sampled_from([np.uint8, np.int8]), data=st.data())
def test_qdq_conv_matches_onnxruntime(case, act, data, tmp_path_factory):
    """onnxruntime fuses DQ -> Conv -> Q into QLinearConv (and int8 activations into uint8)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ties = data.draw(st.booleans())
    x_scale, y_scale = data.draw(scales(1, ties)), data.draw(scales(1, ties))
    w_scale = data.draw(scales(case["o"], ties))
    model = qdq_conv_model(case, act, np.int8, rng, x_scale, w_scale, y_scale,
                           data.draw(st.booleans()), seven=not ORT_U8S8_EXACT)
    x = (rng.standard_normal((case["n"], case["c"], case["h"], case["w"])) * 2).astype(np.float32)
    assert_same(model, {"x": x}, tmp_path_factory)


def test_u8s8_saturation_is_the_only_difference(tmp_path):
    """With full-range int8 weights, any difference from onnxruntime must come from its int16
    pair saturation: with 7-bit weights (same data otherwise) the two agree exactly."""
    rng = np.random.default_rng(7)
    k, n = 64, 16
    a = rng.integers(0, 256, (32, k)).astype(np.uint8)
    results = {}
    for seven in (False, True):
        b = rng.integers(*int_range(np.int8, seven), (k, n), endpoint=True).astype(np.int8)
        model = make_model([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                           [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape)],
                           helper.make_tensor_value_info("y", TensorProto.INT32, [None] * 2),
                           [const("b", b)])
        exact = a.astype(np.int64) @ b.astype(np.int64)
        got = accelsim_run(model, {"a": a}, tmp_path)
        assert np.array_equal(got, exact)  # accelsim is exact whatever the CPU
        results[seven] = int((ort_run(model, {"a": a}) != exact).sum())
    assert results[True] == 0
    assert (results[False] == 0) == ORT_U8S8_EXACT


@pytest.mark.parametrize("name", ["digits_cnn_int8_qdq", "digits_cnn_int8_qop"])
def test_bundled_int8_digits_identical(name, digits_test_set):
    x, _ = digits_test_set
    path = str(WORKLOADS / f"{name}.onnx")
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    graph = load_workload(path)
    got = execute(graph, {"input": x})[graph.outputs[0]]
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
