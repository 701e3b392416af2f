"""`pipeline backtest` end to end: a parent MLflow run, one nested child run per fold."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli.main import main
from tests.conftest import parent_and_children


@pytest.mark.slow
def test_backtest_logs_a_parent_run_with_a_child_per_fold(prefect_harness, mlflow_store, write_config, capsys,
                                                         tmp_path):
    config = write_config(evaluate={"season_length": 5})
    assert main(["backtest", "--config", config, "--folds", "3", "--window", "rolling"]) == 0
    out = capsys.readouterr().out
    assert "3 rolling folds as child runs" in out and "all folds pooled" in out

    client = MlflowClient(mlflow_store)
    parent, children, _ = parent_and_children(client, "tests", "backtest")
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["fold"] for c in children) == ["1", "2", "3"]
    # every fold cuts later than the one before, and trains on the same number of rows (rolling)
    by_fold = sorted(children, key=lambda c: int(c.data.params["fold"]))
    cutoffs = [c.data.params["cutoff"] for c in by_fold]
    assert cutoffs == sorted(cutoffs) and len(set(cutoffs)) == 3
    assert len({c.data.params["train_rows"] for c in by_fold}) == 1
    # per fold: the model beside every baseline under one naming scheme, and per-epoch losses
    for child in children:
        for key in ("test_rmse", "test_naive_rmse", "test_drift_rmse", "test_moving_average_rmse",
                    "test_seasonal_naive_rmse", "test_rmse_ratio", "time_fold_s"):
            assert key in child.data.metrics, key
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) == 2
    # the parent: mean and spread over folds, pooled metrics, the plot and the fold table
    m = parent.data.metrics
    fold_rmse = [c.data.metrics["test_rmse"] for c in children]
    assert m["test_rmse_mean"] == pytest.approx(sum(fold_rmse) / 3)
    assert m["test_rmse_std"] == pytest.approx(pd.Series(fold_rmse).std())
    for key in ("test_naive_rmse_mean", "test_drift_rmse_std", "backtest_rmse", "backtest_naive_rmse",
                "backtest_rmse_ratio", "folds"):
        assert key in m, key
    artifacts = {f.path for d in ("plots", "backtest", "config") for f in client.list_artifacts(parent.info.run_id, d)}
    assert {"plots/backtest.png", "backtest/folds.csv", "config/resolved.yaml"} <= artifacts
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "backtest/folds.csv", str(tmp_path)))
    assert list(table["fold"]) == [1, 2, 3] and list(table["cutoff"]) == cutoffs
    assert parent.data.tags["data_digest"] and parent.data.tags["git_commit"]
    # a backtest ships nothing
    assert client.search_registered_models() == []


def test_a_backtest_that_does_not_fit_fails_cleanly(prefect_harness, mlflow_store, write_config, capsys):
    assert main(["backtest", "--config", write_config(), "--folds", "100"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "fewer folds" in err
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.slow
def test_a_portfolio_backtest_refits_every_fold_and_scores_each_series(prefect_harness, mlflow_store, capsys,
                                                                        tmp_path):
    """`pipeline backtest --config configs/portfolio.yaml --folds 3`: folds from each store's end, a child run per
    fold, per-series and pooled scores beside naive and seasonal naive, the per-series CSV and plot, the verdict."""
    from tests.conftest import ROOT

    config, data = str(ROOT / "configs" / "portfolio.yaml"), str(ROOT / "data" / "portfolio.csv")
    assert main(["backtest", "--config", config, "--data", data, "--folds", "3", "--experiment", "tests",
                 "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 expanding folds as child runs" in out and "all folds pooled: MASE" in out
    assert "MASE ratio model/" in out and "better than" in out

    client = MlflowClient(mlflow_store)
    parent, children, _ = parent_and_children(client, "tests", "backtest")
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.params["fold"] for c in children) == ["1", "2", "3"]
    for child in children:  # each fold: the pooled scores of its series beside both baselines, its own losses
        for key in ("test_mase", "test_smape", "test_rmse", "test_naive_mase", "test_seasonal_naive_mase",
                    "test_seasonal_naive_smape", "test_coverage_95", "test_width_95", "test_msis", "test_series"):
            assert key in child.data.metrics, key
        assert client.get_metric_history(child.info.run_id, "train_loss")
    m = parent.data.metrics
    for key in ("backtest_mase", "backtest_smape", "backtest_rmse", "backtest_naive_mase", "backtest_seasonal_naive_mase",
                "backtest_coverage_95", "backtest_msis", "test_mase_mean", "test_mase_std", "folds"):
        assert key in m, key
    assert parent.data.tags["backtest.baseline"] in ("naive", "seasonal_naive")
    assert parent.data.tags["backtest.verdict"].startswith(("better than", "NOT better than"))
    series = pd.read_csv(client.download_artifacts(parent.info.run_id, "backtest/series_scores.csv", str(tmp_path)))
    assert sorted(series["fold"].unique()) == [1, 2, 3] and series.groupby("fold").size().eq(6).all()  # 6 stores
    pooled = series.drop(columns=["fold"])["model__mase"].mean()
    assert m["backtest_mase"] == pytest.approx(pooled, rel=1e-5)
    fold_means = [c.data.metrics["test_mase"] for c in sorted(children, key=lambda c: int(c.data.params["fold"]))]
    assert series.groupby("fold")["model__mase"].mean().tolist() == pytest.approx(fold_means, rel=1e-5)
    artifacts = {f.path for d in ("plots", "backtest") for f in client.list_artifacts(parent.info.run_id, d)}
    assert {"plots/backtest_series_mase.png", "backtest/series_scores.csv", "backtest/folds.csv"} <= artifacts
    assert client.search_registered_models() == []
