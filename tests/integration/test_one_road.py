"""One road for one series and many: a series is a panel of one."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from flows.training import training_flow
from pipeline.config.settings import TrainConfig


def test_one_series_forecasts_alike_with_and_without_a_one_value_series_column(prefect_harness, mlflow_store,
                                                                              write_config, prices, tmp_path):
    """The same series trained as a config of one series and as a long table of one series id: the same windows, the
    same network, the same forecasts (in training and from the logged model)."""
    long = prices.assign(id="only")[["id", *prices.columns]]
    long_csv = tmp_path / "long.csv"
    long.to_csv(long_csv, index=False)
    one = training_flow(config_path=write_config("one.yaml", registry={"enabled": False}))
    many = training_flow(config_path=write_config("many.yaml", data={"source": str(long_csv), "series_column": "id"},
                                                  registry={"enabled": False}))

    ours, theirs = one.test_forecasts, many.test_forecasts
    assert "id" not in ours.columns and (theirs["id"] == "only").all()  # one series: today's columns, no id column
    assert list(ours["date"]) == list(theirs["date"])
    for column in ("forecast", "lower_80", "upper_80", "lower_95", "upper_95"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-6, err_msg=column)
    assert np.isclose(one.metrics["test_rmse"], many.metrics["test_rmse"], rtol=1e-6)

    rows = prices.tail(20)
    served_one = mlflow.pyfunc.load_model(one.model_uri).predict(rows, params={"all_windows": True})
    served_many = mlflow.pyfunc.load_model(many.model_uri).predict(rows.assign(id="only"), params={"all_windows": True})
    assert list(served_one.columns) == ["origin", "step", "date", "forecast", "lower_80", "upper_80", "lower_95",
                                        "upper_95"]
    np.testing.assert_allclose(served_one["forecast"], served_many["forecast"], rtol=1e-6)


def test_refit_trains_one_series_again_on_every_row(prefect_harness, mlflow_store, write_config, prices):
    """`train.refit` (the default) for one series: the logged model's scalers saw every row and its weights differ
    from the model early stopping kept, which `refit: false` serves (they were the same, refit silently ignored,
    before one road)."""
    assert TrainConfig().refit  # the code's default (the tiny config names false)
    network = {"theta_weight": 0}  # the network alone: Theta's share could hide it
    kept = training_flow(config_path=write_config("kept.yaml", registry={"enabled": False}, model=network))
    refit = training_flow(config_path=write_config("refit.yaml", registry={"enabled": False}, train={"refit": True},
                                                   model=network))
    client = MlflowClient(mlflow_store)

    def scaler_rows(run_id: str) -> int:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="scalers/preprocessor.json")
        with open(path, encoding="utf-8") as handle:
            return int(np.asarray(json.load(handle)["target_scaler"]["n_samples_seen_"]).max())

    assert scaler_rows(refit.run_id) == len(prices) - 1  # every row but the log-return warm-up
    assert scaler_rows(kept.run_id) < 0.7 * len(prices)  # the training part only
    assert refit.metrics["test_rmse"] == kept.metrics["test_rmse"]  # scores are the held-out model's, as for many series
    a = mlflow.pyfunc.load_model(kept.model_uri).predict(prices.tail(10))
    b = mlflow.pyfunc.load_model(refit.model_uri).predict(prices.tail(10))
    assert not np.allclose(a["forecast"], b["forecast"])
    assert client.get_run(refit.run_id).data.metrics["time_refit_s"] >= 0
    assert pd.api.types.is_float_dtype(b["forecast"])
