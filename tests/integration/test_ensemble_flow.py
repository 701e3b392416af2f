"""An ensemble (`model.ensemble`) through the command line: members trained in worker processes, logged and
refit each for its own best epochs, registered as one model, served by the pyfunc and `pipeline predict`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from pipeline.cli.main import main
from pipeline.config.settings import theta_weight
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.model.network import LSTMEnsemble
from pipeline.model.training import fit_network
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


@pytest.mark.slow
def test_an_ensemble_trains_in_parallel_as_in_sequence_and_serves_as_one_model(prefect_harness, mlflow_store,
                                                                              tmp_path: Path, capsys) -> None:
    csv = tmp_path / "two.csv"
    make_long("AB", n=40).to_csv(csv, index=False)
    raw = long_config_dict(str(csv), model={"ensemble": 2}, train={"epochs": 3, "num_threads": 1, "refit": True},
                           data={"floor": None},  # no floor (format 11): the versions below are the kind's own
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
    evaluated = bundle.evaluated  # refit: format 9, the evaluated ensemble beside it
    combined = theta_weight(evaluated.config) > 0  # with the dynamic Theta model: format 8, else an ensemble's 7
    assert bundle.format_version == 9 and evaluated.format_version == (8 if combined else 7)
    # Theta's share: the evaluated model's was chosen on the validation origins (the scores'), the served one's again
    # on the test origins (`model.theta_weight_served: auto`); the run records both
    assert run.data.metrics["theta_weight"] == theta_weight(evaluated.config)
    assert run.data.metrics["theta_weight_served"] == theta_weight(bundle.config)
    resolved = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config/resolved.yaml",
                                                             str(tmp_path))).read_text())["model"]
    assert (resolved["theta_weight"], resolved["theta_weight_served"]) == (
        run.data.metrics["theta_weight"], run.data.metrics["theta_weight_served"])
    assert bundle.checkpoint["init_args"]["members"] == evaluated.checkpoint["init_args"]["members"] == 2
    # the same members trained one after another in this process: the same losses, and the refit (each member for
    # its own best epoch count, on every row) the same weights, tensor for tensor
    cfg = bundle.config
    assert cfg.train.loss_weight_power == (0.5, 1.0)  # `auto`: the members alternate their loss (mixed losses)
    data = panel.validate_panel(load_prices(str(csv)), cfg, min_rows=6)
    sequential = steps.fit_panel(steps.prepare_panel(data, cfg), cfg).shared
    assert isinstance(sequential.model, LSTMEnsemble)
    for name, value in sequential.member_metrics().items():
        assert run.data.metrics[name] == value, name
    epochs = sequential.member_epochs()
    refit = fit_network(cfg, steps.stacked(steps.refit_panel(data, cfg))["train"], None, epochs=epochs)
    assert [r.epochs_run for r in refit.members] == epochs
    state, logged_state = refit.model.state_dict(), bundle.checkpoint["state_dict"]
    assert state.keys() == logged_state.keys()
    assert all(torch.equal(state[k], logged_state[k]) for k in state)

    # served as one model: the pyfunc and `pipeline predict` give the same forecasts
    frame = pd.read_csv(csv, dtype=str)
    out = tmp_path / "forecasts.csv"
    assert main(["predict", "--model", "models:/ens/1", "--data", str(csv), "--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"id": str})
    served = model.predict(frame)
    assert len(written) == 8 and {"lower_95", "upper_95"} <= set(written.columns)
    np.testing.assert_allclose(written["forecast"], served["forecast"], rtol=1e-6)
