"""Shared fixtures: tiny synthetic price frames and configs that train in a blink."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

ROOT = Path(__file__).resolve().parents[1]


def make_prices(n: int = 80, seed: int = 0, start: str = "2021-01-04") -> pd.DataFrame:
    """A Yahoo-format frame (text dates, float columns) of a noisy sine that obeys the contract."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    close = 100 + 10 * np.sin(t / 6) + rng.normal(0, 0.5, n)
    open_ = np.concatenate([[close[0]], close[:-1]]) + rng.normal(0, 0.2, n)
    high = np.maximum(open_, close) + rng.uniform(0.1, 1.0, n)
    low = np.minimum(open_, close) - rng.uniform(0.1, 1.0, n)
    dates = pd.bdate_range(start, periods=n)
    return pd.DataFrame({
        "Date": dates.strftime("%Y-%m-%d"),
        "Open": open_, "High": high, "Low": low, "Close": close,
        "Adj Close": close * 0.98,
        "Volume": rng.integers(1_000_000, 5_000_000, n).astype(float),
    })


@pytest.fixture
def prices() -> pd.DataFrame:
    return make_prices()


@pytest.fixture
def prices_csv(tmp_path: Path, prices: pd.DataFrame) -> Path:
    path = tmp_path / "prices.csv"
    prices.to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_config_dict(prices_csv: Path) -> dict:
    """A small, fast config: 5-row windows, a few epochs."""
    return {
        "name": "tiny",
        "data": {"source": str(prices_csv)},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "window": {"lookback": 5, "horizon": 1},
        "preprocess": {"target_transform": "log_return", "default_feature_transform": "log_return"},  # not auto: fixed
        "model": {"hidden_size": 8, "num_layers": 2, "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 16, "patience": 5, "seed": 7},
        "tracking": {"experiment": "tests"},
        "registry": {"model_name": "tiny-forecaster"},
    }


@pytest.fixture
def tiny_config(tiny_config_dict: dict):
    from pipeline.config import parse_config

    return parse_config(tiny_config_dict)
