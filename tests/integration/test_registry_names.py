"""A model name the registry would refuse stops `pipeline train` at once (exit 2), before any training."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.cli.main import main


@pytest.mark.parametrize("where", ["config", "--model-name"])
@pytest.mark.parametrize("name", ["a/b", "x:y"])
def test_a_name_the_registry_refuses_exits_2_before_training(prefect_harness, mlflow_store, write_config, capsys,
                                                            tmp_path: Path, where: str, name: str):
    if where == "config":
        args = ["train", "--config", write_config(registry={"model_name": name})]
    else:
        args = ["train", "--config", write_config(), "--model-name", name]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: invalid config" in err and "registry.model_name" in err and "Traceback" not in err
    assert f"{name!r} cannot be registered: a registered model name must not be blank, must not contain '/', ':'" in err
    client = MlflowClient(mlflow_store, registry_uri=mlflow_store)
    assert client.get_experiment_by_name("tests") is None  # nothing trained, nothing tracked
    assert client.search_registered_models() == []
    assert not (tmp_path / "mlruns" / "unlogged").exists()
