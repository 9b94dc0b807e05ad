"""MatMul: the integer accumulator of a matrix product (MatMulInteger; the core of QLinearMatMul,
QGemm and the fully connected layers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from accelsim.kernels import (
    binary_matmul_acc_packed,
    matmul_acc_packed,
    pack_binary_matmul_weights,
    pack_matmul_weights,
)
from accelsim.ops import Op, register
from accelsim.ops.conv import packed_weights


@register
class MatMul(Op):
    op_type = "MatMul"

    def __init__(self, node, graph, config=None):
        super().__init__(node, graph, config)
        self.binary = all(t.type.kind == "bipolar" for t in self.in_tensors[:2])

    @staticmethod
    def shape(attrs, a, b, *rest):
        return [tuple(a[:-1]) + (b[-1],)]

    def packed(self, b: np.ndarray) -> Any:
        """The packed b: once per constant tensor (as onnxruntime's PrePack), per call otherwise."""
        if self.binary:
            return packed_weights(
                self.in_tensors[1], b, ("binary",), lambda: pack_binary_matmul_weights(b)
            )
        b_zp = tuple(np.asarray(self.attrs["b_zero_point"], np.int64).reshape(-1).tolist())
        return packed_weights(
            self.in_tensors[1], b, ("integer", b_zp),
            lambda: pack_matmul_weights(b, np.array(b_zp)),
        )

    def run(self, a, b, bias=None):
        lead = a.shape[:-1]
        a2 = a.reshape(-1, a.shape[-1])
        if b.ndim != 2 or b.shape[0] != a2.shape[1]:
            raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match")
        packed = self.packed(b)
        if self.binary:
            acc = binary_matmul_acc_packed(a2, packed)
            if bias is not None:
                acc = acc + bias.astype(acc.dtype)
        else:
            acc = matmul_acc_packed(
                a2, packed, int(self.attrs["a_zero_point"]), bias, self.config.accumulator
            )
        return [acc.reshape(*lead, b.shape[-1])]
