"""Fault injection through the mapping: layouts, exact faulty runs, persistence, corruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelsim import load_hardware, load_workload
from accelsim.inject import Cells, corruption, decode, encode, golden, run_faulty, trials
from accelsim.mapping import plan

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "hwconfigs" / "edge_int8_16x16.yaml"
BINARY_HW = ROOT / "hwconfigs" / "binary_lowvolt.yaml"
DIGITS_INT8 = ROOT / "workloads" / "digits_cnn_int8_qdq.onnx"
DIGITS_BINARY = ROOT / "workloads" / "digits_binary_qonnx.onnx"


def hardware(path, weights_v_over_vmin: float | None = None, **overrides):
    """A hardware file with the weight buffer at V/Vmin (when given) and other overrides."""
    if weights_v_over_vmin is not None:
        vmin = load_hardware(path).buffers["weights"].resolved_vmin_v
        overrides["buffers.weights.voltage_v"] = weights_v_over_vmin * vmin
    return load_hardware(path, overrides)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bits,kind,signed,lo,hi", [
    (1, "bipolar", True, -1, 1), (2, "int", True, -2, 1), (4, "int", True, -8, 7),
    (4, "int", False, 0, 15), (8, "int", True, -128, 127), (8, "int", False, 0, 255),
    (16, "int", True, -32768, 32767), (24, "int", True, -(1 << 23), (1 << 23) - 1),
    (32, "int", True, -(1 << 31), (1 << 31) - 1),
])
def test_encode_decode_round_trip_and_packing(bits, kind, signed, lo, hi):
    rng = np.random.default_rng(bits)
    v = rng.integers(lo, hi + 1, (3, 37))
    if kind == "bipolar":
        v = np.where(v > 0, 1, -1)
    data = encode(v, bits, kind)
    assert data.shape == (3, -(-37 * bits // 8))
    np.testing.assert_array_equal(decode(data, 37, bits, kind, signed), v)


def test_packing_is_lsb_first():
    assert encode(np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1]]), 1, "bipolar").tolist() == [
        [0b00001101, 0b1]]
    assert encode(np.array([[3, -1]]), 4).tolist() == [[0xF3]]
    assert encode(np.array([[0x1234]]), 16).tolist() == [[0x34, 0x12]]


@pytest.mark.parametrize("hw_path,workload", [(EDGE, DIGITS_INT8), (BINARY_HW, DIGITS_BINARY)])
def test_ber_zero_run_equals_golden_bit_for_bit(hw_path, workload, digits_test_set):
    graph = load_workload(workload)
    mapping = plan(hardware(hw_path, 1.0), graph)
    inputs = {graph.inputs[0]: digits_test_set[0][:40]}
    run = run_faulty(mapping, inputs, seed=3)
    assert same_tensors(run.intermediates, golden(mapping, inputs))
    assert sum(run.flips_by_buffer().values()) == 0


# ---------------------------------------------------------------------------------------------
# Exactness: a faulty layer equals a dense per-fold recomputation from the copies it read


def conv_layer(rng, *, nb, cg, groups, og, h, w, kh, kw, stride, dil, pads):
    """One integer Conv (uint8 x int8, zero points, bias) whose output is its accumulator."""
    from accelsim.kernels.geometry import conv_output_hw
    from accelsim.workload.ir import INT32, UINT8, Graph, Node, Tensor, int_type

    oh, ow = conv_output_hw((h, w), (kh, kw), stride, pads, dil)
    o = groups * og
    tensors = {
        "x": Tensor("x", (nb, groups * cg, h, w), UINT8),
        "w": Tensor("w", (o, cg, kh, kw), int_type(8, True),
                    data=rng.integers(-128, 128, (o, cg, kh, kw)).astype(np.int8)),
        "b": Tensor("b", (o,), INT32, data=rng.integers(-999, 999, o).astype(np.int32)),
        "acc": Tensor("acc", (nb, o, oh, ow), INT32),
    }
    node = Node("conv", "Conv", ["x", "w", "b"], ["acc"], dict(
        strides=stride, pads=pads, dilations=dil, group=groups, x_zero_point=100,
        w_zero_point=rng.integers(-3, 4, o)))
    return Graph("conv_layer", tensors, [node], ["x"], ["acc"])


def reference_faulty_conv(mapping, x, seed):
    """The faulty accumulators by brute force: every fold's products from the copies it read,
    each copy laid out element by element as the module docstring says."""
    from accelsim.faults import BufferFaults

    hw, graph = mapping.hardware, mapping.graph
    (lm,) = [m for m in mapping.layers if m.kind == "compute"]
    gm = lm.gemm
    node = graph.nodes[0]
    a = node.attrs
    w = graph.tensors["w"].data.astype(np.int64)
    w_zp = np.asarray(a["w_zero_point"], np.int64)
    x_zp = a["x_zero_point"]
    pt, pl = a["pads"][0], a["pads"][1]
    cells = {n: BufferFaults(b, n, seed) for n, b in hw.buffers.items()}

    def through(name, data, transfers):
        v = hw.buffers[name].voltage_for(lm.name, lm.compute_index)
        size = hw.buffers[name].size_bytes
        out = data.copy()
        where = [(t.address + i) % size for t in transfers for i in range(t.nbytes)]
        for i, address in enumerate(where):  # byte by byte: a piece may wrap past the end
            out[i] = cells[name].read(data[i:i + 1], address, v).data[0]
        return out

    def kdec(k):
        return k // (gm.kw * gm.in_c), (k // gm.in_c) % gm.kw, k % gm.in_c

    results = []
    for img in x:  # each inference in turn, through the same mapping
        img = img[None].astype(np.int64)
        acc = np.zeros((gm.groups * gm.n, gm.out_h * gm.out_w), np.int64)
        acc += graph.tensors["b"].data.astype(np.int64)[:, None]
        loaded = {}
        transfers = {}
        for s in lm.steps:
            for t in s.loads:
                transfers.setdefault((s.fold, t.role), []).append(t)
            for t in s.stores:
                transfers.setdefault((s.fold, "store"), []).append(t)
        for f in lm.folds:
            g, (p0, p1), (k0, k1), (n0, n1) = f.group, f.p, f.k, f.n
            wkey, xkey = ("w", g, f.k, f.n), ("x", g, f.p, f.k)
            if (f.index, "weights") in transfers:
                loaded[wkey] = transfers[f.index, "weights"]
            if (f.index, "ifmap") in transfers:
                loaded[xkey] = transfers[f.index, "ifmap"]
            # weights: (k, n) at (n - n0) * Kf + (k - k0), one byte each
            wb = [w[g * gm.n + n, kdec(k)[2], kdec(k)[0], kdec(k)[1]]
                  for n in range(n0, n1) for k in range(k0, k1)]
            got = through("weights", np.array(wb, np.int64).astype(np.int8).view(np.uint8),
                          loaded[wkey]).view(np.int8).astype(np.int64)
            wf = got.reshape(n1 - n0, k1 - k0).T - w_zp[g * gm.n + n0:g * gm.n + n1]
            # ifmap region: images, rows, cols, channels (ascending), one byte each
            per = gm.out_h * gm.out_w
            q0, q1 = p0 % per, (p1 - 1) % per
            oy0, oy1, ox0, ox1 = q0 // gm.out_w, q1 // gm.out_w, q0 % gm.out_w, q1 % gm.out_w
            rows = min(gm.in_h, (oy1 - oy0) * gm.sh + (gm.kh - 1) * gm.dh + 1)
            y0 = min(max(oy0 * gm.sh - pt, 0), gm.in_h - rows)
            if oy0 == oy1:
                cols = min(gm.in_w, (ox1 - ox0) * gm.sw + (gm.kw - 1) * gm.dw + 1)
                x0 = min(max(ox0 * gm.sw - pl, 0), gm.in_w - cols)
            else:
                cols, x0 = gm.in_w, 0
            chans = sorted({k % gm.in_c for k in range(k0, k1)})
            coords = [(y, xx, c) for y in range(y0, y0 + rows) for xx in range(x0, x0 + cols)
                      for c in chans]
            xb = np.array([img[0, g * gm.in_c + c, y, xx] for y, xx, c in coords], np.uint8)
            xr = through("ifmap", xb, loaded[xkey])
            xcopy = img[0].copy()
            for (y, xx, c), v in zip(coords, xr, strict=True):
                xcopy[g * gm.in_c + c, y, xx] = v
            for p in range(p0, p1):
                oy, ox = divmod(p, gm.out_w)
                for k in range(k0, k1):
                    ky, kx, c = kdec(k)
                    y, xx = oy * gm.sh + ky * gm.dh - pt, ox * gm.sw + kx * gm.dw - pl
                    if 0 <= y < gm.in_h and 0 <= xx < gm.in_w:
                        av = xcopy[g * gm.in_c + c, y, xx] - x_zp
                        acc[g * gm.n + n0:g * gm.n + n1, p] += av * wf[k - k0]
        acc = ((acc + (1 << 31)) % (1 << 32)) - (1 << 31)
        for f in lm.folds:  # final stores: (p, n), n fastest, int32 little-endian
            if (f.index, "store") not in transfers:
                continue
            g, (p0, p1), (n0, n1) = f.group, f.p, f.n
            block = acc[g * gm.n + n0:g * gm.n + n1, p0:p1].T.astype(np.int32)
            got = through("ofmap", block.reshape(-1).view(np.uint8),
                          transfers[f.index, "store"]).view(np.int32)
            acc[g * gm.n + n0:g * gm.n + n1, p0:p1] = got.reshape(p1 - p0, n1 - n0).T
        results.append(acc.reshape(gm.groups * gm.n, gm.out_h, gm.out_w))
    return np.stack(results).astype(np.int32)


LAYERS = {
    "plain": dict(nb=1, cg=3, groups=1, og=6, h=6, w=5, kh=3, kw=3, stride=(1, 1),
                  dil=(1, 1), pads=(1, 1, 1, 1)),
    "strided_dilated_grouped": dict(nb=1, cg=2, groups=2, og=3, h=7, w=7, kh=3, kw=2,
                                    stride=(2, 1), dil=(1, 2), pads=(1, 0, 0, 1)),
    "depthwise": dict(nb=1, cg=1, groups=4, og=1, h=5, w=6, kh=3, kw=3, stride=(1, 2),
                      dil=(1, 1), pads=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("ifmap_kib", [0.25, 4])
def test_faulty_conv_equals_dense_per_fold_reference(dataflow, layer, ifmap_kib):
    rng = np.random.default_rng(len(layer) + len(dataflow))
    graph = conv_layer(rng, **LAYERS[layer])
    over = {"pe_array.rows": 4, "pe_array.cols": 4, "pe_array.dataflow": dataflow,
            "buffers.ifmap.size_kib": ifmap_kib, "buffers.weights.size_kib": 0.25,
            "buffers.ofmap.size_kib": 1}
    for b in ("ifmap", "weights", "ofmap"):
        over[f"buffers.{b}.voltage_v"] = 0.9 * 0.8  # V/Vmin 0.8: BER ~4%
        over[f"buffers.{b}.banks"] = 2
    mapping = plan(load_hardware({}, over), graph)
    x = rng.integers(0, 256, (2,) + graph.tensors["x"].shape[1:]).astype(np.uint8)
    run = run_faulty(mapping, {"x": x}, seed=11)
    want = reference_faulty_conv(mapping, x, seed=11)
    assert run.flips_by_buffer()["weights"] > 0 and run.flips_by_buffer()["ifmap"] > 0
    assert not np.array_equal(want, golden(mapping, {"x": x})["acc"])
    np.testing.assert_array_equal(run.outputs["acc"], want)


# ---------------------------------------------------------------------------------------------
# Persistence, seeds, the mapping, the voltage


def digits_run(hw, workload, images, seed, **kw):
    graph = load_workload(workload)
    mapping = plan(hw, graph)
    return mapping, run_faulty(mapping, {graph.inputs[0]: images}, seed, **kw)


def test_same_seed_same_run_other_seed_other_run(digits_test_set):
    hw = hardware(EDGE, 0.83)
    x = digits_test_set[0][:60]
    _, a = digits_run(hw, DIGITS_INT8, x, seed=5)
    _, b = digits_run(hw, DIGITS_INT8, x, seed=5)
    _, c = digits_run(hw, DIGITS_INT8, x, seed=6)
    assert same_tensors(a.intermediates, b.intermediates) and a.flips == b.flips
    assert not np.array_equal(a.outputs["logits"], c.outputs["logits"])


def test_a_faulty_cell_corrupts_every_tile_that_passes_through_it(digits_test_set):
    """A weight buffer too small for conv2's weights streams its blocks through two slots:
    blocks of different data in the same slot meet the same flipping cells (flip, f = 0.5), and
    the same block at the same address reads the same."""
    hw = hardware(EDGE, 0.8, **{"buffers.weights.size_kib": 1})
    mapping, run = digits_run(hw, DIGITS_INT8, digits_test_set[0][:2], seed=2, record=True)
    reads = [r for r in run.record if r["layer"] == "conv2" and r["role"] == "weights"]
    by_slot: dict[int, list] = {}
    for r in reads:
        (piece,) = r["pieces"]
        by_slot.setdefault(piece.address, []).append(r["stored"][0] ^ r["read"][0])
    assert len(by_slot) == 2 and all(len(v) >= 2 for v in by_slot.values())
    for masks in by_slot.values():
        n = min(len(m) for m in masks)
        assert masks[0][:n].any()
        for m in masks[1:]:
            np.testing.assert_array_equal(m[:n], masks[0][:n])
    # the same data at the same address: the same read, whatever the read index
    cells = Cells(hw.buffers["weights"], "weights", 2)
    r0 = reads[0]
    counts = dict.fromkeys(("bit_errors", "bits_flipped", "corrected", "detected",
                            "undetected", "reads", "bytes"), 0)
    again = cells.read(r0["stored"], r0["pieces"], r0["voltage"], counts)
    np.testing.assert_array_equal(again, r0["read"])


def flips_of(hw, x, seed):
    _, run = digits_run(hw, DIGITS_INT8, x, seed)
    return run.outputs["logits"], run.flips


@pytest.mark.parametrize("change", [{"buffers.weights.bank_mapping": "contiguous"},
                                    {"buffers.weights.banks": 8}])
def test_the_mapping_matters(change, digits_test_set):
    """Same network, BER and seed: another bank layout puts the weights in other cells."""
    x = digits_test_set[0][:60]
    base = hardware(EDGE, 0.83)
    out_a, flips_a = flips_of(base, x, seed=4)
    out_b, flips_b = flips_of(hardware(EDGE, 0.83), x, seed=4)
    out_c, flips_c = flips_of(hardware(EDGE, 0.83, **change), x, seed=4)
    assert base.buffers["weights"].voltage_v == hardware(EDGE, 0.83, **change).buffers[
        "weights"].voltage_v
    np.testing.assert_array_equal(out_a, out_b)
    assert flips_a == flips_b
    assert not np.array_equal(out_a, out_c)


def test_corruption_grows_as_the_voltage_falls(digits_test_set):
    x, y = digits_test_set[0][:150], digits_test_set[1][:150]
    graph = load_workload(DIGITS_INT8)
    figures = []
    for v in (0.95, 0.88, 0.83, 0.78):
        mapping = plan(hardware(EDGE, v), graph)
        ref = golden(mapping, {"input": x})
        runs = [corruption(ref, run_faulty(mapping, {"input": x}, s), graph, y)
                for s in range(3)]
        figures.append((np.mean([r["bits_flipped"] for r in runs]),
                        np.mean([r["mean_abs_error"] for r in runs])))
    flips, errors = zip(*figures, strict=True)
    assert list(flips) == sorted(flips) and flips[0] < flips[-1]
    assert errors[0] < errors[-1]


@pytest.mark.parametrize("hw_path,workload", [(EDGE, DIGITS_INT8), (BINARY_HW, DIGITS_BINARY)])
def test_digits_accuracy_falls_at_low_weight_voltage(hw_path, workload, digits_test_set):
    x, y = digits_test_set
    graph = load_workload(workload)
    acc = {}
    for v in (1.0, 0.83):
        mapping = plan(hardware(hw_path, v), graph)
        ref = golden(mapping, {graph.inputs[0]: x})
        res = trials(mapping, {graph.inputs[0]: x}, seeds=range(3), labels=y)
        acc[v] = res["metrics"]["accuracy"]
        assert res["metrics"]["golden_accuracy"]["mean"] > 0.9
        one = corruption(ref, run_faulty(mapping, {graph.inputs[0]: x}, 0), graph, y)
        assert set(one["layers"]) >= {"conv1", "conv2"}
    assert acc[1.0]["std"] == 0 and acc[0.83]["mean"] < acc[1.0]["mean"]
    print(workload.name, {v: round(a["mean"], 4) for v, a in acc.items()})


# ---------------------------------------------------------------------------------------------
# The vectorised weights reads and batched corrections equal the fold-by-fold path


def test_reloaded_blocks_vectorised_path_equals_fold_by_fold_and_reference(monkeypatch):
    """Weight blocks streamed through a tiny buffer and reloaded on every pixel pass (other
    slots, other cells): the layer-at-once path (whole-buffer masks, corrections batched per
    pixel range) equals the per-fold reads (record=True, or the vectorised read turned off) and
    the brute-force reference, outputs and counts."""
    from accelsim.inject import _Run

    rng = np.random.default_rng(7)
    graph = conv_layer(rng, nb=1, cg=6, groups=1, og=20, h=12, w=11, kh=3, kw=3,
                       stride=(1, 1), dil=(1, 1), pads=(1, 1, 1, 1))
    over = {"pe_array.rows": 4, "pe_array.cols": 4, "buffers.weights.size_kib": 0.25,
            "buffers.ifmap.size_kib": 0.5, "buffers.ofmap.size_kib": 1}
    for b in ("ifmap", "weights", "ofmap"):
        over[f"buffers.{b}.voltage_v"] = 0.9 * 0.8
        over[f"buffers.{b}.banks"] = 2
    mapping = plan(load_hardware({}, over), graph)
    (lm,) = [m for m in mapping.layers if m.kind == "compute"]
    loads = [(s.fold, t.address) for s in lm.steps for t in s.loads if t.role == "weights"]
    blocks = {(f.group, f.k, f.n) for f in lm.folds}
    assert len(loads) > 2 * len(blocks)  # blocks reloaded, at several address patterns
    x = rng.integers(0, 256, (2,) + graph.tensors["x"].shape[1:]).astype(np.uint8)
    fast = run_faulty(mapping, {"x": x}, seed=5)
    assert fast.flips_by_buffer()["weights"] > 0
    slow = run_faulty(mapping, {"x": x}, seed=5, record=True)
    monkeypatch.setattr(_Run, "_vector_weights", lambda *a: False)
    off = run_faulty(mapping, {"x": x}, seed=5)
    for other in (slow, off):
        assert same_tensors(fast.intermediates, other.intermediates)
        assert fast.flips == other.flips
    np.testing.assert_array_equal(fast.outputs["acc"], reference_faulty_conv(mapping, x, 5))


def test_streamed_network_vectorised_path_equals_fold_by_fold(digits_test_set, monkeypatch):
    """A whole network with its weights streamed through a 1 KiB buffer: the same run with the
    vectorised weights reads and without them (tensors and every count)."""
    from accelsim.inject import _Run

    hw = hardware(EDGE, 0.8, **{"buffers.weights.size_kib": 1})
    x = digits_test_set[0][:3]
    _, fast = digits_run(hw, DIGITS_INT8, x, seed=9)
    monkeypatch.setattr(_Run, "_vector_weights", lambda *a: False)
    _, slow = digits_run(hw, DIGITS_INT8, x, seed=9)
    assert sum(fast.flips_by_buffer().values()) > 0
    assert same_tensors(fast.intermediates, slow.intermediates) and fast.flips == slow.flips
