"""Serving from raw rows: the data contract at the model's door, forecasts in original units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.model import LSTMForecaster
from pipeline.serving import ForecastModel, format_dates, model_input

from tests.integration import registry_support as rs


@pytest.fixture
def served():
    """A forecaster that always forecasts +1 % (log) on a trending series; lookback 5 + 1 warm-up."""
    data = rs.trend(n=40, growth=0.01)
    planted = rs.plant(data, rs.config(), 0.01)
    model = ForecastModel()
    model.bundle = planted.bundle
    model.model = LSTMForecaster.from_checkpoint(planted.bundle.checkpoint)
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
    with pytest.raises(DataError, match=r"column 'Open'.*line 5"):
        model.forecast(holed)
    shuffled = data.tail(10).reset_index(drop=True).iloc[[0, 1, 2, 5, 3, 4, 6, 7, 8, 9]].reset_index(drop=True)
    with pytest.raises(DataError, match=r"(?s)column 'Date'.*increasing.*line 6"):
        model.forecast(shuffled)


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
