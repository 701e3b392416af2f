"""Scheduled retraining end to end: a real Prefect server, the process pool, prefect.yaml, a worker.

Everything runs as separate processes, as a user would run them: `prefect server start` on a
free loopback port with a temporary PREFECT_HOME, `prefect work-pool create`, `prefect deploy
--all` from the project root, `prefect worker start`. The flow runs are triggered through the
server's REST API with a tiny config and land in a temporary MLflow store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.processes import free_port, stop_groups
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
MARKER = "PIPELINE_DEPLOYMENT_TEST"  # set in every process this test starts, to find leftovers

log = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


class Processes:
    """Processes started in their own sessions, stopped as whole groups (and any stragglers)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        out = self.logs / f"{name}.log"
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.started.append((proc, out))
        return proc

    def run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        stop_groups(proc for proc, _ in reversed(self.started))
        self.kill_stragglers()

    def kill_stragglers(self) -> None:
        """Flow-run processes a worker put in sessions of their own: found by our marker, killed by id."""
        marker = f"{MARKER}={self.env[MARKER]}".encode()
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    """A Prefect server with the pool and prefect.yaml's deployments, a worker, a temporary MLflow store."""
    import httpx

    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    tracking_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        MARKER: uuid.uuid4().hex,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # No scheduled runs in the test: the cron schedules are checked, the runs are triggered here.
        # Services with nothing to do in a three-minute test stay off (less SQLite contention).
        **{f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false" for service in (
            "SCHEDULER", "LATE_RUNS", "FOREMAN", "DB_VACUUM", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP")},
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "MLFLOW_TRACKING_URI": tracking_uri,  # the worker passes its environment on to the flow runs
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    procs = Processes(env, tmp_path)
    http = httpx.Client(base_url=api_url, timeout=30)
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        server = procs.start("server", PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port))
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"prefect server exited {server.returncode}:\n{procs.tail('server')}"
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/health").status_code == 200:
                    break
            assert time.monotonic() < deadline, f"prefect server not healthy in 120 s:\n{procs.tail('server')}"
            time.sleep(0.25)
        timings["server_start_s"] = time.perf_counter() - started

        spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
        pool = spec["deployments"][0]["work_pool"]["name"]
        started = time.perf_counter()
        procs.run(PREFECT, "work-pool", "create", pool, "--type", "process")
        procs.run(PREFECT, "--no-prompt", "deploy", "--all", timeout=180)
        timings["pool_and_deploy_s"] = time.perf_counter() - started
        procs.start("worker", PREFECT, "worker", "start", "--pool", pool, "--limit", "1")
        yield {"http": http, "procs": procs, "spec": spec, "tracking_uri": tracking_uri,
               "timings": timings, "tmp": tmp_path}
    finally:
        http.close()
        procs.stop()
        log.info("deployment test timings: %s", timings)


def api(stack: dict, method: str, path: str, **kwargs: object) -> Any:
    """One REST call, retried on 503 as Prefect's own client does (SQLite busy under load)."""
    for attempt in range(8):
        response = stack["http"].request(method, path, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    assert response.status_code in (200, 201), f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def trigger(stack: dict, deployment_id: str, **parameters: object) -> dict:
    """Create a flow run of the deployment and wait until it ends; the run as the API returns it."""
    procs = stack["procs"]
    run_id = api(stack, "POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})["id"]
    started, deadline = time.perf_counter(), time.monotonic() + 150
    while True:
        run = api(stack, "GET", f"/flow_runs/{run_id}")
        if run["state"]["type"] in TERMINAL:
            break
        assert time.monotonic() < deadline, f"flow run {run_id} still {run['state']['type']}:\n{procs.tail('worker')}"
        time.sleep(0.5)
    runs = sum(key.startswith("flow_run_") for key in stack["timings"])
    stack["timings"][f"flow_run_{runs + 1}_s"] = time.perf_counter() - started
    assert run["state"]["type"] == "COMPLETED", (
        f"flow run ended {run['state']['type']}: {run['state'].get('message')}\n"
        + "\n".join(f"{r['name']}: {r['message']}" for r in logs_of(stack, run_id)[-15:])
        + f"\n--- worker ---\n{procs.tail('worker')}")
    return run


def logs_of(stack: dict, flow_run_id: str) -> list[dict]:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
    return api(stack, "POST", "/logs/filter", json=body)


def logged(stack: dict, flow_run_id: str, wanted: Callable[[list[dict]], bool], within_s: float = 15) -> list[dict]:
    """The run's logs once `wanted(logs)` holds (logs reach the server in batches, after the state)."""
    deadline = time.monotonic() + within_s
    while not wanted(logs := logs_of(stack, flow_run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return logs


def artifacts_of(stack: dict, flow_run_id: str) -> dict[str, str]:
    """The flow run's artifacts by key (a link artifact is stored as markdown `[text](url)`)."""
    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    return {a["key"]: a["data"] for a in api(stack, "POST", "/artifacts/filter", json=body)}


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
    expected = {"pipeline.ingest", "pipeline.train"}
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
