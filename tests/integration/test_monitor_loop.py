"""The closed loop on a real Prefect server with a worker, no hand in between: a champion forecasts, the actuals
arrive, `pipeline monitor` scores them; when nothing changed nothing happens; when two series shift level by 30 %
the monitor emits its event, prefect.yaml's trigger starts the retraining deployment, the worker retrains and a
new version is registered."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml

from pipeline.tracking import registry
from tests.conftest import long_config_dict, make_long
from tests.integration import registry_support as rs
from tests.integration.prefect_stack import BIN, api

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("prefect-stack")]

PIPELINE = str(BIN / "pipeline")
MODEL = "panel-forecaster"


@pytest.fixture(scope="module")
def loop(prefect_stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The session's stack (conftest.py), a panel whose champion forecast the next 4 hours of its 4 series, and the arrived actuals:
    `steady.csv` as the pattern went on, `shifted.csv` with series A and B 30 % higher after the training end."""
    tmp = tmp_path_factory.mktemp("loop")
    full = make_long("ABCD", n=72, seed=3)
    full.groupby("id").head(56).to_csv(tmp / "history.csv", index=False)
    full.groupby("id").head(64).to_csv(tmp / "steady.csv", index=False)
    shifted = full.groupby("id").head(64).copy()
    late = (shifted.groupby("id").cumcount() >= 56) & shifted["id"].isin(["A", "B"])
    shifted.loc[late, "y"] = (shifted.loc[late, "y"].astype(float) * 1.3).map("{:.4f}".format)
    shifted.to_csv(tmp / "shifted.csv", index=False)
    raw = long_config_dict(str(tmp / "history.csv"), registry={"min_gain_over_persistence": -0.99},
                           split={"val": 16, "test": 4},
                           monitoring={"max_mase_ratio": 2.0, "coverage_tolerance": None, "min_points": 4})
    config = tmp / "panel.yaml"
    config.write_text(yaml.safe_dump(raw))
    stack = prefect_stack
    procs = stack["procs"]
    procs.run(PIPELINE, "train", "--config", str(config), timeout=300)
    client = rs.client_for(stack["tracking_uri"])
    if registry.get_aliases(client, MODEL).get("champion") != "1":  # a 3-epoch model may lose the gate
        registry.promote(client, MODEL, "1", "the loop test's champion", by="tests")
    procs.run(PIPELINE, "predict", "--model", f"models:/{MODEL}@champion", "--data", str(tmp / "history.csv"),
              "--out", str(tmp / "forecasts.csv"), timeout=300)
    yield {**stack, "client": client, "config": str(config), "tmp": tmp}


def retraining_runs(loop: dict) -> list[dict]:
    """The retraining deployment's runs with this loop's config (the stack's other tests run it with theirs)."""
    deployment = api(loop, "GET", "/deployments/name/lstm-training/retraining")
    runs = api(loop, "POST", "/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})
    return [run for run in runs if run["parameters"].get("config_path") == loop["config"]]


def versions(client) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def monitor(loop: dict, data: str) -> str:
    return loop["procs"].run(PIPELINE, "monitor", "--model", f"models:/{MODEL}@champion",
                             "--data", str(loop["tmp"] / data), "--retrain-config", loop["config"], timeout=300)


def test_the_retraining_deployment_carries_the_monitor_trigger(loop: dict) -> None:
    automations = api(loop, "POST", "/automations/filter", json={})
    triggers = [a["trigger"] for a in automations if "pipeline.monitor.retrain-requested" in a["trigger"].get("expect", [])]
    assert len(triggers) == 1, automations
    assert triggers[0]["match"] == {"prefect.resource.id": "pipeline.model.network.*"}


def test_nothing_changed_scores_the_forecasts_and_triggers_nothing(loop: dict) -> None:
    out = monitor(loop, "steady.csv")
    assert "Scored:      16 point(s)" in out and "Verdict:     keep the champion" in out, out
    time.sleep(10)  # what an event would have started by now
    assert retraining_runs(loop) == [] and versions(loop["client"]) == ["1"]


def test_shifted_series_trigger_retraining_through_the_automation_and_a_new_version(loop: dict) -> None:
    out = monitor(loop, "shifted.csv")
    assert "Series degraded (2): A, B" in out and "Retraining:  requested (Prefect event" in out, out
    deadline = time.monotonic() + 240
    while versions(loop["client"]) == ["1"]:
        runs = retraining_runs(loop)
        failed = [r for r in runs if r["state"]["type"] in ("FAILED", "CRASHED")]
        assert not failed, (failed, loop["procs"].tail("worker"))
        assert time.monotonic() < deadline, (runs, loop["procs"].tail("worker"), loop["procs"].tail("server"))
        time.sleep(2)
    runs = retraining_runs(loop)
    assert len(runs) == 1 and runs[0]["parameters"] == {"config_path": loop["config"], "force": True}
    assert versions(loop["client"]) == ["1", "2"]
    run = loop["client"].get_run(loop["client"].get_model_version(MODEL, "2").run_id)
    assert run.data.tags["prefect.deployment_name"] == "retraining" and run.data.tags["forced"] == "True"
