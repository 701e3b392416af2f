"""Task options, the tasks every flow starts with (ingest, validate) and run tags shared by the flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from pipeline import features
from pipeline.config import PipelineConfig
from pipeline.ingest import RawData, RemoteReadError, load_prices
from pipeline.schemas import ValidatedData, validate_prices

# Data frames, models and clients hash badly: these tasks neither cache nor persist results.
STEP = {"cache_policy": NO_CACHE, "persist_result": False}


def retry_remote_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only when a URL failed to download, not on a bad local file."""
    try:
        state.result()
    except RemoteReadError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(name="ingest", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_remote_only, **STEP)
def ingest_task(source: str | tuple[str, ...]) -> RawData:
    """The file (or, for many series, the files of a folder or a list) as read."""
    from pipeline.panel import load_sources

    return load_prices(source) if isinstance(source, str) and not Path(source).is_dir() else load_sources(source)


@task(name="validate", **STEP)
def validate_task(raw: RawData, cfg: PipelineConfig) -> ValidatedData:
    return validate_prices(raw.frame, cfg.data, raw.source, min_rows=features.min_rows_needed(cfg),
                           positive=features.transform_domain(cfg))


def prefect_tags() -> dict[str, str]:
    """Links from the MLflow run back to the Prefect flow run that made it."""
    from prefect.runtime import deployment, flow_run

    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_name": str(flow_run.flow_name or "")}
    if deployment.name:
        tags["prefect.deployment_name"] = str(deployment.name)
    return {k: v for k, v in tags.items() if v}
