"""Faults: which SRAM cells fail at a supply voltage, and what a read through them returns.

The pieces, each a choice worth knowing when reading results:

- BER curves (`ber`). Tables are interpolated linearly in V and logarithmically in BER, so the
  curve passes exactly through every point. A segment that ends at BER 0 (the 14 nm table's last,
  0.958 -> 1.0 Vmin) has no log-linear form: it is interpolated linearly in BER, reaching 0 at
  the point, and BER is 0 from there up. Outside the table, `extrapolation` holds the end value
  (clamp) or raises HardwareError naming the field (error); above a table that ends at BER 0
  there is nothing to extrapolate. The erfc model exceeds 0.5 below mu; it is held at 0.5, the
  bound of every BER here (see the rates below).
- What a faulty cell does (`cell_rates`). A cell misreads a stored 0 as 1 with probability p0 and
  a stored 1 as 0 with probability p1. flip: p0 = 2 f BER, p1 = 2 (1 - f) BER with
  f = fraction_0_to_1, so on data with as many 0s as 1s a bit is wrong with probability BER and a
  fraction f of the errors are 0 -> 1; at the default f = 0.5 a faulty cell flips on every read,
  whatever it holds (Stutz et al., MLSys 2021, model persistent errors the same way, with one
  uniform per cell against the 0->1 and 1->0 rates). stuck_at_0: p0 = 0, p1 = BER;
  stuck_at_1: p0 = BER, p1 = 0.
- Persistent faults (`BufferFaults.fault_map`, `.read`). Each cell has one seeded uniform u (its
  critical voltage, expressed as the BER at which it fails); it misreads a 0 when u < p0 and a 1
  when u < p1. Faults are therefore nested across voltages by construction: a cell faulty at
  0.85 Vmin is faulty at 0.80. The uniforms come from Philox, a counter-based generator: one key
  per (run seed, buffer name, plane), and the counter's second word is the block (2^20 cells),
  so any block is regenerated on its own, identically, without the others. A block is drawn
  densely (32 bits per cell, half a Philox output) when a read first needs it, and only its
  faulty cells and their u are kept; later requests at a lower BER filter that list, a higher
  BER draws the block again. A 1 MiB buffer is eight blocks. u has 32 bits, so a BER is resolved
  to 2^-32 (2.3e-10) per cell, far below any rate that corrupts a network.
- Transient faults (`.read` with mode transient). Each bit of each read draws a fresh u from a
  generator keyed by (run seed, buffer name, read index), with the same rules as above.
- Cells. Data cell (bank, row, bit) holds bit `bit % 8` (LSB first) of the byte at offset
  `bit // 8` of the bank word at (bank, row), placed as accelsim.sim.sram.locate places it. With
  SECDED, each word has ecc_check_bits check cells beside its data cells, in their own plane, so
  adding ECC leaves the data cells' faults unchanged for a given seed.
- SECDED (`corrupt`). No Hamming code is computed: each word read is decided from the number of
  errors among its cells. 0 or 1: the decoder returns the stored data (a real SECDED code
  corrects every single error, wherever it is, data or check bit); 2: detected, data returned
  as read (a real code flags every double error); 3 or more: counted undetected, data as read (a
  real decoder may flag some of them, or miscorrect one more bit; both are left out). Errors are
  exact for the bytes read; a cell whose stored value is not known here (a check bit, a byte of
  the word outside the range read) counts as an error when it fails in either state, which is
  exact for flip at f = 0.5 and conservative otherwise. Reading whole words avoids the second.
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np

from accelsim.errors import HardwareError
from accelsim.hardware import Buffer, ErfcCurve, ErrorModel, Sram14nmCurve, TableCurve

BLOCK_CELLS = 1 << 20  # cells per independently generated block of a plane
_DATA, _CHECK, _TRANSIENT = 0, 1, 2  # generator streams of a buffer


# ---------------------------------------------------------------------------------------------
# Bit error rate against voltage


def ber(
    curve: Sram14nmCurve | ErfcCurve | TableCurve,
    v_over_vmin: float | np.ndarray,
    field: str = "error_model.curve",
) -> float | np.ndarray:
    """BER at supply voltage / Vmin (a number or an array); `field` names the curve in errors."""
    v = np.asarray(v_over_vmin, dtype=np.float64)
    if isinstance(curve, ErfcCurve):
        erfc = np.frompyfunc(math.erfc, 1, 1)
        z = (v - curve.mu) / (math.sqrt(2.0) * curve.sigma)
        out = np.minimum(0.5 * np.asarray(erfc(z), dtype=np.float64), 0.5)
    else:
        out = _table_ber(np.asarray(curve.points, dtype=np.float64), curve.extrapolation, v, field)
    return float(out) if out.ndim == 0 else out


def _table_ber(points: np.ndarray, extrapolation: str, v: np.ndarray, field: str) -> np.ndarray:
    """Log-linear interpolation of ascending (V/Vmin, BER) points; linear into a 0 (see above)."""
    vs, bs = points[:, 0], points[:, 1]
    below, above = v < vs[0], (v > vs[-1]) & (bs[-1] > 0)
    if extrapolation == "error" and (below.any() or above.any()):
        side, edge, bad = ("below", vs[0], v[below]) if below.any() else ("above", vs[-1], v[above])
        raise HardwareError(
            f"{field}: V/Vmin {bad.flat[0]:g} {side} the table ({edge:g}) "
            "and extrapolation is error"
        )
    vc = np.clip(v, vs[0], vs[-1])
    i = np.clip(np.searchsorted(vs, vc, side="right") - 1, 0, len(vs) - 2)
    t = (vc - vs[i]) / (vs[i + 1] - vs[i])
    b0, b1 = bs[i], bs[i + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        logline = b0 * (b1 / b0) ** t  # exactly b0 at t = 0
    inner = np.where(b1 > 0, logline, b0 * (1.0 - t))
    return np.where(vc >= vs[-1], bs[-1], inner)


def cell_rates(model: ErrorModel, ber_value: float) -> tuple[float, float]:
    """(p0, p1): probability that a cell misreads a stored 0 as 1, and a stored 1 as 0."""
    if model.effect == "stuck_at_0":
        return 0.0, ber_value
    if model.effect == "stuck_at_1":
        return ber_value, 0.0
    f = model.fraction_0_to_1
    return min(2.0 * f * ber_value, 1.0), min(2.0 * (1.0 - f) * ber_value, 1.0)


# ---------------------------------------------------------------------------------------------
# Fault maps and reads through them


class CellFaults(NamedTuple):
    """Faulty cells of one plane: where they are and in which stored state each misreads."""

    bank: np.ndarray  # int64
    row: np.ndarray  # int64
    bit: np.ndarray  # int64, within the word's cells of this plane
    err0: np.ndarray  # bool: a stored 0 reads as 1
    err1: np.ndarray  # bool: a stored 1 reads as 0

    @classmethod
    def none(cls) -> CellFaults:
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, empty, empty, empty.astype(bool), empty.astype(bool))


class FaultMap(NamedTuple):
    """A buffer's faulty cells: data cells, and the SECDED check cells (none without ECC)."""

    data: CellFaults
    check: CellFaults


class Read(NamedTuple):
    """What a read returned, and what went wrong on the way."""

    data: np.ndarray  # same dtype and shape as the stored data
    bit_errors: int  # bits of the range that the cells returned wrong (before ECC)
    bits_flipped: int  # bits of `data` that differ from the stored data (after ECC)
    corrected: int  # SECDED words with one error, corrected
    detected: int  # SECDED words with two errors, flagged
    undetected: int  # SECDED words with three or more errors, passed on


def corrupt(buffer: Buffer, faults: FaultMap, data: np.ndarray, address: int) -> Read:
    """A read of `data` as stored from byte `address` on, through the faulty cells (a copy).

    `faults` may hold cells outside the range read; they are ignored (or, with ECC, count for
    the words the range touches).
    """
    stored_array = np.asarray(data)
    stored = np.ascontiguousarray(stored_array).reshape(-1).view(np.uint8)
    n = stored.size
    word_bytes = _word_bytes(buffer)
    if address < 0 or address + n > buffer.banks * buffer.rows_per_bank * word_bytes:
        raise ValueError(
            f"bytes [{address}, {address + n}) are outside the {buffer.size_kib:g} KiB buffer"
        )
    w0, w1 = address // word_bytes, -(-(address + n) // word_bytes)
    d = faults.data
    words = _address_words(buffer, d.bank, d.row)
    byte_address = words * word_bytes + d.bit // 8
    touched = (words >= w0) & (words < w1)
    inside = touched & (byte_address >= address) & (byte_address < address + n)
    pos, shift = byte_address[inside] - address, d.bit[inside] % 8
    m0 = _bit_mask(n, pos[d.err0[inside]], shift[d.err0[inside]])
    m1 = _bit_mask(n, pos[d.err1[inside]], shift[d.err1[inside]])
    read = stored ^ ((~stored & m0) | (stored & m1))
    bit_errors = int(np.bitwise_count(stored ^ read).sum())
    counts = (0, 0, 0)
    if buffer.ecc == "secded" and n:
        byte_word = (address + np.arange(n)) // word_bytes - w0
        unknown = touched & ~inside & (d.err0 | d.err1)
        c = faults.check
        check_words = _address_words(buffer, c.bank, c.row)
        failing = (check_words >= w0) & (check_words < w1) & (c.err0 | c.err1)
        errors = (
            np.bincount(byte_word, weights=np.bitwise_count(stored ^ read), minlength=w1 - w0)
            + np.bincount(words[unknown] - w0, minlength=w1 - w0)
            + np.bincount(check_words[failing] - w0, minlength=w1 - w0)
        )
        fixed = (errors <= 1)[byte_word]
        read[fixed] = stored[fixed]
        counts = (int((errors == 1).sum()), int((errors == 2).sum()), int((errors > 2).sum()))
    out = read.view(stored_array.dtype).reshape(stored_array.shape)
    return Read(out, bit_errors, int(np.bitwise_count(stored ^ read).sum()), *counts)


def _word_bytes(buffer: Buffer) -> int:
    return buffer.bank_width_bits // 8


def _address_words(buffer: Buffer, bank: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Index, in address order, of the bank word at (bank, row): sim.sram.locate inverted."""
    if buffer.bank_mapping == "interleaved":
        return row * buffer.banks + bank
    return bank * buffer.rows_per_bank + row


def _bank_rows(buffer: Buffer, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bank, row) of words in address order, as sim.sram.locate places them."""
    if buffer.bank_mapping == "interleaved":
        row, bank = np.divmod(words, buffer.banks)
        return bank, row
    return np.divmod(words, buffer.rows_per_bank)


def _bit_mask(n: int, pos: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """n bytes with bit `shift` set in byte `pos` for each (distinct) pair; sums are exact."""
    return np.bincount(pos, weights=np.left_shift(1, shift), minlength=n).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Seeded cells


def _threshold(p: float) -> int:
    """p in units of 2^-32: a cell with 32-bit uniform u fails when u < threshold."""
    return min(math.floor(math.ldexp(p, 32) + 0.5), 1 << 32)


def _below(u: np.ndarray, threshold: int) -> np.ndarray:
    if threshold > 0xFFFFFFFF:
        return np.ones(u.shape, dtype=bool)
    return u < np.uint32(threshold)


def _uniforms(bit_generator: np.random.BitGenerator, n: int) -> np.ndarray:
    """n 32-bit uniforms, two per 64-bit output, so that a prefix never depends on n."""
    return bit_generator.random_raw(-(-n // 2)).view(np.uint32)[:n]


def _faulty(u: np.ndarray, rates: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """(indices, err0, err1) of the cells whose uniform u fails at rates (p0, p1)."""
    cells = np.flatnonzero(_below(u, _threshold(max(rates))))
    return (cells, *_misreads(u[cells], rates))


def _misreads(u: np.ndarray, rates: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(err0, err1) of cells with uniforms u: misreads a stored 0, a stored 1, at (p0, p1)."""
    return _below(u, _threshold(rates[0])), _below(u, _threshold(rates[1]))


def _cell_ranges(buffer: Buffer, w0: int, w1: int, width: int) -> list[tuple[int, int]]:
    """Cells [start, stop) of a plane (width cells per word) that hold words [w0, w1).

    Words in address order fall into one run of rows per bank, so at most `banks` ranges.
    """
    if buffer.bank_mapping == "contiguous":
        return [(w0 * width, w1 * width)]
    ranges = []
    for bank in range(buffer.banks):
        first, stop = -((bank - w0) // buffer.banks), -((bank - w1) // buffer.banks)
        if first < stop:
            base = bank * buffer.rows_per_bank
            ranges.append(((base + first) * width, (base + stop) * width))
    return ranges


class _Plane:
    """One array of cells of a buffer (data or check): uniforms drawn per block, on demand."""

    def __init__(self, key: np.ndarray, cells_per_word: int, words: int):
        self.key = key
        self.cells_per_word = cells_per_word
        self.size = cells_per_word * words
        self._kept: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # block -> (t, cells, u)

    def cells(self, ranges: list[tuple[int, int]], threshold: int) -> tuple[np.ndarray, ...]:
        """(cell index, u) of the cells in these ranges with u < threshold."""
        parts = [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32))]
        for start, stop in ranges:
            for block in range(start // BLOCK_CELLS, -(-stop // BLOCK_CELLS)):
                cells, u = self._drawn(block, threshold)
                lo, hi = np.searchsorted(cells, (start, stop))
                keep = _below(u[lo:hi], threshold)
                parts.append((cells[lo:hi][keep], u[lo:hi][keep]))
        return np.concatenate([c for c, _ in parts]), np.concatenate([u for _, u in parts])

    def _drawn(self, block: int, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """(cell index, u), sorted, of a block's cells with u below at least `threshold`."""
        kept = self._kept.get(block)
        if kept is None or kept[0] < threshold:
            counter = np.array([0, block, 0, 0], dtype=np.uint64)
            n = min(BLOCK_CELLS, self.size - block * BLOCK_CELLS)
            u = _uniforms(np.random.Philox(key=self.key, counter=counter), n)
            local = np.flatnonzero(_below(u, threshold))
            kept = (threshold, block * BLOCK_CELLS + local, u[local])
            self._kept[block] = kept
        return kept[1], kept[2]


class BufferFaults:
    """The cells of one buffer in one run (seed): its fault map at a voltage, and reads.

    Make one per buffer and trial; it caches the blocks of cells it has drawn.
    """

    def __init__(self, buffer: Buffer, name: str, seed: int):
        if buffer.bank_width_bits % 8:
            raise HardwareError(
                f"buffers.{name}.bank_width_bits: {buffer.bank_width_bits} is not whole bytes, "
                "which fault injection needs"
            )
        self.buffer, self.name, self.seed = buffer, name, seed
        self.field = f"buffers.{name}.error_model.curve"
        self._name_id = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        words = buffer.banks * buffer.rows_per_bank
        self._data = _Plane(self._key(_DATA), buffer.bank_width_bits, words)
        self._check = _Plane(self._key(_CHECK), buffer.ecc_check_bits, words)
        self._rates: dict[float, tuple[float, float]] = {}

    def _key(self, *stream: int) -> np.ndarray:
        """Philox key of a generator stream of this buffer in this run."""
        return np.random.SeedSequence([self.seed, self._name_id, *stream]).generate_state(
            2, np.uint64
        )

    def ber(self, voltage_v: float) -> float:
        """Bit error rate of this buffer's cells at a supply voltage."""
        return ber(
            self.buffer.error_model.curve, voltage_v / self.buffer.resolved_vmin_v, self.field
        )

    def rates(self, voltage_v: float) -> tuple[float, float]:
        """(p0, p1) of cell_rates at a supply voltage (remembered: a run has few voltages)."""
        if voltage_v not in self._rates:
            self._rates[voltage_v] = cell_rates(self.buffer.error_model, self.ber(voltage_v))
        return self._rates[voltage_v]

    def fault_map(self, voltage_v: float) -> FaultMap:
        """The persistent faulty cells of the whole buffer at a voltage."""
        words = self.buffer.banks * self.buffer.rows_per_bank
        return self._persistent(0, words, self.rates(voltage_v))

    def read(self, data: np.ndarray, address: int, voltage_v: float, read_index: int = 0) -> Read:
        """A read of `data`, stored from byte `address` on, at a supply voltage.

        Persistent faults ignore read_index: a range read twice at one voltage returns the same
        thing. Transient faults draw anew for each read_index (count the buffer's reads).
        """
        n = np.asarray(data).nbytes
        word_bytes = _word_bytes(self.buffer)
        w0, w1 = address // word_bytes, -(-(address + n) // word_bytes)
        rates = self.rates(voltage_v)
        if self.buffer.error_model.mode == "transient":
            faults = self._transient(np.arange(w0, w1), rates, read_index)
        else:
            faults = self._persistent(w0, w1, rates)
        return corrupt(self.buffer, faults, data, address)

    def _persistent(self, w0: int, w1: int, rates: tuple[float, float]) -> FaultMap:
        """Persistent faults of the cells of words [w0, w1) (in address order)."""
        planes = []
        for plane in (self._data, self._check):
            ranges = _cell_ranges(self.buffer, w0, w1, plane.cells_per_word)
            cells, u = plane.cells(ranges, _threshold(max(rates)))
            err0, err1 = _misreads(u, rates)
            word, bit = np.divmod(cells, plane.cells_per_word)
            bank, row = np.divmod(word, self.buffer.rows_per_bank)
            planes.append(CellFaults(bank, row, bit, err0, err1))
        return FaultMap(*planes)

    def _transient(
        self, words: np.ndarray, rates: tuple[float, float], read_index: int
    ) -> FaultMap:
        """Fresh faults of one read over the cells of these words (in address order)."""
        bit_generator = np.random.Philox(key=self._key(_TRANSIENT, read_index))
        planes = []
        for width in (self.buffer.bank_width_bits, self.buffer.ecc_check_bits):
            if width == 0:
                planes.append(CellFaults.none())
                continue
            cells, err0, err1 = _faulty(_uniforms(bit_generator, words.size * width), rates)
            local, bit = np.divmod(cells, width)
            bank, row = _bank_rows(self.buffer, words[local])
            planes.append(CellFaults(bank, row, bit, err0, err1))
        return FaultMap(*planes)
