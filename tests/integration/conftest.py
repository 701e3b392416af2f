"""Integration fixtures: a temporary MLflow store per test, one Prefect test server per session (per pytest-xdist
worker), one real Prefect stack for the tests that run deployments."""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import make_prices, tiny_config_raw

# Two epochs make no forecaster: the gate tolerates a model up to 50 % worse than persistence, so the flow's tests
# get a champion (the gate itself is tested in test_registry_gate.py).
TOLERANT = {"min_gain_over_persistence": -0.5}


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary database and API server for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory):
    """A real Prefect stack (server, pool, prefect.yaml's deployments, a worker, an MLflow store) shared by the
    modules that need one (their tests are marked xdist_group("prefect-stack"), so one worker starts it)."""
    from tests.integration.prefect_stack import running_stack

    with running_stack(tmp_path_factory.mktemp("prefect-stack")) as stack:
        yield stack


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh SQLite tracking store with artifacts under tmp_path; the working dir moves there too.

    MLflow's process-wide tracking and registry URIs point at it for the test and are cleared
    after, so no test reads another test's registry through `MlflowClient(uri)`.
    """
    import mlflow

    store = tmp_path / "mlruns"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@dataclass(frozen=True)
class TinyRun:
    """The tiny config trained once through the training flow: its store (`uri`, in `folder` with the data file
    and the config) and what the flow returned."""

    folder: Path
    uri: str
    config: Path
    summary: Any  # pipeline.runs.TrainingSummary

    @property
    def data(self) -> Path:
        return self.folder / "prices.csv"


@pytest.fixture(scope="session")
def tiny_run_snapshot(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyRun, Path]:
    """The tiny config (tests/conftest.py, the gate TOLERANT) trained once per session (per pytest-xdist worker) in
    a folder of its own, and a copy of that folder as the training left it. Every path the store records points
    into the folder, so putting the copy back there restores the store exactly (`tiny_run`)."""
    import mlflow

    from flows.training import training_flow

    base = tmp_path_factory.mktemp("tiny-run")
    folder = base / "store"
    (folder / "mlruns").mkdir(parents=True)
    make_prices().to_csv(folder / "prices.csv", index=False)
    config = folder / "tiny.yaml"
    raw = tiny_config_raw(str(folder / "prices.csv"))
    config.write_text(yaml.safe_dump({**raw, "registry": {**raw["registry"], **TOLERANT}}))
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        patch.chdir(folder)
        try:
            summary = training_flow(config_path=str(config))
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    shutil.copytree(folder, base / "snapshot")
    return TinyRun(folder, uri, config, summary), base / "snapshot"


@pytest.fixture
def tiny_run(tiny_run_snapshot: tuple[TinyRun, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The session's trained tiny run, its store restored to what the training left (whatever an earlier test
    added), for a test that reads it or adds to it: like `mlflow_store`, MLflow's URIs point at that store and the
    working directory is tmp_path. The database is restored through SQLite's backup API, in place: MLflow keeps
    its connections to a store open for the whole process."""
    import mlflow

    run, snapshot = tiny_run_snapshot
    database = Path(run.uri.removeprefix("sqlite:///"))
    for entry in run.folder.rglob("*"):
        if entry.is_file() and entry != database:
            entry.unlink()
    shutil.copytree(snapshot, run.folder, dirs_exist_ok=True, ignore=lambda _, names: [
        name for name in names if name == database.name])
    with closing(sqlite3.connect(snapshot / database.relative_to(run.folder))) as source, \
            closing(sqlite3.connect(database)) as live:
        source.backup(live)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", run.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(run.uri)
    mlflow.set_registry_uri(run.uri)
    yield run
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def write_config(tmp_path: Path, tiny_config_dict: dict):
    """Write a config dict (with optional overrides per section) to a YAML file; return its path."""
    import yaml

    def _write(name: str = "tiny.yaml", **sections: dict) -> str:
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tiny_config_dict.items()}
        for section, values in sections.items():
            raw[section] = {**raw.get(section, {}), **values}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    return _write


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
