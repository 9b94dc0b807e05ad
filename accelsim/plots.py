"""Figures of one Result (per-layer energy, cycles, utilisation) and of a sweep's points (the
voltage -> energy and corruption trade-off). Needs the `plots` extra (matplotlib).

Every function returns a matplotlib Figure built without pyplot: nothing is shown and no global
figure is kept, so it works under any backend (Agg on a server); save it with
`fig.savefig(path)`. A notebook shows it as a PNG when it is a cell's value (`_repr_png_`),
with or without `%matplotlib inline`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from accelsim.result import Result

# Largest unit whose value stays >= 1 for the biggest number shown.
_ENERGY_UNITS = [("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3), ("pJ", 1.0)]


def energy_unit(largest_pj: float) -> tuple[str, float]:
    """(unit, pJ per unit) that shows largest_pj with one to three integer digits."""
    for name, scale in _ENERGY_UNITS:
        if abs(largest_pj) >= scale:
            return name, scale
    return "pJ", 1.0


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("accelsim.plots needs matplotlib: pip install 'accelsim[plots]'") \
            from None
    fig = _notebook_figure(Figure)(figsize=(width, height), layout="constrained")
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


@functools.cache
def _notebook_figure(base: type) -> type:
    """matplotlib's Figure that Jupyter displays by itself: without pyplot no backend registers
    a display for it, so a cell ending in a plot would print only `<Figure size ...>`."""

    class NotebookFigure(base):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png")
            return buf.getvalue()

    return NotebookFigure


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _layer_axis(ax: Axes, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 45,
                  ha="center" if len(names) > 8 else "right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _width(layers: int) -> float:
    return max(6.4, 2.5 + 0.28 * layers)


def _stacked(ax: Axes, names: Sequence[str], parts: dict[str, list[float]],
             title: str | None = None) -> None:
    """One bar per layer, `parts` (label -> value per layer) stacked bottom-up in order, with
    the legend outside the axes listing them top-down like the stack."""
    bottom = [0.0] * len(names)
    for (label, values), colour in zip(parts.items(), _colours(len(parts)), strict=True):
        ax.bar(range(len(names)), values, bottom=bottom, label=label, color=colour, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], title=title, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _title(result: Result, what: str) -> str:
    h = result.hardware
    return (f"{what}\n{result.workload['name']} on {h['name']} ({h['rows']}x{h['cols']} "
            f"{h['dataflow']}, {h['clock_mhz']:g} MHz)")


def energy_breakdown(result: Result) -> Figure:
    """Per-layer energy as bars stacked by component (largest component overall at the
    bottom); components that cost nothing in any layer are left out."""
    names = [r.name for r in result.layers]
    totals = result.totals.energy_breakdown_pj
    components = [c for c in sorted(totals, key=lambda c: -totals[c]) if totals[c] > 0]
    unit, scale = energy_unit(max((r.energy_pj for r in result.layers), default=0.0))
    fig, (ax,) = _figure(_width(len(names)), 4.8)
    _stacked(ax, names, {c: [r.energy_breakdown_pj.get(c, 0.0) / scale for r in result.layers]
                         for c in components}, title="component")
    _layer_axis(ax, names)
    ax.set_ylabel(f"energy ({unit})")
    ax.set_title(_title(result, f"energy per layer, total {result.totals.energy_pj / scale:,.4g} "
                                f"{unit}"), fontsize=10)
    return fig


def cycles(result: Result) -> Figure:
    """Per-layer cycles: compute cycles with the stall cycles stacked on them by cause (causes
    that stall no layer are left out)."""
    names = [r.name for r in result.layers]
    causes = [c for c, n in result.totals.stall_breakdown.items() if n > 0]
    parts = {"compute": [float(r.compute_cycles) for r in result.layers]}
    parts.update({f"stall: {c}": [float(r.stall_breakdown.get(c, 0)) for r in result.layers]
                  for c in causes})
    fig, (ax,) = _figure(_width(len(names)), 4.8)
    _stacked(ax, names, parts)
    _layer_axis(ax, names)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.set_ylabel("cycles")
    t = result.totals
    ax.set_title(_title(result, f"cycles per layer, total {t.cycles:,} "
                                f"({100 * t.stall_cycles / max(t.cycles, 1):.0f} % stalls)"),
                 fontsize=10)
    return fig


def utilisation(result: Result) -> Figure:
    """PE-array layers (vector-unit layers do no MACs): utilisation per layer, and a roofline:
    achieved MACs per cycle against MACs per DRAM byte, under the array's peak (rows x cols) and
    the DRAM bandwidth roof (a Result of schema 3 does not record the bandwidth: no DRAM roof).
    Layers that move no DRAM bytes have no place on it."""
    import numpy as np

    layers = [r for r in result.layers if r.kind == "compute"]
    names = [r.name for r in layers]
    h = result.hardware
    peak = h["rows"] * h["cols"]
    dram_bytes_per_cycle = h.get("dram_bytes_per_cycle")
    fig, (bars, roof) = _figure(_width(len(names)) + 5.0, 4.8, panels=2)
    bars.bar(range(len(names)), [100 * r.utilisation for r in layers], color=_colours(1)[0],
             width=0.8)
    bars.axhline(100 * result.totals.utilisation, color="k", ls="--", lw=1,
                 label=f"whole run {100 * result.totals.utilisation:.1f} % (all layers' cycles)")
    _layer_axis(bars, names)
    bars.set_ylabel("PE utilisation (%)")
    bars.set_ylim(0, 100)
    bars.set_title(f"utilisation of the {h['rows']}x{h['cols']} array per layer", fontsize=10)
    bars.legend(fontsize=8)

    placed = [r for r in layers if r.dram_read_bytes + r.dram_write_bytes > 0 and r.cycles > 0]
    x = np.array([r.macs / (r.dram_read_bytes + r.dram_write_bytes) for r in placed])
    y = np.array([r.macs / r.cycles for r in placed])
    roof.scatter(x, y, color=_colours(1)[0], zorder=3, label="layers")
    if len(placed) <= 10:  # more labels would overlap (a network repeats its layer shapes)
        for xi, yi, r in zip(x, y, placed, strict=True):
            roof.annotate(r.name, (xi, yi), fontsize=7, xytext=(4, 2),
                          textcoords="offset points")
    lo = min(x.min(initial=1.0), 1.0) / 2
    hi = max(x.max(initial=1.0), peak / (dram_bytes_per_cycle or peak)) * 2
    if dram_bytes_per_cycle:
        ridge = peak / dram_bytes_per_cycle  # MACs per byte where the two roofs meet
        roof.plot([lo, ridge], [dram_bytes_per_cycle * lo, peak], color="tab:red", lw=1.5,
                  ls="--", label=f"DRAM roof {dram_bytes_per_cycle:g} B/cycle")
        roof.plot([ridge, hi], [peak, peak], color="k", lw=1.5,
                  label=f"peak {peak} MACs/cycle")
    else:
        roof.plot([lo, hi], [peak, peak], color="k", lw=1.5, label=f"peak {peak} MACs/cycle")
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlim(lo, hi)
    roof.set_ylim(min(y.min(initial=1.0), 1.0) / 2, peak * 2)
    roof.set_xlabel("MACs per DRAM byte")
    roof.set_ylabel("achieved MACs per cycle")
    roof.set_title("roofline", fontsize=10)
    roof.grid(alpha=0.3, which="both")
    roof.legend(fontsize=8, loc="lower right")
    fig.suptitle(_title(result, "PE-array utilisation"), fontsize=10)
    return fig


def _groups(points: pd.DataFrame, x: str, by: str | Sequence[str],
            unique: bool = True) -> list[tuple[str, Any]]:
    """(label, rows sorted by x) per group. unique: two rows of a group at one x are an error,
    since a line through them would zigzag between unrelated points."""
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [x, *keys] if c not in points.columns]
    if missing:
        raise ValueError(f"points have no column {', '.join(missing)} (columns: "
                         f"{', '.join(map(str, points.columns))})")
    out = []
    for key, rows in points.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        if unique and rows[x].duplicated().any():
            raise ValueError(f"several points per {x} in group {key}: pass by= the columns that "
                             f"tell them apart, or filter the points")
        out.append((", ".join(map(str, key)), rows.sort_values(x)))
    return out


def _label(column: str) -> str:
    """energy_per_inference_pj -> energy per inference (the unit is added by the caller)."""
    return column.removesuffix("_pj").replace("_", " ")


# a hardware field's unit, from the suffix of its name (configuration fields carry their unit)
_FIELD_UNITS = {"_bytes_per_cycle": "B/cycle", "_v": "V", "_mhz": "MHz", "_kib": "KiB",
                "_pj": "pJ", "_nm": "nm", "_bits": "bits", "_cycles": "cycles", "_mw": "mW"}
# corruption metrics that are fractions (0 to 1) and those in their own units
_METRIC_UNITS = {"accuracy": "fraction", "golden_accuracy": "fraction",
                 "top1_agreement": "fraction", "fraction_changed": "fraction", "snr_db": "dB"}


def _field_label(path: str) -> str:
    """buffers.weights.voltage_v -> buffers.weights.voltage (V)."""
    for suffix, unit in _FIELD_UNITS.items():
        if path.endswith(suffix):
            return f"{path.removesuffix(suffix)} ({unit})"
    return path


def _metric_label(metric: str) -> str:
    unit = _METRIC_UNITS.get(metric)
    return f"{metric.replace('_', ' ')} ({unit})" if unit else metric.replace("_", " ")


def voltage_tradeoff(points: pd.DataFrame, x: str = "buffers.weights.voltage_v",
                     by: str | Sequence[str] = "workload",
                     energy: str = "energy_per_inference_pj", metric: str = "accuracy") -> Figure:
    """Two panels against `x` (a swept hardware field): energy, and the corruption metric's mean
    with its 95% confidence band (columns metric, metric_ci95_lo, metric_ci95_hi), one line per
    `by` group. points: `accelsim.load_sweep`'s DataFrame."""
    groups = _groups(points, x, by)
    unit, scale = energy_unit(float(points[energy].abs().max()) if len(points) else 0.0)
    fig, (e_ax, m_ax) = _figure(11.0, 4.2, panels=2)
    for (label, rows), colour in zip(groups, _colours(len(groups)), strict=True):
        e_ax.plot(rows[x], rows[energy] / scale, "o-", color=colour, label=label)
        m_ax.plot(rows[x], rows[metric], "o-", color=colour, label=label)
        m_ax.fill_between(rows[x], rows[f"{metric}_ci95_lo"], rows[f"{metric}_ci95_hi"],
                          color=colour, alpha=0.2, lw=0, label=f"{label} 95% interval")
    e_ax.set_ylabel(f"{_label(energy)} ({unit})")
    m_ax.set_ylabel(_metric_label(metric))
    e_ax.set_title("energy", fontsize=10)
    m_ax.set_title(f"{metric} (mean, 95% interval over the trials)", fontsize=10)
    for ax in (e_ax, m_ax):
        ax.set_xlabel(_field_label(x))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def energy_vs_metric(points: pd.DataFrame, metric: str = "accuracy",
                     by: str | Sequence[str] = "workload", floor: float | None = None,
                     energy: str = "energy_per_inference_pj") -> Figure:
    """Energy per inference against the corruption metric, one series per `by` group, with the
    metric's 95% interval as horizontal error bars; `floor` draws the metric's acceptable
    minimum (e.g. an accuracy floor)."""
    groups = _groups(points, energy, by, unique=False)
    unit, scale = energy_unit(float(points[energy].abs().max()) if len(points) else 0.0)
    fig, (ax,) = _figure(6.4, 4.8)
    for (label, rows), colour in zip(groups, _colours(len(groups)), strict=True):
        mean = rows[metric].to_numpy(float)
        err = [mean - rows[f"{metric}_ci95_lo"].to_numpy(float),
               rows[f"{metric}_ci95_hi"].to_numpy(float) - mean]
        ax.errorbar(mean, rows[energy] / scale, xerr=err, fmt="o-", color=colour, capsize=3,
                    label=label)
    if floor is not None:
        ax.axvline(floor, color="k", ls="--", lw=1, label=f"{metric} floor {floor:.4g}")
    ax.set_xlabel(f"{_metric_label(metric)}: mean, 95% interval")
    ax.set_ylabel(f"{_label(energy)} ({unit})")
    ax.set_ylim(bottom=0)  # from zero, so a small relative change looks small
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


__all__ = ["cycles", "energy_breakdown", "energy_unit", "energy_vs_metric", "utilisation",
           "voltage_tradeoff"]
