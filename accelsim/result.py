"""The Result of a simulation: totals and one record per layer, as plain data, JSON, CSV and a
pandas DataFrame.

The JSON form is versioned (`schema_version`); a field is added with a new version, never
changed in meaning. Its JSON Schema is generated from these dataclasses (`json_schema()`,
`accelsim schema --result`) and published as docs/result.schema.json. Figures a model does not
compute yet are listed in `not_modelled` and absent from the records, never filled with a
placeholder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired

from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

SCHEMA_VERSION = 4  # 2: energy; 3: toggles, corruption; 4: hardware.dram_bytes_per_cycle
READS_SCHEMA_VERSIONS = (3, 4)  # each newer version only adds fields, so older Results load


class HardwareInfo(TypedDict):
    """The hardware a Result came from; sha256 hashes its validated description (all fields,
    overrides applied), so two runs with equal hashes ran on the same hardware."""

    name: str
    clock_mhz: float
    rows: int
    cols: int
    dataflow: str
    sha256: str
    # Since schema 4 (the roofline's DRAM roof); null: unlimited bandwidth.
    dram_bytes_per_cycle: NotRequired[float | None]


class WorkloadInfo(TypedDict):
    """The workload a Result came from; sha256 hashes its file (null when not read from one)."""

    name: str
    source: str | None
    sha256: str | None


class Summary(TypedDict):
    """A metric over the Monte Carlo trials: mean, sample std and 95% interval (Student t).
    null mean: some trial has no error (infinite SNR) and others do; null spread: not finite."""

    mean: float | None
    std: float | None
    ci95: list[float | None]  # [low, high]
    n: int


class LayerSummary(TypedDict):
    """One layer's output against the fault-free run, over the trials."""

    fraction_changed: Summary
    snr_db: Summary
    bits_flipped: Summary


class TrialLayer(TypedDict):
    """One layer's output in one trial: its tensor, how much of it changed, and the bits
    flipped in what the layer read."""

    tensor: str
    fraction_changed: float
    snr_db: float | None  # null: no error
    bits_flipped: int


class Trial(TypedDict):
    """One faulty run against the fault-free run (accelsim/inject.py `corruption`): figures on
    `output` in real units; accuracy only when labels were given."""

    output: str
    fraction_changed: float
    mean_abs_error: float
    max_abs_error: float
    snr_db: float | None  # null: no error
    top1_agreement: float
    accuracy: NotRequired[float]
    golden_accuracy: NotRequired[float]
    bits_flipped: int  # stored bits that read back flipped, after ECC
    bit_errors: int  # faulty cells read, before ECC
    bits_flipped_by_buffer: dict[str, int]
    bits_flipped_by_layer: dict[str, int]
    ecc_corrected: int
    ecc_detected: int
    ecc_undetected: int
    layers: dict[str, TrialLayer]


class Corruption(TypedDict):
    """Corruption over Monte Carlo trials with seeds `seeds`: a Summary per scalar metric of a
    Trial (accuracy and golden_accuracy only with labels), per layer, and every trial."""

    trials: int
    seeds: list[int]
    metrics: dict[str, Summary]
    layers: dict[str, LayerSummary]
    per_trial: list[Trial]


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
    """One simulation: the hardware and workload it ran (with content hashes), the seed, the
    totals, one record per layer, corruption (with inputs) and the accelsim version."""

    hardware: HardwareInfo
    workload: WorkloadInfo
    seed: int
    totals: Totals
    layers: list[LayerRecord]
    accelsim_version: str
    not_modelled: list[str] = field(default_factory=lambda: ["corruption"])
    # With inputs: corruption against the golden run, Monte Carlo over trials (accelsim/inject.py
    # `trials`: per metric mean, std, ci95; per layer; per trial). null SNR/spread: no error.
    corruption: Corruption | None = None
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
        if data.get("schema_version") not in READS_SCHEMA_VERSIONS:
            raise ValueError(f"Result schema_version {data.get('schema_version')}: this "
                             f"accelsim reads {', '.join(map(str, READS_SCHEMA_VERSIONS))}")
        fields = dict(data)
        fields["totals"] = Totals(**data["totals"])
        fields["layers"] = [LayerRecord(**r) for r in data["layers"]]
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))

    def layer_rows(self) -> list[dict[str, Any]]:
        """One flat row per layer: the scalar fields, then the breakdowns flattened as
        stall_<cause>, sram_reads_<buffer>, sram_writes_<buffer>, energy_<component>_pj and
        toggles_<kind>. Every row has every column: a buffer a layer does not access has 0
        reads or writes; toggles a layer does not count (vector layers, other energy models) are
        None."""
        groups = {}  # grouped, keys in first-seen order
        for attr in _FLATTENED:
            groups[attr] = list(dict.fromkeys(k for rec in self.layers
                                              for k in (getattr(rec, attr) or {})))
        rows = []
        for rec in self.layers:
            row = {name: getattr(rec, name) for name in _SCALARS}
            for attr, (prefix, suffix, missing) in _FLATTENED.items():
                values = getattr(rec, attr) or {}
                for key in groups[attr]:
                    row[f"{prefix}{key}{suffix}"] = values.get(key, missing)
            rows.append(row)
        return rows

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The per-layer rows (`layer_rows`) as CSV; written to `path` atomically (a temporary
        file renamed) when given. Returns the text."""
        rows = self.layer_rows()
        buf = io.StringIO()
        columns = list(rows[0]) if rows else _SCALARS
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
        if path is not None:
            write_atomic(path, text)
        return text

    def to_dataframe(self):
        """The per-layer rows (`layer_rows`) as a pandas DataFrame indexed by layer index; needs
        the `dataframe` extra (pip install 'accelsim[dataframe]')."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Result.to_dataframe needs pandas: pip install "
                              "'accelsim[dataframe]'") from None
        rows = self.layer_rows()
        columns = list(rows[0]) if rows else _SCALARS
        return pd.DataFrame(rows, columns=columns).set_index("index")


# breakdown field -> column name prefix and suffix in layer_rows, value of a key a layer lacks
_FLATTENED = {
    "stall_breakdown": ("stall_", "", 0),
    "sram_reads": ("sram_reads_", "", 0),
    "sram_writes": ("sram_writes_", "", 0),
    "energy_breakdown_pj": ("energy_", "_pj", 0.0),
    "toggles": ("toggles_", "", None),
}
_SCALARS = [f.name for f in dataclasses.fields(LayerRecord) if f.name not in _FLATTENED]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to path through a temporary file in the same folder, renamed
    over it: a reader sees the old file or the whole new one, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a plain file's mode instead
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `Result.to_json()`, generated from the dataclasses;
    published as docs/result.schema.json and printed by `accelsim schema --result`."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Result).json_schema(mode="serialization")
    schema["properties"].pop("outputs")  # arrays, not part of the JSON
    # to_json writes every field of the dataclasses, and from_json takes no other: all required,
    # none extra. The TypedDicts' required keys are pydantic's (all but NotRequired ones).
    dataclasses_ = {"LayerRecord", "Totals"}
    for name, obj in [("Result", schema), *schema["$defs"].items()]:
        if obj.get("type") == "object" and "properties" in obj:
            if name in dataclasses_ or obj is schema:
                obj["required"] = list(obj["properties"])
            obj["additionalProperties"] = False
    props = schema["properties"]
    props["schema_version"] = {"const": SCHEMA_VERSION, "title": "Schema Version",
                               "description": "bumped when a field is added"}
    props["corruption"]["description"] = (
        "null without inputs; else corruption against the fault-free run, over Monte Carlo "
        "trials: per metric {mean, std, ci95, n}, per layer, per trial (accelsim/inject.py)")
    props["not_modelled"]["description"] = "figures this run does not compute (absent, not zero)"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "accelsim Result",
        "description": (f"The output of `accelsim run --json` and `Result.to_json()`, schema "
                        f"version {SCHEMA_VERSION}. " + " ".join(Result.__doc__.split())),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
