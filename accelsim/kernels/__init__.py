"""numba kernels of the functional model: integer and binary conv/gemm, requantization."""

from accelsim.kernels.accumulator import Accumulator
from accelsim.kernels.binary import binary_conv2d_acc, binary_matmul_acc, pack_bipolar
from accelsim.kernels.integer import conv2d_acc, matmul_acc
from accelsim.kernels.requantize import requantize

__all__ = [
    "Accumulator",
    "binary_conv2d_acc",
    "binary_matmul_acc",
    "conv2d_acc",
    "matmul_acc",
    "pack_bipolar",
    "requantize",
]
