"""Energy accounting: the sum over events of count x energy per event, by layer and component.

Every count comes from the mapping (MACs, SRAM accesses, vector-unit ops) or the timing (DRAM
and interconnect bytes, the time leakage runs for), so energy and cycles never disagree about
how much was moved. The energies per event are the hardware file's tables (accelsim/hardware.py
gives each default's source), scaled to the technology node and, for SRAM, to the supply voltage
in force for the layer:

    SRAM dynamic energy  x (V / Vnom)^2          (charge C V^2 per access)
    SRAM leakage power   x (V / Vnom)^energy.sram.leakage_voltage_exponent

Components (keys of a breakdown): mac, register_file, sram.<buffer> (dynamic, per buffer),
sram_leakage, dram, interconnect, vector. Idle PEs of a partial fold are taken as clock-gated
(no energy); DRAM energy is per bit at the interface and is not scaled with the logic node.

energy.model: toggles replaces the mac component by a charge per bit toggle of the PE registers
(accelsim/kernels/toggles.py counts them on the executed data in the mapping's order); every other
component stays the table's. See toggle_energy_per_bit_pj for the calibration.

Signed against unsigned accumulation (PANN's observation): count_toggles(..., "split") counts the
same products summed by sign into two unsigned registers (positive products in one, magnitudes of
negative ones in the other; the output is their difference, taken once), PANN's alternative to a
signed accumulator, rather than weights offset to be non-negative, which changes the products and
needs a correction term. The comparison means most in the output-stationary dataflow, where a
PE's accumulator runs over the reduction as in PANN's MAC: on 16 test digits the signed register
toggles 1.28x as much in the int8 digits CNN and 1.93x in the binary one (ws: 0.96x and 2.5x,
is: 1.31x and 3.0x; in ws and is the psum registers hold another output's sum every cycle, and the
split's second register can cost more than the sign flips it saves). tests/test_toggles.py
measures and prints these ratios.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from accelsim.hardware import PRECISION_BITS, Hardware

if TYPE_CHECKING:
    from collections.abc import Mapping as MappingABC

    import numpy as np

    from accelsim.kernels.toggles import ToggleCounts
    from accelsim.mapping import LayerMapping, Mapping
    from accelsim.sim import Timing

# Vector-unit operations per lane op of each operator: (adds, compares, multiplies).
VECTOR_RECIPES: dict[str, tuple[int, int, int]] = {
    "Requantize": (1, 2, 1),  # scale, add the zero point, clamp to the range
    "QuantizeLinear": (1, 2, 1),
    "DequantizeLinear": (1, 0, 1),  # subtract the zero point, scale
    "MaxPool": (0, 1, 0),
    "AveragePool": (1, 0, 0),  # window sums; the division is in the output requantization
    "GlobalAveragePool": (1, 0, 0),
    "Add": (1, 2, 2),  # rescale both operands, add, clamp
    "Mul": (0, 2, 2),
    "Relu": (0, 1, 0),
    "Clip": (0, 2, 0),
    "Sign": (0, 1, 0),
    "Threshold": (0, 1, 0),
    "AffineQuant": (1, 2, 1),
}
DEFAULT_RECIPE = (1, 0, 0)


@dataclass
class LayerEnergy:
    name: str
    breakdown_pj: dict[str, float] = field(default_factory=dict)

    @property
    def total_pj(self) -> float:
        return sum(self.breakdown_pj.values())


@dataclass
class EnergyReport:
    layers: list[LayerEnergy]

    @property
    def breakdown_pj(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers:
            for k, v in layer.breakdown_pj.items():
                out[k] = out.get(k, 0.0) + v
        return out

    @property
    def total_pj(self) -> float:
        return sum(layer.total_pj for layer in self.layers)


def voltage_scale(hw: Hardware, buffer: str, layer: LayerMapping) -> float:
    """V / Vnom of a buffer during a layer (per-layer voltages by name, then by compute index)."""
    buf = hw.buffers[buffer]
    return buf.voltage_for(layer.name, layer.compute_index) / buf.nominal_voltage_v


def mac_energy_pj(hw: Hardware, layer: LayerMapping) -> float:
    """MACs x (multiplier of the layer's PE precision + adder of the accumulator's width)."""
    if layer.kind != "compute":
        return 0.0
    per_mac = hw.energy.mac_pj(layer.precision, hw.pe_array.accumulator_bits)
    return layer.macs * per_mac * hw.energy.node_scale


def register_file_bits_per_mac(layer: LayerMapping) -> int:
    """PE register traffic of one MAC: the passing operand and the kept operand are read once,
    the accumulator is read and written."""
    return layer.bits["ifmap"] + layer.bits["weights"] + 2 * layer.bits["psum"]


def register_file_energy_pj(hw: Hardware, layer: LayerMapping) -> float:
    if layer.kind != "compute":
        return 0.0
    bits = layer.macs * register_file_bits_per_mac(layer)
    return bits * hw.energy.register_file_pj_per_bit * hw.energy.node_scale


def sram_dynamic_energy_pj(hw: Hardware, buffer: str, reads: int, writes: int,
                           v_scale: float) -> float:
    """Bank-width reads and writes of a buffer at V = v_scale x Vnom: the one SRAM energy rule.

    With SECDED every access also reads or writes the word's check bits (ecc_cell_factor).
    """
    per_read = hw.sram_energy_pj(buffer, "read")
    per_write = hw.sram_energy_pj(buffer, "write")
    cells = hw.buffers[buffer].ecc_cell_factor
    return (reads * per_read + writes * per_write) * cells * v_scale**2 * hw.energy.node_scale


def sram_leakage_energy_pj(hw: Hardware, buffer: str, cycles: int, v_scale: float) -> float:
    """Leakage of a buffer (and its ECC check cells) over `cycles` at the clock (1 uW for 1 s
    = 1e6 pJ)."""
    seconds = cycles / (hw.clock_mhz * 1e6)
    power_uw = (hw.sram_leakage_uw(buffer) * hw.buffers[buffer].ecc_cell_factor
                * v_scale ** hw.energy.sram.leakage_voltage_exponent)
    return power_uw * seconds * 1e6 * hw.energy.node_scale


def dram_energy_pj(hw: Hardware, nbytes: int) -> float:
    return nbytes * 8 * hw.dram.energy_pj_per_bit


def interconnect_energy_pj(hw: Hardware, nbytes: int) -> float:
    link = hw.interconnect
    return nbytes * 8 * link.hops * link.energy_pj_per_bit_per_hop * hw.energy.node_scale


def vector_energy_pj(hw: Hardware, work: dict[str, int]) -> float:
    """Lane ops by operator x the adds, compares and multiplies each one takes."""
    e = hw.energy.vector_op
    total = 0.0
    for op, count in work.items():
        adds, compares, mults = VECTOR_RECIPES.get(op, DEFAULT_RECIPE)
        total += count * (adds * e.add_pj + compares * e.compare_pj + mults * e.multiply_pj)
    return total * hw.energy.node_scale


def layer_energy(hw: Hardware, layer: LayerMapping, cycles: int, dram_bytes: int) -> LayerEnergy:
    """One layer's energy by component, from its mapping counts and its timing."""
    out = LayerEnergy(layer.name)
    b = out.breakdown_pj
    b["mac"] = mac_energy_pj(hw, layer)
    b["register_file"] = register_file_energy_pj(hw, layer)
    for name in sorted(hw.buffers):
        b[f"sram.{name}"] = sram_dynamic_energy_pj(
            hw, name, layer.sram_reads.get(name, 0), layer.sram_writes.get(name, 0),
            voltage_scale(hw, name, layer))
    b["sram_leakage"] = sum(
        sram_leakage_energy_pj(hw, name, cycles, voltage_scale(hw, name, layer))
        for name in sorted(hw.buffers)
    )
    b["dram"] = dram_energy_pj(hw, dram_bytes)
    b["interconnect"] = interconnect_energy_pj(hw, dram_bytes)
    b["vector"] = vector_energy_pj(hw, layer.vector_work)
    return out


def account(mapping: Mapping, timing: Timing) -> EnergyReport:
    """Energy of every layer of a timed mapping (the table model)."""
    hw = mapping.hardware
    return EnergyReport([
        layer_energy(hw, lm, lt.cycles, lt.dram_read_bytes + lt.dram_write_bytes)
        for lm, lt in zip(mapping.layers, timing.layers, strict=True)
    ])


# ---------------------------------------------------------------------------------------------
# The data-dependent model (energy.model: toggles)


def toggle_energy_per_bit_pj(hw: Hardware, precision: str) -> tuple[float, float]:
    """(pJ per multiplier-input bit toggle, pJ per accumulator bit toggle) at the tables' node.

    Calibrated so that operands whose bits are independent and uniform cost, on average, what the
    table charges per MAC (PANN's view: dynamic power follows switching activity):
    - a b-bit multiplier has two b-bit input registers; with uniform random operands each bit
      toggles with probability 1/2 per MAC, so b toggles per MAC on average:
      E per input-bit toggle = multiplier_pj[precision] / b;
    - the adder writes an accumulator_bits register; if each bit toggles with probability 1/2,
      accumulator_bits / 2 toggles per MAC cost the table's adder_pj_per_bit x accumulator_bits:
      E per accumulator-bit toggle = 2 x adder_pj_per_bit;
    - an xnor-popcount PE has two 1-bit inputs, 2 x 1/2 = 1 toggle per MAC on random bits:
      E per input toggle = xnor_popcount_pj. Its popcount adder is inside that table entry (the
      table charges no separate adder for binary layers), so binary accumulator toggles are
      counted and reported but not charged.
    Real streams differ from uniform ones, which is the point: a stationary operand (the weight
    of ws, the input of is) toggles once per fold, constant or slowly varying activations toggle
    little, and a signed partial sum that crosses zero flips all its sign-extension bits at once.
    """
    mac = hw.energy.mac
    if precision == "binary":
        return mac.xnor_popcount_pj, 0.0
    return mac.multiplier_pj[precision] / PRECISION_BITS[precision], 2 * mac.adder_pj_per_bit


def toggle_mac_energy_pj(hw: Hardware, layer: LayerMapping, toggles: ToggleCounts | None) -> float:
    """The layer's MAC energy from its register toggles (toggle_energy_per_bit_pj), node-scaled."""
    if layer.kind != "compute" or toggles is None:
        return 0.0
    per_input, per_acc = toggle_energy_per_bit_pj(hw, layer.precision)
    energy = toggles.multiplier_input * per_input + toggles.accumulator * per_acc
    return energy * hw.energy.node_scale


def toggle_layer_energy(hw: Hardware, layer: LayerMapping, cycles: int, dram_bytes: int,
                        toggles: ToggleCounts | None) -> LayerEnergy:
    """layer_energy with the mac component charged per toggle; the rest as the table model."""
    out = layer_energy(hw, layer, cycles, dram_bytes)
    out.breakdown_pj["mac"] = toggle_mac_energy_pj(hw, layer, toggles)
    return out


def count_toggles(mapping: Mapping, env: MappingABC[str, np.ndarray],
                  accumulation: str = "signed") -> dict[int, ToggleCounts]:
    """Toggle counts of every compute layer (by layer index) on the tensors of an execution
    (`env`: execute(..., keep_intermediates=True)). accumulation="split" counts PANN's two
    unsigned accumulators instead of the machine's signed one (accelsim/kernels/toggles.py)."""
    from accelsim.kernels.toggles import layer_toggles

    hw, graph = mapping.hardware, mapping.graph
    return {lm.index: layer_toggles(hw, lm, graph, env, accumulation)
            for lm in mapping.layers if lm.kind == "compute"}


def account_toggles(mapping: Mapping, timing: Timing,
                    toggles: MappingABC[int, ToggleCounts]) -> EnergyReport:
    """Energy of every layer of a timed mapping with the MACs charged per toggle."""
    hw = mapping.hardware
    return EnergyReport([
        toggle_layer_energy(hw, lm, lt.cycles, lt.dram_read_bytes + lt.dram_write_bytes,
                            toggles.get(lm.index))
        for lm, lt in zip(mapping.layers, timing.layers, strict=True)
    ])
