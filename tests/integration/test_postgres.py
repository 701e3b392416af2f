"""Tracking at scale: `mlflow server` on PostgreSQL (what `make tracking-server` starts), many writers.

Eight `pipeline train` processes run at once against one server and one registered model (and a
4-trial sweep at parallelism 2 writes its child runs two at a time): every
run must finish with all its metrics, the versions must be numbered 1..8 without a gap, and the
alias history must be one unbroken chain (no move lost to a concurrent one). Skips with the reason
only where PostgreSQL cannot start (binaries or psycopg2 missing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.processes import free_port, postgres_folder

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.xdist_group("postgres")]  # one server

MODEL = "pg-forecaster"
CONCURRENT = 8


@pytest.fixture(scope="module")
def pg_tracking_uri():
    """PostgreSQL + `mlflow server` from pipeline.tracking.server, in a folder the postgres user can reach."""
    from pipeline.tracking.server import PostgresUnavailable, tracking_server

    with postgres_folder("pipeline-pg-") as folder:
        server = tracking_server(folder, free_port(), free_port(), workers=2)
        try:
            running = server.__enter__()
        except PostgresUnavailable as exc:  # only PostgreSQL itself: an MLflow server that fails fails the test
            pytest.skip(f"PostgreSQL cannot start here: {exc}")
        try:
            yield running.url
        finally:
            server.__exit__(None, None, None)


def test_eight_concurrent_trainings_against_postgres(pg_tracking_uri: str, prefect_harness, tmp_path: Path,
                                                      tiny_config_dict: dict) -> None:
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL

    from pipeline.tracking import registry

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": pg_tracking_uri, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    procs = []
    started = time.perf_counter()
    for i in range(CONCURRENT):
        raw = {**tiny_config_dict, "name": f"pg{i}", "tracking": {"experiment": "pg-concurrent"},
               "registry": {"model_name": MODEL},
               "train": {**tiny_config_dict["train"], "seed": 100 + i}}  # different weights, different scores
        path = tmp_path / f"pg{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        log = (tmp_path / f"train{i}.log").open("w")
        procs.append((subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--config", str(path)],
                                       cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failures = []
    for i, (proc, log) in enumerate(procs):
        code = proc.wait(timeout=1500)
        log.close()
        if code != 0:
            failures.append(f"train {i} exited {code}:\n{(tmp_path / f'train{i}.log').read_text()[-3000:]}")
    elapsed = time.perf_counter() - started
    assert not failures, "\n\n".join(failures)
    print(f"{CONCURRENT} concurrent trainings against PostgreSQL: {elapsed:.1f} s, no errors")

    client = MlflowClient(pg_tracking_uri, registry_uri=pg_tracking_uri)
    experiment = client.get_experiment_by_name("pg-concurrent")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == CONCURRENT
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags.get("pipeline.complete") == "true" for r in runs)
    keys = [set(r.data.metrics) for r in runs]
    assert all(k == keys[0] for k in keys), "runs logged different metrics"
    assert {"test_rmse", "test_naive_rmse", "val_rmse", "time_train_s"} <= keys[0]
    assert all(r.data.params.get("train.seed") for r in runs)

    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, CONCURRENT + 1))
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}

    # No lost alias move: per alias, each move starts where the previous one ended, and the alias
    # points where the last move left it.
    aliases = client.get_registered_model(MODEL).aliases
    history = registry.read_history(client, MODEL)
    for alias in {m.alias for m in history}:
        chain = [m for m in history if m.alias == alias]
        for before, after in zip(chain, chain[1:]):
            assert after.from_version == before.to_version, f"@{alias}: a move was lost between {before} and {after}"
        assert aliases.get(alias) == chain[-1].to_version


def test_a_four_trial_sweep_at_parallelism_two_against_postgres(pg_tracking_uri: str, prefect_harness,
                                                                 tmp_path: Path, tiny_config_dict: dict) -> None:
    """Two trials write child runs at once through the server: one parent, four complete children, a registered winner."""
    from prefect.settings import PREFECT_API_URL

    from tests.integration.sweep_support import check_sweep, write_sweep_files

    config, space = write_sweep_files(tmp_path, {**tiny_config_dict, "tracking": {"experiment": "pg-sweep"}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": pg_tracking_uri, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "sweep", "--space", space, "--config", config,
                           "--parallel", "2", "--model-name", "pg-swept"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"4-trial sweep at parallelism 2 against PostgreSQL: {time.perf_counter() - started:.1f} s")
    check_sweep(pg_tracking_uri, "pg-swept", experiment="pg-sweep")
