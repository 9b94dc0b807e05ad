"""Quantized ONNX networks of kinds no other test builds, against onnxruntime (CPU provider, default
session options: the fused QDQ graph DESIGN's numerics follow), bit for bit; and what accelsim does
not run is rejected in one line naming the node. Each test here pins a bug found by generating
random small CNNs/MLPs, quantizing them with quantize_static and comparing.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
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
