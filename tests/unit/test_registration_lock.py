"""registration_lock: registrations of one model take turns across processes sharing a tracking server."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST

from pipeline.errors import RegistryError
from pipeline.runtime import ProcessOwner
from pipeline.tracking import registry


class ServerRegistry:
    """Registered models by unique name, as every MLflow store keeps them (create is atomic)."""

    tracking_uri = "http://tracking:5000"

    def __init__(self) -> None:
        self.models: dict[str, float] = {}
        self.tags: dict[str, dict] = {}
        self.guard = threading.Lock()

    def create_registered_model(self, name: str, description: str = "", tags: dict | None = None) -> None:
        with self.guard:
            if name in self.models:
                raise MlflowException(f"{name} already exists", error_code=RESOURCE_ALREADY_EXISTS)
            self.models[name] = time.time() * 1000
            self.tags[name] = dict(tags or {})

    def get_registered_model(self, name: str) -> SimpleNamespace:
        with self.guard:
            if name not in self.models:
                raise MlflowException(f"{name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
            return SimpleNamespace(name=name, creation_timestamp=self.models[name], tags=self.tags.get(name, {}))

    def delete_registered_model(self, name: str) -> None:
        with self.guard:
            if self.models.pop(name, None) is None:
                raise MlflowException(f"{name} not found", error_code=RESOURCE_DOES_NOT_EXIST)


def test_holders_never_overlap_and_the_lock_is_gone_after() -> None:
    server, inside, overlaps = ServerRegistry(), [], []

    def register(i: int) -> None:
        with registry.registration_lock(server, "m"):
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(tuple(inside))
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not overlaps
    assert server.models == {}


def test_a_lock_left_by_a_dead_process_is_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerRegistry()
    server.models["m" + registry.LOCK_SUFFIX] = (time.time() - registry.LOCK_STALE_S - 5) * 1000
    with registry.registration_lock(server, "m", wait_s=5):
        assert "m" + registry.LOCK_SUFFIX in server.models  # ours now
    assert server.models == {}


def test_a_live_lock_makes_the_waiter_give_up_with_a_message() -> None:
    server = ServerRegistry()
    server.models["m" + registry.LOCK_SUFFIX] = time.time() * 1000
    with pytest.raises(RegistryError, match="waited .* for the lock 'm.registration-lock'"):
        with registry.registration_lock(server, "m", wait_s=0.1):
            pass


def test_a_local_sqlite_store_takes_no_model_lock() -> None:
    server = ServerRegistry()
    server.tracking_uri = "sqlite:////tmp/x/mlflow.db"
    with registry.registration_lock(server, "m"):
        assert server.models == {}


def test_a_waiting_command_says_at_once_what_it_waits_for_since_when_held_by_whom_and_how_long(caplog) -> None:
    """It used to wait silently (164 s in one report) before saying anything."""
    server = ServerRegistry()
    holder = ProcessOwner.current()  # alive: this very process holds it
    server.create_registered_model("m" + registry.LOCK_SUFFIX, tags={registry.LOCK_HOLDER_TAG: holder.label,
                                                                     **holder.tags()})
    started = time.time()
    with caplog.at_level("WARNING", logger="pipeline.tracking.registry"), pytest.raises(RegistryError, match=holder.label):
        with registry.registration_lock(server, "m", wait_s=2):
            pass
    (line,) = [r.getMessage() for r in caplog.records]  # said once
    assert caplog.records[0].created - started < 1  # at once, not when giving up after 2 s
    assert re.search(rf"waiting for the registration lock 'm.registration-lock' held by {re.escape(holder.label)} "
                     r"since \S+ \(\d+ s ago\); waits up to 2 s, or breaks it in \d+ s", line), line


def test_a_lock_whose_holder_on_this_host_has_ended_is_broken_at_once(caplog) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = dataclasses.replace(ProcessOwner.current(), pid=child.pid, started="1")
    server = ServerRegistry()
    server.create_registered_model("m" + registry.LOCK_SUFFIX, tags={registry.LOCK_HOLDER_TAG: gone.label,
                                                                     **gone.tags()})
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="pipeline.tracking.registry"):
        with registry.registration_lock(server, "m", wait_s=60):
            assert server.tags["m" + registry.LOCK_SUFFIX][registry.LOCK_HOLDER_TAG] != gone.label  # ours now
    assert time.monotonic() - started < 5  # not LOCK_STALE_S
    assert any("breaking the registration lock" in r.getMessage() and "its process has ended" in r.getMessage()
               for r in caplog.records)
