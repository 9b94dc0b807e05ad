"""The discrete-event timing model (simpy): engine, SRAM banks, DRAM and interconnect."""

from accelsim.sim.engine import STALL_CAUSES, LayerTiming, Timing, simulate_timing

__all__ = ["STALL_CAUSES", "LayerTiming", "Timing", "simulate_timing"]
