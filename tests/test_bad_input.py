"""Bad input from a user: one clear line naming the file and the field or node, exit status 2,
no traceback. Each case goes through the real command-line entry point."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, WORKLOADS, assert_one_line_error
from onnx import TensorProto, helper

from accelsim.cli import main

HW = str(ROOT / "hwconfigs" / "edge_int8_16x16.yaml")
QOP = WORKLOADS / "digits_cnn_int8_qop.onnx"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def qlinear_model(scale: float = 0.5, shape=(1, 1, 4, 4), op="QLinearConv") -> onnx.ModelProto:
    inits = [onnx.numpy_helper.from_array(np.asarray(v), n) for n, v in [
        ("xs", np.float32(0.1)), ("xz", np.uint8(0)), ("w", np.ones((1, 1, 1, 1), np.int8)),
        ("ws", np.float32(scale)), ("wz", np.int8(0)), ("ys", np.float32(0.1)),
        ("yz", np.uint8(0))]]
    node = helper.make_node(op, ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            name="conv0")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [None] * 4)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_unknown_yaml_key(tmp_path, capsys):
    hw = tmp_path / "hw.yaml"
    hw.write_text("clock_mhz: 500\npe_array: {rows: 8, cols: 8, colour: red}\n")
    assert_one_line_error(*run_cli(capsys, "validate", hw), "hw.yaml", "pe_array.colour")


def test_wrong_type(tmp_path, capsys):
    hw = tmp_path / "hw.yaml"
    hw.write_text("clock_mhz: fast\n")
    assert_one_line_error(*run_cli(capsys, "validate", hw), "hw.yaml", "clock_mhz")


def test_bad_override(capsys):
    assert_one_line_error(*run_cli(capsys, "run", HW, QOP, "--set", "pe_array.rows=-3"),
                          "pe_array.rows")


@pytest.mark.parametrize("what", ["hardware", "workload"])
def test_missing_files(tmp_path, capsys, what):
    missing = tmp_path / "nothing.onnx"
    args = (missing, QOP) if what == "hardware" else (HW, missing)
    assert_one_line_error(*run_cli(capsys, "run", *args), "nothing.onnx")


def test_truncated_onnx(tmp_path, capsys):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(QOP.read_bytes()[: QOP.stat().st_size // 2])
    assert_one_line_error(*run_cli(capsys, "info", bad), "cut.onnx")


def test_garbage_onnx(tmp_path, capsys):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00\xffnot a model at all" * 10)
    assert_one_line_error(*run_cli(capsys, "info", bad), "junk.onnx")


def test_external_data_outside_the_folder(tmp_path, capsys):
    model = qlinear_model()
    for init in model.graph.initializer:
        if init.name == "w":
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            entry = init.external_data.add()
            entry.key, entry.value = "location", "../../etc/passwd"
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    assert_one_line_error(*run_cli(capsys, "info", path), "ext.onnx", "w", "outside")


@pytest.mark.parametrize("shape", [(1, 1, -4, 4), (1, 1, 1 << 40, 4)])
def test_negative_or_huge_dimensions(tmp_path, capsys, shape):
    path = tmp_path / "dims.onnx"
    onnx.save(qlinear_model(shape=shape), path)
    assert_one_line_error(*run_cli(capsys, "info", path), "dims.onnx")


def test_unsupported_op(tmp_path, capsys):
    model = qlinear_model()
    model.graph.node.append(helper.make_node("Softmax", ["y"], ["z"], name="soft"))
    model.graph.output[0].name = "z"
    path = tmp_path / "soft.onnx"
    onnx.save(model, path)
    assert_one_line_error(*run_cli(capsys, "info", path), "soft.onnx", "soft", "Softmax")


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scales(tmp_path, capsys, scale):
    path = tmp_path / "scale.onnx"
    onnx.save(qlinear_model(scale=scale), path)
    assert_one_line_error(*run_cli(capsys, "info", path), "scale.onnx", "conv0", "scale")


def test_float_graph_gets_a_hint(capsys):
    code, err = run_cli(capsys, "info", WORKLOADS / "digits_cnn_float.onnx")
    assert_one_line_error(code, err, "digits_cnn_float.onnx", "quantize")


def test_unknown_workload_format(tmp_path, capsys):
    path = tmp_path / "net.pb"
    path.write_text("x")
    assert_one_line_error(*run_cli(capsys, "info", path), "net.pb")


def test_bad_topology_csv(tmp_path, capsys):
    path = tmp_path / "topo.csv"
    path.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                    "Channels, Num Filter, Strides,\nConv1, 8, 8, 3, 3, three, 4, 1,\n")
    assert_one_line_error(*run_cli(capsys, "info", path), "topo.csv", "line 2")


def test_wrong_input_shape(tmp_path, capsys):
    data = tmp_path / "in.npz"
    np.savez(data, input=np.zeros((2, 3, 8, 8), np.float32))
    assert_one_line_error(*run_cli(capsys, "run", HW, QOP, "--input", data), "input")


def test_real_process_exit_status(tmp_path):
    """The installed entry point, in its own process: status 2 and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "accelsim.cli", "info", tmp_path / "none.onnx"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "none.onnx" in proc.stderr
