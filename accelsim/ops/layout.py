"""Operators that move data without changing it: Reshape, Flatten, Transpose, Identity, Pad (and
its constant), Resize (nearest)."""

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


@register
class Pad(Op):
    """ONNX Pad: pads (begin per axis, then end; negative ones crop), mode constant (value),
    reflect, edge or wrap."""

    op_type = "Pad"

    @staticmethod
    def shape(attrs, x, *rest):
        pads, n = attrs["pads"], len(x)
        return [tuple(d + pads[i] + pads[n + i] for i, d in enumerate(x))]

    def run(self, x, *rest):
        pads, n = self.attrs["pads"], x.ndim
        crop = tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[n + i], 0)) for i in range(n))
        width = [(max(pads[i], 0), max(pads[n + i], 0)) for i in range(n)]
        mode = self.attrs["mode"]
        if mode == "constant":
            return [np.pad(x[crop], width, constant_values=np.asarray(self.attrs["value"]).astype(
                x.dtype))]
        return [np.pad(x[crop], width, mode=mode)]


def nearest_source(length_in: int, length_out: int, scale: float, transform: str,
                   nearest_mode: str) -> np.ndarray:
    """The input index each output index of a nearest Resize reads, as onnxruntime computes it
    (float32 coordinates, then its rounding, clamped to the input)."""
    f32 = np.float32
    i, s = np.arange(length_out, dtype=f32), f32(scale)
    if transform == "asymmetric":
        x = i / s
    elif transform == "tf_half_pixel_for_nn":
        x = (i + f32(0.5)) / s
    elif transform == "align_corners":
        x = (i * f32(length_in - 1) / f32(length_out - 1) if length_out > 1
             else np.zeros_like(i))
    elif transform == "pytorch_half_pixel" and length_out <= 1:
        x = np.zeros_like(i)
    else:  # half_pixel, pytorch_half_pixel
        x = (i + f32(0.5)) / s - f32(0.5)
    if nearest_mode == "floor":
        k = np.floor(x)
    elif nearest_mode == "ceil":
        k = np.ceil(x)
    else:  # std::round: halves away from zero; round_prefer_floor takes the floor of x.5
        k = np.trunc(x) + np.where(np.abs(x - np.trunc(x)) >= f32(0.5), np.sign(x), f32(0))
        if nearest_mode == "round_prefer_floor":
            k = np.where(x == np.trunc(x) + f32(0.5), np.floor(x), k)
    return np.clip(k.astype(np.int64), 0, length_in - 1)


@register
class Resize(Op):
    """Resize, nearest mode: per axis (but the batch), output `sizes`, source indices by
    nearest_source from `scales`, `transform` and `nearest_mode`."""

    op_type = "Resize"

    @staticmethod
    def shape(attrs, x, *rest):
        return [(x[0], *attrs["sizes"])]

    def run(self, x, *rest):
        a = self.attrs
        for axis in range(1, x.ndim):
            if a["scales"][axis] != 1 or a["sizes"][axis - 1] != x.shape[axis]:
                idx = nearest_source(x.shape[axis], a["sizes"][axis - 1], a["scales"][axis],
                                     a["transform"], a["nearest_mode"])
                x = np.take(x, idx, axis=axis)
        return [np.ascontiguousarray(x)]
