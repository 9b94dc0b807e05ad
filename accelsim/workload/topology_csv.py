"""SCALE-Sim topology CSV importer: layer shapes only, data drawn from a seeded RNG.

Read as SCALE-Sim reads it (scalesim/topology_utils.py): the first row is a header; each row is
split on commas and its last field dropped (rows end with a comma); a conv row is
`name, ifmap_h, ifmap_w, filter_h, filter_w, channels, num_filters, stride_h[, stride_w]`, with
no padding (the ifmap is taken as already padded) and SCALE-Sim's output size (see
scalesim_output_size: a strided last window past the edge reads zeros); a GEMM row is
`name, M, N, K`. A conv layer whose name contains "DP" is depthwise: SCALE-Sim runs it as
`channels` separate one-channel layers; here it is one grouped Conv (group = channels), which
the timing model folds per group. Layers are independent, as in SCALE-Sim: each has its own
input and output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from accelsim.errors import WorkloadError
from accelsim.workload.ir import INT8, INT32, Graph, Node, Tensor


def scalesim_output_size(size: int, kernel: int, stride: int) -> int:
    """SCALE-Sim's output size: ceil((H - F + S) / S), one more than the usual floor when the
    stride does not divide H - F (its last window runs past the edge, over nothing)."""
    return -(-(size - kernel + stride) // stride)


def _ints(path: Path, lineno: int, fields: list[str], count: int, hint: str = "") -> list[int]:
    try:
        values = [int(f.strip()) for f in fields[:count]]
    except ValueError:
        raise WorkloadError(f"{path}: line {lineno}: expected {count} integers after the "
                            f"layer name, got {', '.join(fields[:count])}") from None
    if len(values) < count:
        raise WorkloadError(
            f"{path}: line {lineno}: {len(values)} values after the layer name, needs {count}"
            + (f" ({hint})" if hint else "")
        )
    if any(v <= 0 for v in values):
        raise WorkloadError(f"{path}: line {lineno}: needs {count} positive integers")
    return values


def load_topology_csv(path: str | os.PathLike, seed: int = 0) -> Graph:
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    lines = path.read_text(errors="replace").splitlines()
    if not lines:
        raise WorkloadError(f"{path}: empty topology file")
    header = [h.strip().lower() for h in lines[0].split(",")]
    gemm = len(header) > 3 and header[1:4] == ["m", "n", "k"]
    rng = np.random.default_rng(seed)
    tensors: dict[str, Tensor] = {}
    nodes: list[Node] = []
    inputs, outputs = [], []
    for lineno, row in enumerate(lines[1:], start=2):
        row = row.strip()
        if not row:
            continue
        fields = row.split(",")[:-1]
        name = fields[0].strip() if fields else ""
        if not name:
            raise WorkloadError(f"{path}: line {lineno}: missing layer name")
        if not row.endswith(","):
            hint = "as in SCALE-Sim, a row's last field is dropped: end each row with a comma"
        elif not gemm and len(fields) == 4:
            hint = "a GEMM topology's header reads: Layer name, M, N, K"
        else:
            hint = ""
        if gemm:
            m, n, k = _ints(path, lineno, fields[1:], 3, hint)
            x_shape, w_shape = (m, k), (k, n)
            op, out_shape = "MatMul", (m, n)
            attrs = dict(a_zero_point=0, b_zero_point=np.zeros(n, np.int64))
        else:
            vals = _ints(path, lineno, fields[1:], 7, hint)
            ih, iw, fh, fw, c, nf, sh = vals
            sw = _ints(path, lineno, fields[8:], 1)[0] if len(fields) > 8 else sh
            if fh > ih or fw > iw:
                raise WorkloadError(
                    f"{path}: line {lineno}: layer {name}: filter larger than ifmap"
                )
            group = c if "DP" in name else 1
            out_c = nf * group
            oh, ow = scalesim_output_size(ih, fh, sh), scalesim_output_size(iw, fw, sw)
            # The last window may run past the edge; zero padding at the bottom/right says so.
            pad_b, pad_r = (oh - 1) * sh + fh - ih, (ow - 1) * sw + fw - iw
            x_shape, w_shape = (1, c, ih, iw), (out_c, c // group, fh, fw)
            out_shape = (1, out_c, oh, ow)
            op = "Conv"
            attrs = dict(strides=(sh, sw), pads=(0, 0, pad_b, pad_r), dilations=(1, 1),
                         group=group,
                         x_zero_point=0, w_zero_point=np.zeros(out_c, np.int64))
        if f"{name}_ifmap" in tensors:
            raise WorkloadError(f"{path}: line {lineno}: duplicate layer name {name}")
        x, w, y = f"{name}_ifmap", f"{name}_weights", f"{name}_ofmap"
        tensors[x] = Tensor(x, x_shape, INT8)
        tensors[w] = Tensor(w, w_shape, INT8,
                            data=rng.integers(-128, 128, size=w_shape, dtype=np.int8))
        tensors[y] = Tensor(y, out_shape, INT32)
        nodes.append(Node(name, op, [x, w], [y], attrs))
        inputs.append(x)
        outputs.append(y)
    if not nodes:
        raise WorkloadError(f"{path}: no layers")
    return Graph(path.stem, tensors, nodes, inputs, outputs, str(path))
