"""The tracking retry policy: bounded attempts with backoff, then an error naming the URI."""

from __future__ import annotations

import socket
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.errors import TrackingError
from pipeline.tracking import store


def test_transient_errors_are_retried_with_doubling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert store.retry(flaky, "log params", "sqlite:///x.db", attempts=4, base_delay=0.5) == "ok"
    assert sleeps == [0.5, 1.0]


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("slept"))

    def refused() -> None:
        raise MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(TrackingError, match=r"MLflow tracking at sqlite:///x.db: log params failed after 1 attempt"):
        store.retry(refused, "log params", "sqlite:///x.db")


def test_the_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.ATTEMPTS_ENV, "2")
    monkeypatch.setenv(store.BACKOFF_ENV, "0.01")
    assert store.retry_policy() == (2, 0.01)
    monkeypatch.setenv(store.ATTEMPTS_ENV, "many")
    assert store.retry_policy() == (store.DEFAULT_ATTEMPTS, store.DEFAULT_BACKOFF_S)


def test_a_dead_server_is_named_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv(store.ATTEMPTS_ENV, "3")
    monkeypatch.setenv(store.BACKOFF_ENV, "0.05")
    client = MlflowClient(uri)
    started = time.monotonic()
    with pytest.raises(TrackingError) as info:
        store.retry(lambda: client.get_experiment_by_name("x"), "get experiment", uri)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert message.startswith(f"MLflow tracking at {uri}: get experiment failed after 3 attempt(s)")
    assert "cannot reach the tracking server" in message and "MLFLOW_TRACKING_URI" in message


def test_http_retries_are_bounded_unless_the_user_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "99")
    store.bound_http_retries()
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "99"


def test_an_unlogged_model_is_kept_with_instructions(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Bundle:
        def save(self, path):
            path.mkdir()
            (path / "weights.pt").write_bytes(b"weights")
            return path

    monkeypatch.chdir(tmp_path)
    path = store.save_unlogged(Bundle(), "run123", "MLflow tracking at http://x: log model failed", {"test_rmse": 1.5})
    assert path == (tmp_path / "mlruns" / "unlogged" / "run123" / "forecaster").resolve()
    readme = (path.parent / "README.txt").read_text()
    assert "ForecastBundle.load" in readme and "log model failed" in readme and "test_rmse: 1.5" in readme


def test_default_store_is_the_one_mlflow_s_own_tools_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the pipeline and MLflow itself (`mlflow ui`, `load_model`) open the same ./mlflow.db."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    try:
        theirs = mlflow.get_tracking_uri()
    finally:
        mlflow.set_tracking_uri(None)
    ours = store.resolve_tracking_uri()
    assert ours == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert theirs.removeprefix("sqlite:///") in (str(tmp_path / "mlflow.db"), "mlflow.db")


class RacingClient:
    """A client where another process creates the experiment between our read and our create."""

    tracking_uri = "http://tracking:5000"

    def __init__(self) -> None:
        self.created: dict[str, str] = {}

    def get_experiment_by_name(self, name: str):
        if name not in self.created:
            return None
        return type("Experiment", (), {"experiment_id": self.created[name], "lifecycle_stage": "active"})()

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

        self.created[name] = "17"  # the other process won
        raise MlflowException(f"Experiment(name={name}) already exists", error_code=RESOURCE_ALREADY_EXISTS)


def test_an_experiment_created_concurrently_by_another_process_is_used() -> None:
    assert store.ensure_experiment(RacingClient(), "pg-concurrent") == "17"


def test_a_failed_create_with_no_experiment_after_it_still_fails() -> None:
    client = RacingClient()
    client.create_experiment = lambda name, artifact_location=None: (_ for _ in ()).throw(
        MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE))
    with pytest.raises(TrackingError, match="create experiment failed"):
        store.ensure_experiment(client, "x")
