"""The ONNX backend node tests for quantized operators, through accelsim, bit for bit.

The cases come from onnx.backend.test.loader.load_model_tests(kind="node"). Their scales, zero
points and weights are graph inputs; accelsim models a machine whose weights and quantization
parameters are constants, so every graph input but the node's first (the data) is frozen into an
initializer with the case's value before loading. DynamicQuantizeLinear is not selected (accelsim
does not support it). Cases accelsim cannot run are listed with the reason, and each must really be
rejected at load with an AccelsimError, so the list cannot silently grow; the cases onnxruntime
itself cannot run are listed too, and each must really fail there.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from accelsim.errors import AccelsimError
from accelsim.execute import execute
from accelsim.workload import load_workload

SELECTED = re.compile(
    r"test_((de)?quantizelinear|qlinearconv|qlinearmatmul|convinteger|matmulinteger)(_|$)")

_FP8 = "float8 types are not supported"
_SUB_BYTE = "sub-byte (int4/uint4/int2/uint2/float4) types are not supported"
_BLOCKED = "blocked quantization (block_size) is not supported"
_B_3D = "QLinearMatMul with a 3-D B (batched weights) is not supported"
UNSUPPORTED = {
    "test_dequantizelinear_e4m3fn": _FP8,
    "test_dequantizelinear_e4m3fn_float16": _FP8,
    "test_dequantizelinear_e4m3fn_zero_point": _FP8,
    "test_dequantizelinear_e5m2": _FP8,
    "test_dequantizelinear_uint4": _SUB_BYTE,
    "test_dequantizelinear_int4": _SUB_BYTE,
    "test_dequantizelinear_uint2": _SUB_BYTE,
    "test_dequantizelinear_int2": _SUB_BYTE,
    "test_dequantizelinear_float4e2m1": _SUB_BYTE,
    "test_dequantizelinear_blocked": _BLOCKED,
    "test_quantizelinear_e4m3fn": _FP8,
    "test_quantizelinear_e5m2": _FP8,
    "test_quantizelinear_uint4": _SUB_BYTE,
    "test_quantizelinear_int4": _SUB_BYTE,
    "test_quantizelinear_uint2": _SUB_BYTE,
    "test_quantizelinear_int2": _SUB_BYTE,
    "test_quantizelinear_float4e2m1": _SUB_BYTE,
    "test_quantizelinear_blocked_asymmetric": _BLOCKED,
    "test_quantizelinear_blocked_symmetric": _BLOCKED,
    "test_qlinearmatmul_3D_uint8_float32": _B_3D,
    "test_qlinearmatmul_3D_uint8_float16": _B_3D,
    "test_qlinearmatmul_3D_int8_float32": _B_3D,
    "test_qlinearmatmul_3D_int8_float16": _B_3D,
}

# onnxruntime 1.32's CPU provider has no kernel for the opset these Q/DQ models use (the latest
# QuantizeLinear/DequantizeLinear versions), and its ConvInteger takes one weight zero point only.
_ORT_OPSET = "onnxruntime has no CPU kernel for this QuantizeLinear/DequantizeLinear version"
ORT_FAILS = {
    "test_convinteger_with_padding": "onnxruntime's ConvInteger needs a per-tensor w zero point",
    **{f"test_dequantizelinear{s}": _ORT_OPSET for s in (
        "", "_axis", "_e4m3fn", "_e4m3fn_float16", "_e4m3fn_zero_point", "_e5m2", "_uint16",
        "_int16", "_uint4", "_int4", "_uint2", "_int2", "_float4e2m1", "_blocked")},
    **{f"test_quantizelinear{s}": _ORT_OPSET for s in (
        "", "_axis", "_e4m3fn", "_e5m2", "_uint16", "_int16", "_uint4", "_int4", "_uint2",
        "_int2", "_float4e2m1", "_blocked_asymmetric", "_blocked_symmetric")},
}


def _cases():
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generating other ops' cases warns about overflows
        return {c.name: c for c in load_model_tests(kind="node") if SELECTED.match(c.name)}


CASES = _cases()


def feeds_of(case) -> dict:
    inputs, _ = case.data_sets[0]
    names = [i.name for i in case.model.graph.input]
    return {n: v if isinstance(v, onnx.TensorProto) else np.asarray(v)
            for n, v in zip(names, inputs, strict=True)}


def frozen(case, path) -> tuple[str, dict]:
    """Save the model with every input but the data frozen to its value; (data name, feeds)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    feeds = feeds_of(case)
    data = model.graph.node[0].input[0]
    for vi in model.graph.input:
        if vi.name == data:
            continue
        value = feeds[vi.name]
        if isinstance(value, onnx.TensorProto):
            init = onnx.TensorProto()
            init.CopyFrom(value)
            init.name = vi.name
        else:
            init = onnx.numpy_helper.from_array(value, vi.name)
        model.graph.initializer.append(init)
    keep = [vi for vi in model.graph.input if vi.name == data]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.save(model, path)
    return data, feeds


def test_lists_name_real_cases():
    assert set(UNSUPPORTED) <= set(CASES) and set(ORT_FAILS) <= set(CASES)
    assert len(CASES) - len(UNSUPPORTED) >= 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_node_case(name, tmp_path):
    case = CASES[name]
    path = tmp_path / "model.onnx"
    data, feeds = frozen(case, path)
    if name in UNSUPPORTED:
        with pytest.raises(AccelsimError):
            load_workload(path)
        return
    graph = load_workload(path)
    results = execute(graph, {data: feeds[data]})
    expected = case.data_sets[0][1]
    assert len(graph.outputs) == len(expected)
    for out, want in zip(graph.outputs, expected, strict=True):
        got, want = results[out], np.asarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backend_node_case_in_onnxruntime(name, tmp_path):
    """onnxruntime on the original (unfrozen) model: it agrees, or it is listed as failing."""
    case = CASES[name]
    feeds = feeds_of(case)
    try:
        session = ort.InferenceSession(case.model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        results = session.run(None, feeds)
    except Exception:
        assert name in ORT_FAILS, f"{name} fails in onnxruntime but is not listed"
        return
    assert name not in ORT_FAILS, f"{name} runs in onnxruntime now; unlist it"
    for got, want in zip(results, case.data_sets[0][1], strict=True):
        assert np.array_equal(got, np.asarray(want))
