"""The timing model: three simpy processes that read like the machine they describe.

    loader  issues each step's loads as soon as the buffer slot they land in is free (double
            buffering lets it run one step ahead of the array) and, for a layer that reads an
            earlier layer's outputs, once those outputs are written;
    array   runs each step once its operands have arrived and its output slot is free, for the
            closed-form compute cycles plus the bank-conflict stalls of the mapping;
    writer  writes each step's outputs back as soon as the array has produced them.

Loads and stores share one memory path (DRAM channel and interconnect, dram.py). Events are per
step and per transfer, never per cycle. The cycles the array waits are charged to the transfer
it waited for: the part while the data was in flight to latency, the rest to the bandwidth of
whichever of DRAM and interconnect set that transfer's pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from accelsim.sim.dram import MemoryPath, TransferRecord

if TYPE_CHECKING:
    from accelsim.mapping import Mapping

STALL_CAUSES = ("dram_bandwidth", "dram_latency", "interconnect", "bank_conflict")


@dataclass
class LayerTiming:
    """One layer's time on the machine; cycles = compute_cycles + sum(stall_cycles.values())."""

    index: int
    name: str
    start_cycle: int = 0
    cycles: int = 0
    compute_cycles: int = 0
    stall_cycles: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STALL_CAUSES, 0))
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0

    @property
    def total_stall_cycles(self) -> int:
        return sum(self.stall_cycles.values())


@dataclass
class Timing:
    layers: list[LayerTiming]
    cycles: int


class _Machine:
    def __init__(self, mapping: Mapping):
        hw = mapping.hardware
        self.env = env = simpy.Environment()
        self.memory = MemoryPath(env, hw.dram, hw.interconnect)
        self.steps = steps = list(mapping.steps)
        self.layers = [LayerTiming(lm.index, lm.name) for lm in mapping.layers]
        self.slot = {name: (2 if b.double_buffered else 1) for name, b in hw.buffers.items()}
        n = len(steps)
        self.loaded = [env.event() for _ in range(n)]
        self.computed = [env.event() for _ in range(n)]
        self.stored = [env.event() for _ in range(n)]
        self.compute_end = [0] * n
        self.load_records: list[list[TransferRecord]] = [[] for _ in range(n)]
        # the stores a step's ifmap loads waited for (the earlier layer's outputs), by step
        self.gate_records: dict[int, list[TransferRecord]] = {}
        self.store_records: list[list[TransferRecord]] = [[] for _ in range(n)]
        self.layer_written = {lm.index: env.event() for lm in mapping.layers}
        self.reads_earlier = {lm.index: lm.reads_earlier_layers for lm in mapping.layers}
        self.last_step_of = {}
        for s, step in enumerate(steps):
            self.last_step_of[step.layer] = s
        self.position = {lm.index: k for k, lm in enumerate(mapping.layers)}
        self.dram_latency = hw.dram.latency_cycles

    def _issue(self, transfers, records: list[TransferRecord]) -> None:
        records.extend(self.memory.issue(t.nbytes) for t in transfers)

    def loader(self):
        steps = self.steps
        for s, step in enumerate(steps):
            first_step_of_layer = s == 0 or steps[s - 1].layer != step.layer
            if not step.loads:
                self.loaded[s].succeed()
                continue
            depth = min(self.slot[t.buffer] for t in step.loads)
            if s >= depth:
                yield self.computed[s - depth]
            records = self.load_records[s]
            self._issue([t for t in step.loads if t.role != "ifmap"], records)
            if first_step_of_layer and self.reads_earlier[step.layer]:
                k = self.position[step.layer]
                if k > 0:
                    earlier = self.layers[k - 1].index
                    yield self.layer_written[earlier]
                    self.gate_records[s] = self.store_records[self.last_step_of[earlier]]
            self._issue([t for t in step.loads if t.role == "ifmap"], records)
            self._fire_at(self.memory.arrival(records), self.loaded[s])

    @staticmethod
    def _fire_at(timeout: simpy.Event, event: simpy.Event) -> None:
        timeout.callbacks.append(lambda _: event.succeed())

    def array(self):
        env, steps = self.env, self.steps
        storing: dict[str, list[int]] = {}  # buffer -> the steps that stored from it, in order
        for s, step in enumerate(steps):
            layer = self.layers[self.position[step.layer]]
            ready = env.now
            yield self.loaded[s]
            self._charge(layer, ready, env.now, self.load_records[s], self.gate_records.get(s))
            if step.stores:
                # The slot this step's outputs go to is the one the depth-th storing step before
                # it wrote (steps without stores leave the slots as they were).
                buffer = step.stores[0].buffer
                before = storing.setdefault(buffer, [])
                depth = self.slot[buffer]
                if len(before) >= depth:
                    k = before[-depth]
                    ready = env.now
                    yield self.stored[k]
                    self._charge(layer, ready, env.now, self.store_records[k])
                before.append(s)
            busy = step.compute_cycles + step.bank_stall_cycles
            layer.compute_cycles += step.compute_cycles
            layer.stall_cycles["bank_conflict"] += step.bank_stall_cycles
            if busy:
                yield env.timeout(busy)
            self.compute_end[s] = env.now
            self.computed[s].succeed()

    def writer(self):
        steps = self.steps
        for s, step in enumerate(steps):
            yield self.computed[s]
            self._issue(step.stores, self.store_records[s])
            done = self.memory.arrival(self.store_records[s])
            self._fire_at(done, self.stored[s])
            if self.last_step_of[step.layer] == s:
                self._fire_at(done, self.layer_written[step.layer])

    def _charge(self, layer: LayerTiming, start: int, end: int, records, gate=None) -> None:
        """Charge the wait [start, end) to the cause of the last transfer to arrive; the part
        before it was issued, to the transfers that gated its issue (`gate`: the earlier layer's
        stores that a layer's ifmap loads wait for)."""
        if end <= start:
            return
        if not records:
            layer.stall_cycles["dram_bandwidth"] += end - start
            return
        rec = max(records, key=lambda r: r.arrived)
        if gate and rec.issued > start:
            cut = min(end, rec.issued)
            self._charge(layer, start, cut, gate)
            start = cut
            if end <= start:
                return
        in_flight = max(0, min(end, rec.arrived) - max(start, rec.moved))
        on_dram = min(in_flight, max(0, min(end, rec.moved + self.dram_latency)
                                     - max(start, rec.moved)))
        layer.stall_cycles["dram_latency"] += on_dram
        layer.stall_cycles["interconnect"] += in_flight - on_dram
        layer.stall_cycles[rec.bottleneck] += (end - start) - in_flight

    def run(self) -> Timing:
        env = self.env
        env.process(self.loader())
        env.process(self.array())
        env.process(self.writer())
        env.run()
        return self._finish(int(env.now))

    def _finish(self, total: int) -> Timing:
        prev_end = 0
        for k, layer in enumerate(self.layers):
            s = self.last_step_of.get(layer.index)
            end = self.compute_end[s] if s is not None else prev_end
            if k == len(self.layers) - 1:
                tail = total - end
                if tail:
                    self._charge(layer, end, total, self.store_records[s] if s is not None else [])
                end = total
            layer.start_cycle = prev_end
            layer.cycles = end - prev_end
            prev_end = end
        for step in self.steps:
            layer = self.layers[self.position[step.layer]]
            layer.dram_read_bytes += sum(t.nbytes for t in step.loads)
            layer.dram_write_bytes += sum(t.nbytes for t in step.stores)
        return Timing(self.layers, total)


def simulate_timing(mapping: Mapping) -> Timing:
    """Cycles, compute cycles and stalls by cause of every layer of a mapping."""
    return _Machine(mapping).run()
