"""Energy per inference of one network shape at binary, int2, int4, int8 and int16 precision.

Moons et al., "Minimum Energy Quantized Neural Networks" (Asilomar 2017), found that binary or
int4 networks beat int8 by 2-10x in energy at equal accuracy. This script measures the first half
of that claim on accelsim's table model: the same CNN (a small CIFAR-10-shaped network; 3x32x32
input, three 3x3 conv + 2x2 max-pool stages, one fully connected layer) built as accelsim IR at
each precision, every layer's operands in that precision (first and last layers included), weights
drawn from a seeded RNG, run on one array that supports all five (the edge 16x16 weight-stationary
array of hwconfigs/edge_int8_16x16.yaml with pe_array.precisions set to all five).

It is energy for the same shape, not accuracy: a binary network needs more channels than an int8
one to be as accurate (Moons et al. widen it), which this script does not do; --width scales every
layer for that comparison by hand.

    python examples/moons_precision.py [OUT.png] [--hardware HW.yaml] [--image 32] [--width 32]

prints the energy per inference by component and precision, and saves a stacked bar chart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import accelsim
from accelsim.workload.ir import BIPOLAR, INT32, ElemType, Graph, Node, Tensor, int_type

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("binary", "int2", "int4", "int8", "int16")
BITS = {"binary": 1, "int2": 2, "int4": 4, "int8": 8, "int16": 16}
# Breakdown components as shown: the buffers' dynamic SRAM energies are summed into "sram".
COMPONENTS = ("mac", "register_file", "sram", "sram_leakage", "dram", "interconnect", "vector")


def elem_type(precision: str) -> ElemType:
    return BIPOLAR if precision == "binary" else int_type(BITS[precision], True)


class _Builder:
    """Appends layers to an IR graph: conv + output quantizer, max-pool, flatten, matmul."""

    def __init__(self, name: str, x_shape: tuple[int, ...], t: ElemType, seed: int):
        self.t, self.rng = t, np.random.default_rng(seed)
        self.tensors = {"x": Tensor("x", x_shape, t)}
        self.nodes: list[Node] = []
        self.name, self.last = name, "x"

    def _add(self, name: str, shape: tuple[int, ...], t: ElemType, data=None) -> str:
        self.tensors[name] = Tensor(name, shape, t, data=data)
        return name

    def _weights(self, name: str, shape: tuple[int, ...]) -> str:
        t = self.t
        if t.kind == "bipolar":
            data = self.rng.choice(np.array([-1, 1], np.int8), size=shape)
        else:
            data = self.rng.integers(t.min, t.max + 1, size=shape).astype(t.storage)
        return self._add(name, shape, t, data)

    def quantize(self, layer: str, acc: str, shape: tuple[int, ...]) -> str:
        """The output path of a compute layer: to bipolar by sign, or requantized to t."""
        out = self._add(f"{layer}_out", shape, self.t)
        if self.t.kind == "bipolar":
            self.nodes.append(Node(f"{layer}_sign", "Sign", [acc], [out],
                                   dict(threshold=0, layer=layer)))
        else:
            self.nodes.append(Node(f"{layer}_requant", "Requantize", [acc], [out],
                                   dict(multiplier=np.float32([2.0**-8]), axis=1, zero_point=0,
                                        layer=layer)))
        return out

    def conv(self, layer: str, out_c: int) -> None:
        n, c, h, w = self.tensors[self.last].shape
        wt = self._weights(f"{layer}_w", (out_c, c, 3, 3))
        acc = self._add(f"{layer}_acc", (n, out_c, h, w), INT32)
        self.nodes.append(Node(layer, "Conv", [self.last, wt], [acc],
                               dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
                                    group=1, x_zero_point=0,
                                    w_zero_point=np.zeros(out_c, np.int64), layer=layer)))
        self.last = self.quantize(layer, acc, (n, out_c, h, w))

    def pool(self, layer: str) -> None:
        n, c, h, w = self.tensors[self.last].shape
        out = self._add(f"{layer}_out", (n, c, h // 2, w // 2), self.t)
        self.nodes.append(Node(layer, "MaxPool", [self.last], [out],
                               dict(kernel_shape=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
                                    dilations=(1, 1), ceil_mode=False)))
        self.last = out

    def flatten(self) -> None:
        shape = self.tensors[self.last].shape
        out = self._add("flat", (shape[0], int(np.prod(shape[1:]))), self.t)
        self.nodes.append(Node("flatten", "Flatten", [self.last], [out], dict(axis=1)))
        self.last = out

    def matmul(self, layer: str, n_out: int) -> None:
        m, k = self.tensors[self.last].shape
        wt = self._weights(f"{layer}_w", (k, n_out))
        out = self._add("logits", (m, n_out), INT32)
        self.nodes.append(Node(layer, "MatMul", [self.last, wt], [out],
                               dict(a_zero_point=0, b_zero_point=np.zeros(n_out, np.int64))))
        self.last = out

    def graph(self) -> Graph:
        return Graph(self.name, self.tensors, self.nodes, ["x"], [self.last])


def network(precision: str, image: int = 32, width: int = 32, classes: int = 10,
            seed: int = 0) -> Graph:
    """The CNN at one precision: 3 x (conv 3x3 + max-pool 2x2), widths w, 2w, 4w, then a
    fully connected layer to `classes` int32 logits."""
    b = _Builder(f"cnn_{precision}", (1, 3, image, image), elem_type(precision), seed)
    for i, c in enumerate((width, 2 * width, 4 * width), start=1):
        b.conv(f"conv{i}", c)
        b.pool(f"pool{i}")
    b.flatten()
    b.matmul("fc", classes)
    return b.graph()


def hardware(path: Path | str):
    return accelsim.load_hardware(path, {"pe_array.precisions": list(PRECISIONS)})


def energy_by_component(result) -> dict[str, float]:
    """Energy per inference (pJ) by the components shown, SRAM buffers summed."""
    t = result.totals
    per = t.energy_per_inference_pj / t.energy_pj if t.energy_pj else 0.0
    out = dict.fromkeys(COMPONENTS, 0.0)
    for k, v in t.energy_breakdown_pj.items():
        out["sram" if k.startswith("sram.") else k] += v * per
    return out


def run(hw, image: int, width: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{precision: {component: pJ per inference}} for the network at every precision."""
    return {p: energy_by_component(accelsim.simulate(hw, network(p, image, width, seed=seed)))
            for p in PRECISIONS}


def table(energy: dict[str, dict[str, float]]) -> str:
    """Plain-text table in uJ per inference, with the total's ratio to int8."""
    cols = [*COMPONENTS, "total", "int8 / this"]
    rows = []
    for p, parts in energy.items():
        total = sum(parts.values())
        ref = sum(energy["int8"].values()) if "int8" in energy else total
        rows.append([p, *(f"{parts[c] / 1e6:.3f}" for c in COMPONENTS), f"{total / 1e6:.3f}",
                     f"{ref / total:.2f}x"])
    head = ["precision", *cols]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                       enumerate(zip(head, widths, strict=True)))]
    for r in rows:
        lines.append("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def plot(energy: dict[str, dict[str, float]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(energy)
    bottom = np.zeros(len(names))
    for comp in COMPONENTS:
        values = np.array([energy[p][comp] / 1e6 for p in names])
        ax.bar(names, values, bottom=bottom, label=comp)
        bottom += values
    ax.set_ylabel("energy per inference (uJ)")
    ax.set_xlabel("operand precision (every layer)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "examples" / "moons_precision.png"),
                    help="where to save the bar chart (PNG)")
    ap.add_argument("--hardware", default=str(ROOT / "hwconfigs" / "edge_int8_16x16.yaml"))
    ap.add_argument("--image", type=int, default=32, help="input height and width")
    ap.add_argument("--width", type=int, default=32, help="channels of the first conv")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    hw = hardware(args.hardware)
    energy = run(hw, args.image, args.width, args.seed)
    print(f"energy per inference (uJ), CNN on {args.image}x{args.image}x3, 3x3 conv widths "
          f"{args.width}/{2 * args.width}/{4 * args.width}, on {hw.name} "
          f"({hw.pe_array.rows}x{hw.pe_array.cols} {hw.pe_array.dataflow}, "
          f"{hw.pe_array.accumulator_bits}-bit accumulators)")
    print(table(energy))
    plot(energy, Path(args.out), f"Same CNN shape at five precisions on {hw.name} (table model)")
    print(f"chart: {args.out}")
    return energy


if __name__ == "__main__":
    main(sys.argv[1:])
