"""Kernel throughput on ResNet-18 layer shapes, side by side with onnxruntime and numpy.

Script mode prints, per layer and thread count (numba threads for accelsim, intra_op threads for
onnxruntime, both in this process), GMAC/s (medians) and a markdown summary of the ratios. The
accelsim kernels are timed per inference on weights packed beforehand, as onnxruntime's
session.run is (it prepacks constant weights at session creation); the packing itself is timed
separately (pack_* rows, in ms):
    python benchmarks/bench_kernels.py [--repeat 15] [--threads 1 2]
The pytest-benchmark form of the same measurements is test_kernel_throughput.py.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numba
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from accelsim.kernels import (
    binary_conv2d_acc_packed,
    conv2d_acc_packed,
    matmul_acc_packed,
    pack_binary_conv_weights,
    pack_conv_weights,
    pack_matmul_weights,
)

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


def _session(graph, inputs, threads: int) -> Callable[[], object]:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return lambda: sess.run(None, inputs)


def ort_matmulinteger(
    name: str, a_type: type, rng: np.random.Generator, threads: int
) -> Callable[[], object]:
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
    return _session(graph, {"a": a.astype(a_type)}, threads)


def ort_qlinearconv(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
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
    return _session(graph, {"x": x}, threads)


def numpy_matmul(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    m, k, n = gemm_shape(name)
    a = rng.integers(-128, 128, (m, k)).astype(np.int32)
    b = rng.integers(-128, 128, (k, n)).astype(np.int32)
    return lambda: a @ b


def _int8_conv_operands(name: str, rng: np.random.Generator):
    c, h, o, k, s, p = CONVS[name]
    x = rng.integers(0, 256, (1, c, h, h)).astype(np.uint8)
    w = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
    return x, w, np.zeros(o, np.int64), rng.integers(-1000, 1000, o).astype(np.int32)


def accelsim_conv(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    """conv2d_acc_packed, u8 activations (zero point 128) x s8 weights packed beforehand, int32
    wrapping accumulator."""
    c, h, o, k, s, p = CONVS[name]
    x, w, zps, bias = _int8_conv_operands(name, rng)
    packed = pack_conv_weights(w, zps, 1)
    return lambda: conv2d_acc_packed(x, packed, 128, bias, (s, s), (p,) * 4, (1, 1))


def accelsim_pack_conv(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    """The weight packing that accelsim_conv excludes (once per model, like ORT's PrePack)."""
    _, w, zps, _ = _int8_conv_operands(name, rng)
    return lambda: pack_conv_weights(w, zps, 1)


def accelsim_gemm(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    """matmul_acc_packed on the layer's im2col GEMM, s8 x s8, b packed beforehand."""
    m, k, n = gemm_shape(name)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    packed = pack_matmul_weights(b, np.zeros(n, np.int64))
    return lambda: matmul_acc_packed(a, packed, 0, None)


def _binary_operands(name: str, rng: np.random.Generator):
    c, h, o, k, s, p = CONVS[name]
    x = rng.choice(np.array([-1, 1], np.int8), (1, c, h, h))
    w = rng.choice(np.array([-1, 1], np.int8), (o, c, k, k))
    return x, w


def accelsim_binary_conv(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    """binary_conv2d_acc_packed, weights packed beforehand."""
    c, h, o, k, s, p = CONVS[name]
    x, w = _binary_operands(name, rng)
    packed = pack_binary_conv_weights(w, 1)
    return lambda: binary_conv2d_acc_packed(x, packed, (s, s), (p,) * 4, (1, 1))


def accelsim_pack_binary(name: str, rng: np.random.Generator, threads: int) -> Callable[[], object]:
    _, w = _binary_operands(name, rng)
    return lambda: pack_binary_conv_weights(w, 1)


# (label, factory(layer, rng, threads), whether it runs with more than one thread); labels that
# start with "pack_" are reported in ms, the others in GMAC/s.
Factory = Callable[[str, np.random.Generator, int], Callable[[], object]]
IMPLS: list[tuple[str, Factory, bool]] = [
    ("ort_u8s8_matmulinteger", lambda n, r, t: ort_matmulinteger(n, np.uint8, r, t), True),
    ("ort_s8s8_matmulinteger", lambda n, r, t: ort_matmulinteger(n, np.int8, r, t), True),
    ("ort_u8s8_qlinearconv", ort_qlinearconv, True),
    ("numpy_int32_matmul", numpy_matmul, False),
    ("accelsim_conv", accelsim_conv, True),
    ("accelsim_gemm", accelsim_gemm, True),
    ("accelsim_binary_conv", accelsim_binary_conv, True),
    ("pack_int8_ms", accelsim_pack_conv, False),
    ("pack_binary_ms", accelsim_pack_binary, False),
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


def measure(layer: str, threads: int, repeat: int, rng: np.random.Generator) -> dict[str, float]:
    """GMAC/s of every implementation on one layer; numba and onnxruntime both get `threads`."""
    numba.set_num_threads(threads)
    rates = {}
    for label, factory, threaded in IMPLS:
        if threads > 1 and not threaded:
            continue
        med, spread = median_seconds(factory(layer, rng, threads), repeat)
        rates[label] = med * 1e3 if label.startswith("pack_") else conv_macs(layer) / med / 1e9
        print(f"{layer:14}{label:26}{threads:>4}{rates[label]:>9.2f}{spread:>8.0%}", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--layers", nargs="*", default=list(CONVS))
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load average before: {os.getloadavg()}")
    print(f"{'layer':14}{'impl':26}{'thr':>4}{'GMAC/s|ms':>9}{'spread':>8}")
    rows = []
    for layer in args.layers:
        for threads in args.threads:
            r = measure(layer, threads, args.repeat, rng)
            pack = ""
            if "pack_int8_ms" in r:
                pack = f"{r['pack_int8_ms']:.2f} / {r['pack_binary_ms']:.2f}"
            rows.append(
                f"| {layer} | {threads} | {r['accelsim_conv']:.1f} | {r['accelsim_gemm']:.1f} "
                f"| {r['ort_u8s8_matmulinteger']:.1f} | {r['ort_s8s8_matmulinteger']:.1f} "
                f"| {r['ort_u8s8_qlinearconv']:.1f} "
                f"| {r['accelsim_conv'] / r['ort_u8s8_matmulinteger']:.2f} "
                f"| {r['accelsim_conv'] / r['ort_s8s8_matmulinteger']:.2f} "
                f"| {r['accelsim_binary_conv']:.0f} "
                f"| {r['accelsim_binary_conv'] / r['accelsim_conv']:.1f} | {pack} |"
            )
    print(f"load average after: {os.getloadavg()}")
    print(
        "| layer | thr | accelsim int8 conv | accelsim gemm | ORT u8s8 | ORT s8s8 "
        "| ORT QLinearConv | int8 / ORT u8s8 | int8 / ORT s8s8 | accelsim binary | binary / int8 "
        "| packing ms int8 / binary |"
    )
    print("|---" * 12 + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
