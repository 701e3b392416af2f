"""Integration fixtures: a temporary MLflow store per test, one Prefect test server per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary database and API server for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
