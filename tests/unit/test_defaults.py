"""`auto` settings resolved from the data (pipeline.data.auto): season, lookback, transforms, in one place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import PipelineConfig, parse_config
from pipeline.data.auto import (
    choose_lookback,
    choose_transform,
    drifts,
    is_resolved,
    resolve_auto,
    resolve_frames,
    season_for,
    seasons_for,
)
from pipeline.errors import ConfigError
from pipeline.features.windows import Preprocessor, min_rows_needed, prepare


@pytest.mark.parametrize(("freq", "season"), [
    ("h", 24), ("15min", 96), ("30min", 48), ("min", 60), ("D", 7), ("B", 5), ("W-SUN", 52), ("W-MON", 52),
    ("MS", 12), ("ME", 12), ("1months", 12), ("3months", 4), ("QS-JAN", 4), ("QE-DEC", 4), ("YS-JAN", None),
    ("YE-DEC", None), ("2W-SUN", 26), ("7D", None), (None, None),
])
def test_season_from_the_frequency(freq: str | None, season: int | None) -> None:
    assert season_for(freq) == season


def test_lookback_is_two_seasons_bounded_by_the_training_rows() -> None:
    assert choose_lookback(52, 350) == 104
    assert choose_lookback(52, 150) == 50  # a third of the training rows
    assert choose_lookback(5, 1000) == 10
    assert choose_lookback(None, 60) == 8
    assert choose_lookback(24, 2) == 1


def test_transform_rule() -> None:
    t = np.arange(200.0)
    seasonal = 10 + 3 * np.sin(2 * np.pi * t / 12)
    assert not drifts(seasonal) and choose_transform(seasonal, 150) == "level"
    assert choose_transform(seasonal - 10, 150) == "level"  # negatives without drift: level too
    assert choose_transform(100 + t, 150) == "log_return"  # positive and trending
    assert choose_transform(t - 50, 150) == "difference"  # trending through zero
    walk = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 200))
    assert drifts(walk[:150])


def weekly(n: int = 300, trend: float = 0.0, offset: float = 10.0) -> pd.DataFrame:
    t = np.arange(n)
    values = offset + trend * t + 3 * np.sin(2 * np.pi * t / 52) + np.random.default_rng(1).normal(0, 0.3, n)
    return pd.DataFrame({"y": values}, index=pd.DatetimeIndex(pd.date_range("2015-01-04", periods=n, freq="W-SUN"),
                                                              name="week"))


MINIMAL = {"name": "sales", "data": {"source": "sales.csv", "date_column": "week", "target": "y", "features": ["y"]}}


def test_a_minimal_config_resolves_from_its_data() -> None:
    cfg = parse_config(MINIMAL)
    assert not is_resolved(cfg)
    frame = weekly()
    resolved = resolve_auto(cfg, frame)
    assert is_resolved(resolved)
    assert resolved.evaluate.season_length == 52
    assert resolved.window.lookback == 70  # 2 x 52 = 104 > 210 // 3
    assert resolved.preprocess.target_transform == "level"
    assert resolved.preprocess.feature_transforms == {"y": "level"}
    assert resolve_auto(resolved, frame) == resolved  # nothing left to resolve
    flat = resolved.flat()
    assert flat["window.lookback"] == "70" and flat["evaluate.season_length"] == "52"
    pre, _, windows = prepare(frame, resolved)
    assert pre.lookback == 70 and len(windows["train"]) > 100


def test_given_values_win_over_auto() -> None:
    cfg = parse_config({**MINIMAL, "window": {"lookback": 12}, "evaluate": {"season_length": None},
                        "preprocess": {"target_transform": "difference", "default_feature_transform": "difference"}})
    resolved = resolve_auto(cfg, weekly())
    assert (resolved.window, resolved.evaluate.season_length) == (cfg.window.model_copy(update={"pad": False}), None)
    assert resolved.preprocess.target_transform == "difference" and resolved.model.window_norm == "none"
    assert resolve_auto(resolved, weekly()) == resolved  # nothing says auto: unchanged


def test_a_trending_series_with_zeros_is_differenced() -> None:
    frame = weekly(trend=0.1, offset=-5.0)
    resolved = resolve_auto(parse_config(MINIMAL), frame)
    assert resolved.preprocess.target_transform == "difference"


def test_a_config_frequency_sets_the_season() -> None:
    cfg = parse_config({**MINIMAL, "data": {**MINIMAL["data"], "freq": "MS"}})
    assert resolve_auto(cfg, weekly()).evaluate.season_length == 12


def test_unresolved_settings_cannot_reach_the_preprocessor_and_count_small_for_validation() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(ConfigError, match="resolve_auto"):
        Preprocessor(cfg)
    assert min_rows_needed(cfg) == 1 + 1 + 1 + 1 + 2  # horizon + lookback 1 + warm-up + 1, then 2 more splits


def test_the_code_defaults_are_what_a_config_naming_only_its_data_gets() -> None:
    """One source of truth: every value default.yaml states differently from the code says why in a comment."""
    import yaml

    from tests.conftest import ROOT

    code = PipelineConfig().model_dump(mode="json")
    text = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    stated = yaml.safe_load(text)
    lines = text.splitlines()
    for section, values in stated.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if code[section][key] != (list(value) if isinstance(value, tuple) else value):
                line = next(i for i, text_line in enumerate(lines) if text_line.strip().startswith(f"{key}:"))
                said = "#" in lines[line] or (line + 1 < len(lines) and lines[line + 1].strip().startswith("#"))
                assert said, f"configs/default.yaml: {section}.{key} = {value!r} differs from the code's " \
                             f"{code[section][key]!r} without a comment saying why"


def monthly_multiplicative(n: int = 60) -> pd.DataFrame:
    """A positive series whose trend and season multiply: its halves' means differ by less than its seasonal
    spread, so the drift rule alone reads it as level."""
    t = np.arange(n)
    values = (100 + 0.5 * t) * (1 + 0.5 * np.sin(2 * np.pi * t / 12))
    return pd.DataFrame({"y": values}, index=pd.DatetimeIndex(pd.date_range("2015-01-01", periods=n, freq="MS"),
                                                              name="week"))


def test_positive_trending_data_is_not_held_to_a_fixed_level() -> None:
    """The defect: `auto` modelled a trending multiplicative series as its level, scaled on its training rows,
    and the forecasts stayed inside the old range. The drift test now reads whole seasons, so one such series
    is modelled as log changes; several get the per-window log-mean recipe (each window divided by its own
    mean: the level travels with the window), no scalers, MAE weighted towards MASE."""
    frame = monthly_multiplicative()
    assert not drifts(frame["y"].to_numpy()[:48])  # what made the old rule choose `level`
    assert drifts(frame["y"].to_numpy()[:48], season=12)
    one = resolve_auto(parse_config(MINIMAL), frame)
    assert is_resolved(one) and one.model.window_norm == "none"  # one series: the plain network
    assert one.preprocess.target_transform == "log_return" and one.preprocess.target_scaler == "standard"
    assert one.train.loss == "mse" and one.model.residual_to == "none" and one.model.input_chunk == 1
    other = monthly_multiplicative().assign(y=lambda f: 3 * f["y"])
    many = resolve_frames(parse_config(MINIMAL), [frame, other])
    assert is_resolved(many) and many.model.window_norm == "log_mean" and many.preprocess.target_transform == "level"
    assert many.preprocess.feature_scaler == "none" and many.preprocess.target_scaler == "none"
    assert many.train.loss == "mae" and many.train.loss_weight == "mase" and many.train.loss_weight_power == 0.5
    assert many.model.residual_to == "seasonal_naive" and many.evaluate.season_length == 12
    # early stopping waits 50 epochs for many series, 20 for one; a given patience wins
    assert (one.train.patience, many.train.patience) == (20, 50)
    assert one.train.windows_per_epoch == many.train.windows_per_epoch == 20_000  # every window up to 20,000
    given = parse_config({**MINIMAL, "train": {"patience": 7}})
    assert resolve_frames(given, [frame, other]).train.patience == 7
    # an ensemble's members alternate the MASE weighting's power 0.5 and 1; a given power wins
    members = parse_config({**MINIMAL, "model": {"ensemble": 4}})
    assert resolve_frames(members, [frame, other]).train.loss_weight_power == (0.5, 1.0)
    members = parse_config({**MINIMAL, "model": {"ensemble": 4}, "train": {"loss_weight_power": 1}})
    assert resolve_frames(members, [frame, other]).train.loss_weight_power == 1.0


def test_data_with_values_at_or_below_zero_keeps_the_plain_network() -> None:
    resolved = resolve_auto(parse_config(MINIMAL), weekly(trend=0.1, offset=-5.0))
    assert resolved.model.window_norm == "none" and resolved.preprocess.target_scaler == "standard"
    assert resolved.train.loss == "mse" and resolved.model.residual_to == "none"


def test_many_series_with_values_at_or_below_zero_normalise_each_window_by_its_mean_and_sd() -> None:
    """One value <= 0 in a panel rules out the log-mean recipe; the panel keeps per-window normalisation, by each
    window's mean and sd (`standard`), with the rest of the recipe: no scalers, levels, MAE weighted towards MASE."""
    frames = [weekly(trend=0.1, offset=-5.0), weekly(trend=0.2, offset=30.0)]
    resolved = resolve_frames(parse_config(MINIMAL), frames)
    assert resolved.model.window_norm == "standard" and resolved.preprocess.target_transform == "level"
    assert resolved.preprocess.feature_scaler == "none" and resolved.preprocess.target_scaler == "none"
    assert resolved.train.loss == "mae" and resolved.train.loss_weight == "mase"
    positive = [weekly(trend=0.1, offset=30.0), weekly(trend=0.2, offset=30.0)]
    assert resolve_frames(parse_config(MINIMAL), positive).model.window_norm == "log_mean"


def hourly(days: int) -> pd.DataFrame:
    t = np.arange(24 * days)
    values = 50 + 10 * np.sin(2 * np.pi * t / 24) + 5 * (t // 24 % 7 >= 5)
    return pd.DataFrame({"y": values}, index=pd.DatetimeIndex(pd.date_range("2024-01-01", periods=len(t), freq="h"),
                                                              name="week"))


def test_the_lookback_sees_the_longest_season_the_data_can_feed() -> None:
    """Hourly data has a day and a week: 60 days feed a week of lookback (for several series 7 LSTM steps of a
    day); 10 days only two days. Daily data has a week and a year."""
    assert seasons_for("h") == (24, 168) and seasons_for("D") == (7, 365) and seasons_for("MS") == (12,)
    assert seasons_for("YS") == () and seasons_for("B") == (5, 260)
    cfg = parse_config({**MINIMAL, "split": {"val": 48, "test": 48}, "window": {"horizon": 48}})
    long = resolve_frames(cfg, [hourly(60), hourly(60).assign(y=lambda f: 2 * f["y"])])
    assert long.window.lookback == 168 and long.model.input_chunk == 24 and long.evaluate.season_length == 24
    assert resolve_auto(cfg, hourly(60)).window.lookback == 168  # one series too (its chunk: 1)
    short = resolve_frames(cfg, [hourly(10), hourly(10).assign(y=lambda f: 2 * f["y"])])
    assert short.window.lookback == 48 and short.model.input_chunk == 24
    t = np.arange(1500)
    daily = pd.DataFrame({"y": 20 + np.sin(2 * np.pi * t / 365) + np.random.default_rng(5).normal(0, 0.01, len(t))},
                         index=pd.DatetimeIndex(pd.date_range("2019-01-01", periods=len(t), freq="D"), name="week"))
    cfg = parse_config({**MINIMAL, "split": {"val": 14, "test": 14}, "window": {"horizon": 14}})
    resolved = resolve_frames(cfg, [daily, daily.assign(y=lambda f: f["y"] + 5)])
    assert resolved.window.lookback == 364 and resolved.model.input_chunk == 7  # 52 whole weeks
    walk = daily.assign(y=50 * np.exp(np.cumsum(np.random.default_rng(6).normal(0, 0.01, len(t)))))
    assert resolve_auto(cfg, walk).window.lookback == 365  # one series, its chunk 1: the whole year


def test_one_sub_daily_series_with_a_daily_cycle_reads_a_day_per_lstm_step() -> None:
    """One hourly series alone: the plain network read its week of lookback an hour per LSTM step and did not learn
    the day (M4 Hourly's series trained one by one, on validation carved from the training file: MASE 2.04 against
    seasonal naive's 1.32). With a season in the data it gets the many-series recipe; without one (a random walk),
    and one monthly series with a season, keep the plain network."""
    cfg = parse_config({**MINIMAL, "split": {"val": 48, "test": 48}, "window": {"horizon": 48}})
    one = resolve_auto(cfg, hourly(60))
    assert one.model.window_norm == "log_mean" and one.window.lookback == 168 and one.model.input_chunk == 24
    assert one.model.residual_to == "seasonal_naive" and one.train.loss == "mae" and one.train.loss_weight == "none"
    assert one.model.residual_season == 168  # its week repeats exactly, its day does not (the weekend)
    assert one.preprocess.target_scaler == "none" and one.train.patience == 20
    walk = hourly(60).assign(y=50 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.01, 24 * 60))))
    plain = resolve_auto(cfg, walk)
    assert plain.model.window_norm == "none" and plain.model.input_chunk == 1 and plain.train.loss == "mse"
    assert resolve_auto(parse_config(MINIMAL), monthly_multiplicative()).model.window_norm == "none"


def test_the_head_corrects_the_season_whose_naive_forecast_is_best() -> None:
    """Half-hourly demand whose weekends break its day: seasonal naive at a day loses to naive on the training rows,
    at a week it wins, so the head corrects last week (`model.residual_season`); a day whose size drifts is
    corrected at a day (the week's naive repeats an older size). Where no season beats naive, none."""
    t = np.arange(48 * 7 * 8)
    index = pd.DatetimeIndex(pd.date_range("2024-01-01", periods=len(t), freq="30min"), name="week")
    noise = np.random.default_rng(8).normal(0, 0.3, len(t))
    weekend = (t // 48 % 7 >= 5)
    demand = pd.DataFrame({"y": 100 + 10 * np.sin(2 * np.pi * t / 48) - 12 * weekend + noise}, index=index)
    cfg = parse_config({**MINIMAL, "window": {"horizon": 48}})
    one = resolve_auto(cfg, demand)
    assert one.window.lookback == 336 and one.model.input_chunk == 48 and one.evaluate.season_length == 48
    assert one.model.residual_to == "seasonal_naive" and one.model.residual_season == 336
    growing = pd.DataFrame({"y": 100 + (10 + t / 50) * np.sin(2 * np.pi * t / 48) + noise}, index=index)
    day = resolve_auto(cfg, growing)
    assert day.model.residual_to == "seasonal_naive" and day.model.residual_season is None
    walk = pd.DataFrame({"y": 100 + np.cumsum(noise)}, index=index)
    assert resolve_frames(cfg, [walk, walk + 1]).model.residual_to == "none"
    with pytest.raises(ConfigError, match="window.lookback 48 must be >= model.residual_season 336"):
        parse_config({**MINIMAL, "window": {"lookback": 48},
                      "model": {"residual_to": "seasonal_naive", "residual_season": 336}})


def test_the_head_corrects_seasonal_naive_only_where_the_season_is_in_the_data() -> None:
    """A business-day calendar implies a week, but a price's random walk has no weekly pattern: naive beats
    seasonal naive on its training rows, so the head corrects nothing (on the seasonal series it does)."""
    steps = np.random.default_rng(4).normal(0, 0.01, 600)
    prices = pd.DataFrame({"y": 50 * np.exp(np.cumsum(steps))},
                          index=pd.DatetimeIndex(pd.date_range("2020-01-01", periods=600, freq="B"), name="week"))
    resolved = resolve_frames(parse_config(MINIMAL), [prices, prices.assign(y=lambda f: 2 * f["y"])])
    assert resolved.evaluate.season_length == 5 and resolved.model.window_norm == "log_mean"
    assert resolved.model.residual_to == "none"
    seasonal = [monthly_multiplicative(), monthly_multiplicative().assign(y=lambda f: 2 * f["y"])]
    assert resolve_frames(parse_config(MINIMAL), seasonal).model.residual_to == "seasonal_naive"


def test_a_config_that_names_no_features_reads_the_target_alone() -> None:
    """Nothing assumes the sample's columns: a file of a date and one value column needs only those two named."""
    assert parse_config({"data": {"date_column": "week", "target": "units"}}).data.features == ("units",)
    assert parse_config({"data": {"target": "units", "features": None}}).data.features == ("units",)
    named = parse_config({"data": {"target": "units", "features": ["price", "units"]}})
    assert named.data.features == ("price", "units")
    assert named.with_overrides(window={"horizon": 2}).data.features == ("price", "units")
