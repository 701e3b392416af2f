"""Scheduled retraining end to end: a real Prefect server, the process pool, prefect.yaml, a worker.

Everything runs as separate processes, as a user would run them (tests/integration/prefect_stack.py).
The flow runs are triggered through the server's REST API with a tiny config and land in a temporary
MLflow store.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.prefect_stack import BIN, MARKER, Processes, api, artifacts_of, logged, trigger
from tests.integration.processes import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(prefect_stack: dict) -> dict:
    """The session's Prefect stack (conftest.py): server, pool, prefect.yaml's deployments, worker, MLflow store."""
    return prefect_stack


@pytest.mark.slow
@pytest.mark.xdist_group("prefect-stack")
def test_scheduled_retraining_through_a_worker(stack: dict, write_config) -> None:
    from mlflow import MlflowClient

    spec = stack["spec"]
    # prefect deploy applied prefect.yaml: both deployments, the retraining one limited to one run at a time
    deployment = api(stack, "GET", "/deployments/name/lstm-training/retraining")
    names = {d["name"] for d in api(stack, "POST", "/deployments/filter", json={})}
    assert names == {d["name"] for d in spec["deployments"]}
    assert deployment["work_pool_name"] == spec["deployments"][0]["work_pool"]["name"]
    limit = deployment.get("global_concurrency_limit") or {}
    assert deployment.get("concurrency_limit") == 1 or limit.get("limit") == 1, deployment
    schedule = deployment["schedules"][0]["schedule"]
    assert (schedule["cron"], schedule["timezone"]) == ("30 18 * * 1-5", "America/New_York")
    assert deployment["job_variables"]["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "pipeline"

    config = write_config(tracking={"experiment": "scheduled"}, registry={"model_name": "scheduled-forecaster"})
    mlflow = MlflowClient(stack["tracking_uri"], registry_uri=stack["tracking_uri"])

    # 1. the first scheduled run trains, tracks and registers version 1
    first = trigger(stack, deployment["id"], config_path=config)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("scheduled").experiment_id],
                              f"tags.`prefect.flow_run_id` = '{first['id']}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    tags = runs[0].data.tags
    assert tags["prefect.flow_name"] == "lstm-training" and tags["prefect.deployment_name"] == "retraining"
    assert tags["registered_version"] == "1"
    experiment_id = runs[0].info.experiment_id
    artifacts = artifacts_of(stack, first["id"])
    assert {"tiny-run-summary", "tiny-mlflow-run"} <= set(artifacts), artifacts
    summary = artifacts["tiny-run-summary"]
    assert "trained a new model" in summary and runs[0].info.run_id in summary
    assert "scheduled-forecaster v1" in summary and "| RMSE |" in summary and tags["data_digest"] in summary
    assert f"runs/{runs[0].info.run_id})" in artifacts["tiny-mlflow-run"]
    # logs of the plain steps in src/pipeline reached the Prefect run logs
    expected = {"pipeline.data.reading", "pipeline.model.training"}
    logs = logged(stack, first["id"], lambda logs: expected <= {r["name"] for r in logs})
    assert expected <= {r["name"] for r in logs}, [(r["name"], r["message"]) for r in logs]

    # 2. unchanged data and config: nothing to do, nothing tracked or registered
    second = trigger(stack, deployment["id"], config_path=config)
    assert mlflow.search_runs([experiment_id], f"tags.`prefect.flow_run_id` = '{second['id']}'") == []
    assert len(mlflow.search_runs([experiment_id])) == 1
    assert [str(v.version) for v in mlflow.search_model_versions("name = 'scheduled-forecaster'")] == ["1"]
    artifacts = artifacts_of(stack, second["id"])
    assert "nothing to do" in artifacts["tiny-run-summary"] and runs[0].info.run_id in artifacts["tiny-mlflow-run"]
    skip_logged = lambda logs: any(r["message"].startswith("nothing to do") for r in logs)  # noqa: E731
    assert skip_logged(logged(stack, second["id"], skip_logged))

    # 3. force=true retrains and registers version 2
    third = trigger(stack, deployment["id"], config_path=config, force=True)
    forced = mlflow.search_runs([experiment_id], f"tags.`prefect.flow_run_id` = '{third['id']}'")
    assert len(forced) == 1 and forced[0].data.tags["forced"] == "True"
    assert sorted(str(v.version) for v in mlflow.search_model_versions("name = 'scheduled-forecaster'")) == ["1", "2"]
    assert forced[0].info.run_id in artifacts_of(stack, third["id"])["tiny-mlflow-run"]


def test_unreadable_data_fails_before_any_mlflow_run_and_says_why(prefect_harness, mlflow_store, write_config,
                                                                   tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.training import training_flow

    missing = tmp_path / "gone.csv"
    state = training_flow(config_path=write_config(data={"source": str(missing)}), return_state=True)
    assert state.is_failed() and "gone.csv: data file not found" in state.message
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("tests")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    with get_client(sync_client=True) as prefect:
        flow_run_id = state.state_details.flow_run_id
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    summary = {a.key: a.data for a in artifacts}["tiny-run-summary"]
    assert "# tiny: FAILED" in summary and "gone.csv: data file not found" in summary
    assert "before any MLflow run was started" in summary


@pytest.mark.slow
def test_make_server_on_another_port_serves_a_ui_that_calls_that_port(tmp_path: Path) -> None:
    """`make server PREFECT_PORT=P`: the UI's settings name P's API, not Prefect's default 4200."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MAKE"))}
    env.update({MARKER: uuid.uuid4().hex, "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    procs = Processes(env, tmp_path)
    try:
        server = procs.start("make-server", "make", "--no-print-directory", "server", f"PREFECT_PORT={port}",
                             f"BIN={BIN}", "STAMP=pyproject.toml")
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"make server exited {server.returncode}:\n{procs.tail('make-server')}"
            with contextlib.suppress(httpx.HTTPError):
                settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=5)
                if settings.status_code == 200:
                    break
            assert time.monotonic() < deadline, f"no UI settings in 120 s:\n{procs.tail('make-server')}"
            time.sleep(0.5)
        assert settings.json()["api_url"] == f"http://127.0.0.1:{port}/api"
    finally:
        procs.stop()
