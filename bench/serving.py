"""Benchmark: serving the champion in-process, over REST, and through `pipeline predict`.

    .venv/bin/python bench/serving.py [--repeats 50] [--epochs 3]

Trains the default config (a few epochs: latency does not depend on training length) on
data/SBUX.csv into a temporary MLflow store, registers it as @champion, then measures:
  load       mlflow.pyfunc.load_model("models:/NAME@champion")
  in-process predict of the latest 40 rows (median, p90 over --repeats)
  REST       `mlflow models serve --env-manager local`: start to /ping ready, then one
             POST /invocations of 40 rows (first, median, p90) and a rejected one (400)
  CLI        `pipeline predict` as a fresh process (Prefect's ephemeral server included)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import ROOT, data_path

NAME = "bench-forecaster"


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms   (n={len(ordered)})"


def post(url: str, payload: dict) -> tuple[int, float]:
    body = json.dumps(payload).encode()
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    return status, time.perf_counter() - started


def register_champion(csv: Path, epochs: int) -> None:
    from pipeline.config.settings import load_config
    from pipeline.data.contract import validate_prices
    from pipeline.data.reading import load_prices
    from pipeline.features.windows import min_rows_needed, prepare
    from pipeline.model.network import LSTMForecaster
    from pipeline.model.training import fit
    from pipeline.serving.forecast import ForecastBundle
    from pipeline.tracking import registry, store
    from pipeline.training.steps import series_example

    cfg = load_config(ROOT / "configs/default.yaml").with_overrides(train={"epochs": epochs}, data={"source": str(csv)})
    frame = validate_prices(load_prices(str(csv)).frame, cfg.data, str(csv), min_rows_needed(cfg)).frame
    pre, _, windows = prepare(frame, cfg)
    model = LSTMForecaster.from_config(cfg.model, windows["train"].X.shape[2], cfg.window.horizon)
    result = fit(model, windows["train"], windows["val"], cfg.train)
    client = store.get_client()
    experiment_id = store.ensure_experiment(client, "bench")
    run_id = store.start_run(client, experiment_id, "bench-serving", {})
    bundle = ForecastBundle(result.model.checkpoint(), pre, cfg)
    uri = store.log_model(run_id, bundle, series_example(frame, cfg, pre.input_rows), client.tracking_uri).model_uri
    store.end_run(client, run_id, "FINISHED")
    registry.ensure_registered_model(client, NAME)
    client.create_model_version(NAME, uri, run_id=run_id)
    registry.promote(client, NAME, "1", "benchmark", "bench/serving.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    csv = data_path("SBUX")
    if csv is None:
        print("skipped: data/SBUX.csv not found")
        return
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(tmp)
    register_champion(csv, args.epochs)

    import mlflow

    recent = pd.read_csv(csv).drop(columns=["Adj Close"], errors="ignore").tail(40)  # only what the model reads
    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    load_s = time.perf_counter() - started
    in_process = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.predict(recent)
        in_process.append(time.perf_counter() - started)

    bin_dir = Path(sys.executable).parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = time.perf_counter()
    server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.perf_counter() - started > 120:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
        ready_s = time.perf_counter() - started
        payload = {"dataframe_split": json.loads(recent.to_json(orient="split", index=False))}
        url = f"http://127.0.0.1:{port}/invocations"
        status, first = post(url, payload)
        assert status == 200, status
        rest = [post(url, payload)[1] for _ in range(args.repeats)]
        bad = {"dataframe_split": json.loads(recent.tail(3).to_json(orient="split", index=False))}
        bad_status, bad_s = post(url, bad)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    out = tmp / "forecasts.csv"
    started = time.perf_counter()
    cli = subprocess.run([str(bin_dir / "pipeline"), "predict", "--model", f"models:/{NAME}@champion",
                          "--data", str(csv), "--out", str(out)], capture_output=True, text=True, env=env)
    cli_s = time.perf_counter() - started
    assert cli.returncode == 0, cli.stderr

    print(f"model: configs/default.yaml (lookback 30, hidden 32 x 2 layers), {len(recent)} rows per request")
    print(f"load_model (models:/@champion)      {load_s * 1000:8.1f} ms")
    print(f"in-process predict                  {quantiles(in_process)}")
    print(f"REST server start -> /ping ready    {ready_s:8.2f} s")
    print(f"REST first request                  {first * 1000:8.1f} ms")
    print(f"REST request                        {quantiles(rest)}")
    print(f"REST rejected input (status {bad_status})     {bad_s * 1000:8.1f} ms")
    print(f"pipeline predict (fresh process)    {cli_s:8.2f} s")


if __name__ == "__main__":
    main()
