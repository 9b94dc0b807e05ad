"""Kernel throughput on ResNet-18 layer shapes, side by side with onnxruntime and numpy.

Script mode prints a table of GMAC/s (medians) and ratios:
    python benchmarks/bench_kernels.py [--repeat 15]
The pytest-benchmark form of the same measurements is test_kernel_throughput.py.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numba
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from accelsim.kernels import binary_conv2d_acc, conv2d_acc, matmul_acc

# ResNet-18 convolutions (C, H, O, kernel, stride, pad) at batch 1; GEMM views are im2col's
# (OH*OW, C*k*k, O): conv1 12544x147x64, then 3136x576x64, 784x1152x128, 196x2304x256, 49x4608x512.
CONVS = {
    "conv1_7x7s2": (3, 224, 64, 7, 2, 3),
    "l1_3x3_64": (64, 56, 64, 3, 1, 1),
    "l2_3x3_128": (128, 28, 128, 3, 1, 1),
    "l3_3x3_256": (256, 14, 256, 3, 1, 1),
    "l4_3x3_512": (512, 7, 512, 3, 1, 1),
}


def conv_macs(name: str) -> int:
    c, h, o, k, s, p = CONVS[name]
    oh = (h + 2 * p - k) // s + 1
    return oh * oh * o * c * k * k


def gemm_shape(name: str) -> tuple[int, int, int]:
    c, h, o, k, s, p = CONVS[name]
    oh = (h + 2 * p - k) // s + 1
    return oh * oh, c * k * k, o


def _session(graph, inputs) -> Callable[[], object]:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return lambda: sess.run(None, inputs)


def ort_matmulinteger(name: str, a_type: type, rng: np.random.Generator) -> Callable[[], object]:
    """MatMulInteger of the layer's im2col GEMM, weights as an initializer (so ORT may pre-pack)."""
    m, k, n = gemm_shape(name)
    a = rng.integers(0, 256, (m, k)) if a_type == np.uint8 else rng.integers(-128, 128, (m, k))
    b = numpy_helper.from_array(rng.integers(-128, 128, (k, n)).astype(np.int8), "b")
    onnx_type = TensorProto.UINT8 if a_type == np.uint8 else TensorProto.INT8
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("a", onnx_type, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [b],
    )
    return _session(graph, {"a": a.astype(a_type)})


def ort_qlinearconv(name: str, rng: np.random.Generator) -> Callable[[], object]:
    """QLinearConv u8 activations x s8 weights (onnxruntime's fast x86 path)."""
    c, h, o, k, s, p = CONVS[name]
    x = rng.integers(0, 256, (1, c, h, h)).astype(np.uint8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(rng.integers(-128, 128, (o, c, k, k)).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.5, np.float32), "ys"),
        numpy_helper.from_array(np.array(128, np.uint8), "yz"),
    ]
    node = helper.make_node(
        "QLinearConv",
        ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
        ["y"],
        kernel_shape=[k, k],
        strides=[s, s],
        pads=[p] * 4,
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        inits,
    )
    return _session(graph, {"x": x})


def numpy_matmul(name: str, rng: np.random.Generator) -> Callable[[], object]:
    m, k, n = gemm_shape(name)
    a = rng.integers(-128, 128, (m, k)).astype(np.int32)
    b = rng.integers(-128, 128, (k, n)).astype(np.int32)
    return lambda: a @ b


def accelsim_conv(name: str, rng: np.random.Generator) -> Callable[[], object]:
    """conv2d_acc, u8 activations (zero point 128) x s8 weights, int32 wrapping accumulator."""
    c, h, o, k, s, p = CONVS[name]
    x = rng.integers(0, 256, (1, c, h, h)).astype(np.uint8)
    w = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
    zps = np.zeros(o, np.int64)
    bias = rng.integers(-1000, 1000, o).astype(np.int32)
    return lambda: conv2d_acc(x, w, 128, zps, bias, (s, s), (p,) * 4, (1, 1), 1)


def accelsim_gemm(name: str, rng: np.random.Generator) -> Callable[[], object]:
    """matmul_acc on the layer's im2col GEMM, s8 x s8."""
    m, k, n = gemm_shape(name)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    return lambda: matmul_acc(a, b, 0, np.zeros(n, np.int64), None)


def accelsim_binary_conv(name: str, rng: np.random.Generator) -> Callable[[], object]:
    c, h, o, k, s, p = CONVS[name]
    x = rng.choice(np.array([-1, 1], np.int8), (1, c, h, h))
    w = rng.choice(np.array([-1, 1], np.int8), (o, c, k, k))
    return lambda: binary_conv2d_acc(x, w, (s, s), (p,) * 4, (1, 1), 1)


# (label, factory, uses numba threads)
IMPLS: list[tuple[str, Callable[[str, np.random.Generator], Callable[[], object]], bool]] = [
    ("ort_u8s8_matmulinteger", lambda n, r: ort_matmulinteger(n, np.uint8, r), False),
    ("ort_s8s8_matmulinteger", lambda n, r: ort_matmulinteger(n, np.int8, r), False),
    ("ort_u8s8_qlinearconv", ort_qlinearconv, False),
    ("numpy_int32_matmul", numpy_matmul, False),
    ("accelsim_conv", accelsim_conv, True),
    ("accelsim_gemm", accelsim_gemm, True),
    ("accelsim_binary_conv", accelsim_binary_conv, True),
]


def median_seconds(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and relative spread ((max - min) / median) of `repeat` timed calls after a warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    med = float(np.median(times))
    return med, (max(times) - min(times)) / med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--layers", nargs="*", default=list(CONVS))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ours = [label for label, _, threaded in IMPLS if threaded]
    header = f"{'layer':14}{'impl':26}{'thr':>4}{'GMAC/s':>9}{'spread':>8}"
    print(header + "".join(f"{'/' + r[4:12]:>11}" for r in ("ort_u8s8", "ort_s8s8", "ort_conv")))
    for layer in args.layers:
        macs = conv_macs(layer)
        rates = {}
        for label, factory, threaded in IMPLS:
            for threads in (1, 2) if threaded else (1,):
                numba.set_num_threads(threads)
                med, spread = median_seconds(factory(layer, rng), args.repeat)
                rates[label, threads] = macs / med / 1e9
                line = (
                    f"{layer:14}{label:26}{threads:>4}{rates[label, threads]:>9.1f}{spread:>8.0%}"
                )
                if label in ours:
                    for ref in ("ort_u8s8_matmulinteger", "ort_s8s8_matmulinteger"):
                        line += f"{rates[label, threads] / rates[ref, 1]:>11.2f}"
                    line += f"{rates[label, threads] / rates['ort_u8s8_qlinearconv', 1]:>11.2f}"
                print(line, flush=True)
        for threads in (1, 2):
            ratio = rates["accelsim_binary_conv", threads] / rates["accelsim_conv", threads]
            print(f"{layer:14}{'binary / int8 conv':26}{threads:>4}{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
