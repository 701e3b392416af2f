"""Benchmark: many series with one network each (`model.strategy: local`), one after another vs on Dask.

    .venv/bin/python bench/local_dask.py [--series 24] [--epochs 15] [--workers 2]

The first `--series` series of M4 Hourly's training file (../shared/data/m4; synthetic hourly
series of as many rows where it is missing) as a long CSV; a local config (lookback 48, horizon
48, one layer of 32, `--epochs` epochs without early stopping, so every run does the same work);
`pipeline train` three times in fresh processes against their own MLflow stores: the series trained
one after another in the flow's process (`--parallel 1`, the default), `--workers` at a time in
local worker processes (`--parallel`), and on a `distributed.LocalCluster` of `--workers`
single-threaded worker processes started here (`--dask-address`). Printed:
wall time of the whole command and of its training stage (the `time_train_s` metric), the
command's CPU time, and the speed-up of the training stage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import ROOT, machine_note, print_table

sys.path.insert(0, str(ROOT / "bench"))
from m4 import M4_DIR, read_wide, wide_to_long  # noqa: E402

CONFIG = {
    "name": "bench-local",
    "data": {"series_column": "series", "date_column": "timestamp", "target": "value", "features": ["value"],
             "price_columns": ["value"], "volume_column": None, "freq": "h"},
    "split": {"val": 48, "test": 48},
    "window": {"lookback": 48, "horizon": 48},
    "preprocess": {"target_transform": "log", "default_feature_transform": "log"},
    "model": {"strategy": "local", "hidden_size": 32},
    "train": {"batch_size": 64, "patience": None, "num_threads": 1, "seed": 1},
    "evaluate": {"season_length": 24},
    "registry": {"min_gain_over_persistence": -0.99},
}


def series(count: int) -> dict[str, np.ndarray]:
    path = M4_DIR / "Hourly-train.csv"
    if path.is_file():
        return dict(list(read_wide(path).items())[:count])
    rng = np.random.default_rng(0)
    hours = np.arange(700)
    return {f"S{i}": 100 + 20 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 2, hours.size) for i in range(count)}


def run(work: Path, config: Path, extra: list[str]) -> tuple[float, float, float]:
    """`pipeline train` in a fresh process: (wall s, CPU s of the command itself, training stage s)."""
    from mlflow import MlflowClient

    store = work / f"mlflow-{'-'.join(extra).replace('/', '').replace(':', '') or 'plain'}.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "-q", "train", "--config", str(config), *extra],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"pipeline train {' '.join(extra)} failed")
    client = MlflowClient(f"sqlite:///{store}")
    found = client.search_runs([client.get_experiment_by_name("bench-local").experiment_id])
    return wall, usage.ru_utime + usage.ru_stime, found[0].data.metrics["time_train_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from distributed import LocalCluster

    print(machine_note())
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        work = Path(tmp)
        wide_to_long(series(args.series)).to_csv(work / "long.csv", index=False)
        cfg = {**CONFIG, "data": {**CONFIG["data"], "source": str(work / "long.csv")},
               "train": {**CONFIG["train"], "epochs": args.epochs}}
        (work / "local.yaml").write_text(yaml.safe_dump(cfg))
        results = {"one after another": run(work, work / "local.yaml", []),
                   f"{args.workers} worker processes": run(work, work / "local.yaml", ["--parallel", str(args.workers)])}
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            results[f"Dask, {args.workers} workers"] = run(work, work / "local.yaml",
                                                          ["--dask-address", cluster.scheduler_address])
    base = results["one after another"][2]
    rows = [[name, f"{wall:.1f}", f"{stage:.1f}", f"{cpu:.1f}", f"{base / stage:.2f}x"]
            for name, (wall, cpu, stage) in results.items()]
    print_table(f"{args.series} M4 Hourly series, local strategy, {args.epochs} epochs each",
                ["series trained", "command wall s", "training stage s", "command CPU s", "training speed-up"], rows)


if __name__ == "__main__":
    main()
