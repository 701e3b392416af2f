"""Planted forecasters for registry, predict and serving tests.

A planted model is a real logged pyfunc (real preprocessor fitted on the training rows, real
network) whose head is zeroed to output one constant in scaled space, so its forecasts, and
therefore which model beats which, are known without training.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.config.settings import PipelineConfig, parse_config
from pipeline.data.contract import validate_prices
from pipeline.features.windows import min_rows_needed, prepare
from pipeline.model.network import LSTMForecaster, from_checkpoint
from pipeline.serving.forecast import ForecastBundle, forecast_frame
from pipeline.tracking import promotion, registry, store
from pipeline.training.steps import series_example
from tests.conftest import OHLCV


def client_for(uri: str):
    """A client on `uri` for tracking and registry, with MLflow's fluent API pointed there too.

    MlflowClient(uri) alone takes its registry from the process-wide setting, which an
    earlier test may have pointed at its own store.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def registry_state(client) -> dict:
    """Every registered model with its versions (and their runs) and aliases."""
    state = {}
    for model in client.search_registered_models():
        versions = sorted((str(mv.version), mv.run_id) for mv in client.search_model_versions(f"name='{model.name}'"))
        state[model.name] = (versions, dict(sorted(registry.get_aliases(client, model.name).items())))
    return state


def make_series(close: np.ndarray, start: str = "2021-01-04", seed: int = 0) -> pd.DataFrame:
    """A Yahoo-format frame (text dates) around the given closes that obeys the data contract."""
    rng = np.random.default_rng(seed)
    n = len(close)
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + rng.uniform(0.05, 0.3, n)
    low = np.minimum(open_, close) - rng.uniform(0.05, 0.3, n)
    return pd.DataFrame({
        "Date": pd.bdate_range(start, periods=n).strftime("%Y-%m-%d"),
        "Open": open_, "High": high, "Low": low, "Close": close,
        "Adj Close": close, "Volume": rng.integers(1_000_000, 2_000_000, n).astype(float),
    })


def trend(n: int = 60, growth: float = 0.01, noise: float = 0.001, seed: int = 0) -> pd.DataFrame:
    """Closes growing by `growth` (log) a day, with a little noise: persistence lags by ~growth."""
    rng = np.random.default_rng(seed)
    return make_series(100 * np.exp(growth * np.arange(n) + rng.normal(0, noise, n)), seed=seed)


def level(n: int = 60, mean: float = 100.0, sd: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Closes scattered around `mean`: the mean beats persistence (sd vs sd * sqrt 2)."""
    rng = np.random.default_rng(seed)
    return make_series(mean + rng.normal(0, sd, n), seed=seed)


def config(name: str = "planted", **sections: dict) -> PipelineConfig:
    raw = {
        "name": name,
        "data": {"source": "planted.csv", "features": list(OHLCV)},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "window": {"lookback": 5, "horizon": 1},
        "preprocess": {"target_transform": "log_return", "target_scaler": "none"},
        "model": {"hidden_size": 4, "num_layers": 1},
        "train": {"epochs": 1, "patience": None},
        "tracking": {"experiment": "tests"},
        "registry": {"model_name": "planted"},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_config(raw)


@dataclass
class Planted:
    bundle: ForecastBundle
    frame: pd.DataFrame  # validated, date-indexed
    raw: pd.DataFrame  # as in the file


def plant(raw: pd.DataFrame, cfg: PipelineConfig, output: float) -> Planted:
    """Fit the preprocessor on `raw`'s training rows; the network always outputs `output`."""
    frame = validate_prices(raw, cfg.data, "planted.csv", min_rows=min_rows_needed(cfg)).frame
    pre, _, windows = prepare(frame, cfg)
    model = LSTMForecaster.from_config(cfg.model, n_features=windows["train"].X.shape[2], horizon=cfg.window.horizon)
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(output)
    return Planted(ForecastBundle(model.checkpoint(), pre, cfg), frame, raw)


def log_planted(client, planted: Planted) -> tuple[str, str, str]:
    """Log the planted bundle as a pyfunc in a finished run; return (run_id, model_uri, model_id)."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)  # the fluent API (log_model, models:/ URIs) follows
    mlflow.set_registry_uri(client.tracking_uri)
    cfg = planted.bundle.config
    experiment_id = store.ensure_experiment(client, cfg.tracking.experiment)
    run_id = store.start_run(client, experiment_id, run_name=cfg.name, tags={})
    example = series_example(planted.frame, cfg, rows=planted.bundle.preprocessor.input_rows)
    info = store.log_model(run_id, planted.bundle, example, client.tracking_uri)
    store.end_run(client, run_id, "FINISHED")
    return run_id, info.model_uri, info.model_id


@dataclass
class Window:
    """A test window of a series: what the gate compares models on."""

    raw_rows: pd.DataFrame
    actual: pd.Series
    first_dates: list[str]
    persistence_rmse: float
    window: promotion.TestWindow


def window_of(frame: pd.DataFrame, cfg: PipelineConfig, digest: str = "planted") -> Window:
    """The test part of `frame` under `cfg`'s split, as the training flow hands it to the gate."""
    pre, _, windows = prepare(frame, cfg)
    positions = windows["test"].target_positions[:, 0]
    dates = frame.index[positions]
    closes = frame[cfg.data.target].to_numpy(dtype=float)
    persistence = float(np.sqrt(np.mean((closes[positions] - closes[positions - 1]) ** 2)))
    raw_rows = frame.reset_index()
    raw_rows["Date"] = raw_rows["Date"].dt.strftime("%Y-%m-%d")
    actual = pd.Series(closes, index=frame.index.strftime("%Y-%m-%d"))
    first = list(dates.strftime("%Y-%m-%d"))
    return Window(raw_rows, actual, first, persistence, promotion.TestWindow(first[0], first[-1], digest))


def trend_scene(uri: str, growth: float = 0.01):
    """The usual stage for gate tests: a client on `uri`, the planted config, a rising series,
    its validated frame and its test window."""
    client = client_for(uri)
    cfg = config()
    data = trend(growth=growth)
    frame = plant(data, cfg, 0.0).frame
    return client, cfg, data, frame, window_of(frame, cfg)


def own_rmse(planted: Planted, frame: pd.DataFrame, win: Window) -> float:
    """A bundle's RMSE on the window, computed in-process with the bundle's own preprocessor."""
    model = from_checkpoint(planted.bundle.checkpoint)
    table = forecast_frame(model, planted.bundle.preprocessor, frame, all_windows=True)
    return promotion.table_rmse(table, win.actual, win.first_dates, planted.bundle.config.window.horizon).rmse


def register(client, planted: Planted, win: Window, frame: pd.DataFrame, margins=(0.0, 0.0),
             name: str = "planted", coverage: tuple[float, float] | None = None) -> promotion.Decision:
    """Log and register a planted model through the real gate, the champion re-scored for real."""
    run_id, uri, model_id = log_planted(client, planted)
    cfg = planted.bundle.config

    def rescore(model_uri: str) -> promotion.Score:
        return registry.rescore(model_uri, win.raw_rows, cfg.data.target, lambda table: promotion.scored_in_full(
            table, win.actual, win.first_dates, cfg.window.horizon))

    return registry.register_and_promote(client, name, uri, run_id, {"data_digest": "planted"}, win.window,
                                         own_rmse(planted, frame, win), win.persistence_rmse, rescore, margins,
                                         by="tests", model_id=model_id, coverage=coverage)
