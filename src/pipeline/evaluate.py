"""Metrics in original units, the persistence baseline, and scoring of a split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.features import Preprocessor, Windows
from pipeline.model import LSTMForecaster
from pipeline.train import predict


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


def direction_accuracy(actual: np.ndarray, pred: np.ndarray, anchor: np.ndarray) -> float:
    """Share of forecasts that move the same way as the actual value from the last known one.

    A forecast that predicts no move (persistence) scores 0 on every row where the value moved.
    """
    actual, pred = np.asarray(actual, dtype=float), np.asarray(pred, dtype=float)
    anchor = np.broadcast_to(np.asarray(anchor, dtype=float).reshape(-1, 1), actual.shape)
    return float(np.mean(np.sign(actual - anchor) == np.sign(pred - anchor)))


def metrics(actual: np.ndarray, pred: np.ndarray, anchor: np.ndarray) -> dict[str, float]:
    return {
        "rmse": rmse(actual, pred),
        "mae": mae(actual, pred),
        "mape": mape(actual, pred),
        "direction_acc": direction_accuracy(actual, pred, anchor),
    }


@dataclass
class Forecasts:
    """Forecasts of one split in original units, aligned with what actually happened."""

    dates: pd.DatetimeIndex  # date of the first predicted step of each window
    actual: np.ndarray  # (n, horizon)
    predicted: np.ndarray  # (n, horizon)
    anchor: np.ndarray  # (n,) last known value before each window's first step

    def table(self) -> pd.DataFrame:
        """Long form: the first target date of each window, the step, and the forecast."""
        n, horizon = self.predicted.shape
        return pd.DataFrame({
            "date": np.repeat(self.dates.strftime("%Y-%m-%d"), horizon),
            "step": np.tile(np.arange(1, horizon + 1), n).astype("int64"),
            "forecast": self.predicted.ravel().astype("float64"),
        })

    def persistence(self) -> np.ndarray:
        """The naive forecast: every step equals the last known value."""
        return np.repeat(self.anchor.reshape(-1, 1), self.actual.shape[1], axis=1)


def forecast_split(
    model: LSTMForecaster, pre: Preprocessor, frame: pd.DataFrame, windows: Windows
) -> Forecasts:
    levels = frame[pre.target].to_numpy(dtype=float)
    anchor = pre.anchors(levels, windows.origins)
    predicted = pre.to_levels(predict(model, windows.X), anchor)
    return Forecasts(
        dates=frame.index[windows.target_positions[:, 0]],
        actual=levels[windows.target_positions],
        predicted=predicted,
        anchor=anchor,
    )


def score(fc: Forecasts, prefix: str = "test") -> dict[str, float]:
    """Model and persistence metrics, their ratios, and per-step RMSE when horizon > 1.

    Keys: `{prefix}_{metric}`, `{prefix}_naive_{metric}`, `{prefix}_rmse_ratio`,
    `{prefix}_rmse_h{k}` for each step k.
    """
    naive = fc.persistence()
    out: dict[str, float] = {}
    for name, value in metrics(fc.actual, fc.predicted, fc.anchor).items():
        out[f"{prefix}_{name}"] = value
    for name, value in metrics(fc.actual, naive, fc.anchor).items():
        out[f"{prefix}_naive_{name}"] = value
    out[f"{prefix}_rmse_ratio"] = out[f"{prefix}_rmse"] / out[f"{prefix}_naive_rmse"] if out[f"{prefix}_naive_rmse"] else float("nan")
    out[f"{prefix}_mae_ratio"] = out[f"{prefix}_mae"] / out[f"{prefix}_naive_mae"] if out[f"{prefix}_naive_mae"] else float("nan")
    if fc.actual.shape[1] > 1:
        for k in range(fc.actual.shape[1]):
            out[f"{prefix}_rmse_h{k + 1}"] = rmse(fc.actual[:, k], fc.predicted[:, k])
            out[f"{prefix}_naive_rmse_h{k + 1}"] = rmse(fc.actual[:, k], naive[:, k])
    out[f"{prefix}_windows"] = float(len(fc.actual))
    return out
