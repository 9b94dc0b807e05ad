"""The Result: its published JSON Schema, JSON round trip, CSV and DataFrame, `run --out`."""

from __future__ import annotations

import csv
import json
import os

import jsonschema
import numpy as np
import pytest
from conftest import ROOT

from accelsim.cli import main, parser
from accelsim.hardware import load_hardware
from accelsim.result import SCHEMA_VERSION, Result, json_schema, write_atomic

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
SCALESIM_CFG = ROOT / "hwconfigs" / "scalesim_default_32x32.cfg"
ALEXNET = ROOT / "workloads" / "alexnet.csv"
SCHEMA_FILE = ROOT / "docs" / "result.schema.json"


def run_json(capsys, argv: list[str]) -> str:
    assert main(["run", *argv, "--json"]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def published_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


@pytest.fixture(scope="module")
def runs(digits_npz) -> dict[str, list[str]]:
    return {
        "digits with inputs and faults": [str(EDGE), str(INT8), "--input", str(digits_npz),
                                          "--trials", "2",
                                          "--set", "buffers.weights.voltage_v=0.78"],
        "SCALE-Sim CSV, timing only": [str(SCALESIM_CFG), str(ALEXNET), "--timing-only"],
        "toggle energy model": [str(EDGE), str(INT8), "--set", "energy.model=toggles"],
    }


def test_published_schema_is_the_generated_one(published_schema, capsys):
    """docs/result.schema.json cannot drift from the dataclasses: regenerate it with
    `accelsim schema --result > docs/result.schema.json`."""
    assert published_schema == json_schema()
    assert main(["schema", "--result"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text()
    jsonschema.Draft202012Validator.check_schema(published_schema)
    assert "outputs" not in published_schema["properties"]


def test_hardware_schema_is_still_the_default(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "accelsim hardware description"


@pytest.mark.parametrize("case", ["digits with inputs and faults", "SCALE-Sim CSV, timing only",
                                  "toggle energy model"])
def test_run_json_validates_and_round_trips(case, runs, published_schema, capsys):
    text = run_json(capsys, runs[case])
    data = json.loads(text)
    jsonschema.Draft202012Validator(published_schema).validate(data)
    r = Result.from_json(text)
    assert Result.from_json(r.to_json()) == r
    assert r.to_json() == text.rstrip("\n")  # byte for byte
    if "--timing-only" in runs[case]:
        assert r.corruption is None and r.not_modelled == ["corruption"]
    else:
        assert r.corruption["trials"] == (2 if "--trials" in runs[case] else 1)


def test_an_older_schema_still_loads_and_round_trips(runs, capsys):
    """Schema 4 only added hardware.dram_bytes_per_cycle: a schema-3 Result (a sweep store
    from before) loads, writes back byte for byte and keeps its version; one from the future,
    or from before 3, is refused."""
    data = json.loads(run_json(capsys, [str(EDGE), str(INT8), "--timing-only"]))
    assert data["schema_version"] == SCHEMA_VERSION == 4
    bandwidth = load_hardware(EDGE).dram.bandwidth_bytes_per_cycle
    assert data["hardware"]["dram_bytes_per_cycle"] == bandwidth is not None
    hardware = {k: v for k, v in data["hardware"].items() if k != "dram_bytes_per_cycle"}
    old = json.dumps({**data, "schema_version": 3, "hardware": hardware}, indent=2)
    r = Result.from_json(old)
    assert r.schema_version == 3 and "dram_bytes_per_cycle" not in r.hardware
    assert r.to_json() == old
    for version in (2, 5):
        with pytest.raises(ValueError, match="reads 3, 4"):
            Result.from_json(json.dumps({**data, "schema_version": version}))


def test_schema_rejects_what_from_json_would_not_take(runs, published_schema, capsys):
    data = json.loads(run_json(capsys, runs["SCALE-Sim CSV, timing only"]))
    validator = jsonschema.Draft202012Validator(published_schema)
    for broken in (
        {**data, "schema_version": 2},
        {**data, "extra": 1},
        {k: v for k, v in data.items() if k != "totals"},
        {**data, "layers": [{**data["layers"][0], "cycles": "many"}]},
        {**data, "hardware": {**data["hardware"], "rows": None}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_schema_types_the_corruption(runs, published_schema, capsys):
    """The corruption block is typed down to each trial: a renamed, missing or mistyped field
    in it fails validation."""
    data = json.loads(run_json(capsys, runs["digits with inputs and faults"]))
    validator = jsonschema.Draft202012Validator(published_schema)
    validator.validate(data)
    c = data["corruption"]
    assert "accuracy" in c["metrics"] and "accuracy" in c["per_trial"][0]
    no_labels = {k: v for k, v in c["per_trial"][0].items()
                 if k not in ("accuracy", "golden_accuracy")}
    validator.validate({**data, "corruption": {**c, "per_trial": [no_labels]}})
    summary = c["metrics"]["bits_flipped"]
    trial = c["per_trial"][0]
    layer = next(iter(trial["layers"]))
    for broken in (
        {**c, "metrics": {**c["metrics"], "bits_flipped": {**summary, "n": "two"}}},
        {**c, "metrics": {**c["metrics"], "bits_flipped": {"mean": 1.0}}},
        {**c, "per_trial": [{**trial, "bits_flipped_by_buffer": {"weights": 1.5}}]},
        {**c, "per_trial": [{**trial, "layers": {layer: {**trial["layers"][layer],
                                                          "extra": 1}}}]},
        {k: v for k, v in c.items() if k != "seeds"},
        {**c, "trials": None},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**data, "corruption": broken})


@pytest.fixture(scope="module")
def result(digits_npz) -> Result:
    from accelsim import load_hardware
    from accelsim.simulate import simulate
    from accelsim.workload import load_workload

    with np.load(digits_npz) as d:  # toggles need inputs of the graph's batch size (1)
        return simulate(load_hardware(EDGE, {"energy.model": "toggles"}), load_workload(INT8),
                        {"input": d["input"][:1]}, labels=d["labels"][:1])


def test_csv_one_row_per_layer_flattened(result, tmp_path):
    path = tmp_path / "layers.csv"
    text = result.to_csv(path)
    assert path.read_text() == text
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == len(result.layers)
    cols = list(rows[0])
    assert cols[:3] == ["index", "name", "kind"]
    assert "stall_dram_bandwidth" in cols and "energy_sram.weights_pj" in cols
    assert "sram_reads_weights" in cols and "toggles_multiplier_input" in cols
    assert not {"stall_breakdown", "energy_breakdown_pj", "sram_reads", "toggles"} & set(cols)
    for row, rec in zip(rows, result.layers, strict=True):
        assert row["name"] == rec.name and int(row["cycles"]) == rec.cycles
        assert float(row["energy_pj"]) == rec.energy_pj  # repr of a float round-trips
        assert sum(int(row[f"stall_{c}"]) for c in rec.stall_breakdown) == rec.stall_cycles
        for k, v in rec.energy_breakdown_pj.items():
            assert float(row[f"energy_{k}_pj"]) == v
        assert int(row["sram_reads_weights"]) == rec.sram_reads.get("weights", 0)
        if rec.toggles is None:
            assert row["toggles_accumulator"] == ""
        else:
            assert int(row["toggles_accumulator"]) == rec.toggles["accumulator"]
    assert [p.name for p in tmp_path.iterdir()] == ["layers.csv"]  # no temporary left


def test_dataframe_matches_csv(result):
    pd = pytest.importorskip("pandas")
    df = result.to_dataframe()
    assert list(df.index) == [r.index for r in result.layers]
    assert df["cycles"].sum() == result.totals.cycles
    assert df["energy_pj"].sum() == pytest.approx(result.totals.energy_pj)
    assert df["stall_dram_bandwidth"].sum() == result.totals.stall_breakdown["dram_bandwidth"]
    compute = df[df["kind"] == "compute"]
    assert compute["toggles_accumulator"].notna().all()
    assert df[df["kind"] == "vector"]["toggles_accumulator"].isna().all()
    from_csv = pd.read_csv(__import__("io").StringIO(result.to_csv()), index_col="index")
    assert list(from_csv.columns) == list(df.columns)


def test_dataframe_without_pandas_is_a_clear_error(result, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"accelsim\[dataframe\]"):
        result.to_dataframe()


def test_run_out_writes_json_and_csv(runs, published_schema, tmp_path, capsys):
    out = tmp_path / "new" / "dir"
    assert main(["run", *runs["digits with inputs and faults"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "corruption over 2 trial(s)" in printed and str(out / "result.json") in printed
    assert sorted(p.name for p in out.iterdir()) == ["cycles.png", "energy.png", "layers.csv",
                                                     "result.json", "utilisation.png"]
    r = Result.from_json((out / "result.json").read_text())
    jsonschema.Draft202012Validator(published_schema).validate(r.to_dict())
    assert (out / "layers.csv").read_text() == r.to_csv()
    # --quiet: no table, the same files (the same seed gives the same bytes)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["run", *runs["digits with inputs and faults"], "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_run_out_error_writes_nothing(runs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", *runs["SCALE-Sim CSV, timing only"], "--out", str(blocker / "x"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
    # a user error before the simulation (bad override) writes nothing either
    out = tmp_path / "out"
    assert main(["run", *runs["SCALE-Sim CSV, timing only"], "--set", "no.such.field=1",
                 "--out", str(out)]) == 2
    assert not out.exists()


def test_write_atomic_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]  # fails while writing
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("command", ["run", "info", "validate", "schema"])
def test_every_command_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args([command, "--help"])
    out = capsys.readouterr().out
    assert f"\n  accelsim {command} " in out and "example" in out
