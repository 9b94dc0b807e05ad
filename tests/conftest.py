"""Shared fixtures: the repository root and the fixed digits test split."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "workloads"
if str(WORKLOADS) not in sys.path:
    sys.path.insert(0, str(WORKLOADS))


@pytest.fixture(scope="session")
def digits_test_set():
    """(x_test float32 (450, 1, 8, 8), y_test) of workloads/digits_data.py's fixed split."""
    from digits_data import digits_split

    _, _, x_test, y_test = digits_split()
    return x_test, y_test


@pytest.fixture(scope="session")
def resnet18_onnx(tmp_path_factory) -> Path:
    """workloads/resnet18_int8_qdq.onnx as `python workloads/build.py resnet18` makes it (12 MB,
    so not in git): built once per test session."""
    import resnet18

    return resnet18.build(tmp_path_factory.mktemp("resnet18"))


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_test_set) -> Path:
    """An --input file: the first 40 test digits named after the int8 CNN's input, with labels."""
    import numpy as np

    x, y = digits_test_set
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, input=x[:40], labels=y[:40])
    return path


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as on an install without the `plots` extra."""
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A user error: exit status 2 and one line on stderr naming what is wrong, no traceback."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
