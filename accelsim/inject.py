"""Fault injection through the mapping: a faulty run of a graph, and its corruption.

A value is corrupted by the cells that hold it, on the reads the mapping makes. faults.py is
the cell model (which cells fail at a voltage, what a read of a byte range returns); this module
decides which bytes sit at which buffer address, runs the network with the copies it read, and
measures the damage against the golden run.

Where each value sits. Every transfer of the mapping (Transfer: role, buffer, bytes, address)
moves one piece of a block; a fold's pieces of one role, in step order, are concatenated and
hold the block's bytes in the layout below (a piece that runs past the end of its buffer wraps
to address 0). Elements of `bits` bits are packed LSB first: element e of a block occupies bits
[e * bits, (e + 1) * bits) of the block, so 8-, 16- and 32-bit values are little-endian bytes and
sub-byte values share bytes (int4: two per byte, the first in the low nibble; bipolar: one bit,
1 for +1 and 0 for -1). Integers are two's complement in `bits` bits (unsigned types unsigned).

- weights block of a fold, group g, rows [k0, k1) x columns [n0, n1) of the group's GEMM matrix
  W (K x N; K in the order kh, kw, c with c fastest): element (k, n) is element
  (n - n0) * (k1 - k0) + (k - k0), i.e. one filter's k-range after another, at the weights'
  bits. For a Conv, W[k, n] = w[g * N + n, c, ky, kx]; for a MatMul W is b.
- ifmap block of a fold (its pixels [p0, p1) over reduction indices [k0, k1)): the region of
  the group's input that mapping.Gemm.ifmap_footprint counts, channels last: images, then rows,
  then columns, then channels (the distinct channels k % C_g of [k0, k1), ascending). Rows are
  the window rows of the fold's output rows, (oy1 - oy0) * sh + (kh - 1) * dh + 1 of them,
  clamped into the image (a window that starts in the top padding takes the first rows); the
  same for columns when the fold's pixels lie in one output row, else whole rows; whole images
  when the pixels span images. Padding is not stored. A MatMul's input is a P x 1 image with K
  channels, so its block is (p, k) with k fastest.
- ofmap blocks (final stores of a fold's outputs, partial-sum spills and reloads): (p, n) with n
  fastest, p over [p0, p1) and n over [n0, n1) of group g (channel g * N + n), at the ofmap's
  bits (the stored tensor's type; partial sums at the accumulator's bits).
- vector-unit layers: their inputs read from the ifmap buffer through their loads' pieces (in
  step order, as a fold's), one tensor after another (each from a byte boundary, in the order
  of the layer's nodes' inputs), each tensor whole in its C order (NCHW); their outputs likewise
  through their stores' pieces in the ofmap buffer.

Which reads. A compute layer's fold reads its ifmap and weights blocks from the copies it
loaded: a block that is not reloaded (resident, or reused by consecutive folds) is the copy an
earlier fold loaded, at that copy's addresses; a block loaded again into another slot meets other
cells. The ofmap buffer is read when a fold's outputs are stored (the DMA reads them out: the
stored, corrupted value is what the next layer reads), and when spilled partial sums are stored
and reloaded. Partial sums that stay on chip (the mapping gives them no address) are not exposed.
A vector-unit layer reads its integer inputs through the ifmap buffer's cells and its integer
outputs through the ofmap buffer's. Float tensors (a float graph input before its quantizer, a
dequantized output) are not corrupted: they stand for host-side values the integer datapath does
not hold (their bytes still take their place in the layout). Voltages are each buffer's
`voltage_for(layer name, compute index)` for the layer.

Persistent faults (the default) are the same on every read of the same address, so a faulty cell
corrupts every tile that passes through it (at f = 0.5, flip whatever it holds). Transient faults
draw a fresh read per fold that reads a block (every element of the block once per fold) and per
inference; SECDED decides per word per read. With a batch of several inferences, each runs in
turn through the same mapping (planned for the graph's own batch): persistent cells are the same
for all of them.

Exactness. The golden output of a compute layer (on the inputs it got, themselves possibly
corrupted by earlier layers) comes from the fast kernel; each fold then adds exact sparse
corrections for the elements its copies got wrong: out[p, n] += A[p, k] dW[k, n] over the
fold's p-, k- and n-ranges (A from the clean input, dW = W' - W its corrupted weights), plus
dA[p, k] W'[k, n] for every window position of the fold that reads a corrupted stored input
element (its im2col fan-out; this includes dA dW). The sum is exact in int64 and is wrapped to
the accumulator's bits, which is exact for a wrapping accumulator (modular arithmetic is linear).
A saturating accumulator is exact when no sum can reach its bounds: K x max|x - x_zp| x
max|w - w_zp| + max|bias| below 2^(bits-1) over the operands' whole type ranges (true for the
bundled networks: int8 x int8 with K < 33,000 and 32-bit accumulators). Otherwise the sum is
clamped once, at the end, and the layer is listed in FaultyRun.inexact. Spilled partial sums
(which only SCALE-Sim configurations produce: accelsim tiles the stream so they stay on chip)
carry their errors into the final sum the same way; with a saturating accumulator that layer is
inexact too (the clamp is applied per fold, not per addition).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from accelsim.errors import InputError
from accelsim.execute import check_inputs, execute, machine_accumulator
from accelsim.faults import BufferFaults
from accelsim.hardware import Buffer
from accelsim.mapping import Gemm, LayerMapping
from accelsim.mapping import Mapping as MappingPlan
from accelsim.ops import REGISTRY, ExecConfig
from accelsim.workload.ir import COMPUTE_OPS, ElemType, Graph, Node

COUNTS = ("bit_errors", "bits_flipped", "corrected", "detected", "undetected", "reads", "bytes")


# ---------------------------------------------------------------------------------------------
# Bytes of a block: packing and unpacking elements


def encode(values: np.ndarray, bits: int, kind: str = "int") -> np.ndarray:
    """(R, n) integers -> (R, ceil(n * bits / 8)) bytes, packed as the module docstring says.

    kind "bipolar": +1 / -1 values (one bit: 1 / 0; wider: the integers +1 / -1).
    """
    values = np.asarray(values)
    rows, n = values.shape
    if kind == "bipolar" and bits == 1:
        return np.packbits(values > 0, axis=-1, bitorder="little")
    if bits in (8, 16, 32, 64):
        return np.ascontiguousarray(values.astype(f"<i{bits // 8}")).view(np.uint8)
    u = values.astype(np.int64) & ((1 << bits) - 1)
    bit_array = ((u[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(rows, n * bits)
    return np.packbits(bit_array, axis=-1, bitorder="little")


def decode(data: np.ndarray, n: int, bits: int, kind: str = "int", signed: bool = True):
    """(R, nbytes) bytes -> (R, n) int64 values: encode's inverse (bipolar decodes to +-1)."""
    data = np.ascontiguousarray(data)
    rows = data.shape[0]
    if kind == "bipolar" and bits == 1:
        b = np.unpackbits(data, axis=-1, count=n, bitorder="little")
        return b.astype(np.int64) * 2 - 1
    if bits in (8, 16, 32, 64):
        dtype = f"<{'i' if signed else 'u'}{bits // 8}"
        out = data.view(dtype)[:, :n].astype(np.int64)
    else:
        b = np.unpackbits(data, axis=-1, count=n * bits, bitorder="little").reshape(rows, n, bits)
        out = (b.astype(np.int64) << np.arange(bits)).sum(axis=-1)
        if signed:
            out -= (out >> (bits - 1) & 1) << bits
    if kind == "bipolar":
        return np.where(out > 0, 1, -1).astype(np.int64)
    return out


def _kind(t: ElemType) -> str | None:
    """How a tensor's elements are stored: int, bipolar, or None (float: not corrupted)."""
    return None if t.kind == "float" else t.kind


# ---------------------------------------------------------------------------------------------
# Reads through a buffer's cells


class Piece(NamedTuple):
    """Bytes [offset, offset + nbytes) of a block, held from byte `address` of a buffer."""

    offset: int
    nbytes: int
    address: int


def pieces_of(transfers: Iterable, start: int = 0) -> list[Piece]:
    """The transfers' bytes in order, as consecutive pieces of one block."""
    out, offset = [], start
    for t in transfers:
        out.append(Piece(offset, t.nbytes, t.address))
        offset += t.nbytes
    return out


def _new_counts() -> dict[str, int]:
    return dict.fromkeys(COUNTS, 0)


class Cells:
    """One buffer's cells in one run: BufferFaults plus batched reads of block pieces."""

    def __init__(self, buffer: Buffer, name: str, seed: int):
        self.buffer, self.name = buffer, name
        self.faults = BufferFaults(buffer, name, seed)
        self.size = buffer.banks * buffer.rows_per_bank * (buffer.bank_width_bits // 8)
        # Persistent faults without ECC are a fixed pair of masks per range: read = s ^ ((~s &
        # m0) | (s & m1)), whatever the data, so a batch is corrupted in one numpy expression.
        self.by_masks = buffer.error_model.mode == "persistent" and buffer.ecc == "none"
        self._masks: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.read_index = 0
        self._ber: dict[float, float] = {}

    def ber(self, voltage: float) -> float:
        """The cells' BER at a voltage (remembered: a run has few voltages)."""
        if voltage not in self._ber:
            self._ber[voltage] = self.faults.ber(voltage)
        return self._ber[voltage]

    def _spans(self, pieces: list[Piece]) -> list[Piece]:
        """Pieces cut where they cross the end of the buffer (they wrap to address 0)."""
        out = []
        for off, nbytes, address in pieces:
            address %= self.size
            while nbytes:
                take = min(nbytes, self.size - address)
                out.append(Piece(off, take, address))
                off, nbytes, address = off + take, nbytes - take, 0
        return out

    def _whole(self, voltage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m0, m1, faulty bytes before each address) of the whole buffer at a voltage.

        One read of the whole buffer per voltage: a range's masks are its slice (persistent
        faults are per cell, whatever the range read).
        """
        if voltage not in self._masks:
            m0 = self.faults.read(np.zeros(self.size, np.uint8), 0, voltage).data
            m1 = ~self.faults.read(np.full(self.size, 255, np.uint8), 0, voltage).data
            before = np.zeros(self.size + 1, np.int64)
            np.cumsum((m0 | m1) != 0, out=before[1:])
            self._masks[voltage] = (m0, m1, before)
        return self._masks[voltage]

    def masks(self, address: int, nbytes: int, voltage: float):
        """(m0, m1) of a persistent range: bits that read 1 over a 0, 0 over a 1 (None: none)."""
        m0, m1, before = self._whole(voltage)
        if before[address + nbytes] == before[address]:
            return None
        return m0[address:address + nbytes], m1[address:address + nbytes]

    def clean(self, pieces: list[Piece], voltage: float) -> bool:
        """True when no read through the pieces can be corrupted (persistent, no ECC: no faulty
        byte in their ranges; otherwise only at BER 0)."""
        if self.ber(voltage) == 0.0:
            return True
        if not self.by_masks:
            return False
        before = self._whole(voltage)[2]
        return all(before[a + n] == before[a] for _, n, a in self._spans(pieces))

    def count_clean(self, pieces: list[Piece], rows: int, counts: dict[str, int]) -> None:
        """Count the reads of `rows` rows through the pieces that clean() says are error free."""
        spans = self._spans(pieces)
        counts["reads"] += rows * len(spans)
        counts["bytes"] += rows * sum(s.nbytes for s in spans)

    def read(self, stored: np.ndarray, pieces: list[Piece], voltage: float,
             counts: dict[str, int]) -> np.ndarray:
        """Rows of `stored` (R x block bytes, one row per read) read through the pieces' cells.

        Returns `stored` itself when nothing was corrupted; counts are added to `counts`.
        """
        spans = self._spans(pieces)
        rows = stored.shape[0]
        counts["reads"] += rows * len(spans)
        counts["bytes"] += rows * sum(s.nbytes for s in spans)
        if self.ber(voltage) == 0.0:
            return stored
        out = stored
        for off, nbytes, address in spans:
            s = stored[:, off:off + nbytes]
            if self.by_masks:
                m = self.masks(address, nbytes, voltage)
                if m is None:
                    continue
                r = s ^ ((~s & m[0]) | (s & m[1]))
                flipped = int(np.bitwise_count(r ^ s).sum())
                counts["bit_errors"] += flipped
                counts["bits_flipped"] += flipped
            else:
                r = np.empty_like(s)
                for row in range(rows):
                    rd = self.faults.read(s[row], address, voltage, self.read_index)
                    self.read_index += 1
                    r[row] = rd.data
                    for k in ("bit_errors", "bits_flipped", "corrected", "detected",
                              "undetected"):
                        counts[k] += getattr(rd, k)
            if np.array_equal(r, s):
                continue
            if out is stored:
                out = stored.copy()
            out[:, off:off + nbytes] = r
        return out


# ---------------------------------------------------------------------------------------------
# The mapping's blocks


class FoldIO(NamedTuple):
    """What one fold moves: its load pieces per role, its store pieces per kind."""

    loads: dict[str, list[Piece]]  # ifmap, weights, psum (reloaded partial sums)
    stores: dict[str, list[Piece]]  # data (final outputs), psum (spilled partial sums)


def fold_io(layer: LayerMapping) -> list[FoldIO]:
    """Per fold of a compute layer, its transfers' pieces (chunks concatenated in step order)."""
    loads: list[dict[str, list[Piece]]] = [{} for _ in layer.folds]
    stores: list[dict[str, list[Piece]]] = [{} for _ in layer.folds]
    ends: dict[tuple, int] = {}  # (fold, load or store, role or kind) -> bytes so far
    for step in layer.steps:
        fold = step.fold
        for t in step.loads:
            role = "psum" if t.kind == "psum" else t.role
            key = (fold, 0, role)
            off = ends.get(key, 0)
            ends[key] = off + t.nbytes
            if off:
                loads[fold][role].append(Piece(off, t.nbytes, t.address))
            else:
                loads[fold].setdefault(role, []).append(Piece(0, t.nbytes, t.address))
        for t in step.stores:
            key = (fold, 1, t.kind)
            off = ends.get(key, 0)
            ends[key] = off + t.nbytes
            if off:
                stores[fold][t.kind].append(Piece(off, t.nbytes, t.address))
            else:
                stores[fold].setdefault(t.kind, []).append(Piece(0, t.nbytes, t.address))
    return [FoldIO(ld, st) for ld, st in zip(loads, stores, strict=True)]


class Region(NamedTuple):
    """The stored ifmap region of a fold (see the module docstring): images, rows, cols, chans."""

    img0: int
    images: int
    y0: int
    rows: int
    x0: int
    cols: int
    channels: np.ndarray  # channel indices within the group, ascending

    @property
    def size(self) -> int:
        return self.images * self.rows * self.cols * len(self.channels)


def ifmap_region(gemm: Gemm, pads: tuple[int, int], p: tuple[int, int],
                 k: tuple[int, int]) -> Region:
    """The region of a group's ifmap a fold with pixels p and reduction indices k stores.

    pads: (top, left). Its size is gemm.ifmap_footprint(*p, *k).
    """
    (p0, p1), (k0, k1) = p, k
    cg = gemm.in_c
    channels = np.arange(cg) if k1 - k0 >= cg else np.unique(np.arange(k0, k1) % cg)
    per_image = gemm.out_h * gemm.out_w
    first, last = p0 // per_image, (p1 - 1) // per_image
    if first != last:
        return Region(first, min(last - first + 1, gemm.batch), 0, gemm.in_h, 0, gemm.in_w,
                      channels)
    q0, q1 = p0 % per_image, (p1 - 1) % per_image
    oy0, oy1 = q0 // gemm.out_w, q1 // gemm.out_w
    rows = min(gemm.in_h, (oy1 - oy0) * gemm.sh + (gemm.kh - 1) * gemm.dh + 1)
    y0 = min(max(oy0 * gemm.sh - pads[0], 0), gemm.in_h - rows)
    if oy0 == oy1:
        ox0, ox1 = q0 % gemm.out_w, q1 % gemm.out_w
        cols = min(gemm.in_w, (ox1 - ox0) * gemm.sw + (gemm.kw - 1) * gemm.dw + 1)
        x0 = min(max(ox0 * gemm.sw - pads[1], 0), gemm.in_w - cols)
    else:
        cols, x0 = gemm.in_w, 0
    return Region(first, 1, y0, rows, x0, cols, channels)


class _SparseDW(NamedTuple):
    """A weights copy's errors as entries: dW[b, k - k0, n - n0] = d for each (b, k, n, d) of
    a (depth, Kf, Nf) block at (k0, n0) (depth 1: every inference reads the same copy)."""

    depth: int
    k0: int
    kf: int
    n0: int
    nf: int
    b: np.ndarray
    k: np.ndarray
    n: np.ndarray
    d: np.ndarray

    @staticmethod
    def of(dw: np.ndarray, k0: int, n0: int) -> _SparseDW:
        """The entries of a dense (depth, Kf, Nf) dW."""
        b, k, n = np.nonzero(dw)
        return _SparseDW(dw.shape[0], k0, dw.shape[1], n0, dw.shape[2], b, k + k0, n + n0,
                         dw[b, k, n])

    def dense(self) -> np.ndarray:
        out = np.zeros((self.depth, self.kf, self.nf), np.int64)
        out[self.b, self.k - self.k0, self.n - self.n0] = self.d
        return out


# ---------------------------------------------------------------------------------------------
# A compute layer's operands as GEMM views (per inference i: I inferences of the graph's batch)


class _Layer:
    """A compute node's operands, seen per group as GEMM blocks over I inferences."""

    def __init__(self, graph: Graph, node: Node, lm: LayerMapping, x: np.ndarray,
                 w: np.ndarray):
        g = self.gemm = lm.gemm
        self.node, self.lm = node, lm
        a = node.attrs
        self.conv = node.op == "Conv"
        if self.conv:
            per = g.batch * g.groups * g.in_c * g.in_h * g.in_w
            self.pads = (int(a["pads"][0]), int(a["pads"][1]))
            self.x_zp = int(a.get("x_zero_point", 0))
            w_zp = np.asarray(a.get("w_zero_point", 0), np.int64).reshape(-1)
        else:
            per = g.p * g.k
            self.pads = (0, 0)
            self.x_zp = int(a.get("a_zero_point", 0))
            w_zp = np.asarray(a.get("b_zero_point", 0), np.int64).reshape(-1)
        if x.size % per:
            raise InputError(f"layer {lm.name}: input of {x.size} elements is not a whole "
                             f"number of the mapping's inferences ({per} elements each)")
        self.inferences = x.size // per
        n_i = self.inferences
        if self.conv:
            self.xv = x.reshape(n_i, g.batch, g.groups * g.in_c, g.in_h, g.in_w)
            wt = w.reshape(g.groups, g.n, g.in_c, g.kh, g.kw).transpose(0, 3, 4, 2, 1)
            self.w = wt.reshape(g.groups, g.k, g.n)  # [g, k, n]
        else:
            self.xv = x.reshape(n_i, g.p, g.k).transpose(0, 2, 1)[:, None, :, :, None]
            self.w = w.reshape(1, g.k, g.n)
        self.w_zp = np.broadcast_to(w_zp, (g.groups * g.n,)).reshape(g.groups, g.n)
        x_t = graph.tensors[node.inputs[0]].type
        w_t = graph.tensors[node.inputs[1]].type
        self.x_type, self.w_type = x_t, w_t
        self.corr: np.ndarray | None = None  # (I, G, P, N) int64

    def correction(self) -> np.ndarray:
        if self.corr is None:
            g = self.gemm
            self.corr = np.zeros((self.inferences, g.groups, g.p, g.n), np.int64)
        return self.corr

    def coords(self, p: np.ndarray, k: np.ndarray):
        """(image, y, x, channel-in-group, valid) of im2col entries (p x k), broadcast."""
        g = self.gemm
        per = g.out_h * g.out_w
        img, q = np.divmod(p, per)
        oy, ox = np.divmod(q, g.out_w)
        ky, rest = np.divmod(k, g.kw * g.in_c)
        kx, c = np.divmod(rest, g.in_c)
        y = oy[:, None] * g.sh + ky[None, :] * g.dh - self.pads[0]
        x = ox[:, None] * g.sw + kx[None, :] * g.dw - self.pads[1]
        valid = (y >= 0) & (y < g.in_h) & (x >= 0) & (x < g.in_w)
        return img[:, None], y, x, c[None, :], valid

    def im2col(self, group: int, p: np.ndarray, k: np.ndarray) -> np.ndarray:
        """(I, len(p), len(k)) int64 of x - x_zp at those entries (0 in the padding)."""
        img, y, x, c, valid = self.coords(p, k)
        vals = self.xv[:, img, group * self.gemm.in_c + c, np.where(valid, y, 0),
                       np.where(valid, x, 0)].astype(np.int64)
        return np.where(valid, vals - self.x_zp, 0)

    def region_values(self, group: int, r: Region) -> np.ndarray:
        """(I, region size) values of a stored ifmap region, in its layout."""
        block = self.xv[:, r.img0:r.img0 + r.images][:, :, group * self.gemm.in_c + r.channels]
        block = block[:, :, :, r.y0:r.y0 + r.rows, r.x0:r.x0 + r.cols]
        return block.transpose(0, 1, 3, 4, 2).reshape(self.inferences, -1).astype(np.int64)

    def fan_out(self, r: Region, elements: np.ndarray, p: tuple[int, int],
                k: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(element index, p, k) of every window position in the fold reading those elements."""
        g = self.gemm
        nch = len(r.channels)
        rest, ci = np.divmod(elements, nch)
        rest, xx = np.divmod(rest, r.cols)
        im, yy = np.divmod(rest, r.rows)
        img, y, x, c = im + r.img0, yy + r.y0, xx + r.x0, r.channels[ci]
        ky, kx = np.divmod(np.arange(g.kh * g.kw), g.kw)
        ny = y[:, None] + self.pads[0] - ky[None, :] * g.dh
        nx = x[:, None] + self.pads[1] - kx[None, :] * g.dw
        oy, ry = np.divmod(ny, g.sh)
        ox, rx = np.divmod(nx, g.sw)
        kk = (ky[None, :] * g.kw + kx[None, :]) * g.in_c + c[:, None]
        pp = (img[:, None] * g.out_h + oy) * g.out_w + ox
        ok = ((ry == 0) & (rx == 0) & (oy >= 0) & (oy < g.out_h) & (ox >= 0) & (ox < g.out_w)
              & (kk >= k[0]) & (kk < k[1]) & (pp >= p[0]) & (pp < p[1]))
        e = np.broadcast_to(np.arange(len(elements))[:, None], ok.shape)
        return e[ok], pp[ok], kk[ok]

    def saturation_free(self, bias: np.ndarray | None, acc_max: int) -> bool:
        """No sum of this layer can reach a saturating accumulator's bounds, whatever the data."""
        def span(t: ElemType, zp: np.ndarray | int) -> int:
            zp = np.asarray(zp, np.int64)
            return int(np.max(np.maximum(np.abs(t.min - zp), np.abs(t.max - zp))))

        b = 0 if bias is None else int(np.max(np.abs(bias.astype(np.int64)), initial=0))
        bound = self.gemm.k * span(self.x_type, self.x_zp) * span(self.w_type, self.w_zp) + b
        return bound <= acc_max


# ---------------------------------------------------------------------------------------------
# The faulty run


@dataclass
class FaultyRun:
    """A run of the graph through faulty buffers.

    outputs: the graph's outputs; intermediates: every tensor by name (as stored: a layer's
    output is the corrupted copy the next layer reads); flips[layer][buffer]: counts over the
    run's reads (bit_errors before ECC, bits_flipped after, SECDED corrected / detected /
    undetected words, reads and bytes read); inexact: layers whose faulty sum is not exact (see
    the module docstring); record: with record=True, every block read (see run_faulty).
    """

    seed: int
    outputs: dict[str, np.ndarray]
    intermediates: dict[str, np.ndarray]
    flips: dict[str, dict[str, dict[str, int]]]
    inexact: list[str] = field(default_factory=list)
    record: list[dict[str, Any]] = field(default_factory=list)

    def flips_by_buffer(self, what: str = "bits_flipped") -> dict[str, int]:
        out: dict[str, int] = {}
        for per_buffer in self.flips.values():
            for name, c in per_buffer.items():
                out[name] = out.get(name, 0) + c[what]
        return out

    def flips_by_layer(self, what: str = "bits_flipped") -> dict[str, int]:
        return {layer: sum(c[what] for c in per.values()) for layer, per in self.flips.items()}


class _Run:
    def __init__(self, mapping: MappingPlan, seed: int, record: bool):
        self.mapping, self.hw, self.graph = mapping, mapping.hardware, mapping.graph
        self.config = ExecConfig(machine_accumulator(self.hw))
        self.cells = {name: Cells(buf, name, seed) for name, buf in self.hw.buffers.items()}
        self.flips: dict[str, dict[str, dict[str, int]]] = {}
        self.inexact: list[str] = []
        self.recording = record
        self.record: list[dict[str, Any]] = []

    def counts(self, layer: str, buffer: str) -> dict[str, int]:
        return self.flips.setdefault(layer, {}).setdefault(buffer, _new_counts())

    def read(self, lm: LayerMapping, buffer: str, stored: np.ndarray, pieces: list[Piece],
             what: dict[str, Any]) -> np.ndarray:
        buf = self.hw.buffers[buffer]
        voltage = buf.voltage_for(lm.name, lm.compute_index)
        out = self.cells[buffer].read(stored, pieces, voltage, self.counts(lm.name, buffer))
        if self.recording:
            self.record.append(dict(what, layer=lm.name, buffer=buffer, voltage=voltage,
                                    pieces=list(pieces), stored=stored, read=out))
        return out

    def error_free(self, lm: LayerMapping, buffer: str, pieces: list[Piece], rows: int) -> bool:
        """True (and the reads counted) when no read through the pieces can be corrupted (BER
        0 for this layer, or persistent faults without ECC and no faulty cell in their ranges):
        nothing to encode or read."""
        voltage = self.hw.buffers[buffer].voltage_for(lm.name, lm.compute_index)
        cells = self.cells[buffer]
        if not cells.clean(pieces, voltage):
            return False
        cells.count_clean(pieces, rows, self.counts(lm.name, buffer))
        return True

    def run_node(self, node: Node, env: dict[str, np.ndarray]) -> None:
        op = REGISTRY[node.op](node, self.graph, self.config)
        env.update(zip(node.outputs, op.run(*(env[i] for i in node.inputs)), strict=True))

    # -- vector-unit layers ------------------------------------------------------------------

    def tensors_through(self, lm: LayerMapping, names: list[str], pieces: list[Piece],
                        buffer: str, env: dict[str, np.ndarray], what: str) -> dict:
        """Integer tensors stored one after another from the pieces' addresses, read back."""
        out, offset, total = {}, 0, sum(p.nbytes for p in pieces)
        for name in names:
            t = self.graph.tensors[name]
            nbytes = -(-t.size * t.type.bits // 8)
            kind = _kind(t.type)
            value = env[name]
            if kind is not None and name not in out and value.size % t.size == 0:
                rows = value.size // t.size
                stored = encode(value.reshape(rows, -1).astype(np.int64), t.type.bits, kind)
                sub = _sub_pieces(pieces, offset, nbytes)
                if sub and offset + nbytes <= total:
                    got = self.read(lm, buffer, stored, sub, {"role": what, "tensor": name})
                    if got is not stored:
                        vals = decode(got, t.size, t.type.bits, kind, t.type.signed)
                        out[name] = vals.astype(value.dtype).reshape(value.shape)
            offset += nbytes
        return out

    def vector_layer(self, lm: LayerMapping, nodes: list[Node], env: dict) -> None:
        produced = {o for n in nodes for o in n.outputs}
        inputs = [t for n in nodes for t in n.inputs
                  if t not in produced and not self.graph.tensors[t].is_const]
        local = dict(env)
        loads = [t for step in lm.steps for t in step.loads]
        if loads:
            local.update(self.tensors_through(lm, inputs, pieces_of(loads), loads[0].buffer, env,
                                              "ifmap"))
        for node in nodes:
            self.run_node(node, local)
        for name in produced:
            env[name] = local[name]
        stores = [t for step in lm.steps for t in step.stores]
        if stores:
            env.update(self.tensors_through(lm, list(nodes[-1].outputs), pieces_of(stores),
                                            stores[0].buffer, env, "ofmap"))

    # -- compute layers ----------------------------------------------------------------------

    def compute_layer(self, lm: LayerMapping, nodes: list[Node], env: dict) -> None:
        node = next(n for n in nodes if n.op in COMPUTE_OPS)
        self.run_node(node, env)
        acc_name = node.outputs[0]
        layer = _Layer(self.graph, node, lm, env[node.inputs[0]], env[node.inputs[1]])
        ios = fold_io(lm)
        names = {role: self.hw.buffer_for(role) for role in ("ifmap", "weights", "ofmap")}
        copies: dict[str, dict[tuple, list[Piece]]] = {"ifmap": {}, "weights": {}}
        cache: dict[tuple, Any] = {}
        batches: dict[int, tuple] = {}
        persistent = {r: self.hw.buffers[n].error_model.mode == "persistent"
                      for r, n in names.items()}
        x_cells = self.cells[names["ifmap"]]
        x_voltage = self.hw.buffers[names["ifmap"]].voltage_for(lm.name, lm.compute_index)
        x_zero = not self.recording and x_cells.ber(x_voltage) == 0.0
        x_reads = x_bytes = 0
        x_spans: dict[int, tuple[int, int]] = {}  # by pieces list (ios keeps them alive)
        hits = None
        if persistent["weights"] and self._vector_weights(lm, layer, names["weights"]):
            hits, fold_copy = self._weight_copies(lm, layer, ios, names["weights"])
        for i, (fold, io) in enumerate(zip(lm.folds, ios, strict=True)):
            keys = {"weights": (fold.group, fold.k, fold.n), "ifmap": (fold.group, fold.p, fold.k)}
            where = {}
            for role in ("weights", "ifmap"):
                if role in io.loads:
                    copies[role][keys[role]] = io.loads[role]
                where[role] = copies[role].get(keys[role])
                if where[role] is None:
                    raise ValueError(f"layer {lm.name}: fold {fold.index} reads a {role} block "
                                     "no fold loaded")
            if hits is not None:
                w_copy = hits[fold_copy[i]]
            else:
                w_copy = self._weights(lm, layer, fold, where["weights"], names["weights"],
                                       cache if persistent["weights"] else None)
            if x_zero:  # error free: only counted
                if id(where["ifmap"]) not in x_spans:
                    spans = x_cells._spans(where["ifmap"])
                    x_spans[id(where["ifmap"])] = (len(spans), sum(sp.nbytes for sp in spans))
                reads, nbytes = x_spans[id(where["ifmap"])]
                x_reads += reads
                x_bytes += nbytes
                x_copy = None
            else:
                x_copy = self._ifmap(lm, layer, fold, where["ifmap"], names["ifmap"],
                                     cache if persistent["ifmap"] else None)
            self._correct(layer, fold, w_copy, x_copy, batches)
        if x_zero and lm.folds:
            counts = self.counts(lm.name, names["ifmap"])
            counts["reads"] += layer.inferences * x_reads
            counts["bytes"] += layer.inferences * x_bytes
        self._correct_weights(layer, batches)
        acc = env[acc_name]
        if layer.corr is not None and layer.corr.any():
            env[acc_name] = self._apply(layer, acc, node, env)
        # Spilled partial sums: their store and reload errors add to the final sums.
        if any("psum" in io.stores or "psum" in io.loads for io in ios):
            self._psums(lm, layer, node, ios, env, names["ofmap"])
        for n in nodes:
            if n is not node:
                self.run_node(n, env)
        self._stores(lm, layer, nodes, ios, env, names["ofmap"])

    def _vector_weights(self, lm, layer: _Layer, buffer: str) -> bool:
        """Whether _weight_copies reads this layer's weights copies (all at once): persistent
        faults without ECC (fixed masks), one byte per element, no record kept."""
        return (self.cells[buffer].by_masks and not self.recording
                and lm.bits["weights"] == 8 and _kind(layer.w_type) == "int")

    def _weight_copies(self, lm, layer: _Layer, ios: list[FoldIO], buffer: str):
        """_weights for every fold at once (see _vector_weights): (the distinct copies' (dW,
        W' - w_zp), per fold the index of the copy it reads, -1 for none).

        A copy is a block at an address pattern; its bytes are gathered from every copy into
        one array and read through the buffer's whole-buffer masks in one expression. Counts
        are those of per-fold reads: every fold reads its copy once per inference.
        """
        ids: dict[int, int] = {}
        blocks: list[tuple] = []
        fold_copy: list[int] = []
        loaded: dict[tuple, list[Piece]] = {}
        for fold, io in zip(lm.folds, ios, strict=True):
            key = (fold.group, fold.k, fold.n)
            if "weights" in io.loads:
                loaded[key] = io.loads["weights"]
            pieces = loaded.get(key)
            if pieces is None:  # compute_layer raises at this fold
                fold_copy.append(-1)
                continue
            c = ids.get(id(pieces))  # one copy per load (ios keeps the lists alive)
            if c is None:
                c = ids[id(pieces)] = len(blocks)
                blocks.append((key, pieces))
            fold_copy.append(c)
        cells = self.cells[buffer]
        voltage = self.hw.buffers[buffer].voltage_for(lm.name, lm.compute_index)
        n_i = layer.inferences
        n_c = len(blocks)
        uses = np.bincount([c for c in fold_copy if c >= 0], minlength=n_c).astype(np.int64)
        hits: list[tuple] = [(None, None)] * n_c
        span_copy, span_off, span_n, span_addr = [], [], [], []
        geo_l = []
        full = cells.size
        for c, ((g, (k0, k1), (n0, n1)), pieces) in enumerate(blocks):
            geo_l.append((g, k0, k1 - k0, n0, n1 - n0))
            for piece in pieces:
                if piece.address >= full or piece.address + piece.nbytes > full:
                    spans = cells._spans([piece])
                else:
                    spans = (piece,)
                for off, nb, address in spans:
                    span_copy.append(c)
                    span_off.append(off)
                    span_n.append(nb)
                    span_addr.append(address)
        blocks_geo = geo_l
        geo = np.array(geo_l, np.int64).reshape(n_c, 5)  # g, k0, kf, n0, nf
        size = geo[:, 2] * geo[:, 4]
        span_copy_a = np.asarray(span_copy, np.int64)
        span_n_a = np.asarray(span_n, np.int64)
        covered = np.bincount(span_copy_a, span_n_a, n_c).astype(np.int64)
        if not np.array_equal(covered, size):  # pieces not exactly their block: fold by fold
            return None, fold_copy
        counts = self.counts(lm.name, buffer)
        counts["reads"] += n_i * int(uses @ np.bincount(span_copy_a, minlength=n_c))
        counts["bytes"] += n_i * int(uses @ np.bincount(span_copy_a, span_n_a, n_c)
                                     .astype(np.int64))
        if n_c == 0 or cells.ber(voltage) == 0.0:
            return hits, fold_copy
        m0_all, m1_all, before = cells._whole(voltage)
        bad_at = np.flatnonzero(before[1:] != before[:-1])  # faulty bytes' addresses
        span_addr_a = np.asarray(span_addr, np.int64)
        lo = np.searchsorted(bad_at, span_addr_a)
        cnt = np.searchsorted(bad_at, span_addr_a + span_n_a) - lo
        total = int(cnt.sum())
        if total == 0:
            return hits, fold_copy
        # one entry per (span, faulty byte in it), grouped by copy (spans are in copy order)
        first = np.cumsum(cnt) - cnt
        sp = np.repeat(np.arange(cnt.size), cnt)
        addr = bad_at[lo[sp] + np.arange(total) - first[sp]]
        e = np.asarray(span_off, np.int64)[sp] + addr - span_addr_a[sp]  # element in block
        copy_of = span_copy_a[sp]
        gc, k0, kf, n0 = geo[copy_of, 0], geo[copy_of, 1], geo[copy_of, 2], geo[copy_of, 3]
        nn, kk = np.divmod(e, kf)
        kk += k0
        nn += n0
        v = layer.w[gc, kk, nn].astype(np.int64)
        st = (v & 255).astype(np.uint8)
        m0, m1 = m0_all[addr], m1_all[addr]
        rd = st ^ ((~st & m0) | (st & m1))
        flips = np.bincount(copy_of, np.bitwise_count(rd ^ st), n_c).astype(np.int64)
        flipped = n_i * int(uses @ flips)
        counts["bit_errors"] += flipped
        counts["bits_flipped"] += flipped
        new = (rd.view(np.int8) if layer.w_type.signed else rd).astype(np.int64)
        diff = new - v
        keep = np.flatnonzero(diff)
        if keep.size == 0:
            return hits, fold_copy
        copy_of, kk, nn, diff = copy_of[keep], kk[keep], nn[keep], diff[keep]
        bounds = np.searchsorted(copy_of, np.arange(n_c + 1)).tolist()
        zeros = np.zeros(keep.size, np.int64)
        for c in np.unique(copy_of).tolist():
            a, b = bounds[c], bounds[c + 1]
            _, k0c, kfc, n0c, nfc = blocks_geo[c]
            hits[c] = (_SparseDW(1, k0c, kfc, n0c, nfc, zeros[a:b], kk[a:b], nn[a:b],
                                 diff[a:b]), None)
        return hits, fold_copy

    def _weights(self, lm, layer: _Layer, fold, pieces, buffer, cache):
        """(dW (Bw, Kf, Nf) int64 or None, W' - w_zp (Bw, Kf, Nf) int64) of a fold's copy."""
        g, (k0, k1), (n0, n1) = fold.group, fold.k, fold.n
        key = ("weights", g, fold.k, fold.n, tuple(pieces))
        if cache is not None and key in cache:
            counts, hit = cache[key]
            _add_counts(self.counts(lm.name, buffer), counts)
            return hit
        if not self.recording and self.error_free(lm, buffer, pieces, layer.inferences):
            return (None, None)
        block = layer.w[g, k0:k1, n0:n1].astype(np.int64)  # (Kf, Nf)
        kind = _kind(layer.w_type)
        stored = encode(block.T.reshape(1, -1), lm.bits["weights"], kind)
        before = dict(self.counts(lm.name, buffer))
        rows = 1 if cache is not None else layer.inferences
        stored_rows = np.broadcast_to(stored, (rows, stored.shape[1]))
        got = self.read(lm, buffer, stored_rows, pieces,
                        {"role": "weights", "fold": fold.index})
        if got is stored_rows:
            hit = (None, None)
        else:
            vals = decode(got, block.size, lm.bits["weights"], kind, layer.w_type.signed)
            w_new = vals.reshape(rows, n1 - n0, k1 - k0).transpose(0, 2, 1)
            dw = w_new - block[None]
            hit = (dw, w_new - layer.w_zp[g, n0:n1][None, None, :]) if dw.any() else (None, None)
        counts = self.counts(lm.name, buffer)
        if rows == 1 and layer.inferences > 1:  # every inference reads the same copy
            _add_counts(counts, {k: v * (layer.inferences - 1)
                                 for k, v in _diff_counts(counts, before).items()})
        if cache is not None:
            cache[key] = (_diff_counts(counts, before), hit)
        return hit

    def _ifmap(self, lm, layer: _Layer, fold, pieces, buffer, cache):
        """(element indices, dX (I, E)) of a fold's ifmap copy's wrong elements, or None."""
        key = ("ifmap", fold.group, fold.p, fold.k, tuple(pieces))
        if cache is not None and key in cache:
            counts, hit = cache[key]
            _add_counts(self.counts(lm.name, buffer), counts)
            return hit
        if not self.recording and self.error_free(lm, buffer, pieces, layer.inferences):
            return None
        before = dict(self.counts(lm.name, buffer))
        region = ifmap_region(layer.gemm, layer.pads, fold.p, fold.k)
        values = layer.region_values(fold.group, region)
        kind = _kind(layer.x_type)
        bits = lm.bits["ifmap"]
        stored = encode(values, bits, kind)
        got = self.read(lm, buffer, stored, pieces, {"role": "ifmap", "fold": fold.index})
        hit = None
        if got is not stored:
            vals = decode(got, region.size, bits, kind, layer.x_type.signed)
            diff = vals - values
            wrong = np.flatnonzero(diff.any(axis=0))
            if wrong.size:
                hit = (region, wrong, diff[:, wrong])
        if cache is not None:
            cache[key] = (_diff_counts(self.counts(lm.name, buffer), before), hit)
        return hit

    def _correct(self, layer: _Layer, fold, w_copy, x_copy, batches: dict[tuple, list]) -> None:
        """Add the fold's exact corrections: A dW over its ranges, dA W' per fan-out.

        A dW is deferred to _correct_weights: the folds of one pixel range are gathered
        (batches, by group and p-range, their dW as entries) and corrected together.
        """
        g, k0, (n0, n1) = fold.group, fold.k[0], fold.n
        dw = w_copy[0]
        if dw is not None:
            sparse = dw if isinstance(dw, _SparseDW) else _SparseDW.of(dw, k0, n0)
            batches.setdefault((g, fold.p), []).append(sparse)
        if x_copy is not None:
            region, wrong, dx = x_copy
            e, pp, kk = layer.fan_out(region, wrong, fold.p, fold.k)
            if e.size:
                # W' - w_zp of the copy read: the clean rows plus its errors
                w_rows = (layer.w[g, kk, n0:n1].astype(np.int64)
                          - layer.w_zp[g, n0:n1][None, :])[None]
                if dw is not None:
                    dense = dw.dense() if isinstance(dw, _SparseDW) else dw
                    w_rows = w_rows + dense[:, kk - k0, :]
                contrib = dx[:, e, None] * w_rows  # (I, M, Nf)
                target = layer.correction()[:, g, :, n0:n1].transpose(1, 0, 2)
                np.add.at(target, pp, contrib.transpose(1, 0, 2))

    def _correct_weights(self, layer: _Layer, batches: dict[tuple, list]) -> None:
        """A dW of the folds of each pixel range (batches: (group, p-range) -> their weights
        copies' errors as _SparseDW): the errors summed into one matrix over the rows (k) that
        have any and the n-range the copies cover, one im2col gather and one product (the sum
        over folds is linear). Exact: the product is in float64 when no sum can reach 2^53,
        else in int64."""
        corr = layer.correction() if batches else None
        for (g, (p0, p1)), copies in batches.items():
            depth = max(c.depth for c in copies)
            nlo = min(c.n0 for c in copies)
            nhi = max(c.n0 + c.nf for c in copies)
            bs, ks, ns, ds = [], [], [], []
            for c in copies:
                reps = range(depth) if c.depth < depth else (None,)
                for r in reps:  # a copy every inference reads alike, at every depth
                    bs.append(c.b if r is None else np.full(c.b.size, r, np.int64))
                    ks.append(c.k)
                    ns.append(c.n)
                    ds.append(c.d)
            k = np.concatenate(ks)
            if k.size == 0:
                continue
            rows, ri = np.unique(k, return_inverse=True)
            d = np.zeros((depth, rows.size, nhi - nlo), np.int64)
            np.add.at(d, (np.concatenate(bs), ri, np.concatenate(ns) - nlo), np.concatenate(ds))
            self._correct_block(layer, corr, g, p0, p1, rows, nlo, nhi, d)
        batches.clear()

    @staticmethod
    def _correct_block(layer: _Layer, corr: np.ndarray, g: int, p0: int, p1: int,
                       rows: np.ndarray, n0: int, n1: int, d: np.ndarray) -> None:
        """corr[:, g, p0:p1, n0:n1] += A[p0:p1, rows] d (d: (depth, len(rows), n1 - n0))."""
        a = layer.im2col(g, np.arange(p0, p1), rows)
        bound = (int(np.abs(a).max(initial=0)) * int(np.abs(d).max(initial=0)) * rows.size)
        if bound < 1 << 53:
            term = np.rint(np.matmul(a.astype(np.float64), d.astype(np.float64)))
            corr[:, g, p0:p1, n0:n1] += term.astype(np.int64)
        else:
            corr[:, g, p0:p1, n0:n1] += np.matmul(a, d)

    def _apply(self, layer: _Layer, acc: np.ndarray, node: Node, env: dict) -> np.ndarray:
        """The layer's accumulators plus its corrections, in the accumulator's arithmetic."""
        g = layer.gemm
        corr = layer.corr
        if layer.conv:
            c = corr.reshape(layer.inferences, g.groups, g.batch, g.out_h, g.out_w, g.n)
            c = c.transpose(0, 2, 1, 5, 3, 4).reshape(acc.shape)
        else:
            c = corr.reshape(acc.shape)
        total = acc.astype(np.int64) + c
        accumulator = self.config.accumulator
        bias = env[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        if accumulator.overflow == "wrap" or layer.lm.binary:
            total = _wrap(total, accumulator.bits)
        else:
            if not layer.saturation_free(bias, accumulator.max):
                self.inexact.append(layer.lm.name)
            total = np.clip(total, -accumulator.max - 1, accumulator.max)
        return np.ascontiguousarray(total, dtype=acc.dtype)

    def _psums(self, lm, layer: _Layer, node: Node, ios: list[FoldIO], env: dict,
               buffer: str) -> None:
        """Errors of spilled partial sums (stored out, reloaded later) carried into the sums.

        The partial sums whose bits meet the cells are those of the layer's clean operands (an
        approximation: operand errors change which bits a flip-free cell would hold).
        """
        g = layer.gemm
        bits = lm.bits["psum"]
        bias = env[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        err = np.zeros((layer.inferences, g.groups, g.p, g.n), np.int64)
        running: dict[tuple, np.ndarray] = {}

        def through(s, pieces, fold, what, gi, p0, p1, n0, n1):
            stored = encode(s.reshape(layer.inferences, -1), bits, "int")
            got = self.read(lm, buffer, stored, pieces,
                            {"role": "psum", "fold": fold.index, "transfer": what})
            if got is stored:
                return s
            new = decode(got, s[0].size, bits, "int").reshape(s.shape)
            err[:, gi, p0:p1, n0:n1] += new - s
            return new

        for fold, io in zip(lm.folds, ios, strict=True):
            gi, (p0, p1), (k0, k1), (n0, n1) = fold.group, fold.p, fold.k, fold.n
            key = (gi, fold.p, fold.n)
            if key not in running:
                base = np.zeros((layer.inferences, p1 - p0, n1 - n0), np.int64)
                if bias is not None:
                    base += bias.reshape(-1)[gi * g.n + n0:gi * g.n + n1].astype(np.int64)
                running[key] = base
            s = running[key]
            if io.loads.get("psum"):
                s = through(s, io.loads["psum"], fold, "load", gi, p0, p1, n0, n1)
            part = layer.im2col(gi, np.arange(p0, p1), np.arange(k0, k1)).astype(np.float64)
            w = (layer.w[gi, k0:k1, n0:n1].astype(np.int64)
                 - layer.w_zp[gi, n0:n1][None, :]).astype(np.float64)
            s = _wrap(s + np.rint(part @ w).astype(np.int64), bits)
            if io.stores.get("psum"):
                s = through(s, io.stores["psum"], fold, "store", gi, p0, p1, n0, n1)
            running[key] = s
        if err.any():
            layer.corr = err
            env[node.outputs[0]] = self._apply(layer, env[node.outputs[0]], node, env)
            if self.config.accumulator.overflow == "saturate" and lm.name not in self.inexact:
                self.inexact.append(lm.name)

    def _stores(self, lm, layer: _Layer, nodes: list[Node], ios: list[FoldIO], env: dict,
                buffer: str) -> None:
        """Final outputs read out of the ofmap buffer per fold, as the next layer will see them."""
        name = nodes[-1].outputs[0]
        t = self.graph.tensors[name]
        kind = _kind(t.type)
        y = env[name]
        g = layer.gemm
        n_i = layer.inferences
        if kind is None or y.size != n_i * g.groups * g.p * g.n:
            return
        if layer.conv:
            yv = y.reshape(n_i, g.batch, g.groups, g.n, g.out_h * g.out_w)
            yv = yv.transpose(0, 1, 4, 2, 3).reshape(n_i, g.p, g.groups, g.n)
        else:
            yv = y.reshape(n_i, g.p, 1, g.n)
        bits = lm.bits["ofmap"]
        changed = False
        for fold, io in zip(lm.folds, ios, strict=True):
            pieces = io.stores.get("data")
            if not pieces:
                continue
            if not self.recording and self.error_free(lm, buffer, pieces, n_i):
                continue
            gi, (p0, p1), (n0, n1) = fold.group, fold.p, fold.n
            block = yv[:, p0:p1, gi, n0:n1].astype(np.int64)
            stored = encode(block.reshape(n_i, -1), bits, kind)
            got = self.read(lm, buffer, stored, pieces, {"role": "ofmap", "fold": fold.index})
            if got is not stored:
                vals = decode(got, block[0].size, bits, kind, t.type.signed)
                if not changed:
                    yv, changed = yv.copy(), True
                yv[:, p0:p1, gi, n0:n1] = vals.reshape(block.shape)
        if changed:
            if layer.conv:
                back = yv.reshape(n_i, g.batch, g.out_h * g.out_w, g.groups, g.n)
                back = back.transpose(0, 1, 3, 4, 2)
            else:
                back = yv
            env[name] = np.ascontiguousarray(back.reshape(y.shape), dtype=y.dtype)


def _sub_pieces(pieces: list[Piece], offset: int, nbytes: int) -> list[Piece]:
    """The parts of a block's pieces that hold its bytes [offset, offset + nbytes), rebased."""
    out = []
    for off, n, address in pieces:
        lo, hi = max(off, offset), min(off + n, offset + nbytes)
        if lo < hi:
            out.append(Piece(lo - offset, hi - lo, address + lo - off))
    return out


def _wrap(v: np.ndarray, bits: int) -> np.ndarray:
    half = 1 << (bits - 1)
    return ((v + half) & ((1 << bits) - 1)) - half


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] += v


def _diff_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def run_faulty(mapping: MappingPlan, inputs: Mapping[str, np.ndarray], seed: int,
               record: bool = False) -> FaultyRun:
    """Run the mapped graph on `inputs` with every buffer's cells at its voltages (one trial).

    The inputs may hold several inferences of the graph's batch; each runs through the same
    mapping. record=True keeps every block read (layer, role, fold, buffer, voltage, pieces,
    stored and read bytes) in FaultyRun.record, for tests and inspection.
    """
    run = _Run(mapping, seed, record)
    graph = mapping.graph
    env: dict[str, np.ndarray] = {n: t.data for n, t in graph.tensors.items() if t.is_const}
    env.update(check_inputs(graph, inputs))
    layer_of = {name: lm for lm in mapping.layers for name in lm.nodes}
    nodes_of: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if node.name in layer_of:
            nodes_of.setdefault(layer_of[node.name].name, []).append(node)
    done: set[str] = set()
    for node in graph.nodes:
        lm = layer_of.get(node.name)
        if lm is None:
            run.run_node(node, env)
            continue
        if lm.name in done:
            continue
        done.add(lm.name)
        if lm.kind == "compute":
            run.compute_layer(lm, nodes_of[lm.name], env)
        else:
            run.vector_layer(lm, nodes_of[lm.name], env)
    outputs = {name: env[name] for name in graph.outputs}
    return FaultyRun(seed, outputs, env, run.flips, run.inexact, run.record)


def golden(mapping: MappingPlan, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fault-free run of the same inputs, every tensor by name (the reference)."""
    return execute(mapping.graph, inputs, machine_accumulator(mapping.hardware),
                   keep_intermediates=True)


# ---------------------------------------------------------------------------------------------
# Corruption against the golden run


def _tensors(run: FaultyRun | Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    return run.intermediates if isinstance(run, FaultyRun) else run


def _real(graph: Graph, name: str, value: np.ndarray) -> np.ndarray:
    """A tensor in real units: dequantized when it has a quantization, else as it is."""
    t = graph.tensors[name]
    v = value.astype(np.float64)
    q = t.quant
    if q is None or t.type.kind == "float":
        return v
    scale = np.asarray(q.scale, np.float64)
    zp = np.asarray(q.zero_point, np.float64)
    if q.axis is not None and scale.size > 1:
        shape = [1] * v.ndim
        shape[q.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return scale * (v - zp)


def _snr_db(ref: np.ndarray, err: np.ndarray) -> float:
    noise = float(np.sum(err * err))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(ref * ref))
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _compare(graph: Graph, name: str, g: np.ndarray, f: np.ndarray) -> dict[str, float]:
    rg, rf = _real(graph, name, g), _real(graph, name, f)
    err = np.abs(rf - rg)
    err = np.where(np.isnan(err), np.inf, err)
    return {
        "fraction_changed": float(np.mean(g != f)) if g.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "max_abs_error": float(err.max(initial=0.0)),
        "snr_db": _snr_db(rg, rf - rg),
    }


def corruption(golden: FaultyRun | Mapping[str, np.ndarray], faulty: FaultyRun, graph: Graph,
               labels: np.ndarray | None = None, output: str | None = None) -> dict[str, Any]:
    """Corruption of a faulty run against the golden run of the same inputs.

    golden: golden()'s tensors (or a FaultyRun at BER 0). Figures on `output` (default: the
    graph's first output), in real units (dequantized with its quantization if it has one):
    fraction of elements changed, mean and max absolute error, SNR in dB (inf: no error), top-1
    agreement (argmax over each sample's values), accuracy and golden_accuracy when labels are
    given; bit flips by buffer and layer; per compute or vector layer, its output's fraction
    changed and SNR against golden, and its bits flipped (where corruption enters, how it grows).
    """
    gt, ft = _tensors(golden), _tensors(faulty)
    name = output or graph.outputs[0]
    g, f = gt[name], ft[name]
    out: dict[str, Any] = {"output": name, **_compare(graph, name, g, f)}
    batch = g.shape[0] if g.ndim > 1 else 1
    top_g = np.argmax(g.reshape(batch, -1), axis=-1)
    top_f = np.argmax(np.nan_to_num(f.reshape(batch, -1).astype(np.float64), nan=-np.inf),
                      axis=-1)
    out["top1_agreement"] = float(np.mean(top_g == top_f))
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        out["accuracy"] = float(np.mean(top_f == labels))
        out["golden_accuracy"] = float(np.mean(top_g == labels))
    out["bits_flipped"] = int(sum(faulty.flips_by_buffer().values()))
    out["bit_errors"] = int(sum(faulty.flips_by_buffer("bit_errors").values()))
    out["bits_flipped_by_buffer"] = faulty.flips_by_buffer()
    out["bits_flipped_by_layer"] = faulty.flips_by_layer()
    ecc = {k: sum(c[k] for per in faulty.flips.values() for c in per.values())
           for k in ("corrected", "detected", "undetected")}
    out.update({f"ecc_{k}": v for k, v in ecc.items()})
    layers: dict[str, dict[str, float]] = {}
    for node in graph.nodes:
        layer = node.layer
        last = [n for n in graph.nodes if n.layer == layer][-1]
        if node is not last:
            continue
        t = last.outputs[0]
        if t in gt and t in ft and gt[t].shape == ft[t].shape:
            rec = _compare(graph, t, gt[t], ft[t])
            layers[layer] = {"tensor": t, "fraction_changed": rec["fraction_changed"],
                             "snr_db": rec["snr_db"],
                             "bits_flipped": faulty.flips_by_layer().get(layer, 0)}
    out["layers"] = layers
    return out


# The range each metric can take: a 95% interval is clipped to it (a t-interval over a few
# trials can reach past 100 % accuracy); metrics not listed are unbounded (SNR).
_RANGE = {
    **dict.fromkeys(("fraction_changed", "top1_agreement", "accuracy", "golden_accuracy"),
                    (0.0, 1.0)),
    **dict.fromkeys(("mean_abs_error", "max_abs_error", "bits_flipped", "bit_errors",
                     "ecc_corrected", "ecc_detected", "ecc_undetected"), (0.0, math.inf)),
}


def _summary(values: list[float], metric: str) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    n = v.size
    finite = v[np.isfinite(v)]
    if finite.size < n:  # inf SNR (no error) in some trials: no mean or spread to speak of
        mean = float(v.mean()) if not np.isnan(v).any() else math.nan
        return {"mean": mean, "std": math.nan, "ci95": [math.nan, math.nan], "n": n}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = _t95(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    low, high = _RANGE.get(metric, (-math.inf, math.inf))
    return {"mean": mean, "std": std, "ci95": [max(low, mean - half), min(high, mean + half)],
            "n": n}


def _t95(df: int) -> float:
    """Two-sided 95% Student t quantile (normal beyond 30 degrees of freedom)."""
    table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
             2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
             2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
    return table[df - 1] if 1 <= df <= 30 else 1.96


def trials(mapping: MappingPlan, inputs: Mapping[str, np.ndarray], seeds: Iterable[int],
           labels: np.ndarray | None = None,
           progress: Callable[[int, int], None] | None = None,
           reference: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Monte Carlo over seeds (one faulty run each): mean, std and a 95% interval per metric.

    The interval is mean +- t(0.975, n-1) std / sqrt(n), clipped to the metric's range. Metrics
    with an infinite value in some trial (SNR with no error) report their mean (inf) and no
    spread. progress(done, total) is
    called after each trial. reference: golden()'s tensors, if the caller has them already.
    """
    seeds = list(seeds)
    ref = golden(mapping, inputs) if reference is None else reference
    per_trial = []
    for i, seed in enumerate(seeds):
        run = run_faulty(mapping, inputs, seed)
        per_trial.append(corruption(ref, run, mapping.graph, labels))
        if progress is not None:
            progress(i + 1, len(seeds))
    scalars = [k for k, v in per_trial[0].items()
               if isinstance(v, int | float) and not isinstance(v, bool)] if per_trial else []
    metrics = {k: _summary([t[k] for t in per_trial], k) for k in scalars}
    layers = {}
    if per_trial:
        for layer in per_trial[0]["layers"]:
            layers[layer] = {k: _summary([t["layers"][layer][k] for t in per_trial], k)
                             for k in ("fraction_changed", "snr_db", "bits_flipped")}
    return {"trials": len(seeds), "seeds": seeds, "metrics": metrics, "layers": layers,
            "per_trial": per_trial}


__all__ = ["Cells", "FaultyRun", "FoldIO", "Piece", "Region", "corruption", "decode", "encode",
           "fold_io", "golden", "ifmap_region", "pieces_of", "run_faulty", "trials"]
