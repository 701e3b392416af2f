"""One series of any shape (issue 13): transform domains, column roles, ambiguous dates, the configured calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import DataConfig, parse_config
from pipeline.data.contract import column_roles, validate_prices
from pipeline.data.reading import parse_csv
from pipeline.errors import ConfigError, DataError
from pipeline.features.transforms import transform_domain
from pipeline.features.windows import Preprocessor, split_by_time
from tests.conftest import make_prices

SOURCE = "series.csv"


def validate(frame: pd.DataFrame, cfg: DataConfig, positive: dict[str, str] | None = None):
    raw = parse_csv(frame.to_csv(index=False).encode(), SOURCE)
    return validate_prices(raw, cfg, SOURCE, min_rows=10, positive=positive)


def refusal(frame: pd.DataFrame, cfg: DataConfig, positive: dict[str, str] | None = None) -> str:
    with pytest.raises(DataError) as info:
        validate(frame, cfg, positive)
    return str(info.value)


def counts(n: int = 40) -> pd.DataFrame:
    """A univariate series (date + value) with zeros and one negative value."""
    values = np.abs(np.sin(np.arange(n) / 3)) * 10
    values[[5, 17]] = 0.0
    values[30] = -2.0
    return pd.DataFrame({"day": pd.date_range("2022-01-01", periods=n).strftime("%Y-%m-%d"), "value": values})


UNIVARIATE = {"data": {"date_column": "day", "target": "value", "features": ["value"]}}


# ---------------------------------------------------------------- transform domains
@pytest.mark.parametrize("transform", ["log", "log_return"])
def test_a_log_transform_on_values_at_or_below_zero_names_column_lines_and_a_transform_that_works(transform: str) -> None:
    cfg = parse_config({**UNIVARIATE, "preprocess": {"target_transform": transform, "default_feature_transform": "level"}})
    message = refusal(counts(), cfg.data, transform_domain(cfg))
    assert message.startswith(SOURCE)
    assert "column 'value'" in message and "line 7" in message and "line 19" in message and "line 32" in message
    assert f"{transform} transform (preprocess.target_transform)" in message and "difference" in message


def test_difference_and_level_accept_any_sign() -> None:
    for transform in ("difference", "level"):
        cfg = parse_config({**UNIVARIATE, "preprocess": {"target_transform": transform,
                                                         "default_feature_transform": transform}})
        assert transform_domain(cfg) == {}
        assert len(validate(counts(), cfg.data, transform_domain(cfg)).frame) == 40


def test_feature_transforms_have_their_domain_too() -> None:
    cfg = parse_config({"data": {"target": "Close", "features": ["Close", "Volume"]},
                        "preprocess": {"target_transform": "difference", "default_feature_transform": "difference",
                                       "feature_transforms": {"Volume": "log"}}})
    domain = transform_domain(cfg)
    assert set(domain) == {"Volume"} and "preprocess.feature_transforms.Volume" in domain["Volume"]
    prices = make_prices(30)
    prices.loc[4, "Volume"] = 0.0
    message = refusal(prices, cfg.data, domain)
    assert "column 'Volume'" in message and "line 6" in message and "log transform" in message


# ---------------------------------------------------------------- column roles
def lowercase(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns=str.lower)


LOWER = DataConfig(date_column="date", target="close", features=("open", "high", "low", "close", "volume"))


def test_lowercase_yahoo_names_get_the_price_volume_and_bar_rules() -> None:
    roles = column_roles(LOWER)
    assert roles.prices == ("open", "high", "low", "close") and roles.volume == "volume"
    assert (roles.high, roles.low, roles.bar_ends) == ("high", "low", ("open", "close"))
    prices = lowercase(make_prices(30))
    prices.loc[3, "close"] = -5.0
    prices.loc[8, "volume"] = -1.0
    prices.loc[12, "high"] = prices.loc[12, "low"] - 1
    message = refusal(prices, LOWER)
    assert "column 'close', rule 'price > 0': line 5 (-5)" in message
    assert "column 'volume', rule 'volume >= 0': line 10" in message
    assert "columns 'high', 'low', rule 'high >= low': line 14" in message


def test_configured_roles_replace_the_names() -> None:
    frame = pd.DataFrame({"ts": pd.date_range("2022-01-01", periods=30).strftime("%Y-%m-%d"),
                          "tmax": np.linspace(10, 20, 30), "tmin": np.linspace(0, 10, 30),
                          "demand": np.linspace(5, 8, 30), "units": np.arange(30.0)})
    cfg = DataConfig(date_column="ts", target="demand", features=("tmax", "tmin", "demand", "units"),
                     price_columns=("demand",), volume_column="units", high_column="tmax", low_column="tmin")
    assert len(validate(frame, cfg).frame) == 30
    frame.loc[2, "tmin"] = 99.0
    frame.loc[6, "demand"] = 0.0
    frame.loc[9, "units"] = -3.0
    message = refusal(frame, cfg)
    assert "columns 'tmax', 'tmin', rule 'tmax >= tmin': line 4" in message
    assert "column 'demand', rule 'price > 0': line 8" in message
    assert "column 'units', rule 'volume >= 0': line 11" in message


def test_roles_can_be_switched_off() -> None:
    prices = make_prices(30)
    prices.loc[3, "Close"] = -5.0
    prices.loc[5, "High"] = prices.loc[5, "Low"] - 1
    prices.loc[7, "Volume"] = -1.0
    cfg = DataConfig(price_columns=(), volume_column=None, high_column=None, low_column=None)
    assert len(validate(prices, cfg).frame) == 30


def test_a_configured_high_column_must_be_read() -> None:
    with pytest.raises(ConfigError, match="data.high_column 'Peak'"):
        parse_config({"data": {"high_column": "Peak"}})


# ---------------------------------------------------------------- ambiguous dates
def day_first(n: int = 40) -> pd.DataFrame:
    frame = make_prices(n, start="2022-01-03")
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%d/%m/%Y")
    return frame


def test_day_first_dates_without_a_rule_name_the_ambiguous_lines() -> None:
    message = refusal(day_first(), DataConfig())
    assert message.startswith(SOURCE) and "column 'Date'" in message
    assert "line" in message and "line 2 ('03/01/2022')" in message  # 3 January or 1 March: line 2
    assert "can only be day-first" in message and "data.dayfirst" in message and "data.date_format" in message
    assert "increasing order" not in message  # no longer read month-first and reported as unsorted


@pytest.mark.parametrize("setting", [{"dayfirst": True}, {"date_format": "%d/%m/%Y"}])
def test_day_first_dates_parse_with_either_setting(setting: dict) -> None:
    frame = validate(day_first(), DataConfig(**setting)).frame
    expected = pd.DatetimeIndex(pd.bdate_range("2022-01-03", periods=40), name="Date")
    assert frame.index.equals(expected)


def test_month_first_dates_need_the_setting_too_and_parse_with_it() -> None:
    frame = make_prices(40, start="2022-01-03")
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%m/%d/%Y")
    assert "can only be month-first" in refusal(frame, DataConfig())
    parsed = validate(frame, DataConfig(dayfirst=False)).frame
    assert parsed.index[0] == pd.Timestamp("2022-01-03") and parsed.index.is_monotonic_increasing


def test_iso_dates_and_unambiguous_slashes_need_no_setting() -> None:
    assert len(validate(make_prices(30), DataConfig()).frame) == 30
    frame = make_prices(20, start="2022-01-03")
    frame["Date"] = [f"{d:02d}/{d:02d}/2022" for d in range(1, 13)] + [f"{d}/01/2023" for d in range(13, 21)]
    validate(frame.iloc[:12], DataConfig())  # 01/01, 02/02, ...: the same either way


def test_a_date_format_that_does_not_fit_names_the_lines() -> None:
    frame = make_prices(30, start="2022-01-03")
    frame["Date"] = pd.to_datetime(frame["Date"]).dt.strftime("%m/%d/%Y")  # month-first, read day-first
    message = refusal(frame, DataConfig(date_format="%d/%m/%Y"))
    assert "column 'Date'" in message and "line 10 ('01/13/2022')" in message and "a date" in message


# ---------------------------------------------------------------- the configured calendar
def test_a_configured_frequency_wins_over_the_inferred_one() -> None:
    frame = validate(make_prices(40), DataConfig()).frame  # business days
    fixed = {"window": {"lookback": 5}, "preprocess": {"target_transform": "difference"}}
    cfg = parse_config({"data": {"freq": "D"}, **fixed})
    pre = Preprocessor(cfg).fit(frame, split_by_time(frame.index, cfg.split))
    assert pre.frequency == "D"
    inferred = Preprocessor(parse_config(fixed)).fit(frame, split_by_time(frame.index, cfg.split))
    assert inferred.frequency == "B"


def test_an_unknown_frequency_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.freq 'fortnightly'"):
        parse_config({"data": {"freq": "fortnightly"}})


def hourly_frame(stamps: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"time": stamps, "load": 50 + 10 * np.sin(np.arange(len(stamps)) / 4)})


HOURLY = {"data": {"date_column": "time", "target": "load", "features": ["load"]}, "window": {"lookback": 6},
          "preprocess": {"target_transform": "difference", "default_feature_transform": "difference"},
          "split": {"train": 0.6, "val": 0.2, "test": 0.2}}


def test_hourly_data_keeps_its_times_in_the_input_example_and_the_forecasts() -> None:
    from pipeline.model.training import init_model
    from pipeline.serving.forecast import forecast_frame
    from pipeline.training.steps import series_example

    cfg = parse_config(HOURLY)
    stamps = pd.date_range("2024-01-01 00:00", periods=48, freq="h").strftime("%Y-%m-%d %H:%M:%S").tolist()
    frame = validate(hourly_frame(stamps), cfg.data).frame
    pre = Preprocessor(cfg).fit(frame, split_by_time(frame.index, cfg.split))
    assert pre.frequency == "h"
    example = series_example(frame, cfg, rows=pre.input_rows)
    assert example["time"].iloc[-1] == "2024-01-02 23:00:00"
    model = init_model(cfg, n_features=1)
    out = forecast_frame(model, pre, frame)
    assert out[["origin", "date"]].iloc[0].tolist() == ["2024-01-02 23:00:00", "2024-01-03 00:00:00"]


def test_hourly_local_times_across_a_daylight_saving_change() -> None:
    """Europe's 2024-03-31 change with UTC offsets: local wall-clock hours, 02:00 skipped, the calendar stays hourly."""
    before = [f"2024-03-30 {h:02d}:00:00+01:00" for h in range(24)] + ["2024-03-31 00:00:00+01:00",
                                                                         "2024-03-31 01:00:00+01:00"]
    after = [f"2024-03-31 {h:02d}:00:00+02:00" for h in range(3, 24)]
    frame = validate(hourly_frame(before + after), DataConfig(**HOURLY["data"])).frame
    assert pd.Timestamp("2024-03-31 02:00") not in frame.index and frame.index[-1] == pd.Timestamp("2024-03-31 23:00")
    from pipeline.dates import infer_frequency, next_dates

    assert infer_frequency(frame.index) == "h"
    assert list(next_dates(frame.index, 2)) == [pd.Timestamp("2024-04-01 00:00"), pd.Timestamp("2024-04-01 01:00")]


@pytest.mark.parametrize(("freq", "start", "expected"), [
    ("MS", "2023-11-01", ["2024-03-01", "2024-04-01"]),
    ("ME", "2023-10-31", ["2024-02-29", "2024-03-31"]),
    ("B", "2024-01-30", ["2024-02-05", "2024-02-06"]),
    ("W-SUN", "2024-01-07", ["2024-02-04", "2024-02-11"]),
    ("QS", "2023-01-01", ["2024-01-01", "2024-04-01"]),
    ("h", "2024-02-28 22:00", ["2024-02-29 02:00:00", "2024-02-29 03:00:00"]),
])
def test_a_configured_frequency_sets_the_forecast_calendar(freq: str, start: str, expected: list[str]) -> None:
    from pipeline.dates import format_dates, next_dates

    index = pd.date_range(start, periods=4, freq=freq)
    assert list(format_dates(next_dates(index, 2, freq))) == expected


# ---------------------------------------------------------------- names
def test_a_config_naming_only_its_data_gets_its_own_experiment_and_model(tmp_path) -> None:
    from pipeline.config.settings import load_config

    path = tmp_path / "shop-sales.yaml"
    path.write_text("data:\n  source: sales.csv\n  date_column: week\n  target: units\n  features: [units]\n")
    cfg = load_config(path)
    assert (cfg.name, cfg.tracking.experiment, cfg.registry.model_name) == ("shop-sales",) * 3
    named = parse_config({"name": "north", "registry": {"model_name": "north-v2"}})
    assert (named.tracking.experiment, named.registry.model_name) == ("north", "north-v2")
    sample = load_config("configs/default.yaml")  # the README's names
    assert (sample.tracking.experiment, sample.registry.model_name) == ("lstm-forecasting", "lstm-forecaster")


def test_a_name_that_cannot_be_registered_is_refused_when_it_names_the_model() -> None:
    with pytest.raises(ConfigError, match="registry.model_name"):
        parse_config({"name": "a/b"})
    assert parse_config({"name": "a/b", "registry": {"model_name": "ab"}}).tracking.experiment == "a/b"


@pytest.mark.parametrize("setting", [{"dayfirst": True}, {"date_format": "%d/%m/%Y"}])
def test_iso_dates_stay_iso_under_a_day_first_setting(setting: dict) -> None:
    """The model's own input (pipeline predict, the logged example) writes ISO dates: they must not turn day-first."""
    frame = make_prices(30, start="2022-01-03")
    frame.loc[:9, "Date"] = pd.to_datetime(frame.loc[:9, "Date"]).dt.strftime("%d/%m/%Y")
    parsed = validate(frame, DataConfig(**setting)).frame
    assert parsed.index.equals(pd.DatetimeIndex(pd.bdate_range("2022-01-03", periods=30), name="Date"))


def test_a_day_first_model_serves_day_first_files_and_its_own_iso_input() -> None:
    """`pipeline predict` validates the user's file, hands the pyfunc ISO dates, and the pyfunc validates again."""
    from pipeline.model.network import from_checkpoint
    from pipeline.serving.forecast import ForecastModel, model_input
    from tests.integration import registry_support as rs

    data = rs.trend(n=40, growth=0.01)
    data["Date"] = pd.to_datetime(data["Date"]).dt.strftime("%d/%m/%Y")
    planted = rs.plant(data, rs.config(data={"dayfirst": True}), 0.01)
    served = ForecastModel()
    served.bundle, served.model = planted.bundle, from_checkpoint(planted.bundle.checkpoint)
    rows = model_input(data.tail(10), planted.bundle, "recent.csv")  # the file as the user wrote it
    assert rows["Date"].iloc[-1] == str(planted.frame.index[-1].date())
    out = served.forecast(rows)
    assert out["origin"].iloc[0] == str(planted.frame.index[-1].date())
    assert pd.Timestamp(out["date"].iloc[0]) == planted.frame.index[-1] + pd.offsets.BDay(1)
