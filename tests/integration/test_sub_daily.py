"""Minute data end to end: training, the gate's re-scoring of the champion, `pipeline predict` (issue 12, item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from flows.forecast import forecast_flow
from flows.training import training_flow
from tests.conftest import make_prices

pytestmark = pytest.mark.timeout(420)
TOLERANT = {"min_gain_over_persistence": -0.5, "min_gain_over_champion": -0.5}


def test_minute_data_keeps_its_times_from_training_to_forecast(prefect_harness, mlflow_store, write_config, tmp_path):
    prices = make_prices(80)
    stamps = pd.date_range("2024-03-01 09:30", periods=80, freq="min")
    prices["Date"] = stamps.strftime("%Y-%m-%d %H:%M:%S")
    csv = tmp_path / "minutes.csv"
    prices.to_csv(csv, index=False)

    first = training_flow(config_path=write_config(data={"source": str(csv)}, registry=TOLERANT))
    assert first.test_forecasts["date"].str.len().eq(19).all()  # "2024-03-01 10:41:00": times kept
    second = training_flow(config_path=write_config("again.yaml", data={"source": str(csv)},
                                                     train={"seed": 1}, registry=TOLERANT))
    # the gate re-scored the champion on the same minutes (dates matched to the minute, not the day)
    windows = len(first.test_forecasts)
    assert f"({windows} forecasts)" in second.reason, second.reason

    model = mlflow.pyfunc.load_model("models:/tiny-forecaster/1")
    assert model.unwrap_python_model().bundle.frequency == "min"  # the training calendar, in the model's data
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/tiny-forecaster/1", dst_path=str(tmp_path / "m"))
    example = json.loads((Path(local) / "input_example.json").read_text())
    assert [row[0] for row in example["data"]][-1] == "2024-03-01 10:49:00"  # the logged example keeps times
    out = tmp_path / "forecast.csv"
    summary = forecast_flow(model="models:/tiny-forecaster/1", data=str(csv), out=str(out))
    written = pd.read_csv(out, dtype=str)
    assert written["origin"].tolist() == ["2024-03-01 10:49:00"]
    assert written["date"].tolist() == ["2024-03-01 10:50:00"]
    assert summary.forecasts["date"].iloc[0] == "2024-03-01 10:50:00"
