"""`store.tracked_run`, the one owner of a run's lifecycle, against a real (SQLite) MLflow store."""

from __future__ import annotations

import mlflow
import pytest

from pipeline.errors import DataError, TrackingError
from pipeline.tracking import store


def test_a_run_ends_finished_and_complete_with_the_standard_tags(mlflow_store) -> None:
    client = store.get_client()
    exp = store.ensure_experiment(client, "owned")
    with store.tracked_run(client, exp, "r", {"prefect.flow_run_id": "f1"}, data_source="a.csv",
                              config_digest="c1") as run:
        assert client.get_run(run.run_id).info.status == "RUNNING"
        assert store.COMPLETE_TAG not in client.get_run(run.run_id).data.tags
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.data.tags[store.COMPLETE_TAG] == "true"
    tags = done.data.tags
    assert (tags["prefect.flow_run_id"], tags["data_source"], tags["config_digest"]) == ("f1", "a.csv", "c1")
    assert {"git_commit", "git_dirty", "version.mlflow", "version.torch"} <= set(tags)
    assert tags["mlflow.runName"] == "r"


def test_a_failing_run_ends_failed_with_its_report_and_the_error_goes_on(mlflow_store) -> None:
    client = store.get_client()
    exp = store.ensure_experiment(client, "owned")
    with pytest.raises(DataError, match="bad rows"):
        with store.tracked_run(client, exp, "r", {}) as run:
            raise DataError("bad rows", report="row 3: Close is negative")
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED" and store.COMPLETE_TAG not in failed.data.tags
    assert failed.data.tags["failure"] == "row 3: Close is negative"
    assert mlflow.artifacts.load_text(f"runs:/{run.run_id}/failure/report.txt") == "row 3: Close is negative"


def test_only_a_complete_run_counts_as_the_last_finished_one(mlflow_store) -> None:
    """A run FINISHED by someone else (MLflow's fluent `start_run` exit, say) without the tag does not count."""
    client = store.get_client()
    exp = store.ensure_experiment(client, "owned")
    with store.tracked_run(client, exp, "complete", {}, config_digest="c1") as complete:
        pass
    half = store.start_run(client, exp, "half", {"config_digest": "c1"})
    with mlflow.start_run(run_id=half):  # ends it FINISHED on exit, as model logging does
        pass
    assert client.get_run(half).info.status == "FINISHED"
    found = store.last_finished_run(client, exp, {"config_digest": "c1"})
    assert found is not None and found.run_id == complete.run_id and found.tags["config_digest"] == "c1"
    assert store.last_finished_run(client, exp, {"config_digest": "c2"}) is None


def test_runs_are_read_as_plain_records(mlflow_store) -> None:
    client = store.get_client()
    exp = store.ensure_experiment(client, "owned")
    with store.tracked_run(client, exp, "r", {"k": "v"}) as run:
        store.log_metrics(client, run.run_id, {"m": 2.0})
        store.log_text(client, run.run_id, "hello", "notes/a.txt")
    rec = store.get_run(client, run.run_id)
    assert (rec.status, rec.tags["k"], rec.metrics) == ("FINISHED", "v", {"m": 2.0})
    assert store.download_text(client, run.run_id, "notes/a.txt") == "hello"
    with pytest.raises(TrackingError, match="run nope not found in sqlite:///"):
        store.get_run(client, "nope")


def test_runs_left_running_by_a_dead_process_of_this_host_are_ended_failed_by_the_next_command(mlflow_store,
                                                                                                caplog) -> None:
    """A run records its owner (host, pid, start time); opening the experiment ends FAILED the RUNNING runs whose
    owner on this host has died, and leaves alone the live, the remote and the unknown."""
    import dataclasses
    import subprocess
    import sys

    from pipeline.runtime import ProcessOwner

    client = store.get_client()
    exp = store.ensure_experiment(client, "orphans")
    here = ProcessOwner.current()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = dataclasses.replace(here, pid=child.pid, started="1" if here.started else "")
    owners = {"dead": dead.tags(), "live": here.tags(), "remote": dataclasses.replace(dead, host="elsewhere").tags(),
              "unknown": {}}
    ids = {name: store.start_run(client, exp, name, tags) for name, tags in owners.items()}
    with store.tracked_run(client, exp, "mine", {}) as run:  # a run started the usual way records its owner
        assert ProcessOwner.from_tags(client.get_run(run.run_id).data.tags) == here

    with caplog.at_level("WARNING", logger="pipeline.tracking.store"):
        assert store.open_experiment(client, "orphans") == exp
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead": "FAILED", "live": "RUNNING", "remote": "RUNNING", "unknown": "RUNNING"}
    tags = client.get_run(ids["dead"]).data.tags
    assert tags[store.ORPHANED_TAG] and f"its process {dead.label} ended without ending it" in tags["failure"]
    (line,) = [r.getMessage() for r in caplog.records if "left RUNNING" in r.getMessage()]
    assert line.startswith("marked 1 run(s) FAILED") and ids["dead"] in line and "\n" not in line
    assert store.fail_orphaned_runs(client, exp) == []  # once
