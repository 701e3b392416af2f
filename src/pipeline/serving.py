"""Forecasting from raw rows, in-process and as the logged MLflow pyfunc model.

The pyfunc carries the network's weights and the fitted preprocessor (transforms and scalers),
saved as data (pipeline.model_format), validates its input against the training data contract,
and answers in original units, on the training data's calendar (pipeline.dates).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.dates import date_format, format_dates, next_dates
from pipeline.errors import DataError
from pipeline.features import Preprocessor, transform_domain
from pipeline.model import LSTMForecaster
from pipeline.model_format import ForecastBundle
from pipeline.schemas import validate_prices
from pipeline.train import predict

__all__ = ["OUTPUT_COLUMNS", "ForecastBundle", "ForecastModel", "forecast_frame", "format_dates", "input_example",
           "model_input", "next_dates", "validate_input"]

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["origin", "step", "date", "forecast"]


def forecast_frame(
    model: LSTMForecaster,
    pre: Preprocessor,
    frame: pd.DataFrame,
    all_windows: bool = False,
) -> pd.DataFrame:
    """Forecasts from validated, date-indexed rows.

    By default one forecast (all `horizon` steps) from the latest window; with `all_windows`,
    one per window the rows allow. Target dates inside the data are the data's own dates; the
    ones beyond its end follow the training data's calendar (`pre.frequency`; the rows' own
    when the training data had none). Dates carry their time unless all are midnights.
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
    calendar = frame.index.append(next_dates(frame.index, beyond, pre.frequency))
    fmt = date_format(calendar)  # times kept for sub-daily data, in both columns alike
    return pd.DataFrame({
        "origin": np.repeat(frame.index[origins].strftime(fmt), pre.horizon),
        "step": np.tile(np.arange(1, pre.horizon + 1), len(origins)).astype("int64"),
        "date": calendar[positions.ravel()].strftime(fmt),
        "forecast": values.ravel().astype("float64"),
    })


def validate_input(raw: pd.DataFrame, bundle: ForecastBundle, source: str = "model input") -> pd.DataFrame:
    """Hold serving input to the training data contract; a DataError explains what is wrong."""
    cfg = bundle.config.data
    frame = raw.copy()
    if cfg.date_column in frame.columns and not pd.api.types.is_string_dtype(frame[cfg.date_column]):
        frame[cfg.date_column] = pd.to_datetime(frame[cfg.date_column]).dt.strftime("%Y-%m-%d %H:%M:%S")
    frame = frame.reset_index(drop=True)
    validated = validate_prices(frame, cfg, source, min_rows=bundle.preprocessor.input_rows,
                                positive=transform_domain(bundle.config))
    return validated.frame


class ForecastModel:
    """Base of the pyfunc wrapper, kept free of MLflow so it can be tested alone."""

    bundle: ForecastBundle
    model: LSTMForecaster

    def load(self, bundle_path: str | Path) -> None:
        """Read a saved model directory (pipeline.model_format); unknown format versions are refused."""
        self.bundle = ForecastBundle.load(bundle_path)
        self.model = LSTMForecaster.from_checkpoint(self.bundle.checkpoint)

    def forecast(self, raw: pd.DataFrame, all_windows: bool = False) -> pd.DataFrame:
        """Forecasts of the rows given (a frame, from Python or a REST request): errors name 0-based rows."""
        try:
            frame = validate_input(raw, self.bundle, source=INPUT_ROWS)
        except DataError as exc:  # the input is a frame (JSON, a DataFrame), not a file: no "line"
            raise DataError(lines_as_rows(str(exc))) from None
        return forecast_frame(self.model, self.bundle.preprocessor, frame, all_windows=all_windows)


INPUT_ROWS = "the input (rows counted from 0)"
_FILE_LINE = re.compile(r"\bline (\d+)\b")


def lines_as_rows(report: str) -> str:
    """A data-contract report about a frame, with its file lines (row + 2: the header is line 1) as 0-based rows.

    The contract numbers file lines (pipeline.schemas); a frame sent as JSON has rows, counted
    from 0 as pandas and `dataframe_split` count them.
    """
    return _FILE_LINE.sub(lambda m: f"row {int(m.group(1)) - 2}", report)


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
    example[cfg.data.date_column] = format_dates(tail.index)
    return example
