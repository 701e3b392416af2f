"""Benchmark 2: `pipeline train` on the default config, wall time split by stage.

    .venv/bin/python bench/end_to_end.py [--repeats 3] [--config configs/default.yaml]

Each run is a fresh `pipeline train --force` process against one temporary MLflow store
(SQLite). Three set-ups, interleaved run by run:
  server     a Prefect server already running (`prefect server start` on a loopback port,
             started here and stopped at the end), PREFECT_API_URL pointing at it;
  ephemeral  no PREFECT_API_URL and an existing PREFECT_HOME: the CLI starts Prefect's
             server (`prefect server start`, its public command) in the background while
             the heavy libraries import;
  ephemeral, Prefect's own start   the same with PIPELINE_EARLY_PREFECT_SERVER=0: Prefect
             imports its server and starts it at the first flow call (the before).
Only public interfaces are used: the `pipeline` and `prefect` commands, Prefect's /api/health
endpoint and MlflowClient.get_run.
Stage times are the `time_*_s` metrics the flow logs to each MLflow run; `startup` runs from
process start to the flow body, `exit` from the end of the flow body to process exit (flow
run teardown, log flushing, server shutdown), measured as wall time minus the rest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import ROOT, fmt_range, free_port, machine_note, print_table, stats, stop_group

BIN = Path(sys.executable).parent
STAGES = ["startup", "setup", "ingest", "validate", "prepare", "train", "evaluate", "plots", "tracking", "registry"]
TARGETS = {"server": 8.0, "ephemeral": 12.0}


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy after {timeout}s")


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
    })
    return env


def run_train(env: dict[str, str], config: str, cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "pipeline"), "train", "--config", config, "--force"], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pipeline train failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    run_id = next(line.split()[2] for line in done.stdout.splitlines() if line.startswith("MLflow run:"))
    return wall, run_id


def stage_times(uri: str, run_id: str, wall: float) -> dict[str, float]:
    from mlflow import MlflowClient

    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    out = {s: metrics.get(f"time_{s}_s", 0.0) for s in STAGES}
    out["epoch_logging"] = metrics.get("time_epoch_logging_s", float("nan"))
    out["epochs"] = metrics.get("epochs_run", float("nan"))
    out["exit"] = max(0.0, wall - sum(out[s] for s in STAGES))
    out["wall"] = wall
    out["not_train"] = wall - out["train"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out Prefect's own ephemeral start")
    args = parser.parse_args()
    print(f"machine: {machine_note()}")
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    (work / "mlruns").mkdir()
    for folder in ("configs", "data"):  # runs happen in `work`, so nothing lands in the checkout
        shutil.copytree(ROOT / folder, work / folder)
    server = None
    try:
        env = base_env(work)
        uri = env["MLFLOW_TRACKING_URI"]
        port = free_port()
        server_env = {**env, "PREFECT_HOME": str(work / "prefect-server-home")}
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        api = f"http://127.0.0.1:{port}/api"
        print(f"prefect server start: healthy after {wait_healthy(api, server):.1f}s at {api}")
        setups = {
            "server": {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(work / "prefect-client-home")},
            "ephemeral": {**env, "PREFECT_HOME": str(work / "prefect-home")},
        }
        if not args.skip_baseline:
            setups["ephemeral, Prefect's own start"] = {**setups["ephemeral"], "PIPELINE_EARLY_PREFECT_SERVER": "0"}
        # Untimed: creates the MLflow store and the ephemeral PREFECT_HOME database (12-13 s when fresh).
        wall, _ = run_train(setups["ephemeral"], args.config, work)
        print(f"warm-up run (fresh PREFECT_HOME and MLflow store): {wall:.1f}s")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
        names = list(setups)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                wall, run_id = run_train(setups[name], args.config, work)
                results[name].append(stage_times(uri, run_id, wall))
                print(f"  repeat {r + 1} {name}: {wall:.1f}s", flush=True)
    finally:
        if server is not None:
            stop_group(server)
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for stage in [*STAGES, "exit", "wall", "not_train"]:
        label = {"not_train": "everything but train", "exit": "exit (teardown)", "startup": "import and start-up",
                 "setup": "MLflow client + experiment"}.get(stage, stage)
        rows.append([label, *[fmt_range([x[stage] for x in results[n]], 2) for n in names]])
    rows.append(["target, everything but train", *[f"< {TARGETS[n]:.0f}" if n in TARGETS else "" for n in names]])
    verdicts = []
    for n in names:
        med = stats([x["not_train"] for x in results[n]])[0]
        verdicts.append(("met" if med < TARGETS[n] else "missed") if n in TARGETS else "")
    rows.append(["verdict (median)", *verdicts])
    share = [x["epoch_logging"] / x["train"] for n in names for x in results[n] if x["train"] > 0]
    print_table(f"Table 3: `pipeline train --config {args.config}` by stage, seconds, median (min-max) of {args.repeats} runs",
                ["stage", *names], rows)
    epochs = [x["epochs"] for n in names for x in results[n]]
    print(f"\nper-epoch loss logging: {fmt_range([s * 100 for s in share], 2)} % of training time "
          f"over {len(share)} runs ({stats(epochs)[0]:.0f} epochs each; target < 5 %)")


if __name__ == "__main__":
    main()
