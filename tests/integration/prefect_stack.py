"""A real Prefect stack for integration tests, started as a user would: `prefect server start` on a free loopback
port with a temporary PREFECT_HOME, `prefect work-pool create`, `prefect deploy --all` from the project root (so
prefect.yaml's deployments and their triggers), `prefect worker start`; flow runs land in a temporary MLflow store.
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

import yaml

from tests.conftest import ROOT
from tests.integration.processes import free_port, stop_groups

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
MARKER = "PIPELINE_DEPLOYMENT_TEST"  # set in every process a stack starts, to find leftovers

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def running_stack(tmp_path: Path) -> Iterator[dict]:
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
