"""The performance levers: thread choice, logging cost accounting, the early Prefect server switch."""

from __future__ import annotations

import os

from pipeline import runtime
from pipeline.model.network import LSTMForecaster
from pipeline.tracking.store import EpochLogger


def test_small_steps_train_on_one_thread_whatever_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    model = LSTMForecaster(n_features=5, hidden_size=32, num_layers=2)  # the default config: 13k parameters
    assert runtime.pick_threads(model, batch_rows=64, lookback=30, requested=None) == 1
    assert runtime.pick_threads(model, batch_rows=64, lookback=30, requested=3) == 3


def test_wide_steps_use_every_core_whatever_the_load(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    model = LSTMForecaster(n_features=5, hidden_size=128, num_layers=2)  # 200k parameters
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1), raising=False)
    assert runtime.pick_threads(model, batch_rows=1024, lookback=30, requested=None) == 2
    # A busy machine does not change the choice: the thread count shapes the weights.
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0), raising=False)
    assert runtime.pick_threads(model, batch_rows=1024, lookback=30, requested=None) == 2


class _Client:
    tracking_uri = "memory://"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def log_batch(self, run_id: str, metrics: list, synchronous: bool = True) -> None:
        self.batches.append(len(metrics))


def test_epoch_logger_writes_in_batches_and_counts_its_own_time() -> None:
    client = _Client()
    logger = EpochLogger(client, "run", flush_every=500)
    for epoch in range(300):
        logger(epoch, 1.0 / (epoch + 1), 2.0)
    logger.flush()
    assert client.batches == [500, 100]  # 600 values in two round trips, not 600
    assert 0 < logger.seconds < 5


def test_early_server_defers_to_a_configured_api_or_the_switch(monkeypatch, tmp_path) -> None:
    from flows import early_server

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    for name in ("PREFECT_API_URL", early_server.SWITCH, "PREFECT_PROFILES_PATH", "PREFECT_PROFILE",
                 *early_server.EPHEMERAL_SWITCHES):
        monkeypatch.delenv(name, raising=False)
    assert early_server.wanted()
    monkeypatch.setenv(early_server.SWITCH, "0")
    assert not early_server.wanted() and early_server.start() is None
    monkeypatch.delenv(early_server.SWITCH)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert not early_server.wanted()


def test_early_server_defers_to_a_profile_or_settings_file_naming_a_server(monkeypatch, tmp_path) -> None:
    """`prefect config set PREFECT_API_URL=...` writes the active profile: that server wins."""
    from flows import early_server

    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for name in ("PREFECT_API_URL", early_server.SWITCH, "PREFECT_PROFILES_PATH", "PREFECT_PROFILE",
                 *early_server.EPHEMERAL_SWITCHES):
        monkeypatch.delenv(name, raising=False)
    profiles = home / "profiles.toml"
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n'
                        '[profiles.remote]\nPREFECT_API_URL = "http://10.0.0.1:4200/api"\n')
    assert early_server.wanted()
    monkeypatch.setenv("PREFECT_PROFILE", "remote")
    assert not early_server.wanted()
    monkeypatch.delenv("PREFECT_PROFILE")
    profiles.write_text('active = "off"\n[profiles.off]\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = false\n')
    assert not early_server.wanted()
    profiles.unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert early_server.wanted()
    (tmp_path / "pyproject.toml").write_text('[tool.prefect]\napi.url = "http://10.0.0.1:4200/api"\n')
    assert not early_server.wanted()
    (tmp_path / "pyproject.toml").unlink()
    (tmp_path / ".env").write_text("DATABASE=x\n")
    assert early_server.wanted()
    (tmp_path / ".env").write_text("export PREFECT_API_URL='http://10.0.0.1:4200/api'\n")
    assert not early_server.wanted()


def test_no_early_server_once_prefect_is_imported(monkeypatch, tmp_path) -> None:
    """In a process that already imported Prefect (a test, a notebook) its settings decide: no server."""
    import prefect  # noqa: F401

    from flows import early_server

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    for name in ("PREFECT_API_URL", early_server.SWITCH, "PREFECT_PROFILES_PATH", "PREFECT_PROFILE",
                 *early_server.EPHEMERAL_SWITCHES):
        monkeypatch.delenv(name, raising=False)
    assert early_server.wanted()
    assert early_server.start() is None and "PREFECT_API_URL" not in os.environ


def test_expected_failures_leave_the_console_but_other_errors_stay() -> None:
    """A run whose exception is a PipelineError: its records are dropped, by exc_info and run id."""
    import logging

    from pipeline.cli.main import ExpectedFailures
    from pipeline.errors import DataError

    def record(msg: str, exc: BaseException | None = None, level: int = logging.ERROR, **ids: str) -> logging.LogRecord:
        rec = logging.LogRecord("prefect.task_runs", level, __file__, 1, msg, None,
                                (type(exc), exc, None) if exc else None)
        rec.__dict__.update(ids)
        return rec

    keep = ExpectedFailures().filter
    expected, other = {"flow_run_id": "f1", "task_run_id": "t1"}, {"flow_run_id": "f1", "task_run_id": "t2"}
    assert not keep(record("Task run failed with exception", DataError("bad column 'Close'"), **expected))
    assert not keep(record("Finished in state Failed('... DataError: bad column')", **expected))
    assert keep(record("Finished in state Failed('... KeyError: x')", **other))
    assert keep(record("Task run failed with exception", KeyError("x"), **other))
    assert keep(record("a warning", level=logging.WARNING, **expected))
    assert not keep(record("Encountered exception during execution", DataError("bad"), flow_run_id="f2"))
    assert not keep(record("Finished in state Failed('flow')", flow_run_id="f2"))
    assert keep(record("plain library error"))


def test_start_up_imports_run_without_the_collector_and_stay_out_of_later_passes() -> None:
    import gc

    from pipeline.runtime import imports_without_gc

    frozen = gc.get_freeze_count()
    try:
        with imports_without_gc():
            assert not gc.isenabled()
            made_during_imports = [[i] for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + 1000 and made_during_imports
    finally:
        gc.unfreeze()
