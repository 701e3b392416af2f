"""Chronological splits and sliding windows: the `Preprocessor` that turns one series into model inputs.

Time order is sacred here: the split comes first, scalers are fit on the training rows only,
and a window belongs to the split that holds all of its targets; its inputs are strictly
earlier rows (or the same row when `lead` is 0), so no window ever reads a later split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.config.settings import AUTO, FLAT_FLOOR, FLAT_WINDOW, PipelineConfig, ScalerKind, SplitConfig, Transform, settled
from pipeline.dates import infer_frequency, next_dates
from pipeline.errors import ConfigError, DataError
from pipeline.features.calendar import calendar_columns, calendar_features, calendar_parts
from pipeline.features.scalers import Scaling, fit_scaler, scaler_from_dict, scaler_to_dict
from pipeline.features.transforms import DIFFERENCING, apply_transform, invert_transform

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")


CALENDAR_DATES = 3  # dates that show a calendar's rhythm (pipeline.dates.infer_frequency)


# ---------------------------------------------------------------- splitting
@dataclass(frozen=True)
class SplitBounds:
    """Row positions where the validation and test parts start (exclusive ends of the others)."""

    n_rows: int
    val_start: int
    test_start: int

    def part(self, split: SplitName) -> slice:
        return {
            "train": slice(0, self.val_start),
            "val": slice(self.val_start, self.test_start),
            "test": slice(self.test_start, self.n_rows),
        }[split]

    def label(self, positions: np.ndarray) -> np.ndarray:
        """The split name of each row position."""
        return np.where(positions < self.val_start, "train",
                        np.where(positions < self.test_start, "val", "test"))


def split_by_time(index: pd.DatetimeIndex, cfg: SplitConfig) -> SplitBounds:
    """Chronological train / validation / test boundaries over a sorted date index."""
    n = len(index)
    if cfg.from_end:  # whole row counts from the series' end: test last, validation before it
        test_start = max(n - int(cfg.test or 0), 0)
        return SplitBounds(n_rows=n, val_start=max(test_start - int(cfg.val), 0), test_start=test_start)
    if cfg.train_end is not None:
        val_start = int(index.searchsorted(pd.Timestamp(cfg.train_end), side="right"))
        end = cfg.val_end if cfg.val_end is not None else cfg.train_end
        test_start = int(index.searchsorted(pd.Timestamp(end), side="right"))
    elif cfg.train is not None and cfg.train < 1 and cfg.val < 1:
        val_start = int(round(n * cfg.train))
        test_start = int(round(n * (cfg.train + cfg.val)))
    else:
        val_start = int(cfg.train or 0)
        test_start = int((cfg.train or 0) + cfg.val)
    return SplitBounds(n_rows=n, val_start=min(val_start, n), test_start=min(test_start, n))


@dataclass
class Windows:
    """Model-ready arrays for one split. Positions are row positions in the series.

    `X` is a read-only view into the scaled feature matrix (window i is rows origin-lookback+1
    .. origin), not a copy: `lookback` copies of every row would cost lookback x n_features x 4
    bytes per row. Gather a batch with `X[idx]` (what `training.fit` does; `np.take` would copy all of X).
    """

    X: np.ndarray  # (n, window_rows, n_features + n_calendar), float32, a view (see above and `Preprocessor.scaled`)
    y: np.ndarray  # (n, horizon) scaled, transformed target, float32
    origins: np.ndarray  # (n,) position of each window's last input row
    target_positions: np.ndarray  # (n, horizon)
    weight: np.ndarray | None = None  # (n,) MASE loss weight per window at power 1 (train.loss_weight); None: equal

    def __len__(self) -> int:
        return len(self.origins)


class Preprocessor:
    """Everything between raw rows and model tensors, fit on training rows only.

    The same fitted object prepares training data, scores the test part and serves forecasts
    from the logged model, so training and serving can never drift apart.
    """

    def __init__(self, cfg: PipelineConfig) -> None:
        unresolved = [k for k, v in (("window.lookback", cfg.window.lookback),
                                     ("preprocess.target_transform", cfg.preprocess.target_transform),
                                     *((f"transform of {c}", cfg.preprocess.transform_for(c)) for c in cfg.data.features))
                      if v == AUTO]
        if unresolved:
            raise ConfigError(f"{', '.join(unresolved)} still say auto: resolve the config against its data first "
                              "(pipeline.data.auto.resolve_auto)")
        self.features = list(cfg.data.features)
        self.target = cfg.data.target
        self.feature_transforms = {c: cfg.preprocess.transform_for(c) for c in self.features}
        self.target_transform: Transform = cfg.preprocess.target_transform
        self.lookback = cfg.window.lookback
        self.pad = settled(cfg.window.pad, False)  # windows before a series' first row read it held (flat history)
        self.horizon = cfg.window.horizon
        self.lead = cfg.window.lead
        self.feature_scaler_kind: ScalerKind = settled(cfg.preprocess.feature_scaler, "standard")
        self.target_scaler_kind: ScalerKind = settled(cfg.preprocess.target_scaler, "standard")
        self.feature_scaler: Scaling | None = None
        self.target_scaler: Scaling | None = None
        self.frequency: str | None = cfg.data.freq  # the training dates' calendar (pipeline.dates): given or inferred
        self.given_frequency = cfg.data.freq
        self.calendar: list[str] = calendar_parts(cfg)  # calendar inputs known ahead (pipeline.features.calendar)
        self.holidays: str | None = cfg.data.holidays
        self.floor: float | None = settled(cfg.data.floor, None)  # forecasts and bounds are raised to it (data.floor)
        self.fitted = False
        # training only (not saved): the season of the MASE loss weights (train.loss_weight); None: no weights
        season = cfg.evaluate.season_length if isinstance(cfg.evaluate.season_length, int) else 1
        self.mase_weight_season: int | None = season if cfg.train.loss_weight == "mase" else None
        self.mase_weight_spread = cfg.model.window_norm == "standard"  # a window's unit: its sd, not its mean

    # -- sizes
    @property
    def warmup(self) -> int:
        """Rows lost at the start to differencing (their transformed value is undefined)."""
        used = [*self.feature_transforms.values(), self.target_transform]
        return 1 if DIFFERENCING & set(used) else 0

    @property
    def n_calendar(self) -> int:
        """Calendar inputs per row (the columns `scaled` appends to the features): 0 without them."""
        return len(calendar_columns(self.calendar, self.holidays))

    @property
    def window_rows(self) -> int:
        """Rows of one window: the lookback, and with calendar inputs also the rows up to its last target, whose
        calendar the network reads (pipeline.model.network; never their values)."""
        return self.lookback + (self.lead + self.horizon - 1 if self.n_calendar else 0)

    @property
    def input_rows(self) -> int:
        """Raw rows a forecast reads: the lookback window plus the differencing warm-up."""
        return self.lookback + self.warmup

    @property
    def min_input_rows(self) -> int:
        """Raw rows a forecast needs at least: `input_rows`, or with `pad` one row after the warm-up."""
        return self.warmup + 1 if self.pad else self.input_rows

    # -- transforms
    def transformed(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature matrix (rows, n_features) and target vector (rows,), transformed, unscaled."""
        feats = np.column_stack(
            [apply_transform(frame[c].to_numpy(), self.feature_transforms[c]) for c in self.features]
        )
        target = apply_transform(frame[self.target].to_numpy(), self.target_transform)
        return feats, target

    def fit(self, frame: pd.DataFrame, bounds: SplitBounds) -> Preprocessor:
        """Fit the scalers on the training rows only (after the warm-up rows)."""
        feats, target = self.transformed(frame)
        rows = slice(self.warmup, bounds.val_start)
        self.feature_scaler = fit_scaler(self.feature_scaler_kind, feats[rows])
        self.target_scaler = fit_scaler(self.target_scaler_kind, target[rows].reshape(-1, 1))
        dated = isinstance(frame.index, pd.DatetimeIndex)
        # the calendar from the training dates; a short series' from its dates up to the test part (two dates
        # of a yearly series read as 8760 hours; dates are known ahead, no value is read)
        known = bounds.val_start if bounds.val_start >= CALENDAR_DATES else max(bounds.val_start, bounds.test_start)
        self.frequency = self.given_frequency or (infer_frequency(frame.index[:known]) if dated else None)
        self.fitted = True
        return self

    def scaled(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The scaled feature matrix (rows, n_features) and target vector (rows,).

        With calendar inputs the matrix also holds them (rows + lead + horizon - 1, n_features + n_calendar): the
        calendar columns after the features, unscaled, and after the last row the calendar of the dates a forecast
        from it predicts (on the training calendar, `pipeline.dates.next_dates`), their values NaN (never read).
        """
        feats, target = self.transformed(frame)
        if self.feature_scaler is not None:
            feats = self.feature_scaler.transform(feats)
        if self.target_scaler is not None:
            target = self.target_scaler.transform(target.reshape(-1, 1)).ravel()
        feats = feats.astype(np.float32)
        if self.n_calendar:
            if not isinstance(frame.index, pd.DatetimeIndex):
                raise ConfigError("data.calendar and data.holidays need dated rows (a date column); rule: calendar "
                                  "inputs are computed from the dates")
            extra = self.lead + self.horizon - 1
            dates = frame.index.append(next_dates(frame.index, extra, self.frequency))
            feats = np.column_stack([np.vstack([feats, np.full((extra, feats.shape[1]), np.nan, np.float32)]),
                                     calendar_features(dates, self.calendar, self.holidays)])
        return feats, target.astype(np.float32)

    def unscale_target(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.target_scaler is None:
            return values
        return self.target_scaler.inverse_transform(values.reshape(-1, 1)).reshape(values.shape)

    def floored(self, values: np.ndarray, tails: dict[float, np.ndarray] | None = None
                ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        """Forecasts (and a quantile head's) raised to the target's floor (`data.floor`); unchanged without one."""
        tails = tails or {}
        if self.floor is None:
            return values, tails
        return np.fmax(values, self.floor), {q: np.fmax(tail, self.floor) for q, tail in tails.items()}

    # -- saved form
    FORMAT_KEYS = ("features", "target", "feature_transforms", "target_transform", "lookback", "horizon", "lead",
                   "frequency", "feature_scaler", "target_scaler")

    def to_dict(self) -> dict[str, Any]:
        """The fitted preprocessor as plain JSON-ready data: transforms, window sizes, calendar, scalers' numbers."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.to_dict called before fit")
        return {
            "features": list(self.features),
            "target": self.target,
            "feature_transforms": dict(self.feature_transforms),
            "target_transform": self.target_transform,
            "lookback": int(self.lookback),
            "horizon": int(self.horizon),
            "lead": int(self.lead),
            **({"pad": True} if self.pad else {}),  # only when used: an unpadded model keeps its saved form
            "frequency": self.frequency,
            "feature_scaler": scaler_to_dict(self.feature_scaler),
            "target_scaler": scaler_to_dict(self.target_scaler),
            # only when used: a model without calendar inputs keeps the saved form it always had
            **({"calendar": {"parts": list(self.calendar), "holidays": self.holidays}} if self.n_calendar else {}),
            **({"floor": float(self.floor)} if self.floor is not None else {}),  # only when used (format 11)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        """The fitted preprocessor `to_dict` described; it transforms exactly as the original did."""
        missing = [k for k in cls.FORMAT_KEYS if k not in data]
        if missing:
            raise ValueError(f"preprocessor data lacks {missing}")
        pre = cls.__new__(cls)
        pre.features = [str(c) for c in data["features"]]
        pre.target = str(data["target"])
        pre.feature_transforms = {str(k): v for k, v in data["feature_transforms"].items()}
        pre.target_transform = data["target_transform"]
        known = {"level", "difference", "log_return", "log"}
        unknown = {t for t in [*pre.feature_transforms.values(), pre.target_transform] if t not in known}
        if unknown or set(pre.feature_transforms) != set(pre.features):
            raise ValueError(f"preprocessor data: unknown transforms {sorted(unknown)} or transforms not matching the features")
        pre.lookback, pre.horizon, pre.lead = int(data["lookback"]), int(data["horizon"]), int(data["lead"])
        pre.pad = data.get("pad", False)
        if not isinstance(pre.pad, bool):
            raise ValueError(f"preprocessor data: pad must be true or false (got {pre.pad!r})")
        pre.frequency = pre.given_frequency = data["frequency"]
        pre.feature_scaler = scaler_from_dict(data["feature_scaler"])
        pre.target_scaler = scaler_from_dict(data["target_scaler"])
        pre.feature_scaler_kind = data["feature_scaler"]["kind"]
        pre.target_scaler_kind = data["target_scaler"]["kind"]
        calendar = data.get("calendar") or {"parts": [], "holidays": None}
        pre.calendar, pre.holidays = [str(p) for p in calendar["parts"]], calendar["holidays"]
        calendar_columns(pre.calendar, pre.holidays)  # unknown parts: a ValueError
        floor = data.get("floor")
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not np.isfinite(floor)):
            raise ValueError(f"preprocessor data: floor must be a finite number (got {floor!r})")
        pre.floor = None if floor is None else float(floor)
        pre.mase_weight_season = None
        pre.fitted = True
        return pre

    # -- windows
    def origins(self, n_rows: int, pad: bool | None = None) -> np.ndarray:
        """Every window end position whose inputs are defined (targets may lie beyond the data): with `pad` (the
        preprocessor's own unless given), from the first row after the warm-up."""
        return np.arange(self.warmup if (self.pad if pad is None else pad) else self.input_rows - 1, n_rows)

    def padded(self, feats: np.ndarray, pad: bool | None = None) -> tuple[np.ndarray, int]:
        """`scaled`'s matrix with `lookback` rows in front that hold its first defined row (the warm-up's rows too),
        a differenced column's change 0, as if the series' first values had held before it; and the rows added
        (row r of `feats` is row r + that of the result). Without `pad` (the preprocessor's own unless given):
        `feats` itself and 0."""
        if not (self.pad if pad is None else pad):
            return feats, 0
        first = feats[self.warmup].copy()
        changes = [i for i, c in enumerate(self.features) if self.feature_transforms[c] in DIFFERENCING]
        if changes:
            zero = np.zeros((1, len(self.features)))
            zero = self.feature_scaler.transform(zero) if self.feature_scaler is not None else zero
            first[changes] = zero[0, changes]
        front = np.repeat(first[None, :], self.lookback + self.warmup, axis=0)
        return np.vstack([front, feats[self.warmup:]]).astype(feats.dtype, copy=False), self.lookback

    def input_windows(self, feats: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """(n, window_rows, n_features [+ n_calendar]) windows of `scaled`'s matrix whose lookback ends at each origin
        (with `pad`, rows before the first read as `padded` says).

        A view into `feats` (its padded copy) when the origins are consecutive (every split's are), a copy otherwise.
        """
        return self.windows_of(*self.padded(feats), origins)

    def windows_of(self, feats: np.ndarray, shift: int, origins: np.ndarray) -> np.ndarray:
        """`input_windows` of a matrix already `padded` by `shift` rows (padded once for many sets of origins)."""
        view = sliding_window_view(feats, self.window_rows, axis=0)  # (rows-window_rows+1, n_feat, window_rows)
        starts = np.asarray(origins) - self.lookback + 1 + shift
        if len(starts) and np.array_equal(starts, np.arange(starts[0], starts[0] + len(starts))):
            return view[starts[0]:starts[0] + len(starts)].transpose(0, 2, 1)
        return view[starts].transpose(0, 2, 1)

    def windows(self, frame: pd.DataFrame, bounds: SplitBounds) -> dict[SplitName, Windows]:
        """Windows of each split: all targets of a window lie in that split; with `pad`, the validation and test
        windows may be padded, the training windows never (flat padded history taught worse forecasts on
        validation: docs/bring-your-own-series.md)."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.windows called before fit")
        feats, target = self.scaled(frame)
        n = len(frame)
        origins = self.origins(n)
        origins = origins[origins + self.lead + self.horizon - 1 < n]
        target_pos = origins[:, None] + self.lead + np.arange(self.horizon)[None, :]
        first_label = bounds.label(target_pos[:, 0])
        last_label = bounds.label(target_pos[:, -1])
        weights = self.mase_weights(frame, bounds, origins) if self.mase_weight_season else None
        full = origins >= self.input_rows - 1  # windows that read no padded row
        padded = self.padded(feats)  # once for every split
        out: dict[SplitName, Windows] = {}
        for split in SPLITS:
            # training reads whole windows only; a padded one is scored and served (a series shorter than the lookback)
            keep = (first_label == split) & (last_label == split) & (full if split == "train" else True)
            o = origins[keep]
            out[split] = Windows(
                X=self.windows_of(*padded, o),  # a view: no per-window copy (feats is float32)
                y=target[target_pos[keep]].astype(np.float32).reshape(-1, self.horizon),
                origins=o,
                target_positions=target_pos[keep],
                weight=None if weights is None else weights[keep],
            )
        return out

    def calibration_windows(self, frame: pd.DataFrame, bounds: SplitBounds) -> Windows:
        """A window at every validation origin: each window whose first target lies in the validation part,
        the full ones and those whose later targets run past it. The intervals are calibrated on them
        (`steps.calibration_forecasts`): step h of a validation part of V rows has V - h + 1 origins, not one
        window per series. `target_positions` past the validation part (or the data) are -1: those targets are
        not the validation part's and are left out of the calibration.

        A series too short for a whole window before its validation part is calibrated on padded windows (as
        `pad` reads them) even when its forecasts need none: its errors count in the intervals that will cover its
        test part, instead of leaving them to the longer, easier series."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.calibration_windows called before fit")
        feats, target = self.scaled(frame)
        origins = self.origins(len(frame), pad=True)
        first = origins + self.lead
        origins = origins[(first >= bounds.val_start) & (first < bounds.test_start)]
        positions = origins[:, None] + self.lead + np.arange(self.horizon)[None, :]
        positions = np.where(positions < bounds.test_start, positions, -1)
        return Windows(X=self.windows_of(*self.padded(feats, pad=True), origins),
                       y=np.where(positions >= 0, target[np.maximum(positions, 0)], np.nan).astype(np.float32),
                       origins=origins, target_positions=positions)

    def mase_weights(self, frame: pd.DataFrame, bounds: SplitBounds, origins: np.ndarray) -> np.ndarray:
        """Each window's MASE loss weight: its inputs' mean target level / the series' in-sample seasonal-naive
        error over the training rows. An error of e in log-ratio units is about level x e in the target's units, so
        the weight turns it into the series' MASE units; training raises it to `train.loss_weight_power`
        (`model.training.window_weights`). A series whose seasonal-naive error is below a thousandth of its level
        counts as that thousandth, so a flat series cannot take over the loss."""
        season = self.mase_weight_season
        values = frame[self.target].to_numpy(dtype=float)
        fit = values[: bounds.val_start]
        errors = np.abs(fit[season:] - fit[:-season]) if len(fit) > season else np.abs(np.diff(fit))
        level = float(np.nanmean(np.abs(fit))) if len(fit) else 1.0
        scale = max(float(np.nanmean(errors)) if len(errors) else 0.0, 1e-3 * level, np.finfo(float).tiny)
        if self.pad:  # the first value held before the series, as the padded windows read it
            values = np.concatenate([np.full(self.lookback, values[0]), values])
            origins = origins + self.lookback
        sums = np.concatenate([[0.0], np.cumsum(values)])
        means = (sums[origins + 1] - sums[origins + 1 - self.lookback]) / self.lookback
        if self.mase_weight_spread:
            squares = np.concatenate([[0.0], np.cumsum(values ** 2)])
            second = (squares[origins + 1] - squares[origins + 1 - self.lookback]) / self.lookback
            sd = np.sqrt(np.maximum(second - means ** 2, 0.0))
            return np.where(sd <= np.maximum(FLAT_WINDOW * np.abs(means), FLAT_FLOOR), 1.0, sd) / scale
        return np.maximum(means, 0.0) / scale

    def anchors(self, levels: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """The last known target level before each window's first predicted step (NaN if none)."""
        pos = origins + self.lead - 1
        out = np.full(len(pos), np.nan)
        out[pos >= 0] = np.asarray(levels, dtype=float)[pos[pos >= 0]]
        return out

    def to_levels(self, pred_scaled: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Model outputs (n, horizon), scaled and transformed, back to original units."""
        steps = self.unscale_target(pred_scaled).reshape(-1, self.horizon)
        return invert_transform(steps, anchors, self.target_transform)


def prepare(frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[Preprocessor, SplitBounds, dict[SplitName, Windows]]:
    """Split by time, fit the preprocessor on the training rows, and cut windows for each split."""
    bounds = split_by_time(frame.index, cfg.split)
    pre = Preprocessor(cfg).fit(frame, bounds)
    windows = pre.windows(frame, bounds)
    needed = {"train": 2, "val": 1 if bounds.test_start > bounds.val_start else 0, "test": 1}
    short = {s: len(w) for s, w in windows.items() if len(w) < needed[s]}
    if short:
        raise DataError(
            f"too few rows for the lookback window and the splits: {len(frame)} rows give windows "
            f"{ {s: len(w) for s, w in windows.items()} } (lookback={pre.lookback}, "
            f"horizon={pre.horizon}); rule: every split needs at least {needed}"
        )
    return pre, bounds, windows


def warmup_needed(cfg: PipelineConfig) -> int:
    """Rows lost to differencing before the first window (an `auto` transform counts as differenced)."""
    used = {cfg.preprocess.target_transform, *(cfg.preprocess.transform_for(c) for c in cfg.data.features)}
    return 1 if (DIFFERENCING | {AUTO}) & used else 0


def input_rows_needed(cfg: PipelineConfig, many: bool = True) -> int:
    """Rows one forecast needs (lookback plus the differencing warm-up; with `window.pad`, one row and the warm-up);
    `auto` settings count as their smallest outcome (a one-row lookback, a differencing warm-up, padding for `many`
    series: one series is never padded by `auto`)."""
    padded = cfg.window.pad is True or (many and cfg.window.pad == AUTO)
    lookback = 1 if cfg.window.lookback == AUTO or padded else cfg.window.lookback
    return lookback + warmup_needed(cfg)


def min_rows_needed(cfg: PipelineConfig) -> int:
    """Rows the data must have so each split holds at least one window (two for training).

    `auto` settings count as their smallest outcome (a one-row lookback, a differencing warm-up);
    `auto.resolve_auto` keeps the lookback within what the training rows allow.
    """
    per_window = cfg.window.horizon + cfg.window.lead - 1 + input_rows_needed(cfg, many=False)
    horizon = cfg.window.horizon
    parts = 3 if (cfg.split.val > 0 or cfg.split.train_end is not None) else 2
    if cfg.split.from_end:  # the held-out parts are fixed row counts; windows need the rest
        return per_window + 1 + int(cfg.split.val) + int(cfg.split.test or 0)
    return per_window + 1 + (parts - 1) * horizon
