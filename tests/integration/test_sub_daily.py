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


def test_a_missing_month_is_refused_then_filled_and_recorded_on_the_run(prefect_harness, mlflow_store, write_config,
                                                                         tmp_path):
    """Issue 27.1: a month deleted from monthly data trained and registered with no word."""
    from mlflow import MlflowClient

    from pipeline.errors import DataError

    prices = make_prices(80)
    prices["Date"] = pd.date_range("2015-01-01", periods=80, freq="MS").strftime("%Y-%m-%d")
    csv = tmp_path / "monthly.csv"
    prices.drop(index=40).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"monthly.csv: 1 missing date\(s\) in the MS calendar of column 'Date': "
                                        r"2018-05-01; rule: every period"):
        training_flow(config_path=write_config(data={"source": str(csv)}, registry=TOLERANT))
    assert MlflowClient(mlflow_store).search_registered_models() == []
    summary = training_flow(config_path=write_config("filled.yaml", data={"source": str(csv), "fill_gaps": "forward"},
                                                     registry=TOLERANT))
    run = MlflowClient(mlflow_store).get_run(summary.run_id)
    assert run.data.tags["gaps_filled"] == "1" and run.data.params["data.fill_gaps"] == "forward"
    assert "data.fill_gaps=forward: filled 1 missing date(s) of the MS calendar: 2018-05-01" in summary.notes
    notes = mlflow.artifacts.load_text(f"runs:/{summary.run_id}/data/validation_notes.txt")
    assert "2018-05-01" in notes
