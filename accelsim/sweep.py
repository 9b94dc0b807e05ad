"""Sweeps: a cartesian grid of hardware settings (and hardware files and workloads), each point
one simulation, run in local worker processes or on a Dask cluster and committed at once to an
SQLite store.

The store (`--db results.sqlite`) is one SQLite file: a `meta` table (application
accelsim-sweep, store format 1) and a `points` table with one row per finished point, keyed by
the sha256 of the canonical JSON (sorted keys, no spaces) of: the validated hardware's sha256
(overrides applied, as Result.hardware.sha256), the workload file's sha256, the overrides, the
seed, the trials, the inputs file's sha256 (null without inputs) and the accelsim version. The
same key means the same simulation, so rerunning a sweep after a crash, SIGKILL or Ctrl-C skips
the points already stored. A store is only ever added to; only the parent process writes it.

Local workers are spawned processes (the parent has threads: no fork), so a script that calls
`run_sweep` keeps its own work under `if __name__ == "__main__":`, as multiprocessing asks.
On a cluster (pip install 'accelsim[cluster]'), start a scheduler and workers on machines that
have accelsim installed and see the same files at the same paths (a point carries absolute
paths, not the files):

    dask scheduler                          # prints its address, e.g. tcp://10.0.0.1:8786
    dask worker tcp://10.0.0.1:8786         # on each machine
    accelsim sweep hw.yaml net.onnx --grid buffers.weights.voltage_v=0.70:0.95:0.05 \\
        --scheduler tcp://10.0.0.1:8786 --db results.sqlite

Read a store with `load_sweep(path)` (a pandas DataFrame, one row per point) or
`load_results(path)`; `accelsim sweep --db results.sqlite --export points.csv` writes the table.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import sqlite3
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

import accelsim
from accelsim.errors import AccelsimError, HardwareError, InputError, SweepError, WorkloadError
from accelsim.execute import check_inputs
from accelsim.hardware import Hardware, load_hardware, parse_override
from accelsim.progress import progress_bar
from accelsim.result import Result, write_atomic
from accelsim.simulate import hardware_sha256, run_inputs, simulate
from accelsim.workload import load_workload
from accelsim.workload.ir import Graph

APPLICATION = "accelsim-sweep"
STORE_FORMAT = 1
MAX_RANGE_VALUES = 100_000  # a longer range is a mistyped STEP, not a study


# ---------------------------------------------------------------------------------------------
# The grid


def parse_grid(spec: str) -> tuple[str, list[Any]]:
    """`PATH=START:STOP:STEP` or `PATH=a,b,c` -> (path, values).

    A range holds START, START + STEP, ... up to STOP, STOP included when it lies on the grid;
    its values are computed in decimal and then converted, so 0.70:0.95:0.05 gives 0.75, never
    0.7500000001 (integers when START, STOP and STEP all are). A list's values are YAML scalars,
    read as --set reads its VALUE; a lone string with a colon is quoted ('a:b').
    """
    path, sep, text = spec.partition("=")
    path = path.strip()
    if not sep or not path or re.search(r"\s", path):
        raise SweepError(f"--grid {spec}: expected PATH=START:STOP:STEP or PATH=a,b,c")
    if ":" in text and not re.search(r"[,\[\]{}'\"]", text):  # quote a string with a colon
        return path, _range(spec, text.split(":"))
    try:
        _, values = parse_override(f"{path}=[{text}]")
    except HardwareError:
        raise SweepError(f"--grid {spec}: the values are not valid YAML") from None
    if not values:
        raise SweepError(f"--grid {spec}: no values")
    seen = set()
    for v in values:
        if _canonical(v) in seen:
            raise SweepError(f"--grid {spec}: value {v!r} given twice")
        seen.add(_canonical(v))
    return path, values


def _range(spec: str, parts: list[str]) -> list[int] | list[float]:
    malformed = SweepError(f"--grid {spec}: expected START:STOP:STEP numbers")
    if len(parts) != 3:
        raise malformed
    integers = all(re.fullmatch(r"\s*[+-]?\d+\s*", p) for p in parts)
    try:
        start, stop, step = (int(p) if integers else Decimal(p.strip()) for p in parts)
    except (ValueError, InvalidOperation):
        raise malformed from None
    if not all(Decimal(x).is_finite() for x in (start, stop, step)):
        raise malformed
    if step <= 0:
        raise SweepError(f"--grid {spec}: empty range (STEP must be positive)")
    if stop < start:
        raise SweepError(f"--grid {spec}: empty range (STOP is below START)")
    try:
        count = int((stop - start) // step) + 1
    except InvalidOperation:  # the quotient does not fit decimal's precision
        count = MAX_RANGE_VALUES + 1
    if count > MAX_RANGE_VALUES:
        raise SweepError(f"--grid {spec}: more than {MAX_RANGE_VALUES:,} values; is STEP right?")
    values = [start + i * step for i in range(count)]
    return values if integers else [float(v) for v in values]


def parse_grids(specs: Sequence[str]) -> dict[str, list[Any]]:
    """The --grid options as {path: values}; a path given twice is an error."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        path, values = parse_grid(spec)
        if path in grid:
            raise SweepError(f"--grid {spec}: {path} is already swept by another --grid")
        grid[path] = values
    return grid


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# The store

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE points (
    key TEXT PRIMARY KEY,   -- sha256 of what the point simulates (module docstring)
    hardware TEXT NOT NULL, -- the paths as given
    workload TEXT NOT NULL,
    inputs TEXT,
    overrides TEXT NOT NULL, -- JSON {dotted path: value}, --set ones first, then the grid's
    seed INTEGER NOT NULL,
    trials INTEGER NOT NULL,
    result_json TEXT NOT NULL
);
"""
_COLUMNS = ("key", "hardware", "workload", "inputs", "overrides", "seed", "trials", "result_json")


class Store:
    """An accelsim sweep store: opened only after its meta table says it is one (a corrupt file
    or another application's database is refused before anything is written), created through a
    temporary file linked into place, so an existing file is never replaced. Read-only unless
    writable (then created if missing)."""

    def __init__(self, path: str | os.PathLike, writable: bool = False) -> None:
        self.path = Path(path)
        if writable and not self.path.exists():
            self._create()
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "no such sweep store"
            raise SweepError(f"{self.path}: {what}")
        # Checked read-only: even a foreign database's hot journal is not rolled back.
        conn = self._connect(writable=False)
        try:
            self._check(conn)
        except BaseException:
            conn.close()
            raise
        if writable:
            conn.close()
            conn = self._connect(writable=True)
        self.conn = conn

    def _connect(self, writable: bool) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode={'rw' if writable else 'ro'}"
        try:
            return sqlite3.connect(uri, uri=True)
        except sqlite3.Error as e:
            raise SweepError(f"{self.path}: cannot open the sweep store ({e})") from None

    def _create(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            conn = sqlite3.connect(tmp)
            try:
                with conn:
                    conn.executescript(_SCHEMA)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("application", APPLICATION),
                                      ("format", str(STORE_FORMAT))])
            finally:
                conn.close()
            with contextlib.suppress(FileExistsError):  # made meanwhile: checked as any other
                os.link(tmp, self.path)
        except (OSError, sqlite3.Error) as e:
            raise SweepError(f"{self.path}: cannot create the sweep store "
                             f"({getattr(e, 'strerror', None) or e})") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse anything but a store of this format (reading only: a refused file is left as
        it was)."""
        try:
            tables = sorted(r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"))
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        except sqlite3.Error as e:
            raise SweepError(f"{self.path}: not an accelsim sweep store ({e})") from None
        if meta.get("application") != APPLICATION:
            what = (f"an SQLite database with tables {', '.join(tables)}" if tables
                    else "an empty SQLite database")
            raise SweepError(f"{self.path}: not an accelsim sweep store ({what})")
        if meta.get("format") != str(STORE_FORMAT):
            raise SweepError(f"{self.path}: sweep store format {meta.get('format')}; this "
                             f"accelsim reads format {STORE_FORMAT}")

    def keys(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT key FROM points")}

    def add(self, point: Mapping[str, Any], result_json: str) -> bool:
        """Commit one point (its own transaction); False when its key is already stored."""
        row = {**point, "overrides": json.dumps(point["overrides"]), "result_json": result_json}
        with self.conn:
            cur = self.conn.execute(
                f"INSERT OR IGNORE INTO points ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})", [row[c] for c in _COLUMNS])
        return cur.rowcount == 1

    def points(self) -> Iterator[dict[str, Any]]:
        """The stored points in the order they finished, overrides decoded."""
        cur = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM points ORDER BY rowid")
        for values in cur:
            row = dict(zip(_COLUMNS, values, strict=True))
            row["overrides"] = json.loads(row["overrides"])
            yield row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Reading a store

TOTALS = ("cycles", "stall_cycles", "utilisation", "latency_s", "energy_pj",
          "energy_per_inference_pj", "average_power_mw", "dram_read_bytes", "dram_write_bytes")


def sweep_table(path: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a store, one row per point: key, hardware, workload and inputs (the
    paths as given), seed, trials, one column per override path, the totals,
    energy_<component>_pj, then per corruption metric m its mean `m`, `m_std`, `m_ci95_lo`,
    `m_ci95_hi` (NaN without corruption or where the Result has null, e.g. the SNR of error-free
    outputs), and result_json."""
    with Store(path) as store:
        points = list(store.points())
    results = [json.loads(p["result_json"]) for p in points]
    paths = list(dict.fromkeys(k for p in points for k in p["overrides"]))
    components = list(dict.fromkeys(k for r in results for k in r["totals"]["energy_breakdown_pj"]))
    metrics = list(dict.fromkeys(k for r in results for k in (r["corruption"] or {}).get(
        "metrics", {})))
    rows = []
    for p, r in zip(points, results, strict=True):
        row = {"key": p["key"], "hardware": p["hardware"], "workload": p["workload"],
               "inputs": p["inputs"], "seed": p["seed"], "trials": p["trials"]}
        row.update({k: p["overrides"].get(k) for k in paths})
        t = r["totals"]
        row.update({k: t[k] for k in TOTALS})
        row.update({f"energy_{c}_pj": t["energy_breakdown_pj"].get(c, 0.0) for c in components})
        summaries = (r["corruption"] or {}).get("metrics", {})
        for m in metrics:
            s = summaries.get(m) or {"mean": None, "std": None, "ci95": [None, None]}
            for name, value in ((m, s["mean"]), (f"{m}_std", s["std"]),
                                (f"{m}_ci95_lo", s["ci95"][0]), (f"{m}_ci95_hi", s["ci95"][1])):
                row[name] = math.nan if value is None else value
        row["result_json"] = p["result_json"]
        rows.append(row)
    columns = ["key", "hardware", "workload", "inputs", "seed", "trials", *paths, *TOTALS,
               *(f"energy_{c}_pj" for c in components),
               *(f"{m}{s}" for m in metrics for s in ("", "_std", "_ci95_lo", "_ci95_hi")),
               "result_json"]
    return columns, rows


def load_sweep(path: str | os.PathLike):
    """A sweep store as a pandas DataFrame, one row per point (columns: `sweep_table`);
    `Result.from_json(row.result_json)` gives a point's whole Result. Needs the `dataframe`
    extra (pip install 'accelsim[dataframe]')."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("load_sweep needs pandas: pip install 'accelsim[dataframe]'") from None
    columns, rows = sweep_table(path)
    return pd.DataFrame(rows, columns=columns)


def load_results(path: str | os.PathLike) -> list[Result]:
    """The Results of a store's points, in the order they finished."""
    with Store(path) as store:
        return [Result.from_json(p["result_json"]) for p in store.points()]


def export_csv(db: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write a store's table (`sweep_table`, without result_json) to `out` as CSV, atomically;
    NaN as an empty field. Returns the number of rows."""
    columns, rows = sweep_table(db)
    columns.remove("result_json")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                         for k, v in row.items()})
    try:
        write_atomic(out, buf.getvalue())
    except OSError as e:
        raise SweepError(f"--export {out}: cannot write ({e.strerror or e})") from None
    return len(rows)


# ---------------------------------------------------------------------------------------------
# Running a sweep


def _sha256_file(path: str, what: str, error: type[AccelsimError]) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} file ({e.strerror or e})") from None


Paths = str | os.PathLike | Sequence[str | os.PathLike]


def _paths(hardware: Paths) -> list[str | os.PathLike]:
    """One hardware file or several (a study comparing machines)."""
    return [hardware] if isinstance(hardware, str | os.PathLike) else list(hardware)


def _settings(hardware: str | os.PathLike, grid: Mapping[str, Sequence[Any]],
              overrides: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(overrides, validated hardware sha256) of each grid point on one hardware file."""
    load_hardware(hardware, overrides)  # a bad file or --set is reported as such
    for path, values in grid.items():
        for value in values:
            try:
                load_hardware(hardware, {**overrides, path: value})
            except HardwareError as e:
                raise SweepError(f"--grid {path}={value}: {e}") from None
    settings = []
    for combo in itertools.product(*grid.values()):
        point = {**overrides, **dict(zip(grid, combo, strict=True))}
        try:
            hw = load_hardware(hardware, point)
        except HardwareError as e:  # each value is valid alone, not together
            raise SweepError(f"--grid point {_canonical(point)}: {e}") from None
        settings.append((point, hardware_sha256(hw)))
    return settings


def plan_points(hardware: Paths, workloads: Sequence[str | os.PathLike],
                grid: Mapping[str, Sequence[Any]], overrides: Mapping[str, Any] | None = None,
                inputs: str | os.PathLike | None = None, seed: int = 0,
                trials: int = 1) -> list[dict[str, Any]]:
    """The points of a sweep, each validated and keyed (module docstring): hardware files
    outermost, then workloads, then the grid; a point equal to an earlier one (same key) is
    left out. Raises SweepError naming the --grid option of a value a hardware file rejects
    (unknown path, wrong type)."""
    overrides = dict(overrides or {})
    if trials < 1:
        raise SweepError(f"--trials must be at least 1, got {trials}")
    for path, values in grid.items():
        if path in overrides:
            raise SweepError(f"--grid {path}: also given with --set")
        if not values:
            raise SweepError(f"--grid {path}: no values")
    inputs_sha = None if inputs is None else _sha256_file(str(inputs), "inputs", InputError)
    workload_shas = [_sha256_file(str(w), "workload", WorkloadError) for w in workloads]
    points, keys = [], set()
    for hw_path in _paths(hardware):
        settings = _settings(hw_path, grid, overrides)
        for workload, workload_sha in zip(workloads, workload_shas, strict=True):
            for point_overrides, hw_sha in settings:
                key = hashlib.sha256(_canonical({
                    "hardware": hw_sha, "workload": workload_sha, "overrides": point_overrides,
                    "seed": seed, "trials": trials, "inputs": inputs_sha,
                    "accelsim": accelsim.__version__}).encode()).hexdigest()
                if key not in keys:
                    keys.add(key)
                    points.append({
                        "key": key, "hardware": str(hw_path), "workload": str(workload),
                        "inputs": None if inputs is None else str(inputs),
                        "overrides": point_overrides, "seed": seed, "trials": trials})
    return points


def _point_inputs(hw: Hardware, graph: Graph, inputs: str | None, seed: int
                  ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    """run_inputs, checked against the graph: one --input file serves workloads with different
    input names, so each takes the arrays named after its own inputs."""
    arrays, labels = run_inputs(hw, graph, inputs, seed)
    if arrays is None:
        return None, None
    return check_inputs(graph, {n: a for n, a in arrays.items() if n in graph.inputs}), labels


def check_workloads(hardware: Paths, workloads: Sequence[str | os.PathLike],
                    overrides: Mapping[str, Any] | None = None,
                    inputs: str | os.PathLike | None = None, seed: int = 0) -> None:
    """Load every workload and its inputs once in the parent, so a bad network or --input file
    is one error before any point runs or anything is written."""
    machines = [load_hardware(h, overrides) for h in _paths(hardware)]
    for workload in workloads:
        graph = load_workload(workload, seed=seed)
        for hw in machines:
            _point_inputs(hw, graph, None if inputs is None else str(inputs), seed)


def run_point(point: Mapping[str, Any]) -> str:
    """One point's Result JSON: what `accelsim run` computes for it (in a worker process or on
    a Dask worker; the point is plain data, its paths absolute)."""
    hw = load_hardware(point["hardware"], point["overrides"])
    graph = load_workload(point["workload"], seed=point["seed"])
    inputs, labels = _point_inputs(hw, graph, point["inputs"], point["seed"])
    try:
        result = simulate(hw, graph, inputs, seed=point["seed"], trials=point["trials"],
                          labels=labels)
    except HardwareError as e:  # the machine met the workload: the message names the field
        raise HardwareError(f"{point['hardware']} at {_canonical(point['overrides'])}: {e}"
                            ) from None
    return result.to_json(indent=None)


def _absolute(point: Mapping[str, Any]) -> dict[str, Any]:
    return {**point, **{k: os.path.abspath(point[k]) for k in ("hardware", "workload", "inputs")
                        if point[k] is not None}}


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_local(points: list[dict[str, Any]], workers: int) -> Iterator[tuple[str, str]]:
    """(key, Result JSON) of each point as it finishes, in spawned worker processes (the parent
    has threads, so no fork)."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint,
                               mp_context=multiprocessing.get_context("spawn"))
    finished = False
    try:
        futures = {pool.submit(run_point, _absolute(p)): p["key"] for p in points}
        for future in as_completed(futures):
            yield futures[future], future.result()
        finished = True
    except BrokenProcessPool:
        raise SweepError("a sweep worker process died (out of memory?); what finished is "
                         "stored, rerun to go on") from None
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
        if not finished:  # stop the points under way too (Python 3.14: terminate_workers())
            for process in list((pool._processes or {}).values()):
                process.terminate()


def _run_dask(points: list[dict[str, Any]], address: str) -> Iterator[tuple[str, str]]:
    """(key, Result JSON) of each point as it finishes on the Dask cluster at `address`."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise SweepError("--scheduler needs dask.distributed: pip install "
                         "'accelsim[cluster]'") from None
    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise SweepError(f"--scheduler {address}: cannot connect ({e})") from None
    try:
        futures = client.map(run_point, [_absolute(p) for p in points],
                             key=[f"accelsim-point-{p['key']}" for p in points])
        keys = {f.key: p["key"] for f, p in zip(futures, points, strict=True)}
        try:
            for future in dask_completed(futures, loop=client.loop):
                yield keys[future.key], future.result()
        finally:
            client.cancel(futures)
    finally:
        client.close()


@dataclass
class SweepSummary:
    ran: int  # points simulated and stored by this run
    skipped: int  # points already in the store
    total: int  # points in the grid
    db: str

    def __str__(self) -> str:
        return (f"{self.ran} point(s) run, {self.skipped} skipped as already stored, "
                f"{self.total} in the grid; store {self.db}")


def run_sweep(hardware: Paths, workloads: Sequence[str | os.PathLike],
              grid: Mapping[str, Sequence[Any]], db: str | os.PathLike,
              overrides: Mapping[str, Any] | None = None,
              inputs: str | os.PathLike | None = None, seed: int = 0, trials: int = 1,
              workers: int | None = None, scheduler: str | None = None,
              progress: bool = True) -> SweepSummary:
    """Run the points of `hardware` (one file or several) x `workloads` x `grid` not yet in the
    store `db`, committing each as it finishes: in `workers` local processes (default: the CPU
    count), or on the Dask cluster whose scheduler is at `scheduler`. The store is created with
    the first finished point, so a sweep that fails before one (a bad network, an unreachable
    scheduler) leaves no file. On Ctrl-C the workers are stopped and what was committed stays;
    rerun to go on."""
    points = plan_points(hardware, workloads, grid, overrides, inputs, seed, trials)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    stored = set()
    if Path(db).exists():  # a foreign or corrupt file is refused here, before any work
        with Store(db) as existing:
            stored = existing.keys()
    todo = [p for p in points if p["key"] not in stored]
    summary = SweepSummary(0, len(points) - len(todo), len(points), str(db))
    if not todo:
        return summary
    check_workloads(hardware, workloads, overrides, inputs, seed)
    _check_creatable(Path(db))
    by_key = {p["key"]: p for p in todo}
    results = (_run_dask(todo, scheduler) if scheduler
               else _run_local(todo, min(workers, len(todo))))
    store = None
    try:
        with contextlib.closing(results), progress_bar(
                "sweep points", len(todo), enabled=progress) as update:
            for done, (key, result_json) in enumerate(results, 1):
                if store is None:
                    store = Store(db, writable=True)
                summary.ran += store.add(by_key[key], result_json)
                update(done, len(todo))
    except KeyboardInterrupt:
        print(f"accelsim: interrupted: {summary}; rerun to go on", file=sys.stderr)
        raise
    finally:
        if store is not None:
            store.close()
    return summary


def _check_creatable(db: Path) -> None:
    """A store that will be created needs a folder it can be written in: said before the
    points run, not after the first."""
    if db.exists():
        return
    folder = db.parent
    if not folder.is_dir():
        raise SweepError(f"{db}: cannot create the sweep store (no folder {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SweepError(f"{db}: cannot create the sweep store (folder {folder} is not "
                         f"writable)")
