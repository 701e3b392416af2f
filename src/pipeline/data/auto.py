"""`auto` settings resolved from the data: season, lookback, transforms and the network's window recipe, in one place.

A config may say `auto` for `evaluate.season_length`, `window.lookback`, the transforms and scalers of
`preprocess`, `model.window_norm`, `model.input_chunk`, `model.residual_to`, `train.loss`,
`train.loss_weight`, `train.loss_weight_power`, `data.calendar` and `split`, and these are the code's defaults,
so a config that names only its data gets them. `resolve_frames` turns them into concrete values once the data is
validated, over every series at once (one series is a panel of one: `resolve_auto`); the flows log the
resolved config (its params and config.yaml), so a run records what it really did and re-runs the same
way. A config not resolved against data reads each `auto` as the plain setting (`config.settled`).

The rules (docs/bring-your-own-series.md, "The auto recipe"), from the series' training rows:
- the split first (`auto_split`), as every rule below reads the training rows: many series hold out each
  series' last `window.horizon` rows as its test part and `validation_rows` before them; one series keeps the
  fractions unless a part would be shorter than the horizon;
- seasons from the frequency: hours 24 (and a week, 168), days 7 (and a year, 365), business days 5
  (and 260), weeks 52, months 12, quarters 4, half-months 24; years and irregular data have none;
- the recipe (`recipe_changes`): several series are normalised window by window inside the network, by each
  window's mean in log ratios where every value read is > 0 (`window_norm: log_mean`), else by its mean and sd
  (`standard`: zeros and negative values), with no scalers, `level` transforms and an absolute error in the
  window's units, weighted towards MASE, the members of an ensemble alternating how far (`ENSEMBLE_POWERS`); the
  window's level travels with it, so a trending series is not held to its training range. One series keeps
  scaled levels or differences, unless it is sub-daily with its day or week in the data (`recipe_changes`);
- lookback of one series (`feedable_lookback`; many series too with `window.pad: false`): two of the shortest
  season (`MIN_LOOKBACK` rows at least, `NO_SEASON_LOOKBACK` without a season) or the longest season the data can
  feed, never more than a third of the median series' training rows nor more than the shortest series can
  feed before its held-out part; with window normalisation a season per LSTM step (`input_chunk`) and the head
  correcting seasonal naive (`window_changes`);
- transform without window normalisation (the target's, and each feature's when the target's is `auto`
  too): a series whose level drifts over the training rows (the second half's mean moves from the
  first half's by more than `TREND_SHIFT` of the within-half spread) is differenced: `log_return` when
  every value is > 0, else `difference`; else `level`. The transform most series call for wins;
- lookback of many series (`padded_lookback`, `window.pad` not false): two of the shortest season
  (`NO_SEASON_LOOKBACK` rows without one) or the longest season within half the median series' rows before its
  held-out part; the series too short for it are padded (`window.pad`: their first value held before them) for
  their validation and test windows and their forecasts, and train on the whole windows they hold. A given
  lookback pads the series that cannot feed it;
- early stopping (`train.patience`): 50 epochs for many series, 20 for one (`MANY_SERIES_PATIENCE`); an epoch
  draws at most `EPOCH_WINDOWS` training windows (`train.windows_per_epoch`);
- calendar inputs (`data.calendar`): none (`CALENDAR_AUTO`: they did not help on validation).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from pipeline.config.settings import (
    AUTO,
    ENSEMBLE_POWERS,
    EPOCH_WINDOWS,
    MANY_SERIES_PATIENCE,
    ONE_NETWORK_POWER,
    ONE_SERIES_PATIENCE,
    PipelineConfig,
    Transform,
    windows_needed,
)
from pipeline.data.contract import is_sub_daily
from pipeline.dates import infer_frequency, parse_frequency
from pipeline.features.transforms import LOGS
from pipeline.features.windows import split_by_time, warmup_needed

log = logging.getLogger(__name__)

LOOKBACK_SEASONS = 2
MIN_LOOKBACK = 4
NO_SEASON_LOOKBACK = 8
MAX_LOOKBACK_SHARE = 3  # lookback <= training rows / this
TREND_SHIFT = 0.5
CALIBRATION_LEVEL = 95  # `split: auto` sizes validation for this level's errors even when intervals are off

# Seasons per frequency prefix (pandas offset names, the anchor after "-" dropped).
_SEASONS = {"D": 7, "B": 5, "C": 5, "W": 52, "MS": 12, "ME": 12, "BMS": 12, "BME": 12, "SMS": 24, "SME": 24,
            "QS": 4, "QE": 4, "BQS": 4, "BQE": 4}
_DAY = pd.Timedelta(days=1)
LONG_SEASONS = {"D": 365, "B": 260, "C": 260}  # a year of daily and business-day rows, beside the week
_MAX_SUBDAILY_SEASON = 288  # rows per day up to 5-minute data; finer data takes an hour as its season
# `data.calendar: auto`. On validation carved from the training files, the calendar inputs left M3 monthly level (the
# year: sMAPE 15.075 -> 15.070, MASE 0.949 -> 0.948, 3 subsets of 300 series) and did worse on M4 Hourly (day and
# week: sMAPE 11.07 -> 11.24 with the week in the lookback, 12.29 -> 12.45 with 48 hours), so `auto` takes none;
# a user who knows a calendar effect names the parts (docs/bring-your-own-series.md, "Calendar inputs").
CALENDAR_AUTO = "none"


def season_for(frequency: str | None) -> int | None:
    """Rows in one season of data at `frequency` (None: no season, e.g. yearly or irregular data)."""
    if not frequency:
        return None
    try:
        offset = parse_frequency(frequency)
    except ValueError:
        return None
    months = getattr(offset, "months", None) if type(offset) is pd.DateOffset else None
    if months:  # "<n>months": monthly data on another day of the month
        return 12 // months if 12 % months == 0 and months < 12 else None
    if isinstance(offset, pd.offsets.Tick):
        step = pd.Timedelta(offset)
        if step >= _DAY:
            return 7 if step == _DAY else None
        per_day = _DAY / step
        per_hour = pd.Timedelta(hours=1) / step
        if per_day == int(per_day) and per_day <= _MAX_SUBDAILY_SEASON:
            return int(per_day)
        return int(per_hour) if per_hour == int(per_hour) and per_hour >= 2 else None
    base = _SEASONS.get(to_offset(offset).rule_code.split("-")[0])
    n = getattr(offset, "n", 1)
    if base is None or base % n:
        return None
    return base // n if base // n >= 2 else None


def seasons_for(frequency: str | None) -> tuple[int, ...]:
    """Every season the calendar implies, shortest first: the day and the week of sub-daily data, the week and
    the year of daily data (`LONG_SEASONS`), else `season_for`'s one (none for yearly or irregular data)."""
    season = season_for(frequency)
    if not season:
        return ()
    offset = parse_frequency(str(frequency))
    if isinstance(offset, pd.offsets.Tick) and pd.Timedelta(offset) < _DAY and _DAY / pd.Timedelta(offset) == season:
        return (season, 7 * season)  # rows per day, rows per week
    code = to_offset(offset).rule_code.split("-")[0] if not isinstance(offset, pd.offsets.Tick) else "D"
    if getattr(offset, "n", 1) == 1 and code in LONG_SEASONS:
        return (season, LONG_SEASONS[code])
    return (season,)


def wanted_lookback(season: int | None) -> int:
    """Two seasons (`MIN_LOOKBACK` rows at least), or `NO_SEASON_LOOKBACK` rows without a season."""
    return max(MIN_LOOKBACK, LOOKBACK_SEASONS * season) if season else NO_SEASON_LOOKBACK


def choose_lookback(season: int | None, train_rows: int) -> int:
    """Two seasons (or `NO_SEASON_LOOKBACK` rows), bounded by a third of the training rows."""
    return max(1, min(wanted_lookback(season), train_rows // MAX_LOOKBACK_SHARE))


def drifts(values: np.ndarray, season: int | None = None) -> bool:
    """True when the level moves: the halves' means differ by more than TREND_SHIFT x their spread. With a
    `season` and two seasons of values the test reads the means of whole seasons (a moving average over one
    season), so a strong season's spread does not hide a trend (a multiplicative series read as level)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if season and season > 1 and len(values) >= 2 * season:
        values = np.convolve(values, np.full(season, 1.0 / season), mode="valid")
    if len(values) < 4:
        return False
    first, second = np.array_split(values, 2)
    spread = np.sqrt((first.var() + second.var()) / 2)
    shift = abs(second.mean() - first.mean())
    return bool(shift > TREND_SHIFT * spread) if spread > 0 else bool(shift > 0)


def choose_transform(values: np.ndarray, train_rows: int, season: int | None = None) -> Transform:
    """`log_return` or `difference` for a drifting level (by positivity), else `level`."""
    values = np.asarray(values, dtype=float)
    if not drifts(values[:train_rows], season):
        return "level"
    return "log_return" if (values > 0).all() else "difference"


def validation_rows(cfg: PipelineConfig, lengths: Sequence[int], seasons: Sequence[int]) -> int:
    """`split: auto`'s validation rows for series of `lengths` whose last `window.horizon` rows are held out: at
    least one validation window (H rows, for early stopping), and enough origins that the horizon's last step gets
    the errors the widest interval level needs over all series (`windows_needed`: N series x (V - H + 1) errors,
    docs/intervals.md), but no row more than every series that keeps its training windows with H validation rows
    can spare: two training windows of the lookback the run will read (the one given, else the two seasons `auto`
    wants), with the differencing warm-up, the lead and the horizon."""
    horizon = cfg.window.horizon
    level = max([*cfg.intervals.levels, CALIBRATION_LEVEL])
    wanted = horizon - 1 + math.ceil(windows_needed(level) / max(1, len(lengths)))
    given = cfg.window.lookback != AUTO
    lookback = cfg.window.lookback if given else wanted_lookback(seasons[0] if seasons else None)
    warmup = warmup_needed(cfg)  # counted as for `auto` transforms
    training = lookback + warmup + cfg.window.lead + horizon  # rows of two training windows (`prepare`'s minimum)
    spare = [n - horizon - training for n in lengths if n - horizon - training >= horizon]
    return max(horizon, min([wanted, *spare])) if spare else horizon  # none trains even then: one window


def auto_split(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], seasons: Sequence[int]) -> dict[str, object]:
    """The sizes `split: auto` stands for (`{}` when the config gives its own). Many series: counted from each
    series' end, its last `window.horizon` rows the test part (one test window per series, its forecast from the
    rows before them, as M3 and M4 are scored) and `validation_rows` before them. One series (also a table whose
    `data.series_column` names one series: one road, the same windows): the fractions 0.7 / 0.15 / 0.15, unless
    they leave the validation or the test part fewer rows than one window needs (the horizon), then counted from
    its end as for many."""
    if not cfg.split.auto:
        return {}
    horizon = cfg.window.horizon
    if len(frames) == 1:
        bounds = split_by_time(frames[0].index, cfg.split)  # an auto split reads as the fractions
        if min(bounds.test_start - bounds.val_start, bounds.n_rows - bounds.test_start) >= horizon:
            return {"auto": False, "train": cfg.split.train, "val": cfg.split.val}
    val = validation_rows(cfg, [len(f) for f in frames], seasons)
    return {"auto": False, "train": None, "val": val, "test": horizon}


def resolve_auto(cfg: PipelineConfig, frame: pd.DataFrame) -> PipelineConfig:
    """`cfg` with every `auto` setting replaced by the value the validated, date-indexed `frame` calls for: one
    series is a panel of one (`resolve_frames`)."""
    return resolve_frames(cfg, [frame])


def feedable_lookback(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], seasons: Sequence[int], warmup: int,
                      chunk: int = 1) -> int:
    """The `auto` lookback of a panel: two of the shortest season (`NO_SEASON_LOOKBACK` rows without one), or
    the longest season of `seasons` when the data can feed it (a week of hourly data, a year of daily data),
    bounded by a third of the median series' training rows (so most series still end training windows) and
    by what the shortest series can feed: every series with a row before its held-out part keeps one window
    that ends there (its score, and its forecast once served). Whole `chunk`s when the data can feed one.

    One series: two seasons within a third of its training rows, as before several seasons.
    """
    train_rows = int(np.median([max(1, split_by_time(f.index, cfg.split).val_start) for f in frames]))
    before = rows_before_held_out(cfg, frames)
    shortest = min((r - warmup for r in before if r - warmup >= 1), default=1)
    cap = min(max(1, train_rows // MAX_LOOKBACK_SHARE), shortest)
    wanted = choose_lookback(seasons[0] if seasons else None, train_rows)
    wanted = max([wanted, *(s for s in seasons[1:] if s <= cap)])
    lookback = max(1, min(wanted, cap))
    return max(chunk, lookback // chunk * chunk)  # a chunk longer than the data can feed: the short series are refused


def rows_before_held_out(cfg: PipelineConfig, frames: Sequence[pd.DataFrame]) -> list[int]:
    """Each series' rows before the first held-out part it must forecast (its test part, else its end)."""
    bounds = [split_by_time(f.index, cfg.split) for f in frames]
    return [b.test_start if b.test_start < b.n_rows else b.n_rows for b in bounds]


def padded_lookback(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], seasons: Sequence[int], warmup: int,
                    chunk: int = 1) -> int:
    """The `auto` lookback with `window.pad`: two of the shortest season (`NO_SEASON_LOOKBACK` rows without one), or
    the longest season of `seasons` within the bound, at most half the median series' rows before its held-out part
    (after the warm-up), so the median series' windows read its own rows and shorter series are padded. Whole
    `chunk`s when the bound allows one."""
    half = max(1, (int(np.median(rows_before_held_out(cfg, frames))) - warmup) // 2)
    wanted = max([wanted_lookback(seasons[0] if seasons else None), *(s for s in seasons[1:] if s <= half)])
    lookback = max(1, min(wanted, half))
    return lookback // chunk * chunk if lookback >= chunk else lookback


def recipe_changes(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], seasons: Sequence[int] = (),
                   sub_daily: bool = False) -> dict[str, dict]:
    """The network's window options that say `auto` (docs/bring-your-own-series.md, "The auto recipe"): for several
    series, per-window normalisation (the scale of each window divides out, so one network serves series at any
    level and a trending series' forecasts follow its level beyond the training range): log-mean where every value
    read is > 0, else by the window's mean and sd (`standard`: zeros and negative values, where a log is
    undefined); no scalers then, and an absolute error in the window's units (log ratios: close to sMAPE) weighted
    towards MASE. One series: the plain network on scaled values and a squared error, unless it is sub-daily with a
    season of `seasons` in the data (`seasonal_beats_naive`): a day of rows read one per LSTM step is a cycle the
    plain network does not learn, so it gets the recipe and reads a day per step (`window_changes`)."""
    model, pre, train = cfg.model, cfg.preprocess, cfg.train
    read = list(dict.fromkeys([cfg.data.target, *cfg.data.features]))
    norm = model.window_norm
    if norm == AUTO:
        levels = {pre.target_transform, *(pre.transform_for(c) for c in cfg.data.features)} <= {"level", AUTO}
        unscaled = {pre.feature_scaler, pre.target_scaler} <= {"none", AUTO}
        positive = all((f[c].to_numpy(dtype=float) > 0).all() for f in frames for c in read)
        several = len(frames) > 1  # one series: one scale, and the plain network did better (daily prices, M3) ...
        daily_cycle = not several and sub_daily and any(seasonal_beats_naive(cfg, frames, s) for s in seasons)
        normalisable = (several or daily_cycle) and levels and unscaled and cfg.data.target in cfg.data.features
        norm = ("log_mean" if positive else "standard") if normalisable else "none"
    on = norm != "none"
    changes: dict[str, dict] = {"model": {}, "preprocess": {}, "train": {}}
    if model.window_norm == AUTO:
        changes["model"]["window_norm"] = norm
    for key in ("feature_scaler", "target_scaler"):
        if getattr(pre, key) == AUTO:
            changes["preprocess"][key] = "none" if on else "standard"
    if train.loss == AUTO:
        changes["train"]["loss"] = "mae" if on else "mse"
    if train.loss_weight == AUTO:
        changes["train"]["loss_weight"] = "mase" if on and len(frames) > 1 else "none"
    if train.loss_weight_power == AUTO:
        changes["train"]["loss_weight_power"] = ONE_NETWORK_POWER if model.ensemble == 1 else ENSEMBLE_POWERS
    return {k: v for k, v in changes.items() if v}


def training_target(cfg: PipelineConfig, frame: pd.DataFrame) -> np.ndarray:
    """A series' target in its training rows (before its validation part), the rows the `auto` rules read."""
    return frame[cfg.data.target].to_numpy(dtype=float)[:split_by_time(frame.index, cfg.split).val_start]


def target_floor(cfg: PipelineConfig, frames: Sequence[pd.DataFrame]) -> float | None:
    """`data.floor: auto`: 0 where every series' training values of the target are >= 0 (a quantity that cannot go
    below nothing: counts, sales, rainfall, prices), else None (no floor)."""
    lows = []
    for f in frames:
        values = training_target(cfg, f)
        values = values[np.isfinite(values)]
        if values.size:
            lows.append(values.min())
    return 0.0 if lows and min(lows) >= 0 else None


def seasonal_naive_ratio(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], season: int, than: int = 1) -> float:
    """The median over series of the in-sample MAE of repeating the value `season` rows back over that of repeating
    the value `than` rows back (1: naive), on the training rows; inf where no series is long enough."""
    ratios = []
    for f in frames:
        values = training_target(cfg, f)
        if len(values) > season + 1:
            base = np.mean(np.abs(values[than:] - values[:-than]))
            ratios.append(np.mean(np.abs(values[season:] - values[:-season])) / base if base > 0 else np.inf)
    return float(np.median(ratios)) if ratios else float("inf")


def seasonal_beats_naive(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], season: int, than: int = 1) -> bool:
    """Whether repeating the last season forecasts the training rows better than repeating the value `than`
    rows back (1: naive; a shorter season: is the longer one in the data too): `seasonal_naive_ratio` below 1 (a
    season in the data, not only in the calendar: daily prices have a calendar week and year but no weekly or
    yearly pattern)."""
    return seasonal_naive_ratio(cfg, frames, season, than) < 1.0


def window_changes(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], lookback: int,
                   season: int | None, seasons: Sequence[int] = ()) -> dict[str, object]:
    """`model.input_chunk` and `model.residual_to` where they say `auto`, once the lookback is known: a season
    per LSTM step when the window holds two seasons or more and the network normalises its windows, and the
    head correcting seasonal naive (the window's last season repeated) when a season of the calendar that the
    lookback holds is in the data (`seasonal_beats_naive`): the one whose seasonal naive forecasts the training
    rows best (`model.residual_season` where it is not the shortest: the week of half-hourly demand, whose
    weekends break its day)."""
    on = cfg.model.window_norm != "none"
    out: dict[str, object] = {}
    if cfg.model.input_chunk == AUTO:
        out["input_chunk"] = season if on and season and lookback >= 2 * season and lookback % season == 0 else 1
    if cfg.model.residual_to == AUTO:
        held = [s for s in dict.fromkeys((season, *seasons)) if on and s and s <= lookback]
        ratios = {s: seasonal_naive_ratio(cfg, frames, s) for s in held}
        best = min(ratios, key=ratios.__getitem__) if ratios else None
        seasonal = best is not None and ratios[best] < 1.0
        out["residual_to"] = "seasonal_naive" if seasonal else "none"
        if seasonal and best != season and cfg.model.residual_season is None:
            out["residual_season"] = best
    return out


def chosen_transform(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], column: str) -> Transform:
    """One transform for `column` over every series: the one most series call for (`choose_transform`; ties: the
    first series'), a log one only when every series' values are > 0 (else `difference`)."""
    if cfg.model.window_norm != "none":
        return "level"  # a network that normalises its own windows (model.window_norm) reads levels
    season = cfg.evaluate.season_length if isinstance(cfg.evaluate.season_length, int) else None
    votes = Counter(choose_transform(f[column].to_numpy(dtype=float), max(1, split_by_time(f.index, cfg.split).val_start),
                                     season)
                    for f in frames)
    kind = votes.most_common(1)[0][0]
    positive = all((f[column].to_numpy(dtype=float) > 0).all() for f in frames)
    return "difference" if kind in LOGS and not positive else kind


def resolve_frames(cfg: PipelineConfig, frames: Sequence[pd.DataFrame]) -> PipelineConfig:
    """`cfg` with every `auto` setting resolved over the validated, date-indexed series `frames` (one or many).

    A config without `auto` comes back unchanged. Call it once per run, after validation and before anything is
    fit; log the result (`cfg.flat()`) so runs stay reproducible. The season and the transforms are what most
    series call for, the network's window options follow `recipe_changes`, and the lookback is one the
    shortest series can feed (`feedable_lookback`), seeing the longest season it can.
    """
    first = frames[0]
    frequency = cfg.data.freq or (infer_frequency(first.index) if isinstance(first.index, pd.DatetimeIndex) else None)
    auto_season = cfg.evaluate.season_length == AUTO
    seasons = seasons_for(frequency) if auto_season else ((cfg.evaluate.season_length,) if cfg.evaluate.season_length else ())
    season = seasons[0] if seasons else None
    held_out = auto_split(cfg, frames, seasons)
    if held_out:  # every rule below reads the training rows of the split chosen here
        cfg = cfg.with_overrides(split=held_out)
    train_rows = int(np.median([max(1, split_by_time(f.index, cfg.split).val_start) for f in frames]))
    sub_daily = frequency is not None and bool(seasons) and is_sub_daily(frequency)
    changes: dict[str, dict[str, object]] = recipe_changes(cfg, frames, seasons, sub_daily)
    if held_out:
        changes["split"] = held_out
    if auto_season:
        # the seasonal naive baseline needs a whole season of known rows before each forecast
        season = season if season and season < train_rows else None
        changes["evaluate"] = {"season_length": season}
    if changes:
        cfg_so_far = cfg.with_overrides(**changes)
    else:
        cfg_so_far = cfg
    pre = cfg.preprocess
    auto_features = ([c for c in cfg.data.features if c not in pre.feature_transforms]
                     if pre.default_feature_transform == AUTO and pre.target_transform == AUTO else [])
    if pre.target_transform == AUTO or auto_features:
        chosen = {c: chosen_transform(cfg_so_far, frames, c) for c in dict.fromkeys([cfg.data.target, *auto_features])}
        target = chosen[cfg.data.target] if pre.target_transform == AUTO else pre.target_transform
        section = changes.setdefault("preprocess", {})
        section["target_transform"] = target
        if auto_features:
            section.update(default_feature_transform=target,  # unused: every feature below is named
                           feature_transforms={**pre.feature_transforms, **{c: chosen[c] for c in auto_features}})
    chunk = cfg.model.input_chunk if cfg.model.input_chunk != AUTO else 1
    # rows lost to differencing, with the transforms chosen above
    warmup = warmup_needed(cfg_so_far.with_overrides(preprocess=changes["preprocess"]) if "preprocess" in changes
                           else cfg_so_far)
    lookback = cfg.window.lookback
    if lookback == AUTO:
        pads = cfg.window.pad is True or (cfg.window.pad == AUTO and len(frames) > 1)
        lookback = (padded_lookback if pads else feedable_lookback)(cfg, frames, seasons if season else (), warmup, chunk)
        if cfg.model.input_chunk == AUTO and cfg_so_far.model.window_norm != "none" and season \
                and lookback >= 2 * season:
            lookback = lookback // season * season  # whole seasons, fed a season per LSTM step
        changes["window"] = {"lookback": lookback}
    if cfg.window.pad == AUTO:  # many series: pad the series too short for the lookback rather than refuse them
        shortest = min(rows_before_held_out(cfg, frames)) - warmup
        changes.setdefault("window", {})["pad"] = len(frames) > 1 and shortest < lookback
    window = window_changes(cfg_so_far, frames, lookback, season, seasons if season else ())
    if window:
        changes.setdefault("model", {}).update(window)
    if cfg.train.patience == AUTO:
        changes.setdefault("train", {})["patience"] = MANY_SERIES_PATIENCE if len(frames) > 1 else ONE_SERIES_PATIENCE
    if cfg.train.windows_per_epoch == AUTO:
        changes.setdefault("train", {})["windows_per_epoch"] = EPOCH_WINDOWS
    if cfg.intervals.served == AUTO:  # the test errors are the only ones no choice was made on
        changes["intervals"] = {"served": "test"}
    if cfg.data.calendar == AUTO:  # calendar inputs did not help on validation anywhere measured (CALENDAR_AUTO)
        changes["data"] = {"calendar": CALENDAR_AUTO}
    if cfg.data.floor == AUTO:
        changes.setdefault("data", {})["floor"] = target_floor(cfg, frames)
    if not changes:
        return cfg
    resolved = cfg.with_overrides(**changes)
    log.info("auto settings for %s (frequency %s, %d series, median %d training rows): %s", cfg.name,
             frequency or "none", len(frames), train_rows,
             "; ".join(f"{s}.{k}={v}" for s, values in changes.items() for k, v in values.items()))
    return resolved


def is_resolved(cfg: PipelineConfig) -> bool:
    """True when no setting still says `auto`."""
    return not cfg.split.auto and AUTO not in (cfg.window.lookback, cfg.window.pad, cfg.preprocess.target_transform,
                        cfg.preprocess.default_feature_transform, cfg.data.floor,
                        cfg.evaluate.season_length, cfg.preprocess.feature_scaler, cfg.preprocess.target_scaler,
                        cfg.model.window_norm, cfg.model.residual_to, cfg.model.input_chunk, cfg.train.loss,
                        cfg.train.loss_weight, cfg.train.loss_weight_power, cfg.train.patience,
                        cfg.train.windows_per_epoch, cfg.data.calendar, cfg.intervals.served)
