"""The shape rule of a 2-D convolution, shared by the kernels, the ops and (later) the mapping."""

from __future__ import annotations


def conv_output_hw(hw, kernel, strides, pads, dilations) -> tuple[int, int]:
    """Output (height, width) of a convolution, floor mode; pads (top, left, bottom, right)."""
    return tuple(
        (hw[i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        for i in range(2)
    )


def check_conv(x_shape, w_shape, strides, pads, dilations, group) -> tuple[int, int]:
    """(OH, OW) of conv(x, w), after checking that the shapes and the group agree."""
    channels, (o_ch, cg, kh, kw) = x_shape[1], w_shape
    if channels != cg * group or o_ch % group:
        raise ValueError(
            f"conv shapes x {tuple(x_shape)}, w {tuple(w_shape)} do not match group {group}"
        )
    oh, ow = conv_output_hw(x_shape[2:], (kh, kw), strides, pads, dilations)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv output would be empty ({oh}x{ow})")
    return oh, ow
