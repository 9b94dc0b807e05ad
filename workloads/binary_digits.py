"""A binary network for scikit-learn's digits, trained in plain numpy and exported as QONNX.

The network that accelsim's binary (xnor-popcount) path is checked against, shaped the way
FINN/Brevitas binary networks are: first layer int8 weights on a uint8 input, binary (bipolar)
weights and activations in between, last layer int8 weights producing float logits:

    Quant(x, uint8) -> Conv 3x3 (int8 w) -> MaxPool -> BN -> BipolarQuant
      -> Conv 3x3 (bipolar w) -> MaxPool -> BN -> BipolarQuant -> Flatten
      -> MatMul (bipolar w) -> BN -> BipolarQuant -> MatMul (int8 w) -> Add bias -> logits

Activations are binarized by sign with the straight-through estimator. Pooling comes before
batch norm and sign (as in Courbariaux et al.'s BNNs): max-pooling +-1 values ties everywhere and
starves the gradient, which cost 15 points of accuracy here. Every scale is a power of
two (the input's 1/16, per-channel weight scales), so the float Conv/MatMul results that qonnx
computes are exact multiples of the integer accumulators: the export is bit-exact in float32.
The test accuracy is measured through qonnx's own execution. A float twin (same architecture,
no quantizers, hardtanh in place of sign) is trained too, for the float accuracy to compare with.
Training runs in float64 on one BLAS thread, so a rebuild writes the same bytes.
"""

import copy
from pathlib import Path

import numpy as np
import onnx
from cnn_digits import Adam, conv3x3, conv3x3_grad, cross_entropy_grad, maxpool2, maxpool2_grad
from digits_data import digits_split
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

SEED = 0
EPOCHS = 12
BATCH = 32
LR = 1e-2
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
INPUT = "x"
OUTPUT = "logits"
FILE = "digits_binary_qonnx.onnx"
PRODUCER = "accelsim-workloads"
ACCURACY_KEY = "qonnx_test_accuracy"
QONNX_DOMAIN = "qonnx.custom_op.general"
INPUT_SCALE = 1.0 / 16.0  # the digits have 17 grey levels, k/16: uint8 codes 0..16, exactly
WIDTHS = (16, 64, 64)  # conv1 channels, conv2 channels, hidden units


def po2_scale(w: np.ndarray) -> np.ndarray:
    """Per-output-channel power-of-two scale covering max|w| with narrow int8 [-127, 127]."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    return (2.0 ** np.ceil(np.log2(np.maximum(m, 1e-8) / 127.0))).astype(np.float32)


def int8_codes(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """qonnx's Quant arithmetic (float32 w / scale, clip, round half to even) on weights."""
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return np.round(np.clip(w.astype(np.float32) / s, -127, 127)).astype(np.float64)


def fake_int8(w: np.ndarray) -> np.ndarray:
    """The real values that the exported int8 weights stand for (output channels first)."""
    scale = po2_scale(w)
    return int8_codes(w, scale) * scale.reshape((-1,) + (1,) * (w.ndim - 1))


def bipolar(v: np.ndarray) -> np.ndarray:
    """BipolarQuant: +1 where v >= 0, else -1."""
    return np.where(v >= 0, 1.0, -1.0)


class Net:
    """The network's forward and backward passes; `binary` False gives the float twin."""

    def __init__(self, rng: np.random.Generator, binary: bool):
        c1, c2, h = WIDTHS
        self.binary = binary
        self.p = {
            "conv1.w": rng.standard_normal((c1, 1, 3, 3)) * np.sqrt(2.0 / 9),
            "conv2.w": rng.uniform(-1, 1, (c2, c1, 3, 3)) * (1.0 if binary else 0.2),
            "fc1.w": rng.uniform(-1, 1, (c2 * 4, h)) * (1.0 if binary else 0.2),
            "fc2.w": rng.standard_normal((h, 10)) * np.sqrt(1.0 / h),
            "fc2.b": np.zeros(10),
        }
        for name, c in (("bn1", c1), ("bn2", c2), ("bn3", h)):
            self.p[f"{name}.gamma"] = np.ones(c)
            self.p[f"{name}.beta"] = np.zeros(c)
        self.stats = {f"{n}.{s}": (np.zeros(c) if s == "mean" else np.ones(c))
                      for n, c in (("bn1", c1), ("bn2", c2), ("bn3", h)) for s in ("mean", "var")}

    def weights(self) -> dict[str, np.ndarray]:
        """The weights the forward pass uses: fake-quantized int8 and sign-binarized, or float."""
        p = self.p
        if not self.binary:
            return {k: p[k] for k in ("conv1.w", "conv2.w", "fc1.w", "fc2.w")}
        return {
            "conv1.w": fake_int8(p["conv1.w"]),
            "conv2.w": bipolar(p["conv2.w"]),
            "fc1.w": bipolar(p["fc1.w"]),
            "fc2.w": fake_int8(p["fc2.w"].T).T,
        }

    def bn(self, name: str, z: np.ndarray, train: bool, cache: list) -> np.ndarray:
        axes = (0, 2, 3) if z.ndim == 4 else (0,)
        shape = (1, -1, 1, 1) if z.ndim == 4 else (1, -1)
        if train:
            mean, var = z.mean(axis=axes), z.var(axis=axes)
            for key, value in (("mean", mean), ("var", var)):
                s = f"{name}.{key}"
                self.stats[s] = (1 - BN_MOMENTUM) * self.stats[s] + BN_MOMENTUM * value
        else:
            mean, var = self.stats[f"{name}.mean"], self.stats[f"{name}.var"]
        inv = 1.0 / np.sqrt(var + BN_EPS)
        zn = (z - mean.reshape(shape)) * inv.reshape(shape)
        cache.append((zn, inv, axes, shape))
        return zn * self.p[f"{name}.gamma"].reshape(shape) + self.p[f"{name}.beta"].reshape(shape)

    def act(self, v: np.ndarray) -> np.ndarray:
        return bipolar(v) if self.binary else np.clip(v, -1, 1)

    def forward(self, x: np.ndarray, train: bool):
        w = self.weights()
        bn_cache: list = []
        z1, xp1 = conv3x3(x, w["conv1.w"], np.zeros(WIDTHS[0]))
        p1, k1 = maxpool2(z1)
        b1 = self.bn("bn1", p1, train, bn_cache)
        z2, xp2 = conv3x3(self.act(b1), w["conv2.w"], np.zeros(WIDTHS[1]))
        p2, k2 = maxpool2(z2)
        b2 = self.bn("bn2", p2, train, bn_cache)
        m2 = self.act(b2)
        flat = m2.reshape(len(x), -1)
        b3 = self.bn("bn3", flat @ w["fc1.w"], train, bn_cache)
        a3 = self.act(b3)
        logits = a3 @ w["fc2.w"] + self.p["fc2.b"]
        return logits, (w, bn_cache, xp1, b1, k1, xp2, b2, k2, m2.shape, flat, b3, a3)

    def bn_grad(self, name: str, d: np.ndarray, cache, g: dict) -> np.ndarray:
        zn, inv, axes, shape = cache
        g[f"{name}.gamma"] = (d * zn).sum(axis=axes)
        g[f"{name}.beta"] = d.sum(axis=axes)
        dzn = d * self.p[f"{name}.gamma"].reshape(shape)
        n = zn.size // zn.shape[1]
        return (inv.reshape(shape) / n) * (
            n * dzn - dzn.sum(axis=axes).reshape(shape)
            - zn * (dzn * zn).sum(axis=axes).reshape(shape)
        )

    def backward(self, cache, dlogits: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients; sign and the weight quantizers pass them straight through where |v| <= 1."""
        w, bn_cache, xp1, b1, k1, xp2, b2, k2, m2_shape, flat, b3, a3 = cache
        g = {"fc2.w": a3.T @ dlogits, "fc2.b": dlogits.sum(axis=0)}
        db3 = (dlogits @ w["fc2.w"].T) * (np.abs(b3) <= 1)
        dz3 = self.bn_grad("bn3", db3, bn_cache[2], g)
        g["fc1.w"] = flat.T @ dz3
        dm2 = (dz3 @ w["fc1.w"].T).reshape(m2_shape)
        dp2 = self.bn_grad("bn2", dm2 * (np.abs(b2) <= 1), bn_cache[1], g)
        dm1, g["conv2.w"], _ = conv3x3_grad(maxpool2_grad(dp2, k2), xp2, w["conv2.w"])
        dp1 = self.bn_grad("bn1", dm1 * (np.abs(b1) <= 1), bn_cache[0], g)
        dz1 = maxpool2_grad(dp1, k1)
        _, g["conv1.w"], _ = conv3x3_grad(dz1, xp1, w["conv1.w"])
        return g


def train(binary: bool, seed: int = SEED) -> Net:
    """Adam on the fixed training split; binary latent weights are clipped to [-1, 1]."""
    x_tr, y_tr, _, _ = digits_split()
    x_tr = x_tr.astype(np.float64)
    rng = np.random.default_rng(seed)
    net = Net(rng, binary)
    p = net.p
    adam = Adam(p)
    with threadpool_limits(1):
        for epoch in range(EPOCHS):
            lr = LR * 0.5 * (1 + np.cos(np.pi * epoch / EPOCHS))
            order = rng.permutation(len(x_tr))
            for start in range(0, len(order), BATCH):
                idx = order[start : start + BATCH]
                logits, cache = net.forward(x_tr[idx], train=True)
                adam.update(net.backward(cache, cross_entropy_grad(logits, y_tr[idx])), lr)
                if binary:
                    for k in ("conv2.w", "fc1.w"):
                        np.clip(p[k], -1, 1, out=p[k])
    return net


def accuracy(net: Net) -> float:
    """Test accuracy of the numpy forward pass (eval mode)."""
    _, _, x_te, y_te = digits_split()
    with threadpool_limits(1):
        logits, _ = net.forward(x_te.astype(np.float64), train=False)
    return float(np.mean(logits.argmax(axis=1) == y_te))


def to_qonnx(net: Net) -> onnx.ModelProto:
    """The QONNX graph, as Brevitas exports it: float latent weights behind Quant/BipolarQuant."""
    p, s = net.p, net.stats
    f32 = np.float32
    fc2_t = p["fc2.w"].T
    inits = {
        "x.scale": f32(INPUT_SCALE), "zero": f32(0), "bits8": f32(8), "one": f32(1),
        "conv1.w": p["conv1.w"].astype(f32),
        "conv1.w.scale": po2_scale(p["conv1.w"]).reshape(-1, 1, 1, 1),
        "conv2.w": p["conv2.w"].astype(f32),
        "fc1.w": p["fc1.w"].astype(f32),
        "fc2.w": p["fc2.w"].astype(f32),
        "fc2.w.scale": po2_scale(fc2_t).reshape(1, -1),
        "fc2.b": p["fc2.b"].astype(f32),
    }
    for name in ("bn1", "bn2", "bn3"):
        inits[f"{name}.gamma"] = p[f"{name}.gamma"].astype(f32)
        inits[f"{name}.beta"] = p[f"{name}.beta"].astype(f32)
        inits[f"{name}.mean"] = s[f"{name}.mean"].astype(f32)
        inits[f"{name}.var"] = s[f"{name}.var"].astype(f32)

    def quant(x, scale, out, name, signed, narrow):
        return helper.make_node("Quant", [x, scale, "zero", "bits8"], [out], name,
                                domain=QONNX_DOMAIN, signed=signed, narrow=narrow,
                                rounding_mode="ROUND")

    def bipolar_quant(x, out, name):
        return helper.make_node("BipolarQuant", [x, "one"], [out], name, domain=QONNX_DOMAIN)

    def bn(x, name, out):
        return helper.make_node("BatchNormalization", [x] + [f"{name}.{k}" for k in
                                ("gamma", "beta", "mean", "var")], [out], name, epsilon=BN_EPS)

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        quant(INPUT, "x.scale", "xq", "quant_x", 0, 0),
        quant("conv1.w", "conv1.w.scale", "conv1.wq", "quant_conv1_w", 1, 1),
        helper.make_node("Conv", ["xq", "conv1.wq"], ["conv1"], "conv1", **conv),
        helper.make_node("MaxPool", ["conv1"], ["pool1"], "pool1", **pool),
        bn("pool1", "bn1", "bn1"),
        bipolar_quant("bn1", "act1", "sign1"),
        bipolar_quant("conv2.w", "conv2.wq", "quant_conv2_w"),
        helper.make_node("Conv", ["act1", "conv2.wq"], ["conv2"], "conv2", **conv),
        helper.make_node("MaxPool", ["conv2"], ["pool2"], "pool2", **pool),
        bn("pool2", "bn2", "bn2"),
        bipolar_quant("bn2", "act2", "sign2"),
        helper.make_node("Flatten", ["act2"], ["flat"], "flatten", axis=1),
        bipolar_quant("fc1.w", "fc1.wq", "quant_fc1_w"),
        helper.make_node("MatMul", ["flat", "fc1.wq"], ["fc1"], "fc1"),
        bn("fc1", "bn3", "bn3"),
        bipolar_quant("bn3", "act3", "sign3"),
        quant("fc2.w", "fc2.w.scale", "fc2.wq", "quant_fc2_w", 1, 1),
        helper.make_node("MatMul", ["act3", "fc2.wq"], ["fc2"], "fc2"),
        helper.make_node("Add", ["fc2", "fc2.b"], [OUTPUT], "fc2_bias"),
    ]
    graph = helper.make_graph(
        nodes, "digits_binary",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(a, f32), name) for name, a in inits.items()],
    )
    model = helper.make_model(graph, producer_name=PRODUCER, opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    return model


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy with batch size `batch` and every shape inferred, as qonnx's execution needs
    (qonnx renames shared initializers at random while inferring, so this is never saved)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    model = copy.deepcopy(model)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    del model.graph.value_info[:]
    return ModelWrapper(model).transform(InferShapes()).model


def qonnx_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The logits that qonnx's own execution (onnxruntime per standard node) computes."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    wrapped = ModelWrapper(with_batch(model, len(x)))
    return execute_onnx(wrapped, {INPUT: x.astype(np.float32)})[OUTPUT]


def build(out_dir: Path) -> dict:
    """Trains the binary network and its float twin, writes the QONNX file, returns accuracies."""
    net = train(binary=True)
    twin = train(binary=False)
    model = to_qonnx(net)
    _, _, x_te, y_te = digits_split()
    logits = qonnx_logits(model, x_te)
    result = {
        "file": FILE,
        "float_accuracy": accuracy(twin),
        "numpy_binary_accuracy": accuracy(net),
        "binary_accuracy": float(np.mean(logits.argmax(axis=1) == y_te)),
    }
    # The file carries the accuracy it was built with, so tests need nothing else.
    helper.set_model_props(model, {ACCURACY_KEY: repr(result["binary_accuracy"])})
    onnx.save(model, out_dir / FILE)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(build(Path(__file__).resolve().parent), indent=2))
