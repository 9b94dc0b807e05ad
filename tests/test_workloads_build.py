"""The bundled workloads are what workloads/README.md says they are, and the build reproduces them.

Other tests compare accelsim with onnxruntime on these files; these make sure the files themselves
run, keep their recorded accuracies, match SCALE-Sim's published topologies byte for byte, and
can be rebuilt bit for bit from the script.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

WORKLOADS = Path(__file__).resolve().parent.parent / "workloads"
sys.path.insert(0, str(WORKLOADS))

import cnn_digits  # noqa: E402  (needs workloads/ on sys.path)
import resnet18  # noqa: E402
from digits_data import digits_split  # noqa: E402

DIGITS_FILES = [cnn_digits.FLOAT_FILE, *cnn_digits.QUANTIZED]

# sha256 of the files as SCALE-Sim publishes them, and their layer counts as SCALE-Sim parses them.
CSVS = {
    "resnet18.csv": ("93bf63df0067caff9afa78f4bd1242917b13555515d384924d0eb1bee80c7cbc", 21),
    "alexnet.csv": ("14c77a27bad3cf35fa0f0a23736d09dfcdd33b3b62e88d30335b435a82d71e1b", 5),
    "mobilenet.csv": ("1554acd043e9f769a2ed02cfb67fc26d228549816606f51055aa7fd1f34ea4cc", 28),
    "gemm_mnk_test.csv": ("dd70f88e94f33993bfad4a70ad586d2619ccc055f81fefe6176144b34903955f", 1),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scalesim_rows(path: Path) -> list[list[str]]:
    """Rows as SCALE-Sim's topology_utils reads them: header skipped, last field dropped."""
    lines = path.read_text().splitlines()[1:]
    return [row.strip().split(",")[:-1] for row in lines if row.strip()]


def test_accuracy_json_lists_every_digits_model():
    table = json.loads((WORKLOADS / "accuracy.json").read_text())["digits_cnn"]
    assert sorted(table) == sorted(DIGITS_FILES)
    assert table[cnn_digits.FLOAT_FILE] >= 0.95
    assert all(acc >= 0.9 for acc in table.values())


@pytest.mark.parametrize("name", DIGITS_FILES)
def test_digits_model_reproduces_recorded_accuracy(name):
    recorded = json.loads((WORKLOADS / "accuracy.json").read_text())["digits_cnn"][name]
    assert cnn_digits.accuracy(WORKLOADS / name) == recorded


@pytest.mark.parametrize("name", DIGITS_FILES)
def test_digits_model_interface(name):
    """Input (batch, 1, 8, 8) float32 named `input`; output float32 logits (batch, 10)."""
    sess = ort.InferenceSession(str(WORKLOADS / name), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", ["batch", 1, 8, 8], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("logits", ["batch", 10], "tensor(float)")
    x = digits_split()[2][:3]
    assert sess.run(None, {"input": x})[0].shape == (3, 10)


def test_quantized_digits_models_have_the_documented_form():
    ops = {n: {node.op_type for node in onnx.load(WORKLOADS / n).graph.node} for n in DIGITS_FILES}
    assert "QLinearConv" in ops["digits_cnn_int8_qop.onnx"]
    assert "QGemm" in ops["digits_cnn_int8_qop.onnx"]
    for name in ("digits_cnn_int8_qdq.onnx", "digits_cnn_int4w_qdq.onnx"):
        assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops[name]
        assert "Relu" not in ops[name]  # folded into the zero points
    int4 = onnx.load(WORKLOADS / "digits_cnn_int4w_qdq.onnx")
    weights = [t for t in int4.graph.initializer if t.name.endswith(".w_quantized")]
    assert len(weights) == 3 and all(t.data_type == onnx.TensorProto.INT4 for t in weights)


@pytest.mark.parametrize("name", sorted(CSVS))
def test_scalesim_csv_is_as_published(name):
    digest, layers = CSVS[name]
    path = WORKLOADS / name
    assert _sha256(path) == digest
    rows = _scalesim_rows(path)
    assert len(rows) == layers
    width = 4 if name.startswith("gemm") else 8
    for row in rows:
        assert len(row) >= width and all(int(v) > 0 for v in row[1:width])
    assert not any("DP" in row[0] for row in rows)


def test_rebuilding_the_digits_models_gives_identical_bytes(tmp_path):
    """The slowest test here (about 10 s): trains and quantizes the CNN again from scratch."""
    rebuilt = cnn_digits.build(tmp_path)
    recorded = json.loads((WORKLOADS / "accuracy.json").read_text())["digits_cnn"]
    assert rebuilt == recorded
    for name in DIGITS_FILES:
        assert _sha256(tmp_path / name) == _sha256(WORKLOADS / name), name


def test_float_model_computes_the_numpy_forward_pass():
    """The exported graph wires the trained weights as training used them."""
    model = onnx.load(WORKLOADS / cnn_digits.FLOAT_FILE)
    params = {
        t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer
    }
    x = digits_split()[2][:16]
    expected, _ = cnn_digits.forward(params, x.astype(np.float64))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_resnet18_builds_identically_and_runs(tmp_path):
    """Tests and benchmarks build it into a cache folder; two builds must be the same file."""
    first = resnet18.build(tmp_path / "a")
    second = resnet18.build(tmp_path / "b")
    assert _sha256(first) == _sha256(second)
    graph = onnx.load(first).graph
    ops = [node.op_type for node in graph.node]
    assert (ops.count("Conv"), ops.count("Add"), ops.count("Gemm")) == (20, 8, 1)
    assert "Relu" not in ops  # folded into the zero points
    sess = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == (
        "input",
        [1, 3, 224, 224],
        "logits",
        [1, 1000],
    )
    logits = resnet18.check_runs(first)
    assert len(np.unique(logits)) > 50
