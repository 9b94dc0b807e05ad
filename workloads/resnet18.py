"""An int8 ResNet-18 (224x224) with seeded random weights, so that nothing is downloaded.

Its values mean nothing, but its shapes, operator mix and size (about 12 MB of int8 weights) are
those of the network accelerator papers time; random He-initialised weights exercise the
integer kernels and requantization as well as trained ones do. Too large to commit: tests and
benchmarks call build(cache_dir) and build.py builds it on demand.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

SEED = 0
CALIB_INPUTS = 4
INPUT = "input"
OUTPUT = "logits"
FILE = "resnet18_int8_qdq.onnx"
PRODUCER = "accelsim-workloads"
STAGES = [64, 128, 256, 512]


class _Builder:
    """Accumulates nodes and BN-folded initializers for the torchvision ResNet-18 topology."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def conv(self, name, x, cin, cout, k, stride, relu):
        """Conv (He init) with a random BatchNorm folded into its weight and bias; optional Relu."""
        w = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        gamma = self.rng.uniform(0.5, 1.0, cout)
        beta = self.rng.normal(0.0, 0.1, cout)
        mean = self.rng.normal(0.0, 0.1, cout)
        var = self.rng.uniform(0.5, 1.5, cout)
        scale = gamma / np.sqrt(var + 1e-5)
        self._init(f"{name}.weight", w * scale[:, None, None, None])
        self._init(f"{name}.bias", beta - mean * scale)
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.weight", f"{name}.bias"],
                [name],
                name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return self.relu(name) if relu else name

    def relu(self, x):
        self.nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"], f"{x}.relu"))
        return f"{x}.relu"

    def block(self, name, x, cin, cout, stride):
        """A BasicBlock; a 1x1 strided conv on the shortcut when the shape changes."""
        y = self.conv(f"{name}.conv1", x, cin, cout, 3, stride, relu=True)
        y = self.conv(f"{name}.conv2", y, cout, cout, 3, 1, relu=False)
        if stride != 1 or cin != cout:
            x = self.conv(f"{name}.downsample.0", x, cin, cout, 1, stride, relu=False)
        self.nodes.append(helper.make_node("Add", [y, x], [f"{name}.add"], f"{name}.add"))
        return self.relu(f"{name}.add")

    def _init(self, name, a):
        self.inits.append(numpy_helper.from_array(a.astype(np.float32), name))


def float_model(seed: int = SEED) -> onnx.ModelProto:
    """The float ResNet-18, opset 13, input (1, 3, 224, 224), output logits (1, 1000)."""
    b = _Builder(np.random.default_rng(seed))
    x = b.conv("conv1", INPUT, 3, 64, 7, 2, relu=True)
    b.nodes.append(
        helper.make_node(
            "MaxPool",
            [x],
            ["maxpool"],
            "maxpool",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
    )
    x, cin = "maxpool", 64
    for stage, cout in enumerate(STAGES, start=1):
        for i in range(2):
            stride = 2 if stage > 1 and i == 0 else 1
            x = b.block(f"layer{stage}.{i}", x, cin, cout, stride)
            cin = cout
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["avgpool"], "avgpool"))
    b.nodes.append(helper.make_node("Flatten", ["avgpool"], ["flatten"], "flatten", axis=1))
    bound = 1.0 / np.sqrt(512)
    b._init("fc.weight", b.rng.uniform(-bound, bound, (1000, 512)))
    b._init("fc.bias", b.rng.uniform(-bound, bound, 1000))
    b.nodes.append(
        helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], [OUTPUT], "fc", transB=1)
    )
    graph = helper.make_graph(
        b.nodes,
        "resnet18",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1000])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=PRODUCER
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Calibration(CalibrationDataReader):
    """A few seeded standard-normal images (what a normalised photo looks like, roughly)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed + 1)
        shape = (CALIB_INPUTS, 1, 3, 224, 224)
        self._inputs = iter(rng.standard_normal(shape, dtype=np.float32))

    def get_next(self):
        x = next(self._inputs, None)
        return None if x is None else {INPUT: x}


def check_runs(path: Path) -> np.ndarray:
    """Runs the model once in onnxruntime; raises unless the logits are finite and not constant."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(SEED + 2).standard_normal((1, 3, 224, 224), dtype=np.float32)
    logits = sess.run([OUTPUT], {INPUT: x})[0]
    if logits.shape != (1, 1000) or not np.all(np.isfinite(logits)) or np.ptp(logits) == 0:
        raise RuntimeError(f"{path}: onnxruntime gave degenerate logits")
    return logits


def build(out_dir: Path, seed: int = SEED) -> Path:
    """Writes resnet18_int8_qdq.onnx into out_dir (atomically) and returns its path.

    QDQ int8, activations uint8 and weights int8 per channel, calibrated (MinMax) on a few seeded
    random inputs. Always rebuilds; callers that cache check for the file themselves.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".resnet18-") as tmp:
        path = Path(tmp) / FILE
        quantize_static(
            float_model(seed),
            path,
            _Calibration(seed),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,  # exact in onnxruntime on CPUs without VNNI (see cnn_digits.py)
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(path)
        model.producer_name = PRODUCER
        model.producer_version = ""
        onnx.save(model, path)
        check_runs(path)
        os.replace(path, out_dir / FILE)
    return out_dir / FILE
