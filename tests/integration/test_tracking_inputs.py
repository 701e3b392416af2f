"""The training data logged as an MLflow dataset input through public APIs only."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from pipeline.tracking import store
from tests.conftest import make_prices


def test_log_dataset_records_name_digest_source_schema_and_context(mlflow_store, tmp_path) -> None:
    client = MlflowClient(mlflow_store)
    run_id = client.create_run(client.create_experiment("inputs")).info.run_id
    frame = make_prices(40).set_index("Date")
    source = str(tmp_path / "prices.csv")
    store.log_dataset(client, run_id, frame, source, "abc123", "Close", name="tiny")

    (logged,) = client.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("tiny", "abc123")
    assert logged.dataset.source_type == "local" and source in logged.dataset.source
    columns = {c["name"] for c in json.loads(logged.dataset.schema)["mlflow_colspec"]}
    assert {"Date", "Close", "Volume"} <= columns
    assert json.loads(logged.dataset.profile)["num_rows"] == 40
    assert {(t.key, t.value) for t in logged.tags} == {("mlflow.data.context", "training")}
