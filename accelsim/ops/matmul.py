"""MatMul: the integer accumulator of a matrix product (MatMulInteger; the core of QLinearMatMul,
QGemm and the fully connected layers)."""

from __future__ import annotations

import numpy as np

from accelsim.kernels import binary_matmul_acc, matmul_acc
from accelsim.ops import Op, register


@register
class MatMul(Op):
    op_type = "MatMul"

    def __init__(self, node, graph, config=None):
        super().__init__(node, graph, config)
        self.binary = all(t.type.kind == "bipolar" for t in self.in_tensors[:2])

    @staticmethod
    def shape(attrs, a, b, *rest):
        return [tuple(a[:-1]) + (b[-1],)]

    def run(self, a, b, bias=None):
        lead = a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        if self.binary:
            acc = binary_matmul_acc(a2, b)
            if bias is not None:
                acc = acc + bias.astype(acc.dtype)
        else:
            acc = matmul_acc(
                a2, b, int(self.attrs["a_zero_point"]),
                np.asarray(self.attrs["b_zero_point"], np.int64), bias,
                self.config.accumulator,
            )
        return [acc.reshape(*lead, b.shape[-1])]
