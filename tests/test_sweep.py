"""Sweeps: grid parsing, the SQLite store (resumable, never overwritten, refuses foreign files),
local processes against a Dask cluster, `load_sweep`'s table and the `accelsim sweep` command."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from accelsim.sweep import SweepError, parse_grid, parse_grids

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
VOLTAGE = "buffers.weights.voltage_v"


# ---------------------------------------------------------------------------------------------
# Grid parsing

decimals = st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False,
                       allow_infinity=False)
steps = st.decimals(min_value=Decimal("0.001"), max_value=100, places=3)


@given(start=decimals, step=steps, count=st.integers(1, 60),
       past=st.decimals(min_value=0, max_value=1, places=3))
def test_range_counts_inclusive_stop_and_values_on_the_grid(start, step, count, past):
    """STOP is START + (count - 1) STEP plus a fraction `past` of a STEP: the range has count
    values, each START + i STEP exactly as a decimal (no float drift), STOP included when on
    the grid."""
    past = min(past, Decimal("0.999"))
    stop = start + (count - 1) * step + past * step
    path, values = parse_grid(f"a.b={start}:{stop}:{step}")
    assert path == "a.b"
    assert len(values) == count
    for i, v in enumerate(values):
        assert Decimal(repr(v)) == start + i * step
    assert values[0] == float(start) and values[-1] <= float(stop)
    if past == 0:
        assert values[-1] == float(stop)


@given(start=st.integers(-50, 50), step=st.integers(1, 7), count=st.integers(1, 30))
def test_integer_ranges_stay_integers(start, step, count):
    _, values = parse_grid(f"x={start}:{start + (count - 1) * step}:{step}")
    assert values == list(range(start, start + count * step, step))
    assert all(type(v) is int for v in values)


def test_ranges_and_lists():
    assert parse_grid(f"{VOLTAGE}=0.70:0.95:0.05") == (
        VOLTAGE, [0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert parse_grid("p=1:2:0.3")[1] == [1.0, 1.3, 1.6, 1.9]
    assert parse_grid("energy.model=fixed, toggles") == ("energy.model", ["fixed", "toggles"])
    assert parse_grid("p=0.8,1e-3,true,null,[1, 2]")[1] == [0.8, 0.001, True, None, [1, 2]]
    assert parse_grids(["a=1:2:1", "b=x"]) == {"a": [1, 2], "b": ["x"]}


@pytest.mark.parametrize("spec, needle", [
    ("p=0.9:0.7:0.05", "empty range"),
    ("p=0.7:0.9:0", "empty range"),
    ("p=0.7:0.9:-0.1", "empty range"),
    ("p=", "no values"),
    ("p=a:b:c", "START:STOP:STEP"),
    ("p=nan:1:1", "START:STOP:STEP"),
    ("p=[0.7", "not valid YAML"),
    ("p0.7", "PATH="),
    ("=0.7", "PATH="),
    ("p=0.7,0.7", "given twice"),
    ("p=0:1e9:1e-30", "more than"),
])
def test_bad_grid_specs(spec, needle):
    with pytest.raises(SweepError) as e:
        parse_grid(spec)
    assert str(e.value).startswith(f"--grid {spec}:") and needle in str(e.value)


def test_a_path_swept_twice():
    with pytest.raises(SweepError, match="already swept"):
        parse_grids(["p=1,2", "p=3"])
