"""Mapping: how each layer of the IR runs on the machine, as plain data.

A compute layer (Conv, MatMul; binary or integer) is seen as `groups` independent matrix
products (P x K) . (K x N), with P output pixels, K the reduction (filter volume) and N filters
per group. The dataflow puts two of P, K, N on the R x C array and streams the third in time:

    os: rows <- P, cols <- N, stream K      (outputs stay in the PEs)
    ws: rows <- K, cols <- N, stream P      (weights stay in the PEs)
    is: rows <- K, cols <- P, stream N      (inputs stay in the PEs)

Folds run column fold outer, row fold inner, so ws and is accumulate a column fold's partial
sums over consecutive folds. Each fold needs a block of each operand; a block is loaded from
DRAM unless it is already on chip: an operand that fits its buffer whole is loaded once, and
otherwise a block is reused only by consecutive folds that need the same block (the DRAM
traffic follows from this reuse). Partial sums that do not fit the ofmap buffer spill to DRAM
and come back. A fold whose streamed blocks exceed a buffer slot is split into chunks along the
stream, so that double buffering overlaps each chunk's loads with the previous chunk's compute.

Non-compute nodes run on the vector unit, except the ones that belong to a compute layer (its
Requantize, Relu, Clip), which are pipelined on the array's output path. Layout-only nodes cost
nothing.

The timing model (accelsim/sim) consumes the steps; the fault model reads the addresses.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from accelsim.errors import HardwareError, UnsupportedError
from accelsim.gcpause import without_cycle_collection
from accelsim.hardware import PRECISION_BITS, ROLES, Hardware
from accelsim.sim import sram
from accelsim.workload.ir import COMPUTE_OPS, Graph, Node, macs

Dataflow = Literal["os", "ws", "is"]

LAYOUT_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"})
POST_OPS = frozenset({"Requantize", "Relu", "Clip", "Sign", "Threshold", "AffineQuant"})

# Which fold indices (i: row fold, j: column fold) pick an operand's block, per dataflow.
BLOCK_DEPENDS: dict[str, dict[str, str]] = {
    "os": {"ifmap": "i", "weights": "j", "ofmap": "ij"},
    "ws": {"ifmap": "i", "weights": "ij", "ofmap": "j"},
    "is": {"ifmap": "ij", "weights": "i", "ofmap": "j"},
}
STATIONARY = {"os": "ofmap", "ws": "weights", "is": "ifmap"}


def fold_cycles(dataflow: str, rows: int, cols: int, stream: int) -> int:
    """Cycles of one fold on an R x C systolic array (SCALE-Sim's model; stream = K, P or N).

    os: R + C + K - 2 (operands skew in along both edges, the reduction streams K deep);
    ws: 2R + C + P - 2 (R cycles to preload weights, then P inputs skew through);
    is: 2R + C + N - 2 (R cycles to preload inputs, then N weight columns skew through).
    Partial folds take as long as full ones: the skew spans the whole array.
    """
    if dataflow == "os":
        return rows + cols + stream - 2
    return 2 * rows + cols + stream - 2


@dataclass(frozen=True)
class Gemm:
    """A compute layer as `groups` products (P x K) . (K x N), with its ifmap geometry.

    A MatMul is a 1x1 convolution over a P x 1 image with K channels, so one footprint rule
    serves both.
    """

    p: int
    k: int
    n: int
    groups: int
    batch: int
    in_c: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1

    def dims(self, dataflow: str) -> tuple[int, int, int]:
        """(array-row extent, array-column extent, stream length) under a dataflow."""
        return {
            "os": (self.p, self.n, self.k),
            "ws": (self.k, self.n, self.p),
            "is": (self.k, self.p, self.n),
        }[dataflow]

    def ifmap_footprint(self, p0: int, p1: int, k0: int, k1: int) -> int:
        """Elements of one group's ifmap that output pixels [p0, p1) read over reduction
        indices [k0, k1) (index order kh, kw, c with c fastest; padding is not stored)."""
        channels = min(k1 - k0, self.in_c)
        per_image = self.out_h * self.out_w
        if (p1 - 1) // per_image != p0 // per_image:
            images = (p1 - 1) // per_image - p0 // per_image + 1
            return min(images, self.batch) * channels * self.in_h * self.in_w
        q0, q1 = p0 % per_image, (p1 - 1) % per_image
        oy0, oy1 = q0 // self.out_w, q1 // self.out_w
        rows = min(self.in_h, (oy1 - oy0) * self.sh + (self.kh - 1) * self.dh + 1)
        if oy0 == oy1:
            ox0, ox1 = q0 % self.out_w, q1 % self.out_w
            cols = min(self.in_w, (ox1 - ox0) * self.sw + (self.kw - 1) * self.dw + 1)
        else:
            cols = self.in_w
        return channels * rows * cols


def gemm_of(graph: Graph, node: Node) -> Gemm:
    """The GEMM view of a Conv or MatMul node."""
    x = graph.tensors[node.inputs[0]]
    w = graph.tensors[node.inputs[1]]
    out = graph.tensors[node.outputs[0]]
    if node.op == "Conv":
        a = node.attrs
        group = int(a.get("group", 1))
        batch, channels, in_h, in_w = x.shape
        o_ch, cg, kh, kw = w.shape
        _, _, out_h, out_w = out.shape
        (sh, sw), (dh, dw) = a["strides"], a["dilations"]
        return Gemm(p=batch * out_h * out_w, k=cg * kh * kw, n=o_ch // group, groups=group,
                    batch=batch, in_c=cg, in_h=in_h, in_w=in_w, out_h=out_h, out_w=out_w,
                    kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw)
    if node.op == "MatMul":
        k, n = w.shape
        p = int(np.prod(x.shape[:-1], dtype=np.int64))
        return Gemm(p=p, k=k, n=n, groups=1, batch=1, in_c=k, in_h=p, in_w=1, out_h=p, out_w=1)
    raise UnsupportedError(f"{graph.source}: node {node.name}: {node.op} is not a compute op")


class Transfer(NamedTuple):
    """One DMA transfer between DRAM and a buffer; address is the byte offset in the buffer."""

    role: str
    buffer: str
    direction: Literal["load", "store"]
    nbytes: int
    address: int
    kind: str = "data"  # data, or psum for spilled partial sums


class Step(NamedTuple):
    """What the machine does between two synchronisations: loads, compute, stores.

    A step is a fold, a chunk of a fold, or a whole vector-unit layer. compute_cycles come
    from the closed form; bank_stall_cycles are the extra cycles the array waits for SRAM banks
    that cannot deliver one cycle's operands at once.
    """

    layer: int
    fold: int
    compute_cycles: int
    bank_stall_cycles: int
    loads: tuple[Transfer, ...]
    stores: tuple[Transfer, ...]
    unit: Literal["array", "vector"] = "array"


class Fold(NamedTuple):
    """One fold: the GEMM index ranges it covers (group g; [p0,p1) x [k0,k1) x [n0,n1))."""

    index: int
    group: int
    i: int
    j: int
    p: tuple[int, int]
    k: tuple[int, int]
    n: tuple[int, int]
    rows_used: int
    cols_used: int
    cycles: int


@dataclass
class LayerMapping:
    """One layer: its nodes, folds (compute layers), steps and SRAM access counts."""

    index: int
    name: str
    kind: Literal["compute", "vector"]
    nodes: list[str]
    macs: int = 0
    gemm: Gemm | None = None
    binary: bool = False
    precision: str = ""  # the PE mode the layer runs in: binary, int2, int4, int8 or int16
    bits: dict[str, int] = field(default_factory=dict)
    resident: dict[str, bool] = field(default_factory=dict)
    folds: list[Fold] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    vector_work: dict[str, int] = field(default_factory=dict)  # op -> vector-unit lane ops
    compute_index: int | None = None  # position among the compute layers (layer_voltage_v keys)
    reads_earlier_layers: bool = False  # its inputs are earlier layers' outputs, not graph inputs
    sram_reads: dict[str, int] = field(default_factory=dict)  # bank-width accesses
    sram_writes: dict[str, int] = field(default_factory=dict)

    @property
    def vector_ops(self) -> int:
        return sum(self.vector_work.values())

    @property
    def compute_cycles(self) -> int:
        return sum(s.compute_cycles for s in self.steps)

    @property
    def bank_stall_cycles(self) -> int:
        return sum(s.bank_stall_cycles for s in self.steps)


@dataclass
class Mapping:
    hardware: Hardware
    graph: Graph
    layers: list[LayerMapping]

    @property
    def steps(self):
        for layer in self.layers:
            yield from layer.steps


def _bytes(elements: int, bits: int) -> int:
    return -(-elements * bits // 8)


def _accesses(elements: int, bits: int, width_bits: int) -> int:
    return -(-elements * bits // width_bits)


class _Buffers:
    """Capacities and the bank rule of the buffers that hold each role."""

    def __init__(self, hw: Hardware):
        self.hw = hw
        self.name = {role: hw.buffer_for(role) for role in ROLES}
        sharing = {n: sum(1 for r in ROLES if self.name[r] == n) for n in self.name.values()}
        self.capacity = {
            role: hw.buffers[self.name[role]].size_bytes // sharing[self.name[role]]
            for role in ROLES
        }
        for role in ROLES:
            if self.slot(role) == 0:
                name = self.name[role]
                raise HardwareError(
                    f"buffers.{name}.size_kib: {hw.buffers[name].size_bytes} B shared by "
                    f"{sharing[name]} role(s) leaves {role} {self.capacity[role]} B, less than "
                    "two slots of one byte"
                )
        # Roles sharing a buffer each own one share of it, in ROLES order, so that their data
        # never sit at the same addresses (nor meet the same faulty cells).
        self.base = {
            role: self.capacity[role] * sum(1 for r in ROLES[:i] if self.name[r] == self.name[role])
            for i, role in enumerate(ROLES)
        }

    def addresses(self) -> dict[str, _Address]:
        """A fresh address allocator per role, inside the role's share of its buffer."""
        return {r: _Address(self.base[r], self.slot(r)) for r in ROLES}

    def slot(self, role: str) -> int:
        """Bytes of one tile of a role: half its share of the buffer.

        The same with or without double buffering, so that turning it off changes only whether
        the next tile's loads overlap this tile's compute, never the tiling itself.
        """
        return self.capacity[role] // 2

    def width(self, role: str) -> int:
        return self.hw.buffers[self.name[role]].bank_width_bits

    def step_cycles(self, demand_bits: dict[str, int]) -> int:
        """Cycles per stream step of the busiest buffer, given bits each role moves per step."""
        need: dict[str, int] = {}
        for role, bits in demand_bits.items():
            name = self.name[role]
            need[name] = need.get(name, 0) + sram.words(bits, self.hw.buffers[name])
        return sram.cycles_per_step(need, self.hw.buffers)


def pe_precision(hw: Hardware, graph: Graph, node: Node, binary: bool) -> str:
    """The narrowest PE mode of `pe_array.precisions` that holds both operands.

    A binary layer runs as xnor-popcount when the array has it, else as a 2-bit (or wider)
    integer product of +-1 values.
    """
    supported = hw.pe_array.precisions
    if binary and "binary" in supported:
        return "binary"
    need = 2 if binary else max(graph.tensors[t].type.bits for t in node.inputs[:2])
    fits = sorted((PRECISION_BITS[p], p) for p in supported if p != "binary"
                  and PRECISION_BITS[p] >= need)
    if not fits:
        what = "binary" if binary else f"{need}-bit"
        raise HardwareError(
            f"pe_array.precisions: [{', '.join(supported)}] cannot run layer {node.layer} "
            f"({what} operands)"
        )
    return fits[0][1]


def _element_bits(hw: Hardware, graph: Graph, node: Node, layer_nodes: list[Node]) -> dict:
    """Bits per stored element of each operand; SCALE-Sim counts every word as one byte."""
    if hw.scalesim is not None:
        word = 8 * hw.scalesim.word_size_bytes
        return {"ifmap": word, "weights": word, "psum": word, "ofmap": word}
    x = graph.tensors[node.inputs[0]].type
    w = graph.tensors[node.inputs[1]].type
    final = graph.tensors[layer_nodes[-1].outputs[0]].type
    return {
        "ifmap": x.bits,
        "weights": w.bits,
        "psum": hw.pe_array.accumulator_bits,
        "ofmap": hw.pe_array.accumulator_bits if final.kind == "float" else final.bits,
    }


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if c < extra else 0) for c in range(parts)]


class _Address:
    """Byte offsets in a buffer: resident operands packed from `base`, streamed ones ping-pong
    between the two slots from `base`."""

    def __init__(self, base: int, slot: int):
        self.base = base
        self.slot = slot
        self.next_resident = base
        self.loads = 0

    def resident(self, nbytes: int) -> int:
        addr = self.next_resident
        self.next_resident += nbytes
        return addr

    def streamed(self) -> int:
        addr = self.base + (self.loads % 2) * self.slot
        self.loads += 1
        return addr


def _map_compute(hw: Hardware, graph: Graph, index: int, name: str, nodes: list[Node],
                 bufs: _Buffers) -> LayerMapping:
    node = next(n for n in nodes if n.op in COMPUTE_OPS)
    gemm = gemm_of(graph, node)
    df = hw.pe_array.dataflow
    rows_hw, cols_hw = hw.pe_array.rows, hw.pe_array.cols
    bits = _element_bits(hw, graph, node, nodes)
    binary = all(graph.tensors[t].type.kind == "bipolar" for t in node.inputs[:2])
    layer = LayerMapping(index, name, "compute", [n.name for n in nodes],
                         macs=macs(graph, node), gemm=gemm, binary=binary, bits=bits,
                         precision=pe_precision(hw, graph, node, binary),
                         vector_work=vector_work(graph, nodes))
    row_ext, col_ext, stream = gemm.dims(df)
    n_i, n_j = -(-row_ext // rows_hw), -(-col_ext // cols_hw)
    accumulate = df in ("ws", "is")
    segments = _stream_segments(hw, bufs, df, stream, bits)
    row_rngs = [(i * rows_hw, min(row_ext, (i + 1) * rows_hw)) for i in range(n_i)]
    col_rngs = [(j * cols_hw, min(col_ext, (j + 1) * cols_hw)) for j in range(n_j)]
    # Resident blocks are stored side by side, each with its own halo, so the ifmap fits only
    # if all its distinct blocks do.
    totals = {
        "ifmap": gemm.groups * sum(
            _bytes(gemm.ifmap_footprint(*p, *k), bits["ifmap"])
            for p, k in _ifmap_blocks(df, gemm, row_rngs, col_rngs, segments)),
        "weights": gemm.groups * _bytes(gemm.k * gemm.n, bits["weights"]),
    }
    layer.resident = {r: totals[r] <= bufs.capacity[r] for r in totals}
    shapes = {seg: _FoldShapes(hw, bufs, name, df, seg[1] - seg[0], bits) for seg in segments}
    addr = bufs.addresses()
    resident_at: dict[str, dict[tuple, int]] = {"ifmap": {}, "weights": {}}
    last_key: dict[str, tuple | None] = {"ifmap": None, "weights": None}
    depends = BLOCK_DEPENDS[df]
    streamed_role = {"ws": "ifmap", "is": "weights", "os": None}[df]
    full_k = (0, gemm.k)
    footprints: dict[tuple, int] = {}
    fold_no = 0
    for g in range(gemm.groups):
        for j, c_rng in enumerate(col_rngs):
            for t, seg in enumerate(segments):
                for i, r_rng in enumerate(row_rngs):
                    if df == "os":
                        p, k, n = r_rng, full_k, c_rng
                    elif df == "ws":
                        p, k, n = seg, r_rng, c_rng
                    else:
                        p, k, n = c_rng, r_rng, seg
                    r_used, c_used = r_rng[1] - r_rng[0], c_rng[1] - c_rng[0]
                    layer.folds.append(Fold(fold_no, g, i, j, p, k, n, r_used, c_used,
                                            shapes[seg].cycles))
                    if (p, k) not in footprints:
                        footprints[p, k] = _bytes(gemm.ifmap_footprint(*p, *k), bits["ifmap"])
                    block_bytes = {
                        "ifmap": footprints[p, k],
                        "weights": _bytes((k[1] - k[0]) * (n[1] - n[0]), bits["weights"]),
                    }
                    # Loads of the input operands' blocks that are not on chip already.
                    loads: list[tuple[str, int, int]] = []  # role, bytes, address (-1: a slot)
                    for role in ("ifmap", "weights"):
                        key = (g, i if "i" in depends[role] else -1,
                               j if "j" in depends[role] else -1,
                               t if role == streamed_role else -1)
                        if layer.resident[role]:
                            if key not in resident_at[role]:
                                nbytes = block_bytes[role]
                                resident_at[role][key] = addr[role].resident(nbytes)
                                loads.append((role, nbytes, resident_at[role][key]))
                        elif key != last_key[role]:
                            loads.append((role, block_bytes[role], -1))
                        last_key[role] = key
                    out_elems = (p[1] - p[0]) * (n[1] - n[0])
                    first, last = i == 0, i == n_i - 1 or not accumulate
                    shape = shapes[seg].get(r_used, c_used, out_elems, first, last,
                                            tuple((r, nb, a >= 0) for r, nb, a in loads))
                    layer.steps.extend(shape.steps(index, fold_no, loads, addr, bufs))
                    fold_no += 1
    layer.sram_reads, layer.sram_writes = _sum_accesses(bufs, shapes.values())
    return layer


def _ifmap_blocks(df, gemm, row_rngs, col_rngs, segments) -> list[tuple[tuple, tuple]]:
    """The distinct (p-range, k-range) ifmap blocks of one group, as the folds load them."""
    if df == "ws":
        return [(seg, r) for seg in segments for r in row_rngs]
    if df == "os":
        return [(r, (0, gemm.k)) for r in row_rngs]
    return [(c, r) for c in col_rngs for r in row_rngs]


def _stream_segments(hw, bufs, df, stream, bits) -> list[tuple[int, int]]:
    """The stream cut into passes short enough for a column fold's partial sums to stay on chip.

    ws and is accumulate C columns of partial sums, one per stream step, over all row folds;
    when they exceed the ofmap slot, the stream is tiled (each pass pays the array's fill and
    drain again). SCALE-Sim never tiles (it has no partial sums on chip), so neither does a
    SCALE-Sim configuration: its partial sums spill.
    """
    if df == "os" or hw.scalesim is not None:
        return [(0, stream)]
    per_step = _bytes(hw.pe_array.cols, bits["psum"])
    length = max(1, bufs.slot("ofmap") // per_step)
    return [(s, min(stream, s + length)) for s in range(0, stream, length)]


class _FoldShape:
    """What every fold with the same used rows/cols, position and loads does: its chunks."""

    def __init__(self, chunks, load_parts, store_parts, stationary):
        self.chunks = chunks  # [(cycles, bank_stall)]
        self.load_parts = load_parts  # role -> [bytes per chunk] (stationary: one piece)
        self.store_parts = store_parts  # [(kind, [bytes per chunk])]
        self.stationary = stationary
        self.count = 0

    def steps(self, index, fold_no, loads, addr, bufs):
        self.count += 1
        n = len(self.chunks)
        offsets = {role: a for role, _, a in loads}
        done = dict.fromkeys(offsets, 0)
        out = []
        for c, (cycles, stall) in enumerate(self.chunks):
            step_loads = []
            for role, parts in self.load_parts.items():
                if c >= len(parts) or not parts[c]:
                    continue
                base = offsets.get(role, -1)
                address = addr[role].streamed() if base < 0 else base + done[role]
                done[role] = done.get(role, 0) + parts[c]
                kind = "psum" if role == "ofmap" else "data"
                step_loads.append(Transfer(role, bufs.name[role], "load", parts[c], address, kind))
            step_stores = []
            for kind, parts in self.store_parts:
                nb = parts[c] if len(parts) == n else (parts[0] if c == n - 1 else 0)
                if nb:
                    step_stores.append(Transfer("ofmap", bufs.name["ofmap"], "store", nb,
                                                addr["ofmap"].streamed(), kind))
            out.append(Step(index, fold_no, cycles, stall, tuple(step_loads),
                            tuple(step_stores)))
        return out


class _FoldShapes:
    """Cache of fold shapes for one layer, and the SRAM accesses they add up to."""

    def __init__(self, hw, bufs, layer_name, df, stream, bits):
        self.hw, self.bufs, self.layer_name = hw, bufs, layer_name
        self.df, self.stream, self.bits = df, stream, bits
        self.cycles = fold_cycles(df, hw.pe_array.rows, hw.pe_array.cols, stream)
        self.stationary = STATIONARY[df]
        self.cache: dict[tuple, _FoldShape] = {}
        self.accesses: dict[tuple, tuple[dict, dict]] = {}

    def get(self, r_used, c_used, out_elems, first, last, loads) -> _FoldShape:
        key = (r_used, c_used, out_elems, first, last, loads)
        shape = self.cache.get(key)
        if shape is None:
            shape = self.cache[key] = self._build(r_used, c_used, out_elems, first, last, loads)
        return shape

    def _build(self, r_used, c_used, out_elems, first, last, loads) -> _FoldShape:
        bufs, bits, df, stationary = self.bufs, self.bits, self.df, self.stationary
        _check_stationary(self.hw, bufs, self.layer_name, stationary, df, r_used, c_used, bits)
        _check_streamed(bufs, self.layer_name, df, r_used, c_used, bits)
        load_sizes = {role: nb for role, nb, _ in loads}
        accumulate = df in ("ws", "is")
        psum_spill = accumulate and _bytes(out_elems, bits["psum"]) > bufs.slot("ofmap")
        stores: list[tuple[str, int]] = []
        if last:
            stores.append(("data", _bytes(out_elems, bits["ofmap"])))
        elif psum_spill:
            stores.append(("psum", _bytes(out_elems, bits["psum"])))
        if psum_spill and not first:
            load_sizes["ofmap"] = _bytes(out_elems, bits["psum"])
        # Streamed transfers larger than a slot cut the fold into chunks along the stream.
        streamed = [(r, nb) for r, nb in load_sizes.items() if r != stationary]
        if stationary != "ofmap":
            streamed += [("ofmap", nb) for _, nb in stores]
        n = max([1] + [-(-nb // bufs.slot(r)) for r, nb in streamed])
        bank_stall = self.stream * (bufs.step_cycles(
            _stream_demand(df, r_used, c_used, bits, first)) - 1)
        chunks = list(zip(_split(self.cycles, n), _split(bank_stall, n), strict=True))
        load_parts = {r: _split(nb, 1 if r == stationary else n) for r, nb in load_sizes.items()}
        store_parts = [(kind, _split(nb, 1 if stationary == "ofmap" else n))
                       for kind, nb in stores]
        shape = _FoldShape(chunks, load_parts, store_parts, stationary)
        reads = dict.fromkeys(set(bufs.name.values()), 0)
        writes = dict.fromkeys(set(bufs.name.values()), 0)
        _count_array_accesses(df, bufs, reads, writes, r_used, c_used, out_elems, bits, first,
                              self.stream)
        for role, nb in load_sizes.items():
            writes[bufs.name[role]] += _accesses(nb, 8, bufs.width(role))
        for _, nb in stores:
            reads[bufs.name["ofmap"]] += _accesses(nb, 8, bufs.width("ofmap"))
        self.accesses[id(shape)] = (reads, writes)
        return shape


def _sum_accesses(bufs, fold_shapes) -> tuple[dict[str, int], dict[str, int]]:
    """SRAM accesses of a layer: each fold shape's accesses times the folds of that shape."""
    reads = dict.fromkeys(set(bufs.name.values()), 0)
    writes = dict.fromkeys(set(bufs.name.values()), 0)
    for shapes in fold_shapes:
        for shape in shapes.cache.values():
            r, w = shapes.accesses[id(shape)]
            for name in reads:
                reads[name] += r[name] * shape.count
                writes[name] += w[name] * shape.count
    return reads, writes


def _transfer(role, bufs, direction, nbytes, address, addr, kind="data") -> Transfer:
    if address < 0:
        address = addr[role].streamed()
    return Transfer(role, bufs.name[role], direction, nbytes, address, kind)


def _check_stationary(hw, bufs, layer_name, role, df, r_used, c_used, bits) -> None:
    """The stationary operand of one fold must fit its buffer slot: nothing can stream it."""
    elem_bits = bits["psum"] if role == "ofmap" else bits[role]
    need = _bytes(r_used * c_used, elem_bits)
    if need > bufs.slot(role):
        name = bufs.name[role]
        raise HardwareError(
            f"buffers.{name}.size_kib: layer {layer_name}: one {df} fold keeps "
            f"{r_used}x{c_used} {role} values ({need} B) stationary, more than the "
            f"{bufs.slot(role)} B the buffer offers per slot"
        )


def _check_streamed(bufs, layer_name, df, r_used, c_used, bits) -> None:
    """One stream step (a cycle's operands and partial sums) must fit its buffer slot."""
    for role, demand in _stream_demand(df, r_used, c_used, bits, True).items():
        need = _bytes(1, demand)
        if need > bufs.slot(role):
            raise HardwareError(
                f"buffers.{bufs.name[role]}.size_kib: layer {layer_name}: one {df} fold "
                f"streams {need} B of {role} per cycle ({r_used}x{c_used} array in use), more "
                f"than the {bufs.slot(role)} B the buffer offers per slot"
            )


def _stream_demand(df: str, r: int, c: int, bits: dict, first: bool) -> dict[str, int]:
    """Bits each role must deliver per stream step (one cycle of a fold in steady state)."""
    rmw = 1 if first else 2  # accumulating onto earlier partial sums reads them back
    if df == "ws":
        return {"ifmap": r * bits["ifmap"], "ofmap": rmw * c * bits["psum"]}
    if df == "is":
        return {"weights": r * bits["weights"], "ofmap": rmw * c * bits["psum"]}
    return {"ifmap": r * bits["ifmap"], "weights": c * bits["weights"]}


def _count_array_accesses(df, bufs, reads, writes, r, c, out_elems, bits, first, stream):
    """Bank-width SRAM accesses the array makes in one fold (the DMA side is counted apart)."""
    def add(table, role, elements, elem_bits):
        table[bufs.name[role]] += _accesses(elements, elem_bits, bufs.width(role))

    if df == "os":  # r pixels x c filters, each reducing over `stream` = K values
        add(reads, "ifmap", r * stream, bits["ifmap"])
        add(reads, "weights", stream * c, bits["weights"])
        add(writes, "ofmap", out_elems, bits["ofmap"])
        return
    stationary, streamed = ("weights", "ifmap") if df == "ws" else ("ifmap", "weights")
    add(reads, stationary, r * c, bits[stationary])
    add(reads, streamed, stream * r, bits[streamed])
    add(writes, "ofmap", stream * c, bits["psum"])
    if not first:
        add(reads, "ofmap", stream * c, bits["psum"])


# Vector-unit work per output element of each non-compute op (one lane op = one add/compare).
def vector_ops(graph: Graph, node: Node) -> int:
    """Elementwise lane operations a non-compute node costs on the vector unit."""
    out = graph.tensors[node.outputs[0]]
    if node.op in LAYOUT_OPS or node.op == "Concat":
        return 0
    if node.op == "MaxPool" or node.op == "AveragePool":
        return out.size * int(np.prod(node.attrs["kernel_shape"]))
    if node.op == "GlobalAveragePool":
        return graph.tensors[node.inputs[0]].size + out.size
    return out.size


def vector_work(graph: Graph, nodes: list[Node]) -> dict[str, int]:
    """Lane ops by operator of the nodes that run on the vector unit (or the output path)."""
    work: dict[str, int] = {}
    for n in nodes:
        if n.op not in COMPUTE_OPS:
            ops = vector_ops(graph, n)
            if ops:
                work[n.op] = work.get(n.op, 0) + ops
    return work


def _map_vector(hw: Hardware, graph: Graph, index: int, name: str, nodes: list[Node],
                bufs: _Buffers) -> LayerMapping:
    layer = LayerMapping(index, name, "vector", [n.name for n in nodes])
    produced = {o for n in nodes for o in n.outputs}
    in_bytes = sum(
        _bytes(graph.tensors[t].size, graph.tensors[t].type.bits)
        for n in nodes for t in n.inputs
        if t not in produced and not graph.tensors[t].is_const
    )
    out_bytes = sum(_bytes(graph.tensors[t].size, graph.tensors[t].type.bits)
                    for t in nodes[-1].outputs)
    layer.vector_work = vector_work(graph, nodes)
    ops = layer.vector_ops
    if ops == 0 and all(n.op in LAYOUT_OPS for n in nodes):
        return layer
    vu = hw.vector_unit
    cycles = vu.latency_cycles + -(-ops // vu.lanes) * vu.cycles_per_op
    addr = bufs.addresses()
    # Tensors larger than a slot stream through it in chunks, like a fold's streamed operands.
    n = max(1, -(-in_bytes // bufs.slot("ifmap")), -(-out_bytes // bufs.slot("ofmap")))
    for c, (cyc, nb_in, nb_out) in enumerate(zip(
            _split(cycles, n), _split(in_bytes, n), _split(out_bytes, n), strict=True)):
        loads = (_transfer("ifmap", bufs, "load", nb_in, -1, addr),) if nb_in else ()
        stores = (_transfer("ofmap", bufs, "store", nb_out, -1, addr),) if nb_out else ()
        layer.steps.append(Step(index, c, cyc, 0, loads, stores, unit="vector"))
    win, wout = (hw.buffers[bufs.name[r]].bank_width_bits for r in ("ifmap", "ofmap"))
    layer.sram_writes = {bufs.name["ifmap"]: sum(
        _accesses(t.nbytes, 8, win) for st in layer.steps for t in st.loads)}
    layer.sram_reads = {bufs.name["ofmap"]: sum(
        _accesses(t.nbytes, 8, wout) for st in layer.steps for t in st.stores)}
    return layer


def layers_of(graph: Graph) -> list[tuple[str, list[Node]]]:
    """Nodes grouped into layers by their `layer` name, in order of first appearance."""
    groups: dict[str, list[Node]] = {}
    for node in graph.nodes:
        groups.setdefault(node.layer, []).append(node)
    return list(groups.items())


def plan(hw: Hardware, graph: Graph) -> Mapping:
    """Map every layer of `graph` onto `hw`."""
    with without_cycle_collection():
        return _plan(hw, graph)


def _check_layer_voltages(hw: Hardware, graph: Graph) -> None:
    """Every layer_voltage_v key must pick a layer of this workload: a mistyped name or an
    index past the last Conv/MatMul would leave the layer at voltage_v without a word."""
    groups = layers_of(graph)
    names = [name for name, _ in groups]
    computes = sum(1 for _, nodes in groups if any(n.op in COMPUTE_OPS for n in nodes))
    for buffer, buf in hw.buffers.items():
        for key in buf.layer_voltage_v:
            where = f"buffers.{buffer}.layer_voltage_v.{key}: {graph.source or graph.name}"
            if isinstance(key, int) and key >= computes:
                indices = f" (indices 0 to {computes - 1})" if computes else ""
                raise HardwareError(f"{where} has {computes} Conv/MatMul layers{indices}")
            if isinstance(key, str) and key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise HardwareError(f"{where} has no layer {key!r}{hint}")


def _plan(hw: Hardware, graph: Graph) -> Mapping:
    _check_layer_voltages(hw, graph)
    bufs = _Buffers(hw)
    layers = []
    for name, nodes in layers_of(graph):
        index = len(layers)
        compute = [n for n in nodes if n.op in COMPUTE_OPS]
        if len(compute) > 1:
            raise UnsupportedError(
                f"{graph.source}: layer {name}: {len(compute)} compute nodes in one layer"
            )
        if compute:
            layer = _map_compute(hw, graph, index, name, nodes, bufs)
            layer.compute_index = sum(1 for lm in layers if lm.kind == "compute")
        elif not all(n.op in LAYOUT_OPS for n in nodes):
            layer = _map_vector(hw, graph, index, name, nodes, bufs)
        else:
            continue
        produced = {o for n in nodes for o in n.outputs}
        layer.reads_earlier_layers = any(
            t not in produced and t not in graph.inputs and not graph.tensors[t].is_const
            for n in nodes for t in n.inputs
        )
        layers.append(layer)
    return Mapping(hw, graph, layers)


def utilisation(layer: LayerMapping, hw: Hardware, cycles: int) -> float:
    """MACs done / MACs the array could have done in `cycles` (0 for vector layers)."""
    if layer.kind != "compute" or cycles == 0:
        return 0.0
    return layer.macs / (cycles * hw.pe_array.rows * hw.pe_array.cols)


__all__ = ["BLOCK_DEPENDS", "Fold", "Gemm", "LayerMapping", "Mapping", "Step", "Transfer",
           "fold_cycles", "gemm_of", "layers_of", "plan", "utilisation", "vector_ops",
           "vector_work"]
