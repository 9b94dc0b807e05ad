"""Sweeps: grid parsing, the SQLite store (resumable, never overwritten, refuses foreign files),
local processes against a Dask cluster, `load_sweep`'s table and the `accelsim sweep` command."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error
from hypothesis import given
from hypothesis import strategies as st

from accelsim import load_sweep
from accelsim.cli import main, split_hardware
from accelsim.hardware import load_hardware
from accelsim.result import Result
from accelsim.sweep import (
    TOTALS,
    SweepError,
    load_results,
    parse_grid,
    parse_grids,
    plan_points,
    run_sweep,
)

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
EYERISS = ROOT / "hwconfigs" / "eyeriss_like_12x14.yaml"
INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
CSV = ROOT / "workloads" / "gemm_mnk_test.csv"  # timing only: a point without corruption
VOLTAGE = "buffers.weights.voltage_v"
GRID_SPEC = f"{VOLTAGE}=0.74:0.80:0.02"  # 4 values, x 2 workloads = 8 points


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_npz) -> SimpleNamespace:
    """The reference: the test sweep run at once in the local process pool."""
    db = tmp_path_factory.mktemp("reference") / "reference.sqlite"
    summary = run_sweep(EDGE, [INT8, CSV], parse_grids([GRID_SPEC]), db, inputs=digits_npz,
                        trials=2, workers=2, progress=False)
    assert (summary.ran, summary.skipped, summary.total) == (8, 0, 8)
    return SimpleNamespace(db=db, points=stored(db), npz=digits_npz)


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
    assert parse_grid("name='a:b'")[1] == ["a:b"]
    assert parse_grids(["a=1:2:1", "b=x"]) == {"a": [1, 2], "b": ["x"]}


@pytest.mark.parametrize("spec, needle", [
    ("p=0.9:0.7:0.05", "empty range"),
    ("p=0.7:0.9:0", "empty range"),
    ("p=0.7:0.9:-0.1", "empty range"),
    ("p=", "no values"),
    ("p=a:b:c", "START:STOP:STEP"),
    ("p=0.7:0.9", "START:STOP:STEP"),
    ("p=0:1:2:3", "START:STOP:STEP"),
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


# ---------------------------------------------------------------------------------------------
# Points and their keys


def test_keys_name_what_a_point_simulates(tmp_path, digits_npz):
    grid = {VOLTAGE: [0.8, 0.9]}
    base = plan_points(EDGE, [INT8], grid, inputs=digits_npz, trials=2)
    assert [p["overrides"] for p in base] == [{VOLTAGE: 0.8}, {VOLTAGE: 0.9}]
    assert plan_points(EDGE, [INT8], grid, inputs=digits_npz, trials=2) == base
    copy = tmp_path / "same.onnx"
    copy.write_bytes(INT8.read_bytes())
    assert [p["key"] for p in plan_points(EDGE, [copy], grid, inputs=digits_npz, trials=2)] == [
        p["key"] for p in base]  # the content counts, not the path
    assert len(plan_points(EDGE, [INT8, copy], grid, inputs=digits_npz, trials=2)) == 2
    keys = {p["key"] for p in base}
    for changed in (plan_points(EDGE, [INT8], grid, inputs=digits_npz, trials=3),
                    plan_points(EDGE, [INT8], grid, inputs=digits_npz, trials=2, seed=1),
                    plan_points(EDGE, [INT8], grid, trials=2),
                    plan_points(EDGE, [INT8], grid, {"clock_mhz": 500}, digits_npz, trials=2),
                    plan_points(EDGE, [CSV], grid, inputs=digits_npz, trials=2)):
        assert len(changed) == 2 and not keys & {p["key"] for p in changed}


# ---------------------------------------------------------------------------------------------
# Running: killed and resumed, on a Dask cluster, added to


def stored(db: Path) -> dict[str, str]:
    """key -> Result JSON of a store's points (read-only); a duplicate key fails."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT key, result_json FROM points").fetchall()
    assert len(rows) == len({k for k, _ in rows})
    return dict(rows)


def stored_count(db: Path) -> int:
    try:
        return len(stored(db)) if db.exists() else 0
    except sqlite3.OperationalError:  # being created, or locked by a commit
        return 0


def sweep_argv(db: Path, npz: Path) -> list[str]:
    return ["sweep", str(EDGE), str(INT8), str(CSV), "--grid", GRID_SPEC, "--input", str(npz),
            "--trials", "2", "--db", str(db)]


def start_sweep(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "accelsim", *argv, "--workers", "1"], cwd=cwd,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until_stored(proc: subprocess.Popen, db: Path, more_than: int, total: int) -> None:
    """Poll the store until more than `more_than` points but not all are committed."""
    deadline = time.monotonic() + 120
    while not more_than < stored_count(db) < total:
        assert proc.poll() is None, ("the sweep ended before it could be stopped mid-way",
                                     proc.communicate())
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_sweep_killed_then_interrupted_resumes_to_the_same_points(uninterrupted, tmp_path):
    """SIGKILL mid-way, rerun and Ctrl-C mid-way (exit 130, no traceback), rerun to the end:
    exactly the points of the uninterrupted run, none lost or duplicated, identical Results."""
    reference, npz = uninterrupted.points, uninterrupted.npz
    db = tmp_path / "resumed.sqlite"
    proc = start_sweep(sweep_argv(db, npz), tmp_path)
    wait_until_stored(proc, db, 0, len(reference))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed = stored(db)
    assert 0 < len(killed) < len(reference)

    proc = start_sweep(sweep_argv(db, npz), tmp_path)
    wait_until_stored(proc, db, len(killed), len(reference))
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "rerun" in err
    interrupted = stored(db)
    assert len(killed) < len(interrupted) < len(reference)
    assert {k: interrupted[k] for k in killed} == killed

    proc = start_sweep(sweep_argv(db, npz), tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (f"{len(reference) - len(interrupted)} point(s) run, {len(interrupted)} skipped as "
            f"already stored, {len(reference)} in the grid") in out
    assert stored(db) == reference  # same keys, none lost or duplicated, identical Results


def test_a_dask_cluster_gives_the_process_pools_results(uninterrupted, tmp_path):
    from distributed import LocalCluster

    reference, npz = uninterrupted.points, uninterrupted.npz
    db = tmp_path / "dask.sqlite"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        summary = run_sweep(EDGE, [INT8, CSV], parse_grids([GRID_SPEC]), db, inputs=npz,
                            trials=2, scheduler=cluster.scheduler_address, progress=False)
    assert (summary.ran, summary.skipped, summary.total) == (len(reference), 0, len(reference))
    assert stored(db) == reference


def test_a_failing_point_stops_the_sweep_with_its_error_and_keeps_the_finished(tmp_path, capsys):
    """The int8 network cannot run on an int4-only array: found by that point's worker, after
    the point before it was stored."""
    db = tmp_path / "results.sqlite"
    code = main(["sweep", str(EDGE), str(INT8), "--grid", "pe_array.precisions=[int8],[int4]",
                 "--workers", "1", "--db", str(db)])
    assert_one_line_error(code, capsys.readouterr().err, str(EDGE),
                          '{"pe_array.precisions":["int4"]}', "[int4] cannot run layer conv1")
    (point,) = stored(db)
    assert Result.from_json(stored(db)[point]).totals.cycles > 0


@pytest.mark.parametrize("bad", ["input", "workload", "folder"])
def test_what_fails_before_any_point_leaves_no_store(bad, tmp_path, capsys):
    """A wrong --input file, an unreadable second network or a --db in no folder is one line
    before any point runs, and no store file is made."""
    npz, workload, db = tmp_path / "in.npz", tmp_path / "net.onnx", tmp_path / "results.sqlite"
    np.savez(npz, image=np.zeros((2, 1, 8, 8), np.float32))
    workload.write_bytes(b"not onnx")
    argv = ["--grid", f"{VOLTAGE}=0.8,0.9", "--workers", "1"]
    argv, needle = {
        "input": (["sweep", str(EDGE), str(INT8), *argv, "--input", str(npz), "--db", str(db)],
                  "missing input(s) input"),
        "workload": (["sweep", str(EDGE), str(INT8), str(workload), *argv, "--db", str(db)],
                     str(workload)),
        "folder": (["sweep", str(EDGE), str(INT8), *argv, "--db",
                    str(tmp_path / "no" / "r.sqlite")], "no folder"),
    }[bad]
    assert_one_line_error(main(argv), capsys.readouterr().err, needle)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in.npz", "net.onnx"]


def test_a_sweep_over_two_machines(tmp_path, capsys):
    """HW HW WORKLOAD: each machine is swept, and a point has the key it has in a sweep of its
    machine alone (so such stores merge and resume alike)."""
    db = tmp_path / "machines.sqlite"
    argv = ["sweep", str(EDGE), str(EYERISS), str(CSV), "--grid", f"{VOLTAGE}=0.8,0.9",
            "--workers", "1", "--db", str(db)]
    assert main(argv) == 0
    assert "4 point(s) run" in capsys.readouterr().out
    points = stored(db)
    for hw in (EDGE, EYERISS):
        alone = plan_points(hw, [CSV], {VOLTAGE: [0.8, 0.9]})
        assert {p["key"] for p in alone} <= set(points)
        name = load_hardware(hw).name
        assert {Result.from_json(points[p["key"]]).hardware["name"] for p in alone} == {name}


@pytest.mark.parametrize("files, hardware", [
    (["a.yaml", "net.onnx"], ["a.yaml"]),
    (["a.yaml", "b.YML", "c.cfg", "net.onnx", "t.csv"], ["a.yaml", "b.YML", "c.cfg"]),
    (["hw", "net.onnx", "late.yaml"], ["hw"]),  # the first is hardware whatever its name
    (["a.yaml"], ["a.yaml"]),
])
def test_hardware_files_come_first(files, hardware):
    assert split_hardware(files) == (hardware, files[len(hardware):])


def test_rerunning_on_a_store_adds_to_it(uninterrupted, tmp_path):
    reference, npz = uninterrupted.points, uninterrupted.npz
    db = tmp_path / "more.sqlite"
    shutil.copyfile(uninterrupted.db, db)
    summary = run_sweep(EDGE, [INT8], {VOLTAGE: [0.8, 0.9]}, db, inputs=npz, trials=2,
                        workers=1, progress=False)
    assert (summary.ran, summary.skipped, summary.total) == (1, 1, 2)
    after = stored(db)
    assert len(after) == len(reference) + 1 and {k: after[k] for k in reference} == reference


# ---------------------------------------------------------------------------------------------
# Reading a store


def test_load_sweep_is_one_row_per_point_with_the_results_figures(uninterrupted):
    before = uninterrupted.db.read_bytes()
    df = load_sweep(uninterrupted.db)
    assert uninterrupted.db.read_bytes() == before  # reading opens the store read-only
    results = dict(zip(df["key"], load_results(uninterrupted.db), strict=True))
    assert set(results) == set(uninterrupted.points) and len(df) == 8
    digits = next(r for r in results.values() if r.corruption is not None)
    components = list(digits.totals.energy_breakdown_pj)
    metrics = list(digits.corruption["metrics"])
    assert "accuracy" in metrics and "snr_db" in metrics
    assert list(df.columns) == [
        "key", "hardware", "workload", "inputs", "seed", "trials", VOLTAGE, *TOTALS,
        *(f"energy_{c}_pj" for c in components),
        *(f"{m}{s}" for m in metrics for s in ("", "_std", "_ci95_lo", "_ci95_hi")),
        "result_json"]
    assert sorted(df[VOLTAGE].unique()) == [0.74, 0.76, 0.78, 0.8]
    assert sorted(df["workload"]) == sorted([str(INT8)] * 4 + [str(CSV)] * 4)
    assert set(df["hardware"]) == {str(EDGE)}
    assert df["inputs"].nunique() == 1 and str(df["inputs"].iloc[0]).endswith(".npz")
    for row in df.to_dict("records"):
        result = results[row["key"]]
        assert Result.from_json(row["result_json"]) == result
        assert (row["seed"], row["trials"]) == (0, 2)
        hw = load_hardware(EDGE, {VOLTAGE: row[VOLTAGE]})
        assert hashlib.sha256(hw.model_dump_json().encode()).hexdigest() == (
            result.hardware["sha256"])
        for t in TOTALS:
            assert row[t] == getattr(result.totals, t)
        for c in components:
            assert row[f"energy_{c}_pj"] == result.totals.energy_breakdown_pj[c]
        for m in metrics:
            got = [row[f"{m}{s}"] for s in ("", "_std", "_ci95_lo", "_ci95_hi")]
            if result.corruption is None:
                assert all(math.isnan(v) for v in got)
            else:
                summary = result.corruption["metrics"][m]
                want = [summary["mean"], summary["std"], *summary["ci95"]]
                assert all(math.isnan(g) if w is None else g == w
                           for g, w in zip(got, want, strict=True))
    assert df.loc[df["workload"] == str(INT8), "accuracy"].notna().all()
    assert df.loc[df["workload"] == str(CSV), "accuracy"].isna().all()


def test_export_writes_the_table_as_csv(uninterrupted, tmp_path, capsys):
    out = tmp_path / "points.csv"
    assert main(["sweep", "--db", str(uninterrupted.db), "--export", str(out)]) == 0
    assert "wrote 8 point(s)" in capsys.readouterr().out
    with out.open() as f:
        rows = list(csv.DictReader(f))
    df = load_sweep(uninterrupted.db)
    assert list(rows[0]) == [c for c in df.columns if c != "result_json"]
    assert [r["key"] for r in rows] == list(df["key"])
    for r, cycles, accuracy in zip(rows, df["cycles"], df["accuracy"], strict=True):
        assert int(r["cycles"]) == cycles
        assert r["accuracy"] == ("" if math.isnan(accuracy) else repr(accuracy))


def test_load_sweep_without_pandas_says_what_to_install(uninterrupted, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"accelsim\[dataframe\]"):
        load_sweep(uninterrupted.db)


# ---------------------------------------------------------------------------------------------
# Bad grids and files that are not stores: one line, exit 2, nothing touched


@pytest.mark.parametrize("grid, needle", [
    ("buffers.weights.voltag=0.7:0.8:0.1", "unknown field (did you mean voltage_v?)"),
    (f"{VOLTAGE}=0.8:0.7:0.05", "empty range"),
    (f"{VOLTAGE}=0.7:0.8:0", "empty range"),
    (f"{VOLTAGE}=", "no values"),
    (f"{VOLTAGE}=0.8,high", "valid number"),
    ("energy.model=table,bogus", "energy.model"),
    (f"{VOLTAGE}=0.7:0.8", "START:STOP:STEP"),
    (f"{VOLTAGE}:0.7", "expected PATH="),
])
def test_bad_grids_are_one_line_and_touch_nothing(grid, needle, uninterrupted, tmp_path,
                                                  capsys):
    db = tmp_path / "store.sqlite"
    shutil.copyfile(uninterrupted.db, db)
    before = db.read_bytes()
    code = main(["sweep", str(EDGE), str(INT8), "--grid", grid, "--db", str(db)])
    assert_one_line_error(code, capsys.readouterr().err, f"--grid {grid.split('=')[0]}", needle)
    assert db.read_bytes() == before
    code = main(["sweep", str(EDGE), str(INT8), "--grid", grid, "--db", str(tmp_path / "new")])
    assert code == 2 and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]


def foreign_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")


def meta_of_another_application(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('application', 'other')")


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(os.urandom(4096)), "not an accelsim sweep store"),
    (lambda p: p.write_text("key,value\n"), "not an accelsim sweep store"),
    (lambda p: p.write_bytes(b""), "empty SQLite database"),
    (foreign_database, "tables users"),
    (meta_of_another_application, "tables meta"),
])
def test_files_that_are_not_stores_are_refused_untouched(make, needle, tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    make(db)
    before = db.read_bytes()
    for argv in (["sweep", str(EDGE), str(CSV), "--grid", "clock_mhz=100,200"],
                 ["sweep", "--export", str(tmp_path / "points.csv")]):
        assert_one_line_error(main([*argv, "--db", str(db)]), capsys.readouterr().err,
                              str(db), needle)
        assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_a_newer_store_format_is_refused(uninterrupted, tmp_path, capsys):
    db = tmp_path / "future.sqlite"
    shutil.copyfile(uninterrupted.db, db)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    before = db.read_bytes()
    assert_one_line_error(main(["sweep", "--db", str(db), "--export", str(tmp_path / "x.csv")]),
                          capsys.readouterr().err, str(db), "format 99")
    assert db.read_bytes() == before


@pytest.mark.parametrize("argv, needle", [
    (["sweep", "--db", "x.sqlite"], "WORKLOAD"),
    (["sweep", str(EDGE), str(INT8), "--db", "x.sqlite", "--export", "p.csv"], "--export"),
    (["sweep", str(EDGE), str(INT8), "--db", "x.sqlite", "--trials", "0"], "--trials"),
    (["sweep", str(EDGE), str(INT8), "--db", "x.sqlite", "--workers", "0"], "--workers"),
    (["sweep", str(EDGE), str(INT8), "--db", "x.sqlite", "--set", f"{VOLTAGE}=0.8",
      "--grid", f"{VOLTAGE}=0.7,0.9"], "--set"),
    (["sweep", str(EDGE), "missing.onnx", "--db", "x.sqlite"], "missing.onnx"),
    (["sweep", str(EDGE), str(INT8), "--db", "x.sqlite", "--input", "none.npz"], "none.npz"),
    (["sweep", "--db", "x.sqlite", "--export", "p.csv"], "no such sweep store"),
])
def test_bad_sweep_commands(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(main(argv), capsys.readouterr().err, needle)
    assert list(tmp_path.iterdir()) == []
