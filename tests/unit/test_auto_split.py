"""`split: auto` (a config without a split section): held-out sizes chosen from the data and the window."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config, windows_needed
from pipeline.data.auto import is_resolved, resolve_auto, resolve_frames, validation_rows
from pipeline.errors import ConfigError
from pipeline.features.windows import min_rows_needed, prepare, split_by_time
from pipeline.training import steps

DATA = {"source": "sales.csv", "date_column": "month", "target": "y", "features": ["y"]}
PANEL = {**DATA, "series_column": "id"}


def monthly(n: int, level: float = 100.0, seed: int = 0) -> pd.DataFrame:
    t = np.arange(n)
    values = level * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + np.random.default_rng(seed).normal(0, 1, n)
    return pd.DataFrame({"y": values}, index=pd.DatetimeIndex(pd.date_range("2010-01-01", periods=n, freq="MS"),
                                                              name="month"))


def test_split_auto_is_what_a_config_without_a_split_section_gets() -> None:
    for raw in ({}, {"split": "auto"}, {"split": {}}, {"split": {"auto": True}}):
        split = parse_config(raw).split
        assert split.auto and (split.train, split.val, split.test) == (0.7, 0.15, None)  # read as fractions till resolved
    for given in ({"train": 0.7, "val": 0.15}, {"val": 4, "test": 4}, {"train_end": "2020-01-01"}):
        assert not parse_config({"split": given}).split.auto
    with pytest.raises(ConfigError, match=r"split auto chooses the sizes from the data: leave out \['val'\]"):
        parse_config({"split": {"auto": True, "val": 4}})
    # a config read before its data is checked against the rows today's fractions need
    assert min_rows_needed(parse_config({})) == min_rows_needed(parse_config({"split": {"train": 0.7, "val": 0.15}}))
    # sizes given later (a backtest fold, a sweep) are given sizes
    assert not parse_config({}).with_overrides(split={"train": None, "val": 5, "test": 5}).split.auto


def test_a_panel_without_split_holds_out_the_horizon_of_every_series_and_scores_a_short_one() -> None:
    """The defect: with the fractions a 16-row series of a panel had 2 test rows, fewer than the horizon's 4,
    so no test window: it was neither scored nor calibrated on. Counted from each series' end, every series has
    its last 4 rows as its test part, one test window, scored by the network every series shares."""
    frames = [monthly(80, 100, 1), monthly(80, 300, 2), monthly(16, 50, 3)]
    cfg = parse_config({"data": PANEL, "window": {"horizon": 4}})
    assert not is_resolved(cfg.with_overrides(window={"lookback": 6}, evaluate={"season_length": 12},
                                              preprocess={"target_transform": "level",
                                                          "default_feature_transform": "level",
                                                          "feature_scaler": "none", "target_scaler": "none"},
                                              model={"window_norm": "none", "residual_to": "none",
                                                     "input_chunk": 1},
                                              train={"loss": "mse", "loss_weight": "none", "loss_weight_power": 0.5},
                                              data={"calendar": "none"}))  # only the split says auto
    resolved = resolve_frames(cfg, frames)
    assert is_resolved(resolved) and resolved.split.from_end and resolved.split.test == 4
    for frame in frames:
        bounds = split_by_time(frame.index, resolved.split)
        assert bounds.n_rows - bounds.test_start == 4
    short = steps.prepare_series(frames[2], resolved)
    assert short.trainable and len(short.windows["test"]) == 1  # scored
    assert list(short.windows["test"].target_positions[0]) == [12, 13, 14, 15]
    # the lookback the median series feeds (two years), the short series padded before its first row
    assert resolved.window.lookback == 24 and resolved.window.pad is True


def test_the_validation_part_gives_the_last_step_its_calibration_errors_within_what_series_can_spare() -> None:
    """N series x (V - H + 1) errors at the horizon's last step reach the 19 a 95 % interval needs; no more rows
    than a series that trains with V = H can spare, and never fewer than one validation window."""
    assert (windows_needed(95), windows_needed(80), windows_needed(99)) == (19, 4, 99)
    cfg = parse_config({"data": PANEL, "window": {"horizon": 6}})
    seasons = (12,)  # the lookback `auto` wants: 24 rows; two training windows: 24 + 1 + 1 + 6 = 32 rows
    assert validation_rows(cfg, [200] * 30, seasons) == 6  # 30 series x 1 origin >= 19
    assert validation_rows(cfg, [200] * 2, seasons) == 6 - 1 + 10  # 2 series x 10 origins
    assert validation_rows(cfg, [200], seasons) == 6 - 1 + 19
    assert validation_rows(cfg, [200, 50], seasons) == 50 - 6 - 32  # the short series keeps its training windows
    assert validation_rows(cfg, [200, 30], seasons) == 15  # a series without training windows at V = H: no bound
    assert validation_rows(cfg, [30], seasons) == 6  # at least one validation window
    assert validation_rows(cfg.with_overrides(intervals={"levels": [80, 99]}), [200] * 2, seasons) == 6 - 1 + 50
    given = cfg.with_overrides(window={"lookback": 4})
    assert validation_rows(given, [200, 30], seasons) == 30 - 6 - (4 + 1 + 1 + 6)  # the given lookback's windows


def test_one_series_without_split_keeps_the_fractions_unless_a_part_is_shorter_than_the_horizon() -> None:
    cfg = parse_config({"data": DATA, "window": {"horizon": 6}})
    long = monthly(120)
    resolved = resolve_auto(cfg, long)
    assert not resolved.split.auto and resolved.split == parse_config({"split": {"train": 0.7, "val": 0.15}}).split
    assert split_by_time(long.index, resolved.split) == split_by_time(long.index, cfg.split)  # today's windows
    # a table whose series column names one series is one series too (one road: the same windows)
    assert resolve_frames(cfg.with_overrides(data={"series_column": "id"}), [long]).split == resolved.split
    # 50 rows: the fractions leave 7 validation and 8 test rows, fewer than a 12-step horizon (no window in either)
    short = monthly(50)
    cfg = cfg.with_overrides(window={"horizon": 12})
    resolved = resolve_auto(cfg, short)
    assert resolved.split.from_end and resolved.split.test == 12 and resolved.split.val == 12
    pre, bounds, windows = prepare(short, resolved)  # the fractions: DataError (no validation or test window)
    assert (bounds.val_start, bounds.test_start) == (26, 38) and len(windows["test"]) == 1 and len(windows["val"]) == 1


@pytest.mark.parametrize(("given", "bounds"), [
    ({"train": 0.7, "val": 0.15}, (70, 85)),
    ({"train": 0.6, "val": 0.2, "test": 0.2}, (60, 80)),
    ({"train": 50, "val": 20}, (50, 70)),
    ({"val": 4, "test": 4}, (92, 96)),
    ({"val": 0, "test": 10}, (90, 90)),
    ({"train_end": "2015-12-01", "val_end": "2016-12-01"}, (72, 84)),
])
def test_an_explicit_split_resolves_to_itself_and_cuts_the_same_windows(given: dict, bounds: tuple) -> None:
    patience = {"train": {"patience": None}} if given.get("val") == 0 else {}
    for data, frames in ((DATA, [monthly(100)]), (PANEL, [monthly(100), monthly(100, 200, 1)])):
        cfg = parse_config({"data": data, "split": given, "window": {"horizon": 4}, **patience})
        resolved = resolve_frames(cfg, frames)
        assert resolved.split == cfg.split and not resolved.split.auto
        cut = split_by_time(frames[0].index, resolved.split)
        assert (cut.val_start, cut.test_start) == bounds
        assert resolved.flat()["split.auto"] == "False"


def test_the_chosen_split_is_logged_with_the_other_auto_choices(caplog: pytest.LogCaptureFixture) -> None:
    frames = [monthly(80, 100, 1), monthly(80, 300, 2)]
    with caplog.at_level(logging.INFO, logger="pipeline.data.auto"):
        resolved = resolve_frames(parse_config({"data": PANEL, "window": {"horizon": 4}}), frames)
    flat = resolved.flat()
    assert (flat["split.auto"], flat["split.train"], flat["split.test"]) == ("False", "None", "4.0")
    assert flat["split.val"] == str(float(resolved.split.val)) and resolved.split.val == 4 - 1 + 10
    assert "split.val=13" in caplog.text and "split.test=4" in caplog.text
    # the resolved config re-runs the same way: nothing left to resolve
    assert resolve_frames(resolved, frames) == resolved
