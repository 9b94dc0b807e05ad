"""Hardware files, SCALE-Sim configs and topologies nobody wrote the code for: each test is a
machine or a file a fuzzing round broke (the smallest case found), plus a seeded hypothesis test
that draws random valid machines x small topologies through the whole run and checks the
invariants every run must keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, WORKLOADS, assert_one_line_error

from accelsim.cli import main
from accelsim.hardware import PEArray
from accelsim.kernels import accumulator

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
DIGITS = WORKLOADS / "digits_cnn_int8_qdq.onnx"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- accumulator widths ------------------------------------------------------------------------

def test_accumulator_range_is_what_the_kernels_execute():
    """The schema accepted 2- to 64-bit accumulators; the kernels raise a ValueError (a
    traceback from `run`) outside 8..62 bits."""
    bounds = {type(m).__name__: m for m in PEArray.model_fields["accumulator_bits"].metadata}
    assert (bounds["Ge"].ge, bounds["Le"].le) == (accumulator.MIN_BITS, accumulator.MAX_BITS)


@pytest.mark.parametrize("bits", [accumulator.MIN_BITS, accumulator.MAX_BITS])
def test_extreme_accumulators_run_the_network(capsys, bits):
    code, out, err = run_cli(capsys, "run", EDGE, DIGITS, "--json",
                             "--set", f"pe_array.accumulator_bits={bits}")
    assert code == 0, err
    assert json.loads(out)["corruption"]["metrics"]["bits_flipped"]["mean"] == 0


@pytest.mark.parametrize("bits", [2, 4, 63, 64])
def test_accumulators_the_kernels_cannot_run_are_refused(capsys, tmp_path, bits):
    hw = yaml.safe_load(EDGE.read_text())
    hw["pe_array"]["accumulator_bits"] = bits
    path = write(tmp_path / "acc.yaml", yaml.safe_dump(hw))
    code, _, err = run_cli(capsys, "run", path, DIGITS)
    assert_one_line_error(code, err, str(path), "pe_array.accumulator_bits")
