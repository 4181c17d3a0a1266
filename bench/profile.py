"""EDA speed: Pond's profile against DuckDB SUMMARIZE and ydata-profiling, plus ingest.

Run: .venv/bin/python bench/profile.py [--rows 1000000] [--repeat 1] [--skip-ydata]

Generates a table of --rows rows × 20 columns (8 floats, 5 integers, 4 categoricals, a boolean,
a date, a free-text column; some values missing) with numpy, writes it as Parquet and CSV in
a temporary folder, then times, each in a fresh Python process so that peak memory (the
process's peak resident set, VmHWM) belongs to that step alone:

- ingest from CSV and from Parquet: DuckDB ``COPY (SELECT * FROM read_...) TO ... (FORMAT
  parquet)``, as Pond's ingest does;
- Pond's full profile, ``core.profiling.compute_profile``, on the Parquet file DuckDB wrote;
- DuckDB ``SUMMARIZE`` of the same file, for reference;
- ydata-profiling with ``minimal=True`` on the same table as a pandas DataFrame (the time
  of ``ProfileReport(...).to_html()``; reading the frame is not counted, its memory is).

Wall and CPU time are measured inside the step's process around the work itself (not the
interpreter's start or imports); the figures printed are medians over --repeat runs. The
load average is printed too: other work on the machine slows every step's wall time, much
less its CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = {
    "ingest_csv": "DuckDB ingest, CSV -> Parquet",
    "ingest_parquet": "DuckDB ingest, Parquet -> Parquet",
    "pond_profile": "Pond profile (compute_profile)",
    "duckdb_summarize": "DuckDB SUMMARIZE (reference)",
    "ydata_minimal": "ydata-profiling minimal=True",
}
MEMORY_LIMIT = "400MB"
WORDS = (
    "the quick brown fox jumps over a lazy dog while data analysts profile large tables "
    "with many columns and some missing values in every second row"
).split()


def generate(rows: int, folder: Path, seed: int = 0) -> None:
    """Write the benchmark table as ``table.parquet`` and ``table.csv`` into ``folder``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)

    def with_missing(values: np.ndarray, share: float) -> pa.Array:
        return pa.array(values, mask=rng.random(rows) < share)

    normal = rng.normal(50, 10, rows)
    regions = np.array(["north", "south", "east", "west", "central"])
    words = pa.array(WORDS)
    sentence = [pc.take(words, rng.integers(0, len(WORDS), rows)) for _ in range(8)]
    columns = {
        "f_normal": pa.array(normal),
        "f_uniform": pa.array(rng.uniform(0, 1, rows)),
        "f_lognormal": pa.array(rng.lognormal(0, 1.2, rows)),
        "f_exponential": pa.array(rng.exponential(3, rows)),
        "f_missing_10pct": with_missing(rng.normal(0, 1, rows), 0.1),
        "f_price": pa.array(np.round(rng.gamma(2, 20, rows), 2)),
        "f_correlated": pa.array(normal * 0.8 + rng.normal(0, 5, rows)),
        "f_mostly_missing": with_missing(rng.normal(0, 1, rows), 0.7),
        "order_id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
        "i_small": pa.array(rng.integers(0, 11, rows)),
        "i_poisson": pa.array(rng.poisson(4, rows)),
        "i_big": pa.array(rng.integers(-(10**9), 10**9, rows)),
        "i_age": with_missing(rng.integers(18, 90, rows).astype(np.int32), 0.05),
        "c_region": pa.array(regions[rng.integers(0, len(regions), rows)]),
        "c_product": pc.binary_join_element_wise(
            "product_", pc.cast(pa.array(rng.integers(0, 200, rows)), pa.string()), ""
        ),
        "c_customer": pc.binary_join_element_wise(
            "cust_", pc.cast(pa.array(rng.integers(0, 100_000, rows)), pa.string()), ""
        ),
        "c_channel": with_missing(
            np.array(["web", "store", "phone"])[rng.integers(0, 3, rows)], 0.2
        ),
        "b_active": pa.array(rng.random(rows) < 0.3),
        "d_order_date": pa.array(
            np.datetime64("2020-01-01") + rng.integers(0, 1500, rows).astype("timedelta64[D]")
        ),
        "t_comment": pc.binary_join_element_wise(*sentence, " "),
    }
    table = pa.table(columns)
    pq.write_table(table, folder / "table.parquet")
    pacsv.write_csv(table, folder / "table.csv")


class Stopwatch:
    """Wall and CPU seconds spent inside a ``with`` block, in this process."""

    wall = cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def _peak_rss_mib() -> float:
    """This process's peak resident memory.

    Read from /proc rather than getrusage(): Linux carries ru_maxrss over exec, so a child
    would report its parent's peak if that was higher.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_step(step: str, folder: Path) -> Stopwatch:
    """Do one step's work in this process; return the time its work took."""
    import duckdb

    source = folder / "table.parquet"
    ingested = folder / "ingested.parquet"  # what Pond's ingest would store
    clock = Stopwatch()
    if step in ("ingest_csv", "ingest_parquet"):
        reader = (
            f"read_csv('{folder / 'table.csv'}')"
            if step == "ingest_csv"
            else f"read_parquet('{source}')"
        )
        out = folder / f"{step}.parquet"
        with duckdb.connect(config={"memory_limit": MEMORY_LIMIT}) as con, clock:
            con.execute(f"COPY (SELECT * FROM {reader}) TO '{out}' (FORMAT parquet)")
        if step == "ingest_parquet":
            out.replace(ingested)
    elif step == "pond_profile":
        from core.profiling import compute_profile

        with clock:
            compute_profile(ingested, memory_limit=MEMORY_LIMIT)
    elif step == "duckdb_summarize":
        with duckdb.connect(config={"memory_limit": MEMORY_LIMIT}) as con, clock:
            con.execute(f"SUMMARIZE SELECT * FROM read_parquet('{ingested}')").fetchall()
    elif step == "ydata_minimal":
        import warnings

        import pandas as pd

        os.environ["YDATA_PROFILING_NO_ANALYTICS"] = "True"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ydata_profiling import ProfileReport

            frame = pd.read_parquet(ingested)
            with clock:
                ProfileReport(frame, minimal=True, progress_bar=False).to_html()
    else:
        raise ValueError(f"unknown step {step!r}; choose one of {sorted(STEPS)}")
    return clock


def measure(step: str, folder: Path) -> tuple[float, float, float]:
    """Run a step in a fresh Python process; return (wall s, CPU s, peak RSS in MiB).

    CPU seconds vary less than wall time when other work shares the machine.
    """
    completed = subprocess.run(
        [sys.executable, __file__, "--step", step, "--folder", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return result["seconds"], result["cpu_seconds"], result["peak_rss_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--repeat", type=int, default=1, help="runs per step; prints medians")
    parser.add_argument("--skip-ydata", action="store_true", help="leave out ydata-profiling")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:  # a child process: do one step and report
        clock = run_step(args.step, args.folder)
        print(
            json.dumps(
                {"seconds": clock.wall, "cpu_seconds": clock.cpu, "peak_rss_mib": _peak_rss_mib()}
            )
        )
        return
    if args.generate:  # a child process, so the parent stays small
        generate(args.rows, args.folder)
        return
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")

    steps = [s for s in STEPS if not (args.skip_ydata and s == "ydata_minimal")]
    with tempfile.TemporaryDirectory(prefix="pond-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--generate", "--rows", str(args.rows), "--folder", tmp],
            check=True,
        )
        print(
            f"{args.rows:,} rows x 20 columns generated in {time.perf_counter() - started:.1f} s: "
            f"Parquet {(folder / 'table.parquet').stat().st_size / 2**20:.0f} MiB, "
            f"CSV {(folder / 'table.csv').stat().st_size / 2**20:.0f} MiB; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start",
            flush=True,
        )
        runs: dict[str, list[tuple[float, float, float]]] = {s: [] for s in steps}
        for _ in range(args.repeat):
            for step in steps:
                runs[step].append(measure(step, folder))
                print(f"  {step}: {runs[step][-1][0]:.2f} s", file=sys.stderr, flush=True)
    medians = {
        s: tuple(statistics.median(column) for column in zip(*runs[s], strict=True)) for s in steps
    }
    print(f"\nmedian of {args.repeat} run(s) per step, each in a fresh process")
    print(f"{'step':<36} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for step in steps:
        seconds, cpu, peak = medians[step]
        print(f"{STEPS[step]:<36} {seconds:>8.2f} {cpu:>8.2f} {peak:>13.0f}")
    pond_wall, pond_cpu, _ = medians["pond_profile"]
    summarize_wall, summarize_cpu, _ = medians["duckdb_summarize"]
    print(
        f"\nSUMMARIZE takes {summarize_wall / pond_wall:.1f}x Pond's profile wall time "
        f"({summarize_cpu / pond_cpu:.1f}x its CPU time)"
    )
    if "ydata_minimal" in medians:
        ydata_wall, ydata_cpu, _ = medians["ydata_minimal"]
        print(
            f"Pond's profile is {ydata_wall / pond_wall:.0f}x faster than ydata-profiling "
            f"minimal in wall time ({ydata_cpu / pond_cpu:.0f}x in CPU time; target >= 20x)"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
