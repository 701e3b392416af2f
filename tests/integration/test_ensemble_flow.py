"""An ensemble (`model.ensemble`) through the command line: members trained in worker processes, logged and
registered as one model, served by the pyfunc and `pipeline predict`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow import MlflowClient

from pipeline.cli.main import main
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.model.network import LSTMEnsemble
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


def test_an_ensemble_trains_in_parallel_as_in_sequence_and_serves_as_one_model(prefect_harness, mlflow_store,
                                                                              tmp_path: Path, capsys) -> None:
    csv = tmp_path / "two.csv"
    make_long("AB", n=40).to_csv(csv, index=False)
    raw = long_config_dict(str(csv), model={"ensemble": 2}, train={"epochs": 3, "num_threads": 1},
                           registry={"model_name": "ens", "min_gain_over_persistence": -0.99})
    config = tmp_path / "ens.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config), "--parallel", "2"]) == 0  # the members in two worker processes

    client = MlflowClient(mlflow_store)
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.params["model.ensemble"] == "2"
    assert {"member_0_best_epoch", "member_1_best_epoch", "member_0_val_loss", "member_1_val_loss"} <= set(
        run.data.metrics)

    model = mlflow.pyfunc.load_model("models:/ens/1")
    bundle = model.unwrap_python_model().bundle
    assert bundle.format_version == 7 and bundle.checkpoint["init_args"]["members"] == 2
    # the same members trained one after another in this process: the same weights, tensor for tensor
    data = panel.validate_panel(load_prices(str(csv)), bundle.config, min_rows=6)
    sequential = steps.fit_panel(steps.prepare_panel(data, bundle.config), bundle.config)
    assert isinstance(sequential.shared.model, LSTMEnsemble)
    state = sequential.shared.model.state_dict()
    assert state.keys() == bundle.checkpoint["state_dict"].keys()
    assert all(torch.equal(state[k], bundle.checkpoint["state_dict"][k]) for k in state)
    assert run.data.metrics["member_1_val_loss"] == sequential.shared.member_metrics()["member_1_val_loss"]

    # served as one model: the pyfunc's forecasts of A are the run's own test forecasts, and `pipeline predict` agrees
    frame = pd.read_csv(csv, dtype=str)
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                             artifact_path="evaluation/test_forecasts.csv"))
    a = frame[frame["id"] == "A"].iloc[:36]
    np.testing.assert_allclose(model.predict(a)["forecast"], logged[logged["id"] == "A"]["forecast"], rtol=1e-6)
    out = tmp_path / "forecasts.csv"
    assert main(["predict", "--model", "models:/ens/1", "--data", str(csv), "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"id": str})
    np.testing.assert_allclose(written["forecast"], model.predict(frame)["forecast"], rtol=1e-6)
