"""REST serving under load: Pond's server beside `mlflow models serve` on one model.

Run: .venv/bin/python bench/serve.py [--seconds 5] [--repeats 3] [--workers N]
     [--mlflow-workers N] [--skip-mlflow]

What it does, all on loopback:

1. Trains a 100-tree LightGBM binary classifier on 12 features (10 numbers, 2
   categories) with a Pond contract, registers it, approves it, makes it the
   `champion` and creates a token, in a temporary workspace.
2. Starts `pond serve` and `mlflow models serve --env-manager local` (same booster)
   in their own processes and measures both with `wrk` (Debian's `apt-get install -y
   wrk`), a separate process: requests/s and p50/p99 latency of single-record
   requests at 1, 16 and 64 concurrent connections, and rows/s for 1,000-record
   batches. The servers take turns run by run and each scenario is repeated, so a
   noisy machine slows both alike; the table shows medians. Without wrk it uses an
   asyncio/httpx client in a child process.
3. Stops Pond with SIGTERM and checks that every answered request is in the
   Parquet inference log (no errors, no lost rows).

MLflow is used from this environment when `pip install -e .[bench]` put it here;
otherwise from a separate virtual environment made with uv under
~/.cache/pond/bench-mlflow (MLflow pins versions, pyarrow<26 among them, that Pond's
own environment must not take). When neither works, its rows are skipped with a note.

MLflow gets the same rows with the categories already as codes (its pyfunc takes a
DataFrame and does no mapping), which only favours it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core import auth, inference_log, model_contract, registry, store, tokens  # noqa: E402
from core.model_contract import Contract, Feature  # noqa: E402

MLFLOW_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pond" / \
    "bench-mlflow"
REGIONS = ("north", "south", "east", "west", "centre")
PLANS = ("basic", "plus", "pro")
PASSWORD = "bench-password"


# --- the model ----------------------------------------------------------------------------


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n).round(4) for i in range(10)})
    frame["region"] = rng.choice(REGIONS, n)
    frame["plan"] = rng.choice(PLANS, n)
    return frame


def train(folder: Path) -> tuple[dict[str, Path], Contract]:
    frame = make_frame(20_000, 0)
    contract = Contract(
        features=tuple(Feature(f"x{i}", "numeric", "float64") for i in range(10))
        + (Feature("region", "category", "object", REGIONS),
           Feature("plan", "category", "object", PLANS)),
        target="churned", task="binary", classes=(0, 1),
    )
    matrix = model_contract.encode_frame(contract, frame).matrix
    logit = matrix[:, 0] + 0.5 * matrix[:, 1] * matrix[:, 2] + (matrix[:, 10] == 1) - 0.3
    label = (logit + np.random.default_rng(1).normal(size=len(frame)) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "verbose": -1,
         "seed": 0},
        lgb.Dataset(matrix, label, categorical_feature=contract.categorical_indices),
        num_boost_round=100,
    )
    return model_contract.save_model(booster, contract, folder), contract


def make_workspace(home: Path, files: dict[str, Path]) -> str:
    ws = store.open_workspace(home)
    auth.add_user(ws, "admin", "admin", PASSWORD, actor=auth.SYSTEM)
    admin = auth.get_user(ws, "admin")
    auth.add_user(ws, "ana", "analyst", PASSWORD, actor=admin)
    auth.add_user(ws, "rita", "reviewer", PASSWORD, actor=admin)
    ana, rita = auth.get_user(ws, "ana"), auth.get_user(ws, "rita")
    version = registry.register_version(
        ws, "churn", files, metrics={}, params={"num_boost_round": 100}, lineage={},
        actor=ana, flavor="lightgbm", task="binary", request_approval=True, comment="bench",
    )
    registry.approve(ws, "churn", version.version, actor=rita)
    registry.set_alias(ws, "churn", "champion", version.version, actor=rita)
    return tokens.create_token(ws, "bench", actor=admin)[1]


# --- load generation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    server: str
    clients: int
    rows_per_request: int
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = float("nan")  # server CPU time per request, all its processes

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, body: bytes, headers: dict[str, str], clients: int, seconds: int,
            server: str, rows: int, scratch: Path) -> Run:
    script = scratch / f"wrk-{clients}-{rows}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    assert done, out
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    took = float(done.group(2)) * (60 if done.group(3) == "m" else 1)
    return Run(server, clients, rows, int(done.group(1)), took,
               float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
               _ms(latency["50"]), _ms(latency["99"]), errors)


_PY_CLIENT = textwrap.dedent('''
    import asyncio, json, sys, time
    import httpx
    url, body, headers, clients, seconds = sys.argv[1], sys.argv[2].encode(), json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    async def main():
        lat, errors = [], 0
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            end = time.perf_counter() + seconds
            async def worker():
                nonlocal errors
                while time.perf_counter() < end:
                    t = time.perf_counter()
                    r = await client.post(url, content=body, headers=headers)
                    lat.append(time.perf_counter() - t)
                    errors += r.status_code != 200
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            took = time.perf_counter() - start
        lat.sort()
        print(json.dumps({"requests": len(lat), "seconds": took, "p50": lat[len(lat) // 2] * 1e3,
                          "p99": lat[int(len(lat) * 0.99)] * 1e3, "errors": errors}))
    asyncio.run(main())
''')


def run_python_client(url: str, body: bytes, headers: dict[str, str], clients: int,
                      seconds: int, server: str, rows: int, scratch: Path) -> Run:
    out = subprocess.run(
        [sys.executable, "-c", _PY_CLIENT, url, body.decode(), json.dumps(headers),
         str(clients), str(seconds)], capture_output=True, text=True, check=True,
    ).stdout
    r = json.loads(out)
    return Run(server, clients, rows, r["requests"], r["seconds"],
               r["requests"] / r["seconds"], r["p50"], r["p99"], r["errors"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s")


# --- MLflow ---------------------------------------------------------------------------------


def mlflow_python(explicit: str | None) -> tuple[str | None, str]:
    """A Python with mlflow and lightgbm, and a note on where it came from."""
    if explicit:
        return explicit, f"mlflow from {explicit}"
    probe = "import mlflow, lightgbm; print(mlflow.__version__)"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return sys.executable, "mlflow from this environment"
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        try:
            subprocess.run([uv, "venv", str(MLFLOW_VENV), "--python", sys.executable],
                           check=True, capture_output=True)
            subprocess.run([uv, "pip", "install", "--python", str(python), "mlflow",
                            "lightgbm"], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            return None, f"MLflow skipped: could not install it into {MLFLOW_VENV} ({exc})"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        return None, f"MLflow skipped: {MLFLOW_VENV} has no working mlflow"
    return str(python), f"mlflow from {MLFLOW_VENV}"


def start_mlflow(python: str, model_file: Path, scratch: Path,
                 workers: int = 1) -> tuple[subprocess.Popen, str, str]:
    model_dir = scratch / "mlflow-model"
    subprocess.run(
        [python, "-c", "import sys, lightgbm as lgb, mlflow.lightgbm; "
         "mlflow.lightgbm.save_model(lgb.Booster(model_file=sys.argv[1]), sys.argv[2])",
         str(model_file), str(model_dir)],
        check=True, capture_output=True,
    )
    version = subprocess.run([python, "-c", "import mlflow; print(mlflow.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    # mlflow execs `uvicorn` by name, so its environment's bin folder goes first on PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{scratch / 'mlruns'}",
           "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        [str(Path(python).parent / "mlflow"), "models", "serve", "-m", str(model_dir),
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    wait_for(f"http://127.0.0.1:{port}/ping", proc, "mlflow models serve")
    return proc, f"http://127.0.0.1:{port}/invocations", version


def stop(proc: subprocess.Popen, *, group: bool) -> None:
    """SIGTERM (to its process group when it spawned its own workers), then wait."""
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- main -----------------------------------------------------------------------------------

SCENARIOS = ((1, 1), (16, 1), (64, 1), (2, 1000))  # (concurrent clients, records per request)


@dataclass(frozen=True)
class Target:
    """One server under test: where to send, what to send, and its process group."""

    name: str
    url: str
    headers: dict[str, str]
    bodies: dict[int, bytes]  # records per request → body
    pgid: int


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group.

    Unlike requests/s, this does not depend on how much of the machine the
    server got, so it compares servers fairly on a busy machine.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[2] is the process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def median_run(runs: list[Run]) -> Run:
    """The per-field medians of repeated runs of one scenario."""
    def mid(values: list[float]) -> float:
        return statistics.median(values)

    first = runs[0]
    return Run(first.server, first.clients, first.rows_per_request,
               sum(r.requests for r in runs), sum(r.seconds for r in runs),
               mid([r.requests_per_s for r in runs]), mid([r.p50_ms for r in runs]),
               mid([r.p99_ms for r in runs]), sum(r.errors for r in runs),
               mid([r.cpu_us for r in runs]))


def measure(load, targets: list[Target], seconds: int, repeats: int,
            scratch: Path) -> tuple[dict[str, list[Run]], dict[str, int]]:
    """Every scenario `repeats` times, the servers taking turns run by run, so that
    a noisy neighbour slows them alike. Returns medians per server, and the number of
    requests each server answered in all (warm-ups included)."""
    answered = dict.fromkeys((t.name for t in targets), 0)
    for t in targets:
        answered[t.name] += load(t.url, t.bodies[1], t.headers, 4, 2, t.name, 1,
                                 scratch).requests
    raw: dict[tuple[str, int, int], list[Run]] = {}
    for _ in range(repeats):
        for clients, rows in SCENARIOS:
            for t in targets:
                before = cpu_seconds(t.pgid)
                run = load(t.url, t.bodies[rows], t.headers, clients, seconds, t.name, rows,
                           scratch)
                cpu = cpu_seconds(t.pgid) - before
                run = dataclasses.replace(run, cpu_us=cpu / max(run.requests, 1) * 1e6)
                raw.setdefault((t.name, clients, rows), []).append(run)
                answered[t.name] += run.requests
    medians = {t.name: [median_run(raw[(t.name, c, r)]) for c, r in SCENARIOS]
               for t in targets}
    return medians, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per scenario and server; the table shows medians")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="pond serve --workers (default: one per core, as the README "
                        "advises)")
    parser.add_argument("--mlflow-workers", type=int, default=1,
                        help="mlflow models serve --workers (default: MLflow's own, 1)")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure Pond only")
    parser.add_argument("--mlflow-python", help="a Python with mlflow and lightgbm")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="pond-bench-serve-"))
    load = run_wrk if shutil.which("wrk") else run_python_client
    files, contract = train(scratch / "model")
    token = make_workspace(scratch / "pond", files)
    records = make_frame(1000, 7).to_dict(orient="records")
    codes = model_contract.encode_records(contract, records).matrix
    coded = [dict(zip(contract.feature_names, row, strict=True)) for row in codes.tolist()]

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line), "?")
    load_avg = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores ({cpu}), load average {load_avg:.1f} at start; "
          f"Python {platform.python_version()}, lightgbm {lgb.__version__}; load generator: "
          f"{'wrk -t1' if load is run_wrk else 'asyncio/httpx'} in its own process; "
          f"{args.repeats} × {args.seconds} s per scenario and server, medians shown")

    port = free_port()
    env = {**os.environ, "POND_HOME": str(scratch / "pond")}
    pond = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--port", str(port), "--workers",
         str(args.workers), "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    targets = [Target(
        f"pond ({args.workers} worker{'s' if args.workers > 1 else ''})",
        f"http://127.0.0.1:{port}/v1/models/churn/predict",
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        {1: json.dumps({"records": records[:1]}).encode(),
         1000: json.dumps({"records": records}).encode()},
        pond.pid,
    )]
    mlflow_proc = None
    mlflow_note = "MLflow skipped (--skip-mlflow)"
    try:
        wait_for(f"http://127.0.0.1:{port}/health", pond, "pond serve")
        if not args.skip_mlflow:
            python, mlflow_note = mlflow_python(args.mlflow_python)
            if python is not None:
                try:
                    mlflow_proc, ml_url, version = start_mlflow(
                        python, files["model.txt"], scratch, args.mlflow_workers)
                    mlflow_note += (f" (MLflow {version}, {args.mlflow_workers} worker"
                                    f"{'s' if args.mlflow_workers > 1 else ''})")
                    targets.append(Target(
                        f"mlflow {version} ({args.mlflow_workers} worker"
                        f"{'s' if args.mlflow_workers > 1 else ''})", ml_url, {"Content-Type": "application/json"},
                        {1: json.dumps({"dataframe_records": coded[:1]}).encode(),
                         1000: json.dumps({"dataframe_records": coded}).encode()},
                        mlflow_proc.pid,
                    ))
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    mlflow_note = f"MLflow skipped: {exc}"
        medians, answered = measure(load, targets, args.seconds, args.repeats, scratch)
    finally:
        stop(pond, group=False)
        if mlflow_proc is not None:
            stop(mlflow_proc, group=True)
    logged = inference_log.inference_rows(store.open_workspace(scratch / "pond"), "churn")
    ok_logged = int((logged["status"] == 200).sum())

    print(mlflow_note)
    print()
    print("| server | clients | rows/request | requests/s | rows/s | p50 ms | p99 ms | errors "
          "| server CPU µs/request |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for runs in medians.values():
        for r in runs:
            print(f"| {r.server} | {r.clients} | {r.rows_per_request:,} | "
                  f"{r.requests_per_s:,.0f} | {r.rows_per_s:,.0f} | {r.p50_ms:.2f} | "
                  f"{r.p99_ms:.2f} | {r.errors} | {r.cpu_us:,.0f} |")
    pond_name = targets[0].name
    pond_runs = medians[pond_name]
    print()
    print(f"single-record p50 at 1 client: {pond_runs[0].p50_ms:.2f} ms (target <= 1 ms)")
    if len(targets) > 1:
        ml_runs = medians[targets[1].name]
        print(f"requests/s at 16 clients: Pond / MLflow = "
              f"{pond_runs[1].requests_per_s / ml_runs[1].requests_per_s:.1f}x (target >= 20x); "
              f"server CPU per request: MLflow / Pond = "
              f"{ml_runs[1].cpu_us / pond_runs[1].cpu_us:.1f}x")
        print(f"rows/s in 1,000-record batches: Pond / MLflow = "
              f"{pond_runs[3].rows_per_s / ml_runs[3].rows_per_s:.1f}x")
    errors = sum(r.errors for r in pond_runs)
    # The load generator counts the answers it received; the server also logs the few it
    # answered while wrk was closing its connections at the end of each run.
    print(f"Pond: {errors} errors; {answered[pond_name]:,} answers received by the load "
          f"generator, {len(logged):,} rows in the inference log ({ok_logged:,} with status "
          f"200); lost rows: {max(0, answered[pond_name] - ok_logged)}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
