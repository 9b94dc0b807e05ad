"""The bundled binary network: its accuracy through accelsim equals the one recorded at build time
(measured then through qonnx's execution), and its hidden layers run on the xnor-popcount path."""

from pathlib import Path

import numpy as np
import onnx

from accelsim.execute import execute
from accelsim.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "workloads" / "digits_binary_qonnx.onnx"


def test_accuracy_equals_recorded(digits_test_set):
    x, y = digits_test_set
    recorded = {p.key: p.value for p in onnx.load(MODEL).metadata_props}["qonnx_test_accuracy"]
    logits = execute(load_workload(MODEL), {"x": x})["logits"]
    assert float(np.mean(logits.argmax(axis=1) == y)) == float(recorded)
    assert float(recorded) > 0.9


def test_hidden_layers_are_binary():
    graph = load_workload(MODEL)
    kinds = [tuple(graph.tensors[i].type.kind for i in n.inputs[:2]) for n in graph.compute_nodes]
    assert kinds == [("int", "int"), ("bipolar", "bipolar"), ("bipolar", "bipolar"),
                     ("bipolar", "int")]
