"""Forecasting from raw rows, in-process and as the logged MLflow pyfunc model.

The pyfunc carries the network's weights and the fitted preprocessor (transforms and scalers),
validates its input against the training data contract, and answers in original units.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.errors import DataError
from pipeline.features import Preprocessor
from pipeline.model import LSTMForecaster
from pipeline.schemas import validate_prices
from pipeline.train import predict

log = logging.getLogger(__name__)

BUNDLE_FILE = "forecaster.pkl"
OUTPUT_COLUMNS = ["origin", "step", "date", "forecast"]


@dataclass
class ForecastBundle:
    """What a forecast needs: the network checkpoint, the fitted preprocessor, the run's config."""

    checkpoint: dict[str, Any]
    preprocessor: Preprocessor
    config: PipelineConfig

    def save(self, path: Path) -> Path:
        with path.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    @staticmethod
    def load(path: str | Path) -> ForecastBundle:
        with Path(path).open("rb") as fh:
            return pickle.load(fh)  # noqa: S301 - our own artifact, written by save()


def next_dates(index: pd.DatetimeIndex, count: int) -> pd.DatetimeIndex:
    """`count` dates after the last one, at the series' own rhythm (business days for markets)."""
    last = index[-1]
    if count <= 0:
        return pd.DatetimeIndex([])
    spacing = pd.Timedelta(np.median(np.diff(index.to_numpy()))) if len(index) > 1 else pd.Timedelta(days=1)
    weekdays_only = len(index) > 1 and (index.day_of_week < 5).all()
    if weekdays_only and spacing <= pd.Timedelta(days=1):
        return pd.bdate_range(last + pd.offsets.BDay(1), periods=count)
    return pd.DatetimeIndex([last + spacing * (k + 1) for k in range(count)])


def forecast_frame(
    model: LSTMForecaster,
    pre: Preprocessor,
    frame: pd.DataFrame,
    all_windows: bool = False,
) -> pd.DataFrame:
    """Forecasts from validated, date-indexed rows.

    By default one forecast (all `horizon` steps) from the latest window; with `all_windows`,
    one per window the rows allow. Target dates inside the data are the data's own dates; the
    ones beyond its end follow the series' rhythm.
    """
    n = len(frame)
    origins = pre.origins(n)
    if not all_windows:
        origins = origins[-1:]
    if len(origins) == 0:
        raise DataError(f"need at least {pre.input_rows} rows to forecast, got {n}")
    feats, _ = pre.scaled(frame)
    levels = frame[pre.target].to_numpy(dtype=float)
    X = pre.input_windows(feats, origins)
    anchors = pre.anchors(levels, origins)
    values = pre.to_levels(predict(model, X), anchors)  # (n_origins, horizon)

    positions = origins[:, None] + pre.lead + np.arange(pre.horizon)[None, :]
    beyond = max(0, int(positions.max()) - (n - 1))
    calendar = frame.index.append(next_dates(frame.index, beyond))
    return pd.DataFrame({
        "origin": np.repeat(frame.index[origins].strftime("%Y-%m-%d"), pre.horizon),
        "step": np.tile(np.arange(1, pre.horizon + 1), len(origins)).astype("int64"),
        "date": calendar[positions.ravel()].strftime("%Y-%m-%d"),
        "forecast": values.ravel().astype("float64"),
    })


def validate_input(raw: pd.DataFrame, bundle: ForecastBundle, source: str = "model input") -> pd.DataFrame:
    """Hold serving input to the training data contract; a DataError explains what is wrong."""
    cfg = bundle.config.data
    frame = raw.copy()
    if cfg.date_column in frame.columns and not pd.api.types.is_string_dtype(frame[cfg.date_column]):
        frame[cfg.date_column] = pd.to_datetime(frame[cfg.date_column]).dt.strftime("%Y-%m-%d %H:%M:%S")
    frame = frame.reset_index(drop=True)
    validated = validate_prices(frame, cfg, source, min_rows=bundle.preprocessor.input_rows)
    return validated.frame


class ForecastModel:
    """Base of the pyfunc wrapper, kept free of MLflow so it can be tested alone."""

    bundle: ForecastBundle
    model: LSTMForecaster

    def load(self, bundle_path: str | Path) -> None:
        self.bundle = ForecastBundle.load(bundle_path)
        self.model = LSTMForecaster.from_checkpoint(self.bundle.checkpoint)

    def forecast(self, raw: pd.DataFrame, all_windows: bool = False) -> pd.DataFrame:
        frame = validate_input(raw, self.bundle)
        return forecast_frame(self.model, self.bundle.preprocessor, frame, all_windows=all_windows)


def format_dates(index: pd.DatetimeIndex) -> pd.Index:
    """Dates as the text the model takes: plain dates for daily data, date and time otherwise."""
    if len(index) and (index == index.normalize()).all():
        return index.strftime("%Y-%m-%d")
    return index.strftime("%Y-%m-%d %H:%M:%S")


def model_input(raw: pd.DataFrame, bundle: ForecastBundle, source: str) -> pd.DataFrame:
    """Rows read from `source`, held to the model's data contract, in the form the pyfunc takes.

    Checking here (not only inside the model) lets errors name the file and its line numbers.
    """
    frame = validate_input(raw, bundle, source)
    cfg = bundle.config.data
    out = frame[list(cfg.columns)].astype("float64").reset_index()
    out[cfg.date_column] = format_dates(frame.index)
    return out


def input_example(frame: pd.DataFrame, cfg: PipelineConfig, rows: int) -> pd.DataFrame:
    """The last `rows` rows in the raw form the model takes (date strings, float values)."""
    tail = frame[list(cfg.data.columns)].tail(rows).astype("float64")
    example = tail.reset_index()
    example[cfg.data.date_column] = example[cfg.data.date_column].dt.strftime("%Y-%m-%d")
    return example
