"""Metrics in original units, the model's forecasts of a split beside its baselines', their intervals and scores,
and the findings a run reports (verdicts against persistence, a stalled or still-improving training)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.config.settings import EvaluateConfig, IntervalsConfig, PipelineConfig
from pipeline.dates import format_dates
from pipeline.evaluation.baselines import baseline_forecasts
from pipeline.evaluation.intervals import Calibration, fit_conformal, interval_baseline, recent_scale, tail_forecasts
from pipeline.features.transforms import DIFFERENCING
from pipeline.features.windows import Preprocessor, SplitBounds, Windows
from pipeline.model.network import Network, predict_levels, weights_digest
from pipeline.model.theta import combine
from pipeline.model.training import TrainResult

if TYPE_CHECKING:
    from pipeline.data.contract import ValidatedData

def rmse(actual: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(actual) - np.asarray(pred)) ** 2)))


def mae(actual: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(actual) - np.asarray(pred))))


def mape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute percentage error, in percent; rows where the actual value is 0 are skipped."""
    actual, pred = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    nonzero = actual != 0
    if not nonzero.any():
        return float("nan")
    return float(np.mean(np.abs((actual[nonzero] - pred[nonzero]) / actual[nonzero])) * 100)


def smape(actual: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric MAPE as the M4 competition defines it, in percent (0-200).

    mean(200 * |actual - pred| / (|actual| + |pred|)); a point where both are 0 is a perfect 0,
    not a division by zero.
    """
    actual, pred = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    if actual.size == 0:
        return float("nan")
    denominator = np.abs(actual) + np.abs(pred)
    ratio = np.divide(2.0 * np.abs(actual - pred), denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(np.mean(ratio) * 100)


def mase_scale(insample: np.ndarray, season: int = 1) -> float:
    """The in-sample seasonal-naive mean absolute error that MASE divides by (M4's definition).

    mean |y[t] - y[t - season]| over the in-sample values; a series shorter than one season and a
    step falls back to season 1. NaN when fewer than two values are known.
    """
    values = np.asarray(insample, dtype=float).ravel()
    lag = season if season >= 1 and values.size > season else 1
    if values.size <= lag:
        return float("nan")
    return float(np.mean(np.abs(values[lag:] - values[:-lag])))


def mase(actual: np.ndarray, pred: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: the forecast's MAE over `scale` (from `mase_scale`).

    NaN where the scale is 0 or unknown (a series whose in-sample values never change).
    """
    if not np.isfinite(scale) or scale <= 0:
        return float("nan")
    return mae(actual, pred) / scale


# ---------------------------------------------------------------- interval scores
def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actual values inside [lower, upper] (NaN without values)."""
    actual = np.asarray(actual, dtype=float)
    if actual.size == 0:
        return float("nan")
    return float(np.mean((actual >= np.asarray(lower)) & (actual <= np.asarray(upper))))


def mean_width(lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean(np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)))


def interval_score(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float) -> np.ndarray:
    """The interval score of each point (Gneiting and Raftery; M4's MSIS numerator) of a (1 - alpha) interval:
    its width plus 2/alpha times how far the actual value lies outside it."""
    actual, lower, upper = (np.asarray(a, dtype=float) for a in (actual, lower, upper))
    return ((upper - lower) + (2.0 / alpha) * np.maximum(lower - actual, 0.0)
            + (2.0 / alpha) * np.maximum(actual - upper, 0.0))


def msis(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: float, alpha: float = 0.05) -> float:
    """Mean scaled interval score (M4's definition): the mean interval score over `scale` (from `mase_scale`).

    NaN where the scale is 0 or unknown, as for `mase`.
    """
    if not np.isfinite(scale) or scale <= 0 or np.asarray(actual).size == 0:
        return float("nan")
    return float(np.mean(interval_score(actual, lower, upper, alpha))) / scale


def pinball(actual: np.ndarray, quantile: np.ndarray, tau: float) -> float:
    """Mean pinball (quantile) loss of forecasts of the `tau` quantile."""
    diff = np.asarray(actual, dtype=float) - np.asarray(quantile, dtype=float)
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


def interval_metrics(actual: np.ndarray, bands: Mapping[str, np.ndarray], levels: Sequence[int],
                     scale: float = float("nan")) -> dict[str, float]:
    """coverage_L, width_L and acd_L (|coverage - L/100|) per level, the mean pinball loss over every band
    (lower_L is the (1 - L/100)/2 quantile, upper_L the (1 + L/100)/2 one) and MSIS at 95 % (given `scale`)."""
    out: dict[str, float] = {}
    losses = []
    for level in levels:
        lower, upper = bands[f"lower_{level}"], bands[f"upper_{level}"]
        out[f"coverage_{level}"] = coverage(actual, lower, upper)
        out[f"width_{level}"] = mean_width(lower, upper)
        out[f"acd_{level}"] = abs(out[f"coverage_{level}"] - level / 100)
        tail = (1 - level / 100) / 2
        losses += [pinball(actual, lower, tail), pinball(actual, upper, 1 - tail)]
    if losses:
        out["pinball"] = float(np.mean(losses))
    if 95 in levels:
        out["msis"] = msis(actual, bands["lower_95"], bands["upper_95"], scale)
    return out


def direction_accuracy(actual: np.ndarray, pred: np.ndarray, anchor: np.ndarray) -> float:
    """Share of forecasts that move the same way as the actual value from the last known one.

    Undefined (NaN, shown as n/a and not logged) for a forecast that never moves, such as
    persistence: it has no direction to be right or wrong about.
    """
    actual, pred = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    anchor = np.broadcast_to(np.asarray(anchor, dtype=float).reshape(-1, 1), actual.shape)
    if pred.size == 0 or np.all(pred == anchor):
        return float("nan")
    return float(np.mean(np.sign(actual - anchor) == np.sign(pred - anchor)))


NEAR_ZERO_SHARE = 0.01  # an actual value below 1 % of the mean |actual| is "near zero" for MAPE


def near_zero(actual: np.ndarray) -> str | None:
    """Why MAPE misleads on these actual values (some near zero, or a sign change); None when it does not.

    MAPE divides by the actual value: near zero a small error becomes hundreds of percent.
    """
    values = np.asarray(actual, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    scale = float(np.mean(np.abs(values)))
    smallest = float(np.min(np.abs(values)))
    if values.min() < 0 < values.max():
        return f"the actual values change sign (from {values.min():.4g} to {values.max():.4g})"
    if scale > 0 and smallest < NEAR_ZERO_SHARE * scale:
        return (f"some actual values lie near zero (smallest |value| {smallest:.4g}, under "
                f"{NEAR_ZERO_SHARE:.0%} of the mean |value| {scale:.4g})")
    return None


def metrics(actual: np.ndarray, pred: np.ndarray, anchor: np.ndarray) -> dict[str, float]:
    return {
        "rmse": rmse(actual, pred),
        "mae": mae(actual, pred),
        "mape": mape(actual, pred),
        "direction_acc": direction_accuracy(actual, pred, anchor),
    }


# ---------------------------------------------------------------- range check
@dataclass(frozen=True)
class RangeCheck:
    """How many evaluated target values lie outside the range the target scaler saw in training."""

    low: float
    high: float
    outside: int
    total: int
    min_seen: float
    max_seen: float

    @property
    def share(self) -> float:
        return self.outside / self.total if self.total else 0.0

    def message(self) -> str:
        return (f"{self.outside} of {self.total} test target values lie outside the training range "
                f"[{self.low:.6g}, {self.high:.6g}] the scaler saw (test min {self.min_seen:.6g}, "
                f"max {self.max_seen:.6g}): a level target extrapolates there")


def target_range_check(pre: Preprocessor, frame: pd.DataFrame, bounds: SplitBounds) -> RangeCheck | None:
    """For a level-like target (no differencing), test values vs the training range; None otherwise."""
    if pre.target_transform in DIFFERENCING:
        return None
    levels = frame[pre.target].to_numpy(dtype=float)
    train = levels[pre.warmup:bounds.val_start]
    test = levels[bounds.part("test")]
    if len(train) == 0 or len(test) == 0:
        return None
    low, high = float(np.min(train)), float(np.max(train))
    outside = int(np.sum((test < low) | (test > high)))
    return RangeCheck(low, high, outside, len(test), float(np.min(test)), float(np.max(test)))


# ---------------------------------------------------------------- forecasts
@dataclass
class Forecasts:
    """Forecasts of one split in original units, aligned with what actually happened."""

    dates: pd.DatetimeIndex  # date of the first predicted step of each window
    actual: np.ndarray  # (n, horizon)
    predicted: np.ndarray  # (n, horizon)
    anchor: np.ndarray  # (n,) last known value before each window's first step
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, horizon)
    scale: float = float("nan")  # in-sample seasonal-naive MAE of the rows before the first target (MSIS, MASE)
    recent: np.ndarray | None = None  # (n,) each window's recent variability (intervals.recent_scale), or None
    bands: dict[str, np.ndarray] = field(default_factory=dict)  # lower_L / upper_L -> (n, horizon); {} without
    baseline_bands: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # baseline -> its bands
    tails: dict[float, np.ndarray] = field(default_factory=dict)  # a quantile head's forecasts: probability -> (n, horizon)
    floor: float | None = None  # the target's least value (data.floor): forecasts and bounds are raised to it

    @property
    def levels(self) -> list[int]:
        """The interval levels these forecasts carry (none without intervals)."""
        return [int(c.split("_")[1]) for c in self.bands if c.startswith("lower_")]

    def table(self) -> pd.DataFrame:
        """Long form: the first target date of each window, the step, the forecast and its interval bounds."""
        n, horizon = self.predicted.shape
        return pd.DataFrame({
            "date": np.repeat(format_dates(self.dates), horizon),  # times kept for sub-daily data
            "step": np.tile(np.arange(1, horizon + 1), n).astype("int64"),
            "forecast": self.predicted.ravel().astype("float64"),
            **{name: values.ravel().astype("float64") for name, values in self.bands.items()},
        })

    def persistence(self) -> np.ndarray:
        """The naive forecast: every step equals the last known value."""
        return np.repeat(self.anchor.reshape(-1, 1), self.actual.shape[1], axis=1)


def forecast_split(
    model: Network, pre: Preprocessor, frame: pd.DataFrame, windows: Windows,
    baselines: EvaluateConfig | None = None, theta: float = 0.0, theta_method: str = "dynamic",
    theta_seasonality: str = "any",
) -> Forecasts:
    """The model's forecasts of one split in original units (combined with Theta's, by `theta_method` and
    `theta_seasonality`, at weight `theta`: `model.theta_weight`, `model.theta_method`, `model.theta_seasonality`),
    with every configured baseline."""
    levels = frame[pre.target].to_numpy(dtype=float)
    anchor = pre.anchors(levels, windows.origins)
    season = (baselines or EvaluateConfig()).season_length
    predicted, tails = pre.floored(*combine(*predict_levels(model, pre, windows.X, anchor), levels,
                                            windows.origins + pre.lead - 1, theta,
                                            season if isinstance(season, int) else None, theta_method,
                                            theta_seasonality))
    known = int(windows.target_positions[0, 0]) if len(windows) else 0
    return Forecasts(
        dates=frame.index[windows.target_positions[:, 0]],
        actual=levels[windows.target_positions],
        predicted=predicted,
        anchor=anchor,
        baselines=baseline_forecasts(levels, windows.origins + pre.lead - 1, pre.horizon, baselines),
        scale=mase_scale(levels[:known], season if isinstance(season, int) else 1),
        recent=recent_scale(levels, windows.origins, pre.lookback - 1),  # over the window's own inputs
        tails=tails,
        floor=pre.floor,
    )


# ---------------------------------------------------------------- intervals
def calibrate(parts: Sequence[tuple[Forecasts, float]], cfg: IntervalsConfig,
              scales: Mapping[str, float] | None = None, span: int = 0) -> Calibration | None:
    """Conformal intervals of the model and of its interval baseline from validation forecasts.

    `parts`: (validation forecasts, the scale their errors are divided by) per series; one series
    passes scale 1 and no `scales` (errors in original units). With `intervals.scaling: window` each
    error is divided by its window's recent variability instead (`Forecasts.recent`, over `span`
    changes; windows without one are left out). None when intervals are off (`intervals.levels: []`) or there is no
    validation window to fit them on.
    """
    window = cfg.scaling == "window"
    parts = [(fc, s) for fc, s in parts if len(fc.actual) and np.isfinite(s) and s > 0]
    if not cfg.levels or not parts:
        return None
    baseline = interval_baseline(sorted(set.intersection(*(set(fc.baselines) for fc, _ in parts)) | {"naive"}))

    def divisor(fc: Forecasts, s: float) -> np.ndarray:
        recent = fc.recent if fc.recent is not None else np.full(len(fc.actual), np.nan)
        return np.where(recent > 0, recent, np.nan)[:, None] if window else np.full((len(fc.actual), 1), s)

    def errors(pred: str) -> np.ndarray:
        return np.vstack([np.abs(fc.actual - (fc.predicted if pred == "model" else
                                              fc.baselines.get(pred, fc.persistence()))) / divisor(fc, s)
                          for fc, s in parts])

    def head_scores(level: int) -> np.ndarray:
        """Conformalized quantile regression's scores: how far each actual lies outside the head's bounds."""
        bounds = [(tail_forecasts(level, fc.tails), fc, s) for fc, s in parts]
        return np.vstack([np.maximum(lo - fc.actual, fc.actual - hi) / divisor(fc, s) for (lo, hi), fc, s in bounds])

    span = span if window else 0  # the changes `Forecasts.recent` was measured over (the lookback), saved for serving
    kind = "window" if window else "series"
    scores = {level: head_scores(level) for level in cfg.levels} if cfg.method == "quantile" else errors("model")
    model = fit_conformal(scores, cfg.levels, None if window else scales, "the model", kind, span, cfg.quantile, cfg.method)
    base = fit_conformal(errors(baseline), cfg.levels, None if window else scales, baseline.replace("_", " "), kind, span,
                         cfg.quantile)
    return Calibration(model, base, baseline, model.notes + base.notes)


def with_intervals(fc: Forecasts, cal: Calibration | None, scale: float = 1.0) -> Forecasts:
    """A copy of `fc` with the model's and the interval baseline's bands (`scale`: the series' scale)."""
    if cal is None or not len(fc.actual):
        return fc
    if cal.model.scaling == "window":
        scale = fc.recent if fc.recent is not None else np.full(len(fc.actual), np.nan)
    base = fc.baselines.get(cal.baseline_name, fc.persistence() if cal.baseline_name == "naive" else None)
    return replace(fc, bands=cal.model.bands(fc.predicted, scale, fc.tails, fc.floor),
                   baseline_bands={} if base is None else {cal.baseline_name: cal.baseline.bands(base, scale,
                                                                                                 floor=fc.floor)})


def _ratio(num: float, den: float) -> float:
    return num / den if den and np.isfinite(den) else float("nan")


@dataclass(frozen=True)
class SplitScores:
    """The scores of one split: the model's and every baseline's metrics, overall and per step.

    `flat()` gives MLflow's metric names (see `score`); everything else reads the fields.
    """

    split: str  # "train", "val", "test", or "backtest" for pooled folds
    model: Mapping[str, float]  # metric -> value (rmse, mae, mape, direction_acc)
    baselines: Mapping[str, Mapping[str, float]]  # baseline (naive = persistence) -> metric -> value
    steps: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)  # "model"|baseline -> metric -> h=1..H
    windows: int = 0

    @property
    def rmse_ratio(self) -> float:
        """Model RMSE / persistence RMSE (< 1: the model beats persistence)."""
        return self.ratio("naive")

    def ratio(self, baseline: str, metric: str = "rmse") -> float:
        return _ratio(self.model[metric], self.baselines.get(baseline, {}).get(metric, float("nan")))

    def beaten_by(self) -> list[str]:
        """Baselines whose RMSE is lower than the model's."""
        return [b for b, m in self.baselines.items() if m.get("rmse", float("inf")) < self.model["rmse"]]

    def flat(self) -> dict[str, float]:
        """MLflow metric names, one per metric and forecaster so MLflow's compare view lines them up.

        `{split}_{metric}` (the model), `{split}_{baseline}_{metric}` for every baseline,
        `{split}_rmse_ratio` and `{split}_mae_ratio` (model/persistence), `{split}_rmse_ratio_{baseline}`
        for the other baselines, `{split}_rmse_ratio_best_baseline`, `{split}_{metric}_h{k}` and
        `{split}_{baseline}_{metric}_h{k}` per step k (horizon > 1), and `{split}_windows`.
        """
        p = self.split
        out = {f"{p}_{name}": value for name, value in self.model.items()}
        for baseline, values in self.baselines.items():
            out.update({f"{p}_{baseline}_{name}": value for name, value in values.items()})
        out[f"{p}_rmse_ratio"] = self.rmse_ratio
        out[f"{p}_mae_ratio"] = self.ratio("naive", "mae")
        out.update({f"{p}_rmse_ratio_{b}": self.ratio(b) for b in self.baselines if b != "naive"})
        finite = [m["rmse"] for m in self.baselines.values() if np.isfinite(m["rmse"])]
        if finite:
            out[f"{p}_rmse_ratio_best_baseline"] = _ratio(self.model["rmse"], min(finite))
        for who, by_metric in self.steps.items():
            label = "" if who == "model" else f"{who}_"
            for name, values in by_metric.items():
                out.update({f"{p}_{label}{name}_h{k}": v for k, v in enumerate(values, start=1)})
        out[f"{p}_windows"] = float(self.windows)
        return out


@dataclass(frozen=True)
class Scores:
    """The scores of every evaluated split of one model."""

    splits: Mapping[str, SplitScores]

    def __getitem__(self, split: str) -> SplitScores:
        return self.splits[split]

    def flat(self) -> dict[str, float]:
        return {k: v for s in self.splits.values() for k, v in s.flat().items()}


def score(fc: Forecasts, prefix: str = "test") -> SplitScores:
    """Model and baseline metrics (persistence always among them), per step when horizon > 1."""
    baselines = dict(fc.baselines)
    baselines.setdefault("naive", fc.persistence())
    steps: dict[str, dict[str, tuple[float, ...]]] = {}
    horizon = fc.actual.shape[1]
    levels = fc.levels
    banded = {"model": fc.bands, **fc.baseline_bands}
    if horizon > 1:
        cols = range(horizon)
        steps["model"] = {"rmse": tuple(rmse(fc.actual[:, k], fc.predicted[:, k]) for k in cols),
                          "mae": tuple(mae(fc.actual[:, k], fc.predicted[:, k]) for k in cols)}
        for name, pred in baselines.items():
            steps[name] = {"rmse": tuple(rmse(fc.actual[:, k], pred[:, k]) for k in cols)}
        for who, bands in banded.items():
            by_step = [interval_metrics(fc.actual[:, k], {c: b[:, k] for c, b in bands.items()}, levels, fc.scale)
                       for k in cols]
            steps[who].update({f"{m}_{level}": tuple(s[f"{m}_{level}"] for s in by_step)
                               for level in levels for m in ("coverage", "width")})
    model = {**metrics(fc.actual, fc.predicted, fc.anchor),
             **(interval_metrics(fc.actual, fc.bands, levels, fc.scale) if levels else {})}
    return SplitScores(split=prefix, model=model,
                       baselines={name: {**metrics(fc.actual, pred, fc.anchor),
                                         **(interval_metrics(fc.actual, banded[name], levels, fc.scale)
                                            if name in banded and levels else {})}
                                  for name, pred in baselines.items()},
                       steps=steps, windows=len(fc.actual))


def per_step(scores: SplitScores, metric: str = "rmse") -> dict[str, list[float]]:
    """Per-step values h=1..H of the model and each baseline that has `metric` per step."""
    return {who: list(by_metric[metric]) for who, by_metric in scores.steps.items() if metric in by_metric}


# ---------------------------------------------------------------- verdicts
def beats_persistence(ratio: float | None) -> bool:
    """The one threshold of every verdict and warning: RMSE ratio model/persistence below 1."""
    return ratio is not None and ratio < 1


def verdict(ratio: float | None, baseline: str = "persistence") -> str:
    """The model against `baseline` (its name in words), from the ratio model/baseline of a metric."""
    return f"better than {baseline}" if beats_persistence(ratio) else f"NOT better than {baseline}"


def worse_than_persistence(ratio: float | None, where: str, detail: str | None = None) -> str | None:
    """The warning when the model does not beat persistence `where` (e.g. "on test"); None otherwise.

    Same threshold as `verdict` (no warning for an unknown ratio): a ratio of 1 or more warns,
    "worse" above 1, "no better" at exactly 1. The figures in brackets are `detail`, by default
    the ratio to three decimals.
    """
    if ratio is None or not np.isfinite(ratio) or beats_persistence(ratio):
        return None
    words = "worse than" if ratio > 1.0 else "no better than"
    return f"model is {words} persistence {where} ({detail or f'RMSE ratio {ratio:.3f}'})"


def training_stalled(result: TrainResult) -> str | None:
    """The warning when training never improved on its first epoch, or stopped early before the model moved,
    or (`still_improving`) was still improving when the epoch limit ended it.

    In the first two cases the model kept is (close to) the one after one epoch: the learning rate,
    the scaling or the model's size deserve a look before its scores are trusted.
    """
    if result.epochs_run < 2:
        return None
    losses = result.val_loss or result.train_loss
    what = "validation" if result.val_loss else "training"
    if result.best_epoch == 0:
        return (f"the model never improved after epoch 1 of {result.epochs_run}: the best {what} loss "
                f"({losses[0]:.4g}) is the first one{' and early stopping ended training' if result.stopped_early else ''}; "
                f"check train.learning_rate, the scaling and the model size")
    if result.stopped_early and losses and losses[0] - min(losses) <= 0.01 * abs(losses[0]):
        return (f"early stopping ended training at epoch {result.epochs_run} before the model moved: the best "
                f"{what} loss ({min(losses):.4g}, epoch {result.best_epoch + 1}) is within 1 % of epoch 1's "
                f"({losses[0]:.4g}); check train.learning_rate and train.patience")
    return still_improving(result)


EPOCHS_JUDGED = 10  # fewer epochs is a smoke run or a refit whose length was chosen: no verdict on its end
LAST_SHARE = 0.05  # the best epoch among the last 5 % of epochs (at least the last one): still improving


def still_improving(result: TrainResult) -> str | None:
    """The warning when the epoch limit, not early stopping, ended a training that was still improving.

    The mirror of `training_stalled`: the best loss falls in the last epochs, so more epochs would
    probably have found a better model (train.epochs), or a higher train.learning_rate gets there sooner.
    """
    losses = result.val_loss or result.train_loss
    n = len(losses)
    if result.stopped_early or n < EPOCHS_JUDGED:
        return None
    best = int(np.argmin(losses))
    if best < n - max(1, int(n * LAST_SHARE)):
        return None
    what = "validation" if result.val_loss else "training"
    earlier = n - 1 - max(1, n // 10)  # a tenth of the run before its end
    fall = 1 - losses[best] / losses[earlier] if losses[earlier] > 0 else float("nan")
    return (f"training hit the epoch limit while still improving: the best {what} loss ({losses[best]:.4g}) is at "
            f"epoch {best + 1} of {n}, {fall:.1%} below epoch {earlier + 1}'s; raise train.epochs (or "
            f"train.learning_rate) so that early stopping (train.patience), not the limit, ends training")


AT_PERSISTENCE = 0.02  # an RMSE ratio to persistence within 2 % of 1: the model forecasts about the last value


def at_persistence_note(ratio: float | None, where: str) -> str:
    """Why a model that never left epoch 1 may be right: it ends at persistence, which on a series close to a
    random walk is about the best forecast there is; "" when its scores say otherwise."""
    if ratio is None or not np.isfinite(ratio) or abs(ratio - 1) > AT_PERSISTENCE:
        return ""
    return (f". The model ends at persistence (RMSE ratio {ratio:.3f} {where}): expected on a series close to a "
            f"random walk, such as daily stock prices, whose next change is mostly noise; a series with a season, "
            f"a trend or memory should do better")


def findings(cfg: PipelineConfig, data_digest: str, data: ValidatedData, pre: Preprocessor, bounds: SplitBounds,
             result: TrainResult, test: SplitScores,
             val: SplitScores | None = None) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """What a finished training says about itself: run tags, extra metrics and loud warnings.

    Warnings: a model worse than persistence (also the `warning` tag), baselines that beat it,
    training that never improved after epoch 1 (`training_warning`), a test MAPE over actual
    values near zero or changing sign (`mape_warning`; metric `test_actual_near_zero`), and a
    level target whose test values leave the range the scaler saw in training.
    """
    frame = data.frame
    tags = {
        "data_digest": data_digest, "data_rows": str(len(frame)),
        "data_start": str(frame.index[0].date()), "data_end": str(frame.index[-1].date()),
        "rows_dropped": str(data.rows_dropped), "rows_filled": str(data.rows_filled),
        "gaps_filled": str(data.gaps_filled),
        "train_device": result.device, "best_epoch": str(result.best_epoch + 1),
        "stopped_early": str(result.stopped_early), "weights_digest": weights_digest(result.model.state_dict()),
    }
    metrics = {"epochs_run": float(result.epochs_run), "train_threads": float(result.threads),
               "final_train_loss": result.train_loss[-1]}
    if result.val_loss:
        metrics["best_val_loss"] = min(result.val_loss)
    warnings: list[str] = []
    worse = worse_than_persistence(test.rmse_ratio, "on test")
    if worse:
        tags["warning"] = worse
        warnings.append(worse)
    beaten_by = [b for b in cfg.evaluate.baselines if b in test.beaten_by()]
    if beaten_by:
        tags["beaten_by_baselines"] = ", ".join(beaten_by)
        warnings.append(f"baselines with a lower test RMSE than the model: {tags['beaten_by_baselines']}")
    stalled = training_stalled(result)
    if stalled and result.best_epoch == 0:
        stalled += at_persistence_note(*((val.rmse_ratio, "on validation") if val else (test.rmse_ratio, "on test")))
    if stalled:
        tags["training_warning"] = stalled
        warnings.append(stalled)
    test_actual = frame[cfg.data.target].to_numpy(dtype=float)[bounds.part("test")]
    why = near_zero(test_actual)
    metrics["test_actual_near_zero"] = float(why is not None)
    if why:
        tags["mape_warning"] = (f"test MAPE ({test.model.get('mape', float('nan')):.4g} %) is unreliable: {why} "
                                f"in {cfg.data.target!r}'s test part; read RMSE and MAE instead")
        warnings.append(tags["mape_warning"])
    out_of_range = target_range_check(pre, frame, bounds)
    if out_of_range is not None:
        metrics["test_out_of_range_share"] = out_of_range.share
        if out_of_range.outside:
            tags["target_out_of_range"] = out_of_range.message()
            warnings.append(out_of_range.message())
    return tags, metrics, warnings
