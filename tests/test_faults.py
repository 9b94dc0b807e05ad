"""Faults: BER curves, seeded nested fault maps, reads through them, SECDED decisions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelsim import load_hardware
from accelsim.errors import HardwareError
from accelsim.faults import (
    BufferFaults,
    CellFaults,
    FaultMap,
    ber,
    cell_rates,
    corrupt,
)
from accelsim.hardware import SRAM_BER_14NM, Buffer, ErfcCurve, Sram14nmCurve, TableCurve
from accelsim.sim.sram import locate

SRAM_14NM = Sram14nmCurve()
CURVE = "buffers.weights.error_model.curve"


def weights(**fields) -> Buffer:
    """The weight buffer of a default machine with these fields set; Vmin 1 V, so V = V/Vmin."""
    fields = {"vmin_v": 1.0, **fields}
    hw = load_hardware({}, **{f"buffers.weights.{k}": v for k, v in fields.items()})
    return hw.buffers["weights"]


def cell_keys(cells: CellFaults, buffer: Buffer, width: int) -> np.ndarray:
    """Faulty cells as one sorted integer each."""
    return np.sort((cells.bank * buffer.rows_per_bank + cells.row) * width + cells.bit)


def random_bytes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def faults_at(buffer: Buffer, data_cells=(), check_cells=()) -> FaultMap:
    """A crafted map of cells that misread both a 0 and a 1, given as (bank, row, bit)."""

    def plane(cells):
        if not cells:
            return CellFaults.none()
        bank, row, bit = (np.array(c, dtype=np.int64) for c in zip(*cells, strict=True))
        flags = np.ones(len(cells), dtype=bool)
        return CellFaults(bank, row, bit, flags, flags)

    return FaultMap(plane(list(data_cells)), plane(list(check_cells)))


# ---------------------------------------------------------------------------------------------
# BER curves


def test_table_curves_pass_through_their_points():
    for v, b in SRAM_BER_14NM:
        assert ber(SRAM_14NM, v) == b
    user = TableCurve(kind="table", points=[[0.7, 0.3], [0.8, 0.01], [0.9, 1e-5]])
    for v, b in user.points:
        assert ber(user, v) == b


@settings(max_examples=60, deadline=None)
@given(segment=st.integers(0, len(SRAM_BER_14NM) - 3), t=st.floats(0.0, 1.0))
def test_table_is_log_linear_between_points(segment, t):
    (v0, b0), (v1, b1) = SRAM_BER_14NM[segment], SRAM_BER_14NM[segment + 1]
    expected = math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    assert ber(SRAM_14NM, v0 + t * (v1 - v0)) == pytest.approx(expected, rel=1e-9)


def test_segment_into_zero_is_linear_and_zero_from_there_up():
    (v0, b0), (v1, _) = SRAM_BER_14NM[-2], SRAM_BER_14NM[-1]
    assert ber(SRAM_14NM, 0.979) == pytest.approx(b0 * (v1 - 0.979) / (v1 - v0), rel=1e-12)
    strict = Sram14nmCurve(extrapolation="error")
    assert list(ber(strict, np.array([1.0, 1.05, 3.0]))) == [0.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.5, 1.2), b=st.floats(0.5, 1.2))
def test_curves_never_rise_with_voltage(a, b):
    low, high = min(a, b), max(a, b)
    for curve in (SRAM_14NM, ErfcCurve(kind="erfc")):
        assert ber(curve, low) >= ber(curve, high)


def test_curves_are_vectorised():
    v = np.linspace(0.6, 1.1, 23).reshape(1, 23)
    for curve in (SRAM_14NM, ErfcCurve(kind="erfc")):
        out = ber(curve, v)
        assert out.shape == v.shape
        assert list(out.ravel()) == [ber(curve, float(x)) for x in v.ravel()]


def test_erfc_is_the_formula_held_at_one_half():
    curve = ErfcCurve(kind="erfc", mu=0.7, sigma=0.05)
    assert ber(curve, 0.8) == pytest.approx(0.5 * math.erfc(0.1 / (math.sqrt(2) * 0.05)))
    assert ber(curve, 0.5) == 0.5


def test_clamp_holds_the_end_values():
    assert ber(SRAM_14NM, 0.6) == SRAM_BER_14NM[0][1]
    user = TableCurve(kind="table", points=[[0.8, 0.01], [0.9, 1e-4]])
    assert ber(user, 0.95) == 1e-4


def test_extrapolation_error_names_the_field():
    faults = BufferFaults(weights(**{"error_model.curve.extrapolation": "error"}), "weights", 0)
    with pytest.raises(HardwareError, match=rf"^{CURVE}: V/Vmin 0.7 below the table \(0.75\)"):
        faults.ber(0.70)
    with pytest.raises(HardwareError, match=CURVE):
        faults.read(np.zeros(8, np.uint8), 0, 0.70)
    table = {"kind": "table", "points": [[0.8, 0.01], [0.9, 1e-4]], "extrapolation": "error"}
    faults = BufferFaults(weights(**{"error_model.curve": table}), "weights", 0)
    with pytest.raises(HardwareError, match=rf"^{CURVE}: V/Vmin 0.95 above the table \(0.9\)"):
        faults.ber(0.95)


@pytest.mark.parametrize(
    "points, field, words",
    [
        ([[0.8, 0.6], [0.9, 0.0]], "curve.points.0", "[0, 0.5]"),
        ([[0.8, 0.1], [0.9, -1e-3]], "curve.points.1", "[0, 0.5]"),
        ([[0.8, 0.01], [0.9, 0.02]], "curve.points", "must not rise"),
    ],
)
def test_bad_tables_are_rejected_naming_the_field(points, field, words):
    with pytest.raises(HardwareError) as info:
        load_hardware({}, **{CURVE: {"kind": "table", "points": points}})
    assert f"{CURVE.rsplit('.', 1)[0]}.{field}: " in str(info.value)
    assert words in str(info.value)


def test_cell_rates_by_effect():
    buffer = weights(**{"error_model.fraction_0_to_1": 0.8})
    assert cell_rates(buffer.error_model, 0.1) == pytest.approx((0.16, 0.04))
    assert cell_rates(weights(**{"error_model.effect": "stuck_at_0"}).error_model, 0.1) == (0, 0.1)
    assert cell_rates(weights(**{"error_model.effect": "stuck_at_1"}).error_model, 0.1) == (0.1, 0)


# ---------------------------------------------------------------------------------------------
# Persistent fault maps


MIB = weights(size_kib=1024, banks=8, ecc="secded")


@pytest.mark.parametrize("v", [0.958, 0.9, 0.833, 0.75])
def test_faulty_fraction_matches_ber(v):
    faults = BufferFaults(MIB, "weights", 3)
    fault_map, p = faults.fault_map(v), faults.ber(v)
    for plane, width in ((fault_map.data, MIB.bank_width_bits), (fault_map.check, 8)):
        n = MIB.banks * MIB.rows_per_bank * width
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(plane.bank.size - n * p) <= 5 * sigma + 1, (v, width, plane.bank.size, n * p)
    assert MIB.ecc_check_bits == 8


def test_faults_are_nested_across_voltages():
    buffer = weights(size_kib=256, banks=4, **{"error_model.fraction_0_to_1": 0.7})
    width = buffer.bank_width_bits
    maps = {v: BufferFaults(buffer, "weights", 5).fault_map(v) for v in (0.9, 0.85, 0.8)}
    for high, low in ((0.9, 0.85), (0.85, 0.8)):
        hi, lo = maps[high].data, maps[low].data
        assert hi.bank.size < lo.bank.size
        assert np.isin(cell_keys(hi, buffer, width), cell_keys(lo, buffer, width)).all()
        for flag in ("err0", "err1"):
            misread_high = cell_keys(hi, buffer, width)[getattr(hi, flag)]
            misread_low = cell_keys(lo, buffer, width)[getattr(lo, flag)]
            assert np.isin(misread_high, misread_low).all()


def test_maps_do_not_depend_on_what_was_drawn_before():
    buffer = weights(size_kib=256, banks=4)
    fresh = BufferFaults(buffer, "weights", 5)
    used = BufferFaults(buffer, "weights", 5)
    used.fault_map(0.8)
    for v in (0.85, 0.78):
        for a, b in zip(fresh.fault_map(v).data, used.fault_map(v).data, strict=True):
            assert np.array_equal(a, b)


def test_seed_and_buffer_name_choose_the_map():
    buffer = weights(size_kib=256, banks=4)

    def keys(name, seed):
        return cell_keys(BufferFaults(buffer, name, seed).fault_map(0.85).data, buffer, 64)

    assert np.array_equal(keys("weights", 1), keys("weights", 1))
    assert not np.array_equal(keys("weights", 1), keys("weights", 2))
    assert not np.array_equal(keys("weights", 1), keys("ifmap", 1))


def test_ecc_check_cells_leave_the_data_cells_alone():
    plain, ecc = weights(size_kib=128), weights(size_kib=128, ecc="secded")
    a = BufferFaults(plain, "weights", 4).fault_map(0.8).data
    b = BufferFaults(ecc, "weights", 4).fault_map(0.8).data
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Reads through the cells


@settings(max_examples=40, deadline=None)
@given(
    mapping=st.sampled_from(["interleaved", "contiguous"]),
    banks=st.sampled_from([1, 2, 4, 8]),
    width=st.sampled_from([8, 32, 64, 128]),
    address=st.integers(0, 8 * 1024 - 1),
    bit=st.integers(0, 7),
)
def test_a_faulty_cell_hits_the_byte_locate_names(mapping, banks, width, address, bit):
    buffer = weights(size_kib=8, banks=banks, bank_width_bits=width, bank_mapping=mapping)
    bank, row, offset = locate(buffer, address)
    start = max(0, address - 40)
    stored = np.zeros(min(address + 40, 8 * 1024) - start, dtype=np.uint8)
    read = corrupt(buffer, faults_at(buffer, [(bank, row, offset + bit)]), stored, start)
    expected = stored.copy()
    expected[address - start] = 1 << bit
    assert np.array_equal(read.data, expected)
    assert read.bit_errors == read.bits_flipped == 1


@settings(max_examples=25, deadline=None)
@given(
    mapping=st.sampled_from(["interleaved", "contiguous"]),
    address=st.integers(0, 380_000),
    n=st.integers(0, 5_000),
    v=st.sampled_from([0.95, 0.85, 0.78]),
    ecc=st.sampled_from(["none", "secded"]),
)
def test_a_read_is_the_whole_map_applied_to_its_range(mapping, address, n, v, ecc):
    buffer = weights(size_kib=384, banks=4, bank_mapping=mapping, ecc=ecc)  # banks straddle blocks
    stored = random_bytes(n)
    read = BufferFaults(buffer, "weights", 2).read(stored, address, v)
    whole = corrupt(buffer, BufferFaults(buffer, "weights", 2).fault_map(v), stored, address)
    assert np.array_equal(read.data, whole.data)
    assert read[1:] == whole[1:]


@pytest.mark.parametrize("mode", ["persistent", "transient"])
@pytest.mark.parametrize("ecc", ["none", "secded"])
@pytest.mark.parametrize("v", [1.0, 1.2])
def test_at_ber_zero_reads_return_the_stored_bits(mode, ecc, v):
    buffer = weights(size_kib=64, ecc=ecc, **{"error_model.mode": mode})
    stored = random_bytes(64 * 1024)
    read = BufferFaults(buffer, "weights", 0).read(stored, 0, v, read_index=3)
    assert read.data.tobytes() == stored.tobytes()
    assert tuple(read[1:]) == (0, 0, 0, 0, 0)


def test_reads_keep_dtype_and_shape():
    stored = np.arange(-600, 600, dtype=np.int16).reshape(30, 40)
    read = BufferFaults(weights(), "weights", 0).read(stored, 100, 0.8)
    assert read.data.dtype == np.int16 and read.data.shape == (30, 40)
    changed = (read.data ^ stored).view(np.uint16)  # bitwise_count of int16 counts |x|'s bits
    assert 0 < read.bits_flipped == int(np.bitwise_count(changed).sum())


def test_persistent_reads_of_an_address_repeat():
    buffer = weights(size_kib=64)
    faults = BufferFaults(buffer, "weights", 7)
    stored = random_bytes(4096)
    first = faults.read(stored, 1000, 0.8, read_index=0)
    assert first.bits_flipped > 0
    for again in (
        faults.read(stored, 1000, 0.8, read_index=5),
        BufferFaults(buffer, "weights", 7).read(stored, 1000, 0.8),
    ):
        assert np.array_equal(first.data, again.data)
    elsewhere = faults.read(stored, 9000, 0.8)
    assert not np.array_equal(first.data, elsewhere.data)


def test_transient_reads_draw_anew_at_the_rate():
    faults = BufferFaults(weights(size_kib=64, **{"error_model.mode": "transient"}), "weights", 7)
    stored = random_bytes(64 * 1024)
    reads = [faults.read(stored, 0, 0.833, read_index=i) for i in (0, 1, 0)]
    assert np.array_equal(reads[0].data, reads[2].data)
    assert not np.array_equal(reads[0].data, reads[1].data)
    n, p = stored.size * 8, faults.ber(0.833)
    assert abs(reads[1].bit_errors - n * p) <= 5 * math.sqrt(n * p)


@pytest.mark.parametrize("effect, value", [("stuck_at_0", 0), ("stuck_at_1", 1)])
def test_stuck_cells_read_their_value(effect, value):
    buffer = weights(size_kib=64, **{"error_model.effect": effect})
    faults = BufferFaults(buffer, "weights", 1)
    faulty = faults.fault_map(0.8).data.bank.size
    same = np.full(64 * 1024, 255 * value, dtype=np.uint8)
    assert faults.read(same, 0, 0.8).bits_flipped == 0
    opposite = 255 - same
    read = faults.read(opposite, 0, 0.8)
    assert read.bits_flipped == faulty > 0
    mixed = random_bytes(64 * 1024)
    changed = faults.read(mixed, 0, 0.8).data ^ mixed
    assert not (changed & (mixed if value else ~mixed)).any()  # only bits unlike the value move


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.1])
def test_errors_split_0_to_1_by_the_fraction(fraction):
    buffer = weights(size_kib=512, banks=4, **{"error_model.fraction_0_to_1": fraction})
    faults = BufferFaults(buffer, "weights", 11)
    stored = random_bytes(512 * 1024, seed=3)
    changed = faults.read(stored, 0, 0.833).data ^ stored
    up = int(np.bitwise_count(changed & ~stored).sum())
    down = int(np.bitwise_count(changed & stored).sum())
    n, p = stored.size * 8, faults.ber(0.833)
    assert abs(up + down - n * p) <= 5 * math.sqrt(n * p)
    errors = up + down
    assert abs(up - fraction * errors) <= 5 * math.sqrt(errors * fraction * (1 - fraction))


def test_at_one_half_every_faulty_cell_flips_whatever_it_holds():
    faults = BufferFaults(weights(size_kib=64), "weights", 1)
    faulty = faults.fault_map(0.8).data.bank.size
    for fill in (0, 255):
        assert faults.read(np.full(64 * 1024, fill, np.uint8), 0, 0.8).bits_flipped == faulty


def test_ranges_outside_the_buffer_are_refused():
    faults = BufferFaults(weights(size_kib=8), "weights", 0)
    with pytest.raises(ValueError, match="outside"):
        faults.read(np.zeros(16, np.uint8), 8 * 1024 - 8, 0.8)


def test_bank_words_must_be_whole_bytes():
    with pytest.raises(HardwareError, match="buffers.weights.bank_width_bits"):
        BufferFaults(weights(bank_width_bits=12), "weights", 0)


# ---------------------------------------------------------------------------------------------
# SECDED


ECC = weights(size_kib=8, banks=2, ecc="secded")  # 64-bit words, 8 check bits, 8-byte words


def word_cells(word: int, count: int, draw) -> list[tuple[str, tuple[int, int, int]]]:
    """`count` distinct cells (data or check) of one word, in address order."""
    bank, row, _ = locate(ECC, 8 * word)
    picks = draw(st.lists(st.integers(0, 64 + 8 - 1), min_size=count, max_size=count, unique=True))
    return [("data", (bank, row, b)) if b < 64 else ("check", (bank, row, b - 64)) for b in picks]


def crafted(cells) -> FaultMap:
    return faults_at(
        ECC, [c for k, c in cells if k == "data"], [c for k, c in cells if k == "check"]
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data(), word=st.integers(0, 127))
def test_secded_corrects_every_single_error(data, word):
    stored = random_bytes(8 * 1024)
    read = corrupt(ECC, crafted(word_cells(word, 1, data.draw)), stored, 0)
    assert read.data.tobytes() == stored.tobytes()
    assert (read.corrected, read.detected, read.undetected, read.bits_flipped) == (1, 0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), word=st.integers(0, 127), count=st.integers(2, 5))
def test_secded_flags_double_errors_and_passes_more(data, word, count):
    stored = random_bytes(8 * 1024)
    cells = word_cells(word, count, data.draw)
    read = corrupt(ECC, crafted(cells), stored, 0)
    data_errors = sum(k == "data" for k, _ in cells)
    assert read.bits_flipped == read.bit_errors == data_errors
    assert (read.corrected, read.detected, read.undetected) == (0, count == 2, count > 2)


def test_secded_decides_each_word_on_its_own():
    bank = [locate(ECC, 8 * w)[:2] for w in range(4)]
    cells = [(*bank[1], 3), (*bank[2], 0), (*bank[2], 9), (*bank[3], 1), (*bank[3], 2)]
    read = corrupt(ECC, faults_at(ECC, cells, [(*bank[3], 4)]), np.zeros(32, np.uint8), 0)
    assert (read.corrected, read.detected, read.undetected) == (1, 1, 1)
    assert read.bit_errors == 5 and read.bits_flipped == 4


def test_secded_counts_failing_cells_of_a_word_outside_the_range():
    bank, row, _ = locate(ECC, 16)
    cells = faults_at(ECC, [(bank, row, 2), (bank, row, 8 * 5)])  # bytes 16 and 21
    read = corrupt(ECC, cells, np.zeros(4, np.uint8), 16)  # reads bytes 16..19 of the word
    assert read.detected == 1 and read.bits_flipped == 1
