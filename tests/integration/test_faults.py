"""Faults: divergence, a process killed mid-training or at any stage, an unreachable tracking server,
two runs at once.

Each leaves the registry as it was (or, for concurrent runs, both complete), says clearly what
happened, and loses nothing silently. Every test is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from pipeline import runtime
from pipeline.cli.main import main
from pipeline.tracking import store
from tests.conftest import ROOT, make_prices
from tests.integration.processes import alive, descendants
from tests.integration.registry_support import closed_port, registry_state

pytestmark = pytest.mark.timeout(420)

MODEL = "tiny-forecaster"


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a real `pipeline` process that talks to this session's Prefect harness."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # mlflow.set_*_uri() in this process exports them
        env.pop(key, None)
    return {**env, **extra}


@pytest.fixture
def champion(tiny_run) -> MlflowClient:
    """A store that already holds a registered version 1 with an alias (the session's tiny run, conftest.py)."""
    client = MlflowClient(tiny_run.uri, registry_uri=tiny_run.uri)
    versions, aliases = registry_state(client)[MODEL]
    assert [v for v, _ in versions] == ["1"] and set(aliases.values()) == {"1"}  # champion, or challenger by the gate
    return client


def test_divergence_stops_with_a_clear_error_and_logs_no_model(champion, write_config, capsys) -> None:
    before = registry_state(champion)
    config = write_config("diverge.yaml", train={"learning_rate": 1e30, "grad_clip": None, "epochs": 20},
                          tracking={"experiment": "diverge"})
    capsys.readouterr()
    code = main(["train", "--config", config])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: training diverged at epoch") and "learning_rate" in err
    assert "Traceback" not in err
    (run,) = runs_of(champion, "diverge")
    assert run.info.status == "FAILED"
    assert "diverged" in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/failure/report.txt")
    assert champion.search_logged_models(experiment_ids=[run.info.experiment_id]) == []
    epoch = int(re.search(r"diverged at epoch (\d+)", err).group(1))
    assert len(champion.get_metric_history(run.info.run_id, "train_loss")) == epoch - 1  # the losses before it
    assert registry_state(champion) == before


@pytest.mark.slow
def test_a_run_killed_mid_training_moves_nothing_and_the_next_run_works(champion, write_config, tmp_path) -> None:
    before = registry_state(champion)
    config = write_config("long.yaml", train={"epochs": 100_000, "patience": None}, tracking={"experiment": "killed"})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--config", config], cwd=tmp_path,
                            env=subprocess_env(MLFLOW_TRACKING_URI=champion.tracking_uri),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:  # losses reach MLflow every 250 epochs: training is under way
            runs = runs_of(champion, "killed")
            if runs and champion.get_metric_history(runs[0].info.run_id, "train_loss"):
                break
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

    assert registry_state(champion) == before
    assert champion.search_logged_models(experiment_ids=[runs[0].info.experiment_id]) == []
    assert runs_of(champion, "killed")[0].info.status == "RUNNING"  # nobody was left to mark it

    next_config = write_config("next.yaml", train={"seed": 3}, tracking={"experiment": "killed"})
    assert main(["train", "--config", next_config]) == 0
    after = registry_state(champion)[MODEL]
    assert [v for v, _ in after[0]] == ["1", "2"]


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(prefect_harness, write_config, tmp_path,
                                                                  monkeypatch, capsys) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(store.ATTEMPTS_ENV, "3")
    monkeypatch.setenv(store.BACKOFF_ENV, "0.2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    started = time.monotonic()
    code = main(["train", "--config", write_config()])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: MLflow tracking at {uri}: get experiment failed after 3 attempt(s)")
    assert "cannot reach the tracking server" in err and "MLFLOW_TRACKING_URI" in err
    assert "Traceback" not in err
    assert elapsed < 60  # 0.2 + 0.4 s of backoff plus the flow's start


def test_tracking_lost_after_training_keeps_the_model_and_says_where(champion, write_config, monkeypatch, capsys,
                                                                     tmp_path) -> None:
    """The server goes away between training and logging the model: the error says where the weights are."""
    from pipeline.serving.forecast import ForecastModel

    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(store.ATTEMPTS_ENV, "2")
    monkeypatch.setenv(store.BACKOFF_ENV, "0.1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def log_model_to_a_dead_server(run_id, bundle, input_example, uri):
        client = MlflowClient(dead)
        return store.retry(lambda: client.get_run(run_id), "log model", dead)

    monkeypatch.setattr(store, "log_model", log_model_to_a_dead_server)
    before = registry_state(champion)
    capsys.readouterr()
    code = main(["train", "--config", write_config("lost.yaml", tracking={"experiment": "lost"})])
    err = capsys.readouterr().err

    assert code == 1 and f"MLflow tracking at {dead}: log model failed" in err
    (run,) = runs_of(champion, "lost")
    saved = Path(err.split("it is saved at ")[1].split(" (README")[0])
    assert saved == (tmp_path / "mlruns" / "unlogged" / run.info.run_id / "forecaster").resolve()
    assert "ForecastBundle.load" in (saved.parent / "README.txt").read_text()
    model = ForecastModel()
    model.load(saved)  # the trained weights, scalers and config, usable as they are
    assert len(model.forecast(make_prices(80))) == 1
    assert run.info.status == "FAILED" and "saved at" in run.data.tags["failure"] + mlflow.artifacts.load_text(
        f"runs:/{run.info.run_id}/failure/report.txt")
    assert registry_state(champion) == before


@pytest.mark.slow
def test_two_runs_at_once_on_the_default_local_store_both_complete(prefect_harness, tmp_path) -> None:
    """Two real processes, one fresh default store (./mlflow.db): both finish with everything logged."""
    make_prices(80).to_csv(tmp_path / "prices.csv", index=False)
    configs = []
    for seed in (1, 2):
        path = tmp_path / f"run{seed}.yaml"
        path.write_text(yaml.safe_dump({
            "name": f"run{seed}", "data": {"source": "prices.csv"}, "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            "window": {"lookback": 5}, "model": {"hidden_size": 8, "num_layers": 1},
            "train": {"epochs": 3, "batch_size": 16, "patience": 5, "seed": seed},
            "tracking": {"experiment": "together"}, "registry": {"model_name": MODEL}}))
        configs.append(path)
    env = subprocess_env()
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--config", str(c)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
    outputs = []
    try:
        for proc in procs:
            outputs.append((proc.wait(timeout=300), *proc.communicate()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - started
    for code, out, err in outputs:
        assert code == 0, err
        assert "database is locked" not in out + err

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default store, seen from here
    client = MlflowClient(store, registry_uri=store)  # not the registry an earlier test set for this process
    runs = runs_of(client, "together")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert run.data.params["window.lookback"] == "5"
        assert {"test_rmse", "test_naive_rmse", "time_train_s"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 3
    versions, aliases = registry_state(client)[MODEL]
    assert sorted(run_id for _, run_id in versions) == sorted(r.info.run_id for r in runs)
    assert {r.data.tags["registered_version"] for r in runs} == {"1", "2"} and aliases
    print(f"two concurrent runs finished in {elapsed:.1f}s")


@pytest.mark.slow
@pytest.mark.parametrize("stage", runtime.STAGES)
def test_a_run_killed_at_any_stage_is_not_done_and_the_next_run_trains_again(stage, prefect_harness, mlflow_store,
                                                                             write_config, tmp_path, capsys) -> None:
    """`kill -9` at each stage boundary (PIPELINE_KILL_AT, see pipeline.runtime): the run stays RUNNING and
    never counts as done, a version it registered is complete or not @champion, and the next unforced
    run trains and registers again rather than saying "Nothing to do"."""
    config = write_config("kill.yaml", tracking={"experiment": "kill"})
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config", config], cwd=tmp_path,
                          env=subprocess_env(MLFLOW_TRACKING_URI=mlflow_store, **{runtime.KILL_ENV: stage}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    client = MlflowClient(mlflow_store, registry_uri=mlflow_store)
    (killed,) = runs_of(client, "kill")
    assert killed.info.status == "RUNNING" and store.COMPLETE_TAG not in killed.data.tags
    assert "registered_version" not in killed.data.tags
    versions, aliases = registry_state(client).get(MODEL, ([], {}))
    if stage in ("training", "model-logging"):
        assert versions == []
    elif stage == "registration":  # the version exists, nothing points at it
        assert versions == [("1", killed.info.run_id)] and aliases == {}
    else:  # after the gate's alias moves: the version is complete (tags, description, the gate's alias)
        assert versions == [("1", killed.info.run_id)] and aliases in ({"champion": "1"}, {"challenger": "1"})
        mv = client.get_model_version(MODEL, "1")
        assert mv.description and mv.tags["data_digest"] == killed.data.tags["data_digest"]

    capsys.readouterr()
    assert main(["train", "--config", config]) == 0
    assert "Nothing to do" not in capsys.readouterr().out
    (done,) = [r for r in runs_of(client, "kill") if r.info.run_id != killed.info.run_id]
    assert done.info.status == "FINISHED" and done.data.tags[store.COMPLETE_TAG] == "true"
    assert done.data.tags["registered_version"] == str(len(versions) + 1)
    assert main(["train", "--config", config]) == 0  # and now there is nothing to do
    assert capsys.readouterr().out.startswith(f"Nothing to do: The data digest {done.data.tags['data_digest']}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_a_parallel_sweep_leaves_no_worker_and_the_next_command_fails_its_runs(prefect_harness, mlflow_store,
                                                                                         write_config, tmp_path) -> None:
    """`kill -9` of `pipeline sweep --parallel 2`: its worker processes and multiprocessing's resource tracker die
    with it within seconds (they used to train on for good), and the next command ends FAILED the parent run and
    the trials it left RUNNING, saying so in one line."""
    config = write_config("sweep-kill.yaml", train={"epochs": 100_000, "patience": None},
                          tracking={"experiment": "sweep-kill"})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"trials": 4, "seed": 1, "params": {
        "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    env = subprocess_env(MLFLOW_TRACKING_URI=mlflow_store)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sweep", "--space", str(space), "--config", config,
                             "--parallel", "2"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    client = MlflowClient(mlflow_store, registry_uri=mlflow_store)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len([r for r in runs_of(client, "sweep-kill") if r.data.tags.get("run_type") == "sweep-trial"]) < 2:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "two trials never started"
            time.sleep(0.5)
        tree = descendants(proc.pid)  # the two workers and the resource tracker
        assert len(tree) >= 3, tree
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in tree):
            time.sleep(0.1)
        survivors = [p for p in tree if alive(p)]
        assert not survivors, f"processes outlived the killed sweep: {survivors}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in tree:  # never leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.stderr.close()

    left = runs_of(client, "sweep-kill")
    assert len(left) == 3 and {r.info.status for r in left} == {"RUNNING"}  # the parent and two trials
    nxt = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config",
                          write_config("after.yaml", tracking={"experiment": "sweep-kill"})],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert nxt.returncode == 0, nxt.stderr
    (line,) = [ln for ln in nxt.stderr.splitlines() if "left RUNNING when it died" in ln]
    assert "marked 3 run(s) FAILED" in line and all(r.info.run_id in line for r in left)
    for run in left:
        ended = client.get_run(run.info.run_id)
        assert ended.info.status == "FAILED", ended.data.tags.get("run_type")
        assert "ended without ending it" in ended.data.tags["failure"]


@pytest.mark.slow
def test_tracking_lost_during_registration_says_what_was_done_and_the_next_run_repairs_it(champion, write_config,
                                                                                         capsys, caplog) -> None:
    """The server goes away after the version is created and @challenger moved, and stays away while the
    registration tries to undo itself: the error says what was done and what is left (not "saved at
    mlruns/unlogged": the model was logged), and the next registration takes the alias back and flags the version."""
    from mlflow.exceptions import MlflowException

    from pipeline.errors import TrackingError
    from pipeline.tracking import registry

    before_versions, before_aliases = registry_state(champion)[MODEL]
    config = write_config("lost-registration.yaml", tracking={"experiment": "lost-registration"})

    def refused(*args, **kwargs):
        raise MlflowException("HTTPConnectionPool(host='tracking'): Max retries exceeded (Connection refused)")

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        def server_gone(*args, **kwargs):  # from the first alias move's record on, every write is refused
            for method in ("delete_model_version", "delete_registered_model_alias", "set_registered_model_alias"):
                patch.setattr(MlflowClient, method, refused)
            raise TrackingError("MLflow tracking at http://tracking: record alias move failed after 2 attempt(s) in "
                                "0.2s: cannot reach the tracking server")

        patch.setattr(registry, "record_move", server_gone)
        code = main(["train", "--config", config])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"registration of '{MODEL}' did not complete (MLflow tracking at http://tracking: record alias move" in err
    assert "Done before the failure: logged the model (models:/" in err and "registered it as version 2" in err
    assert "Not undone (version 2 could not be deleted" in err and "aliases on it now: @challenger" in err
    assert "The next registration" in err
    assert "saved at" not in err and "was logged to MLflow before the failure" in err
    (failed,) = runs_of(champion, "lost-registration")
    versions, aliases = registry_state(champion)[MODEL]
    assert [v for v, _ in versions] == ["1", "2"] and aliases.get("challenger") == "2"  # left as the server left it

    with caplog.at_level("WARNING", logger="pipeline.tracking.registry"):
        assert main(["train", "--config", config, "--force"]) == 0
    assert any("repaired what an incomplete registration left: @challenger: v2 ->" in r.getMessage()
               for r in caplog.records)
    versions, aliases = registry_state(champion)[MODEL]
    assert [v for v, _ in versions] == ["1", "2", "3"] and "2" not in aliases.values()
    assert set(aliases.values()) <= {"1", "3"} and before_aliases.get("champion") in (aliases.get("champion"), None)
    tags = champion.get_model_version(MODEL, "2").tags
    assert registry.COMPLETE_VERSION_TAG not in tags and failed.info.run_id in tags[registry.INCOMPLETE_VERSION_TAG]
    assert champion.get_model_version(MODEL, "3").tags[registry.COMPLETE_VERSION_TAG] == "true"
