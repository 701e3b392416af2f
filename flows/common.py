"""Task options, the tasks every flow starts with (ingest, validate) and run tags shared by the flows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows.early_server import exit_with_parent
from pipeline import features
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.ingest import RawData, RemoteReadError, load_prices
from pipeline.output import SQLITE_SIBLINGS, Guarded
from pipeline.schemas import ValidatedData, validate_prices

DASK_ADDRESS_ENV = "PIPELINE_DASK_ADDRESS"  # a Dask scheduler for the parallel tasks when no option names one

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


def prefect_files() -> list[Guarded]:
    """Prefect's home and its SQLite database (wherever the settings put it): no output goes there."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    guarded = [Guarded(Path(settings.home).expanduser(), "Prefect's home (PREFECT_HOME)")]
    url = settings.server.database.connection_url
    database = url.get_secret_value() if url is not None else ""
    if database.startswith("sqlite") and ":///" in database:
        db = Path(database.split(":///", 1)[1].split("?")[0]).expanduser()
        guarded += [Guarded(db.with_name(db.name + suffix), "Prefect's database") for suffix in ("", *SQLITE_SIBLINGS)]
    return guarded


def task_runner(parallel: int, dask_address: str | None) -> tuple[Any, str]:
    """The task runner for parallel tasks (sweep trials, the series of a local strategy) and its description:
    Dask at `dask_address`, else `parallel` local processes.

    torch releases the GIL inside its kernels, but an LSTM's many small kernels leave most of a
    step to Python: two trials on two threads ran 1.2-1.3x faster than one after the other,
    where two processes approach 2x (bench/sweep.py). One trial at a time needs no second
    process and its start-up (the imports, a few seconds): it runs on a single worker thread.
    """
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(f"a Dask scheduler is configured ({dask_address}) but prefect-dask is not installed: "
                              "pip install 'lstm-forecast-pipeline[dask]'") from None
        return DaskTaskRunner(address=dask_address), f"dask ({dask_address})"
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if parallel == 1:
        return ThreadPoolTaskRunner(max_workers=1), "this process"
    # The workers die with this process, `kill -9` included (as Prefect's temporary server does):
    # left alone they would train on for good, holding their memory and multiprocessing's resource tracker.
    return (ProcessPoolTaskRunner(max_workers=parallel, initializer=exit_with_parent, initargs=(os.getpid(),)),
            f"{parallel} processes")
