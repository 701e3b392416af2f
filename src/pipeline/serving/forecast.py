"""Forecasting from raw rows, in-process and as the logged MLflow pyfunc model.

The pyfunc carries the network's weights and the fitted preprocessor (transforms and scalers),
saved as data (pipeline.serving.model_format), validates its input against the training data contract,
and answers in original units, on the training data's calendar (pipeline.dates).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config.settings import theta_weight
from pipeline.data.contract import validate_prices
from pipeline.data.reading import RawData
from pipeline.dates import calendar_mismatch, date_format, format_dates, next_dates
from pipeline.errors import DataError
from pipeline.evaluation.intervals import IntervalState
from pipeline.features.transforms import transform_domain
from pipeline.features.windows import Preprocessor
from pipeline.model.network import Network, from_checkpoint, predict_levels
from pipeline.model.theta import combine
from pipeline.serving.model_format import ForecastBundle

__all__ = ["OUTPUT_COLUMNS", "ForecastBundle", "ForecastModel", "forecast_frame", "format_dates", "model_input", "next_dates", "validate_input"]

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ["origin", "step", "date", "forecast"]


def forecast_frame(
    model: Network,
    pre: Preprocessor,
    frame: pd.DataFrame,
    all_windows: bool = False,
    intervals: IntervalState | None = None,
    series: str | None = None,
    theta: float = 0.0,
    season: int | None = None,
    theta_method: str = "dynamic",
    theta_seasonality: str = "any",
) -> pd.DataFrame:
    """Forecasts from validated, date-indexed rows, with the fitted `intervals`' bounds when given
    (`series`: whose scale they take, in a model of many series), combined with the Theta method's (`theta_method`) at weight
    `theta` (`model.theta_weight`, `model.theta_method`, `model.theta_seasonality`; `season`: the rows' season,
    `evaluate.season_length`).

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
        raise DataError(f"need at least {pre.min_input_rows} rows to forecast, got {n}")
    feats, _ = pre.scaled(frame)
    levels = frame[pre.target].to_numpy(dtype=float)
    X = pre.input_windows(feats, origins)
    anchors = pre.anchors(levels, origins)
    values, tails = pre.floored(*combine(*predict_levels(model, pre, X, anchors), levels, origins + pre.lead - 1,
                                         theta, season, theta_method, theta_seasonality))  # (n_origins, horizon) each

    positions = origins[:, None] + pre.lead + np.arange(pre.horizon)[None, :]
    beyond = max(0, int(positions.max()) - (n - 1))
    calendar = frame.index.append(next_dates(frame.index, beyond, pre.frequency))
    fmt = date_format(calendar)  # times kept for sub-daily data, in both columns alike
    return pd.DataFrame({
        "origin": np.repeat(frame.index[origins].strftime(fmt), pre.horizon),
        "step": np.tile(np.arange(1, pre.horizon + 1), len(origins)).astype("int64"),
        "date": calendar[positions.ravel()].strftime(fmt),
        "forecast": values.ravel().astype("float64"),
        **({} if intervals is None else
           {name: bound.ravel().astype("float64") for name, bound in
            intervals.bands(values, intervals.factors(levels, origins, series), tails, pre.floor).items()}),
    })


def validate_input(raw: pd.DataFrame, bundle: ForecastBundle, source: str = "model input") -> pd.DataFrame:
    """Hold serving input to the training data contract; a DataError explains what is wrong."""
    cfg = bundle.config.data
    frame = raw.copy()
    if cfg.date_column in frame.columns and not pd.api.types.is_string_dtype(frame[cfg.date_column]):
        frame[cfg.date_column] = pd.to_datetime(frame[cfg.date_column]).dt.strftime("%Y-%m-%d %H:%M:%S")
    frame = frame.reset_index(drop=True)
    validated = validate_prices(frame, cfg, source, min_rows=bundle.preprocessor.min_input_rows,
                                positive=transform_domain(bundle.config))
    check_calendar(validated.frame.index, bundle.preprocessor.frequency, source)
    return validated.frame


def check_calendar(index: pd.DatetimeIndex, frequency: str | None, source: str, series: str | None = None) -> None:
    """DataError when the rows' dates step unlike the model's training calendar (hourly rows sent to a daily model)."""
    found = calendar_mismatch(index, frequency)
    if found is not None:
        who = "" if series is None else f" series {series!r}"
        raise DataError(f"{source}{who}: the dates ({index[0]} to {index[-1]}) follow a {found} calendar; the model "
                        f"was trained on a {frequency} calendar; rule: the input's frequency is the model's (its "
                        f"windows and forecast dates assume that rhythm): send {frequency} rows, or train a model on "
                        "data of this frequency")


# ---------------------------------------------------------------- many series (long input)
def series_frames(raw: pd.DataFrame, bundle: ForecastBundle, source: str) -> dict[str, pd.DataFrame]:
    """Each series of a long input, validated on its own (`panel.validate_panel`: errors name the series
    id, the line and the rule) and known to the model; `data.on_bad_series` decides whether a bad or
    unknown series fails the whole input or is left out with a warning."""
    from pipeline.data import panel

    assert bundle.series is not None
    cfg = bundle.config
    frame = raw.reset_index(drop=True)
    date = cfg.data.date_column
    if date in frame.columns and not pd.api.types.is_string_dtype(frame[date]):
        frame[date] = pd.to_datetime(frame[date]).dt.strftime("%Y-%m-%d %H:%M:%S")
    data = panel.validate_panel(RawData(frame, source, ""), cfg, min_rows=bundle.preprocessor.min_input_rows,
                                one_calendar=False)  # each series is held to its own training calendar below
    known = bundle.series.preprocessors
    unknown = [sid for sid in data.series if sid not in known]
    if unknown:
        shown = ", ".join(repr(s) for s in unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        message = (f"{source}: series {shown} in column {bundle.series.column!r} were not among the {len(known)} series "
                   "the model was trained on; rule: a model of many series forecasts the series it knows")
        if cfg.data.on_bad_series == "error" or len(unknown) == len(data.series):
            raise DataError(message)
        log.warning("%s (left out: data.on_bad_series is skip)", message)
    for sid, frame in data.series.items():
        if sid in known:
            check_calendar(frame.index, known[sid].frequency, source, sid)
    return {sid: f for sid, f in data.series.items() if sid in known}


def input_frames(raw: pd.DataFrame, bundle: ForecastBundle, source: str) -> dict[str | None, pd.DataFrame]:
    """The input's series held to the model's data contract: each series of a long input (`series_frames`), or the
    one series of a model of one (its id None: a panel of one)."""
    if bundle.series is not None:
        return dict(series_frames(raw, bundle, source))
    return {None: validate_input(raw, bundle, source)}


def preprocessor_of(bundle: ForecastBundle, series: str | None) -> Preprocessor:
    """The fitted preprocessor that forecasts `series` (None: the model's one series)."""
    return bundle.preprocessor if series is None or bundle.series is None else bundle.series.preprocessors[series]


def forecast_series(frames: dict[str | None, pd.DataFrame], bundle: ForecastBundle,
                    model_for: Callable[[str | None], Network], all_windows: bool = False) -> pd.DataFrame:
    """`forecast_frame` for each series with its own preprocessor: `[<series column>,] origin, step, date, forecast`
    and the interval bounds (no series column for a model of one series)."""
    theta, season = theta_weight(bundle.config), bundle.config.evaluate.season_length
    season = season if isinstance(season, int) else None
    parts = []
    for sid, frame in frames.items():
        out = forecast_frame(model_for(sid), preprocessor_of(bundle, sid), frame, all_windows=all_windows,
                             intervals=bundle.intervals, series=sid, theta=theta, season=season,
                             theta_method=bundle.config.model.theta_method,
                             theta_seasonality=bundle.config.model.theta_seasonality)
        if sid is not None and bundle.series is not None:
            out.insert(0, bundle.series.column, sid)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def series_networks(bundle: ForecastBundle) -> dict[str, Network]:
    """One network per series for a model trained per series (`local`); empty for one shared network."""
    if bundle.series is None or bundle.series.state_dicts is None:
        return {}
    init_args = bundle.checkpoint["init_args"]
    return {sid: from_checkpoint({"init_args": init_args, "state_dict": sd})
            for sid, sd in bundle.series.state_dicts.items()}


class ForecastModel:
    """Base of the pyfunc wrapper, kept free of MLflow so it can be tested alone."""

    bundle: ForecastBundle
    model: Network
    networks: dict[str, Network]
    evaluated: ForecastModel | None = None  # a refit model's evaluated one, once built (`evaluated_model`)

    def load(self, bundle_path: str | Path) -> None:
        """Read a saved model directory (pipeline.serving.model_format); unknown format versions are refused."""
        self.use(ForecastBundle.load(bundle_path))

    def use(self, bundle: ForecastBundle) -> None:
        """Forecast with `bundle` (its evaluated model's networks are built when first asked for)."""
        self.bundle = bundle
        self.model = from_checkpoint(bundle.checkpoint)
        self.networks = series_networks(bundle)
        self.evaluated = None

    def evaluated_model(self) -> ForecastModel:
        """The model the run's scores measured: the evaluated one of a refit model, else this one."""
        if self.bundle.evaluated is None:
            return self
        if self.evaluated is None:
            self.evaluated = ForecastModel()
            self.evaluated.use(self.bundle.evaluated)
        return self.evaluated

    def model_for(self, series: str | None) -> Network:
        """The network that forecasts `series`: its own (local strategy) or the shared one."""
        return self.networks.get(series, self.model) if getattr(self, "networks", None) else self.model

    def forecast(self, raw: pd.DataFrame, all_windows: bool = False, evaluated: bool = False) -> pd.DataFrame:
        """Forecasts of the rows given (a frame, from Python or a REST request): errors name 0-based rows.

        A model of many series takes the long frame (a series id column) and forecasts each series. `evaluated`:
        by the model the run's scores measured, the one early stopping kept, where this one was refit on every row
        (the same model where it was not).
        """
        try:
            frames = input_frames(raw, self.bundle, source=INPUT_ROWS)
        except DataError as exc:  # the input is a frame (JSON, a DataFrame), not a file: no "line"
            raise DataError(lines_as_rows(str(exc))) from None
        by = self.evaluated_model() if evaluated else self
        return forecast_series(frames, by.bundle, by.model_for, all_windows=all_windows)


INPUT_ROWS = "the input (rows counted from 0)"
_FILE_LINE = re.compile(r"\bline (\d+)\b")


def lines_as_rows(report: str) -> str:
    """A data-contract report about a frame, with its file lines (row + 2: the header is line 1) as 0-based rows.

    The contract numbers file lines (pipeline.data.contract); a frame sent as JSON has rows, counted
    from 0 as pandas and `dataframe_split` count them.
    """
    return _FILE_LINE.sub(lambda m: f"row {int(m.group(1)) - 2}", report)


def model_input(raw: pd.DataFrame, bundle: ForecastBundle, source: str) -> pd.DataFrame:
    """Rows read from `source`, held to the model's data contract, in the form the pyfunc takes.

    Checking here (not only inside the model) lets errors name the file and its line numbers.
    A model of many series takes the long form: the series column, the date, the values; of each
    series only the rows its latest forecast reads are passed on (the model validates less): the network's
    window, or every row where Theta's forecast is part of it (`model.theta_weight`: it reads the whole history).
    """
    cfg = bundle.config.data
    parts = []
    for sid, frame in input_frames(raw, bundle, source).items():
        if sid is not None and not theta_weight(bundle.config):  # many series: the latest window is all it reads
            frame = frame.tail(preprocessor_of(bundle, sid).input_rows)
        part = frame[list(cfg.columns)].astype("float64").reset_index()
        part[cfg.date_column] = format_dates(frame.index)
        if sid is not None and bundle.series is not None:
            part.insert(0, bundle.series.column, sid)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
