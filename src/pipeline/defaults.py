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
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from pipeline.config import AUTO, PipelineConfig, Transform
from pipeline.dates import infer_frequency, parse_frequency
from pipeline.features import DIFFERENCING, LOGS, split_by_time

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
    """`cfg` with every `auto` setting replaced by the value the validated, date-indexed `frame` calls for: one
    series is a panel of one (`resolve_frames`)."""
    return resolve_frames(cfg, [frame])


def feedable_lookback(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], season: int | None, warmup: int) -> int:
    """The `auto` lookback of a panel: `choose_lookback`'s (two seasons, or `NO_SEASON_LOOKBACK` rows) bounded by
    a third of the median series' training rows (so most series still end training windows) and by what the
    shortest series can feed: every series with a row before its held-out part keeps one window that ends there
    (its score, and its forecast once served). Whole `model.input_chunk`s when the data can feed one chunk.

    One series: the old rule, two seasons within a third of its training rows.
    """
    bounds = [split_by_time(f.index, cfg.split) for f in frames]
    train_rows = int(np.median([max(1, b.val_start) for b in bounds]))
    # rows before each series' first held-out part it must forecast (its test part, else its end)
    before = [b.test_start if b.test_start < b.n_rows else b.n_rows for b in bounds]
    shortest = min((r - warmup for r in before if r - warmup >= 1), default=1)
    lookback = max(1, min(choose_lookback(season, train_rows), shortest))
    chunk = cfg.model.input_chunk
    return lookback // chunk * chunk if lookback >= chunk else lookback


def chosen_transform(cfg: PipelineConfig, frames: Sequence[pd.DataFrame], column: str) -> Transform:
    """One transform for `column` over every series: the one most series call for (`choose_transform`; ties: the
    first series'), a log one only when every series' values are > 0 (else `difference`)."""
    if cfg.model.window_norm != "none":
        return "level"  # a network that normalises its own windows (model.window_norm) reads levels
    votes = Counter(choose_transform(f[column].to_numpy(dtype=float), max(1, split_by_time(f.index, cfg.split).val_start))
                    for f in frames)
    kind = votes.most_common(1)[0][0]
    positive = all((f[column].to_numpy(dtype=float) > 0).all() for f in frames)
    return "difference" if kind in LOGS and not positive else kind


def resolve_frames(cfg: PipelineConfig, frames: Sequence[pd.DataFrame]) -> PipelineConfig:
    """`cfg` with every `auto` setting resolved over the validated, date-indexed series `frames` (one or many).

    A config without `auto` comes back unchanged. Call it once per run, after validation and before anything is
    fit; log the result (`cfg.flat()`) so runs stay reproducible. The season and the transforms are what most
    series call for; the lookback is one the shortest series can feed (`feedable_lookback`).
    """
    window, pre, evaluate = cfg.window, cfg.preprocess, cfg.evaluate
    first = frames[0]
    frequency = cfg.data.freq or (infer_frequency(first.index) if isinstance(first.index, pd.DatetimeIndex) else None)
    season = season_for(frequency) if evaluate.season_length == AUTO else evaluate.season_length
    train_rows = int(np.median([max(1, split_by_time(f.index, cfg.split).val_start) for f in frames]))
    changes: dict[str, dict[str, object]] = {}
    if evaluate.season_length == AUTO:
        # the seasonal naive baseline needs a whole season of known rows before each forecast
        changes["evaluate"] = {"season_length": season if season and season < train_rows else None}
    auto_features = ([c for c in cfg.data.features if c not in pre.feature_transforms]
                     if pre.default_feature_transform == AUTO and pre.target_transform == AUTO else [])
    if pre.target_transform == AUTO or auto_features:
        chosen = {c: chosen_transform(cfg, frames, c) for c in dict.fromkeys([cfg.data.target, *auto_features])}
        target = chosen[cfg.data.target] if pre.target_transform == AUTO else pre.target_transform
        changes["preprocess"] = {"target_transform": target}
        if auto_features:
            changes["preprocess"].update(
                default_feature_transform=target,  # unused: every feature below is named
                feature_transforms={**pre.feature_transforms, **{c: chosen[c] for c in auto_features}})
    if window.lookback == AUTO:
        chosen_pre = changes.get("preprocess", {})
        target = chosen_pre.get("target_transform", pre.target_transform)
        used = {target, *(chosen_pre.get("feature_transforms", {}).get(c) or pre.transform_for(c) for c in cfg.data.features)}
        warmup = 1 if DIFFERENCING & {target if t == AUTO else t for t in used} else 0  # rows lost to differencing
        changes["window"] = {"lookback": feedable_lookback(cfg, frames, season, warmup)}
    if not changes:
        return cfg
    resolved = cfg.with_overrides(**changes)
    log.info("auto settings for %s (frequency %s, %d series, median %d training rows): %s", cfg.name,
             frequency or "none", len(frames), train_rows,
             "; ".join(f"{s}.{k}={v}" for s, values in changes.items() for k, v in values.items()))
    return resolved


def is_resolved(cfg: PipelineConfig) -> bool:
    """True when no setting still says `auto`."""
    return AUTO not in (cfg.window.lookback, cfg.preprocess.target_transform, cfg.preprocess.default_feature_transform,
                        cfg.evaluate.season_length)
