"""Shared fixtures: tiny synthetic price frames and configs that train in a blink."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.leftovers import pytest_sessionfinish, pytest_sessionstart  # noqa: F401  (the run fails on files left in the checkout)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# MLflow 3's server starts a job runner and eight huey consumers for its GenAI jobs, which the project never uses:
# off in the servers the tests start, 2 processes instead of 10 and half the start-up CPU (6.7 s against 15.3 s).
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

ROOT = Path(__file__).resolve().parents[1]


MAX_WORKERS = 4  # each worker starts its own Prefect test server; more than four buys little here


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core this process may run on (as pipeline.runtime.usable_cores counts them,
    not pytest-xdist's physical cores, which a 2-vCPU machine may report as one), at most MAX_WORKERS."""
    from pipeline.runtime import usable_cores

    return min(usable_cores(), MAX_WORKERS)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker takes one core: torch (and the commands a test starts) use one thread, so
    two workers on two cores do not fight over them. The tiny test models train on one thread anyway
    (pipeline.runtime.pick_threads); inference and scoring would otherwise use every core."""
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `slow` first, those that share a worker (`xdist_group`: the longest chains) before the others,
    each in collection order, so that under pytest-xdist (`--dist loadgroup --no-loadscope-reorder`, the Makefile)
    the long ones start at once and the short ones fill the workers' time around them."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("xdist_group") is None))


@pytest.fixture(autouse=True)
def sys_path_restored():
    """Each test leaves sys.path as it found it. MLflow's own loader (`mlflow.pyfunc.load_model`, which tests call)
    puts a model's `code/` in front of sys.path and leaves it there; that copy holds only the serving code, so a
    process a later test spawns (a sweep's trial workers) would import `pipeline` from it and miss the rest."""
    before = list(sys.path)
    yield
    sys.path[:] = before


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


OHLCV = ("Open", "High", "Low", "Close", "Volume")  # the sample's inputs (configs/default.yaml); the code's: the target


def tiny_config_raw(source: str) -> dict:
    """A small, fast config on the prices at `source`: 5-row windows, a few epochs."""
    return {
        "name": "tiny",
        "data": {"source": source, "features": list(OHLCV)},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "window": {"lookback": 5, "horizon": 1},
        "preprocess": {"target_transform": "log_return", "default_feature_transform": "log_return"},  # not auto: fixed
        "model": {"hidden_size": 8, "num_layers": 2, "dropout": 0.0},
        # refit: false serves the evaluated model, so tests can hold the served forecasts to the run's own; the
        # default refit is tested where a config names it (test_one_road, test_ensemble_flow, test_portfolio)
        "train": {"epochs": 2, "batch_size": 16, "patience": 5, "seed": 7, "refit": False},
        "tracking": {"experiment": "tests"},
        "registry": {"model_name": "tiny-forecaster"},
    }


@pytest.fixture
def tiny_config_dict(prices_csv: Path) -> dict:
    """A small, fast config: 5-row windows, a few epochs."""
    return tiny_config_raw(str(prices_csv))


@pytest.fixture
def tiny_config(tiny_config_dict: dict):
    from pipeline.config.settings import parse_config

    return parse_config(tiny_config_dict)


def make_long(series: str = "ABCDE", n: int = 40, short: dict[str, int] | None = None, seed: int = 0,
              freq: str = "h") -> pd.DataFrame:
    """A long-format frame (id, ts, y as text) of tiny seasonal series, one after another; `short` gives
    some series fewer rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, sid in enumerate(series):
        length = (short or {}).get(sid, n)
        t = np.arange(length)
        values = 10 + 2 * k + np.sin(t * 2 * np.pi / 8) + rng.normal(0, 0.1, length)
        dates = pd.date_range("2024-01-01", periods=length, freq=freq).strftime("%Y-%m-%d %H:%M")
        rows += [(sid, d, f"{v:.4f}") for d, v in zip(dates, values)]
    return pd.DataFrame(rows, columns=["id", "ts", "y"])


def long_config_dict(source: str, **sections: dict) -> dict:
    """A tiny many-series config for `make_long` data: level target, 6-row windows, 4 steps."""
    raw = {
        "name": "panel",
        "data": {"source": source, "series_column": "id", "date_column": "ts", "target": "y", "features": ["y"],
                 "price_columns": ["y"], "volume_column": None},
        "split": {"val": 4, "test": 4},
        "window": {"lookback": 6, "horizon": 4},
        "preprocess": {"target_transform": "level", "default_feature_transform": "level"},
        "model": {"hidden_size": 8},
        "train": {"epochs": 3, "batch_size": 16, "patience": 2, "seed": 7, "refit": False},  # as tiny_config_raw
        "evaluate": {"season_length": 8},
        "tracking": {"experiment": "tests"},
        "registry": {"model_name": "panel-forecaster"},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


@pytest.fixture
def long_csv(tmp_path: Path) -> Path:
    """Five tiny hourly series in one long CSV; series C is broken (text on one line, a negative on another)."""
    frame = make_long(short={"E": 12})
    c_rows = frame.index[frame["id"] == "C"]
    frame.loc[c_rows[5], "y"] = "abc"
    frame.loc[c_rows[9], "y"] = "-1"
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    return path


def parent_and_children(client, experiment: str, run_type: str) -> tuple:
    """The single FINISHED parent run tagged `run_type` in `experiment`, its child runs, and every run found there."""
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in found if r.data.tags.get("run_type") == run_type]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children, found
