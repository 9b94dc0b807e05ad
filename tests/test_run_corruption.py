"""`accelsim.simulate` and `accelsim run` with inputs: corruption in the Result and on screen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT

from accelsim.cli import main
from accelsim.hardware import load_hardware
from accelsim.result import SCHEMA_VERSION, Result
from accelsim.simulate import simulate
from accelsim.workload import load_workload

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, digits_test_set):
    x, y = digits_test_set
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, input=x[:60], labels=y[:60])
    return path, x[:60], y[:60]


def test_error_free_buffers_corrupt_nothing(digits_npz):
    _, x, y = digits_npz
    result = simulate(load_hardware(EDGE), load_workload(INT8), {"input": x}, labels=y)
    m = result.corruption["metrics"]
    assert m["bits_flipped"]["mean"] == 0 and m["fraction_changed"]["mean"] == 0
    assert m["accuracy"]["mean"] == m["golden_accuracy"]["mean"]
    assert result.not_modelled == []


def test_trials_are_seeded_and_summarised(digits_npz):
    _, x, y = digits_npz
    hw = load_hardware(EDGE, {"buffers.weights.voltage_v": 0.75})
    graph = load_workload(INT8)
    a = simulate(hw, graph, {"input": x}, seed=3, trials=3, labels=y)
    b = simulate(hw, graph, {"input": x}, seed=3, trials=3, labels=y)
    assert a.to_json() == b.to_json()
    c = a.corruption
    assert c["trials"] == 3 and c["seeds"] == [3, 4, 5]
    flips = [t["bits_flipped"] for t in c["per_trial"]]
    assert len(set(flips)) > 1  # different seeds, different faulty cells
    m = c["metrics"]["bits_flipped"]
    assert m["mean"] == pytest.approx(np.mean(flips))
    assert m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    assert c["metrics"]["accuracy"]["mean"] < c["metrics"]["golden_accuracy"]["mean"]
    assert Result.from_json(a.to_json()) == a


def test_run_prints_and_writes_corruption(digits_npz, capsys):
    path, _, _ = digits_npz
    argv = ["run", str(EDGE), str(INT8), "--input", str(path), "--trials", "2",
            "--set", "buffers.weights.voltage_v=0.78"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "corruption over 2 trial(s)" in out and "accuracy" in out
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["corruption"]["metrics"]["accuracy"]["n"] == 2
    assert data["corruption"]["metrics"]["bits_flipped"]["mean"] > 0


def test_zero_trials_is_a_user_error(digits_npz, capsys):
    path, _, _ = digits_npz
    assert main(["run", str(EDGE), str(INT8), "--input", str(path), "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trials" in err


def test_intervals_stay_inside_each_metrics_range():
    """A t-interval over few trials can pass 100 % accuracy or go below 0 flips: clipped to the
    metric's range; an unbounded metric (SNR) keeps its symmetric interval."""
    from accelsim.inject import _summary

    acc = _summary([1.0, 1.0, 0.9], "accuracy")
    assert acc["ci95"][1] == 1.0 and acc["ci95"][0] < acc["mean"] < 1.0
    flips = _summary([0, 0, 30], "bits_flipped")
    assert flips["ci95"][0] == 0.0 and flips["ci95"][1] > 30
    snr = _summary([10.0, 20.0, 30.0], "snr_db")
    assert snr["ci95"][0] == pytest.approx(40.0 - snr["ci95"][1])
    assert snr["ci95"][0] < 10.0
