"""Conv: the integer accumulator of a 2-D convolution (ConvInteger; the core of QLinearConv)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from accelsim.kernels import (
    binary_conv2d_acc_packed,
    conv2d_acc_packed,
    pack_binary_conv_weights,
    pack_conv_weights,
)
from accelsim.kernels.geometry import conv_output_hw
from accelsim.ops import Op, register
from accelsim.workload.ir import Tensor

# Packed constant weights per weight tensor, shared by every Op built on the graph (execute
# builds its Ops per run): (the array packed, the packing's parameters, the packed weights).
_PACKED: weakref.WeakKeyDictionary[Tensor, tuple[np.ndarray, tuple, Any]] = (
    weakref.WeakKeyDictionary()
)


def packed_weights(tensor: Tensor, w: np.ndarray, key: tuple, pack: Callable[[], Any]) -> Any:
    """pack(), the packed form of w, computed once per constant tensor and parameters `key`.

    Reused while `w` is the tensor's own data array (the executor passes it) and the key is the
    same; a weight that is not a constant of the graph (or another array) is packed per call.
    Constant tensors are treated as immutable: writing into tensor.data in place after a run
    is not seen (replace the array instead).
    """
    if not (tensor.is_const and w is tensor.data):
        return pack()
    entry = _PACKED.get(tensor)
    if entry is not None and entry[0] is w and entry[1] == key:
        return entry[2]
    packed = pack()
    _PACKED[tensor] = (w, key, packed)
    return packed


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

    def packed(self, w: np.ndarray) -> Any:
        """The packed weights: packed once per constant weight tensor (as onnxruntime's PrePack
        at session creation), per call otherwise."""
        group = int(self.attrs["group"])
        if self.binary:
            key: tuple = ("binary", group)
            return packed_weights(
                self.in_tensors[1], w, key, lambda: pack_binary_conv_weights(w, group)
            )
        w_zp = tuple(np.asarray(self.attrs["w_zero_point"], np.int64).reshape(-1).tolist())
        key = ("integer", group, w_zp)
        return packed_weights(
            self.in_tensors[1], w, key, lambda: pack_conv_weights(w, np.array(w_zp), group)
        )

    def run(self, x, w, bias=None):
        a = self.attrs
        packed = self.packed(w)
        if self.binary:
            acc = binary_conv2d_acc_packed(x, packed, a["strides"], a["pads"], a["dilations"])
            if bias is not None:
                acc = acc + bias.reshape(1, -1, 1, 1).astype(acc.dtype)
            return [acc]
        acc = conv2d_acc_packed(
            x, packed, int(a["x_zero_point"]), bias,
            a["strides"], a["pads"], a["dilations"], self.config.accumulator,
        )
        return [acc]
