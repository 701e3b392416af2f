"""Benchmark 3: inference with the logged pyfunc on 1, 100 and 10,000 windows, and over REST.

    .venv/bin/python bench/inference.py [--repeats 50] [--no-rest]

Trains the default config for a few epochs on SBUX (latency does not depend on how long the
model trained) and logs it exactly as the flow does (`store.log_model`) into a temporary
MLflow store, with no Prefect. Then:
  pyfunc  `mlflow.pyfunc.load_model(uri).predict(rows)` on the rows one window needs (the
          latest forecast), and with params {"all_windows": True} on the rows that give 100
          and 10,000 windows (a 10,030-row synthetic series; SBUX has 253 rows). The input
          contract (pandera) is checked on every call, as in serving.
  REST    `mlflow models serve --env-manager local` on a loopback port: time to ready, then
          one POST /invocations of one window's rows at a time; first, median and min-max.
Targets: one window under 10 ms, 10,000 windows under 1 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import (
    data_path,
    default_config,
    fmt_range,
    free_port,
    load_frame,
    machine_note,
    prepare,
    print_table,
    stop_group,
    synthetic_prices,
)

BIN = Path(sys.executable).parent


def train_and_log(work: Path) -> tuple[str, object, str]:
    """A model trained for a few epochs and logged as the flow logs it: (model URI, config, tracking URI)."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from pipeline.model.training import fit, init_model
    from pipeline.serving.forecast import ForecastBundle
    from pipeline.tracking import store
    from pipeline.training.steps import series_example

    cfg = default_config(train={"epochs": 3, "patience": None})
    frame = load_frame(data_path("SBUX"), cfg)
    pre, _, windows = prepare(frame, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    result = fit(model, windows["train"], windows["val"], cfg.train)
    client = store.get_client(cfg)
    run_id = store.start_run(client, store.ensure_experiment(client, "bench-inference"), "bench", {})
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg)
    model_uri = store.log_model(run_id, bundle, series_example(frame, cfg, rows=pre.input_rows), uri).model_uri
    store.end_run(client, run_id, "FINISHED")
    return model_uri, cfg, uri


def raw_rows(n: int, cfg):
    """`n` rows in the raw form clients send: date strings and float values."""
    frame = synthetic_prices(n, seed=1)
    return frame[[cfg.data.date_column, *cfg.data.columns]].reset_index(drop=True)


def time_calls(call, repeats: int, warmup: int = 5) -> list[float]:
    """Seconds per call after `warmup` untimed calls (lazy imports, caches, allocator pools)."""
    for _ in range(warmup):
        call()
    gc.collect()  # what training and logging left behind is not this call's cost
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def bench_pyfunc(model_uri: str, cfg, repeats: int) -> tuple[list[list[object]], float]:
    import mlflow

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_s = time.perf_counter() - started
    input_rows = model.unwrap_python_model().bundle.preprocessor.input_rows
    rows = []
    for windows, reps in ((1, repeats), (100, repeats), (10_000, max(3, repeats // 4))):
        data = raw_rows(input_rows + windows - 1, cfg)
        params = {"all_windows": True} if windows > 1 else None
        first = time.perf_counter()
        out = model.predict(data, params=params)
        first = time.perf_counter() - first
        assert len(out) == windows * cfg.window.horizon, (len(out), windows)
        times = time_calls(lambda: model.predict(data, params=params), reps)
        target = {1: "< 10 ms", 10_000: "< 1000 ms"}.get(windows, "")
        med = sorted(times)[len(times) // 2] * 1000
        verdict = ("met" if med < (10 if windows == 1 else 1000) else "missed") if target else ""
        rows.append([f"{windows:,}", len(data), f"{first * 1000:.1f}", fmt_range(times, 2, 1000),
                     f"{med * 1000 / windows:.1f}", target, verdict])
    # Where one window's time goes: the input contract (pandera) against the model and preprocessing.
    from pipeline.serving.forecast import forecast_frame, validate_input

    inner = model.unwrap_python_model()
    data = raw_rows(input_rows, cfg)
    checked = validate_input(data, inner.bundle)
    contract = time_calls(lambda: validate_input(data, inner.bundle), repeats)
    forecast = time_calls(lambda: forecast_frame(inner.model, inner.bundle.preprocessor, checked), repeats)
    print(f"one window, in parts: input contract {fmt_range(contract, 2, 1000)} ms, "
          f"preprocess + LSTM + output frame {fmt_range(forecast, 2, 1000)} ms")
    return rows, load_s


def bench_rest(model_uri: str, cfg, tracking_uri: str, repeats: int) -> list[list[object]]:
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MLFLOW_TRACKING_URI": tracking_uri}
    started = time.perf_counter()
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited {server.returncode}: {server.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.perf_counter() - started > 180:
                    raise RuntimeError("mlflow models serve not ready after 180 s") from None
                time.sleep(0.1)
        ready = time.perf_counter() - started
        frame = raw_rows(31, cfg)
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()

        def post() -> None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                json.loads(response.read())

        first = time.perf_counter()
        post()
        first = time.perf_counter() - first
        times = [0.0] * repeats
        for i in range(repeats):
            t = time.perf_counter()
            post()
            times[i] = time.perf_counter() - t
        return [["REST /invocations, 1 window", f"{ready:.1f}", f"{first * 1000:.1f}", fmt_range(times, 1, 1000)]]
    finally:
        stop_group(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-rest", action="store_true", help="skip the REST server")
    args = parser.parse_args()
    print(f"machine: {machine_note()}")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        model_uri, cfg, tracking_uri = train_and_log(Path(tmp))
        rows, load_s = bench_pyfunc(model_uri, cfg, args.repeats)
        print_table(f"Table 4: pyfunc predict (load_model {load_s:.2f}s); ms, median (min-max) of the repeats after a first call and 5 warm-up calls",
                    ["windows", "input rows", "first call ms", "ms", "us/window", "target", "verdict"], rows)
        if not args.no_rest:
            rest = bench_rest(model_uri, cfg, tracking_uri, args.repeats)
            print_table(f"Table 5: REST latency, one request at a time ({args.repeats} requests after the first)",
                        ["endpoint", "ready after s", "first ms", "ms, median (min-max)"], rest)


if __name__ == "__main__":
    main()
