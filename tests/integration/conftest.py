"""Integration fixtures: a temporary MLflow store per test, one Prefect test server per session (per pytest-xdist
worker), one real Prefect stack for the tests that run deployments."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
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


def point_mlflow_at(uri: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's tracking and registry URIs (process-wide and in the environment) on `uri`; the working dir `workdir`.
    `forget_mlflow_uris` clears them after the test, so no test reads another test's registry through
    `MlflowClient(uri)`."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(workdir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def forget_mlflow_uris() -> None:
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh SQLite tracking store with artifacts under tmp_path; the working dir moves there too."""
    store = tmp_path / "mlruns"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    point_mlflow_at(uri, tmp_path, monkeypatch)
    yield uri
    forget_mlflow_uris()


@dataclass(frozen=True)
class SavedStore:
    """A local MLflow store built once per session (per pytest-xdist worker) in a folder of its own, and a copy of
    that folder as it was built. Every path the store records points into the folder, so putting the copy back
    there restores the store exactly, for a test that reads it or adds to it. The SQLite database is restored
    in place through SQLite's backup API: MLflow keeps its connections to a store open for the whole process."""

    folder: Path
    uri: str
    copy: Path

    @classmethod
    def build(cls, base: Path, fill: Callable[[Path, str], Any]) -> tuple[SavedStore, Any]:
        """`fill(folder, uri)` writes the store (MLflow's URIs and the working dir on it meanwhile); what it
        returns comes back beside the saved store."""
        folder = base / "store"
        (folder / "mlruns").mkdir(parents=True)
        uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
        with pytest.MonkeyPatch.context() as patch:
            point_mlflow_at(uri, folder, patch)
            try:
                made = fill(folder, uri)
            finally:
                forget_mlflow_uris()
        shutil.copytree(folder, base / "saved")
        return cls(folder, uri, base / "saved"), made

    @property
    def database(self) -> Path:
        return Path(self.uri.removeprefix("sqlite:///"))

    def restore(self) -> None:
        for entry in self.folder.rglob("*"):
            if entry.is_file() and entry != self.database:
                entry.unlink()
        shutil.copytree(self.copy, self.folder, dirs_exist_ok=True,
                        ignore=lambda _, names: [name for name in names if name == self.database.name])
        with closing(sqlite3.connect(self.copy / self.database.relative_to(self.folder))) as saved, \
                closing(sqlite3.connect(self.database)) as live:
            saved.backup(live)


@pytest.fixture
def restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`restored(saved)`: the saved store put back as it was built, MLflow's URIs on it (as `mlflow_store` does; the
    working dir is tmp_path); its URI."""
    def restore(saved: SavedStore) -> str:
        saved.restore()
        point_mlflow_at(saved.uri, tmp_path, monkeypatch)
        return saved.uri

    yield restore
    forget_mlflow_uris()


@dataclass(frozen=True)
class TinyRun:
    """The tiny config trained once through the training flow: its store (`uri`, in `folder` with the data file
    and the config) and what the flow returned."""

    folder: Path
    uri: str
    config: Path
    summary: Any  # pipeline.tracking.training_run.TrainingSummary

    @property
    def data(self) -> Path:
        return self.folder / "prices.csv"


@pytest.fixture(scope="session")
def tiny_run_saved(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> tuple[SavedStore, TinyRun]:
    """The tiny config (tests/conftest.py, the gate TOLERANT) trained once per session through the training flow."""
    from flows.training import training_flow

    def train(folder: Path, uri: str) -> TinyRun:
        make_prices().to_csv(folder / "prices.csv", index=False)
        config = folder / "tiny.yaml"
        raw = tiny_config_raw(str(folder / "prices.csv"))
        config.write_text(yaml.safe_dump({**raw, "registry": {**raw["registry"], **TOLERANT}}))
        return TinyRun(folder, uri, config, training_flow(config_path=str(config)))

    return SavedStore.build(tmp_path_factory.mktemp("tiny-run"), train)


@pytest.fixture
def tiny_run(tiny_run_saved: tuple[SavedStore, TinyRun], restored) -> TinyRun:
    """The session's trained tiny run, its store as the training left it (whatever an earlier test added)."""
    saved, run = tiny_run_saved
    restored(saved)
    return run


@pytest.fixture(scope="session")
def planted_champion_saved(tmp_path_factory: pytest.TempPathFactory):
    """v1 of `planted`, @champion (forecasts +1 % a day on a series growing 1 % a day), built once per session."""
    from tests.integration import registry_support as rs

    def plant(folder: Path, uri: str):
        client = rs.client_for(uri)
        cfg = rs.config()
        data = rs.trend(growth=0.01)
        planted = rs.plant(data, cfg, 0.01)
        decision = rs.register(client, planted, rs.window_of(planted.frame, cfg), planted.frame)
        assert decision.alias == "champion", decision.reason
        return data

    return SavedStore.build(tmp_path_factory.mktemp("planted-champion"), plant)


@pytest.fixture(scope="session")
def three_versions_saved(tmp_path_factory: pytest.TempPathFactory) -> SavedStore:
    """v1 champion (gate), v2 refused (stays @challenger), v3 champion (gate) of `planted`, built once per session."""
    from pipeline.tracking.registry import get_aliases
    from tests.integration import registry_support as rs

    def plant(folder: Path, uri: str) -> None:
        client, cfg, data, frame, win = rs.trend_scene(uri)
        for output in (0.005, 0.03, 0.01):
            rs.register(client, rs.plant(data, cfg, output), win, frame)
        assert get_aliases(client, "planted") == {"champion": "3"}

    return SavedStore.build(tmp_path_factory.mktemp("three-versions"), plant)[0]


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
