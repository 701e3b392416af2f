"""The commands against a live `mlflow server` (REST), not a SQLite file: the store users deploy.

A real server validates requests that the local SQL store lets through (a version created from a
`models:/m-...` source needs its logged model's id), so train, backtest, predict, promote,
rollback and history each run here as a real process with MLFLOW_TRACKING_URI=http://...
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipeline.tracking import registry
from tests.conftest import ROOT
from tests.integration.processes import free_port, stop_groups, wait_until_ok

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1200)]

BIN = Path(sys.executable).parent  # uvicorn/gunicorn for `mlflow server` come from the environment
MODEL = "served-forecaster"


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """`mlflow server` on a free loopback port (SQLite behind it, artifacts served by it); its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/health", proc, 120, tmp_path / "server.log", what="mlflow server", interval=0.5)
        yield url
    finally:
        stop_groups([proc], timeout=30)
        log.close()


def pipeline(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess:
    """`pipeline ARGS` as its own process against the server and this session's Prefect harness."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": url, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_command_works_against_a_tracking_server(prefect_harness, mlflow_server, tiny_config_dict,
                                                       prices_csv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()

    def config(name: str, **sections: dict) -> str:
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tiny_config_dict.items()}
        raw["registry"] = {"model_name": MODEL}
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    # v1: tolerant of a 2-epoch model against persistence, so it becomes the first champion
    ok(pipeline(["train", "--config", config("first", registry={"model_name": MODEL, "min_gain_over_persistence": -0.9})],
                mlflow_server, work))
    # v2: tolerant of being worse than the champion too, so the gate moves @champion
    second = config("second", train={"seed": 3},
                    registry={"model_name": MODEL, "min_gain_over_persistence": -0.9, "min_gain_over_champion": -0.9})
    out = ok(pipeline(["train", "--config", second], mlflow_server, work))
    assert f"{MODEL} version 2 -> @champion" in out

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert all(v.source.startswith("models:/m-") for v in versions)  # each from its logged model
    assert registry.get_aliases(client, MODEL) == {"champion": "2"}

    out = ok(pipeline(["backtest", "--config", config("bt", tracking={"experiment": "bt"}), "--folds", "2"],
                      mlflow_server, work))
    assert "2 expanding folds as child runs" in out

    forecasts = tmp_path / "forecasts.csv"
    out = ok(pipeline(["predict", "--model", f"models:/{MODEL}@champion", "--data", str(prices_csv),
                       "--out", str(forecasts)], mlflow_server, work))
    assert f"{MODEL} version 2 (@champion)" in out and forecasts.is_file()

    ok(pipeline(["promote", MODEL, "1", "--reason", "v2 misbehaves live"], mlflow_server, work))
    assert registry.get_aliases(client, MODEL) == {"champion": "1"}
    ok(pipeline(["rollback", MODEL, "--reason", "v1 was no better"], mlflow_server, work))
    assert registry.get_aliases(client, MODEL) == {"champion": "2"}

    moves = [(m.from_version, m.to_version, m.kind) for m in registry.read_history(client, MODEL)
             if m.alias == "champion"]
    assert moves == [(None, "1", "gate"), ("1", "2", "gate"), ("2", "1", "manual"), ("1", "2", "rollback")]
    out = ok(pipeline(["history", MODEL], mlflow_server, work))
    assert "why: v2 misbehaves live" in out and "champions in force: v1 -> v2" in out
    # the audit trail lives outside the model page: no history tags on the registered model
    assert not [k for k in client.get_registered_model(MODEL).tags if k.startswith("alias_history.")]
    assert not (work / "mlruns").exists() and not (work / "mlflow.db").exists()  # nothing fell back to local files
