"""Every quantized operator besides conv/matmul against onnxruntime (CPU provider, default session
options), bit for bit: QLinearAdd and QLinearMul (and DQ -> Add/Mul -> Q), QLinearGlobalAveragePool,
QLinearAveragePool (and DQ -> AveragePool -> Q), QLinearConcat, MaxPool on integers,
QuantizeLinear / DequantizeLinear, and Relu / Clip between a DQ and a Q.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from test_onnxruntime_agreement import accelsim_run, assert_same, const, make_model, scales

from accelsim.errors import AccelsimError
from accelsim.ops.pool import has_empty_windows

ONNX_TYPE = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8,
             np.uint16: TensorProto.UINT16, np.int16: TensorProto.INT16,
             np.int32: TensorProto.INT32, np.float32: TensorProto.FLOAT}
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, ONNX_TYPE[dtype], shape)


def ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def zero_point(rng, dtype):
    return ints(rng, dtype, ())[()]


@st.composite
def broadcast_shapes(draw):
    """Two shapes that broadcast: equal, one scalar, or numpy broadcasting in any axis."""
    base = draw(st.lists(st.integers(1, 7), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["same", "scalar_a", "scalar_b", "general"]))
    if kind == "same":
        return tuple(base), tuple(base)
    if kind == "scalar_a":
        return draw(st.sampled_from([(), (1,)])), tuple(base)
    if kind == "scalar_b":
        return tuple(base), draw(st.sampled_from([(), (1,)]))
    a = [d if draw(st.booleans()) else 1 for d in base]
    b = [d if draw(st.booleans()) else 1 for d in base]
    a = a[draw(st.integers(0, len(a) - 1)):]
    return tuple(a), tuple(b)


def binary_model(op, dtype, a_shape, b_shape, qa, qb, qc):
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"],
                            domain="com.microsoft")
    inits = [const("as", qa[0]), const("az", dtype(qa[1])), const("bs", qb[0]),
             const("bz", dtype(qb[1])), const("cs", qc[0]), const("cz", dtype(qc[1]))]
    out_rank = len(np.broadcast_shapes(a_shape, b_shape))
    return make_model([node], [vi("a", dtype, a_shape), vi("b", dtype, b_shape)],
                      vi("c", dtype, [None] * out_rank), inits, ms=True)


def binary_qparams(data, rng, dtype):
    """Three (scale, zero point) pairs; power-of-two scales put results on rounding ties, and the
    spread of scales reaches both saturation and INT32 overflow of the float result."""
    ties = data.draw(st.booleans())
    return [(data.draw(scales(1, ties))[0], zero_point(rng, dtype)) for _ in range(3)]


@HYP
@given(op=st.sampled_from(["QLinearAdd", "QLinearMul"]), shapes=broadcast_shapes(),
       dtype=st.sampled_from([np.uint8, np.int8]), data=st.data())
def test_qlinear_binary(op, shapes, dtype, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    model = binary_model(op, dtype, *shapes, *binary_qparams(data, rng, dtype))
    feeds = {"a": ints(rng, dtype, shapes[0]), "b": ints(rng, dtype, shapes[1])}
    assert_same(model, feeds, tmp_path_factory)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinearmul_every_operand_pair(dtype, tmp_path_factory):
    """All 65,536 operand pairs, with seeded scales that keep most products inside the output
    range, one set of them powers of two (every result a multiple of 1/256: many exact ties)."""
    rng = np.random.default_rng(11)
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1, dtype=np.int64)
    a, b = (v.astype(dtype) for v in np.meshgrid(values, values, indexing="ij"))
    triples = [(np.float32(2**-3), np.float32(2**-4), np.float32(2**-1))]
    for _ in range(3):
        sa, sb = np.float32(rng.uniform(0.01, 1)), np.float32(rng.uniform(0.01, 1))
        triples.append((sa, sb, np.float32(sa * sb * rng.uniform(64, 512))))
    for triple in triples:
        q = [(s, zero_point(rng, dtype)) for s in triple]
        assert_same(binary_model("QLinearMul", dtype, a.shape, b.shape, *q), {"a": a, "b": b},
                    tmp_path_factory)


def qdq(nodes_between, n_inputs, in_shapes, out_rank, qin, qout, dtype, inits=()):
    """float inputs -> Q -> DQ -> (the float op) -> Q -> DQ -> float, as quantize_static writes;
    `nodes_between` reads x0f, x1f, ... and writes yf."""
    nodes, all_inits = [], list(inits)
    for k in range(n_inputs):
        all_inits += [const(f"s{k}", qin[k][0]), const(f"z{k}", dtype(qin[k][1]))]
        nodes += [helper.make_node("QuantizeLinear", [f"x{k}", f"s{k}", f"z{k}"], [f"x{k}q"]),
                  helper.make_node("DequantizeLinear", [f"x{k}q", f"s{k}", f"z{k}"], [f"x{k}f"])]
    all_inits += [const("ys", qout[0]), const("yz", dtype(qout[1]))]
    nodes += list(nodes_between) + [
        helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    inputs = [vi(f"x{k}", np.float32, in_shapes[k]) for k in range(n_inputs)]
    return make_model(nodes, inputs, vi("y", np.float32, [None] * out_rank), all_inits)


def float_feeds(rng, shapes, spread=4.0):
    return {f"x{k}": np.asarray(rng.standard_normal(s) * spread, np.float32)
            for k, s in enumerate(shapes)}


@HYP
@given(op=st.sampled_from(["Add", "Mul"]), shapes=broadcast_shapes(),
       dtype=st.sampled_from([np.uint8, np.int8]), data=st.data())
def test_qdq_binary(op, shapes, dtype, data, tmp_path_factory):
    """onnxruntime fuses DQ -> Add/Mul -> Q into QLinearAdd/QLinearMul."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    q = binary_qparams(data, rng, dtype)
    out_rank = len(np.broadcast_shapes(*shapes))
    model = qdq([helper.make_node(op, ["x0f", "x1f"], ["yf"])], 2, shapes, out_rank, q[:2],
                q[2], dtype)
    assert_same(model, float_feeds(rng, shapes), tmp_path_factory)


@pytest.mark.parametrize("op, trials", [("Add", 20), ("Mul", 3), ("AveragePool", 3)])
def test_qdq_int8_runs_in_uint8(op, trials, tmp_path_factory):
    """onnxruntime turns int8 Q -> DQ pairs into uint8 before fusing, and the float rounding of
    QLinearAdd, QLinearMul and QLinearAveragePool depends on the zero points' values: every int8
    operand (pair) under seeded scales (the pool's output scale its input's, as is common; there
    thousands of averages differ between the two domains, a few sums in 20 trials of Add)."""
    rng = np.random.default_rng(5)
    grid = np.arange(-128, 128)
    for _ in range(trials):
        q = [(np.float32(s), np.int8(z)) for s, z in zip(rng.uniform(0.01, 0.1, 2),
                                                       rng.integers(-20, 20, 2), strict=True)]
        zc = np.int8(rng.integers(-20, 20))
        if op == "AveragePool":
            shapes, qout = [(1, 1, 65536, 2)], (q[0][0], zc)
            values = [np.stack([g.ravel() for g in np.meshgrid(grid, grid)], axis=1)[None, None]]
            node = helper.make_node(op, ["x0f"], ["yf"], kernel_shape=[1, 2])
        else:
            shapes = [(256, 256), (256, 256)]
            values = list(np.meshgrid(grid, grid, indexing="ij"))
            node = helper.make_node(op, ["x0f", "x1f"], ["yf"])
            spread = q[0][0] * q[1][0] * 128 if op == "Mul" else q[0][0] * 2
            qout = (np.float32(spread * rng.uniform(0.5, 2)), zc)
        model = qdq([node], len(shapes), shapes, len(shapes[0]), q[:len(shapes)], qout, np.int8)
        feeds = {f"x{k}": ((v - q[k][1]) * q[k][0]).astype(np.float32)
                 for k, v in enumerate(values)}
        assert_same(model, feeds, tmp_path_factory)


@st.composite
def pool_case(draw, dilations=True):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilations else (1, 1)
    pads = [draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw)]
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 10))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 10))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
                kernel_shape=[kh, kw], strides=[sh, sw], pads=pads, dilations=[dh, dw],
                ceil_mode=int(draw(st.booleans())))


@HYP
@given(case=pool_case(), dtype=st.sampled_from([np.uint8, np.int8]), data=st.data())
def test_maxpool_on_integers(case, dtype, data, tmp_path_factory):
    """QOperator form: float -> QuantizeLinear -> MaxPool on the integers."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = case.pop("shape")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("MaxPool", ["xq"], ["y"], **case)]
    model = make_model(nodes, [vi("x", np.float32, shape)], vi("y", dtype, [None] * 4),
                       [const("s", np.float32(0.05)), const("z", zero_point(rng, dtype))])
    assert_same(model, {"x": float_feeds(rng, [shape])["x0"]}, tmp_path_factory)


@HYP
@given(case=pool_case(), dtype=st.sampled_from([np.uint8, np.int8]), same=st.booleans(),
       data=st.data())
def test_qdq_maxpool(case, dtype, same, data, tmp_path_factory):
    """DQ -> MaxPool -> Q: onnxruntime drops the pair when the parameters are equal, else pools
    the floats (where a window of padding only gives -FLT_MAX)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = case.pop("shape")
    qin = (data.draw(scales(1))[0], zero_point(rng, dtype))
    qout = qin if same else (data.draw(scales(1))[0], zero_point(rng, dtype))
    model = qdq([helper.make_node("MaxPool", ["x0f"], ["yf"], **case)], 1, [shape], 4, [qin],
                qout, dtype)
    assert_same(model, float_feeds(rng, [shape]), tmp_path_factory)


PADDING_ONLY = dict(shape=(1, 2, 2, 3), kernel_shape=[2, 2], strides=[1, 2], pads=[1, 1, 1, 1],
                    dilations=[3, 1], ceil_mode=1)


@pytest.mark.parametrize("form", ["qop", "qdq_same", "qdq_other"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_window_of_padding_only(form, dtype, tmp_path_factory):
    """Dilated windows that step over the whole input: onnxruntime gives the integer type's
    lowest value on integers, and -FLT_MAX (quantized to the lowest code) on floats."""
    case = dict(PADDING_ONLY)
    shape = case.pop("shape")
    assert has_empty_windows(shape[2:], case)
    rng = np.random.default_rng(3)
    qin = (np.float32(0.05), dtype(100 if dtype == np.uint8 else 10))
    if form == "qop":
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("MaxPool", ["xq"], ["y"], **case)]
        model = make_model(nodes, [vi("x", np.float32, shape)], vi("y", dtype, [None] * 4),
                           [const("s", qin[0]), const("z", qin[1])])
        assert_same(model, {"x": float_feeds(rng, [shape])["x0"]}, tmp_path_factory)
        return
    qout = qin if form == "qdq_same" else (np.float32(0.5), dtype(qin[1] + 7))
    model = qdq([helper.make_node("MaxPool", ["x0f"], ["yf"], **case)], 1, [shape], 4, [qin],
                qout, dtype)
    assert_same(model, float_feeds(rng, [shape]), tmp_path_factory)


def test_maxpool_pads_not_smaller_than_kernel_are_rejected(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("MaxPool", ["xq"], ["y"], "big_pads", kernel_shape=[2, 2],
                              pads=[2, 0, 0, 0])]
    model = make_model(nodes, [vi("x", np.float32, (1, 1, 3, 3))], vi("y", np.uint8, [None] * 4),
                       [const("s", np.float32(1)), const("z", np.uint8(0))])
    with pytest.raises(AccelsimError, match="big_pads.*MaxPool.*smaller than the kernel"):
        accelsim_run(model, {"x": np.zeros((1, 1, 3, 3), np.float32)}, tmp_path)


def global_pool_scales(data, hw):
    """Scales inside MLAS's range: x_scale / (y_scale * H * W) in [2^-32, 256)."""
    while True:
        xs, ys = data.draw(scales(1))[0], data.draw(scales(1))[0]
        if 2.0**-32 <= xs / (ys * np.float32(hw)) < 256:
            return xs, ys


@HYP
@given(hw=st.tuples(st.integers(1, 12), st.integers(1, 12)), c=st.integers(1, 20),
       dtype=st.sampled_from([np.uint8, np.int8]), form=st.sampled_from(["qop", "qdq"]),
       data=st.data())
def test_global_average_pool(hw, c, dtype, form, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (data.draw(st.integers(1, 2)), c, *hw)
    xs, ys = global_pool_scales(data, hw[0] * hw[1])
    qin, qout = (xs, zero_point(rng, dtype)), (ys, zero_point(rng, dtype))
    if form == "qdq":
        model = qdq([helper.make_node("GlobalAveragePool", ["x0f"], ["yf"])], 1, [shape], 4,
                    [qin], qout, dtype)
        assert_same(model, float_feeds(rng, [shape]), tmp_path_factory)
        return
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", channels_last=0)
    model = make_model([node], [vi("x", dtype, shape)], vi("y", dtype, [None] * 4),
                       [const("xs", xs), const("xz", dtype(qin[1])), const("ys", ys),
                        const("yz", dtype(qout[1]))], ms=True)
    assert_same(model, {"x": ints(rng, dtype, shape)}, tmp_path_factory)


@HYP
@given(case=pool_case(dilations=False), count_include_pad=st.integers(0, 1),
       dtype=st.sampled_from([np.uint8, np.int8]), form=st.sampled_from(["qop", "qdq"]),
       data=st.data())
def test_average_pool(case, count_include_pad, dtype, form, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = case.pop("shape")
    del case["dilations"]
    case["count_include_pad"] = count_include_pad
    xs, ys = global_pool_scales(data, case["kernel_shape"][0] * case["kernel_shape"][1])
    qin, qout = (xs, zero_point(rng, dtype)), (ys, zero_point(rng, dtype))
    if form == "qdq":
        model = qdq([helper.make_node("AveragePool", ["x0f"], ["yf"], **case)], 1, [shape], 4,
                    [qin], qout, dtype)
        assert_same(model, float_feeds(rng, [shape]), tmp_path_factory)
        return
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain="com.microsoft", **case)
    model = make_model([node], [vi("x", dtype, shape)], vi("y", dtype, [None] * 4),
                       [const("xs", qin[0]), const("xz", dtype(qin[1])), const("ys", qout[0]),
                        const("yz", dtype(qout[1]))], ms=True)
    assert_same(model, {"x": ints(rng, dtype, shape)}, tmp_path_factory)


@HYP
@given(n=st.integers(1, 4), axis=st.integers(-4, 3), dtype=st.sampled_from([np.uint8, np.int8]),
       form=st.sampled_from(["qop", "qdq"]), data=st.data())
def test_concat(n, axis, dtype, form, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    base = [data.draw(st.integers(1, 4)) for _ in range(4)]
    shapes = []
    for _ in range(n):
        s = list(base)
        s[axis] = data.draw(st.integers(1, 3))
        shapes.append(tuple(s))
    qout = (data.draw(scales(1))[0], zero_point(rng, dtype))
    qin = [qout if data.draw(st.booleans()) else (data.draw(scales(1))[0], zero_point(rng, dtype))
           for _ in range(n)]
    if form == "qdq":
        node = helper.make_node("Concat", [f"x{k}f" for k in range(n)], ["yf"], axis=axis)
        model = qdq([node], n, shapes, 4, qin, qout, dtype)
        assert_same(model, float_feeds(rng, shapes), tmp_path_factory)
        return
    inputs, inits = ["ys", "yz"], [const("ys", qout[0]), const("yz", dtype(qout[1]))]
    for k in range(n):
        inputs += [f"x{k}", f"s{k}", f"z{k}"]
        inits += [const(f"s{k}", qin[k][0]), const(f"z{k}", dtype(qin[k][1]))]
    node = helper.make_node("QLinearConcat", inputs, ["y"], domain="com.microsoft", axis=axis)
    model = make_model([node], [vi(f"x{k}", dtype, shapes[k]) for k in range(n)],
                       vi("y", dtype, [None] * 4), inits, ms=True)
    assert_same(model, {f"x{k}": ints(rng, dtype, shapes[k]) for k in range(n)},
                tmp_path_factory)


QUANT_TYPES = [np.uint8, np.int8, np.uint16, np.int16]


def awkward_floats(rng, shape, scale):
    """Normal values, exact .5 ties of x / scale, NaN, +-inf and values far out of range."""
    x = (rng.standard_normal(shape) * 100 * scale).astype(np.float32)
    ties = ((rng.integers(-300, 300, shape) + 0.5) * scale).astype(np.float32)
    special = rng.choice(np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e10, -1e10, 0.0,
                                   -0.0], np.float32), shape)
    pick = rng.integers(0, 3, shape)
    return np.where(pick == 0, x, np.where(pick == 1, ties, special)).astype(np.float32)


@HYP
@given(dtype=st.sampled_from(QUANT_TYPES), per_axis=st.booleans(), data=st.data())
def test_quantize_linear(dtype, per_axis, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (2, 3, 4)
    axis = data.draw(st.integers(-3, 2))
    n = shape[axis] if per_axis else 1
    scale = data.draw(scales(n, True))
    zp = ints(rng, dtype, (n,))
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
    model = make_model([node], [vi("x", np.float32, shape)], vi("y", dtype, shape),
                       [const("s", scale if per_axis else scale[0]),
                        const("z", zp if per_axis else zp[0])], opset=21)
    assert_same(model, {"x": awkward_floats(rng, shape, float(scale[0]))}, tmp_path_factory)


@HYP
@given(dtype=st.sampled_from(QUANT_TYPES + [np.int32]), per_axis=st.booleans(), data=st.data())
def test_dequantize_linear(dtype, per_axis, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (2, 3, 4)
    axis = data.draw(st.integers(-3, 2))
    n = shape[axis] if per_axis else 1
    scale = data.draw(scales(n))
    zp = ints(rng, dtype, (n,)) if dtype != np.int32 else np.zeros(n, np.int32)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=axis)
    model = make_model([node], [vi("x", dtype, shape)], vi("y", np.float32, shape),
                       [const("s", scale if per_axis else scale[0]),
                        const("z", zp if per_axis else zp[0])], opset=21)
    assert_same(model, {"x": ints(rng, dtype, shape)}, tmp_path_factory)


@HYP
@given(op=st.sampled_from(["Relu", "Clip"]), dtype=st.sampled_from([np.uint8, np.int8]),
       same=st.booleans(), data=st.data())
def test_qdq_relu_clip(op, dtype, same, data, tmp_path_factory):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = (1, 3, 4, 5)
    qin = (data.draw(scales(1))[0], zero_point(rng, dtype))
    qout = qin if same else (data.draw(scales(1))[0], zero_point(rng, dtype))
    inputs, inits = ["x0f"], []
    if op == "Clip":
        lo, hi = sorted(data.draw(st.floats(-3, 3, width=32)) for _ in range(2))
        inputs += ["lo", "hi"]
        inits = [const("lo", np.float32(lo)), const("hi", np.float32(hi))]
    model = qdq([helper.make_node(op, inputs, ["yf"])], 1, [shape], 4, [qin], qout, dtype, inits)
    assert_same(model, float_feeds(rng, [shape]), tmp_path_factory)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_unsupported_binary_is_rejected(op, tmp_path):
    """16-bit QLinearAdd/QLinearMul do not exist in onnxruntime; accelsim says so rather than
    guess, naming the node."""
    model = binary_model(op, np.uint16, (2,), (2,), (np.float32(1), 0),
                         (np.float32(1), 0), (np.float32(1), 0))
    with pytest.raises(AccelsimError, match=rf"\({op}\).*8-bit"):
        accelsim_run(model, {"a": np.zeros(2, np.uint16), "b": np.zeros(2, np.uint16)},
                     tmp_path)

