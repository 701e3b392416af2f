"""Benchmark: wall time of a 4-trial sweep at parallelism 1 and 2, and peak memory per trial.

    .venv/bin/python bench/sweep.py [--trials 4] [--epochs 40] [--parallel 1,2] [--data WMT]

Each parallelism runs `flows.sweep.run_sweep` in a fresh process against its own temporary
MLflow store and Prefect home. The space varies only the learning rate and weight decay, and
pruning and early stopping are off, so every trial does the same work whatever the sampler
picks: 2 layers of 64 units on WMT's 4,029 rows (../shared/data; a synthetic series of as many
rows where it is missing), batch 64, `--epochs` epochs. Parallelism 1 runs the trials on a
thread of the flow's process with every core; parallelism P > 1 on P worker processes with
cores / P torch threads each. The table gives the trials' wall time (first start to last end:
Prefect's start-up, ingestion and the winner's refit are left out and shown apart), the
speed-up over parallelism 1, the median trial's wall and CPU time, and the peak resident memory of the
processes that ran the trials (ru_maxrss: the imported libraries plus one trial), next to a
process that imported the same libraries and trained nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, data_path, machine_note, print_table, synthetic_prices

SPACE = """trials: {trials}
seed: 1
pruning: {{enabled: false}}
params:
  train.learning_rate: {{type: float, low: 1.0e-4, high: 3.0e-3, log: true}}
  train.weight_decay:  {{type: float, low: 1.0e-6, high: 1.0e-3, log: true}}
"""
CONFIG = """name: bench-sweep
data: {{source: {source}}}
model: {{hidden_size: 64, num_layers: 2, dropout: 0.0}}
train: {{epochs: {epochs}, batch_size: 64, patience: null}}
tracking: {{experiment: bench-sweep}}
registry: {{enabled: false}}
"""


def child(parallel: int, folder: Path) -> None:
    """One sweep in this process; prints a JSON line of its figures."""
    from pipeline.cli.main import configure_logging, flow_start_up

    configure_logging(quiet=True)
    with flow_start_up():  # Prefect's server boots while the libraries import, as for `pipeline sweep`
        from flows.sweep import run_sweep

    summary = run_sweep(str(folder / "space.yaml"), str(folder / "config.yaml"), parallel=parallel)
    print(json.dumps({
        "parallel": parallel, "runner": summary.runner, "trials_s": summary.trials_seconds, "total_s": summary.seconds,
        "trial_s": sorted(o.seconds for o in summary.outcomes),
        "trial_rss_mb": [o.metrics.get("peak_rss_mb") for o in summary.outcomes],
        "trial_cpu_s": sorted(o.metrics.get("cpu_trial_s", float("nan")) for o in summary.outcomes),
        "process_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def baseline_rss() -> float:
    """Peak memory of a process that imports what a trial's worker imports and trains nothing (MiB)."""
    code = ("import resource, torch, pandas, mlflow, prefect, optuna; import pipeline.tuning.sweep, pipeline.tracking.store; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env_for(None))
    return float(out.stdout.strip().splitlines()[-1])


def env_for(folder: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "ERROR",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if folder is not None:
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}", PREFECT_HOME=str(folder / "prefect"))
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--parallel", default="1,2", help="parallelisms to run, comma-separated")
    parser.add_argument("--data", default="WMT", help="a data set in data/ or ../shared/data")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.folder))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        source = data_path(args.data)
        if source is None:
            source = Path(tmp) / "synthetic.csv"
            synthetic_prices(4029).to_csv(source, index=False)
        for p in (int(x) for x in args.parallel.split(",")):
            folder = Path(tmp) / f"p{p}"
            folder.mkdir()
            (folder / "space.yaml").write_text(SPACE.format(trials=args.trials))
            (folder / "config.yaml").write_text(CONFIG.format(source=source, epochs=args.epochs))
            out = subprocess.run([sys.executable, __file__, "--child", str(p), "--folder", str(folder)],
                                 capture_output=True, text=True, env=env_for(folder), cwd=folder)
            if out.returncode:
                sys.exit(f"the sweep at parallelism {p} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = baseline_rss()
    first = results[0]["trials_s"]
    rows = [[r["parallel"], r["runner"], f"{r['trials_s']:.1f}", f"{first / r['trials_s']:.2f}x",
             f"{sorted(r['trial_s'])[len(r['trial_s']) // 2]:.1f}", f"{r['trial_cpu_s'][len(r['trial_cpu_s']) // 2]:.1f}",
             f"{max(r['trial_rss_mb']):.0f}",
             f"{r['process_rss_mb']:.0f}", f"{r['total_s']:.1f}"] for r in results]
    print_table(f"Sweep of {args.trials} trials on {Path(str(source)).name}, {args.epochs} epochs each "
                f"({machine_note()})",
                ["parallel", "trials ran on", "trials wall s", "speed-up", "median trial s", "median trial CPU s",
                 "peak MiB per trial",
                 "peak MiB flow process", "flow s (with refit)"], rows)
    print("Wall-time speed-up needs free cores: on a machine whose other work keeps them busy, two trials share "
          "what one had. CPU seconds per trial that stay flat from parallelism 1 to 2 mean the trials do not "
          "slow each other down (no oversubscription, no lock contention).")
    print(f"A process that imports the same libraries and trains nothing peaks at {base:.0f} MiB: a trial's "
          "own memory is the difference. Peak per trial is the worker process's ru_maxrss (parallelism 1: the "
          "flow's process, which also holds the sweep).")


if __name__ == "__main__":
    main()
