"""examples/whatif_voltage.ipynb runs on a small setting (nbclient, a kernel of this interpreter)
and picks the lowest-energy point above its accuracy floor; its committed outputs hold no error."""

from __future__ import annotations

import ast
import json
import sys

import nbformat
import pytest
from conftest import ROOT
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

import accelsim

NOTEBOOK = ROOT / "examples" / "whatif_voltage.ipynb"
# 60 digits, 2 fault seeds, V/Vmin 1.0, 0.9 and 0.8 (0.8 Vmin: BER 4e-2, accuracy collapses).
SMALL = {"images": 60, "trials": 2, "ratio_low": 0.8, "ratio_high": 1.0, "ratio_step": 0.1,
         "workers": 1, "floor_fraction": 0.95}
# What the test reads back from the kernel once the notebook has run.
REPORT = """
import json, sys
print(json.dumps({"executable": sys.executable, "db": str(db), "key": chosen.key,
                  "floor": floor, "network": chosen.network, "voltage_v": chosen.voltage_v}))
"""


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """(the notebook run with SMALL, its report, the folder of its store and figure)."""
    folder = tmp_path_factory.mktemp("whatif")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = code_cells(nb)[0]
    values = {**SMALL, "store_dir": str(folder), "figure_path": str(folder / "energy.png")}
    params.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    # No kernel directories: only ipykernel's own spec, which runs sys.executable (an installed
    # python3 kernel.json may say plain "python", another interpreter on CI's PATH).
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    NotebookClient(nb, km=km, timeout=600,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    report = json.loads("".join(o.text for o in nb.cells[-1].outputs if o.name == "stdout"))
    return nb, report, folder


def test_parameters_cell_comes_first_and_is_tagged():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", [])
    assigned = {n.id for node in ast.parse(first.source).body if isinstance(node, ast.Assign)
                for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    assert set(SMALL) | {"store_dir", "figure_path", "seed"} <= assigned


def test_runs_in_this_interpreter(executed):
    _, report, _ = executed
    assert report["executable"] == sys.executable


def test_sweeps_each_network_over_its_own_vmin(executed):
    _, report, folder = executed
    points = accelsim.load_sweep(folder / "whatif_voltage.sqlite")
    assert report["db"] == str(folder / "whatif_voltage.sqlite")
    assert set(points.trials) == {SMALL["trials"]} and set(points.seed) == {0}
    voltages = {name: sorted(rows["buffers.weights.voltage_v"], reverse=True)
                for name, rows in points.groupby(points.workload.map(lambda p: p.split("/")[-1]))}
    # int8: Vmin = nominal 0.9 V; binary: Vmin 0.8 V, plus its nominal 0.9 V as the baseline.
    assert voltages == {"digits_cnn_int8_qdq.onnx": [0.9, 0.81, 0.72],
                        "digits_binary_qonnx.onnx": [0.9, 0.8, 0.72, 0.64]}
    assert (points.accuracy.notna()).all()


def test_picks_the_lowest_energy_point_above_the_floor(executed):
    _, report, folder = executed
    points = accelsim.load_sweep(folder / "whatif_voltage.sqlite")
    floor = SMALL["floor_fraction"] * points.golden_accuracy.max()
    assert report["floor"] == pytest.approx(floor)
    assert report["key"] in set(points.key)
    chosen = points.set_index("key").loc[report["key"]]
    assert chosen.accuracy_ci95_lo >= floor
    assert chosen["buffers.weights.voltage_v"] == report["voltage_v"]
    cheaper = points[points.energy_per_inference_pj < chosen.energy_per_inference_pj]
    assert (cheaper.accuracy_ci95_lo < floor).all()
    assert len(cheaper) > 0  # the floor ruled something out, so the pick was not just min energy


def test_saves_the_energy_accuracy_figure(executed):
    _, _, folder = executed
    assert (folder / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_outputs_are_a_clean_full_run():
    """The committed notebook ran top to bottom in one kernel without an error, and shows its
    table and both figures."""
    assert NOTEBOOK.stat().st_size < 400_000
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and "Traceback" in o.text]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    assert any("pick:" in o.get("text", "") for o in outputs)
