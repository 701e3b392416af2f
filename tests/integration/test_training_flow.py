"""The whole training flow for two epochs against a temporary MLflow store and Prefect's harness."""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from flows.training import training_flow
from pipeline.config.settings import theta_weight
from pipeline.errors import DataError
from pipeline.evaluation.intervals import conformal_quantile
from pipeline.serving.forecast import ForecastModel
from pipeline.tracking.registry import get_aliases
from tests.integration.conftest import TOLERANT


def test_flow_tracks_registers_and_serves_the_champion(tiny_run, prices):
    """The session's tiny run (conftest.py: the training flow, the gate TOLERANT, on `prices`' rows)."""
    summary = tiny_run.summary

    client = MlflowClient(tiny_run.uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    # a readable name (config, data file, date) and a description with the headline numbers
    assert run.info.run_name.startswith("tiny-prices-")
    note = run.data.tags["mlflow.note.content"]
    assert "| RMSE |" in note and "persistence" in note and "tiny-forecaster v1" in note
    # params: the whole resolved config
    assert run.data.params["window.lookback"] == "5"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["registry.model_name"] == "tiny-forecaster"
    # metrics: model and persistence side by side, per-epoch losses as steps, stage timings
    for key in ("test_rmse", "test_naive_rmse", "test_rmse_ratio", "test_mae", "test_mape",
                "test_direction_acc", "time_train_s"):
        assert key in run.data.metrics, key
    history = client.get_metric_history(summary.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1]
    assert len(client.get_metric_history(summary.run_id, "val_loss")) == 2
    # artifacts: plots, scalers, config
    artifacts = {f.path for d in ("plots", "scalers", "config") for f in client.list_artifacts(summary.run_id, d)}
    assert {"plots/forecast.png", "plots/loss.png", "plots/residuals.png",
            "scalers/preprocessor.json", "scalers/scalers.json", "config/tiny.yaml",
            "config/resolved.yaml"} <= artifacts
    # the dataset as an input, with the file's digest
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == run.data.tags["data_digest"]
    # the registry: version 1, champion
    assert (summary.version, summary.alias) == ("1", "champion")
    mv = client.get_model_version_by_alias("tiny-forecaster", "champion")
    assert str(mv.version) == "1" and mv.run_id == summary.run_id
    # the logged model carries the scores, evaluated on the training dataset
    assert mv.source == summary.model_uri
    logged = client.get_logged_model(summary.model_uri.removeprefix("models:/"))
    scores = {m.key: m for m in logged.metrics}
    assert scores["test_rmse"].value == run.data.metrics["test_rmse"]
    assert scores["test_rmse"].dataset_digest == run.data.tags["data_digest"]
    assert {"test_naive_rmse", "val_rmse", "train_rmse"} <= set(scores)

    # the registered pyfunc's network predicts exactly what the in-process model predicted on the test part, at the
    # share of Theta the scores were measured with; it serves the share chosen again on the test origins
    model = mlflow.pyfunc.load_model("models:/tiny-forecaster@champion")
    bundle = model.unwrap_python_model().bundle
    assert theta_weight(bundle.config) == run.data.metrics["theta_weight_served"]
    in_process = summary.test_forecasts
    # every window up to the test part's last (the last row has no target); Theta reads each one's whole history
    rows = prices.iloc[:-1]
    served = model.predict(rows, params={"all_windows": True})
    assert len(served) == len(rows) - 5 and set(in_process["date"]) <= set(served["date"])  # lookback 5 + warm-up 1
    as_evaluated = ForecastModel()
    as_evaluated.use(dataclasses.replace(bundle, config=bundle.config.with_overrides(
        model={"theta_weight": run.data.metrics["theta_weight"]})))
    evaluated = as_evaluated.forecast(rows, all_windows=True)
    first_dates = evaluated[evaluated["step"] == 1].set_index("date")["forecast"]
    np.testing.assert_array_equal(first_dates.loc[in_process["date"]].to_numpy(), in_process["forecast"].to_numpy())
    # the served intervals (the model's intervals.json) are fitted again on the test windows' errors, the origins
    # nearest to where a model that is not refit forecasts from (intervals.served: auto -> test); the run's test
    # scores keep the intervals fitted on the validation windows
    assert run.data.params["intervals.served"] == "test"
    actual = prices.set_index("Date").loc[in_process["date"], "Close"].to_numpy(dtype=float)
    by_date = served[served["step"] == 1].set_index("date").loc[in_process["date"]]
    errors = np.abs(actual - by_date["forecast"].to_numpy())  # the served forecasts' own errors (the served share)
    for level in (80, 95):
        half, _ = conformal_quantile(errors, level)
        np.testing.assert_allclose((by_date[f"upper_{level}"] - by_date["forecast"]).to_numpy(), half, rtol=1e-6)
        np.testing.assert_allclose((by_date["forecast"] - by_date[f"lower_{level}"]).to_numpy(), half, rtol=1e-6)
    assert not np.allclose(by_date["upper_95"].to_numpy(), in_process["upper_95"].to_numpy())
    assert {"test_coverage_80", "test_coverage_95", "test_msis", "test_acd_95", "test_seasonal_naive_msis"} <= set(scores)
    latest = model.predict(prices.tail(10))
    assert list(latest.columns) == ["origin", "step", "date", "forecast", "lower_80", "upper_80", "lower_95", "upper_95"]
    assert (latest["lower_95"] < latest["lower_80"]).all() and (latest["lower_80"] < latest["forecast"]).all()
    assert (latest["forecast"] < latest["upper_80"]).all() and (latest["upper_80"] < latest["upper_95"]).all()
    assert latest["date"].iloc[0] > prices["Date"].iloc[-1]
    assert np.isfinite(latest["forecast"]).all()


def test_a_quantile_head_is_tracked_registered_and_served_with_its_intervals(prefect_harness, mlflow_store,
                                                                              write_config, prices):
    """`model.quantiles` and `intervals.method: quantile` through the whole flow: the logged model is format 5
    and the registered pyfunc answers the training run's own (conformalized quantile) intervals."""
    config = write_config(registry=TOLERANT, model={"quantiles": [0.025, 0.1, 0.9, 0.975],
                                                    "theta_weight_served": "validation"},
                          intervals={"method": "quantile", "served": "validation"},  # served as evaluated
                          data={"floor": None})  # no floor (format 11): a quantile head's own format
    summary = training_flow(config_path=config)
    run = MlflowClient(mlflow_store).get_run(summary.run_id)
    assert run.data.params["model.quantiles"] == "[0.025, 0.1, 0.9, 0.975]"
    assert run.data.params["intervals.method"] == "quantile"
    assert {"test_coverage_80", "test_coverage_95", "test_msis", "test_pinball"} <= set(run.data.metrics)
    model = mlflow.pyfunc.load_model(summary.model_uri)
    bundle = model.unwrap_python_model().bundle
    assert bundle.format_version == 6 and bundle.intervals.method == "quantile"
    in_process = summary.test_forecasts
    served = model.predict(prices.iloc[:-1].tail(len(in_process) + 5), params={"all_windows": True})
    by_date = served[served["step"] == 1].set_index("date")
    for column in ("forecast", "lower_80", "upper_80", "lower_95", "upper_95"):
        np.testing.assert_allclose(by_date.loc[in_process["date"], column].to_numpy(), in_process[column].to_numpy(),
                                   rtol=0, atol=1e-6)
    assert (served["lower_95"] <= served["upper_95"]).all() and (served["lower_80"] <= served["upper_80"]).all()


@pytest.mark.slow
def test_second_run_is_champion_only_when_it_beats_the_first(tiny_run, write_config):
    first = tiny_run.summary  # the tiny config, TOLERANT
    better = training_flow(config_path=write_config("longer.yaml", train={"epochs": 30, "seed": 1}, registry=TOLERANT))
    client = MlflowClient(tiny_run.uri)
    aliases = get_aliases(client, "tiny-forecaster")
    first_rmse = first.metrics["test_rmse"]
    if better.metrics["test_rmse"] < first_rmse:
        assert better.alias == "champion" and aliases["champion"] == "2"
    else:
        assert better.alias == "challenger" and aliases == {"champion": "1", "challenger": "2"}
    assert "champion v1" in better.reason


def test_bad_data_fails_the_run_and_registers_nothing(prefect_harness, mlflow_store, write_config, tmp_path, prices):
    bad = prices.copy()
    bad.loc[10, "High"] = bad.loc[10, "Low"] - 5  # High below Low
    bad.loc[20, "Close"] = -1.0
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        training_flow(config_path=write_config(data={"source": str(path)}))
    message = str(info.value)
    assert "bad.csv" in message and "line 12" in message and "High >= max(Open, Close)" in message
    assert "line 22" in message and "price > 0" in message
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    report = mlflow.artifacts.load_text(f"runs:/{runs[0].info.run_id}/failure/report.txt")
    assert "High >= max(Open, Close)" in report
    assert client.search_registered_models() == []
