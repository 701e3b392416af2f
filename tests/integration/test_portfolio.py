"""Many series in one run, end to end through the command line: train (global and local), register, predict."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli.main import main
from pipeline.errors import TrainingError
from tests.conftest import long_config_dict

TOLERANT = {"min_gain_over_persistence": -0.99}  # a few epochs make no forecaster: these tests are about the flow


def write(tmp_path: Path, name: str, raw: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.slow
def test_global_portfolio_trains_registers_and_predicts_every_series(prefect_harness, mlflow_store, long_csv,
                                                                        tmp_path, capsys):
    config = write(tmp_path, "panel.yaml", long_config_dict(str(long_csv), data={"on_bad_series": "skip"},
                                                            registry=TOLERANT,
                                                            intervals={"served": "validation"}))  # the run's own
    assert main(["train", "--config", config]) == 0
    printed = capsys.readouterr().out
    assert "test, mean of 4 series" in printed and "mase" in printed and "seasonal naive" in printed
    assert "portfolio" not in printed and "panel-forecaster version 1" in printed

    client = MlflowClient(mlflow_store)
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.info.status == "FINISHED"
    for key in ("test_rmse", "test_smape", "test_mase", "test_naive_mase", "test_seasonal_naive_mase",
                "test_seasonal_naive_smape", "val_mase", "test_series"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test_series"] == 4  # A, B, D, E: C is broken (skipped); E, too short to train on, is scored
    tags = run.data.tags
    assert (tags["data_series"], tags["series_skipped"], tags["series_forecast_only"]) == ("4", "1", "0")  # E trains too
    assert tags["model_strategy"] == "global"
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation/test_series_scores.csv"))
    assert table["id"].tolist() == ["A", "B", "D", "E"]
    assert table["model__mase"].mean() == pytest.approx(run.data.metrics["test_mase"], rel=1e-5)
    mv = client.get_model_version("panel-forecaster", "1")
    assert mv.tags["gate.metric"] == "mase" and mv.tags["gate.baseline"] in ("naive", "seasonal_naive")
    # held to the strongest baseline, and the console's headline names the same one
    strongest = min(run.data.metrics["test_naive_mase"], run.data.metrics["test_seasonal_naive_mase"])
    assert float(mv.tags["gate.baseline_score"]) == pytest.approx(strongest, rel=1e-6)
    words = "persistence" if mv.tags["gate.baseline"] == "naive" else "seasonal naive"
    assert f"MASE ratio model/{words}:" in printed
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/loss.png", "plots/series_forecasts.png", "plots/series_mase.png", "plots/calibration.png"} <= figures
    summary = tags["mlflow.note.content"]  # the run summary, also the Prefect markdown artifact
    assert "## Test scores per series\n| id | windows | MASE | seasonal naive MASE | ratio | sMAPE |" in summary
    assert all(f"\n| {sid} | " in summary for sid in ("A", "B", "D", "E"))

    # the pyfunc takes the long frame and forecasts every series it knows, the short one included
    model = mlflow.pyfunc.load_model("models:/panel-forecaster/1")
    frame = pd.read_csv(long_csv, dtype=str)
    good = frame[frame["id"] != "C"]
    served = model.predict(good)
    assert list(served.columns) == ["id", "origin", "step", "date", "forecast", "lower_80", "upper_80", "lower_95", "upper_95"]
    assert served.groupby("id").size().to_dict() == {"A": 4, "B": 4, "D": 4, "E": 4}
    assert served[served["id"] == "E"]["date"].iloc[0] == "2024-01-01 12:00:00"  # E: 12 hourly rows
    # the in-process test forecasts are what the logged model serves from the same rows
    logged_test = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation/test_forecasts.csv"))
    a = good[good["id"] == "A"].iloc[:36]  # up to the last row before A's test part
    again = model.predict(a)
    np.testing.assert_allclose(again["forecast"], logged_test[logged_test["id"] == "A"]["forecast"], rtol=1e-6)
    for column in ("lower_80", "upper_80", "lower_95", "upper_95"):  # one conformal table times A's scale, as in the training run
        np.testing.assert_allclose(again[column], logged_test[logged_test["id"] == "A"][column], rtol=0, atol=1e-6)
    assert {"test_coverage_95", "test_acd_95", "test_msis", "test_seasonal_naive_msis"} <= set(run.data.metrics)
    assert table["model__coverage_95"].mean() == pytest.approx(run.data.metrics["test_coverage_95"], rel=1e-5)

    # pipeline predict on the long CSV: the next horizon of every series; the broken one left out (skip)
    out = tmp_path / "forecasts.csv"
    assert main(["predict", "--model", "models:/panel-forecaster/1", "--data", str(long_csv), "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"id": str})
    assert list(written.columns) == ["id", "origin", "step", "date", "forecast", "lower_80", "upper_80", "lower_95", "upper_95"]
    assert sorted(written["id"].unique()) == ["A", "B", "D", "E"]
    assert written[written["id"] == "A"]["date"].tolist() == [
        "2024-01-02 16:00:00", "2024-01-02 17:00:00", "2024-01-02 18:00:00", "2024-01-02 19:00:00"]


def test_a_broken_series_fails_the_run_with_its_id_line_and_rule(prefect_harness, mlflow_store, long_csv, tmp_path,
                                                                   capsys):
    config = write(tmp_path, "panel.yaml", long_config_dict(str(long_csv)))
    assert main(["train", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "series 'C'" in err and "line 87 ('abc')" in err and "price > 0" in err


@pytest.mark.slow
def test_local_strategy_a_failing_series_fails_alone_and_refit_serves(prefect_harness, mlflow_store, long_csv,
                                                                       tmp_path, monkeypatch):
    from pipeline.model import training

    real_fit = training.fit  # a series' network trains through training.fit_network -> fit_member -> fit

    def fit_failing_b(model, train_windows, val, cfg, on_epoch_end=None):
        if len(train_windows) == 13:  # series B (30 rows): the only one with 13 training windows
            raise TrainingError("training diverged at epoch 1 (planted)")
        return real_fit(model, train_windows, val, cfg, on_epoch_end)

    frame = pd.read_csv(long_csv, dtype=str)
    frame = frame[(frame["id"] != "C") & ~((frame["id"] == "B") & (frame.groupby("id").cumcount() >= 30))]
    frame.to_csv(long_csv, index=False)
    monkeypatch.setattr(training, "fit", fit_failing_b)
    config = write(tmp_path, "local.yaml", long_config_dict(str(long_csv), model={"strategy": "local"},
                                                            train={"refit": True}, registry=TOLERANT))
    assert main(["train", "--config", config]) == 0
    client = MlflowClient(mlflow_store)
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.data.tags["model_strategy"] == "local" and run.data.tags["series_failed"] == "1"
    assert run.data.metrics["test_series"] == 2  # A and D
    served = mlflow.pyfunc.load_model("models:/panel-forecaster/1").predict(frame[frame["id"].isin(["A", "D"])])
    assert sorted(served["id"].unique()) == ["A", "D"]
    with pytest.raises(Exception, match="'B'.*not among the 2 series"):
        mlflow.pyfunc.load_model("models:/panel-forecaster/1").predict(frame[frame["id"] == "B"])


@pytest.mark.slow
@pytest.mark.parametrize("refit", [False, True])
def test_the_portfolio_gate_rescores_the_champion_on_every_series(prefect_harness, mlflow_store, long_csv, tmp_path,
                                                                   refit):
    config = write(tmp_path, "panel.yaml", long_config_dict(  # the network alone: Theta's share would hide a refit
        str(long_csv), data={"on_bad_series": "skip", "floor": None},  # no floor: the kind's own format version
        model={"theta_weight": 0}, train={"refit": refit},
        registry=TOLERANT))
    assert main(["train", "--config", config]) == 0
    assert main(["promote", "panel-forecaster", "1", "--reason", "a champion to beat"]) == 0
    assert main(["train", "--config", config, "--force"]) == 0
    client = MlflowClient(mlflow_store)
    tags = client.get_model_version("panel-forecaster", "2").tags
    check = tags["gate.check.champion"]
    assert "re-scored with its own preprocessing" in check and tags["gate.metric"] == "mase"
    assert tags["gate.baseline"] in ("naive", "seasonal_naive")
    # The same seed, data and config: the champion re-scored equals the challenger, 4 series x 4 steps. A refit
    # champion trained on these very rows; the gate re-scores the model its run evaluated, logged beside it
    assert float(tags["gate.champion_score"]) == pytest.approx(float(tags["gate.challenger"]), rel=1e-6)
    assert ("(16 forecasts; re-scored with the model its run evaluated, not its refit on every row)" if refit
            else "(16 forecasts)") in check
    served = mlflow.pyfunc.load_model("models:/panel-forecaster/1").unwrap_python_model().bundle
    assert served.format_version == (9 if refit else 6) and (served.evaluated is not None) == refit


@pytest.mark.slow
@pytest.mark.dask
def test_local_strategy_trains_its_series_on_a_dask_cluster(prefect_harness, mlflow_store, tmp_path, capsys):
    """Six series, one network each, trained as mapped tasks on a two-worker LocalCluster through DaskTaskRunner."""
    pytest.importorskip("prefect_dask", reason="the dask extra is not installed: pip install '.[dask]'")
    from distributed import LocalCluster

    from tests.conftest import make_long

    make_long("ABCDEF", n=40).to_csv(tmp_path / "six.csv", index=False)
    config = write(tmp_path, "local.yaml", long_config_dict(str(tmp_path / "six.csv"), model={"strategy": "local"},
                                                            registry=TOLERANT))
    from distributed import Client, get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as dask, get_task_stream(client=dask) as stream:
        assert main(["train", "--config", config, "--dask-address", cluster.scheduler_address]) == 0
    assert len(stream.data) >= 6, stream.data  # each series' training ran as a task on the cluster's workers
    client = MlflowClient(mlflow_store)
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["model_strategy"] == "local"
    assert run.data.metrics["test_series"] == 6 and run.data.tags["series_failed"] == "0"
    assert "Registered model:  panel-forecaster version 1" in capsys.readouterr().out
