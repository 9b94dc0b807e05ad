"""Off-chip memory and the on-chip interconnect: how long a transfer holds them and arrives.

A transfer moves whole DRAM bursts; it holds the DRAM channel and the interconnect for the
longer of their occupancies (the narrower one sets the pace), and its data arrives the two
latencies later, while the next transfer may already use the channel (requests pipeline).
bandwidth_bytes_per_cycle null (SCALE-Sim's CALC) and interconnect width null mean unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import simpy

from accelsim.hardware import DRAM, Interconnect


def bandwidth_ratio(dram: DRAM) -> tuple[int, int] | None:
    """DRAM bytes per cycle as an exact fraction (num, den); None when unlimited.

    Exact for decimal bandwidths such as 12.8 B/cycle, where float division is not.
    """
    if dram.bandwidth_bytes_per_cycle is None:
        return None
    f = Fraction(str(dram.bandwidth_bytes_per_cycle))
    return f.numerator, f.denominator


def dram_occupancy(dram: DRAM, nbytes: int, ratio: tuple[int, int] | None = None) -> int:
    """Cycles a transfer of nbytes holds the DRAM channel (whole bursts at its bandwidth)."""
    ratio = ratio if ratio is not None else bandwidth_ratio(dram)
    if ratio is None or nbytes == 0:
        return 0
    moved = -(-nbytes // dram.burst_bytes) * dram.burst_bytes
    num, den = ratio
    return -(-moved * den // num)


def link_occupancy(link: Interconnect, nbytes: int) -> int:
    """Cycles a transfer of nbytes holds the interconnect (its width per cycle)."""
    if link.width_bits is None or nbytes == 0:
        return 0
    return -(-nbytes * 8 // link.width_bits)


@dataclass(slots=True)
class TransferRecord:
    """When a transfer was issued, got the channel, finished moving and arrived (cycles)."""

    nbytes: int
    issued: int = 0
    started: int = 0
    moved: int = 0
    arrived: int = 0
    bottleneck: str = "dram_bandwidth"


class MemoryPath:
    """The DRAM channel and the interconnect, shared by every load and store in issue order.

    The channel serves transfers first come, first served, so when a transfer is issued its
    whole timeline is known: it starts when the channel frees, holds it for its occupancy and
    arrives a latency later. The engine waits on one simpy timeout per group of transfers
    (a step's loads, its stores).
    """

    def __init__(self, env: simpy.Environment, dram: DRAM, link: Interconnect):
        self.env, self.dram, self.link = env, dram, link
        self.free_at = 0
        self.ratio = bandwidth_ratio(dram)
        self.latency = dram.latency_cycles + link.latency_cycles * link.hops
        self._paces: dict[int, tuple[int, str]] = {}  # nbytes -> pace (a network has few sizes)

    def pace(self, nbytes: int) -> tuple[int, str]:
        """Cycles a transfer of nbytes holds the path, and which of DRAM and link sets that."""
        known = self._paces.get(nbytes)
        if known is None:
            busy_dram = dram_occupancy(self.dram, nbytes, self.ratio)
            busy_link = link_occupancy(self.link, nbytes)
            known = self._paces[nbytes] = (
                max(busy_dram, busy_link),
                "dram_bandwidth" if busy_dram >= busy_link else "interconnect")
        return known

    def issue(self, nbytes: int) -> TransferRecord:
        """Queue a transfer now; returns its timeline."""
        now = self.env.now
        busy, bottleneck = self.pace(nbytes)
        if busy:
            started = max(now, self.free_at)
            self.free_at = moved = started + busy
        else:
            started = moved = now
        return TransferRecord(nbytes, now, started, moved, moved + self.latency, bottleneck)

    def arrival(self, records: list[TransferRecord]) -> simpy.Event:
        """An event that fires when the last of `records` has arrived."""
        now = self.env.now
        last = max([r.arrived for r in records], default=now)
        return self.env.timeout(last - now)
