"""What a finished 4-trial sweep must have left in MLflow, shared by the local, Dask and PostgreSQL tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import ROOT, parent_and_children

SPACE = {
    "trials": 4,
    "seed": 5,
    "pruning": {"startup_trials": 2, "warmup_epochs": 1},
    "params": {
        "window.lookback": {"type": "int", "low": 5, "high": 15, "step": 5},
        "model.hidden_size": {"type": "int", "low": 4, "high": 16, "log": True},
        "model.num_layers": {"type": "int", "low": 1, "high": 2},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [32, 64]},
        "train.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
        "preprocess.target_transform": {"type": "categorical", "choices": ["log_return", "difference"]},
    },
}


def write_sweep_files(folder: Path, config: dict) -> tuple[str, str]:
    """`config` on the sample data (3 epochs) and a 4-trial space over every searchable kind of value."""
    raw = {**config, "data": {**config.get("data", {}), "source": str(ROOT / "data" / "SBUX.csv")},
           "train": {**config.get("train", {}), "epochs": 3}}
    (folder / "sweep-config.yaml").write_text(yaml.safe_dump(raw))
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return str(folder / "sweep-config.yaml"), str(folder / "space.yaml")


def check_sweep(uri: str, model_name: str, experiment: str = "tests") -> None:
    """One parent, four finished children with every param and metric, a registered winner that is the best
    trial on validation, retrained to the same validation score."""
    client = MlflowClient(uri, registry_uri=uri)  # not the registry an earlier in-process run set globally
    parent, children, found = parent_and_children(client, experiment, "sweep")
    assert len(children) == 4 and len(found) == 5
    assert all(c.info.status == "FINISHED" and c.data.tags["run_type"] == "sweep-trial" for c in children)
    assert sorted(int(c.data.params["sweep.trial"]) for c in children) == [0, 1, 2, 3]
    complete = [c for c in children if c.data.tags["sweep.state"] == "complete"]
    assert complete and {c.data.tags["sweep.state"] for c in children} <= {"complete", "pruned"}
    for child in children:
        for key in SPACE["params"]:
            assert key in child.data.params, key
        assert client.get_metric_history(child.info.run_id, "val_loss"), "per-epoch losses"
        assert "time_trial_s" in child.data.metrics
    for child in complete:
        for key in ("val_mase", "val_rmse", "val_rmse_ratio", "best_val_loss", "epochs", "peak_rss_mb"):
            assert key in child.data.metrics, key
        assert child.data.metrics["threads"] == 1  # two trials on this machine's cores: one thread each here
        assert not any(k.startswith("test_") for k in child.data.metrics)  # selection never sees test
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) == 3
    best = min(complete, key=lambda c: (c.data.metrics["val_mase"], int(c.data.params["sweep.trial"])))
    m = parent.data.metrics
    assert parent.data.params["sweep.best_trial"] == best.data.params["sweep.trial"]
    assert m["best_val_mase"] == pytest.approx(best.data.metrics["val_mase"])
    assert m["trials"] == 4 and m["trials_complete"] == len(complete)
    for key in SPACE["params"]:  # the parent carries the winner's config
        assert parent.data.params[key] == best.data.params[key], key
    # retrained with the trial's seed and threads: the same model, so the same validation score
    assert m["val_rmse"] == pytest.approx(best.data.metrics["val_rmse"], rel=1e-9)
    assert "test_rmse" in m and "test_naive_rmse" in m
    artifacts = {f.path for d in ("plots", "sweep") for f in client.list_artifacts(parent.info.run_id, d)}
    assert {"plots/sweep_objective.png", "sweep/trials.csv", "sweep/space.yaml", "plots/forecast.png"} <= artifacts
    (version,) = client.search_model_versions(f"name='{model_name}'")
    assert version.run_id == parent.info.run_id
    assert version.version in client.get_registered_model(model_name).aliases.values()  # gated: champion or challenger
    assert parent.data.tags["registered_version"] == str(version.version) and parent.data.tags["promotion"]
