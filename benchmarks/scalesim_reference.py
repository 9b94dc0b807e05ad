"""Regenerate the SCALE-Sim reference data in tests/data/scalesim/ by running the real SCALE-Sim.

This is a plain script, not a test, and it does NOT run in accelsim's environment: SCALE-Sim and
its dependencies (numpy<2, pandas, matplotlib, ...) live in a separate virtual environment so
that they never become accelsim dependencies:

    python3.11 -m venv /work/scalesim-venv
    /work/scalesim-venv/bin/pip install "numpy<2" scalesim==3.0.0

(scalesim 2.0.2 on PyPI is SCALE-Sim v2; it can be installed the same way into another venv and
this script runs under it too, for comparison: it then needs no [layout]/[sparsity] config.)

Usage, from the repository root:

    /work/scalesim-venv/bin/python benchmarks/scalesim_reference.py layers
        -> tests/data/scalesim/reference_layers.csv   (small layers x arrays x dataflows)
    /usr/bin/time -v /work/scalesim-venv/bin/python benchmarks/scalesim_reference.py resnet18
        -> tests/data/scalesim/resnet18_32x32_ws.csv  (ResNet-18, 32x32, ws, default config)
    ... benchmarks/scalesim_reference.py layers --out DIR   # write somewhere else
    ... benchmarks/scalesim_reference.py check              # check closed forms, write nothing

Every run uses SCALE-Sim's default memory configuration (configs/scale.cfg: 64 kB ifmap, filter
and ofmap SRAMs, word size 1 byte, offsets 0 / 10,000,000 / 20,000,000) in CALC (stall-free,
"estimate bandwidth") mode, with only ArrayHeight, ArrayWidth and Dataflow changed. Traces are
not saved. "layers" also checks every row against the closed forms documented in
tests/data/scalesim/README.md and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "data" / "scalesim"

# --- reference set ---------------------------------------------------------------------------
# Conv rows: name, ifmap_h, ifmap_w, filter_h, filter_w, channels, num_filters, stride.
# Chosen to exercise: layers smaller and larger than the arrays in P, K and N; partial folds in
# every dimension; exact multiples; strides 1/2/3 including cases where SCALE-Sim's ceil-based
# output size differs from the usual floor((H-F)/S)+1; 1x1 (also strided); non-square ifmap and
# filter; filter == ifmap (P = 1); a depthwise layer named with "DP" (which SCALE-Sim splits into
# one single-channel layer per channel).
CONV_LAYERS = [
    ("tiny", 5, 5, 3, 3, 2, 3, 1),            # P=9   K=18  N=3
    ("mid", 12, 12, 3, 3, 4, 10, 1),          # P=100 K=36  N=10
    ("exact", 9, 9, 2, 2, 8, 32, 1),          # P=64  K=32  N=32 (multiples of 4, 8, 16, 32)
    ("s2_ceil", 10, 10, 3, 3, 3, 20, 2),      # Oh=Ow=5 (floor formula: 4)
    ("s2_same", 11, 11, 3, 3, 3, 20, 2),      # Oh=Ow=5 (both formulas)
    ("s3_ceil", 13, 13, 5, 5, 2, 9, 3),       # Oh=Ow=4 (floor formula: 3)
    ("pw", 7, 7, 1, 1, 40, 36, 1),            # 1x1: P=49 K=40 N=36
    ("pw_s2", 8, 8, 1, 1, 16, 24, 2),         # 1x1 stride 2: Oh=Ow=5 (floor formula: 4)
    ("rect", 9, 6, 3, 2, 5, 7, 1),            # Oh=7 Ow=5 K=30
    ("full", 4, 4, 4, 4, 3, 10, 1),           # filter == ifmap: P=1 K=48
    ("big", 16, 16, 3, 3, 16, 40, 1),         # P=196 K=144 N=40
    ("DPdw", 8, 8, 3, 3, 3, 2, 1),            # depthwise: 3 sub-layers, each C=1, N=2
]
# GEMM rows (SCALE-Sim "-i gemm" topology): name, M, N, K.
GEMM_LAYERS = [
    ("gemm_a", 50, 20, 40),
    ("gemm_b", 7, 33, 100),
    ("gemm_c", 64, 64, 16),
]
ARRAYS = [(8, 8), (32, 32), (4, 16), (16, 4), (12, 14)]
DATAFLOWS = ["os", "ws", "is"]

OFMAP_SRAM_WORDS = 64 * 1024  # OfmapSramSzkB 64, word size 1 byte

CONV_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
               "Num Filter, Strides,\n")
GEMM_HEADER = "Layer Name, M, N, K,\n"
LAYOUT_HEADER = "Layer name,\n"  # v3 insists on reading a layout file; only used if custom layout


def scalesim_version() -> str:
    return metadata.version("scalesim")


def is_v3() -> bool:
    return int(scalesim_version().split(".")[0]) >= 3


def write_config(path: Path, rows: int, cols: int, dataflow: str) -> None:
    """SCALE-Sim's configs/scale.cfg with the array and dataflow replaced."""
    text = f"""[general]
run_name = ref

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {dataflow}
MemoryBanks:   1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""
    if is_v3():
        # scalesim 3.0.0 reads these sections unconditionally; values = its built-in defaults,
        # custom layout off (so the bank settings are unused) and sparsity off.
        text += """
[layout]
IfmapCustomLayout: False
FilterCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
"""
    path.write_text(text)


def read_report(path: Path) -> list[list[str]]:
    with open(path) as f:
        rows = [[c.strip() for c in line.split(",")] for line in f if line.strip()]
    return [r[:-1] if r and r[-1] == "" else r for r in rows]


def run_scalesim(topology: Path, cfg: Path, workdir: Path, gemm: bool) -> dict[str, list]:
    """Run SCALE-Sim in-process; return its three reports as lists of rows (header first)."""
    from scalesim.scale_sim import scalesim

    kwargs = dict(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topology),
                  input_type_gemm=gemm)
    if is_v3():
        layout = workdir / "layout.csv"
        layout.write_text(LAYOUT_HEADER)
        kwargs["layout"] = str(layout)
    logdir = workdir / "out"
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        sim = scalesim(**kwargs)
        sim.run_scale(top_path=str(logdir))
    rdir = logdir / "ref"
    return {name: read_report(rdir / f"{name}.csv")
            for name in ("COMPUTE_REPORT", "BANDWIDTH_REPORT", "DETAILED_ACCESS_REPORT")}


def report_records(reports: dict[str, list]) -> list[dict[str, str]]:
    """Merge the three reports into one dict per SCALE-Sim layer, keyed by header name."""
    merged: list[dict[str, str]] = []
    for name in ("COMPUTE_REPORT", "BANDWIDTH_REPORT", "DETAILED_ACCESS_REPORT"):
        header, *rows = reports[name]
        for i, row in enumerate(rows):
            if len(merged) <= i:
                merged.append({})
            merged[i].update(dict(zip(header, row, strict=True)))
    return merged


def num(s: str) -> int | float:
    v = float(s)
    return int(v) if v.is_integer() else v


# --- SCALE-Sim's view of a layer (topology_utils.py), and the closed forms ---------------------

def expand(kind: str, layer: tuple) -> list[dict]:
    """The layers SCALE-Sim simulates for one topology row, with the shapes it derives."""
    if kind == "gemm":
        name, m, n, k = layer
        # load_arrays_gemm: [name, M, K, 1, K, 1, N, 1, 1] = ifmap MxK, filter 1xK, C=1, stride 1
        h, w, fh, fw, c, nf, s = m, k, 1, k, 1, n, 1
        subs = [(name, h, w, fh, fw, c, nf, s)]
    else:
        name, h, w, fh, fw, c, nf, s = layer
        if "DP" in name:  # load_arrays_conv: one layer per channel, Channels := 1
            subs = [(f"{name}Channel_{i}", h, w, fh, fw, 1, nf, s) for i in range(c)]
        else:
            subs = [layer]
    out = []
    for sname, h, w, fh, fw, c, nf, s in subs:
        oh = math.ceil((h - fh + s) / s)  # topo_calc_hyperparams: no padding, ceil
        ow = math.ceil((w - fw + s) / s)
        out.append(dict(scalesim_layer=sname, ifmap_h=h, ifmap_w=w, filter_h=fh, filter_w=fw,
                        channels=c, num_filters=nf, stride=s, ofmap_h=oh, ofmap_w=ow,
                        P=oh * ow, K=fh * fw * c, N=nf))
    return out


def closed_forms(P: int, K: int, N: int, R: int, C: int, df: str) -> dict[str, int]:
    """What SCALE-Sim reports in CALC mode, per the README (cycles = reported Total Cycles + 1)."""
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    if df == "os":
        folds = cdiv(P, R) * cdiv(N, C)
        per_fold = R + C + K - 2
        ifmap_rd = cdiv(N, C) * P * K
        filter_rd = cdiv(P, R) * K * N
        ofmap_wr = P * N + folds * (R + C)   # SCALE-Sim adds R+C per fold (a counting quirk)
        ofmap_dram = P * N
    elif df == "ws":
        folds = cdiv(K, R) * cdiv(N, C)
        per_fold = 2 * R + C + P - 2
        ifmap_rd = cdiv(N, C) * P * K
        filter_rd = K * N
        ofmap_wr = cdiv(K, R) * P * N
        ofmap_dram = ofmap_wr
    else:
        folds = cdiv(K, R) * cdiv(P, C)
        per_fold = 2 * R + C + N - 2
        ifmap_rd = P * K
        filter_rd = cdiv(P, C) * K * N
        ofmap_wr = cdiv(K, R) * P * N
        ofmap_dram = ofmap_wr
    macs = P * K * N
    used = {"os": P * N, "ws": K * N, "is": K * P}[df]  # PEs used, summed over folds
    # Compute Util's per-fold denominator is the fold's un-skewed demand matrix rows + cols - 1:
    # R+C+K-2 for os, but 2R+2C+P-3 (ws) and 2R+2C+N-3 (is), i.e. C-1 more than the fold's cycles.
    util_cycles = per_fold if df == "os" else per_fold + C - 1
    return dict(folds=folds, cycles_per_fold=per_fold, cycles=folds * per_fold,
                overall_util_pct=100 * macs / ((folds * per_fold - 1) * R * C),
                mapping_efficiency_pct=100 * used / (folds * R * C),
                compute_util_pct=100 * macs / (folds * util_cycles * R * C),
                sram_ifmap_reads=ifmap_rd, sram_filter_reads=filter_rd,
                sram_ofmap_writes=ofmap_wr, dram_ofmap_writes=ofmap_dram)


OUT_COLUMNS = [
    # inputs
    "topology_kind", "layer", "scalesim_layer", "ifmap_h", "ifmap_w", "filter_h", "filter_w",
    "channels", "num_filters", "stride", "gemm_m", "gemm_n", "gemm_k",
    "array_rows", "array_cols", "dataflow",
    # derived by SCALE-Sim's topology code
    "ofmap_h", "ofmap_w", "P", "K", "N",
    # COMPUTE_REPORT
    "total_cycles_incl_prefetch", "total_cycles", "stall_cycles", "overall_util_pct",
    "mapping_efficiency_pct", "compute_util_pct",
    # DETAILED_ACCESS_REPORT
    "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes",
    "dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes",
    "sram_ifmap_start", "sram_ifmap_stop", "sram_filter_start", "sram_filter_stop",
    "sram_ofmap_start", "sram_ofmap_stop",
    "dram_ifmap_start", "dram_ifmap_stop", "dram_filter_start", "dram_filter_stop",
    "dram_ofmap_start", "dram_ofmap_stop",
]
REPORT_KEYS = {
    "total_cycles_incl_prefetch": "Total Cycles (incl. prefetch)",
    "total_cycles": "Total Cycles",
    "stall_cycles": "Stall Cycles",
    "overall_util_pct": "Overall Util %",
    "mapping_efficiency_pct": "Mapping Efficiency %",
    "compute_util_pct": "Compute Util %",
    "sram_ifmap_reads": "SRAM IFMAP Reads",
    "sram_filter_reads": "SRAM Filter Reads",
    "sram_ofmap_writes": "SRAM OFMAP Writes",
    "dram_ifmap_reads": "DRAM IFMAP Reads",
    "dram_filter_reads": "DRAM Filter Reads",
    "dram_ofmap_writes": "DRAM OFMAP Writes",
    "sram_ifmap_start": "SRAM IFMAP Start Cycle",
    "sram_ifmap_stop": "SRAM IFMAP Stop Cycle",
    "sram_filter_start": "SRAM Filter Start Cycle",
    "sram_filter_stop": "SRAM Filter Stop Cycle",
    "sram_ofmap_start": "SRAM OFMAP Start Cycle",
    "sram_ofmap_stop": "SRAM OFMAP Stop Cycle",
    "dram_ifmap_start": "DRAM IFMAP Start Cycle",
    "dram_ifmap_stop": "DRAM IFMAP Stop Cycle",
    "dram_filter_start": "DRAM Filter Start Cycle",
    "dram_filter_stop": "DRAM Filter Stop Cycle",
    "dram_ofmap_start": "DRAM OFMAP Start Cycle",
    "dram_ofmap_stop": "DRAM OFMAP Stop Cycle",
}


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def run_group(kind: str, layers: list[tuple], R: int, C: int, df: str) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="scalesim_ref_") as tmp:
        work = Path(tmp)
        topo = work / "topo.csv"
        with open(topo, "w") as f:
            f.write(GEMM_HEADER if kind == "gemm" else CONV_HEADER)
            for layer in layers:
                f.write(",".join(str(x) for x in layer) + ",\n")
        cfg = work / "ref.cfg"
        write_config(cfg, R, C, df)
        records = report_records(run_scalesim(topo, cfg, work, gemm=(kind == "gemm")))
    expanded = [(layer, sub) for layer in layers for sub in expand(kind, layer)]
    assert len(expanded) == len(records), (len(expanded), len(records))
    out = []
    for (layer, sub), rec in zip(expanded, records, strict=True):
        row = dict(topology_kind=kind, layer=layer[0], **sub, array_rows=R, array_cols=C,
                   dataflow=df)
        row["gemm_m"], row["gemm_n"], row["gemm_k"] = layer[1:4] if kind == "gemm" else ("",) * 3
        for col, key in REPORT_KEYS.items():
            row[col] = num(rec[key]) if key in rec else ""
        out.append(row)
    return out


def check_row(row: dict) -> list[str]:
    """Compare one reference row with the closed forms; return the mismatches."""
    exp = closed_forms(row["P"], row["K"], row["N"], row["array_rows"], row["array_cols"],
                       row["dataflow"])
    got = dict(cycles=row["total_cycles"] + 1, sram_ifmap_reads=row["sram_ifmap_reads"],
               sram_filter_reads=row["sram_filter_reads"],
               sram_ofmap_writes=row["sram_ofmap_writes"],
               dram_ofmap_writes=row["dram_ofmap_writes"])
    # DRAM ofmap writes: the write buffer drains half the 64 kB ofmap SRAM at a time, in lines of
    # ArrayWidth words. The first drain is triggered by write number half+1, which it pads into a
    # line of its own when ArrayWidth divides half; that padded line starts the next drain chunk
    # and its ArrayWidth-1 empty slots are counted as writes (observed, see README).
    half = OFMAP_SRAM_WORDS // 2
    C = row["array_cols"]
    if exp["dram_ofmap_writes"] > half and half % C == 0:
        exp["dram_ofmap_writes"] += C - 1
    bad = [f"{k}: scalesim {got[k]} formula {exp[k]}" for k in got if got[k] != exp[k]]
    for k in ("overall_util_pct", "mapping_efficiency_pct", "compute_util_pct"):
        if not math.isclose(row[k], exp[k], rel_tol=1e-6):
            bad.append(f"{k}: scalesim {row[k]} formula {exp[k]}")
    if row["stall_cycles"] != 0:
        bad.append(f"stall_cycles {row['stall_cycles']}")
    return bad


def ifmap_elems_touched(row: dict) -> int:
    """Distinct ifmap elements the im2col windows read (windows may run past the ifmap edge)."""
    s = row["stride"]
    rows = {o * s + f for o in range(row["ofmap_h"]) for f in range(row["filter_h"])}
    cols = {o * s + f for o in range(row["ofmap_w"]) for f in range(row["filter_w"])}
    return (sum(r < row["ifmap_h"] for r in rows) * sum(c < row["ifmap_w"] for c in cols)
            * row["channels"])


def dram_read_summary(rows: list[dict]) -> None:
    """Informational: when are DRAM reads the compulsory traffic (no closed form in general)."""
    ok_i = [r for r in rows if r["dram_ifmap_reads"] == ifmap_elems_touched(r)]
    ok_f = [r for r in rows if r["dram_filter_reads"] == r["K"] * r["N"]]
    print(f"DRAM ifmap reads == distinct ifmap elements touched: {len(ok_i)}/{len(rows)} rows")
    print(f"DRAM filter reads == K*N: {len(ok_f)}/{len(rows)} rows")
    for r in rows:
        if r not in ok_i or r not in ok_f:
            print(f"  {r['scalesim_layer'] if 'scalesim_layer' in r else r['layer']} "
                  f"{r['array_rows']}x{r['array_cols']} {r['dataflow']}: ifmap "
                  f"{r['dram_ifmap_reads']} (touched {ifmap_elems_touched(r)}, sram "
                  f"{r['sram_ifmap_reads']}), filter {r['dram_filter_reads']} (K*N "
                  f"{r['K'] * r['N']}, sram {r['sram_filter_reads']})")


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([fmt(r[c]) for c in columns])
    os.replace(tmp, path)


def cmd_layers(out_dir: Path, write: bool) -> int:
    rows: list[dict] = []
    t0 = time.perf_counter()
    for R, C in ARRAYS:
        for df in DATAFLOWS:
            for kind, layers in (("conv", CONV_LAYERS), ("gemm", GEMM_LAYERS)):
                t = time.perf_counter()
                rows += run_group(kind, layers, R, C, df)
                print(f"{R}x{C} {df} {kind}: {time.perf_counter() - t:.1f} s", flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s, {len(rows)} rows, scalesim "
          f"{scalesim_version()}")
    failures = 0
    for r in rows:
        bad = check_row(r)
        if bad:
            failures += 1
            print(f"MISMATCH {r['scalesim_layer']} {r['array_rows']}x{r['array_cols']} "
                  f"{r['dataflow']}: " + "; ".join(bad))
    print(f"closed forms: {len(rows) - failures} rows agree, {failures} differ")
    dram_read_summary(rows)
    if write:
        write_csv(out_dir / "reference_layers.csv", rows, OUT_COLUMNS)
        print(f"wrote {out_dir / 'reference_layers.csv'}")
    return 1 if failures else 0


def cmd_resnet18(out_dir: Path) -> int:
    """ResNet-18 (workloads/resnet18.csv, SCALE-Sim's own file) on 32x32 ws, default config."""
    topo = REPO / "workloads" / "resnet18.csv"
    layers = []
    with open(topo) as f:
        next(f)
        for line in f:
            if line.strip():
                e = [x.strip() for x in line.split(",")]
                layers.append((e[0], *map(int, e[1:8])))
    with tempfile.TemporaryDirectory(prefix="scalesim_r18_") as tmp:
        work = Path(tmp)
        cfg = work / "ref.cfg"
        write_config(cfg, 32, 32, "ws")
        t = time.perf_counter()
        records = report_records(run_scalesim(topo, cfg, work, gemm=False))
        wall = time.perf_counter() - t
    rows = []
    for layer, rec in zip(layers, records, strict=True):
        (sub,) = expand("conv", layer)
        row = dict(topology_kind="conv", layer=layer[0], **sub, array_rows=32, array_cols=32,
                   dataflow="ws", gemm_m="", gemm_n="", gemm_k="")
        for col, key in REPORT_KEYS.items():
            row[col] = num(rec[key]) if key in rec else ""
        rows.append(row)
    total = sum(r["total_cycles"] for r in rows)
    print(f"ResNet-18 32x32 ws: sum of Total Cycles = {total}, "
          f"sum of stalls = {sum(r['stall_cycles'] for r in rows)}, "
          f"simulation wall time {wall:.1f} s, scalesim {scalesim_version()}")
    failures = [(r["layer"], b) for r in rows if (b := check_row(r))]
    for name, bad in failures:
        print(f"MISMATCH {name}: " + "; ".join(bad))
    dram_read_summary(rows)
    cols = [c for c in OUT_COLUMNS if c not in ("topology_kind", "gemm_m", "gemm_n", "gemm_k",
                                                 "scalesim_layer")]
    write_csv(out_dir / "resnet18_32x32_ws.csv", rows, cols)
    print(f"wrote {out_dir / 'resnet18_32x32_ws.csv'}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["layers", "resnet18", "check"])
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    if args.what == "resnet18":
        return cmd_resnet18(args.out)
    return cmd_layers(args.out, write=(args.what == "layers"))


if __name__ == "__main__":
    sys.exit(main())
