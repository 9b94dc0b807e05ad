"""The Result of a simulation: totals and one record per layer, as plain data and JSON.

The JSON form is versioned (`schema_version`); a field is added with a new version, never
changed in meaning. Figures a model does not compute yet are listed in `not_modelled` and absent
from the records, never filled with a placeholder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 3  # 2: energy; 3: toggles, corruption


@dataclass
class LayerRecord:
    """One layer's figures. cycles = compute_cycles + stall_cycles."""

    index: int
    name: str
    kind: str  # compute (PE array) or vector (vector unit)
    macs: int
    folds: int
    start_cycle: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    stall_breakdown: dict[str, int]
    utilisation: float
    sram_reads: dict[str, int]  # bank-width accesses per buffer
    sram_writes: dict[str, int]
    dram_read_bytes: int
    dram_write_bytes: int
    latency_s: float
    energy_pj: float
    energy_breakdown_pj: dict[str, float]  # component -> pJ (see accelsim/energy.py)
    # energy.model toggles, compute layers: bit toggles {multiplier_input, accumulator}
    toggles: dict[str, int] | None = None


@dataclass
class Totals:
    cycles: int
    compute_cycles: int
    stall_cycles: int
    stall_breakdown: dict[str, int]
    macs: int
    utilisation: float
    sram_reads: dict[str, int]
    sram_writes: dict[str, int]
    dram_read_bytes: int
    dram_write_bytes: int
    latency_s: float
    energy_pj: float
    energy_breakdown_pj: dict[str, float]
    energy_per_inference_pj: float  # energy_pj / batch size
    average_power_mw: float  # energy_pj / latency_s
    toggles: dict[str, int] | None = None  # energy.model toggles: the layers' toggles summed


@dataclass
class Result:
    hardware: dict[str, Any]  # name, clock_mhz, array, dataflow, sha256
    workload: dict[str, Any]  # name, source, sha256
    seed: int
    totals: Totals
    layers: list[LayerRecord]
    accelsim_version: str
    not_modelled: list[str] = field(default_factory=lambda: ["corruption"])
    # With inputs: corruption against the golden run, Monte Carlo over trials (accelsim/inject.py
    # `trials`: per metric mean, std, ci95; per layer; per trial). null SNR/spread: no error.
    corruption: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    # The graph's outputs when the simulation ran on inputs (arrays; not part of the JSON).
    outputs: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(dataclasses.replace(self, outputs=None))
        del data["outputs"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"Result schema_version {data.get('schema_version')} is not "
                             f"{SCHEMA_VERSION}")
        fields = dict(data)
        fields["totals"] = Totals(**data["totals"])
        fields["layers"] = [LayerRecord(**r) for r in data["layers"]]
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))
