"""Serve prefect.yaml's deployments from one process, with no work pool or worker (`make serve`).

Each deployment keeps the entrypoint, schedules, parameters, concurrency limit and event triggers that
prefect.yaml gives it, so `prefect deploy` + a worker and `flow.serve` run the same thing.
Runs execute in subprocesses that get the environment of the deployments' job variables.

    python -m flows.serve                 # every deployment in prefect.yaml
    python -m flows.serve --name retraining
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


def load_specs(path: str | Path = "prefect.yaml", names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The `deployments` entries of a prefect.yaml, optionally only those named."""
    specs = (yaml.safe_load(Path(path).read_text()) or {}).get("deployments") or []
    if names:
        unknown = set(names) - {s.get("name") for s in specs}
        if unknown:
            raise SystemExit(f"{path}: no deployment named {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.get("name") in names]
    return specs


def job_env(spec: dict[str, Any]) -> dict[str, str]:
    env = ((spec.get("work_pool") or {}).get("job_variables") or {}).get("env") or {}
    return {str(k): str(v) for k, v in env.items()}


def to_runner_deployment(spec: dict[str, Any]) -> Any:
    """A `RunnerDeployment` for `flow.serve`, built from one prefect.yaml deployment entry."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    flow = load_flow_from_entrypoint(spec["entrypoint"])
    schedules = []
    for item in spec.get("schedules") or []:
        if "cron" not in item:
            raise ValueError(f"deployment {spec['name']!r}: only cron schedules are served by flows.serve")
        schedules.append(Cron(item["cron"], timezone=item.get("timezone"), active=bool(item.get("active", True))))
    limit = spec.get("concurrency_limit")
    if isinstance(limit, dict):
        strategy = ConcurrencyLimitStrategy(limit.get("collision_strategy") or "ENQUEUE")
        limit = ConcurrencyLimitConfig(limit=limit["limit"], collision_strategy=strategy)
    triggers = [DeploymentEventTrigger.model_validate(item) for item in spec.get("triggers") or []]
    return flow.to_deployment(
        name=spec["name"], schedules=schedules, parameters=spec.get("parameters") or {},
        concurrency_limit=limit, description=spec.get("description"), tags=spec.get("tags") or [],
        triggers=triggers,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--prefect-file", default="prefect.yaml", help="deployments file (default: %(default)s)")
    parser.add_argument("--name", action="append", help="serve only this deployment (repeatable)")
    args = parser.parse_args(argv)
    specs = load_specs(args.prefect_file, args.name)
    for spec in specs:  # the runs are subprocesses: they inherit what the job variables would set
        for key, value in job_env(spec).items():
            os.environ.setdefault(key, value)

    from prefect import serve

    serve(*(to_runner_deployment(spec) for spec in specs))


if __name__ == "__main__":
    main()
