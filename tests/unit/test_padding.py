"""`window.pad`: windows that reach before a series' first row read that row held (flat history), so series shorter
than the lookback are trained on, scored and served from one row on; without it they are refused as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.errors import DataError
from pipeline.features.windows import Preprocessor, split_by_time
from pipeline.serving.forecast import ForecastModel
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


def fitted(frame: pd.DataFrame, **sections: dict) -> tuple[Preprocessor, object]:
    raw = long_config_dict("long.csv", **sections)
    cfg = parse_config(raw)
    bounds = split_by_time(frame.index, cfg.split)
    return Preprocessor(cfg).fit(frame, bounds), bounds


def series(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"y": values}, index=pd.date_range("2024-01-01", periods=len(values), freq="h"))


def test_a_padded_window_reads_the_first_value_held_and_a_change_of_zero() -> None:
    frame = series([10.0, 12.0, 11.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0])
    level, _ = fitted(frame, window={"lookback": 4, "pad": True},
                      preprocess={"feature_scaler": "none", "target_scaler": "none"})
    feats, _ = level.scaled(frame)
    assert level.origins(len(frame))[0] == 0 and level.min_input_rows == 1 and level.input_rows == 4
    np.testing.assert_array_equal(level.input_windows(feats, np.array([0, 1, 3]))[:, :, 0],
                                  [[10, 10, 10, 10], [10, 10, 10, 12], [10, 12, 11, 13]])
    # differenced: the first row is the warm-up (undefined), the padded rows are changes of 0, scaled as the data is
    diff, _ = fitted(frame, window={"lookback": 3, "pad": True},
                     preprocess={"target_transform": "difference", "default_feature_transform": "difference"})
    feats, _ = diff.scaled(frame)
    zero = float(diff.feature_scaler.transform(np.zeros((1, 1)))[0, 0])
    assert diff.origins(len(frame))[0] == 1 and diff.min_input_rows == 2
    window = diff.input_windows(feats, np.array([1]))[0, :, 0]
    np.testing.assert_allclose(window, [zero, zero, feats[1, 0]], rtol=1e-6)


def test_without_pad_nothing_changes() -> None:
    frame = series([float(v) for v in range(10, 22)])
    pre, bounds = fitted(frame, window={"lookback": 4, "pad": False},
                         preprocess={"feature_scaler": "none", "target_scaler": "none"})
    assert pre.origins(len(frame))[0] == 3 and pre.min_input_rows == pre.input_rows == 4
    assert "pad" not in pre.to_dict()  # an unpadded model keeps the saved form it always had
    feats, _ = pre.scaled(frame)
    assert np.shares_memory(pre.input_windows(feats, np.arange(3, 8)), feats)  # still a view, no copy
    padded, _ = fitted(frame, window={"lookback": 4, "pad": True})
    assert Preprocessor.from_dict(padded.to_dict()).pad is True


def test_mase_weights_read_the_padded_window_means() -> None:
    frame = series([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0])
    pre, bounds = fitted(frame, window={"lookback": 4, "pad": True},
                         model={"window_norm": "log_mean", "residual_to": "none", "input_chunk": 1},
                         preprocess={"feature_scaler": "none", "target_scaler": "none"},
                         train={"loss_weight": "mase", "loss_weight_power": 1.0}, evaluate={"season_length": None})
    weights = pre.mase_weights(frame, bounds, np.array([0, 1, 4]))
    scale = 10.0  # the training rows' naive error
    np.testing.assert_allclose(weights, np.array([10.0, 12.5, 35.0]) / scale)


def test_a_short_series_of_a_panel_is_padded_trained_on_and_served_from_fewer_rows_than_the_lookback(
        tmp_path: Path) -> None:
    """A and B feed 12-row windows; C has 6 rows before its test part: `auto` pads it instead of refusing it. The
    saved model forecasts C from 3 rows."""
    path = tmp_path / "long.csv"
    make_long("ABC", n=60, short={"C": 10}).to_csv(path, index=False)
    raw = long_config_dict(str(path), window={"lookback": 12, "pad": "auto"}, train={"epochs": 2})
    cfg = parse_config(raw)
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=1)
    resolved, kept = panel.resolve_panel(load_prices(str(path)), cfg, data)
    assert resolved.window.pad is True and sorted(kept.series) == ["A", "B", "C"]
    preps = steps.prepare_panel(kept, resolved)
    assert len(preps["C"].windows["test"]) == 1 and len(preps["C"].windows["val"]) == 1  # padded windows, scored
    assert len(preps["C"].windows["train"]) == 0  # training reads whole windows only: C's 2 training rows feed none
    assert all(len(preps[s].windows["train"]) == 60 - 8 - 12 - 4 + 1 for s in "AB")  # from the first whole window
    fit = steps.fit_panel(preps, resolved)
    _, calibration = steps.forecast_splits(fit.model_for, kept, preps, resolved, ("test",))
    saved = steps.bundle(fit, preps, resolved, calibration).save(tmp_path / "forecaster")
    served = ForecastModel()
    served.load(saved)
    rows = pd.read_csv(path, dtype=str)
    out = served.forecast(rows[rows["id"] == "C"].iloc[:3])
    assert len(out) == 4 and np.isfinite(out["forecast"]).all()

    # without padding the same data refuses C, naming the rows it needs
    unpadded = parse_config({**raw, "window": {**raw["window"], "pad": False}})
    with pytest.raises(DataError, match=r"series 'C': 10 rows; rule: a series needs at least 12 rows"):
        panel.resolve_panel(load_prices(str(path)), unpadded.with_overrides(data={"on_bad_series": "error"}),
                            panel.validate_panel(load_prices(str(path)), unpadded, min_rows=1))


def test_a_series_too_short_for_a_whole_validation_window_is_calibrated_on_padded_ones() -> None:
    """Lookback 4, 4 validation rows from row 6 (split 6 / 4 / 2 rows): without padding the first validation origin
    (row 5) still feeds a whole window; with 2 training rows the origins before row 3 need padding, and the
    calibration reads them all the same, so the short series' errors count in its intervals."""
    frame = series([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0])
    pre, _ = fitted(frame, window={"lookback": 4, "pad": False, "horizon": 1},
                    preprocess={"feature_scaler": "none", "target_scaler": "none"})
    short = split_by_time(frame.index[:5], parse_config(long_config_dict("long.csv", split={"val": 2, "test": 1},
                                                                          window={"horizon": 1})).split)
    assert (short.val_start, short.test_start) == (2, 4)
    windows = pre.calibration_windows(frame.iloc[:5], short)
    assert list(windows.origins) == [1, 2]  # first targets rows 2 and 3: the validation part
    np.testing.assert_array_equal(windows.X[:, :, 0], [[10, 10, 10, 11], [10, 10, 11, 12]])
    assert pre.pad is False and list(pre.origins(5)) == [3, 4]  # training, test and serving windows stay whole
