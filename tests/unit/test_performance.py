"""The performance levers: thread choice, logging cost accounting, the early Prefect server switch."""

from __future__ import annotations

import os

from pipeline import train
from pipeline.model import LSTMForecaster
from pipeline.tracking import EpochLogger


def test_small_steps_train_on_one_thread_whatever_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    model = LSTMForecaster(n_features=5, hidden_size=32, num_layers=2)  # the default config: 13k parameters
    assert train.pick_threads(model, batch_rows=64, lookback=30, requested=None) == 1
    assert train.pick_threads(model, batch_rows=64, lookback=30, requested=3) == 3


def test_wide_steps_use_every_core_whatever_the_load(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    model = LSTMForecaster(n_features=5, hidden_size=128, num_layers=2)  # 200k parameters
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1), raising=False)
    assert train.pick_threads(model, batch_rows=1024, lookback=30, requested=None) == 2
    # A busy machine does not change the choice: the thread count shapes the weights.
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0), raising=False)
    assert train.pick_threads(model, batch_rows=1024, lookback=30, requested=None) == 2


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


def test_early_server_defers_to_a_configured_api_or_the_switch(monkeypatch) -> None:
    from flows import early_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(early_server.SWITCH, raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_ENABLED", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", raising=False)
    assert early_server.wanted()
    monkeypatch.setenv(early_server.SWITCH, "0")
    assert not early_server.wanted() and early_server.start() is None
    monkeypatch.delenv(early_server.SWITCH)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert not early_server.wanted()


def test_start_up_imports_run_without_the_collector_and_stay_out_of_later_passes() -> None:
    import gc

    from pipeline.cli import imports_without_gc

    frozen = gc.get_freeze_count()
    try:
        with imports_without_gc():
            assert not gc.isenabled()
            made_during_imports = [[i] for i in range(1000)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + 1000 and made_during_imports
    finally:
        gc.unfreeze()


def test_model_logging_skips_only_mlflows_redundant_requirements_check() -> None:
    import mlflow.pyfunc
    import mlflow.utils.environment

    from pipeline.tracking import pins_taken_as_given

    name = "warn_dependency_requirement_mismatches"
    originals = [getattr(m, name) for m in (mlflow.utils.environment, mlflow.pyfunc)]
    with pins_taken_as_given():
        for module, original in zip((mlflow.utils.environment, mlflow.pyfunc), originals):
            assert getattr(module, name) is not original
            assert getattr(module, name)(["torch==0.0.1"]) is None
    assert [getattr(m, name) for m in (mlflow.utils.environment, mlflow.pyfunc)] == originals
