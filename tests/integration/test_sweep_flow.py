"""`pipeline sweep` end to end: trials as Prefect tasks in parallel, a parent MLflow run with a child per
trial, the winner retrained, scored on test and registered; the same sweep on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from tests.integration.sweep_support import check_sweep, write_sweep_files


@pytest.fixture
def sweep_files(tmp_path: Path, tiny_config_dict: dict) -> tuple[str, str]:
    return write_sweep_files(tmp_path, tiny_config_dict)


@pytest.mark.slow
def test_a_four_trial_sweep_at_parallelism_two(prefect_harness, mlflow_store, sweep_files, capsys):
    config, space = sweep_files
    assert main(["sweep", "--space", space, "--config", config, "--parallel", "2", "--model-name", "swept"]) == 0
    out = capsys.readouterr().out
    assert "4 trials as child runs on 2 processes" in out and "best on validation: trial" in out
    assert "Registered model:  swept version 1" in out
    check_sweep(mlflow_store, "swept")


def test_a_bad_space_fails_before_anything_runs(mlflow_store, write_config, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"model.dropout": {"type": "float", "low": 0.5, "high": 0.1}}}))
    assert main(["sweep", "--space", str(space), "--config", write_config()]) == 2
    err = capsys.readouterr().err
    assert f"{space}: params.model.dropout: low must be below high" in err
    assert not Path(mlflow_store.removeprefix("sqlite:///")).exists()  # no run, not even a store


@pytest.mark.slow
@pytest.mark.dask
@pytest.mark.timeout(600)  # a cluster whose workers are gone leaves the sweep waiting on its futures: fail, not hang
def test_the_same_sweep_on_a_dask_cluster(prefect_harness, mlflow_store, sweep_files, capsys):
    pytest.importorskip("prefect_dask", reason="the dask extra is not installed: pip install '.[dask]'")
    from distributed import LocalCluster

    config, space = sweep_files
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(["sweep", "--space", space, "--config", config, "--parallel", "2", "--model-name", "swept",
                     "--dask-address", cluster.scheduler_address]) == 0
    assert f"on dask ({cluster.scheduler_address})" in capsys.readouterr().out
    check_sweep(mlflow_store, "swept")


def test_failed_trials_are_recorded_and_a_sweep_without_a_complete_trial_fails(prefect_harness, mlflow_store,
                                                                                sweep_files, tmp_path, capsys):
    from mlflow import MlflowClient

    config, _ = sweep_files
    space = tmp_path / "too-long.yaml"  # a valid config, but 200 rows of lookback leave the splits no window
    space.write_text(yaml.safe_dump({"trials": 2, "params": {"window.lookback": {"type": "categorical", "choices": [200]}}}))
    assert main(["sweep", "--space", str(space), "--config", config, "--model-name", "never"]) == 1
    err = capsys.readouterr().err
    assert "no trial of the sweep completed (trial 0: failed (too few rows" in err and "trial 1: failed" in err
    client = MlflowClient(mlflow_store)
    found = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    statuses = sorted((r.data.tags["run_type"], r.info.status) for r in found)
    assert statuses == [("sweep", "FAILED"), ("sweep-trial", "FAILED"), ("sweep-trial", "FAILED")]
    assert client.search_registered_models() == []


@pytest.mark.slow
def test_a_sweep_of_many_series_selects_on_mean_validation_mase(prefect_harness, mlflow_store, tmp_path, capsys):
    """A long table: each trial one global network on every series, the objective the mean validation MASE over
    series; the winner goes through the many-series training steps and registers one model for every series."""
    from mlflow import MlflowClient

    from tests.conftest import long_config_dict, make_long

    make_long("ABC", n=60).to_csv(tmp_path / "long.csv", index=False)
    # the network alone: an untrained trial would take Theta's whole share, and the trials would tie
    raw = long_config_dict(str(tmp_path / "long.csv"), model={"theta_weight": 0})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"trials": 2, "seed": 1, "params": {
        "model.hidden_size": {"type": "categorical", "choices": [4, 8]},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}))
    assert main(["sweep", "--space", str(space), "--config", str(tmp_path / "config.yaml")]) == 0
    assert "Registered model:  panel-forecaster version 1" in capsys.readouterr().out
    client = MlflowClient(mlflow_store)
    found = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    trials = [r for r in found if r.data.tags.get("run_type") == "sweep-trial"]
    parent = next(r for r in found if r.data.tags.get("run_type") == "sweep")
    assert len(trials) == 2 and all(np.isfinite(t.data.metrics["val_mase"]) for t in trials)
    best = min(trials, key=lambda t: t.data.metrics["val_mase"])
    assert parent.data.params["sweep.best_trial"] == best.data.params["sweep.trial"]
    assert parent.data.metrics["test_series"] == 3 and "test_seasonal_naive_mase" in parent.data.metrics
    assert client.get_model_version("panel-forecaster", "1").run_id == parent.info.run_id
