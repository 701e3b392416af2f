"""Calendar inputs known ahead (issue 25, item 5): encodings, holidays, the horizon's calendar, the `auto` rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config.settings import parse_config
from pipeline.data.auto import resolve_auto
from pipeline.data.contract import validate_prices
from pipeline.errors import ConfigError
from pipeline.features.calendar import calendar_columns, calendar_features
from pipeline.features.windows import Preprocessor, prepare
from pipeline.model.training import init_model
from pipeline.serving.model_format import ForecastBundle
from tests.conftest import OHLCV, make_prices

TWO_PI = 2 * np.pi


def test_encodings_of_known_dates() -> None:
    dates = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-04 06:00", "2023-07-02 12:00", "2024-12-31 18:00"])
    got = calendar_features(dates, ["day", "week", "year"], None)
    assert calendar_columns(["day", "week", "year"], None) == ["day_sin", "day_cos", "week_sin", "week_cos",
                                                               "year_sin", "year_cos"]
    assert got.shape == (4, 6) and got.dtype == np.float32
    expected = np.array([
        [0, 1, 0, 1, 0, 1],  # midnight, a Monday, the year's first moment
        [1, 0, np.sin(TWO_PI * 3 / 7), np.cos(TWO_PI * 3 / 7), np.sin(TWO_PI * 3.25 / 366), np.cos(TWO_PI * 3.25 / 366)],
        [0, -1, np.sin(TWO_PI * 6 / 7), np.cos(TWO_PI * 6 / 7), 0, -1],  # noon of a Sunday, half of 2023 gone
        [-1, 0, np.sin(TWO_PI / 7), np.cos(TWO_PI / 7), np.sin(TWO_PI * 365.75 / 366), np.cos(TWO_PI * 365.75 / 366)],
    ])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_holiday_is_flagged() -> None:
    dates = pd.DatetimeIndex(["2024-07-03", "2024-07-04", "2024-07-05", "2024-12-25 15:00", "2024-12-26 15:00"])
    got = calendar_features(dates, [], "US")
    assert calendar_columns([], "US") == ["holiday"]
    assert got[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]  # Independence Day; Christmas, all day long
    assert calendar_features(pd.DatetimeIndex(["2024-10-03"]), [], "DE")[0, 0] == 1.0  # German Unity Day


@pytest.mark.parametrize(("given", "says"), [
    ("XX", "data.holidays 'XX' is not a country code the holidays package knows; rule: an ISO 3166-1 alpha-2"),
    ("us", "data.holidays 'us' is not a country code the holidays package knows (did you mean 'US'?)"),
])
def test_a_bad_country_code_is_a_clear_config_error(given: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"holidays": given}})
    assert says in str(info.value)


def test_an_unknown_calendar_part_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.calendar"):
        parse_config({"data": {"calendar": ["day", "month"]}})
    with pytest.raises(ConfigError, match="lists a part twice"):
        parse_config({"data": {"calendar": ["day", "day"]}})


def hourly(n: int = 200) -> pd.DataFrame:
    raw = make_prices(n)
    raw["Date"] = pd.date_range("2024-07-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    return raw


def calendar_config(**window):
    # with the target read at the same row (lead 0), the target cannot be a feature
    features = {"features": ["Open", "High", "Low", "Volume"] if window.get("lead") == 0 else list(OHLCV)}
    return parse_config({"data": {"calendar": ["day", "week"], "holidays": "US", **features},
                         "split": {"val": 24, "test": 24},
                         "window": {"lookback": 12, "horizon": 6, **window},
                         "preprocess": {"target_transform": "level", "default_feature_transform": "level"},
                         "model": {"hidden_size": 4}})


@pytest.mark.parametrize("lead", [0, 1, 3])
def test_the_horizons_calendar_at_forecast_time_equals_trainings(lead: int) -> None:
    """The calendar a forecast's horizon receives (future dates from the training calendar) is the one training
    computed for the same dates from the rows; and the windows carry it where the network reads it."""
    cfg = calendar_config(lead=lead)
    frame = validate_prices(hourly(), cfg.data, "hourly", min_rows=1).frame
    pre, bounds, windows = prepare(frame, cfg)
    assert pre.window_rows == 12 + lead + 6 - 1 and pre.n_calendar == 5
    trained, _ = pre.scaled(frame)
    train, nf = windows["train"], len(cfg.data.features)
    assert train.X.shape[1:] == (pre.window_rows, nf + 5)
    # each training window's last horizon rows carry the calendar of its targets' dates
    targets = frame.index[train.target_positions[-1]]
    np.testing.assert_array_equal(train.X[-1, -6:, nf:], calendar_features(targets, ["day", "week"], "US"))

    served = Preprocessor.from_dict(pre.to_dict())  # as a saved model holds it
    known = frame.iloc[:150]
    feats, _ = served.scaled(known)  # 150 rows, then the dates a forecast from the last row predicts
    extra = lead + 6 - 1
    assert feats.shape == (150 + extra, nf + 5)
    np.testing.assert_array_equal(feats[150:, nf:], trained[150:150 + extra, nf:])
    assert np.isnan(feats[150:, :nf]).all()  # the future's values: unknown, and never read


def test_the_network_reads_the_horizons_calendar_but_never_its_values() -> None:
    """Each horizon step's calendar row adds its effect to that step; the LSTM reads the lookback's values."""
    cfg = calendar_config()
    frame = validate_prices(hourly(), cfg.data, "hourly", min_rows=1).frame
    pre, _, windows = prepare(frame, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    assert (model.n_features, model.calendar, model.lookback) == (5, 5, 12)
    x = torch.from_numpy(np.array(windows["train"].X[:8]))
    before = model(x)
    hidden = x.clone()
    hidden[:, 12:, :5] = float("nan")  # the values after the lookback, as at forecast time
    torch.testing.assert_close(model(hidden), before)
    seen = x.clone()
    seen[:, :12, 5:] = 0.0  # the lookback's calendar: the LSTM reads the values alone
    torch.testing.assert_close(model(seen), before)
    shifted = x.clone()
    shifted[:, -6:, 5:] = torch.roll(shifted[:, -6:, 5:], 1, dims=0)  # another horizon's calendar
    assert not torch.allclose(model(shifted), before)


def test_a_model_records_its_calendar_and_loads_back(tmp_path) -> None:
    cfg = calendar_config()
    frame = validate_prices(hourly(), cfg.data, "hourly", min_rows=1).frame
    pre, _, windows = prepare(frame, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    ForecastBundle(checkpoint=model.checkpoint(), preprocessor=pre, config=cfg).save(tmp_path / "m")
    loaded = ForecastBundle.load(tmp_path / "m")
    assert loaded.checkpoint["init_args"]["calendar"] == 5 and loaded.checkpoint["init_args"]["lookback"] == 12
    assert (loaded.preprocessor.calendar, loaded.preprocessor.holidays) == (["day", "week"], "US")
    plain = Preprocessor(parse_config({"window": {"lookback": 12}, "preprocess": {"target_transform": "level",
                                                                                  "default_feature_transform": "level"}}))
    assert "calendar" not in plain.fit(frame, prepare(frame, cfg)[1]).to_dict()  # the saved form of old models


def test_auto_resolves_to_no_calendar_inputs() -> None:
    """They did not help on validation (M3 monthly, M4 Hourly): `auto` takes none, even where the lookback cannot see
    the week; a config that names parts keeps them."""
    cfg = parse_config({"split": {"val": 24, "test": 24}, "window": {"lookback": 48, "horizon": 6}})
    frame = validate_prices(hourly(400), cfg.data, "hourly", min_rows=1).frame
    assert resolve_auto(cfg, frame).data.calendar == "none"
    named = cfg.with_overrides(data={"calendar": ["week"]})
    assert resolve_auto(named, frame).data.calendar == ("week",)
