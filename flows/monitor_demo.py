"""`make monitor-demo`: the monitoring loop in a few minutes, on the project's own portfolio sample.

1. Start a Prefect server, the process work pool, prefect.yaml's deployments (with the retraining trigger) and a
   worker, all local and under `monitor-demo/` (stopped at the end).
2. Train `monitor-demo` on each store's history but its last 28 days (data/portfolio.csv).
3. Let 28 days "arrive", the stores north and east 30 % higher from the 8th: a batch forecast each day.
4. `pipeline monitor` on what arrived: the live error per forecast date (an MLflow chart), the degraded and
   drifted stores, and the retraining event; the automation starts the retraining deployment, the worker trains
   and registers version 2.

Everything lands in the project's MLflow store: `make ui` shows the monitor run's chart.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "monitor-demo"
ARRIVING_DAYS = 28
SHIFT_FROM_DAY, SHIFTED, SHIFT = 8, ("north", "east"), 1.3


def write_data(folder: Path) -> tuple[Path, list[Path]]:
    """The history (each store but its last 28 days) and the data as it stands after each arriving day."""
    frame = pd.read_csv(ROOT / "data" / "portfolio.csv", dtype={"store": str, "date": str})
    day = frame.groupby("store").cumcount(ascending=False)  # 0 on each store's last row
    arriving = ARRIVING_DAYS - day  # 1..28 over the last 28 rows of each store
    shifted = (arriving >= SHIFT_FROM_DAY) & frame["store"].isin(SHIFTED)
    frame.loc[shifted, "sales"] = (frame.loc[shifted, "sales"] * SHIFT).round(2)
    history = folder / "history.csv"
    frame[arriving <= 0].to_csv(history, index=False)
    days = []
    for k in range(1, ARRIVING_DAYS + 1):
        path = folder / f"day{k:02d}.csv"
        frame[arriving <= k].to_csv(path, index=False)
        days.append(path)
    return history, days


def write_config(folder: Path, history: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "portfolio.yaml").read_text())
    raw["name"] = NAME
    raw["data"]["source"] = str(history)
    raw["train"].update({"epochs": 30, "refit": False})  # minutes, not tens of them
    raw["tracking"] = {"experiment": NAME}
    raw["registry"] = {**raw.get("registry", {}), "model_name": NAME}
    raw["monitoring"] = {"window": 14}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@contextlib.contextmanager
def local_prefect(folder: Path, port: int) -> Iterator[dict[str, str]]:
    """A Prefect server, the pool, prefect.yaml's deployments and a worker, as `make server/deploy/worker` start
    them; stopped on the way out. Yields the environment that talks to them."""
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "2", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    started: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = (folder / f"{name}.log").open("w")
        started.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True))

    try:
        start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            if started[0].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Prefect server did not start: see {folder / 'server.log'}")
            time.sleep(0.5)
        for args in (("work-pool", "create", "local-process", "--type", "process", "--overwrite"),
                     ("--no-prompt", "deploy", "--all")):
            subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, check=True, capture_output=True)
        start("worker", str(BIN / "prefect"), "worker", "start", "--pool", "local-process")
        yield env
    finally:
        for proc in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)


def versions(name: str) -> list[str]:
    from mlflow import MlflowClient

    return sorted((str(v.version) for v in MlflowClient().search_model_versions(f"name = '{name}'")), key=int)


def wait_for_retraining(event_id: str, before: list[str], folder: Path) -> None:
    """Until the retraining that the event triggered has registered a new version (10 minutes at most)."""
    print(f"4. event sent ({event_id}); the automation starts the retraining deployment ...", flush=True)
    deadline = time.monotonic() + 600
    while versions(NAME) == before and time.monotonic() < deadline:
        time.sleep(3)
    after = versions(NAME)
    print(f"   registered versions: {', '.join(before)} -> {', '.join(after)}"
          + ("" if after != before else f" (no new version yet: see {folder / 'worker.log'})"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="monitor-demo", help="where the demo writes (default: %(default)s)")
    parser.add_argument("--port", type=int, default=4299, help="the demo's Prefect server port (default: %(default)s)")
    args = parser.parse_args(argv)
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    history, days = write_data(folder)
    config = write_config(folder, history)
    pipeline = str(BIN / "pipeline")
    with local_prefect(folder, args.port) as env:
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")})
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # the flows below run here: their steps stay quiet
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        print(f"1. Prefect server, pool, deployments and worker up on :{args.port}; training {NAME} ...", flush=True)
        subprocess.run([pipeline, "-q", "train", "--config", str(config), "--force"], cwd=ROOT, env=env, check=True)
        subprocess.run([pipeline, "-q", "promote", NAME, versions(NAME)[-1], "--reason", "the demo's champion"],
                       cwd=ROOT, env=env, capture_output=True)  # "already the champion" is fine too
        before = versions(NAME)
        print(f"2. {ARRIVING_DAYS} days arrive ({', '.join(SHIFTED)} 30 % higher from day {SHIFT_FROM_DAY}); "
              "a batch forecast each day ...", flush=True)
        from flows.forecast import forecast_flow
        from flows.monitor import monitor_flow

        for data in [history, *days[:-1]]:
            forecast_flow(model=f"models:/{NAME}@champion", data=str(data), out=None, shadow=True)
        print("3. pipeline monitor on what arrived:", flush=True)
        summary = monitor_flow(model=f"models:/{NAME}@champion", data=str(days[-1]), retrain_config=str(config))
        print(f"   {summary.verdict.headline}")
        print(f"   degraded: {', '.join(summary.verdict.degraded) or 'none'}; "
              f"drifted: {', '.join(summary.verdict.drifted) or 'none'}")
        if summary.event_id:
            wait_for_retraining(summary.event_id, before, folder)
    print(f"\nThe live error over time: `make ui`, experiment 'monitoring', run {summary.run_id}, chart "
          f"live_date_mase (one point per forecast date); the retraining run is in experiment '{NAME}'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
