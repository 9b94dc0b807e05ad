"""The examples run, on a tiny setting in a temporary directory, and show what they claim."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import yaml
from conftest import ROOT

import accelsim

EXAMPLES = ROOT / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def moons():
    return load_example("moons_precision")


def test_moons_precision_energy_rises_with_precision(moons, tmp_path, capsys):
    out = tmp_path / "charts" / "moons.png"
    energy = moons.main([str(out), "--image", "8", "--width", "4"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp.png"))
    assert list(energy) == ["binary", "int2", "int4", "int8", "int16"]
    totals = [sum(parts.values()) for parts in energy.values()]
    assert all(a < b for a, b in itertools.pairwise(totals)), totals
    # The MAC and memory terms each rise with the operand bits too (not only their sum).
    for comp in ("mac", "register_file", "sram", "dram"):
        values = [parts[comp] for parts in energy.values()]
        assert all(a < b for a, b in itertools.pairwise(values)), (comp, values)
    printed = capsys.readouterr().out
    table = printed.splitlines()
    assert table[1].split()[:2] == ["precision", "mac"]
    assert [line.split()[0] for line in table[2:7]] == list(energy)
    assert table[5].split()[-1] == "1.00x"  # int8 against itself
    assert str(out) in printed


def test_moons_networks_are_one_shape_at_each_precision(moons):
    """Every precision runs the same MACs, each layer in its own PE mode: the MAC energy per
    MAC is the hardware file's multiplier of that precision plus the 32-bit adder (or the
    xnor-popcount for binary), so no layer was widened to another mode."""
    raw = yaml.safe_load((ROOT / "hwconfigs" / "edge_int8_16x16.yaml").read_text())
    mac = raw["energy"]["mac"]
    hw = moons.hardware(ROOT / "hwconfigs" / "edge_int8_16x16.yaml")
    macs = set()
    for p in moons.PRECISIONS:
        graph = moons.network(p, image=8, width=4)
        result = accelsim.simulate(hw, graph)
        macs.add(result.totals.macs)
        per_mac = mac["xnor_popcount_pj"] if p == "binary" else \
            mac["multiplier_pj"][p] + mac["adder_pj_per_bit"] * 32
        assert result.totals.energy_breakdown_pj["mac"] == pytest.approx(
            result.totals.macs * per_mac, rel=1e-12), p
        # The IR is well formed: it runs bit-accurately on seeded data of its input type.
        t = graph.tensors["x"].type
        rng = np.random.default_rng(0)
        x = rng.choice([-1, 1], size=(1, 3, 8, 8)) if p == "binary" else \
            rng.integers(t.min, t.max + 1, size=(1, 3, 8, 8))
        logits = accelsim.execute(graph, {"x": x.astype(t.storage)})["logits"]
        assert logits.shape == (1, 10)
    # 8x8 input: conv1 64 px x 4 x 27, conv2 16 px x 8 x 36, conv3 4 px x 16 x 72, fc 16 x 10.
    assert macs == {64 * 4 * 27 + 16 * 8 * 36 + 4 * 16 * 72 + 16 * 10}


def test_voltage_sweep_int8_cliff_and_energy_saved(tmp_path, capsys):
    sweep = load_example("voltage_sweep")
    out = tmp_path / "charts" / "sweep.png"
    points = sweep.main([str(out), "--images", "40", "--ratios", "1.0", "0.75", "--seeds", "2",
                         "--quiet", "--dpi", "40"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp.png"))
    for net in ("int8", "binary"):
        high, low = [p for p in points if p.network == net]
        assert (high.ratio, low.ratio) == (1.0, 0.75)
        # Error-free at Vmin: the faulty run is the golden run, and nothing is saved yet.
        assert high.bits_flipped == 0 and high.accuracy == high.golden_accuracy
        assert high.saved_pj == 0 and high.weights_saved_pct == 0
        # Each hardware's own Vmin: the int8 array's is its nominal 0.9 V, the binary one's 0.8 V.
        assert low.voltage_v == pytest.approx(0.75 * (0.9 if net == "int8" else 0.8))
        assert low.ber == pytest.approx(0.2056)
        assert low.saved_pj > 0 and low.saved_pct > 0
        assert low.weights_saved_pct > low.saved_pct
    int8_high, int8_low = points[:2]
    assert int8_low.accuracy <= int8_high.accuracy
    assert int8_low.bits_flipped > 0
    # Every layer of the int8 network follows the sweep: (0.75)^2 of the weight SRAM's energy.
    assert int8_low.weights_saved_pct == pytest.approx(100 * (1 - 0.75**2))
    printed = capsys.readouterr().out
    assert "layer 0 held at 0.8 V" in printed
    assert str(out) in printed
