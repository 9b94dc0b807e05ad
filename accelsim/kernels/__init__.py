"""numba kernels of the functional model: integer and binary conv/gemm, requantization.

Constant weights are packed once (pack_* -> a packed-weights object, as onnxruntime's PrePack at
session creation) and passed to the *_packed kernels; the raw-weight kernels pack on every call.
"""

from accelsim.kernels.accumulator import Accumulator
from accelsim.kernels.binary import (
    PackedBinaryWeights,
    binary_conv2d_acc,
    binary_conv2d_acc_packed,
    binary_matmul_acc,
    binary_matmul_acc_packed,
    pack_binary_conv_weights,
    pack_binary_matmul_weights,
    pack_bipolar,
)
from accelsim.kernels.integer import (
    PackedWeights,
    conv2d_acc,
    conv2d_acc_packed,
    matmul_acc,
    matmul_acc_packed,
    pack_conv_weights,
    pack_matmul_weights,
)
from accelsim.kernels.requantize import requantize

__all__ = [
    "Accumulator",
    "PackedBinaryWeights",
    "PackedWeights",
    "binary_conv2d_acc",
    "binary_conv2d_acc_packed",
    "binary_matmul_acc",
    "binary_matmul_acc_packed",
    "conv2d_acc",
    "conv2d_acc_packed",
    "matmul_acc",
    "matmul_acc_packed",
    "pack_binary_conv_weights",
    "pack_binary_matmul_weights",
    "pack_bipolar",
    "pack_conv_weights",
    "pack_matmul_weights",
    "requantize",
]
