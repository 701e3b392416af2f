"""The training flow: thin Prefect wiring of the plain steps in `src/pipeline`.

ingest -> validate -> split/scale/windows -> train -> evaluate -> plots -> track -> register.
One MLflow run spans the flow (`store.tracked_run`): it stays RUNNING until registration is
done, is tagged `pipeline.complete` and ends FINISHED as its very last step, or ends FAILED
with the failure report; a failed run never registers or moves an alias. When the data and
resolved config are those of the last complete run of this config, the flow ends right after
ingestion with nothing trained, tracked or registered (unless `force`). Every flow run leaves a
markdown summary and a link to its MLflow run as Prefect artifacts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow, get_run_logger

from flows.reporting import library_logs_to_run, publish_report, report_context
from flows.tasks import DASK_ADDRESS_ENV, ingest_task, prefect_tags, task_runner, training_steps
from pipeline.config.settings import PipelineConfig, resolve
from pipeline.errors import ConfigError
from pipeline.tracking import run_report, store, training_run
from pipeline.tracking.training_run import Timings, TrainingSummary

log = logging.getLogger(__name__)

__all__ = ["TrainingSummary", "training_flow"]


@flow(name="lstm-training", log_prints=False)
def training_flow(
    config_path: str | None = "configs/default.yaml",
    data: str | None = None,
    experiment: str | None = None,
    model_name: str | None = None,
    force: bool = False,
    config: PipelineConfig | None = None,
) -> TrainingSummary:
    """Train, evaluate, log and register an LSTM forecaster from a price CSV.

    `config` (a validated config) is used as given; without it `config_path` is read. Either way
    the overrides apply and `config_path`, when given, is logged as the user's file. When the
    data's digest and the resolved config are those of the last complete run of this config,
    there is nothing to do: the run says so and ends without training or registering. `force`
    trains anyway.
    """
    with library_logs_to_run():
        return run_training(resolve(config or config_path, data, experiment, model_name), config_path, force)


def training_flow_for(cfg: PipelineConfig, parallel: int = 1, dask_address: str | None = None) -> Any:
    """`training_flow` on the task runner its mapped tasks need: the series of a many-series `local` strategy, or
    the members of an ensemble (`model.ensemble`), train one after another (`parallel` 1: each fit has the
    process's cores and sets torch's threads alone), `parallel` at a time in worker processes, or on the Dask
    cluster at `dask_address` (else $PIPELINE_DASK_ADDRESS); any other config runs as the flow declares."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1 (got {parallel})")
    address = dask_address or os.environ.get(DASK_ADDRESS_ENV)
    local = cfg.data.series_column is not None and cfg.model.strategy == "local"
    if not local and cfg.model.ensemble == 1:
        return training_flow
    runner, described = task_runner(parallel, address)
    log.info("the %s train on %s", "series" if local else "ensemble's members", described)
    return training_flow.with_options(task_runner=runner)


def run_training(cfg: PipelineConfig, config_path: str | None, force: bool) -> TrainingSummary:
    """The body of `training_flow`: set up, ingest, then nothing to do or a tracked training run."""
    timings = Timings.since_process_start()
    with timings.stage("setup"):
        client = store.get_client(cfg)
        experiment_id = store.open_experiment(client, cfg.tracking.experiment)
    ctx = report_context(cfg.name, cfg.data.source_label, run_report.config_digest(cfg.model_dump(mode="json")),
                         client.tracking_uri, experiment_id)
    try:
        with timings.stage("ingest"):
            raw = ingest_task(cfg.data.source)
        ctx.data_digest = raw.digest
        previous = None if force else store.last_finished_run(client, experiment_id, {"config_digest": ctx.config_digest})
        detail = training_run.nothing_to_do(cfg, raw.digest, ctx.config_digest, previous)
        if previous is not None and detail:
            get_run_logger().info("nothing to do: %s", detail.replace("`", ""))
            summary = training_run.skipped_summary(cfg, experiment_id, previous, detail)
            ctx.run_id = previous.run_id
            publish_report(run_report.skipped_report(ctx, summary, previous.tags, detail))
            return summary
        tags = {**prefect_tags(), "data_digest": raw.digest, "forced": str(force)}
        name = training_run.run_name(cfg.name, data_source=cfg.data.source_label)
        with store.tracked_run(client, experiment_id, name, tags, data_source=cfg.data.source_label,
                                  config_digest=ctx.config_digest) as run:
            ctx.run_id = run.run_id
            summary, data_tags = training_steps(cfg)(run, cfg, config_path, raw, timings)
            report = run_report.trained_report(ctx, data_tags, summary, force)
            store.set_description(run.client, run.run_id, run_report.run_markdown(report))  # the run page's notes
        get_run_logger().info("run %s finished: %s", run.run_id, run_report.headline(summary.metrics, summary.gate))
        publish_report(report)
        return summary
    except BaseException as exc:
        publish_report(run_report.failed_report(ctx, exc))
        raise
