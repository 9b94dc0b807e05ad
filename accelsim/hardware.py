"""The hardware description: strict pydantic models of the machine, from YAML or SCALE-Sim .cfg.

Every other part of accelsim reads the machine from a `Hardware` object, so this module is the one
place where units, defaults and their published sources live. Units are in the field names.
Defaults follow Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm) with the bit-width fits
of google/qkeras (qtools/settings.py), and the 14 nm SRAM bit-error data of Chandramoorthy et al.,
HPCA 2019 (see shared/reference/ in the design notes).
"""

from __future__ import annotations

import configparser
import difflib
import itertools
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from accelsim.errors import HardwareError

Precision = Literal["binary", "int2", "int4", "int8", "int16"]
PRECISION_BITS: dict[str, int] = {"binary": 1, "int2": 2, "int4": 4, "int8": 8, "int16": 16}
ROLES = ("ifmap", "weights", "ofmap")
BUFFER_NAMES = (*ROLES, "unified")

# Measured BER of 14 nm 6T SRAM against V/Vmin: Chandramoorthy et al., HPCA 2019, as tabulated by
# Stutz et al., MLSys 2021 (shared/reference/sram_ber_14nm.csv). Ascending voltage.
SRAM_BER_14NM: tuple[tuple[float, float], ...] = (
    (0.750, 2.056e-1),
    (0.792, 5.573e-2),
    (0.833, 1.115e-2),
    (0.875, 1.29e-3),
    (0.917, 6.87e-5),
    (0.958, 1.9e-6),
    (1.000, 0.0),
)


def qkeras_mult_pj(bits: int) -> float:
    """Integer multiplier energy at 45 nm: qkeras fit 0.0029948*b^2 + 0.0010417*b (8 b: 0.2 pJ)."""
    return 0.0029948 * bits**2 + 0.0010417 * bits


def qkeras_add_pj(bits: int) -> float:
    """Integer adder energy at 45 nm: qkeras fit 0.003125*b pJ (Horowitz: 32 bit, 0.1 pJ)."""
    return 0.003125 * bits


class _FieldError(ValueError):
    """A model-level check that blames one field, so the message can name it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class _Strict(BaseModel):
    """Unknown keys, wrong types and non-finite numbers are errors, not guesses."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Compute


class PEArray(_Strict):
    """The systolic array: shape, dataflow, the operand precisions it supports, its accumulator."""

    rows: PositiveInt = 16
    cols: PositiveInt = 16
    dataflow: Literal["os", "ws", "is"] = "ws"
    precisions: list[Precision] = Field(default_factory=lambda: ["int8"], min_length=1)
    # The widths the kernels execute (MIN_BITS, MAX_BITS of accelsim/kernels/accumulator.py).
    accumulator_bits: Annotated[int, Field(ge=8, le=62)] = 32
    accumulator_overflow: Literal["wrap", "saturate"] = "wrap"

    @model_validator(mode="after")
    def _unique_precisions(self) -> PEArray:
        if len(set(self.precisions)) != len(self.precisions):
            raise _FieldError("precisions", f"listed twice: {self.precisions}")
        return self


class VectorUnit(_Strict):
    """Times the non-compute layers (pooling, add, requantize, activations) beside the array."""

    lanes: PositiveInt = 16
    cycles_per_op: PositiveInt = 1  # each lane finishes one elementwise op every this many cycles
    latency_cycles: NonNegativeInt = 2  # pipeline fill, paid once per layer


# ---------------------------------------------------------------------------------------------
# SRAM bit errors


class Sram14nmCurve(_Strict):
    """The bundled measured 14 nm table (SRAM_BER_14NM), interpolated in log space by faults.py."""

    kind: Literal["sram_14nm"] = "sram_14nm"
    extrapolation: Literal["clamp", "error"] = "clamp"  # below 0.75 Vmin: hold 20.6%, or refuse

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(SRAM_BER_14NM)


class ErfcCurve(_Strict):
    """p(v) = 0.5*erfc((v - mu)/(sqrt(2)*sigma)), v = V/Vmin; defaults fit the 14 nm data ~20%."""

    kind: Literal["erfc"]
    mu: PositiveFloat = 0.709
    sigma: PositiveFloat = 0.0542

    def ber(self, v_over_vmin: float) -> float:
        return 0.5 * math.erfc((v_over_vmin - self.mu) / (math.sqrt(2.0) * self.sigma))


class TableCurve(_Strict):
    """A user table of [v_over_vmin, ber] points; outside its range, `extrapolation` decides."""

    kind: Literal["table"]
    points: list[Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(min_length=2)
    extrapolation: Literal["clamp", "error"] = "clamp"

    @model_validator(mode="after")
    def _check_points(self) -> TableCurve:
        for i, (v, ber) in enumerate(self.points):
            if v <= 0:
                raise _FieldError(f"points.{i}", f"v_over_vmin must be > 0, got {v}")
            if not 0.0 <= ber <= 0.5:
                raise _FieldError(f"points.{i}", f"BER must be within [0, 0.5], got {ber}")
        ordered = sorted(self.points)
        for (v0, b0), (v1, b1) in itertools.pairwise(ordered):
            if v0 == v1:
                raise _FieldError("points", f"v_over_vmin {v0} appears twice")
            if b1 > b0:
                raise _FieldError(
                    "points",
                    f"BER must not rise with voltage: {b0} at {v0} but {b1} at {v1}",
                )
        self.points = ordered
        return self


BerCurve = Annotated[Sram14nmCurve | ErfcCurve | TableCurve, Field(discriminator="kind")]


class ErrorModel(_Strict):
    """How an under-volted buffer corrupts bits. Seeds are run arguments, never part of hardware."""

    curve: BerCurve = Field(default_factory=Sram14nmCurve)
    mode: Literal["persistent", "transient"] = "persistent"
    effect: Literal["flip", "stuck_at_0", "stuck_at_1"] = "flip"
    # Of the bit errors of `effect: flip`, the fraction that turn a stored 0 into 1 (rest 1 -> 0).
    fraction_0_to_1: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


# ---------------------------------------------------------------------------------------------
# Memories and wires


class Buffer(_Strict):
    """One on-chip SRAM: geometry, timing, supply voltage and how its cells fail at low voltage."""

    size_kib: PositiveFloat = 64
    banks: PositiveInt = 1
    bank_width_bits: PositiveInt = 64
    ports: PositiveInt = 1
    read_latency_cycles: NonNegativeInt = 1
    write_latency_cycles: NonNegativeInt = 1
    double_buffered: bool = True  # tiles fill half the buffer; false: loads wait for compute
    # interleaved: consecutive bank-width words go to consecutive banks, so one cycle's operands
    # spread over the banks; contiguous: each bank holds one address range, so they collide.
    bank_mapping: Literal["interleaved", "contiguous"] = "interleaved"
    voltage_v: PositiveFloat = 0.9  # Horowitz 2014's ~0.9 V: the tables as they are
    nominal_voltage_v: PositiveFloat = 0.9  # energy tables hold at this voltage (Horowitz: ~0.9 V)
    vmin_v: PositiveFloat | None = None  # lowest error-free voltage; None: the nominal voltage
    # Per-layer supply: keyed by layer name, or by the 0-based index among the compute (Conv,
    # MatMul) layers in network order, so 0 is the first convolution whatever precedes it.
    layer_voltage_v: dict[str | int, PositiveFloat] = Field(default_factory=dict)
    error_model: ErrorModel = Field(default_factory=ErrorModel)
    # SECDED over each bank word; its check bits are extra cells beside size_kib of data.
    ecc: Literal["none", "secded"] = "none"
    # Energy per bank-width access at nominal voltage; None: the SRAM size fit in `energy.sram`.
    read_energy_pj: NonNegativeFloat | None = None
    write_energy_pj: NonNegativeFloat | None = None
    leakage_uw: NonNegativeFloat | None = None  # None: energy.sram.leakage_uw_per_kib x size

    @model_validator(mode="after")
    def _check(self) -> Buffer:
        bits = self.size_kib * 1024 * 8
        row_bits = self.banks * self.bank_width_bits
        if bits < row_bits:
            raise _FieldError(
                "size_kib",
                f"{self.size_kib} KiB is smaller than one row across all banks "
                f"({self.banks} banks x {self.bank_width_bits} bits = {row_bits / 8:g} B)",
            )
        if bits != int(bits):
            raise _FieldError("size_kib", f"{self.size_kib} KiB is not a whole number of bits")
        for key in self.layer_voltage_v:
            if isinstance(key, int) and key < 0:
                raise _FieldError(f"layer_voltage_v.{key}", "layer index must be >= 0")
        return self

    @property
    def size_bytes(self) -> int:
        return int(self.size_kib * 1024)

    @property
    def bank_size_bytes(self) -> float:
        return self.size_kib * 1024 / self.banks

    @property
    def rows_per_bank(self) -> int:
        """Addressable words of bank_width_bits in each bank (a partial last row is unusable)."""
        return int(self.size_kib * 1024 * 8) // (self.banks * self.bank_width_bits)

    @property
    def resolved_vmin_v(self) -> float:
        return self.nominal_voltage_v if self.vmin_v is None else self.vmin_v

    @property
    def ecc_check_bits(self) -> int:
        """SECDED check bits per bank word: Hamming r with 2^r >= k + r + 1, plus overall parity."""
        if self.ecc == "none":
            return 0
        r = 1
        while 2**r < self.bank_width_bits + r + 1:
            r += 1
        return r + 1

    @property
    def ecc_cell_factor(self) -> float:
        """Cells per data cell: SECDED's check bits are extra cells beside size_kib of data, read,
        written and leaking with every word (72/64 for 64-bit words)."""
        return (self.bank_width_bits + self.ecc_check_bits) / self.bank_width_bits

    def voltage_for(self, layer_name: str | None = None, layer_index: int | None = None) -> float:
        """Supply voltage in force for a layer: by name first, then by index, else voltage_v."""
        if layer_name is not None and layer_name in self.layer_voltage_v:
            return self.layer_voltage_v[layer_name]
        if layer_index is not None and layer_index in self.layer_voltage_v:
            return self.layer_voltage_v[layer_index]
        return self.voltage_v


class DRAM(_Strict):
    """Off-chip memory. bandwidth_bytes_per_cycle null means unlimited (SCALE-Sim's CALC mode)."""

    bandwidth_bytes_per_cycle: PositiveFloat | None = 16
    latency_cycles: NonNegativeInt = 100
    burst_bytes: PositiveInt = 64
    energy_pj_per_bit: NonNegativeFloat = 20.3  # Horowitz 2014: 1.3-2.6 nJ / 64 b: 1300/64


class Interconnect(_Strict):
    """The shared link between DRAM, buffers and array. width_bits null means unlimited."""

    width_bits: PositiveInt | None = 256
    latency_cycles: NonNegativeInt = 1
    hops: PositiveInt = 1
    # assumption: a full-swing 45 nm wire, ~0.2 pF/mm at 0.9 V, is C V^2 = 0.16 pJ per 0->1
    # transition, so ~0.1 pJ per random bit per mm with its repeaters; a hop taken as ~1 mm.
    energy_pj_per_bit_per_hop: NonNegativeFloat = 0.1

    @property
    def bytes_per_cycle(self) -> float | None:
        return None if self.width_bits is None else self.width_bits / 8


# ---------------------------------------------------------------------------------------------
# Energy tables


def _fit_multipliers() -> dict[str, float]:
    return {p: qkeras_mult_pj(b) for p, b in PRECISION_BITS.items() if p != "binary"}


class MacEnergy(_Strict):
    """MAC = multiplier by operand precision + adder by accumulator bits; binary = xnor-popcount."""

    # qkeras fit of Horowitz 2014 (qkeras_mult_pj) at 2, 4, 8 and 16 bits; 8 bits: 0.2 pJ.
    multiplier_pj: dict[Literal["int2", "int4", "int8", "int16"], NonNegativeFloat] = Field(
        default_factory=_fit_multipliers
    )
    adder_pj_per_bit: NonNegativeFloat = 0.003125  # qkeras fit; Horowitz 32-bit add 0.1 pJ
    # One 1-bit MAC of xnor-popcount, taken as the qkeras fits' mult(1) + add(1) (the fits
    # extrapolated to one bit: an xnor for the product, one bit of popcount for the sum).
    xnor_popcount_pj: NonNegativeFloat = qkeras_mult_pj(1) + qkeras_add_pj(1)


class SramEnergy(_Strict):
    """Size fit of SRAM access energy, E64(S) = read_pj_64b_8kib * (S / 8 KiB)^size_exponent.

    S is the size of one bank, since an access wakes one bank; energy scales with width / 64 bits.
    """

    read_pj_64b_8kib: NonNegativeFloat = 10.2  # Horowitz 2014: 10 pJ (8 KB), 20 (32 KB), 100 (1 MB)
    size_exponent: NonNegativeFloat = 0.47  # the same fit to Horowitz 2014's three points
    write_over_read: NonNegativeFloat = 1.0  # assumption: a write swings the bit lines as a read
    # assumption: ~0.1 nA per 6T cell in a low-power 45 nm process x 8192 cells x 0.9 V is
    # ~1 uW per KiB; high-performance cells leak 10-100x more.
    leakage_uw_per_kib: NonNegativeFloat = 1.0
    # assumption: leakage power ~ V x I_leak, 1 holds the leakage current constant (first
    # order); DIBL makes the current fall with V too, so measured SRAMs save more (use 2-3).
    leakage_voltage_exponent: NonNegativeFloat = 1.0

    def access_pj(self, bank_size_bytes: float, width_bits: int) -> float:
        return (
            self.read_pj_64b_8kib
            * (bank_size_bytes / 8192) ** self.size_exponent
            * (width_bits / 64)
        )


class VectorOpEnergy(_Strict):
    """Energy of one vector-unit lane op by kind: pooling compares, adds, requantize multiplies."""

    add_pj: NonNegativeFloat = 0.1  # Horowitz 2014: 32-bit int add
    compare_pj: NonNegativeFloat = 0.1  # assumption: a compare is a 32-bit subtract (add)
    multiply_pj: NonNegativeFloat = 3.1  # Horowitz 2014: 32-bit int multiply


class Energy(_Strict):
    """Energy per event. Numbers are for `tables_node_nm`; scaled to `technology_node_nm`."""

    model: Literal["table", "toggles"] = "table"
    technology_node_nm: PositiveFloat = 45  # Horowitz 2014's node: the tables as they are
    tables_node_nm: PositiveFloat = 45  # Horowitz 2014 (and its qkeras fits) are for 45 nm
    # assumption: energy ~ C V^2 with C ~ feature size and V nearly flat since 45 nm, so energy
    # ~ (node ratio)^1; first order, optimistic at small nodes.
    node_scaling_exponent: NonNegativeFloat = 1.0
    mac: MacEnergy = Field(default_factory=MacEnergy)
    # Eyeriss (Chen et al., ISCA 2016): an RF access costs about one 16-bit MAC -> 0.83 pJ / 16 b.
    register_file_pj_per_bit: NonNegativeFloat = 0.052
    sram: SramEnergy = Field(default_factory=SramEnergy)
    vector_op: VectorOpEnergy = Field(default_factory=VectorOpEnergy)

    @property
    def node_scale(self) -> float:
        return (self.technology_node_nm / self.tables_node_nm) ** self.node_scaling_exponent

    def mac_pj(self, precision: str, accumulator_bits: int) -> float:
        """One MAC at the tables' node (multiply the result by node_scale)."""
        if precision == "binary":
            return self.mac.xnor_popcount_pj
        return self.mac.multiplier_pj[precision] + self.mac.adder_pj_per_bit * accumulator_bits


# ---------------------------------------------------------------------------------------------
# SCALE-Sim provenance


class ScaleSimOrigin(_Strict):
    """What a SCALE-Sim .cfg said that accelsim has no field for; the compatibility path needs it.

    Present only when the description came from a .cfg (or a YAML converted from one).
    """

    run_name: str = "scale_run"
    interface_bandwidth: Literal["CALC", "USER"] = "CALC"
    bandwidth_words_per_cycle: list[PositiveInt] = Field(default_factory=list)
    word_size_bytes: PositiveInt = 1  # hard-coded to 1 in SCALE-Sim's memory system
    ifmap_offset: NonNegativeInt = 0
    filter_offset: NonNegativeInt = 10_000_000
    ofmap_offset: NonNegativeInt = 20_000_000
    memory_banks: PositiveInt = 1
    read_request_buffer: PositiveInt = 60
    write_request_buffer: PositiveInt = 60
    topology_csv: str | None = None


# ---------------------------------------------------------------------------------------------
# The machine


def _default_buffers() -> dict[str, Buffer]:
    return {role: Buffer() for role in ROLES}


class Hardware(_Strict):
    """A whole accelerator. Buffers are named ifmap, weights, ofmap; `unified` serves the rest."""

    name: str = "accelerator"
    description: str = ""
    clock_mhz: PositiveFloat = 1000
    pe_array: PEArray = Field(default_factory=PEArray)
    vector_unit: VectorUnit = Field(default_factory=VectorUnit)
    buffers: dict[str, Buffer] = Field(default_factory=_default_buffers, min_length=1)
    dram: DRAM = Field(default_factory=DRAM)
    interconnect: Interconnect = Field(default_factory=Interconnect)
    energy: Energy = Field(default_factory=Energy)
    scalesim: ScaleSimOrigin | None = None

    @model_validator(mode="after")
    def _check(self) -> Hardware:
        for name in self.buffers:
            if name not in BUFFER_NAMES:
                raise _FieldError(
                    f"buffers.{name}", f"unknown buffer name; use {', '.join(BUFFER_NAMES)}"
                )
        if "unified" in self.buffers and all(r in self.buffers for r in ROLES):
            raise _FieldError("buffers.unified", "serves no role: ifmap, weights and ofmap exist")
        missing = [r for r in ROLES if r not in self.buffers and "unified" not in self.buffers]
        if missing:
            raise _FieldError("buffers", f"no buffer holds {', '.join(missing)} (nor `unified`)")
        claimed = [p for p in self.pe_array.precisions if p != "binary"]
        absent = [p for p in claimed if p not in self.energy.mac.multiplier_pj]
        if absent:
            raise _FieldError(
                "energy.mac.multiplier_pj",
                f"no entry for {', '.join(absent)}, which pe_array.precisions supports",
            )
        return self

    @property
    def source_format(self) -> Literal["accelsim", "scalesim"]:
        """`scalesim` when SCALE-Sim's cycle model must be reproduced (see ScaleSimOrigin)."""
        return "accelsim" if self.scalesim is None else "scalesim"

    def buffer_for(self, role: str) -> str:
        """Name of the buffer holding a role (ifmap, weights or ofmap)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return role if role in self.buffers else "unified"

    def sram_energy_pj(self, name: str, access: Literal["read", "write"]) -> float:
        """Energy of one bank-width access to a buffer at nominal voltage and the tables' node."""
        buf = self.buffers[name]
        override = buf.read_energy_pj if access == "read" else buf.write_energy_pj
        if override is not None:
            return override
        base = self.energy.sram.access_pj(buf.bank_size_bytes, buf.bank_width_bits)
        return base if access == "read" else base * self.energy.sram.write_over_read

    def sram_leakage_uw(self, name: str) -> float:
        """Leakage power of a buffer at nominal voltage and the tables' node."""
        buf = self.buffers[name]
        if buf.leakage_uw is not None:
            return buf.leakage_uw
        return self.energy.sram.leakage_uw_per_kib * buf.size_kib

    def summary(self) -> str:
        """One line for `accelsim validate`."""
        pe = self.pe_array
        bufs = ", ".join(f"{n} {b.size_kib:g} KiB" for n, b in self.buffers.items())
        bw = self.dram.bandwidth_bytes_per_cycle
        dram = "unlimited" if bw is None else f"{bw:g} B/cycle"
        return (
            f"{self.name}: {pe.rows}x{pe.cols} {pe.dataflow} array ({'/'.join(pe.precisions)}, "
            f"{pe.accumulator_bits}-bit acc) at {self.clock_mhz:g} MHz; {bufs}; DRAM {dram}"
        )


# ---------------------------------------------------------------------------------------------
# Navigating the models by dotted path (overrides and error messages)


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    if typing.get_origin(tp) is Annotated:
        return _strip_optional(typing.get_args(tp)[0])
    return tp


def _union_models(tp: Any) -> list[type[BaseModel]]:
    tp = _strip_optional(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _tag_model(tp: Any, tag: str) -> Any:
    """The member of a union discriminated by `kind` whose tag is `tag` (else the union)."""
    for model in _union_models(tp):
        if tag in typing.get_args(model.model_fields["kind"].annotation):
            return model
    return tp


def _field_names(tp: Any) -> list[str]:
    tp = _strip_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return sorted({f for m in _union_models(tp) for f in m.model_fields})


def _child_type(tp: Any, key: str) -> Any:
    """Type found under `key` inside type `tp`, or None when `tp` has no such key."""
    tp = _strip_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(key)
        return None if field is None else field.annotation
    if typing.get_origin(tp) is dict:
        return typing.get_args(tp)[1]
    for model in _union_models(tp):
        if key in model.model_fields:
            return model.model_fields[key].annotation
    return None


def _dict_key(tp: Any, segment: str) -> Any:
    """A path segment as the key a dict field stores: digits become int where int keys exist."""
    key_type = typing.get_args(_strip_optional(tp))[0]
    allows_int = key_type is int or int in typing.get_args(key_type)
    return int(segment) if allows_int and segment.isdigit() else segment


def _default_raw(tp: Any, key: str) -> Any:
    """The default of field `key` of model `tp`, as raw data, so a path can be set inside it."""
    tp = _strip_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields[key]
        if not field.is_required():
            value = field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                return value.model_dump()
            if isinstance(value, dict):
                return {
                    k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in value.items()
                }
    return {}


def _set_path(label: str, raw: dict, path: str, value: Any) -> None:
    """Set raw[path] for a dotted path checked against the models, creating parents as needed."""
    segments = path.split(".")
    if not path or any(not s for s in segments):
        raise HardwareError(f"{label}: override {path!r}: empty path segment")
    node, tp = raw, Hardware
    for depth, seg in enumerate(segments):
        here = ".".join(segments[: depth + 1])
        child_tp = _child_type(tp, seg)
        if child_tp is None or not isinstance(node, dict):
            hint = _did_you_mean(seg, _field_names(tp))
            raise HardwareError(f"{label}: {here}: unknown field{hint} (override {path})")
        is_dict = typing.get_origin(_strip_optional(tp)) is dict
        key = _dict_key(tp, seg) if is_dict else seg
        if depth == len(segments) - 1:
            node[key] = value
            return
        if isinstance(node.get(key), BaseModel):
            node[key] = node[key].model_dump(exclude_unset=True)
        elif not isinstance(node.get(key), dict):
            node[key] = {} if is_dict else _default_raw(tp, seg)
        node, tp = node[key], child_tp


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _error_line(source: str, exc: ValidationError) -> str:
    """One line naming source and field for the first error of a pydantic ValidationError."""
    errors = exc.errors()
    err = errors[0]
    parts: list[str] = []
    tp: Any = Hardware
    parent: Any = Hardware  # the model holding the last part (a union's member, once tagged)
    for seg in err["loc"]:
        seg = str(seg)
        child = _child_type(tp, seg)
        if child is None and _union_models(tp):
            tp = _tag_model(tp, seg)  # a discriminated union's tag, not a field
            continue
        parts.append(seg)
        parent, tp = tp, child
    message = err["msg"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        parts.append(cause.field)
        message = cause.message
    elif err["type"] == "extra_forbidden":
        message = "unknown key" + _did_you_mean(parts[-1], _field_names(parent))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {'.'.join(parts) or '(top level)'}: {message}{more}"


# ---------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice, which plain YAML silently lets win, and reads
    1e-3 as a number (YAML 1.2; PyYAML's YAML 1.1 wants 1.0e-3 and calls 1e-3 a string)."""


_UniqueKeyLoader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates
)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise HardwareError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise HardwareError(f"{path}: expected a mapping of hardware sections, got {got}")
    return data


def _read_source(source: str | Path) -> dict:
    path = Path(source)
    try:
        if path.is_dir():
            raise HardwareError(f"{path}: is a directory, not a hardware file")
        if path.suffix.lower() == ".cfg":
            return scalesim_to_dict(path)
        return _read_yaml(path)
    except FileNotFoundError:
        raise HardwareError(f"{path}: no such hardware file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HardwareError(f"{path}: cannot read: {e}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Split a CLI `--set PATH=VALUE`; VALUE is read as a YAML scalar (0.8, true, null, [a, b])."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise HardwareError(f"override {text!r}: expected PATH=VALUE")
    try:
        return path.strip(), yaml.load(value, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        raise HardwareError(f"override {text!r}: value is not valid YAML") from None


def load_hardware(
    source: str | Path | Mapping[str, Any] | Hardware,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    **kw_overrides: Any,
) -> Hardware:
    """Load and validate a hardware description, applying dotted-path overrides before validation.

    source: a YAML path, a SCALE-Sim .cfg path, a dict of YAML content or a Hardware.
    overrides: {"buffers.weights.voltage_v": 0.8} or ["buffers.weights.voltage_v=0.8"] (CLI --set);
    keyword overrides are the same, e.g. load_hardware(p, **{"clock_mhz": 500}).
    Raises HardwareError with one line naming the file and the field.
    """
    if isinstance(source, Hardware):
        label, raw = source.name, source.model_dump(exclude_unset=True)
    elif isinstance(source, Mapping):
        label, raw = "hardware", _plain(source)
    else:
        label, raw = str(source), _read_source(source)
    pairs: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        pairs += list(overrides.items())
    elif overrides is not None:
        pairs += [parse_override(o) for o in overrides]
    pairs += list(kw_overrides.items())
    for path, value in pairs:
        _set_path(label, raw, path, value)
    try:
        return Hardware.model_validate(raw)
    except ValidationError as e:
        raise HardwareError(_error_line(label, e)) from None


def _plain(data: Mapping[str, Any]) -> dict:
    """A deep copy of nested mappings, so overrides never touch the caller's dict."""
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def validate_file(path: str | Path, overrides: Iterable[str] | None = None) -> str:
    """Check a hardware file for `accelsim validate`; returns its one-line summary."""
    return load_hardware(path, overrides).summary()


def json_schema() -> dict:
    """The JSON Schema of hardware YAML files, for `accelsim schema` and editors."""
    schema = Hardware.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "accelsim hardware description"
    return schema


# ---------------------------------------------------------------------------------------------
# SCALE-Sim .cfg
#
# Read as SCALE-Sim's own parser does (configparser: option names case-insensitive, ':' or '='),
# following scalesim/scale_config.py of scale-sim-v2 and scale-sim-v3:
#   [general] run_name                    -> name, scalesim.run_name
#   [architecture_presets]
#     ArrayHeight, ArrayWidth             -> pe_array.rows, pe_array.cols
#     IfmapSramSzkB, FilterSramSzkB,      -> buffers.ifmap/weights/ofmap.size_kib (SCALE-Sim: 1 kB =
#     OfmapSramSzkB                          1024 words of word_size 1 byte; double buffered, half
#                                            active, as its memory system does)
#     Dataflow                            -> pe_array.dataflow (SCALE-Sim only warns on bad ones)
#     Bandwidth                           -> with USER: words/cycle per DRAM bank; the first is
#                                            dram.bandwidth_bytes_per_cycle (SCALE-Sim uses bws[0])
#     IfmapOffset, FilterOffset,          -> scalesim.*_offset (DRAM trace addresses only)
#     OfmapOffset, MemoryBanks,
#     ReadRequestBuffer, WriteRequestBuffer -> scalesim.* (request queues of its ramulator path)
#     OnChipMemoryBanks, OnChipMemoryBankPorts -> banks, ports of all three buffers
#   [layout] (v3; v2 puts these keys in architecture_presets)
#     {Ifmap,Filter}CustomLayout: True    -> then {Ifmap,Filter}SRAMBank{Num,Port,Bandwidth} give
#                                            banks, ports and bank_width_bits (8 x words/cycle)
#   [run_presets] InterfaceBandwidth      -> CALC: stall-free, dram.bandwidth_bytes_per_cycle null
#                                            (unlimited); USER: Bandwidth as above
#   [network_presets] TopologyCsvLoc      -> scalesim.topology_csv (the workload is a run argument)
#   [sparsity] SparsitySupport true       -> rejected: accelsim does not model sparse arrays
# Ignored (no meaning here): UseRamulatorTrace, SRAM_row_size, SRAM_bank_size, DRAM_row_size,
# DRAM_bank_size, [memory_map_files], the other [sparsity] keys.
# Without a custom layout, each buffer is one bank as wide as the array's longer edge, ports 2
# (SCALE-Sim's default), and SRAM, DRAM latency and the interconnect cost nothing: SCALE-Sim
# models none of them, so its cycle counts are reproduced exactly.

_CFG_IGNORED = {
    "useramulatortrace",
    "sram_row_size",
    "sram_bank_size",
    "dram_row_size",
    "dram_bank_size",
    "sparserep",
    "optimizedmapping",
    "blocksize",
    "randomnumbergeneratorseed",
}
_CFG_KNOWN = {
    "run_name",
    "arrayheight",
    "arraywidth",
    "ifmapsramszkb",
    "filtersramszkb",
    "ofmapsramszkb",
    "ifmapoffset",
    "filteroffset",
    "ofmapoffset",
    "dataflow",
    "bandwidth",
    "memorybanks",
    "readrequestbuffer",
    "writerequestbuffer",
    "onchipmemorybanks",
    "onchipmemorybankports",
    "ifmapsrambankbandwidth",
    "ifmapsrambanknum",
    "ifmapsrambankport",
    "filtersrambankbandwidth",
    "filtersrambanknum",
    "filtersrambankport",
    "ifmapcustomlayout",
    "filtercustomlayout",
    "interfacebandwidth",
    "topologycsvloc",
    "sparsitysupport",
} | _CFG_IGNORED


def scalesim_to_dict(path: str | Path) -> dict:
    """Translate a SCALE-Sim .cfg into accelsim's raw hardware dict (mapping documented above)."""
    path = Path(path)
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep the file's spelling for messages; matched case-insensitively
    try:
        parser.read_string(path.read_text(), source=str(path))
    except configparser.Error as e:
        raise HardwareError(f"{path}: invalid SCALE-Sim config: {str(e).splitlines()[0]}") from None
    if parser.has_section("memory_map_files"):
        parser.remove_section("memory_map_files")
    keys: dict[
        str, tuple[str, str]
    ] = {}  # option -> (section, value); sections may vary by version
    for section in parser.sections():
        for spelled, value in parser.items(section):
            option = spelled.lower()
            if option not in _CFG_KNOWN:
                hint = _did_you_mean(option, _CFG_KNOWN)
                raise HardwareError(f"{path}: [{section}] {spelled}: unknown SCALE-Sim key{hint}")
            if option in keys:
                raise HardwareError(f"{path}: [{section}] {spelled}: given twice")
            keys[option] = (section, value.strip())

    def text(option: str, default: str | None = None) -> str:
        if option not in keys:
            if default is None:
                raise HardwareError(f"{path}: missing SCALE-Sim key {option}")
            return default
        return keys[option][1]

    def integer(option: str, default: int | None = None) -> int:
        value = text(option, None if default is None else str(default))
        try:
            return int(value)
        except ValueError:
            section = keys[option][0]
            raise HardwareError(
                f"{path}: [{section}] {option}: expected an integer, got {value!r}"
            ) from None

    def flag(option: str) -> bool:
        """Read as SCALE-Sim's getboolean does: true, yes, on, 1 and their opposites."""
        value = text(option, "false")
        state = parser.BOOLEAN_STATES.get(value.lower())
        if state is None:
            raise HardwareError(
                f"{path}: [{keys[option][0]}] {option}: expected true or false, got {value!r}"
            )
        return state

    mode = text("interfacebandwidth")
    if mode not in ("CALC", "USER"):
        raise HardwareError(
            f"{path}: [run_presets] InterfaceBandwidth: use CALC or USER, not {mode!r}"
        )
    if text("sparsitysupport", "false").lower() == "true":  # SCALE-Sim's test, not getboolean
        raise HardwareError(f"{path}: [sparsity] SparsitySupport: sparse arrays are not modelled")
    bandwidths: list[int] = []
    if mode == "USER":
        try:
            bandwidths = [int(x) for x in text("bandwidth").split(",")]
        except ValueError:
            raise HardwareError(
                f"{path}: [architecture_presets] Bandwidth: expected integers, got "
                f"{text('bandwidth')!r}"
            ) from None
    rows, cols = integer("arrayheight"), integer("arraywidth")
    edge_bits = 8 * max(rows, cols, 1)
    banks, ports = integer("onchipmemorybanks", 1), integer("onchipmemorybankports", 2)

    def buffer(size_key: str, layout: str | None) -> dict:
        buf = {
            "size_kib": integer(size_key),
            "banks": banks,
            "ports": ports,
            "bank_width_bits": edge_bits,
            "read_latency_cycles": 0,
            "write_latency_cycles": 0,
            "double_buffered": True,
        }
        if layout and flag(f"{layout}customlayout"):
            buf["banks"] = integer(f"{layout}srambanknum")
            buf["ports"] = integer(f"{layout}srambankport")
            buf["bank_width_bits"] = 8 * integer(f"{layout}srambankbandwidth")
        return buf

    topology = keys.get("topologycsvloc", ("", ""))[1].strip('"') or None
    run_name = text("run_name", "scale_run")
    return {
        "name": run_name,
        "description": f"converted from SCALE-Sim config {path.name}",
        "pe_array": {"rows": rows, "cols": cols, "dataflow": text("dataflow")},
        "buffers": {
            "ifmap": buffer("ifmapsramszkb", "ifmap"),
            "weights": buffer("filtersramszkb", "filter"),
            "ofmap": buffer("ofmapsramszkb", None),
        },
        "dram": {
            "bandwidth_bytes_per_cycle": bandwidths[0] if bandwidths else None,
            "latency_cycles": 0,
            "burst_bytes": 1,  # SCALE-Sim moves words (of one byte), not bursts
        },
        "interconnect": {"width_bits": None, "latency_cycles": 0},
        "scalesim": {
            "run_name": run_name,
            "interface_bandwidth": mode,
            "bandwidth_words_per_cycle": bandwidths,
            "ifmap_offset": integer("ifmapoffset", 0),
            "filter_offset": integer("filteroffset", 10_000_000),
            "ofmap_offset": integer("ofmapoffset", 20_000_000),
            "memory_banks": integer("memorybanks", 1),
            "read_request_buffer": integer("readrequestbuffer", 60),
            "write_request_buffer": integer("writerequestbuffer", 60),
            "topology_csv": topology,
        },
    }
