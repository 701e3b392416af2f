"""prefect.yaml is deployable: Prefect parses it, entrypoints import, schedules and parameters fit."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.conftest import ROOT

PREFECT_YAML = ROOT / "prefect.yaml"
NEW_YORK = ZoneInfo("America/New_York")
US_CLOSE = dt.time(16, 0)


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def deployments(spec: dict) -> dict[str, dict]:
    return {d["name"]: d for d in spec["deployments"]}


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Entrypoints and config paths are relative to the project root, where `prefect deploy` runs."""
    monkeypatch.chdir(ROOT)
    return ROOT


def test_prefect_reads_the_file_as_written(spec: dict, deployments: dict[str, dict]) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    model = PrefectYamlModel.model_validate(spec)
    assert [d.name for d in model.deployments] == list(deployments)
    assert {"retraining", "batch-forecast"} <= set(deployments)
    for d in spec["deployments"]:
        for item in d["schedules"]:
            RawScheduleConfig.model_validate(item)  # the exact shape `prefect deploy` accepts
    # no pull section: `prefect deploy` records the project directory for the worker
    assert "pull" not in spec and all("pull" not in d for d in spec["deployments"])


def test_entrypoints_import_and_parameters_match_the_flow_signatures(deployments: dict[str, dict], at_root: Path) -> None:
    from prefect.flows import load_flow_from_entrypoint

    from pipeline.config.settings import load_config

    for name, d in deployments.items():
        flow = load_flow_from_entrypoint(d["entrypoint"])
        signature = inspect.signature(flow.fn)
        params = d.get("parameters") or {}
        unknown = set(params) - set(signature.parameters)
        assert not unknown, f"{name}: parameters {unknown} are not arguments of {d['entrypoint']}"
        required = {p for p, v in signature.parameters.items() if v.default is inspect.Parameter.empty}
        assert required <= set(params), f"{name}: required arguments {required - set(params)} have no value"
        flow.validate_parameters(params)  # types, as the server's parameter schema will check them
        if "config_path" in params:
            load_config(at_root / params["config_path"])
    assert deployments["retraining"]["entrypoint"] == "flows/training.py:training_flow"
    assert deployments["retraining"]["parameters"]["force"] is False


def test_schedules_are_weekday_evenings_in_new_york_after_the_close(deployments: dict[str, dict]) -> None:
    from prefect.server.schemas.schedules import CronSchedule

    first_runs = {}
    for name, d in deployments.items():
        assert len(d["schedules"]) == 1, name
        item = d["schedules"][0]
        assert item["timezone"] == "America/New_York" and item.get("active", True) is True
        schedule = CronSchedule(cron=item["cron"], timezone=item["timezone"])
        # two weeks across the March 2026 DST change (Sunday the 8th): still 18:30 local after it
        start = dt.datetime(2026, 3, 2, tzinfo=NEW_YORK)
        dates = [d_.astimezone(NEW_YORK) for d_ in asyncio.run(schedule.get_dates(10, start))]
        assert len(dates) == 10
        assert {d_.weekday() for d_ in dates} == {0, 1, 2, 3, 4}, f"{name}: weekdays only, every weekday"
        assert len({d_.date() for d_ in dates}) == 10, f"{name}: once a day"
        assert all(d_.time() > US_CLOSE for d_ in dates), f"{name}: after the 16:00 New York close"
        assert len({d_.time() for d_ in dates}) == 1, f"{name}: the same local time across DST"
        first_runs[name] = dates[0]
    assert first_runs["retraining"] < first_runs["batch-forecast"], "forecast after the day's retraining"
    assert first_runs["monitor"] < first_runs["retraining"], "score the day's actuals before the day's retraining"


def test_the_monitor_event_triggers_retraining_with_the_config_it_names(deployments: dict[str, dict]) -> None:
    """The trigger is valid for Prefect, matches the resource and event the monitor emits, and renders the event's
    payload into the training flow's parameters."""
    import jinja2
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.monitor import RESOURCE_PREFIX, RETRAIN_EVENT

    triggers = deployments["retraining"]["triggers"]
    assert len(triggers) == 1
    trigger = DeploymentEventTrigger.model_validate(triggers[0])
    assert trigger.expect == {RETRAIN_EVENT} and trigger.enabled
    pattern = trigger.match.model_dump()["prefect.resource.id"]
    assert pattern.endswith("*") and f"{RESOURCE_PREFIX}lstm-forecaster".startswith(pattern[:-1])
    event = {"payload": {"config_path": "configs/portfolio.yaml"}}
    rendered = {k: jinja2.Template(v).render(event=event) if isinstance(v, str) else v
                for k, v in trigger.parameters.items()}
    assert rendered == {"config_path": "configs/portfolio.yaml", "force": True}
    assert "triggers" not in deployments["batch-forecast"] and deployments["batch-forecast"]["parameters"]["shadow"]


def test_retraining_runs_one_at_a_time(deployments: dict[str, dict]) -> None:
    limit = deployments["retraining"]["concurrency_limit"]
    assert isinstance(limit, dict) and limit["limit"] == 1
    assert limit["collision_strategy"] in {"ENQUEUE", "CANCEL_NEW"}


def test_every_deployment_uses_the_process_pool_the_docs_name(deployments: dict[str, dict]) -> None:
    pools = {d["work_pool"]["name"] for d in deployments.values()}
    assert len(pools) == 1
    pool = pools.pop()
    guide = (ROOT / "docs" / "scheduled-retraining.md").read_text()
    assert f"prefect work-pool create {pool} --type process" in guide
    for name, d in deployments.items():
        env = d["work_pool"]["job_variables"]["env"]
        assert "pipeline" in env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(","), name
        assert all(isinstance(v, str) for v in env.values()), f"{name}: env values must be strings"


def test_serve_builds_the_same_deployments_as_the_file(deployments: dict[str, dict], at_root: Path) -> None:
    from flows.serve import load_specs, to_runner_deployment

    for spec in load_specs(PREFECT_YAML):
        runner = to_runner_deployment(spec)
        assert runner.name == spec["name"]
        assert runner.entrypoint == spec["entrypoint"]
        assert runner.parameters == spec["parameters"]
        assert runner.concurrency_limit == spec["concurrency_limit"]["limit"]
        assert [t.expect for t in runner.triggers] == [set(t["expect"]) for t in spec.get("triggers", [])]
        assert [(s.schedule.cron, s.schedule.timezone) for s in runner.schedules] == [
            (s["cron"], s["timezone"]) for s in spec["schedules"]]
    with pytest.raises(SystemExit, match="no deployment named nope"):
        load_specs(PREFECT_YAML, ["nope"])
