"""accelsim.plots: the artists carry the Result's (or the sweep points') numbers."""

from __future__ import annotations

import dataclasses
import io

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

import accelsim
from accelsim import plots

matplotlib.use("Agg")

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
WORKLOADS = {"int8": ROOT / "workloads" / "digits_cnn_int8_qdq.onnx",
             "binary": ROOT / "workloads" / "digits_binary_qonnx.onnx"}
VOLTAGE = "buffers.weights.voltage_v"


def point(result, workload: str, voltage: float) -> dict:
    """One row of `accelsim.load_sweep`'s DataFrame, made from a Result."""
    t = result.totals
    row = {"key": f"{workload}@{voltage}", "workload": workload, "seed": result.seed,
           "trials": result.corruption["trials"], VOLTAGE: voltage, "cycles": t.cycles,
           "stall_cycles": t.stall_cycles, "utilisation": t.utilisation,
           "latency_s": t.latency_s, "energy_pj": t.energy_pj,
           "energy_per_inference_pj": t.energy_per_inference_pj,
           "average_power_mw": t.average_power_mw, "dram_read_bytes": t.dram_read_bytes,
           "dram_write_bytes": t.dram_write_bytes}
    row.update({f"energy_{c}_pj": v for c, v in t.energy_breakdown_pj.items()})
    for m, s in result.corruption["metrics"].items():
        row[m], row[f"{m}_std"] = s["mean"], s["std"]
        row[f"{m}_ci95_lo"], row[f"{m}_ci95_hi"] = s["ci95"]
    row["result_json"] = result.to_json()
    return row


@pytest.fixture(scope="module")
def results(digits_test_set):
    """Real simulations: both digits networks at two weight-buffer voltages, three trials each
    (0.76 V flips enough bits to move the accuracy)."""
    x, y = digits_test_set
    out = {}
    for name, path in WORKLOADS.items():
        graph = accelsim.load_workload(path)
        for v in (0.9, 0.76):
            hw = accelsim.load_hardware(EDGE, {VOLTAGE: v})
            out[name, v] = accelsim.simulate(hw, graph, {graph.inputs[0]: x[:40]}, seed=1,
                                             trials=3, labels=y[:40])
    return out


@pytest.fixture(scope="module")
def points(results) -> pd.DataFrame:
    return pd.DataFrame([point(r, name, v) for (name, v), r in results.items()])


def bar_heights(container) -> list[float]:
    return [p.get_height() for p in container.patches]


def test_energy_breakdown_bars_are_the_components(results):
    r = results["int8", 0.9]
    fig = plots.energy_breakdown(r)
    ax = fig.axes[0]
    unit, scale = plots.energy_unit(max(layer.energy_pj for layer in r.layers))
    assert unit in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == [layer.name for layer in r.layers]
    drawn = {c.get_label(): c for c in ax.containers}
    assert set(drawn) == {c for c, v in r.totals.energy_breakdown_pj.items() if v > 0}
    for component, container in drawn.items():
        expected = [layer.energy_breakdown_pj.get(component, 0.0) / scale for layer in r.layers]
        assert bar_heights(container) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    tops = [max(p.get_y() + p.get_height() for c in ax.containers for p in [c.patches[i]])
            for i in range(len(r.layers))]
    assert tops == pytest.approx([layer.energy_pj / scale for layer in r.layers], rel=1e-9)


def test_cycles_bars_are_compute_and_stalls_by_cause(results):
    r = results["binary", 0.76]
    ax = plots.cycles(r).axes[0]
    drawn = {c.get_label(): c for c in ax.containers}
    causes = [c for c, n in r.totals.stall_breakdown.items() if n > 0]
    assert causes and set(drawn) == {"compute", *(f"stall: {c}" for c in causes)}
    assert bar_heights(drawn["compute"]) == [layer.compute_cycles for layer in r.layers]
    for c in causes:
        assert bar_heights(drawn[f"stall: {c}"]) == [layer.stall_breakdown[c]
                                                     for layer in r.layers]
    tops = [max(p.get_y() + p.get_height() for c in ax.containers for p in [c.patches[i]])
            for i in range(len(r.layers))]
    assert tops == [layer.cycles for layer in r.layers]


def test_utilisation_bars_and_roofline(results):
    r = results["int8", 0.9]
    bw = r.hardware["dram_bytes_per_cycle"]
    fig = plots.utilisation(r)
    bars, roof = fig.axes
    compute = [layer for layer in r.layers if layer.kind == "compute"]
    assert [t.get_text() for t in bars.get_xticklabels()] == [layer.name for layer in compute]
    assert bar_heights(bars.containers[0]) == pytest.approx(
        [100 * layer.utilisation for layer in compute])
    (dots,) = roof.collections
    expected = [(layer.macs / (layer.dram_read_bytes + layer.dram_write_bytes),
                 layer.macs / layer.cycles) for layer in compute]
    np.testing.assert_allclose(dots.get_offsets(), expected, rtol=1e-12)
    peak = r.hardware["rows"] * r.hardware["cols"]
    lines = {line.get_label(): line.get_xydata() for line in roof.lines}
    dram = lines[f"DRAM roof {bw:g} B/cycle"]
    assert dram[:, 1] == pytest.approx(bw * dram[:, 0])
    assert dram[-1].tolist() == pytest.approx([peak / bw, peak])
    assert lines[f"peak {peak} MACs/cycle"][:, 1].tolist() == [peak, peak]
    # every layer sits under both roofs
    for x, y in expected:
        assert y <= min(peak, bw * x) + 1e-9
    # unlimited bandwidth (or a schema-3 Result, which does not record it): only the peak
    for hardware in ({**r.hardware, "dram_bytes_per_cycle": None},
                     {k: v for k, v in r.hardware.items() if k != "dram_bytes_per_cycle"}):
        unlimited = dataclasses.replace(r, hardware=hardware)
        assert [line.get_label() for line in plots.utilisation(unlimited).axes[1].lines] == [
            f"peak {peak} MACs/cycle"]


def test_voltage_tradeoff_lines_and_bands_are_the_columns(points):
    fig = plots.voltage_tradeoff(points)
    energy_ax, metric_ax = fig.axes
    unit, scale = plots.energy_unit(points["energy_per_inference_pj"].max())
    assert unit in energy_ax.get_ylabel()
    assert energy_ax.get_xlabel() == "buffers.weights.voltage (V)"
    assert metric_ax.get_ylabel() == "accuracy (fraction)"
    bands = metric_ax.collections
    assert len(bands) == 2
    for name, band, e_line, m_line in zip(sorted(WORKLOADS), bands, energy_ax.lines,
                                          metric_ax.lines, strict=True):
        rows = points[points.workload == name].sort_values(VOLTAGE)
        assert e_line.get_label() == m_line.get_label() == name
        assert e_line.get_xdata().tolist() == rows[VOLTAGE].tolist()
        assert e_line.get_ydata() == pytest.approx(rows["energy_per_inference_pj"] / scale)
        assert m_line.get_ydata().tolist() == rows["accuracy"].tolist()
        vertices = band.get_paths()[0].vertices
        for v, lo, hi in zip(rows[VOLTAGE], rows["accuracy_ci95_lo"], rows["accuracy_ci95_hi"],
                             strict=True):
            ys = vertices[np.isclose(vertices[:, 0], v), 1]
            assert (ys.min(), ys.max()) == pytest.approx((lo, hi))
    # the faults at 0.76 V cost accuracy: the plotted data is not flat
    assert points.groupby("workload")["accuracy"].nunique().min() == 2


def test_energy_vs_metric_error_bars_are_the_intervals(points):
    fig = plots.energy_vs_metric(points, metric="accuracy", floor=0.8)
    ax = fig.axes[0]
    unit, scale = plots.energy_unit(points["energy_per_inference_pj"].max())
    assert [line.get_xdata()[0] for line in ax.lines if "floor" in line.get_label()] == [0.8]
    series = [c for c in ax.containers if c.get_label() in WORKLOADS]
    assert sorted(c.get_label() for c in series) == sorted(WORKLOADS)
    for container in series:
        rows = points[points.workload == container.get_label()].sort_values(
            "energy_per_inference_pj")
        line, _, (bars,) = container.lines
        assert line.get_xdata().tolist() == rows["accuracy"].tolist()
        assert line.get_ydata() == pytest.approx(rows["energy_per_inference_pj"] / scale)
        ends = [(seg[0][0], seg[1][0]) for seg in bars.get_segments()]
        np.testing.assert_allclose(ends, rows[["accuracy_ci95_lo", "accuracy_ci95_hi"]],
                                   rtol=1e-12)


def test_groups_with_two_points_at_one_voltage_are_refused(points):
    with pytest.raises(ValueError, match="several points per"):
        plots.voltage_tradeoff(points, by="seed")  # both workloads in one group
    with pytest.raises(ValueError, match="no column nope"):
        plots.voltage_tradeoff(points, x="nope")


def test_figures_save_as_png(results, tmp_path):
    r = results["int8", 0.76]
    for fig in (plots.energy_breakdown(r), plots.cycles(r), plots.utilisation(r)):
        path = tmp_path / "f.png"
        fig.savefig(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_error_says_what_to_install(results, no_matplotlib):
    with pytest.raises(ImportError, match=r"pip install 'accelsim\[plots\]'"):
        plots.cycles(results["int8", 0.9])


def test_a_figure_shows_itself_in_a_notebook(results):
    """Jupyter displays a cell's value through _repr_png_: the figure's own PNG."""
    fig = plots.cycles(results["int8", 0.9])
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    shown, saved = (matplotlib.image.imread(io.BytesIO(b)) for b in (png, buf.getvalue()))
    assert shown.shape == saved.shape and shown.shape[1] > 500
