"""Operators that move data without changing it: Reshape, Flatten, Transpose, Identity."""

from __future__ import annotations

import numpy as np

from accelsim.ops import Op, register


def reshape_target(in_shape: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX Reshape semantics: 0 copies the input dimension, -1 is inferred."""
    dims = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
        dims[dims.index(-1)] = int(np.prod(in_shape, dtype=np.int64)) // max(known, 1)
    return tuple(dims)


@register
class Reshape(Op):
    op_type = "Reshape"

    @staticmethod
    def shape(attrs, x, *rest):
        return [reshape_target(tuple(x), tuple(attrs["shape"]))]

    def run(self, x, *rest):
        return [x.reshape(reshape_target(x.shape, tuple(self.attrs["shape"])))]


@register
class Flatten(Op):
    op_type = "Flatten"

    @staticmethod
    def shape(attrs, x):
        axis = attrs["axis"] % len(x) if len(x) else 0
        return [(int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis:], dtype=np.int64)))]

    def run(self, x):
        return [x.reshape(self.shape(self.attrs, x.shape)[0])]


@register
class Transpose(Op):
    op_type = "Transpose"

    @staticmethod
    def shape(attrs, x):
        return [tuple(x[p] for p in attrs["perm"])]

    def run(self, x):
        return [np.ascontiguousarray(np.transpose(x, self.attrs["perm"]))]


@register
class Identity(Op):
    op_type = "Identity"

    def run(self, x):
        return [x]
