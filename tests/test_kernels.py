"""The kernels against a plain numpy int64 model of the accumulator and against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from onnx import TensorProto, helper

from accelsim.kernels import (
    Accumulator,
    binary,
    binary_conv2d_acc,
    binary_conv2d_acc_packed,
    binary_matmul_acc,
    binary_matmul_acc_packed,
    conv2d_acc,
    conv2d_acc_packed,
    integer,
    matmul_acc,
    matmul_acc_packed,
    pack_binary_conv_weights,
    pack_binary_matmul_weights,
    pack_bipolar,
    pack_conv_weights,
    pack_matmul_weights,
    requantize,
)
from accelsim.workload.ir import BIPOLAR, INT8, INT32, Graph, Node, Tensor

SETTINGS = settings(max_examples=40, deadline=None)

# (dtype, lowest, highest): u8, s8, int4 and 2-bit ranges in 8-bit arrays, int16, u16 in int32.
VALUE_TYPES = [
    (np.uint8, 0, 255),
    (np.int8, -128, 127),
    (np.int8, -8, 7),
    (np.uint8, 0, 3),
    (np.int16, -32768, 32767),
    (np.int32, 0, 65535),
]


# ---------------------------------------------------------------- numpy reference


def ref_products(x, w, x_zp, w_zp, strides, pads, dilations, group):
    """(N, O, OH, OW, K) int64 products in the reduction order (c, ky, kx)."""
    nb, channels, h, wd = x.shape
    o_ch, cg, kh, kw = w.shape
    og = o_ch // group
    pt, pl, pb, pr = pads
    xp = np.full((nb, channels, h + pt + pb, wd + pl + pr), x_zp, dtype=np.int64)
    xp[:, :, pt : pt + h, pl : pl + wd] = x
    xp -= x_zp
    oh = (h + pt + pb - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pl + pr - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((nb, channels, kh, kw, oh, ow), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilations[0], kx * dilations[1]
            cols[:, :, ky, kx] = xp[
                :,
                :,
                y0 : y0 + strides[0] * (oh - 1) + 1 : strides[0],
                x0 : x0 + strides[1] * (ow - 1) + 1 : strides[1],
            ]
    wc = w.astype(np.int64) - np.asarray(w_zp, dtype=np.int64).reshape(-1, 1, 1, 1)
    prods = np.empty((nb, o_ch, oh, ow, cg * kh * kw), dtype=np.int64)
    for o in range(o_ch):
        g = o // og
        xg = cols[:, g * cg : (g + 1) * cg].reshape(nb, cg * kh * kw, oh, ow)
        prods[:, o] = np.moveaxis(xg, 1, -1) * wc[o].reshape(-1)
    return prods


def ref_accumulate(prods, bias, acc, channel_axis):
    """The accumulator: exact sum wrapped to acc.bits, or clamped after every addition."""
    shape = [1] * (prods.ndim - 1)
    shape[channel_axis] = -1
    b = np.zeros(1, np.int64) if bias is None else np.asarray(bias, np.int64)
    b = np.broadcast_to(b.reshape(shape), prods.shape[:-1])
    lo, hi = -(1 << (acc.bits - 1)), (1 << (acc.bits - 1)) - 1
    if acc.overflow == "wrap":
        total = b + prods.sum(axis=-1)
        return ((total - lo) % (1 << acc.bits)) + lo
    total = np.clip(b, lo, hi)
    for k in range(prods.shape[-1]):
        total = np.clip(total + prods[..., k], lo, hi)
    return total


# ---------------------------------------------------------------- strategies


@st.composite
def tensor(draw, shape, vtype):
    dtype, lo, hi = vtype
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    return rng.choice(np.array([lo, hi]), size=shape).astype(dtype)


@st.composite
def accumulators(draw):
    return Accumulator(
        bits=draw(st.sampled_from([8, 12, 16, 20, 24, 32, 40, 48])),
        overflow=draw(st.sampled_from(["wrap", "saturate"])),
    )


@st.composite
def conv_cases(draw):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans())
    cg = 1 if depthwise else draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[2]), 7))
    w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[1] - pads[3]), 7))
    nb = draw(st.integers(1, 2))
    xt, wt = draw(st.sampled_from(VALUE_TYPES)), draw(st.sampled_from(VALUE_TYPES))
    x = draw(tensor((nb, cg * group, h, w), xt))
    wts = draw(tensor((og * group, cg, kh, kw), wt))
    x_zp = draw(st.integers(xt[1], xt[2]))
    w_zp = np.array([draw(st.integers(wt[1], wt[2])) for _ in range(og * group)], np.int64)
    bias = draw(st.none() | tensor((og * group,), (np.int32, -(2**31), 2**31 - 1)))
    return x, wts, x_zp, w_zp, bias, strides, pads, dil, group


# ---------------------------------------------------------------- integer kernels


@SETTINGS
@given(conv_cases(), accumulators())
def test_conv_matches_reference(case, acc):
    x, w, x_zp, w_zp, bias, strides, pads, dil, group = case
    got = conv2d_acc(x, w, x_zp, w_zp, bias, strides, pads, dil, group, acc)
    prods = ref_products(x, w, x_zp, w_zp, strides, pads, dil, group)
    want = ref_accumulate(prods, bias, acc, channel_axis=1)
    assert got.dtype == acc.dtype
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(
    st.integers(1, 9),
    st.integers(1, 40),
    st.integers(1, 9),
    st.sampled_from(VALUE_TYPES),
    st.sampled_from(VALUE_TYPES),
    accumulators(),
    st.data(),
)
def test_matmul_matches_reference(m, k, n, at, bt, acc, data):
    a = data.draw(tensor((m, k), at))
    b = data.draw(tensor((k, n), bt))
    a_zp = data.draw(st.integers(at[1], at[2]))
    b_zp = np.array([data.draw(st.integers(bt[1], bt[2])) for _ in range(n)], np.int64)
    bias = data.draw(st.none() | tensor((n,), (np.int64, -(2**40), 2**40)))
    got = matmul_acc(a, b, a_zp, b_zp, bias, acc)
    prods = (a.astype(np.int64) - a_zp)[:, :, None] * (b.astype(np.int64) - b_zp)[None]
    want = ref_accumulate(np.moveaxis(prods, 1, -1), bias, acc, channel_axis=1)
    assert got.dtype == acc.dtype
    np.testing.assert_array_equal(got, want)


def test_matmul_long_reduction_spans_several_blocks_of_b():
    """K large enough that the int16 GEMM splits b into several L2 blocks (and odd N, M)."""
    rng = np.random.default_rng(3)
    k = 8200
    n_block = integer.B_BLOCK_BYTES // (2 * (-(-k // integer.LANES) * integer.LANES))
    n = 2 * n_block + 3
    a = rng.integers(0, 256, (7, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    zps = rng.integers(-5, 5, n)
    got = matmul_acc(a, b, 100, zps, np.arange(n))
    want = (a.astype(np.int64) - 100) @ (b.astype(np.int64) - zps) + np.arange(n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("c", "o", "k", "stride", "group"),
    [(3, 5, 7, 2, 1), (100, 5, 3, 1, 1), (40, 6, 3, 1, 2), (200, 130, 3, 1, 1)],
)
def test_conv_int16_paths_over_several_blocks(c, o, k, stride, group):
    """Shapes that take the direct path and, without it, the fused im2col + GEMM over several
    row blocks (with a partial last tile of rows and of channels), the RGB-stem runs of 21
    values, and a b too large for the fused path (the K-blocked GEMM)."""
    rng = np.random.default_rng(c + o)
    x = rng.integers(0, 256, (2, c, 13, 11)).astype(np.uint8)
    w = rng.integers(-128, 128, (o, c // group, k, k)).astype(np.int8)
    zps = rng.integers(-3, 3, o)
    bias = rng.integers(-1000, 1000, o)
    pads = (k // 2, 1, k // 2, 0)
    prods = ref_products(x, w, 77, zps, (stride, stride), pads, (1, 1), group)
    want = ref_accumulate(prods, bias, Accumulator(), 1)
    packed = pack_conv_weights(w, zps, group)
    args = (77, bias, (stride, stride), pads, (1, 1))
    np.testing.assert_array_equal(conv2d_acc_packed(x, packed, *args), want)
    packed.direct = None  # the im2col GEMM paths that ungrouped shapes take without it
    np.testing.assert_array_equal(conv2d_acc_packed(x, packed, *args), want)


@st.composite
def direct_conv_cases(draw):
    """Ungrouped convolutions with short reductions and an even C * stride_x, the shapes of the
    direct (broadcast) path: odd runs kw*C (a zero weight pairs with the next value), channel
    counts that are not multiples of its 16, pixel counts not multiples of its 6, vertical
    dilation, batches, 7x7 stems."""
    sw = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 9))
    cg += (cg * sw) % 2
    og = draw(st.integers(1, 40))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dh = draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    strides = (draw(st.integers(1, 3)), sw)
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 15))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 15))
    nb = draw(st.integers(1, 2))
    xt = draw(st.sampled_from(VALUE_TYPES[:4]))
    wt = draw(st.sampled_from(VALUE_TYPES[:4]))
    x = draw(tensor((nb, cg, h, w), xt))
    wts = draw(tensor((og, cg, kh, kw), wt))
    x_zp = draw(st.integers(xt[1], xt[2]))
    w_zp = np.array([draw(st.integers(wt[1], wt[2])) for _ in range(og)], np.int64)
    bias = draw(st.none() | tensor((og,), (np.int32, -(2**31), 2**31 - 1)))
    return x, wts, x_zp, w_zp, bias, strides, pads, (dh, 1), 1


@settings(max_examples=30, deadline=None)
@given(direct_conv_cases(), accumulators())
def test_direct_conv_matches_reference(case, acc):
    x, w, x_zp, w_zp, bias, strides, pads, dil, group = case
    packed = pack_conv_weights(w, w_zp, group)
    assert packed.direct is not None
    got = conv2d_acc_packed(x, packed, x_zp, bias, strides, pads, dil, acc)
    prods = ref_products(x, w, x_zp, w_zp, strides, pads, dil, group)
    np.testing.assert_array_equal(got, ref_accumulate(prods, bias, acc, channel_axis=1))


def test_direct_conv_rgb_stem():
    """The ResNet stem (7x7, stride 2, 3 -> 64 channels) on a small image with u8 extremes,
    through the direct path, equals the reference and the GEMM path."""
    rng = np.random.default_rng(7)
    x = rng.choice(np.array([0, 255], np.uint8), (2, 3, 23, 21))
    w = rng.choice(np.array([-128, 127], np.int8), (67, 3, 7, 7))
    zps = rng.integers(-3, 3, 67)
    bias = rng.integers(-(2**31), 2**31 - 1, 67)
    packed = pack_conv_weights(w, zps, 1)
    assert packed.direct is not None
    args = (128, bias, (2, 2), (3, 3, 3, 3), (1, 1))
    got = conv2d_acc_packed(x, packed, *args)
    prods = ref_products(x, w, 128, zps, (2, 2), (3, 3, 3, 3), (1, 1), 1)
    np.testing.assert_array_equal(got, ref_accumulate(prods, bias, Accumulator(), 1))
    packed.direct = None  # the fused im2col + GEMM path
    np.testing.assert_array_equal(conv2d_acc_packed(x, packed, *args), got)


def test_saturation_order_is_bias_then_k():
    """Clamping after every addition depends on the order; the documented one is bias, then k."""
    a = np.array([[100, 100, -100]], np.int16)
    b = np.array([[1], [1], [1]], np.int16)
    acc = Accumulator(bits=8, overflow="saturate")
    # clamp(-50) -> -50, +100 -> 50, +100 -> 127 (clamped), -100 -> 27
    assert matmul_acc(a, b, 0, np.zeros(1, np.int64), np.array([-50]), acc)[0, 0] == 27
    wrap = Accumulator(bits=8, overflow="wrap")
    assert matmul_acc(a, b, 0, np.zeros(1, np.int64), np.array([-50]), wrap)[0, 0] == 50


def test_accumulator_validates():
    with pytest.raises(ValueError):
        Accumulator(bits=4)
    with pytest.raises(ValueError):
        Accumulator(overflow="clip")


# ---------------------------------------------------------------- packed weights


@SETTINGS
@given(conv_cases(), accumulators(), st.data())
def test_packed_conv_matches_raw_and_reference_on_several_inputs(case, acc, data):
    """Weights packed once serve several inputs (another zero point, another image size)."""
    x, w, x_zp, w_zp, bias, strides, pads, dil, group = case
    packed = pack_conv_weights(w, w_zp, group)
    w_before = w.copy()
    xt = next(t for t in VALUE_TYPES if t[0] == x.dtype and t[1] <= x.min() and x.max() <= t[2])
    x2 = data.draw(tensor((x.shape[0], x.shape[1], x.shape[2], x.shape[3] + 1), xt))
    for xi, zi in ((x, x_zp), (x2, data.draw(st.integers(xt[1], xt[2]))), (x, x_zp)):
        got = conv2d_acc_packed(xi, packed, zi, bias, strides, pads, dil, acc)
        want = ref_accumulate(
            ref_products(xi, w, zi, w_zp, strides, pads, dil, group), bias, acc, channel_axis=1
        )
        raw = conv2d_acc(xi, w, zi, w_zp, bias, strides, pads, dil, group, acc)
        assert got.dtype == raw.dtype == acc.dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(raw, want)
    np.testing.assert_array_equal(w, w_before)


@SETTINGS
@given(
    st.integers(1, 9),
    st.integers(1, 40),
    st.integers(1, 9),
    st.sampled_from(VALUE_TYPES),
    st.sampled_from(VALUE_TYPES),
    accumulators(),
    st.data(),
)
def test_packed_matmul_matches_raw_and_reference(m, k, n, at, bt, acc, data):
    b = data.draw(tensor((k, n), bt))
    b_zp = np.array([data.draw(st.integers(bt[1], bt[2])) for _ in range(n)], np.int64)
    bias = data.draw(st.none() | tensor((n,), (np.int64, -(2**40), 2**40)))
    packed = pack_matmul_weights(b, b_zp)
    for rows in (m, m + 7):
        a = data.draw(tensor((rows, k), at))
        a_zp = data.draw(st.integers(at[1], at[2]))
        got = matmul_acc_packed(a, packed, a_zp, bias, acc)
        prods = (a.astype(np.int64) - a_zp)[:, :, None] * (b.astype(np.int64) - b_zp)[None]
        want = ref_accumulate(np.moveaxis(prods, 1, -1), bias, acc, channel_axis=1)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(matmul_acc(a, b, a_zp, b_zp, bias, acc), want)


def test_packed_weights_do_not_follow_the_source_array():
    """Packing copies: writing into the array afterwards changes neither layout."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    zps = np.zeros(4, np.int64)
    packed = pack_conv_weights(w, zps, 1)
    narrow = Accumulator(12, "saturate")  # needs the ordered GEMM, on the int64 layout
    want = conv2d_acc(x, w, 7, zps, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    want_narrow = conv2d_acc(x, w, 7, zps, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, narrow)
    w[:] = 0
    got16 = conv2d_acc_packed(x, packed, 7, None, (1, 1), (1, 1, 1, 1), (1, 1))
    got64 = conv2d_acc_packed(x, packed, 7, None, (1, 1), (1, 1, 1, 1), (1, 1), narrow)
    np.testing.assert_array_equal(got16, want)
    np.testing.assert_array_equal(got64, want_narrow)
    assert packed.b16 is not None and packed.nbytes > packed.b16.nbytes


def test_packed_weights_reject_the_wrong_kernel():
    conv = pack_conv_weights(np.ones((2, 1, 1, 1), np.int8), np.zeros(2, np.int64), 1)
    mm = pack_matmul_weights(np.ones((3, 2), np.int8), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        matmul_acc_packed(np.ones((1, 3), np.int8), conv, 0, None)
    with pytest.raises(ValueError):
        conv2d_acc_packed(np.ones((1, 1, 2, 2), np.int8), mm, 0, None, (1, 1), (0,) * 4, (1, 1))
    with pytest.raises(ValueError):
        matmul_acc_packed(np.ones((1, 4), np.int8), mm, 0, None)


def _one_node_graph(op, w, attrs, bipolar):
    """x -> op(x, w) -> y with w a constant of the graph."""
    wt = BIPOLAR if bipolar else INT8
    tensors = {
        "x": Tensor("x", (1,), wt),
        "w": Tensor("w", w.shape, wt, data=w),
        "y": Tensor("y", (1,), INT32),
    }
    return Graph("g", tensors, [Node("n", op, ["x", "w"], ["y"], attrs)], ["x"], ["y"])


@pytest.mark.parametrize("bipolar", [False, True])
def test_ops_pack_constant_weights_once_across_runs(monkeypatch, bipolar):
    """The executor builds its Ops per run; the packed weights of a constant are reused."""
    from accelsim.ops import REGISTRY, conv, matmul

    calls = []
    for module, names in (
        (conv, ("pack_conv_weights", "pack_binary_conv_weights")),
        (matmul, ("pack_matmul_weights", "pack_binary_matmul_weights")),
    ):
        for name in names:
            original = getattr(module, name)

            def counting(*args, original=original):
                calls.append(original)
                return original(*args)

            monkeypatch.setattr(module, name, counting)
    rng = np.random.default_rng(5)
    sign = np.array([-1, 1], np.int8)
    w = rng.choice(sign, (4, 3, 3, 3)) if bipolar else rng.integers(-5, 5, (4, 3, 3, 3))
    w = w.astype(np.int8)
    conv_attrs = dict(
        strides=(1, 1),
        pads=(1, 1, 1, 1),
        dilations=(1, 1),
        group=1,
        x_zero_point=0,
        w_zero_point=np.zeros(4, np.int64),
    )
    b = w.reshape(4, -1).T.copy()
    cases = [
        ("Conv", w, conv_attrs, lambda: rng.choice(sign, (1, 3, 5, 5))),
        (
            "MatMul",
            b,
            dict(a_zero_point=0, b_zero_point=np.zeros(4)),
            lambda: rng.choice(sign, (6, 27)),
        ),
    ]
    for op, weights, attrs, make_x in cases:
        graph = _one_node_graph(op, weights, attrs, bipolar)
        node = graph.nodes[0]
        calls.clear()
        for _ in range(3):
            x = make_x()
            got = REGISTRY[op](node, graph).run(x, weights)[0]
            if op == "Conv":
                want = conv2d_acc(x, w, 0, np.zeros(4, np.int64), None, (1, 1), (1,) * 4, (1, 1), 1)
            else:
                want = x.astype(np.int64) @ b
            np.testing.assert_array_equal(got, want)
        assert len(calls) == 1
        # another array than the constant's (not a constant of the graph): packed per call
        REGISTRY[op](node, graph).run(make_x(), weights.copy())
        assert len(calls) == 2
        # the constant replaced by a new array: packed again
        graph.tensors["w"].data = weights.copy()
        REGISTRY[op](node, graph).run(make_x(), graph.tensors["w"].data)
        assert len(calls) == 3


# ---------------------------------------------------------------- onnxruntime


def run_ort(node, inputs, out_type=TensorProto.INT32, initializers=()):
    vis = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in inputs.items()
    ]
    graph = helper.make_graph(
        [node],
        "g",
        vis,
        [helper.make_tensor_value_info(node.output[0], out_type, None)],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


# onnxruntime's u8 x s8 kernel on AVX2 without VNNI (vpmaddubsw) saturates a pair of products
# at int16, so it is exact only when weights keep 7 bits (its reduce_range); s8 weights here do.
ORT_TYPES = [
    ((np.uint8, 0, 255), (np.uint8, 0, 255)),
    ((np.uint8, 0, 255), (np.int8, -64, 63)),
    ((np.int8, -128, 127), (np.int8, -128, 127)),
]


@SETTINGS
@given(conv_cases(), st.sampled_from(ORT_TYPES), st.data())
def test_conv_matches_onnxruntime_convinteger(case, types, data):
    x, w, _, _, _, strides, pads, dil, group = case
    (xt, wt) = types
    x = data.draw(tensor(x.shape, xt))
    w = data.draw(tensor(w.shape, wt))
    x_zp = data.draw(st.integers(xt[1], xt[2]))
    w_zp = data.draw(st.integers(wt[1], wt[2]))
    node = helper.make_node(
        "ConvInteger",
        ["x", "w", "xz", "wz"],
        ["y"],
        strides=list(strides),
        pads=list(pads),
        dilations=list(dil),
        group=group,
    )
    inputs = {"x": x, "w": w, "xz": np.array(x_zp, x.dtype), "wz": np.array(w_zp, w.dtype)}
    want = run_ort(node, inputs)
    w_zps = np.full(w.shape[0], w_zp, np.int64)
    got = conv2d_acc(x, w, x_zp, w_zps, None, strides, pads, dil, group)
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(
    st.integers(1, 9),
    st.integers(1, 300),
    st.integers(1, 9),
    st.sampled_from(ORT_TYPES),
    st.booleans(),
    st.data(),
)
def test_matmul_matches_onnxruntime_matmulinteger(m, k, n, types, per_column, data):
    at, bt = types
    a = data.draw(tensor((m, k), at))
    b = data.draw(tensor((k, n), bt))
    a_zp = data.draw(st.integers(at[1], at[2]))
    b_zp = np.array([data.draw(st.integers(bt[1], bt[2])) for _ in range(n if per_column else 1)])
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    inputs = {"a": a, "b": b, "az": np.array(a_zp, a.dtype), "bz": b_zp.astype(b.dtype)}
    want = run_ort(node, inputs)
    got = matmul_acc(a, b, a_zp, np.broadcast_to(b_zp, (n,)), None)
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- binary kernels


def test_pack_bipolar_bit_order():
    v = -np.ones(70, np.int8)
    v[[0, 3, 64, 69]] = 1
    np.testing.assert_array_equal(pack_bipolar(v), np.array([9, 1 + 32], np.uint64))


@SETTINGS
@given(conv_cases(), st.data())
def test_binary_conv_matches_integer_conv(case, data):
    x, w, _, _, _, strides, pads, dil, group = case
    x = data.draw(tensor(x.shape, (np.int8, -1, 1))) | 1
    w = data.draw(tensor(w.shape, (np.int8, -1, 1))) | 1
    got = binary_conv2d_acc(x, w, strides, pads, dil, group)
    zeros = np.zeros(w.shape[0], np.int64)
    want = conv2d_acc(x, w, 0, zeros, None, strides, pads, dil, group)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 200), st.integers(1, 9), st.data())
def test_binary_matmul_matches_integer_matmul(m, k, n, data):
    a = data.draw(tensor((m, k), (np.int8, -1, 1))) | 1
    b = data.draw(tensor((k, n), (np.int8, -1, 1))) | 1
    got = binary_matmul_acc(a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b)


def test_binary_conv_wide_reduction_and_padding():
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-1, 1], np.int8), size=(1, 70, 6, 5))
    w = rng.choice(np.array([-1, 1], np.int8), size=(4, 70, 3, 3))
    got = binary_conv2d_acc(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    want = conv2d_acc(x, w, 0, np.zeros(4, np.int64), None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_array_equal(got, want)


@st.composite
def binary_conv_cases(draw):
    """Shapes that reach every part of the binary kernel: channel counts that are not multiples
    of 4, more than 63 nibble steps (the byte-count fold), more than 3 pixel vectors (tiles of 1,
    2 and 3 vectors), more filters than a work item, strides, dilations and wide padding."""
    group = draw(st.sampled_from([1, 1, 2]))
    cg, og = draw(st.integers(1, 40)), draw(st.integers(1, 14))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - pads[0] - pads[2]), 20))
    w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - pads[1] - pads[3]), 20))
    nb = draw(st.integers(1, 2))
    x = draw(tensor((nb, cg * group, h, w), (np.int8, -1, 1))) | 1
    wts = draw(tensor((og * group, cg, kh, kw), (np.int8, -1, 1))) | 1
    return x, wts, strides, pads, dil, group


@settings(max_examples=25, deadline=None)
@given(binary_conv_cases())
def test_binary_conv_larger_shapes(case):
    x, w, strides, pads, dil, group = case
    got = binary_conv2d_acc(x, w, strides, pads, dil, group)
    want = conv2d_acc(x, w, 0, np.zeros(w.shape[0], np.int64), None, strides, pads, dil, group)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(binary_conv_cases(), st.data())
def test_packed_binary_conv_matches_raw_on_several_inputs(case, data):
    """One packing, several inputs (other sizes too); padding counts as 0, not -1."""
    x, w, strides, pads, dil, group = case
    packed = pack_binary_conv_weights(w, group)
    nb, c, h, wd = x.shape
    x2 = data.draw(tensor((nb, c, h + 2, wd + 1), (np.int8, -1, 1))) | 1
    zeros = np.zeros(w.shape[0], np.int64)
    for xi in (x, x2, x):
        got = binary_conv2d_acc_packed(xi, packed, strides, pads, dil)
        want = conv2d_acc(xi, w, 0, zeros, None, strides, pads, dil, group)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(binary_conv2d_acc(xi, w, strides, pads, dil, group), want)


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 200), st.integers(1, 9), st.data())
def test_packed_binary_matmul_matches_integer_matmul(m, k, n, data):
    b = data.draw(tensor((k, n), (np.int8, -1, 1))) | 1
    packed = pack_binary_matmul_weights(b)
    for rows in (m, m + 33):
        a = data.draw(tensor((rows, k), (np.int8, -1, 1))) | 1
        got = binary_matmul_acc_packed(a, packed)
        np.testing.assert_array_equal(got, a.astype(np.int64) @ b)
    with pytest.raises(ValueError):
        binary_matmul_acc_packed(np.ones((1, k + 1), np.int8), packed)


def test_binary_zero_counts_as_minus_one():
    x = np.array([[[[0, 1, -1, 2]]]], np.int8)
    w = np.array([[[[1]]]], np.int8)
    got = binary_conv2d_acc(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    np.testing.assert_array_equal(got, [[[[-1, 1, -1, 1]]]])


def test_binary_matmul_reduction_longer_than_a_16_bit_count():
    """K over 65535 bits: the kernel is called on chunks of K so that its 16-bit counts hold."""
    rng = np.random.default_rng(1)
    a = rng.choice(np.array([-1, 1], np.int8), size=(3, 70001))
    b = rng.choice(np.array([-1, 1], np.int8), size=(70001, 2))
    a[0] = 1
    b[:, 0] = 1
    got = binary_matmul_acc(a, b)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b)
    assert got[0, 0] == 70001


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_binary_tile_without_avx2_matches(monkeypatch, dtype):
    """The portable lookup (ctpop of the xor), used when numba does not target AVX2, gives the
    same counts as the vpshufb table, into an int16 or an int32 output."""
    rng = np.random.default_rng(2)
    steps = 70
    planes = rng.integers(0, 16, 2 * binary.PIXELS + steps, dtype=np.uint8)
    offsets = np.arange(steps, dtype=np.int64)
    widx = (4 * rng.integers(0, 16, binary.COLS * steps)).astype(np.uint8)
    counts = {}
    for avx2 in (True, False):
        monkeypatch.setattr(binary, "_has_avx2", lambda avx2=avx2: avx2)
        tile = binary._make_count_tile(2)

        @njit
        def run(out, tile=tile):
            tile(planes, 0, offsets, 0, steps, widx, 0, steps, binary.TABLE, out, 0, 64, 4 * steps)

        out = np.full(binary.COLS * 64, -7, dtype)
        run(out)
        counts[avx2] = out
    want = [
        [bin(int(planes[p + j]) ^ int(widx[c * steps + j]) // 4).count("1") for j in range(steps)]
        for c in range(binary.COLS)
        for p in range(64)
    ]
    np.testing.assert_array_equal(counts[True], 4 * steps - 2 * np.sum(want, axis=1))
    np.testing.assert_array_equal(counts[False], counts[True])


# ---------------------------------------------------------------- requantization


def ort_qlinearmatmul(acc_row, a_scale, y_scale, y_zp, y_type):
    """ORT's output row for accumulators acc_row (N,), made as a (1, 1) x (1, N) QLinearMatMul
    with a = 1 and all zero points but y's 0, so that acc[n] = b[n] (int8)."""
    b = np.asarray(acc_row).reshape(1, -1).astype(np.int8)
    y_dtype = np.uint8 if y_type == TensorProto.UINT8 else np.int8
    inputs = {"a": np.ones((1, 1), y_dtype), "b": b}
    inits = [
        onnx.numpy_helper.from_array(np.array(a_scale, np.float32), "as"),
        onnx.numpy_helper.from_array(np.array(0, y_dtype), "az"),
        onnx.numpy_helper.from_array(np.array(1.0, np.float32), "bs"),
        onnx.numpy_helper.from_array(np.array(0, np.int8), "bz"),
        onnx.numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        onnx.numpy_helper.from_array(np.array(y_zp, y_dtype), "yz"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    return run_ort(node, inputs, y_type, inits)[0]


@SETTINGS
@given(
    st.sampled_from([0.5, 0.25, 1.5, 0.1, 0.37, 3.0, 0.0078125]),
    st.sampled_from([1.0, 0.5, 0.3, 2.0, 0.0625]),
    st.sampled_from(
        [(TensorProto.UINT8, np.uint8, 0, 255), (TensorProto.INT8, np.int8, -128, 127)]
    ),
    st.data(),
)
def test_requantize_matches_onnxruntime_with_ties(a_scale, y_scale, ytype, data):
    onnx_type, dtype, lo, hi = ytype
    y_zp = data.draw(st.integers(lo, hi))
    acc = np.arange(-128, 128, dtype=np.int32)
    want = ort_qlinearmatmul(acc, a_scale, y_scale, y_zp, onnx_type)
    multiplier = np.float32(np.float32(a_scale) * np.float32(1.0) / np.float32(y_scale))
    got = requantize(acc, np.array([multiplier]), 0, y_zp, lo, hi, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_requantize_rounds_half_to_even_per_channel():
    acc = np.array([[1, 3, 5, -1, -3], [2, 6, 10, -2, -6]], np.int32)
    got = requantize(acc, np.array([0.5, 0.25], np.float32), 0, 0, -128, 127, np.int8)
    np.testing.assert_array_equal(got, [[0, 2, 2, 0, -2], [0, 2, 2, 0, -2]])


def test_requantize_saturates_and_takes_wide_accumulators():
    acc = np.array([2**40, -(2**40), 1000, -1000], np.int64)
    got = requantize(acc, np.array([1.0], np.float32), 0, 10, 0, 255, np.uint8)
    np.testing.assert_array_equal(got, [255, 0, 255, 0])


def test_packed_binary_conv_border_cache_per_geometry():
    """The border corrections are cached per geometry on the packed weights: other pads, strides
    and dilations on the same packing (more geometries than the cache holds) stay exact."""
    rng = np.random.default_rng(5)
    w = rng.choice(np.array([-1, 1], np.int8), (5, 7, 3, 3))
    x = rng.choice(np.array([-1, 1], np.int8), (2, 7, 9, 11))
    packed = pack_binary_conv_weights(w, 1)
    zeros = np.zeros(5, np.int64)
    geometries = [
        ((s, s), (p, q, q, p), (d, 1))
        for s in (1, 2)
        for p in (0, 1, 2)
        for q in (0, 2)
        for d in (1, 2)
    ]
    for strides, pads, dil in geometries + geometries[:3]:
        got = binary_conv2d_acc_packed(x, packed, strides, pads, dil)
        want = conv2d_acc(x, w, 0, zeros, None, strides, pads, dil, 1)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("strides", [(2, 2), (1, 2), (2, 1), (3, 2), (2, 3), (3, 3)])
@pytest.mark.parametrize("channels", [3, 5, 8])
def test_binary_conv_strided_phases(strides, channels):
    """Strided inputs are split into their phases first (even/odd columns for a horizontal
    stride of 2, a generic loop otherwise): odd and even sizes, channel counts that fill one,
    part of one or two nibbles, asymmetric padding."""
    rng = np.random.default_rng(channels * 10 + strides[0] * 3 + strides[1])
    w = rng.choice(np.array([-1, 1], np.int8), (6, channels, 3, 4))
    zeros = np.zeros(6, np.int64)
    for h, wd in ((9, 11), (10, 12), (7, 8)):
        x = rng.choice(np.array([-1, 1], np.int8), (2, channels, h, wd))
        pads = (1, 2, 0, 1)
        got = binary_conv2d_acc(x, w, strides, pads, (1, 1), 1)
        want = conv2d_acc(x, w, 0, zeros, None, strides, pads, (1, 1), 1)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2])
def test_binary_conv_dense_taps(channels, group):
    """Fewer than 4 channels per group: (tap, channel) bits packed densely across nibbles,
    reductions that end inside a nibble, strides 1 and 2, batch of 2."""
    rng = np.random.default_rng(channels * 7 + group)
    for kernel, strides, pads in (((7, 7), (2, 2), (3, 3, 3, 3)), ((3, 2), (1, 1), (1, 0, 2, 1))):
        w = rng.choice(np.array([-1, 1], np.int8), (4 * group, channels) + kernel)
        packed = pack_binary_conv_weights(w, group)
        assert packed.dense
        x = rng.choice(np.array([-1, 1], np.int8), (2, channels * group, 15, 13))
        got = binary_conv2d_acc_packed(x, packed, strides, pads, (1, 1))
        want = conv2d_acc(
            x, w, 0, np.zeros(4 * group, np.int64), None, strides, pads, (1, 1), group
        )
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("m", [10, 40, 64, 100, 130])
@pytest.mark.parametrize("n", [5, 12, 13, 25, 40])
def test_binary_matmul_wide_tiles(m, n):
    """Pixel counts that leave 1 or 2 vectors after the 3-vector tiles (the 1 x 6 and 2 x 4
    tiles) and channel counts that fill or do not fill a chunk of 12, with a reduction of several
    K chunks (the wide tiles add later chunks into the output)."""
    rng = np.random.default_rng(m * 100 + n)
    k = 4 * binary.K_CHUNK + 7 if (m, n) in ((40, 13), (10, 13)) else 77
    a = rng.choice(np.array([-1, 1], np.int8), (m, k))
    b = rng.choice(np.array([-1, 1], np.int8), (k, n))
    want = a.astype(np.int64) @ b
    np.testing.assert_array_equal(binary_matmul_acc(a, b), want)
    np.testing.assert_array_equal(binary_matmul_acc_packed(a, pack_binary_matmul_weights(b)), want)
