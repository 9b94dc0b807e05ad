"""`accelsim run`'s display: rich tables on a terminal, plain text in a pipe, progress bars only
on a terminal, the plots of --out, an example in every --help."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from conftest import ROOT
from rich.console import Console

import accelsim
from accelsim.cli import EXAMPLES, _short, corruption_rows, main, parser, print_run

EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
ALEXNET = ROOT / "workloads" / "alexnet.csv"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ACCELSIM = [sys.executable, "-c", "import sys; from accelsim.cli import main; sys.exit(main())"]
# the same with bars shown at once, so a test of the bar does not depend on the machine's speed
ACCELSIM_BARS_AT_ONCE = [sys.executable, "-c", "import sys, accelsim.progress as p; "
                         "p.SHOW_AFTER_S = 0; from accelsim.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def faulty(digits_test_set):
    """The int8 digits CNN at 0.78 V on 40 labelled images, two trials."""
    x, y = digits_test_set
    hw = accelsim.load_hardware(EDGE, {"buffers.weights.voltage_v": 0.78})
    return accelsim.simulate(hw, accelsim.load_workload(INT8), {"input": x[:40]}, seed=0,
                             trials=2, labels=y[:40])


def terminal_text(result, width: int) -> str:
    """print_run on a rich Console that believes it is a terminal `width` columns wide."""
    buf = io.StringIO()
    print_run(result, "digits.npz", [], Console(file=buf, force_terminal=True, width=width))
    return ANSI.sub("", buf.getvalue())


def test_short_numbers():
    assert [_short(n) for n in (0, 9_999, 10_000, 12_345, 999_499, 1_234_567, 1_810_000_000)] \
        == ["0", "9,999", "10k", "12.3k", "999k", "1.23M", "1.81G"]


@pytest.mark.parametrize("width", [100, 120, 160])
def test_terminal_table_has_layers_totals_and_corruption(faulty, width):
    text = terminal_text(faulty, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    t = faulty.totals
    # the timing table: one row per layer with its cycles, compute and stall cycles
    for layer in faulty.layers:
        cells = next(line for line in lines if line.startswith(layer.name[:8])).split()
        assert [_short(layer.cycles), _short(layer.compute_cycles),
                _short(layer.stall_cycles)] == cells[3:6], (layer.name, cells)
        assert cells[1] == ("array" if layer.kind == "compute" else "vector")
    totals = [line.split() for line in lines if line.startswith("total ")]
    assert totals[0][1:4] == [_short(t.macs), _short(t.cycles), _short(t.compute_cycles)]
    assert totals[0][4:9] == [_short(t.stall_cycles),
                              *(_short(n) for n in t.stall_breakdown.values())]
    # the memory and energy table: DRAM bytes and the energy, total last
    assert totals[1][1:3] == [_short(t.dram_read_bytes), _short(t.dram_write_bytes)]
    assert f"{t.cycles:,} cycles" in text
    assert "corruption over 2 trial(s)" in text
    accuracy = next(line for line in lines if line.startswith("accuracy"))
    lo, hi = faulty.corruption["metrics"]["accuracy"]["ci95"]
    assert f"[{100 * lo:.4g}, {100 * hi:.4g}] %" in accuracy
    if width >= 120:  # wide enough for every name in full
        for layer in faulty.layers:
            assert any(line.startswith(layer.name + " ") for line in lines), layer.name


def test_piped_output_is_plain(digits_npz, capsys):
    assert main(["run", str(EDGE), str(INT8), "--input", str(digits_npz), "--trials", "2",
                 "--set", "buffers.weights.voltage_v=0.78"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b[" not in out + err and "─" not in out and err == ""
    lines = out.splitlines()
    headers = [line.split() for line in lines if line.startswith("layer ")]
    assert len(headers) == 2 and "cycles" in headers[0] and "energy" in headers[1]
    assert sum(line.startswith("total ") for line in lines) == 2
    assert any(line.startswith("corruption over 2 trial(s)") for line in lines)


def run_on_pty(argv: list[str], columns: int = 120,
               command: list[str] = ACCELSIM) -> tuple[int, str]:
    """`accelsim ARGV` (or COMMAND ARGV) with stdout and stderr on a pseudo-terminal `columns`
    wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*command, *map(str, argv)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal(resnet18_onnx):
    """ResNet-18 timed only spends most of a second in each of mapping and timing: the bar
    shows (the rich bar's heavy line after a phase's name) with the table on a terminal. The
    bar shows at once here: after the usual second's wait a fast machine had finished (CI)."""
    code, text = run_on_pty(["run", EDGE, resnet18_onnx, "--timing-only"],
                            command=ACCELSIM_BARS_AT_ONCE)
    assert code == 0, text
    assert re.search(r"(mapping|timing) .*━", text), text[:2000]
    plain = ANSI.sub("", text)
    assert "layer2.0.downsample.0" in plain and "─" in plain


def test_no_progress_in_a_pipe_or_when_quiet():
    """Bars shown at once otherwise: piped, AlexNet's topology prints the plain table and
    nothing on stderr; on a terminal with --quiet, nothing at all."""
    argv = ["run", EDGE, ALEXNET]
    proc = subprocess.run([*ACCELSIM_BARS_AT_ONCE, *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "━" not in proc.stdout and "\x1b[" not in proc.stdout
    assert sum(line.startswith("total ") for line in proc.stdout.splitlines()) == 2
    code, text = run_on_pty([*argv, "--quiet"], command=ACCELSIM_BARS_AT_ONCE)
    assert code == 0 and text == "", text[:2000]


def test_out_writes_the_plots(faulty, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "out"
    assert main(["run", str(EDGE), str(INT8), "--out", str(out), "--timing-only"]) == 0
    printed = capsys.readouterr().out
    for name in ("energy.png", "cycles.png", "utilisation.png"):
        assert str(out / name) in printed
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 300 and image.shape[1] > 500
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_out_without_matplotlib_says_how_to_get_plots(tmp_path, capsys, no_matplotlib):
    out = tmp_path / "out"
    assert main(["run", str(EDGE), str(INT8), "--out", str(out), "--timing-only"]) == 0
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "pip install 'accelsim[plots]'" in err
    assert sorted(p.name for p in out.iterdir()) == ["layers.csv", "result.json"]


def test_help_shows_every_example(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert EXAMPLES and all(example in out for example in EXAMPLES.values())


def test_snr_of_trials_some_without_error():
    """SNR's mean is null (infinite) when a trial has no error: 'no error' only when no trial
    had one (a run with an error in one trial of two said 'no error')."""
    summary = {"mean": None, "std": None, "ci95": [None, None], "n": 2}
    some = {"metrics": {"snr_db": summary}, "per_trial": [{"snr_db": None}, {"snr_db": 31.9}]}
    none = {"metrics": {"snr_db": summary}, "per_trial": [{"snr_db": None}, {"snr_db": None}]}
    assert corruption_rows(some) == [("SNR", "inf in 1 of 2 trials", "")]
    assert corruption_rows(none) == [("SNR", "no error", "")]
