"""SRAM banks: how many cycles a buffer needs to deliver one cycle's worth of the array's operands.

A bank delivers one word of bank_width_bits per port per cycle. With interleaved banks,
consecutive words sit in consecutive banks, so a cycle's operands (contiguous in the layout)
spread over min(words, banks) banks; with contiguous banks they fall in one bank and queue on
its ports. When a buffer cannot keep up, each stream step takes several cycles: the extra ones
are bank-conflict stalls, a closed form per fold.
"""

from __future__ import annotations

from collections.abc import Mapping

from accelsim.hardware import Buffer


def words(bits: int, buffer: Buffer) -> int:
    """Bank-width words that hold `bits` contiguous bits."""
    return -(-bits // buffer.bank_width_bits)


def cycles_per_step(demand_words: Mapping[str, int], buffers: Mapping[str, Buffer]) -> int:
    """Cycles the busiest buffer needs to serve one stream step (1 when none is short).

    demand_words: buffer name -> words the array reads or writes in one stream step.
    """
    worst = 1
    for name, need in demand_words.items():
        buf = buffers[name]
        banks = min(need, buf.banks) if buf.bank_mapping == "interleaved" else 1
        worst = max(worst, -(-need // (banks * buf.ports)))
    return worst


def locate(buffer: Buffer, address_bytes: int) -> tuple[int, int, int]:
    """(bank, row, bit offset in the row) of a byte address in a buffer.

    This is where the mapping's addresses meet the cells: the fault model corrupts the value at
    an address with the cells of this bank and row.
    """
    word_bytes = buffer.bank_width_bits // 8 or 1
    word, offset = divmod(address_bytes, word_bytes)
    if buffer.bank_mapping == "interleaved":
        row, bank = divmod(word, buffer.banks)
    else:
        bank, row = divmod(word, buffer.rows_per_bank)
    if bank >= buffer.banks or row >= buffer.rows_per_bank:
        raise ValueError(f"address {address_bytes} is outside the {buffer.size_kib:g} KiB buffer")
    return bank, row, 8 * offset
