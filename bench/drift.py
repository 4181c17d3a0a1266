"""Benchmark: Pond's drift report against Evidently 0.7's DataDriftPreset on the same data.

Generates a reference and a current frame (1,000,000 rows each by default, 20
columns: 13 numeric, 7 categorical, drift planted in 7 of them), then measures
in a fresh subprocess per measurement, so peak memory (ru_maxrss) belongs to
that measurement alone:

- Pond, cold: the first report on the reference, which also computes and stores
  the reference statistics (sorted values, counts) once;
- Pond, warm: a later report, reading the stored reference statistics;
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` on pandas
  frames read from the same Parquet files (its time excludes reading them).

It prints wall time and peak memory of each, the speed-up, whether both flag
the same columns, and the largest score difference.

Evidently 0.7 declares plotly < 6 and Pond needs plotly >= 6, so it cannot share
Pond's environment through an extra. It runs from the first of: --evidently-python,
this interpreter when it can import evidently, or a virtual environment the script
makes once with uv under ~/.cache/pond/. --skip-evidently measures Pond alone.

    .venv/bin/python bench/drift.py [--rows N] [--repeat K] [--skip-evidently]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVIDENTLY = "evidently==0.7.*"
EVIDENTLY_VENV = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pond"
                  / "bench-evidently-venv")
N_COLUMNS = 20
# Columns whose current distribution is moved; every other column is resampled unchanged.
PLANTED = ("f0", "f1", "f5", "i0", "k0", "s0", "s1")


def generate(folder: Path, rows: int, seed: int = 7) -> None:
    """Write reference.parquet and current.parquet (no nulls, so pandas keeps int dtypes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def frame(rng: np.random.Generator, drifted: bool) -> pa.Table:
        n = rows
        shift = 1 if drifted else 0
        cols: dict[str, Any] = {
            "f0": rng.normal(0.3 * shift, 1.0, n),
            "f1": rng.normal(10.0, 2.0 * (1 + 0.5 * shift), n),
            "f2": rng.normal(-5.0, 0.5, n),
            "f3": rng.uniform(0.0, 100.0, n),
            "f4": rng.exponential(3.0, n),
            "f5": rng.lognormal(0.2 * shift, 0.75, n),
            "f6": rng.gamma(2.0, 2.0, n),
            "f7": rng.normal(1000.0, 250.0, n),
            "f8": rng.beta(2.0, 5.0, n),
            "f9": np.round(rng.normal(50.0, 10.0, n), 1),  # many ties
            "i0": rng.integers(18, 80 + 15 * shift, n),
            "i1": rng.integers(0, 1000, n),
            "i2": rng.poisson(30, n),
            "k0": rng.choice(6, n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05] if not drifted
                             else [0.2, 0.2, 0.15, 0.15, 0.15, 0.15]),
            "k1": rng.integers(0, 3, n),
        }
        cities = np.array(["lisbon", "porto", "oslo", "bergen", "lyon", "turin", "graz"])
        cols["s0"] = cities[rng.choice(7, n, p=(
            [0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.05] if not drifted
            else [0.1, 0.1, 0.15, 0.2, 0.15, 0.15, 0.15]))]
        plans = np.array(["free", "basic", "pro", "team", "enterprise"])
        s1 = plans[rng.choice(5, n, p=[0.4, 0.3, 0.15, 0.1, 0.05])]
        if drifted:  # a category the reference never saw
            s1[rng.random(n) < 0.2] = "trial"
        cols["s1"] = s1
        cols["s2"] = np.array(["web", "ios", "android"])[rng.integers(0, 3, n)]
        cols["s3"] = np.array(["a", "b"])[rng.integers(0, 2, n)]
        cols["s4"] = np.array([f"region_{i:02d}" for i in range(12)])[rng.integers(0, 12, n)]
        assert len(cols) == N_COLUMNS
        return pa.table(cols)

    rng = np.random.default_rng(seed)
    pq.write_table(frame(rng, False), folder / "reference.parquet")
    pq.write_table(frame(rng, True), folder / "current.parquet")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_setup(folder: Path) -> None:
    from core import auth, datasets, store

    ws = store.open_workspace(folder / "pond")
    auth.add_user(ws, "admin", "admin", "bench-password", actor=auth.SYSTEM)
    admin = auth.get_user(ws, "admin")
    for name in ("reference", "current"):
        datasets.ingest(ws, folder / f"{name}.parquet", name, actor=admin)


def run_pond(folder: Path) -> dict[str, Any]:
    from core import auth, drift, store

    ws = store.open_workspace(folder / "pond")
    admin = auth.get_user(ws, "admin")
    started = time.perf_counter()
    report = drift.drift_report(ws, reference="reference", current="current", actor=admin)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "scores": {c.column: c.score for c in report.columns},
        "drifted": {c.column: c.drifted for c in report.columns},
        "tests": {c.column: c.test_label for c in report.columns},
        "share": report.drifted_share,
    }


# Evidently's verdict per test, as its stat tests decide it (K-S p ≤ t; chi-square, Z p < t;
# distances d ≥ t).
def _evidently_drifted(method: str, score: float, threshold: float) -> bool:
    if method.startswith("K-S"):
        return score <= threshold
    if "p_value" in method:
        return score < threshold
    return score >= threshold


def run_evidently(folder: Path) -> dict[str, Any]:
    import pandas as pd
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    reference = pd.read_parquet(folder / "reference.parquet")
    current = pd.read_parquet(folder / "current.parquet")
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current), Dataset.from_pandas(reference)
    )
    seconds = time.perf_counter() - started
    scores, drifted, tests, share = {}, {}, {}, None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            column = config["column"]
            scores[column] = float(metric["value"])
            tests[column] = config["method"]
            drifted[column] = _evidently_drifted(config["method"], scores[column],
                                                 float(config["threshold"]))
        elif config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
    return {"seconds": seconds, "load_seconds": load_seconds, "peak_mb": _peak_mb(),
            "scores": scores, "drifted": drifted, "tests": tests, "share": share}


def evidently_python(explicit: str | None) -> str:
    """A Python that imports evidently 0.7 (see the module docstring for which)."""
    probe = "import evidently, pandas, pyarrow; assert evidently.__version__.startswith('0.7')"
    if explicit:
        return explicit
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return sys.executable
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        print(f"installing {EVIDENTLY} into {EVIDENTLY_VENV} (once)…", flush=True)
        subprocess.run([uv, "venv", str(EVIDENTLY_VENV), "--python", sys.executable],
                       check=True, capture_output=True)
        # Evidently 0.7 fails to import with pandas 3; the same numpy, scipy and pandas as
        # Pond's keep the two sides' arithmetic comparable.
        pins = [f"{name}=={metadata.version(name)}" for name in ("numpy", "scipy", "pandas")]
        subprocess.run([uv, "pip", "install", "--python", str(python), EVIDENTLY, "pyarrow",
                        *pins], check=True, capture_output=True)
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        raise SystemExit(f"{EVIDENTLY_VENV} has no working {EVIDENTLY}; remove it and retry")
    return str(python)


def _child(what: str, folder: Path, python: str = sys.executable) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    found = subprocess.run(
        [python, __file__, "--child", what, "--folder", str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if found.returncode != 0:
        raise SystemExit(f"{what} failed:\n{found.stderr[-4000:]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows in each of the reference and current frames (default 1e6)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each side this many times and print medians (default 1)")
    parser.add_argument("--skip-evidently", action="store_true",
                        help="measure Pond only")
    parser.add_argument("--evidently-python",
                        help="a Python with evidently 0.7, pandas and pyarrow (default: see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runner = {"setup": run_setup, "pond": run_pond, "evidently": run_evidently}[args.child]
        result = runner(Path(args.folder))
        print(json.dumps(result if result is not None else {}))
        return

    peer = None if args.skip_evidently else evidently_python(args.evidently_python)
    with tempfile.TemporaryDirectory(prefix="pond-drift-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        generate(folder, args.rows)
        print(f"data: {args.rows:,} reference rows and {args.rows:,} current rows, "
              f"{N_COLUMNS} columns, drift planted in {', '.join(PLANTED)} "
              f"({time.perf_counter() - started:.1f} s to generate)")
        cold, warm, evid = [], [], []
        for _ in range(args.repeat):
            # A fresh workspace each round, so "cold" really computes the reference statistics.
            (folder / "pond").exists() and _rmtree(folder / "pond")
            _child("setup", folder)
            cold.append(_child("pond", folder))
            warm.append(_child("pond", folder))
            if peer is not None:
                evid.append(_child("evidently", folder, peer))
        _print(cold, warm, evid)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def _median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _print(cold: list[dict[str, Any]], warm: list[dict[str, Any]],
           evid: list[dict[str, Any]]) -> None:
    n = len(cold)
    label = "median of " + str(n) if n > 1 else "one run"
    print(f"\nwall time and peak memory ({label}; each in its own process)")
    rows = [("Pond, cold (computes and stores reference stats)", cold),
            ("Pond, warm (stored reference stats)", warm)]
    if evid:
        rows.append(("Evidently 0.7 DataDriftPreset (Report.run only)", evid))
    for name, results in rows:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in results)
        print(f"  {name:<52} {_median(results, 'seconds'):8.2f} s   "
              f"{_median(results, 'peak_mb'):7.0f} MB peak" + (f"   (runs: {runs} s)"
                                                              if n > 1 else ""))
    if evid:
        load = _median(evid, "load_seconds")
        print(f"  (Evidently also spent {load:.2f} s reading the Parquet files into pandas)")
        ev = _median(evid, "seconds")
        print(f"\nspeed-up: {ev / _median(cold, 'seconds'):.1f}x cold, "
              f"{ev / _median(warm, 'seconds'):.1f}x warm")
        pond, other = cold[-1], evid[-1]
        same_columns = set(pond["scores"]) == set(other["scores"])
        flagged_pond = sorted(c for c, d in pond["drifted"].items() if d)
        flagged_evid = sorted(c for c, d in other["drifted"].items() if d)
        diffs = {c: abs(pond["scores"][c] - other["scores"][c])
                 for c in pond["scores"] if c in other["scores"]}
        worst = max(diffs, key=diffs.get) if diffs else None
        same_tests = all(pond["tests"][c].replace("-value", "_value").replace(" p_value", "")
                         .lower().split()[0] == other["tests"][c].lower().split()[0]
                         for c in diffs)
        print(f"same columns tested: {same_columns} ({len(pond['scores'])} vs "
              f"{len(other['scores'])}); same tests: {same_tests}")
        print(f"Pond flags:      {', '.join(flagged_pond) or '(none)'} "
              f"(share {pond['share']:.2f})")
        print(f"Evidently flags: {', '.join(flagged_evid) or '(none)'} "
              f"(share {other['share']:.2f})")
        print(f"same verdicts: {flagged_pond == flagged_evid}")
        if worst is not None:
            print(f"max |score difference|: {diffs[worst]:.3g} (column {worst}: Pond "
                  f"{pond['scores'][worst]!r}, Evidently {other['scores'][worst]!r})")
    else:
        flagged = sorted(c for c, d in cold[-1]["drifted"].items() if d)
        print(f"\nPond flags: {', '.join(flagged)} (planted: {', '.join(sorted(PLANTED))})")


if __name__ == "__main__":
    main()
