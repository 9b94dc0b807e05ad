"""Accuracy and energy of the bundled digits networks as the weight SRAM's voltage falls.

The weight buffer's supply is swept from 1.0 down to 0.75 of its Vmin (the lowest error-free
voltage; each hardware file's own: `vmin_v`, or the nominal voltage when unset), and at each
point the int8 CNN (workloads/digits_cnn_int8_qdq.onnx on hwconfigs/edge_int8_16x16.yaml, Vmin
0.9 V) and the binary network (workloads/digits_binary_qonnx.onnx on
hwconfigs/binary_lowvolt.yaml, Vmin 0.8 V) classify the 450 test digits through the faulty
cells, over several fault seeds. The bit error rate follows the buffers' own error model (both:
the measured 14 nm curve, persistent faults, flips, no ECC); only the weight buffer is under-
volted, the ifmap and ofmap buffers stay at their files' voltages (error-free).

The binary hardware file holds its first layer (conv1, int8 weights; `layer_voltage_v: {0: 0.8}`)
at Vmin, so conv1 reads its weights error-free at every point while the other three layers
(conv2 and fc1 binary, fc2 int8) follow the sweep; --binary-first-layer swept drops that
override. Every layer of the int8 network follows the sweep.

For each point: accuracy (mean and 95% interval over the seeds, clipped to [0, 1]), the energy
per inference, and the energy saved against V/Vmin = 1.0, in total and in the weight SRAM's
dynamic part (`sram.weights`; its leakage, in `sram_leakage`, is in the total).

    python examples/voltage_sweep.py [OUT.png] [--seeds 5] [--images 450] [--low 0.75]
        [--step 0.025] [--ratios 1.0 0.9 ...]

prints the table and saves a two-panel chart (accuracy, energy saved) against V/Vmin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

import accelsim
from accelsim.faults import ber

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workloads"))
from digits_data import digits_split  # noqa: E402


class Network(NamedTuple):
    label: str
    hardware: Path
    workload: Path
    input_name: str


NETWORKS = (
    Network("int8", ROOT / "hwconfigs" / "edge_int8_16x16.yaml",
            ROOT / "workloads" / "digits_cnn_int8_qdq.onnx", "input"),
    Network("binary", ROOT / "hwconfigs" / "binary_lowvolt.yaml",
            ROOT / "workloads" / "digits_binary_qonnx.onnx", "x"),
)


class Point(NamedTuple):
    network: str
    ratio: float  # V / Vmin of the weight buffer
    voltage_v: float
    ber: float
    accuracy: float  # mean over the seeds
    ci95: tuple[float, float]  # clipped to [0, 1]
    golden_accuracy: float
    bits_flipped: float  # mean over the seeds
    energy_pj: float  # per inference
    weights_sram_pj: float  # per inference, dynamic
    saved_pj: float = 0.0  # against V/Vmin = 1.0
    saved_pct: float = 0.0
    weights_saved_pct: float = 0.0


def ratios_from(low: float, step: float, high: float = 1.0) -> list[float]:
    """high, high - step, ... down to low (inclusive when it falls on the grid, else appended)."""
    n = int(np.floor((high - low) / step + 1e-9))
    out = [round(high - i * step, 6) for i in range(n + 1)]
    if out[-1] > low + 1e-9:
        out.append(round(low, 6))
    return out


def sweep_network(net: Network, ratios: list[float], x: np.ndarray, y: np.ndarray,
                  seeds: int, seed: int = 0, first_layer: str = "file",
                  progress=None) -> list[Point]:
    """One network over the ratios (1.0 is added first if missing, as the energy reference)."""
    graph = accelsim.load_workload(net.workload)
    base = accelsim.load_hardware(net.hardware)
    vmin = base.buffers["weights"].resolved_vmin_v
    curve = base.buffers["weights"].error_model.curve
    if 1.0 not in ratios:
        ratios = [1.0, *ratios]
    points = []
    for r in ratios:
        overrides = {"buffers.weights.voltage_v": round(r * vmin, 9)}
        if first_layer == "swept":
            overrides["buffers.weights.layer_voltage_v"] = {}
        hw = accelsim.load_hardware(net.hardware, overrides)
        res = accelsim.simulate(hw, graph, {net.input_name: x}, seed=seed, trials=seeds,
                                labels=y)
        t, m = res.totals, res.corruption["metrics"]
        per = t.energy_per_inference_pj / t.energy_pj if t.energy_pj else 0.0
        acc = m["accuracy"]
        lo, hi = (acc["mean"], acc["mean"]) if acc["ci95"][0] is None else acc["ci95"]
        points.append(Point(
            network=net.label, ratio=r, voltage_v=hw.buffers["weights"].voltage_v,
            ber=float(ber(curve, r)), accuracy=acc["mean"],
            ci95=(max(0.0, lo), min(1.0, hi)), golden_accuracy=m["golden_accuracy"]["mean"],
            bits_flipped=m["bits_flipped"]["mean"], energy_pj=t.energy_per_inference_pj,
            weights_sram_pj=t.energy_breakdown_pj.get("sram.weights", 0.0) * per))
        if progress is not None:
            progress(net.label, r)
    ref = next(p for p in points if p.ratio == 1.0)
    points = [p._replace(saved_pj=ref.energy_pj - p.energy_pj,
                         saved_pct=100 * (1 - p.energy_pj / ref.energy_pj),
                         weights_saved_pct=100 * (1 - p.weights_sram_pj / ref.weights_sram_pj))
              for p in points]
    return sorted(points, key=lambda p: -p.ratio)


def table(points: list[Point]) -> str:
    head = ["network", "V/Vmin", "V", "BER", "accuracy %", "95% interval", "bits flipped",
            "E/inf nJ", "saved pJ", "saved %", "wSRAM saved %"]
    rows = [[p.network, f"{p.ratio:.3f}", f"{p.voltage_v:.4f}", f"{p.ber:.2e}",
             f"{100 * p.accuracy:.1f}", f"[{100 * p.ci95[0]:.1f}, {100 * p.ci95[1]:.1f}]",
             f"{p.bits_flipped:,.0f}", f"{p.energy_pj / 1e3:.2f}", f"{p.saved_pj:,.0f}",
             f"{p.saved_pct:.3f}", f"{p.weights_saved_pct:.1f}"] for p in points]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(head), *(line(r) for r in rows)])


def plot(points: list[Point], out: Path, title: str, notes: dict[str, str],
         dpi: int = 80) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accelsim.hardware import SRAM_BER_14NM

    colours = {"int8": "tab:blue", "binary": "tab:orange"}
    fig, (ax_acc, ax_e) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    ax_total = ax_e.twinx()
    for net in dict.fromkeys(p.network for p in points):
        ps = [p for p in points if p.network == net]
        r = np.array([p.ratio for p in ps])
        c = colours.get(net)
        ax_acc.plot(r, [100 * p.accuracy for p in ps], "o-", color=c, ms=4,
                    label=f"{net}{notes.get(net, '')}")
        ax_acc.fill_between(r, [100 * p.ci95[0] for p in ps], [100 * p.ci95[1] for p in ps],
                            color=c, alpha=0.2, lw=0)
        ax_acc.axhline(100 * ps[0].golden_accuracy, color=c, ls=":", lw=1)
        ax_e.plot(r, [p.weights_saved_pct for p in ps], "o-", color=c, ms=4,
                  label=f"{net}: weight SRAM dynamic (left)")
        ax_total.plot(r, [p.saved_pct for p in ps], "s--", color=c, ms=3,
                      label=f"{net}: total per inference (right)")
    ax_acc.axhline(10, color="grey", ls="--", lw=0.8)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_ylim(0, 102)
    ax_acc.legend(fontsize=7, loc="lower left",
                  title="mean, 95% band; dotted: fault-free; grey: chance", title_fontsize=7)
    ax_e.set_ylabel("weight SRAM dynamic energy saved (%)")
    ax_total.set_ylabel("total energy per inference saved (%)")
    ax_e.set_ylim(bottom=0)
    # Its own scale, twice the largest saving, so that the two kinds of line do not overlap.
    ax_total.set_ylim(0, 2 * max(max(p.saved_pct for p in points), 1e-3))
    lines = ax_e.get_legend_handles_labels()
    more = ax_total.get_legend_handles_labels()
    ax_e.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left",
                title="saved against V/Vmin = 1.0", title_fontsize=7)
    lo = min(p.ratio for p in points)
    for ax in (ax_acc, ax_e):
        ax.set_xlabel("weight buffer V / Vmin")
        ax.set_xlim(1.0 + 0.005, lo - 0.005)  # voltage falls to the right
        ax.grid(alpha=0.3)
        top = ax.twiny()
        top.set_xlim(ax.get_xlim())
        ticks = [v for v, _ in SRAM_BER_14NM if v >= lo - 1e-9]
        top.set_xticks(ticks, [f"{b:.0e}" if b else "0" for v, b in SRAM_BER_14NM
                               if v >= lo - 1e-9], fontsize=7)
        top.set_xlabel("BER (14 nm table)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> list[Point]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "docs" / "voltage_sweep.png"),
                    help="where to save the chart (PNG)")
    ap.add_argument("--seeds", type=int, default=5, help="fault seeds per point")
    ap.add_argument("--seed", type=int, default=0, help="first fault seed")
    ap.add_argument("--images", type=int, default=450,
                    help="first N of the 450 test images")
    ap.add_argument("--low", type=float, default=0.75, help="lowest V/Vmin")
    ap.add_argument("--step", type=float, default=0.025, help="V/Vmin step")
    ap.add_argument("--ratios", type=float, nargs="+",
                    help="explicit V/Vmin points instead of --low/--step (1.0 is always run)")
    ap.add_argument("--binary-first-layer", choices=("file", "swept"), default="file",
                    help="file: keep binary_lowvolt.yaml's layer_voltage_v (conv1 at Vmin); "
                         "swept: conv1's weights follow the sweep too")
    ap.add_argument("--dpi", type=int, default=80)
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    ratios = sorted(set(args.ratios), reverse=True) if args.ratios else \
        ratios_from(args.low, args.step)
    _, _, x, y = digits_split()
    x, y = x[:args.images], y[:args.images]

    def progress(net, r):
        if not args.quiet:
            print(f"\r{net}: V/Vmin {r:.3f} done", end="", file=sys.stderr, flush=True)

    points, notes = [], {}
    for net in NETWORKS:
        points += sweep_network(net, ratios, x, y, args.seeds, args.seed,
                                args.binary_first_layer if net.label == "binary" else "file",
                                progress)
        hw = accelsim.load_hardware(net.hardware)
        w = hw.buffers["weights"]
        held = {} if (net.label == "binary" and args.binary_first_layer == "swept") \
            else w.layer_voltage_v
        notes[net.label] = (f" (Vmin {w.resolved_vmin_v:g} V"
                            + "".join(f"; layer {k} held at {v:g} V" for k, v in held.items())
                            + ")")
    if not args.quiet:
        print(file=sys.stderr)
    print(f"weight buffer voltage sweep: {len(y)} test digits, {args.seeds} fault seeds per "
          f"point (from {args.seed}); accuracy mean and 95% interval (clipped to [0, 1]); energy "
          "per inference and saved against V/Vmin = 1.0")
    for net in NETWORKS:
        print(f"  {net.label}: {net.workload.name} on {net.hardware.name}{notes[net.label]}")
    print(table(points))
    out = Path(args.out)
    plot(points, out,
         f"Weight SRAM under-volted: digits networks, {len(y)} test images, {args.seeds} fault "
         "seeds per point (14 nm BER curve, persistent flips, no ECC)",
         notes, args.dpi)
    print(f"chart: {out}")
    return points


if __name__ == "__main__":
    main(sys.argv[1:])
