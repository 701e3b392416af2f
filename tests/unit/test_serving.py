"""Serving from raw rows: the data contract at the model's door, forecasts in original units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.model.network import LSTMForecaster, from_checkpoint
from pipeline.serving.forecast import ForecastModel, format_dates, model_input
from pipeline.training.steps import series_example
from tests.integration import registry_support as rs


@pytest.fixture
def served():
    """A forecaster that always forecasts +1 % (log) on a trending series; lookback 5 + 1 warm-up."""
    data = rs.trend(n=40, growth=0.01)
    planted = rs.plant(data, rs.config(), 0.01)
    model = ForecastModel()
    model.bundle = planted.bundle
    model.model = from_checkpoint(planted.bundle.checkpoint)
    return model, data


def test_forecast_is_the_next_date_in_original_units(served):
    model, data = served
    out = model.forecast(data.tail(10))
    assert list(out.columns) == ["origin", "step", "date", "forecast"]
    assert out.to_dict("records")[0] == {
        "origin": data["Date"].iloc[-1], "step": 1,
        "date": str((pd.Timestamp(data["Date"].iloc[-1]) + pd.offsets.BDay(1)).date()),
        "forecast": pytest.approx(data["Close"].iloc[-1] * np.exp(0.01), rel=1e-6),
    }


def test_too_few_rows_for_the_lookback_are_refused(served):
    model, data = served
    with pytest.raises(DataError, match=r"at least 6 rows for the lookback window"):
        model.forecast(data.tail(5))
    assert len(model.forecast(data.tail(6))) == 1  # exactly enough


def test_missing_columns_nans_and_unsorted_dates_are_named(served):
    model, data = served
    with pytest.raises(DataError, match=r"(?s)missing.*'Volume'|'Volume'.*missing"):
        model.forecast(data.drop(columns=["Volume"]).tail(10))
    holed = data.tail(10).reset_index(drop=True)
    holed.loc[3, "Open"] = np.nan
    # a frame has rows, counted from 0 (as pandas and JSON's dataframe_split count them), not file lines
    with pytest.raises(DataError, match=r"(?s)^the input \(rows counted from 0\): .*column 'Open'.*row 3 \(") as info:
        model.forecast(holed)
    assert "line" not in str(info.value)
    shuffled = data.tail(10).reset_index(drop=True).iloc[[0, 1, 2, 5, 3, 4, 6, 7, 8, 9]].reset_index(drop=True)
    with pytest.raises(DataError, match=r"(?s)column 'Date'.*increasing.*row 4"):
        model.forecast(shuffled)


def test_lines_as_rows_counts_from_zero():
    from pipeline.serving.forecast import lines_as_rows

    report = "x: 2 value(s)\n  - column 'Open', rule 'not empty': line 2 (nan), line 12 (nan) and 3 more"
    assert lines_as_rows(report) == "x: 2 value(s)\n  - column 'Open', rule 'not empty': row 0 (nan), row 10 (nan) and 3 more"


def test_model_input_names_the_file_and_keeps_the_model_form(served):
    model, data = served
    rows = model_input(data.astype(str), model.bundle, "recent.csv")  # as read: every column text
    assert rows["Date"].tolist() == data["Date"].tolist()
    assert rows["Close"].dtype == "float64"
    bad = data.astype(str)
    bad.loc[7, "Close"] = "n/a"
    with pytest.raises(DataError, match=r"(?s)recent.csv.*column 'Close'.*number.*line 9"):
        model_input(bad, model.bundle, "recent.csv")


def test_format_dates_keeps_times_only_when_there_are_some():
    days = pd.DatetimeIndex(["2024-01-02", "2024-01-03"])
    assert list(format_dates(days)) == ["2024-01-02", "2024-01-03"]
    hours = pd.DatetimeIndex(["2024-01-02 10:00", "2024-01-02 11:00"])
    assert list(format_dates(hours)) == ["2024-01-02 10:00:00", "2024-01-02 11:00:00"]


def minute_rows(n: int = 40) -> pd.DataFrame:
    data = rs.trend(n=n, growth=0.01)
    data["Date"] = pd.date_range("2024-03-01 09:00", periods=n, freq="min").strftime("%Y-%m-%d %H:%M:%S")
    return data


def test_sub_daily_forecasts_keep_their_times():
    """Minute data: the forecast is for the next minute, not for the origin's day (issue 12, item 9)."""
    data = minute_rows()
    planted = rs.plant(data, rs.config(window={"lookback": 5, "horizon": 3}), 0.01)
    assert planted.bundle.preprocessor.frequency == "min"  # the training calendar, stored with the model
    model = ForecastModel()
    model.bundle, model.model = planted.bundle, from_checkpoint(planted.bundle.checkpoint)
    out = model.forecast(data.tail(10))
    assert out["origin"].tolist() == ["2024-03-01 09:39:00"] * 3
    assert out["date"].tolist() == ["2024-03-01 09:40:00", "2024-03-01 09:41:00", "2024-03-01 09:42:00"]
    windows = model.forecast(data.tail(10), all_windows=True)  # dates inside the data are the data's own
    assert windows["date"].iloc[0] == "2024-03-01 09:36:00" and windows["origin"].iloc[0] == "2024-03-01 09:35:00"


def test_the_input_example_keeps_sub_daily_times():
    data = minute_rows()
    planted = rs.plant(data, rs.config(), 0.01)
    example = series_example(planted.frame, planted.bundle.config, rows=3)
    assert example["Date"].tolist() == ["2024-03-01 09:37:00", "2024-03-01 09:38:00", "2024-03-01 09:39:00"]
    daily = rs.plant(rs.trend(n=40), rs.config(), 0.01)
    assert series_example(daily.frame, daily.bundle.config, rows=1)["Date"].iloc[0] == rs.trend(n=40)["Date"].iloc[-1]


def test_forecast_dates_follow_the_training_calendar_not_the_input_alone(served):
    """The training data ran every day; five weekday rows alone would look like business days."""
    model, _ = served
    data = rs.trend(n=40)
    data["Date"] = pd.date_range("2024-05-01", periods=40, freq="D").strftime("%Y-%m-%d")
    planted = rs.plant(data, rs.config(), 0.01)
    assert planted.bundle.preprocessor.frequency == "D"
    model.bundle, model.model = planted.bundle, from_checkpoint(planted.bundle.checkpoint)
    friday = data[pd.to_datetime(data["Date"]) <= "2024-06-07"].tail(6)  # Sat 06-01 .. Fri 06-07, minus Sat
    weekdays = friday[pd.to_datetime(friday["Date"]).dt.day_of_week < 5]
    weekdays = pd.concat([data[data["Date"] == "2024-05-31"], weekdays])  # Fri, then Mon-Fri
    out = model.forecast(weekdays)
    assert out["date"].tolist() == ["2024-06-08"]  # Saturday, as the training data went on


def hourly(data: pd.DataFrame) -> pd.DataFrame:
    out = data.copy()
    out["Date"] = pd.date_range("2024-03-01 00:00", periods=len(out), freq="h").strftime("%Y-%m-%d %H:%M:%S")
    return out


def test_hourly_rows_sent_to_a_daily_model_are_refused_naming_both_calendars(served):
    """They came back as daily forecasts (REST 200); now a DataError for the CLI (exit 2) names the file."""
    model, data = served
    assert model.bundle.preprocessor.frequency == "B"
    with pytest.raises(DataError) as caught:
        model_input(hourly(data.tail(10)), model.bundle, source="hourly.csv")
    text = str(caught.value)
    assert text.startswith("hourly.csv: the dates (2024-03-01 00:00:00 to 2024-03-01 09:00:00) follow a h calendar")
    assert "the model was trained on a B calendar" in text and "rule: the input's frequency is the model's" in text
    model.forecast(data.tail(10))  # the model's own calendar still forecasts


def test_the_rest_model_answers_a_wrong_calendar_with_invalid_parameter_value(served):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

    from pipeline.serving.pyfunc import LSTMForecastPyfunc

    model, data = served
    wrapper = LSTMForecastPyfunc()
    wrapper.bundle, wrapper.model = model.bundle, model.model
    with pytest.raises(MlflowException) as caught:
        wrapper.predict(None, hourly(data.tail(10)))
    assert caught.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
    assert "follow a h calendar" in caught.value.message and "trained on a B calendar" in caught.value.message


def test_a_model_of_many_series_checks_each_series_calendar(tmp_path):
    from pipeline.config.settings import parse_config
    from pipeline.data import panel
    from pipeline.data.reading import load_prices
    from pipeline.serving.forecast import series_frames
    from pipeline.serving.model_format import ForecastBundle, SeriesModels
    from pipeline.training import steps
    from tests.conftest import long_config_dict, make_long

    path = tmp_path / "daily.csv"
    make_long("AB", n=30, freq="D").to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    preps = steps.prepare_panel(panel.validate_panel(load_prices(str(path)), cfg, min_rows=6), cfg)
    network = LSTMForecaster.from_config(cfg.model, n_features=1, horizon=cfg.window.horizon)
    first = preps["A"].pre
    assert first.frequency == "D"
    bundle = ForecastBundle(network.checkpoint(), first, cfg, series=SeriesModels("id", {s: p.pre for s, p in preps.items()}))
    daily = make_long("AB", n=12, freq="D")
    assert set(series_frames(daily, bundle, "request.csv")) == {"A", "B"}
    rows = pd.concat([daily[daily["id"] == "A"], make_long("B", n=12, freq="h")], ignore_index=True)
    with pytest.raises(DataError, match=r"request.csv series 'B': .* follow a h calendar; the model was trained on a D"):
        series_frames(rows, bundle, "request.csv")
