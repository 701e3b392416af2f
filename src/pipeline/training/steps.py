"""The steps of the one road, for a panel of series (one series is a panel of one, `panel.of_one`): split each
series by time, fit its preprocessor on its own training rows, window it (stacked for one global network, kept
apart for one network per series), train, forecast every split, fit the intervals on every series' validation
errors, score each series (RMSE, M4's sMAPE and MASE beside naive and seasonal naive) and their means, refit on
every row, bundle the model, and hand the gate its inputs.

`panel` reads and validates the long table these steps take. No MLflow, no Prefect: flows/tasks.py wires them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.settings import AUTO, PipelineConfig, settled, theta_weight
from pipeline.data.panel import ONE_SERIES, Panel
from pipeline.dates import format_dates
from pipeline.errors import DataError
from pipeline.evaluation import metrics
from pipeline.evaluation.intervals import Calibration
from pipeline.evaluation.metrics import Forecasts
from pipeline.features.windows import SPLITS, Preprocessor, SplitBounds, SplitName, Windows, prepare, split_by_time
from pipeline.model import theta
from pipeline.model.network import Network
from pipeline.model.training import EpochCallback, TrainResult, fit_network
from pipeline.serving.model_format import ForecastBundle, SeriesModels

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- split, scale, windows
@dataclass
class SeriesPrep:
    """One series ready for the model: its own fitted preprocessor, split bounds and windows."""

    pre: Preprocessor
    bounds: SplitBounds
    windows: dict[SplitName, Windows]
    trainable: bool  # False: too short to train or score on; it still gets forecasts (fit on all its rows)


def empty_windows(pre: Preprocessor, n_features: int) -> Windows:
    return Windows(X=np.empty((0, pre.lookback, n_features), dtype=np.float32),
                   y=np.empty((0, pre.horizon), dtype=np.float32),
                   origins=np.empty(0, dtype=np.int64), target_positions=np.empty((0, pre.horizon), dtype=np.int64))


def prepare_series(frame: pd.DataFrame, cfg: PipelineConfig) -> SeriesPrep:
    """Split one series by time, fit its preprocessor on its training rows and cut its windows.

    A series without a test window is not trained or scored on; its preprocessor is fit on all its rows so the
    model can still forecast it. A short series with a test window but too few rows for a training window is
    scored (and calibrates the intervals) with one network shared by every series (`global`): the network
    learns from the longer series; one network per series (`local`) needs the series' own training windows.
    """
    bounds = split_by_time(frame.index, cfg.split)
    pre = Preprocessor(cfg)
    need = 2 if {cfg.preprocess.feature_scaler, cfg.preprocess.target_scaler} != {"none"} else 1  # rows to fit on
    # a series too short to fit its scalers on its training rows fits them on the rows before its test part
    fit_end = bounds.val_start if bounds.val_start - pre.warmup >= need else min(bounds.test_start, pre.warmup + need)
    if fit_end - pre.warmup >= need:
        windows = pre.fit(frame, replace(bounds, val_start=fit_end)).windows(frame, bounds)
        shared = cfg.model.strategy == "global" or cfg.data.series_column is None
        if len(windows["test"]) and (len(windows["train"]) or shared):
            return SeriesPrep(pre, bounds, windows, trainable=True)
    everything = SplitBounds(n_rows=len(frame), val_start=len(frame), test_start=len(frame))
    pre = Preprocessor(cfg).fit(frame, everything)
    empty = empty_windows(pre, len(pre.features))
    return SeriesPrep(pre, everything, {s: empty for s in SPLITS}, trainable=False)


def prepare_panel(panel: Panel, cfg: PipelineConfig) -> dict[str, SeriesPrep]:
    """`prepare_series` for every series; DataError when no series can be trained on. One series (its id
    implicit) must hold every split's windows (`windows.prepare`'s rule)."""
    if panel.column is None:
        pre, bounds, windows = prepare(panel.series[ONE_SERIES], cfg)
        return {ONE_SERIES: SeriesPrep(pre, bounds, windows, trainable=True)}
    preps = {sid: prepare_series(frame, cfg) for sid, frame in panel.series.items()}
    if not any(p.trainable and len(p.windows["train"]) for p in preps.values()):
        longest = max(panel.series, key=lambda sid: len(panel.series[sid]))
        raise DataError(f"no series is long enough to train on: at least one needs a training window (lookback "
                        f"{cfg.window.lookback} rows and horizon {cfg.window.horizon} within its training part) and "
                        f"every scored one a test window (split {cfg.split}); the longest, {longest!r}, has "
                        f"{len(panel.series[longest])} rows. Give more rows, a shorter window.lookback, or a "
                        f"smaller split")
    short = [sid for sid, p in preps.items() if not p.trainable]
    if short:
        log.info("%d series too short to train on get forecasts only: %s", len(short), ", ".join(short[:20]))
    return preps


class StackedX:
    """The input windows of many series as one read-only sequence, copied only a batch at a time.

    Each part is a series' windows (consecutive windows of its scaled rows, as every split's are).
    The rows under them are laid end to end once (rows x features: small), and `x[idx]` gathers
    the windows at `idx` (an index array or a slice) with one fancy index into a sliding-window
    view of those rows: a batch costs one copy of its own windows, whatever the number of series.
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        parts = [p for p in parts if len(p)]
        first = parts[0] if parts else np.empty((0, 1, 1), dtype=np.float32)
        lookback, n_features = first.shape[1:]
        # a part's rows: the first row of each window, then the rest of the last window
        rows = [np.concatenate([p[:, 0, :], p[-1, 1:, :]]) for p in parts]
        row_offsets = np.cumsum([0, *(len(r) for r in rows)])
        self.starts = np.concatenate([row_offsets[i] + np.arange(len(p)) for i, p in enumerate(parts)] or
                                     [np.empty(0, dtype=np.int64)])
        self.rows = np.ascontiguousarray(np.concatenate(rows), dtype=np.float32) if rows else \
            np.empty((lookback, n_features), dtype=np.float32)
        self.view = np.lib.stride_tricks.sliding_window_view(self.rows, lookback, axis=0)  # (R-L+1, F, L)
        self.shape = (len(self.starts), lookback, n_features)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.view[self.starts[key]].transpose(0, 2, 1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[slice(None)]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def stack_windows(parts: list[Windows]) -> Windows:
    """The windows of many series as one training set (`origins` and `target_positions`, series-relative,
    keep only each window's origin and last target position)."""
    if not parts:
        raise DataError("no windows to stack")
    return Windows(
        X=StackedX([w.X for w in parts]),  # type: ignore[arg-type]  # duck-typed: shape, len, [idx], array
        y=np.concatenate([w.y for w in parts]).astype(np.float32),
        origins=np.concatenate([w.origins for w in parts]),
        target_positions=np.concatenate([w.target_positions[:, -1:] for w in parts]),
        weight=None if any(w.weight is None for w in parts) else np.concatenate([w.weight for w in parts]),
    )


def stacked(preps: Mapping[str, SeriesPrep]) -> dict[SplitName, Windows]:
    """Each split's windows of every trainable series, stacked."""
    chosen = [p for p in preps.values() if p.trainable]
    return {s: stack_windows([p.windows[s] for p in chosen]) for s in SPLITS}


def rows_of(preps: Mapping[str, SeriesPrep]) -> int:
    return sum(p.bounds.n_rows for p in preps.values())


# ---------------------------------------------------------------- refit on every row
def refit_series(frame: pd.DataFrame, cfg: PipelineConfig) -> SeriesPrep:
    """A series prepared to train on every row up to its last one (no held-out part)."""
    n = len(frame)
    everything = SplitBounds(n_rows=n, val_start=n, test_start=n)
    pre = Preprocessor(cfg)
    if n - pre.warmup < 2:
        return prepare_series(frame, cfg)
    windows = pre.fit(frame, everything).windows(frame, everything)
    return SeriesPrep(pre, everything, windows, trainable=len(windows["train"]) > 0)


def refit_panel(panel: Panel, cfg: PipelineConfig) -> dict[str, SeriesPrep]:
    return {sid: refit_series(frame, cfg) for sid, frame in panel.series.items()}


# ---------------------------------------------------------------- scores
SCORED = ("rmse", "mae", "smape", "mase")


def series_metrics(actual: np.ndarray, pred: np.ndarray, scale: float) -> dict[str, float]:
    """RMSE, MAE, sMAPE and MASE (M4's definitions) of one series' forecasts."""
    return {"rmse": metrics.rmse(actual, pred), "mae": metrics.mae(actual, pred),
            "smape": metrics.smape(actual, pred), "mase": metrics.mase(actual, pred, scale)}


def insample_scale(frame: pd.DataFrame, target: str, end: int, season: int | None) -> float:
    """MASE's divisor: the in-sample seasonal-naive MAE over every row before `end` (the first scored row).

    M4 scales by the error over all the data known at the forecast origin; for the test part that is
    the training and validation rows.
    """
    return metrics.mase_scale(frame[target].to_numpy(dtype=float)[:end], season or 1)


@dataclass(frozen=True)
class PanelScores:
    """Per-series scores of one split (a table) and their means (MLflow's flat names)."""

    split: str
    table: pd.DataFrame  # one row per series: <series column>, windows, then <who>_<metric> columns

    def means(self) -> dict[str, float]:
        """`{split}_{metric}` for the model, `{split}_{baseline}_{metric}` for each baseline: means over series."""
        out: dict[str, float] = {}
        for column in self.table.columns[2:]:
            who, metric = column.split("__")
            values = self.table[column].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            name = f"{self.split}_{metric}" if who == "model" else f"{self.split}_{who}_{metric}"
            out[name] = float(values.mean()) if values.size else float("nan")
        for name in [k for k in out if re.search(r"_coverage_\d+$", k)]:
            # ACD of the pooled coverage (M4's definition), not the mean of each series' ACD
            level = int(name.rsplit("_", 1)[1])
            out[name.replace("_coverage_", "_acd_")] = abs(out[name] - level / 100)
        if f"{self.split}_naive_rmse" in out:
            ratio = self.table["model__rmse"] / self.table["naive__rmse"].replace(0, np.nan)
            out[f"{self.split}_rmse_ratio"] = float(ratio.mean())
        if f"{self.split}_naive_mase" in out:
            naive = out[f"{self.split}_naive_mase"]
            out[f"{self.split}_mase_ratio"] = out[f"{self.split}_mase"] / naive if naive else float("nan")
        out[f"{self.split}_series"] = float(len(self.table))
        out[f"{self.split}_windows"] = float(self.table["windows"].sum())
        return out

    def csv(self) -> str:
        return self.table.to_csv(index=False, float_format="%.6g")

    def records(self) -> list[dict[str, Any]]:
        """The table as rows of plain values (a Prefect table artifact)."""
        shown = self.table.round(6).astype(object).where(self.table.notna(), None)
        return shown.to_dict(orient="records")


ModelFor = Callable[[str], Network]


def forecast_panel(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig,
                   split: SplitName) -> dict[str, Forecasts]:
    """Each trainable series' forecasts of `split` (original units, with the baselines), by its own preprocessor."""
    out = {}
    for sid, prep in preps.items():
        if prep.trainable and len(prep.windows[split]):
            out[sid] = metrics.forecast_split(model_for(sid), prep.pre, panel.series[sid], prep.windows[split],
                                               cfg.evaluate, theta_weight(cfg), cfg.model.theta_method,
                                               cfg.model.theta_seasonality)
    return out


def score_panel(forecasts: Mapping[str, Forecasts], panel: Panel, preps: Mapping[str, SeriesPrep],
                cfg: PipelineConfig, split: SplitName) -> PanelScores:
    """Per series: the model's and each baseline's RMSE, MAE, sMAPE and MASE on `split`."""
    rows = []
    for sid, fc in forecasts.items():
        start = preps[sid].bounds.part(split).start
        scale = insample_scale(panel.series[sid], cfg.data.target, start, cfg.evaluate.season_length)
        baselines = {"naive": fc.persistence(), **fc.baselines}
        row: dict[str, Any] = {panel.column: sid, "windows": len(fc.actual)}
        for who, pred in {"model": fc.predicted, **baselines}.items():
            for metric, value in series_metrics(fc.actual, pred, scale).items():
                row[f"{who}__{metric}"] = value
        for who, bands in {"model": fc.bands, **fc.baseline_bands}.items():
            if bands:  # coverage, width, ACD per level, pinball, MSIS (same scale as MASE)
                row.update({f"{who}__{m}": v for m, v in metrics.interval_metrics(fc.actual, bands, fc.levels,
                                                                                     scale).items()})
        rows.append(row)
    return PanelScores(split, pd.DataFrame(rows))


def interval_scale(frame: pd.DataFrame, target: str, bounds: SplitBounds, season: int | None) -> float:
    """A series' interval scale, always a positive number (a saved model refuses any other): the in-sample
    seasonal-naive MAE of its training rows; where that is undefined or 0 (a series too short for a season, or
    flat), the naive MAE of every row before its test part, then their mean absolute level, then 1."""
    values = frame[target].to_numpy(dtype=float)
    known = values[:max(bounds.test_start, 1)]
    for scale in (metrics.mase_scale(values[:bounds.val_start], season or 1), metrics.mase_scale(known, 1),
                  float(np.mean(np.abs(known)))):
        if np.isfinite(scale) and scale > 0:
            return scale
    return 1.0


def series_scales(panel: Panel, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig) -> dict[str, float]:
    """Each series' interval scale (`interval_scale`); 1 for one series (its intervals in its own units)."""
    if panel.column is None:
        return {sid: 1.0 for sid in preps}
    return {sid: interval_scale(panel.series[sid], cfg.data.target, p.bounds, cfg.evaluate.season_length)
            for sid, p in preps.items()}


def validation_origins(panel: Panel, preps: Mapping[str, SeriesPrep]
                       ) -> Iterator[tuple[str, SeriesPrep, pd.DataFrame, Windows, np.ndarray]]:
    """Each scored series with a validation part: (id, prep, frame, its windows at every validation origin
    (`Preprocessor.calibration_windows`) with the targets past the validation part pointing at the origin, and
    which targets are the validation part's)."""
    for sid, prep in preps.items():
        if not prep.trainable or prep.bounds.test_start <= prep.bounds.val_start:  # no validation part
            continue
        frame = panel.series[sid]
        windows = prep.pre.calibration_windows(frame, prep.bounds)
        if not len(windows):
            continue
        known = windows.target_positions >= 0
        shown = replace(windows, target_positions=np.where(known, windows.target_positions, windows.origins[:, None]))
        yield sid, prep, frame, shown, known


def calibration_forecasts(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep],
                          cfg: PipelineConfig) -> dict[str, Forecasts]:
    """Each scored series' forecasts from every validation origin (`validation_origins`), the targets past its
    validation part NaN (left out of the calibration): with `split: {val: H}` a series gives step h H - h + 1
    errors instead of one window's."""
    out = {}
    for sid, prep, frame, windows, known in validation_origins(panel, preps):
        fc = metrics.forecast_split(model_for(sid), prep.pre, frame, windows, cfg.evaluate, theta_weight(cfg),
                                    cfg.model.theta_method, cfg.model.theta_seasonality)
        out[sid] = replace(fc, actual=np.where(known, fc.actual, np.nan))
    return out


def calibration_theta(panel: Panel, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig) -> dict[str, np.ndarray]:
    """Theta's forecasts alone (`model.theta_method`) from the validation origins `calibration_forecasts` forecasts
    from, row for row (NaN where Theta has none); no network runs."""
    season = cfg.evaluate.season_length
    return {sid: theta.theta_forecasts(frame[prep.pre.target].to_numpy(dtype=float),
                                       windows.origins + prep.pre.lead - 1, prep.pre.horizon,
                                       season if isinstance(season, int) else None, cfg.model.theta_method,
                                       cfg.model.theta_seasonality)
            for sid, prep, frame, windows, _ in validation_origins(panel, preps)}


def calibrate_panel(val: Mapping[str, Forecasts], scales: Mapping[str, float],
                    cfg: PipelineConfig) -> Calibration | None:
    """One conformal table for every series, from the validation errors (`calibration_forecasts`: every
    validation origin) each divided by its series' scale (one series: in its own units, no table of scales)."""
    return metrics.calibrate([(fc, scales[sid]) for sid, fc in val.items()], cfg.intervals,
                              dict(scales) if cfg.data.series_column else None,
                              span=cfg.window.lookback - 1 if isinstance(cfg.window.lookback, int) else 0)


def with_panel_intervals(forecasts: Mapping[str, Forecasts], calibration: Calibration | None,
                         scales: Mapping[str, float]) -> dict[str, Forecasts]:
    """Each series' forecasts with its intervals (the shared table times the series' scale)."""
    return {sid: metrics.with_intervals(fc, calibration, scales[sid]) for sid, fc in forecasts.items()}


def with_theta_weight(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep],
                      cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with `model.theta_weight: auto` settled on the validation origins (`calibration_forecasts`): the
    weight of `theta.CHOICES` whose combined forecasts have the lowest sMAPE plus scaled absolute error (each
    series' errors over its interval scale), each relative to the network alone's. 0 without validation rows."""
    if cfg.model.theta_weight != AUTO:
        return cfg
    return cfg.with_overrides(model={"theta_weight": best_theta_weight(model_for, panel, preps, cfg)})


def served_theta_weight(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep], asked: PipelineConfig,
                        evaluated: PipelineConfig) -> PipelineConfig:
    """`evaluated` (its `model.theta_weight` settled on the validation origins) with the share the logged model
    serves recorded as `model.theta_weight_served` (`settings.served_config` serves it): the evaluated share, or with
    `test` the share chosen again, as `with_theta_weight` chooses, on every test origin; a number `asked` names
    itself. The evaluated share where `asked` gave the share as a number or no series has a test window."""
    asked_share, share = asked.model.theta_weight_served, theta_weight(evaluated)
    if isinstance(asked_share, float):
        share = asked_share
    elif (asked.model.theta_weight == AUTO and settled(asked_share, "test") == "test"
          and any(len(p.windows["test"]) for p in preps.values() if p.trainable)):
        share = best_theta_weight(model_for, panel, at_test_origins(preps), evaluated)
    return evaluated.with_overrides(model={"theta_weight_served": share})


def at_test_origins(preps: Mapping[str, SeriesPrep]) -> dict[str, SeriesPrep]:
    """Each series' preparation with its test part where its validation part was: `calibration_forecasts` and
    `calibration_theta` then forecast from every test origin."""
    return {sid: replace(p, bounds=SplitBounds(p.bounds.n_rows, p.bounds.test_start, p.bounds.n_rows))
            for sid, p in preps.items()}


def best_theta_weight(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep],
                      cfg: PipelineConfig) -> float:
    """The weight of `theta.CHOICES` whose combined forecasts from the validation origins of `preps` score best
    (`with_theta_weight`); 0 without validation rows."""
    network = calibration_forecasts(model_for, panel, preps, cfg.with_overrides(model={"theta_weight": 0.0}))
    if not network:
        return 0.0
    by_theta = calibration_theta(panel, preps, cfg)
    scales = series_scales(panel, preps, cfg)
    actual = np.concatenate([fc.actual.ravel() for fc in network.values()])
    net = np.concatenate([fc.predicted.ravel() for fc in network.values()])
    alone = np.concatenate([np.where(np.isfinite(by_theta[sid]), by_theta[sid], fc.predicted).ravel()
                            for sid, fc in network.items()])
    scale = np.concatenate([np.full(fc.actual.size, scales[sid]) for sid, fc in network.items()])
    known = np.isfinite(actual)
    actual, net, alone, scale = actual[known], net[known], alone[known], scale[known]

    floor = settled(cfg.data.floor, None)

    def errors(weight: float) -> tuple[float, float]:
        pred = (1 - weight) * net + weight * alone
        pred = pred if floor is None else np.fmax(pred, floor)  # as evaluation and serving raise it
        gap = np.abs(actual - pred)
        both = np.abs(actual) + np.abs(pred)
        return (float(np.mean(np.divide(2 * gap, both, out=np.zeros_like(gap), where=both > 0))),
                float(np.mean(gap / scale)))

    base = errors(0.0)

    def relative(weight: float) -> float:
        return sum(e / b if b > 0 else (0.0 if e == 0 else np.inf) for e, b in zip(errors(weight), base))

    return min(theta.CHOICES, key=relative)


def forecast_splits(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig,
                    splits: tuple[SplitName, ...] = ("val", "test")
                    ) -> tuple[dict[SplitName, dict[str, Forecasts]], Calibration | None]:
    """Each series' forecasts of every split in `splits` (split -> series -> forecasts), with intervals fitted on
    the validation errors of every series (each divided by its series' scale; one series: in its own units), and
    that calibration (None: no intervals). The one place training, backtests and sweeps forecast and calibrate
    (`model.theta_weight` as `cfg` has it: settle `auto` first with `with_theta_weight`, else it means 0)."""
    forecasts = {s: forecast_panel(model_for, panel, preps, cfg, s) for s in dict.fromkeys(("val", *splits))}
    scales = series_scales(panel, preps, cfg)
    calibration = calibrate_panel(calibration_forecasts(model_for, panel, preps, cfg), scales, cfg)
    return {s: with_panel_intervals(forecasts[s], calibration, scales) for s in splits}, calibration


def served_calibration(model_for: ModelFor, panel: Panel, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig,
                       evaluated: Calibration | None) -> Calibration | None:
    """The intervals the logged model serves with (`intervals.served`): `evaluated` (fitted on the validation
    errors, what the test scores were measured with), or with `test` fitted again on the errors from every test
    origin, the nearest to the end of the data a served model forecasts from (each series' scale as before).
    `evaluated` where the test part has no window or intervals are off."""
    if evaluated is None or settled(cfg.intervals.served, "validation") != "test":
        return evaluated
    refitted = calibrate_panel(calibration_forecasts(model_for, panel, at_test_origins(preps), cfg),
                               series_scales(panel, preps, cfg), cfg)
    return refitted or evaluated


def forecast_tables(forecasts: Mapping[str, Forecasts], column: str | None) -> pd.DataFrame:
    """Every series' forecasts in long form: <series column>, date, step, forecast (one series: no id column)."""
    if column is None:
        return next(iter(forecasts.values())).table()
    parts = [fc.table().assign(**{column: sid}) for sid, fc in forecasts.items()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["date", "step", "forecast"])
    return table[[column, *[c for c in table.columns if c != column]]]


def panel_tags(panel: Panel, preps: Mapping[str, SeriesPrep]) -> dict[str, str]:
    """Run tags describing the data: series counts, rows, first and last dates."""
    starts = [f.index[0] for f in panel.series.values()]
    ends = [f.index[-1] for f in panel.series.values()]
    return {
        "data_rows": str(panel.rows), "data_series": str(len(panel.series)),
        "data_start": str(min(starts).date()), "data_end": str(max(ends).date()),
        "series_skipped": str(len(panel.skipped)),
        "gaps_filled": str(sum(panel.gaps_filled.values())), "series_gaps_filled": str(len(panel.gaps_filled)),
        "series_forecast_only": str(sum(not p.trainable for p in preps.values())),
    }


# ---------------------------------------------------------------- serving input
def input_example(panel: Panel, cfg: PipelineConfig, rows: int, series: int = 2) -> pd.DataFrame:
    """The last `rows` rows of the first `series` series, in the form the model takes (long, with the series id
    column, for many series; `series_example`'s for one)."""
    parts = []
    for sid in list(panel.series)[:series]:
        part = series_example(panel.series[sid], cfg, rows)
        if panel.column is not None:
            part.insert(0, panel.column, sid)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def series_example(frame: pd.DataFrame, cfg: PipelineConfig, rows: int) -> pd.DataFrame:
    """The last `rows` rows in the raw form the model takes (date strings, float values)."""
    tail = frame[list(cfg.data.columns)].tail(rows).astype("float64")
    example = tail.reset_index()
    example[cfg.data.date_column] = format_dates(tail.index)
    return example


# ---------------------------------------------------------------- the trained model(s)
@dataclass
class PanelFit:
    """The trained network: one shared by every series (global) or one per series (local)."""

    shared: TrainResult | None = None
    local: dict[str, TrainResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # local: series whose training failed -> why

    def model_for(self, series: str) -> Network:
        return self.local[series].model if self.shared is None else self.shared.model

    @property
    def first(self) -> TrainResult:
        return self.shared if self.shared is not None else next(iter(self.local.values()))

    def serves(self, preps: Mapping[str, SeriesPrep]) -> dict[str, SeriesPrep]:
        """The series this fit forecasts: every series for a shared network (short ones included), else those
        with a network of their own."""
        return dict(preps) if self.shared is not None else {s: p for s, p in preps.items() if s in self.local}

    def best_epochs(self) -> dict[str, list[int]]:
        """Epochs to the best validation loss (what a refit trains for), per network ("*": the shared one), one
        count per ensemble member."""
        if self.shared is not None:
            return {"*": self.shared.member_epochs()}
        return {sid: r.member_epochs() for sid, r in self.local.items()}


def fit_panel(preps: Mapping[str, SeriesPrep], cfg: PipelineConfig, on_epoch_end: EpochCallback | None = None,
              validate: bool = True) -> PanelFit:
    """Train on every trainable series' windows: one network on their stacked windows (`global`; one series), or
    one network per series (`local`), each stopping early on its validation windows unless `validate` is False;
    each network an ensemble of `model.ensemble` members trained one after another (`fit_network`).
    The flows train the same way through their own tasks (progress, mapped series and members); this is the plain
    form (backtest folds, sweeps)."""
    def one(windows: dict[SplitName, Windows]) -> TrainResult:
        val = windows["val"] if validate and len(windows["val"]) else None
        return fit_network(cfg, windows["train"], val, on_epoch_end=on_epoch_end)

    if cfg.model.strategy == "local" and cfg.data.series_column is not None:
        return PanelFit(local={sid: one(p.windows) for sid, p in preps.items() if p.trainable})
    return PanelFit(shared=one(stacked(preps)))


def series_models(fit: PanelFit, preps: Mapping[str, SeriesPrep], column: str) -> SeriesModels:
    served = fit.serves(preps)
    state_dicts = None if fit.shared is not None else {sid: r.model.checkpoint()["state_dict"] for sid, r in fit.local.items()}
    return SeriesModels(column, {sid: p.pre for sid, p in served.items()},
                        "global" if fit.shared is not None else "local", state_dicts)


def bundle(fit: PanelFit, preps: Mapping[str, SeriesPrep], cfg: PipelineConfig,
           calibration: Calibration | None = None, evaluated: ForecastBundle | None = None) -> ForecastBundle:
    """The logged model: one network (or one per series), every served series' preprocessor, the intervals
    (one series: its network and preprocessor, no series table); `evaluated`: where this one is a refit, the model
    the run's scores measured, saved beside it."""
    intervals = calibration.model if calibration else None
    if cfg.data.series_column is None:
        return ForecastBundle(checkpoint=fit.first.model.checkpoint(), preprocessor=preps[ONE_SERIES].pre, config=cfg,
                              intervals=intervals, evaluated=evaluated)
    series = series_models(fit, preps, str(cfg.data.series_column))
    first = next(iter(series.preprocessors.values()))
    return ForecastBundle(checkpoint=fit.first.model.checkpoint(), preprocessor=first, config=cfg, series=series,
                          intervals=intervals, evaluated=evaluated)


# ---------------------------------------------------------------- the gate's inputs
@dataclass(frozen=True)
class GateInputs:
    """What re-scoring the champion on this run's test windows needs (`promotion.table_mase`,
    `promotion.table_rmse`)."""

    rows: pd.DataFrame  # raw rows (dates as text; long, with the series id, for many) ending at each last test origin
    history: pd.DataFrame  # the same from each series' first row: for a champion whose Theta part reads it all
    actual: pd.Series  # target by (series, date text)
    first_dates: dict[str, list[str]]  # each series' test windows' first target dates
    scales: dict[str, float]  # each series' MASE divisor
    window: tuple[str, str]  # the first and last test dates over all series


def gate_inputs(data: Panel, preps: Mapping[str, SeriesPrep], test: Mapping[str, Forecasts],
                cfg: PipelineConfig, context_rows: int) -> GateInputs:
    """The rows a champion forecasts the test windows from: per series, `context_rows` rows before its first
    test origin (room for a champion with a longer lookback) up to its last; not every window of every series
    (and every row up to its last test origin, for a champion whose Theta part reads whole histories).
    One series: its rows as the model takes them (no id column)."""
    from pipeline.dates import date_format

    parts, whole, actual, firsts, scales = [], [], {}, {}, {}
    for sid, fc in test.items():
        frame, prep = data.series[sid], preps[sid]
        fmt = date_format(frame.index)
        origins = prep.windows["test"].origins
        rows = frame.iloc[:int(origins[-1]) + 1].reset_index()
        rows[cfg.data.date_column] = rows[cfg.data.date_column].dt.strftime(fmt)
        if data.column is not None:
            rows.insert(0, data.column, sid)
        whole.append(rows)
        parts.append(rows.iloc[max(0, int(origins[0]) - context_rows):])
        actual[sid] = pd.Series(frame[cfg.data.target].to_numpy(dtype=float), index=frame.index.strftime(fmt))
        firsts[sid] = list(fc.dates.strftime(fmt))
        scales[sid] = insample_scale(frame, cfg.data.target, prep.bounds.test_start, cfg.evaluate.season_length)
    joined = pd.concat(actual, names=["series", "date"])
    every = sorted(d for dates in firsts.values() for d in dates)
    return GateInputs(pd.concat(parts, ignore_index=True), pd.concat(whole, ignore_index=True), joined, firsts, scales,
                      (every[0], every[-1]))
