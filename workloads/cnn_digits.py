"""A small CNN for scikit-learn's digits, trained in plain numpy and quantized by onnxruntime.

It is the smallest real network accelsim can be checked against: trained weights (so accuracy
means something), int8 QDQ and QOperator graphs and an int4-weight graph, all from one training
run with a fixed seed. Training runs in float64 on one BLAS thread, so a rerun on the same machine
gives the same weights bit for bit.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from digits_data import digits_split
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from threadpoolctl import threadpool_limits

SEED = 0
EPOCHS = 30
BATCH = 32
LR = 3e-3
CALIB_IMAGES = 256
CALIB_BATCH = 64
INPUT = "input"
OUTPUT = "logits"
PRODUCER = "accelsim-workloads"

FLOAT_FILE = "digits_cnn_float.onnx"
# reduce_range (7-bit int8 weights) keeps onnxruntime's uint8 x int8 kernel exact on x86 CPUs
# without VNNI, whose int16 pair sums saturate otherwise; int8 QDQ graphs run on that kernel too
# (onnxruntime converts their activations to uint8). See the top-level README, "Numerics".
QUANTIZED = {
    # file: (opset, format, activation type, weight type, per-channel weights, reduce_range)
    "digits_cnn_int8_qdq.onnx": (13, QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8, True, True),
    "digits_cnn_int8_qop.onnx": (
        13,
        QuantFormat.QOperator,
        QuantType.QUInt8,
        QuantType.QInt8,
        False,
        True,
    ),
    "digits_cnn_int4w_qdq.onnx": (
        21, QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt4, True, False,
    ),
}


def conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stride-1, pad-1 convolution as nine shifted matmuls; returns (output, padded input)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = np.broadcast_to(b[None, :, None, None], (x.shape[0], w.shape[0], h, wd)).copy()
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return out, xp


def conv3x3_grad(dout: np.ndarray, xp: np.ndarray, w: np.ndarray):
    """Gradients of conv3x3 with respect to its input, weights and bias."""
    h, wd = dout.shape[2:]
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(3):
        for j in range(3):
            xs = xp[:, :, i : i + h, j : j + wd]
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dout, xs)
            dxp[:, :, i : i + h, j : j + wd] += np.einsum("nohw,oc->nchw", dout, w[:, :, i, j])
    return dxp[:, :, 1:-1, 1:-1], dw, dout.sum(axis=(0, 2, 3))


def maxpool2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2/2 max pooling; also returns the mask of the winning positions for the backward pass."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    mask = blocks == out[:, :, :, None, :, None]
    return out, mask


def maxpool2_grad(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n, c, h2, _, w2, _ = mask.shape
    return (mask * dout[:, :, :, None, :, None]).reshape(n, c, h2 * 2, w2 * 2)


def forward(p: dict[str, np.ndarray], x: np.ndarray):
    a1, xp1 = conv3x3(x, p["conv1.w"], p["conv1.b"])
    r1 = np.maximum(a1, 0)
    m1, k1 = maxpool2(r1)
    a2, xp2 = conv3x3(m1, p["conv2.w"], p["conv2.b"])
    r2 = np.maximum(a2, 0)
    m2, k2 = maxpool2(r2)
    flat = m2.reshape(len(x), -1)
    logits = flat @ p["fc.w"].T + p["fc.b"]
    return logits, (xp1, a1, k1, xp2, a2, k2, flat, m2.shape)


def _backward(p, cache, dlogits):
    xp1, a1, k1, xp2, a2, k2, flat, m2_shape = cache
    g = {"fc.w": dlogits.T @ flat, "fc.b": dlogits.sum(axis=0)}
    dm2 = (dlogits @ p["fc.w"]).reshape(m2_shape)
    da2 = maxpool2_grad(dm2, k2) * (a2 > 0)
    dm1, g["conv2.w"], g["conv2.b"] = conv3x3_grad(da2, xp2, p["conv2.w"])
    da1 = maxpool2_grad(dm1, k1) * (a1 > 0)
    _, g["conv1.w"], g["conv1.b"] = conv3x3_grad(da1, xp1, p["conv1.w"])
    return g


def cross_entropy_grad(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The gradient of the batch's mean softmax cross-entropy with respect to the logits."""
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(labels)), labels] -= 1.0
    return prob / len(labels)


class Adam:
    """Adam (beta1 0.9, beta2 0.999, eps 1e-8), updating a dict of parameter arrays in place."""

    def __init__(self, p: dict[str, np.ndarray]):
        self.p = p
        self.m = {k: np.zeros_like(v) for k, v in p.items()}
        self.v = {k: np.zeros_like(v) for k, v in p.items()}
        self.step = 0

    def update(self, grads: dict[str, np.ndarray], lr: float) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.step += 1
        for k, gk in grads.items():
            self.m[k] = beta1 * self.m[k] + (1 - beta1) * gk
            self.v[k] = beta2 * self.v[k] + (1 - beta2) * gk * gk
            mh = self.m[k] / (1 - beta1**self.step)
            vh = self.v[k] / (1 - beta2**self.step)
            self.p[k] -= lr * mh / (np.sqrt(vh) + eps)


def train(seed: int = SEED) -> dict[str, np.ndarray]:
    """Trains the CNN with Adam on the fixed training split; float64 weights by layer name."""
    x_tr, y_tr, _, _ = digits_split()
    x_tr = x_tr.astype(np.float64)
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    p = {
        "conv1.w": he((8, 1, 3, 3), 9),
        "conv1.b": np.zeros(8),
        "conv2.w": he((16, 8, 3, 3), 72),
        "conv2.b": np.zeros(16),
        "fc.w": he((10, 64), 64),
        "fc.b": np.zeros(10),
    }
    adam = Adam(p)
    with threadpool_limits(1):
        for _ in range(EPOCHS):
            order = rng.permutation(len(x_tr))
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                logits, cache = forward(p, x_tr[idx])
                adam.update(_backward(p, cache, cross_entropy_grad(logits, y_tr[idx])), LR)
    return p


def to_onnx(p: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    """The float graph: Conv-Relu-MaxPool x2, Flatten, Gemm; input (batch, 1, 8, 8) float32."""
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in p.items()]
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", [INPUT, "conv1.w", "conv1.b"], ["conv1"], "conv1", **conv),
        helper.make_node("Relu", ["conv1"], ["relu1"], "relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], "pool1", **pool),
        helper.make_node("Conv", ["pool1", "conv2.w", "conv2.b"], ["conv2"], "conv2", **conv),
        helper.make_node("Relu", ["conv2"], ["relu2"], "relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], "pool2", **pool),
        helper.make_node("Flatten", ["pool2"], ["flat"], "flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], [OUTPUT], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=PRODUCER
    )
    model.ir_version = 10 if opset >= 21 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


class _Calibration(CalibrationDataReader):
    """A seeded subset of the training images, in a few batches."""

    def __init__(self, x: np.ndarray):
        self._batches = iter([x[i : i + CALIB_BATCH] for i in range(0, len(x), CALIB_BATCH)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def calibration_images(seed: int = SEED) -> np.ndarray:
    x_tr, _, _, _ = digits_split()
    idx = np.sort(np.random.default_rng(seed).choice(len(x_tr), CALIB_IMAGES, replace=False))
    return x_tr[idx]


def normalise(path: Path) -> None:
    """Rewrites a model with fixed producer fields, so its bytes do not name the tool versions."""
    model = onnx.load(path)
    model.producer_name = PRODUCER
    model.producer_version = ""
    onnx.save(model, path)


def accuracy(path: Path) -> float:
    """Top-1 accuracy on the fixed test split, as onnxruntime (CPU) computes it."""
    _, _, x_te, y_te = digits_split()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run([OUTPUT], {INPUT: x_te})[0]
    return float(np.mean(logits.argmax(axis=1) == y_te))


def build(out_dir: Path) -> dict[str, float]:
    """Trains, exports and quantizes the digits CNN into out_dir; returns accuracy by file name."""
    params = train()
    calib = calibration_images()
    float_path = out_dir / FLOAT_FILE
    onnx.save(to_onnx(params, 13), float_path)
    result = {FLOAT_FILE: accuracy(float_path)}
    for name, (opset, fmt, act, wt, per_channel, reduce_range) in QUANTIZED.items():
        path = out_dir / name
        quantize_static(
            to_onnx(params, opset),
            path,
            _Calibration(calib),
            quant_format=fmt,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=act,
            weight_type=wt,
        )
        normalise(path)
        result[name] = accuracy(path)
    return result
