"""`auto` settings resolved from the data: season length, lookback and transforms, in one place.

A config may say `auto` for `evaluate.season_length`, `window.lookback`,
`preprocess.target_transform` and `preprocess.default_feature_transform`, and these are the
code's defaults, so a config that names only its data gets them. `resolve_auto` turns them into
concrete values once the data is validated; the flows log the resolved config (its params and
config.yaml), so a run records what it really did and re-runs the same way.

The rules, from the data's training rows (and the whole series for positivity):
- season length from the frequency: hours 24, days 7, business days 5, weeks 52, months 12,
  quarters 4, half-months 24; years and irregular data have none;
- lookback: two seasons (`LOOKBACK_SEASONS`), at least `MIN_LOOKBACK` rows, `NO_SEASON_LOOKBACK`
  without a season, and never more than a third of the training rows (so most training rows
  still end a window);
- transform (the target's, and each feature's when the target's is `auto` too; otherwise features
  follow the target): a series whose level drifts over the training rows (the second half's mean moves
  from the first half's by more than `TREND_SHIFT` of the within-half spread: a trend or a
  random walk) is differenced, since a scaler fit on past levels breaks when later levels leave
  their range: `log_return` when every value is > 0 (changes in proportion, as prices), else
  `difference`; a series without drift is modelled as its `level`, which keeps a season's shape
  for the network to learn. A network that normalises its own windows (`model.window_norm`) reads
  levels: `auto` transforms are `level` there, and an `auto` lookback is whole `model.input_chunk`s.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from pipeline.config.settings import AUTO, PipelineConfig, Transform
from pipeline.dates import infer_frequency, parse_frequency
from pipeline.features.windows import split_by_time

log = logging.getLogger(__name__)

LOOKBACK_SEASONS = 2
MIN_LOOKBACK = 4
NO_SEASON_LOOKBACK = 8
MAX_LOOKBACK_SHARE = 3  # lookback <= training rows / this
TREND_SHIFT = 0.5

# Seasons per frequency prefix (pandas offset names, the anchor after "-" dropped).
_SEASONS = {"D": 7, "B": 5, "C": 5, "W": 52, "MS": 12, "ME": 12, "BMS": 12, "BME": 12, "SMS": 24, "SME": 24,
            "QS": 4, "QE": 4, "BQS": 4, "BQE": 4}
_DAY = pd.Timedelta(days=1)
_MAX_SUBDAILY_SEASON = 288  # rows per day up to 5-minute data; finer data takes an hour as its season


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


def choose_lookback(season: int | None, train_rows: int) -> int:
    """Two seasons (or `NO_SEASON_LOOKBACK` rows), bounded by a third of the training rows."""
    wanted = max(MIN_LOOKBACK, LOOKBACK_SEASONS * season) if season else NO_SEASON_LOOKBACK
    return max(1, min(wanted, train_rows // MAX_LOOKBACK_SHARE))


def drifts(values: np.ndarray) -> bool:
    """True when the level moves: the halves' means differ by more than TREND_SHIFT x their spread."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 4:
        return False
    first, second = np.array_split(values, 2)
    spread = np.sqrt((first.var() + second.var()) / 2)
    shift = abs(second.mean() - first.mean())
    return bool(shift > TREND_SHIFT * spread) if spread > 0 else bool(shift > 0)


def choose_transform(values: np.ndarray, train_rows: int) -> Transform:
    """`log_return` or `difference` for a drifting level (by positivity), else `level`."""
    values = np.asarray(values, dtype=float)
    if not drifts(values[:train_rows]):
        return "level"
    return "log_return" if (values > 0).all() else "difference"


def resolve_auto(cfg: PipelineConfig, frame: pd.DataFrame) -> PipelineConfig:
    """`cfg` with every `auto` setting replaced by the value the validated, date-indexed `frame` calls for.

    A config without `auto` comes back unchanged. Call it once per series, after validation and
    before anything is fit; log the result (`cfg.flat()`) so runs stay reproducible.
    """
    window, pre, evaluate = cfg.window, cfg.preprocess, cfg.evaluate
    train_rows = max(1, split_by_time(frame.index, cfg.split).val_start)
    frequency = cfg.data.freq or (infer_frequency(frame.index) if isinstance(frame.index, pd.DatetimeIndex) else None)
    season = season_for(frequency) if evaluate.season_length == AUTO else evaluate.season_length
    changes: dict[str, dict[str, object]] = {}
    if evaluate.season_length == AUTO:
        # the seasonal naive baseline needs a whole season of known rows before each forecast
        changes["evaluate"] = {"season_length": season if season and season < train_rows else None}
    if window.lookback == AUTO:
        chunk = cfg.model.input_chunk  # the lookback is whole LSTM steps of `chunk` rows
        changes["window"] = {"lookback": max(chunk, choose_lookback(season, train_rows) // chunk * chunk)}
    auto_features = ([c for c in cfg.data.features if c not in pre.feature_transforms]
                     if pre.default_feature_transform == AUTO and pre.target_transform == AUTO else [])
    if pre.target_transform == AUTO or auto_features:
        # a network that normalises its own windows (model.window_norm) reads levels
        choose = (lambda values, rows: "level") if cfg.model.window_norm != "none" else choose_transform
        chosen = {c: choose(frame[c].to_numpy(dtype=float), train_rows) for c in {cfg.data.target, *auto_features}}
        target = chosen[cfg.data.target] if pre.target_transform == AUTO else pre.target_transform
        changes["preprocess"] = {"target_transform": target}
        if auto_features:
            changes["preprocess"].update(
                default_feature_transform=target,  # unused: every feature below is named
                feature_transforms={**pre.feature_transforms, **{c: chosen[c] for c in auto_features}})
    if not changes:
        return cfg
    resolved = cfg.with_overrides(**changes)
    log.info("auto settings for %s (frequency %s, %d training rows): %s", cfg.name, frequency or "none", train_rows,
             "; ".join(f"{s}.{k}={v}" for s, values in changes.items() for k, v in values.items()))
    return resolved


def is_resolved(cfg: PipelineConfig) -> bool:
    """True when no setting still says `auto`."""
    return AUTO not in (cfg.window.lookback, cfg.preprocess.target_transform, cfg.preprocess.default_feature_transform,
                        cfg.evaluate.season_length)
