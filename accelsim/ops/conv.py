"""Conv: the integer accumulator of a 2-D convolution (ConvInteger; the core of QLinearConv)."""

from __future__ import annotations

import numpy as np

from accelsim.kernels import binary_conv2d_acc, conv2d_acc
from accelsim.kernels.geometry import conv_output_hw
from accelsim.ops import Op, register


@register
class Conv(Op):
    op_type = "Conv"

    def __init__(self, node, graph, config=None):
        super().__init__(node, graph, config)
        self.binary = all(t.type.kind == "bipolar" for t in self.in_tensors[:2])

    @staticmethod
    def shape(attrs, x, w, *rest):
        oh, ow = conv_output_hw(
            x[2:], w[2:], attrs["strides"], attrs["pads"], attrs["dilations"]
        )
        return [(x[0], w[0], oh, ow)]

    def run(self, x, w, bias=None):
        a = self.attrs
        if self.binary:
            acc = binary_conv2d_acc(x, w, a["strides"], a["pads"], a["dilations"], a["group"])
            if bias is not None:
                acc = acc + bias.reshape(1, -1, 1, 1).astype(acc.dtype)
            return [acc]
        acc = conv2d_acc(
            x, w, int(a["x_zero_point"]), np.asarray(a["w_zero_point"], np.int64), bias,
            a["strides"], a["pads"], a["dilations"], a["group"], self.config.accumulator,
        )
        return [acc]
