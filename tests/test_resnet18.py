"""End to end: the int8 ResNet-18 (QLinearConv, QLinearAdd, MaxPool, GlobalAveragePool, QGemm
after onnxruntime's fusions) gives bit-identical logits in accelsim and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import resnet18  # workloads/, put on sys.path by conftest

from accelsim.execute import execute
from accelsim.workload import load_workload


def test_resnet18_logits_identical(resnet18_onnx):
    x = np.random.default_rng(2024).standard_normal((1, 3, 224, 224)).astype(np.float32)
    session = ort.InferenceSession(str(resnet18_onnx), providers=["CPUExecutionProvider"])
    ref = session.run(None, {resnet18.INPUT: x})[0]
    graph = load_workload(resnet18_onnx)
    got = execute(graph, {resnet18.INPUT: x})[graph.outputs[0]]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert np.array_equal(got, ref), f"{int((got != ref).sum())} of {ref.size} logits differ"
