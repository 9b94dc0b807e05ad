"""One simulation: load, map, time (and execute, when given inputs), then gather the Result."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

import numpy as np

import accelsim
from accelsim.energy import EnergyReport, account, account_toggles, count_toggles
from accelsim.errors import InputError
from accelsim.hardware import Hardware, load_hardware
from accelsim.inject import golden
from accelsim.inject import trials as fault_trials
from accelsim.mapping import Mapping, plan, utilisation
from accelsim.progress import no_progress
from accelsim.result import LayerRecord, Result, Totals
from accelsim.sim import STALL_CAUSES, Timing, simulate_timing
from accelsim.workload import load_workload
from accelsim.workload.ir import Graph


def hardware_sha256(hw: Hardware) -> str:
    """The content hash of a validated hardware description (every field, overrides applied):
    equal hashes, same machine."""
    return hashlib.sha256(hw.model_dump_json().encode()).hexdigest()


def _sha256_of_file(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def batch_size(graph: Graph) -> int:
    """Inferences in one run: the leading dimension of the first input (1 for 1-D inputs).

    A SCALE-Sim topology is one inference: its layers' inputs are (1, C, H, W) or GEMM (M, K),
    whose M is not a batch.
    """
    if graph.source.lower().endswith(".csv"):
        return 1
    shape = graph.tensors[graph.inputs[0]].shape if graph.inputs else ()
    return int(shape[0]) if len(shape) > 1 else 1


def gather(mapping: Mapping, timing: Timing, energy: EnergyReport, seed: int = 0,
           toggles: MappingABC[int, Any] | None = None) -> Result:
    """The Result of a mapping, its timing and its energy (the report phase, for notebooks);
    toggles: the ToggleCounts by layer index when energy.model is toggles."""
    hw, graph = mapping.hardware, mapping.graph
    seconds_per_cycle = 1e-6 / hw.clock_mhz
    layers = []
    for lm, lt, le in zip(mapping.layers, timing.layers, energy.layers, strict=True):
        layers.append(LayerRecord(
            index=lm.index, name=lm.name, kind=lm.kind, macs=lm.macs, folds=len(lm.folds),
            start_cycle=lt.start_cycle, cycles=lt.cycles, compute_cycles=lt.compute_cycles,
            stall_cycles=lt.total_stall_cycles, stall_breakdown=dict(lt.stall_cycles),
            utilisation=utilisation(lm, hw, lt.cycles),
            sram_reads=dict(sorted(lm.sram_reads.items())),
            sram_writes=dict(sorted(lm.sram_writes.items())),
            dram_read_bytes=lt.dram_read_bytes, dram_write_bytes=lt.dram_write_bytes,
            latency_s=lt.cycles * seconds_per_cycle,
            energy_pj=le.total_pj, energy_breakdown_pj=dict(le.breakdown_pj),
            toggles=(toggles[lm.index].as_dict()
                     if toggles is not None and lm.index in toggles else None),
        ))
    stalls = dict.fromkeys(STALL_CAUSES, 0)
    reads: dict[str, int] = {}
    writes: dict[str, int] = {}
    for r in layers:
        _add(stalls, r.stall_breakdown)
        _add(reads, r.sram_reads)
        _add(writes, r.sram_writes)
    total_macs = sum(r.macs for r in layers)
    pe = hw.pe_array
    totals = Totals(
        cycles=timing.cycles,
        compute_cycles=sum(r.compute_cycles for r in layers),
        stall_cycles=sum(stalls.values()),
        stall_breakdown=stalls,
        macs=total_macs,
        utilisation=total_macs / (timing.cycles * pe.rows * pe.cols) if timing.cycles else 0.0,
        sram_reads=dict(sorted(reads.items())),
        sram_writes=dict(sorted(writes.items())),
        dram_read_bytes=sum(r.dram_read_bytes for r in layers),
        dram_write_bytes=sum(r.dram_write_bytes for r in layers),
        latency_s=timing.cycles * seconds_per_cycle,
        energy_pj=energy.total_pj,
        energy_breakdown_pj=energy.breakdown_pj,
        energy_per_inference_pj=energy.total_pj / batch_size(graph),
        average_power_mw=(energy.total_pj * 1e-9 / (timing.cycles * seconds_per_cycle)
                          if timing.cycles else 0.0),
        toggles=None if toggles is None else {
            key: sum(r.toggles[key] for r in layers if r.toggles is not None)
            for key in ("multiplier_input", "accumulator")
        },
    )
    return Result(
        hardware={
            "name": hw.name, "clock_mhz": hw.clock_mhz, "rows": pe.rows, "cols": pe.cols,
            "dataflow": pe.dataflow,
            "sha256": hardware_sha256(hw),
            "dram_bytes_per_cycle": hw.dram.bandwidth_bytes_per_cycle,
        },
        workload={"name": graph.name, "source": graph.source,
                  "sha256": _sha256_of_file(graph.source) if graph.source else None},
        seed=seed, totals=totals, layers=layers, accelsim_version=accelsim.__version__,
    )


def simulate(
    hw: Hardware | str | Path | MappingABC[str, Any],
    graph: Graph | str | Path,
    inputs: MappingABC[str, np.ndarray] | None = None,
    seed: int = 0,
    trials: int = 1,
    labels: np.ndarray | None = None,
    progress: Callable[..., None] | None = None,
) -> Result:
    """Simulate `graph` on `hw`: cycles, stalls and energy per layer; with inputs, the outputs
    and their corruption by the buffers' faults over `trials` seeds (seed, seed + 1, ...),
    with accuracy when labels are given.

    progress(done, total, what) is told each phase as it starts (what: mapping, timing,
    executing, counting toggles, fault trials; total None when not counted), then
    progress(done, total) after each fault trial: accelsim.progress.progress_bar's update.

    energy.model toggles needs the inputs: it executes the graph and charges the MACs by the bit
    toggles of the executed operands and partial sums (accelsim/energy.py, kernels/toggles.py).
    """
    if not isinstance(hw, Hardware):
        hw = load_hardware(hw)
    if not isinstance(graph, Graph):
        graph = load_workload(graph, seed=seed)
    toggle_model = hw.energy.model == "toggles"
    if toggle_model and inputs is None:
        raise InputError("energy.model toggles needs inputs: it counts the toggles of the data "
                         "the numerics run on (drop --timing-only, or set energy.model=table)")
    if trials < 1:
        raise InputError(f"trials must be at least 1, got {trials}")
    phase = progress or no_progress
    phase(0, None, "mapping")
    mapping = plan(hw, graph)
    phase(0, None, "timing")
    timing = simulate_timing(mapping)
    env = None
    if inputs is not None:
        phase(0, None, "executing")
        # One fault-free run serves the outputs, the toggle counts and the faults' reference.
        env = golden(mapping, inputs)
    if toggle_model:
        phase(0, None, "counting toggles")
        toggles = count_toggles(mapping, env)
        result = gather(mapping, timing, account_toggles(mapping, timing, toggles), seed,
                        toggles)
    else:
        result = gather(mapping, timing, account(mapping, timing), seed)
    if env is not None:
        result.outputs = {name: env[name] for name in graph.outputs}
        phase(0, trials, "fault trials")
        report = fault_trials(mapping, inputs, range(seed, seed + trials), labels, progress,
                              reference=env)
        result.corruption = json_safe(report)
        result.not_modelled = []
    return result


def load_inputs(graph: Graph, path: str | None,
                seed: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Inputs (and labels, if any) from an .npz named after the graph's inputs, or seeded random
    data of their type (no labels)."""
    if path:
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read inputs ({e})") from None
        labels = arrays.pop("labels", None)
        return arrays, labels
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.type.kind == "float":
            inputs[name] = rng.random(t.shape, dtype=np.float32)
        else:
            inputs[name] = rng.integers(t.type.min, t.type.max + 1, t.shape).astype(t.type.storage)
    return inputs, None


def run_inputs(hw: Hardware, graph: Graph, path: str | None, seed: int, timing_only: bool = False
               ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    """What `run` and `sweep` simulate on: load_inputs' arrays and labels, or (None, None) to
    time the graph only. A SCALE-Sim topology carries shapes only: its seeded weights compute
    nothing real, so its numerics run only when the toggle energy model asks for data."""
    csv = str(graph.source).lower().endswith(".csv")
    if timing_only or (csv and hw.energy.model != "toggles"):
        return None, None
    return load_inputs(graph, path, seed)


def json_safe(value: Any) -> Any:
    """Plain JSON data: numpy scalars to Python, non-finite floats (inf SNR: no error) to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
