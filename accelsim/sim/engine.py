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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import simpy

from accelsim.gcpause import without_cycle_collection
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


class _StepPlan(NamedTuple):
    """A step as the three processes need it, worked out once before the run."""

    layer: LayerTiming
    load_depth: int  # slots of the loads' buffers: how far the loader may run ahead (0: no loads)
    loads: list[int]  # bytes of each load but the ifmap's, issued first
    ifmap_loads: list[int]  # bytes of each ifmap load, issued once `gate` is written
    gate: int | None  # the earlier layer this step's ifmap loads wait for (a layer's first step)
    stores: list[int]
    store_buffer: str | None
    busy: int  # compute plus bank-conflict cycles
    last_of_layer: bool


class _Machine:
    def __init__(self, mapping: Mapping):
        hw = mapping.hardware
        self.env = env = simpy.Environment()
        self.memory = MemoryPath(env, hw.dram, hw.interconnect)
        self.layers = [LayerTiming(lm.index, lm.name) for lm in mapping.layers]
        self.slot = {name: (2 if b.double_buffered else 1) for name, b in hw.buffers.items()}
        self.last_step_of: dict[int, int] = {}
        self.plans = self._plan(mapping)
        n = len(self.plans)
        self.loaded = [env.event() for _ in range(n)]
        self.computed = [env.event() for _ in range(n)]
        # only storing steps' outputs are waited for (by the array, to reuse their slot)
        self.stored = {s: env.event() for s, plan in enumerate(self.plans) if plan.stores}
        self.compute_end = [0] * n
        # each step's transfers, as the loader and the writer issue them
        self.load_records: list[Sequence[TransferRecord]] = [()] * n
        self.store_records: list[Sequence[TransferRecord]] = [()] * n
        # the stores a step's ifmap loads waited for (the earlier layer's outputs), by step
        self.gate_records: dict[int, Sequence[TransferRecord]] = {}
        self.layer_written = {lm.index: env.event() for lm in mapping.layers}
        self.dram_latency = hw.dram.latency_cycles

    def _plan(self, mapping: Mapping) -> list[_StepPlan]:
        """Each step's plan; also the layers' compute cycles, bank stalls and DRAM bytes, which
        do not depend on when things happen."""
        plans: list[_StepPlan] = []
        slot = self.slot
        for k, (lm, layer) in enumerate(zip(mapping.layers, self.layers, strict=True)):
            earlier = self.layers[k - 1].index if lm.reads_earlier_layers and k > 0 else None
            last = len(lm.steps) - 1
            for j, step in enumerate(lm.steps):
                loads, stores = step.loads, step.stores
                depth, first, ifmap = 0, [], []
                for t in loads:
                    (ifmap if t.role == "ifmap" else first).append(t.nbytes)
                    depth = min(depth, slot[t.buffer]) if depth else slot[t.buffer]
                    layer.dram_read_bytes += t.nbytes
                for t in stores:
                    layer.dram_write_bytes += t.nbytes
                plans.append(_StepPlan(
                    layer, depth, first, ifmap, earlier if j == 0 and loads else None,
                    [t.nbytes for t in stores], stores[0].buffer if stores else None,
                    step.compute_cycles + step.bank_stall_cycles, j == last))
                layer.compute_cycles += step.compute_cycles
                layer.stall_cycles["bank_conflict"] += step.bank_stall_cycles
            if lm.steps:
                self.last_step_of[lm.index] = len(plans) - 1
        return plans

    def _issue(self, sizes: list[int], records: list[TransferRecord]) -> None:
        issue = self.memory.issue
        for nbytes in sizes:
            records.append(issue(nbytes))

    def loader(self):
        computed, loaded = self.computed, self.loaded
        for s, plan in enumerate(self.plans):
            if not plan.load_depth:
                loaded[s].succeed()
                continue
            if s >= plan.load_depth:
                yield computed[s - plan.load_depth]
            self.load_records[s] = records = []
            self._issue(plan.loads, records)
            if plan.gate is not None:
                yield self.layer_written[plan.gate]
                self.gate_records[s] = self.store_records[self.last_step_of[plan.gate]]
            self._issue(plan.ifmap_loads, records)
            self._fire_at(self.memory.arrival(records), loaded[s])

    @staticmethod
    def _fire_at(timeout: simpy.Event, event: simpy.Event) -> None:
        timeout.callbacks.append(lambda _: event.succeed())

    def array(self):
        env, charge = self.env, self._charge
        storing: dict[str, list[int]] = {}  # buffer -> the steps that stored from it, in order
        for s, plan in enumerate(self.plans):
            ready = env.now
            yield self.loaded[s]
            if env.now > ready:
                charge(plan.layer, ready, env.now, self.load_records[s], self.gate_records.get(s))
            if plan.store_buffer is not None:
                # The slot this step's outputs go to is the one the depth-th storing step before
                # it wrote (steps without stores leave the slots as they were).
                before = storing.setdefault(plan.store_buffer, [])
                depth = self.slot[plan.store_buffer]
                if len(before) >= depth:
                    k = before[-depth]
                    ready = env.now
                    yield self.stored[k]
                    if env.now > ready:
                        charge(plan.layer, ready, env.now, self.store_records[k])
                before.append(s)
            if plan.busy:
                yield env.timeout(plan.busy)
            self.compute_end[s] = env.now
            self.computed[s].succeed()

    def writer(self):
        for s, plan in enumerate(self.plans):
            yield self.computed[s]
            if not (plan.stores or plan.last_of_layer):
                continue  # nothing to write, and no one waits for it
            self.store_records[s] = records = []
            self._issue(plan.stores, records)
            done = self.memory.arrival(records)
            if plan.stores:
                self._fire_at(done, self.stored[s])
            if plan.last_of_layer:
                self._fire_at(done, self.layer_written[plan.layer.index])

    def _charge(self, layer: LayerTiming, start: int, end: int, records, gate=None) -> None:
        """Charge the wait [start, end) to the cause of the last transfer to arrive; the part
        before it was issued, to the transfers that gated its issue (`gate`: the earlier layer's
        stores that a layer's ifmap loads wait for)."""
        if end <= start:
            return
        if not records:
            layer.stall_cycles["dram_bandwidth"] += end - start
            return
        rec = records[0]
        for r in records:
            if r.arrived > rec.arrived:
                rec = r
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
        return Timing(self.layers, total)


def simulate_timing(mapping: Mapping) -> Timing:
    """Cycles, compute cycles and stalls by cause of every layer of a mapping."""
    with without_cycle_collection():
        return _Machine(mapping).run()
