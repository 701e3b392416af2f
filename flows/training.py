"""The training flow: thin Prefect wiring of the plain steps in `src/pipeline`.

ingest -> validate -> split/scale/windows -> train -> evaluate -> plots -> track -> register.
One MLflow run spans the flow (`tracking.tracked_run`): it stays RUNNING until registration is
done, is tagged `pipeline.complete` and ends FINISHED as its very last step, or ends FAILED
with the failure report; a failed run never registers or moves an alias. When the data and
resolved config are those of the last complete run of this config, the flow ends right after
ingestion with nothing trained, tracked or registered (unless `force`). Every flow run leaves a
markdown summary and a link to its MLflow run as Prefect artifacts.
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.common import DASK_ADDRESS_ENV, STEP, ingest_task, prefect_tags, task_runner, validate_task
from flows.reporting import library_logs_to_run, publish_promotion, publish_report, report_context
from pipeline import evaluate, features, gate, plots, progress, registry, reports, runs, tracking
from pipeline.config import PipelineConfig, resolve
from pipeline.defaults import resolve_auto
from pipeline.errors import ConfigError, PipelineError, TrainingError
from pipeline.evaluate import Forecasts, Scores
from pipeline.faults import kill_point
from pipeline.features import Preprocessor, SplitBounds, Windows
from pipeline.ingest import RawData
from pipeline.intervals import Calibration
from pipeline.model import LSTMForecaster
from pipeline.runs import Timings, TrainingSummary
from pipeline.schemas import ValidatedData
from pipeline.serving import ForecastBundle, input_example
from pipeline.tracking import TrackedRun
from pipeline.train import TrainResult, fit, init_model, plan_training

log = logging.getLogger(__name__)

__all__ = ["TrainingSummary", "training_flow"]


@task(name="split-scale-window", **STEP)
def prepare_task(frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[Preprocessor, SplitBounds, dict[str, Windows]]:
    return features.prepare(frame, cfg)


@task(name="train", **STEP)
def train_task(windows: dict[str, Windows], cfg: PipelineConfig, epoch_logger: Any, rows: int | None = None) -> TrainResult:
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    plan = plan_training(model, windows, cfg.train, rows=rows)
    get_run_logger().log(logging.WARNING if plan.long else logging.INFO, plan.describe())  # the size, before the wait
    val = windows["val"] if len(windows["val"]) else None

    shown = progress.EpochProgress("training", cfg.train.epochs)  # a bar, plain lines or nothing: the CLI's choice

    def on_epoch_end(epoch: int, train_loss: float, val_loss: float | None) -> None:
        epoch_logger(epoch, train_loss, val_loss)
        shown(epoch, train_loss, val_loss)
        kill_point("training")

    try:
        with shown:
            return fit(model, windows["train"], val, cfg.train, on_epoch_end=on_epoch_end)
    except TrainingError:
        with suppress(PipelineError):  # the losses up to a divergence help to diagnose it
            epoch_logger.flush()
        raise


@task(name="evaluate", **STEP)
def evaluate_task(model: LSTMForecaster, pre: Preprocessor, frame: pd.DataFrame,
                  windows: dict[str, Windows], cfg: PipelineConfig) -> tuple[dict[str, Forecasts], Scores, Calibration | None]:
    """Every split's forecasts with the intervals fitted on the validation errors, their scores, the intervals."""
    forecasts, calibration = evaluate.forecast_splits(model, pre, frame, windows, cfg)
    for note in calibration.notes if calibration else ():
        get_run_logger().warning(note)
    return forecasts, Scores({split: evaluate.score(fc, prefix=split) for split, fc in forecasts.items()}), calibration


@task(name="plots", **STEP)
def plots_task(run: TrackedRun, frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds,
               forecasts: dict[str, Forecasts], test: evaluate.SplitScores, result: TrainResult) -> None:
    boundaries = {"validation": frame.index[bounds.val_start], "test": frame.index[bounds.test_start]}
    if bounds.val_start == bounds.test_start:
        boundaries = {"test": frame.index[bounds.test_start]}
    target = frame[cfg.data.target]
    figures = {
        "plots/forecast.png": plots.plot_forecasts(
            target, forecasts, boundaries,
            f"{cfg.data.target}: actual vs predicted ({cfg.name}, {cfg.preprocess.target_transform} target)"),
        "plots/loss.png": plots.plot_losses(result.train_loss, result.val_loss, result.best_epoch),
        "plots/residuals.png": plots.plot_residuals(forecasts["test"], cfg.data.target),
        **({"plots/calibration.png": plots.plot_calibration(forecasts["test"], f"{cfg.name}: test intervals")}
           if forecasts["test"].bands else {}),
        **({"plots/horizon_rmse.png": plots.plot_horizon(evaluate.per_step(test), "rmse", cfg.data.target),
            "plots/horizon_paths.png": plots.plot_horizon_paths(target, forecasts["test"])}
           if cfg.window.horizon > 1 else {}),
    }
    for path, fig in figures.items():
        tracking.log_figure(run.client, run.run_id, fig, path)
        plots.close(fig)


@task(name="log-model", **STEP)
def log_model_task(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData,
                   data: ValidatedData, pre: Preprocessor, result: TrainResult, metrics: dict[str, float],
                   calibration: Calibration | None = None) -> Any:
    """Log the config, scalers, dataset and pyfunc (with the fitted intervals), then the metrics (on the run and the
    logged model); MLflow's ModelInfo."""
    client, run_id = run.client, run.run_id
    tracking.log_config(client, run_id, cfg, config_path)
    tracking.log_preprocessor(client, run_id, pre)
    tracking.log_dataset(client, run_id, data.frame, raw.source, raw.digest, cfg.data.target, name=cfg.name)
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg,
                            intervals=calibration.model if calibration else None)
    info = tracking.log_model(run_id, bundle, input_example(data.frame, cfg, rows=pre.input_rows), client.tracking_uri)
    kill_point("model-logging")
    # The scores belong to the run, to this logged model and to the training dataset.
    tracking.log_metrics(client, run_id, metrics, model_id=info.model_id, dataset=(cfg.name, raw.digest))
    return info


@task(name="register", **STEP)
def register_task(run: TrackedRun, cfg: PipelineConfig, model_uri: str, model_id: str | None, raw: RawData,
                  frame: pd.DataFrame, test: Forecasts, metrics: dict[str, float],
                  extra_tags: dict[str, str]) -> registry.Decision:
    """Register a `@challenger` version; the gate decides whether it also becomes `@champion`."""
    name = cfg.registry.model_name
    raw_rows, actual, first_dates = runs.rescore_inputs(frame, cfg.data, test)
    window = registry.TestWindow(first_dates[0], first_dates[-1], raw.digest)

    def rescore(uri: str) -> registry.Score:  # the champion, with its own logged preprocessing
        return registry.rescore(uri, raw_rows, actual, first_dates, cfg.window.horizon, cfg.data.target)

    margins = (cfg.registry.min_gain_over_persistence, cfg.registry.min_gain_over_champion)
    decision = registry.register_and_promote(
        run.client, name, model_uri, run.run_id, runs.version_tags(raw.digest, metrics, extra_tags), window,
        metrics["test_rmse"], metrics["test_naive_rmse"], rescore, margins,
        runs.registered_by(run.run_id, extra_tags.get("prefect.flow_run_id")), model_id=model_id,
        coverage=gate.coverage_requirement(metrics, cfg.registry.max_coverage_error))
    publish_promotion(decision.markdown(name, run.run_id), name, f"{name} v{decision.version}: {decision.reason}")
    return decision


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
    """`training_flow` on the task runner its mapped tasks need: the series of a many-series `local` strategy
    train one after another (`parallel` 1: each fit has the process's cores and sets torch's threads alone),
    `parallel` at a time in worker processes, or on the Dask cluster at `dask_address` (else
    $PIPELINE_DASK_ADDRESS); any other config runs as the flow declares."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1 (got {parallel})")
    address = dask_address or os.environ.get(DASK_ADDRESS_ENV)
    if cfg.data.series_column is None or cfg.model.strategy != "local":
        return training_flow
    runner, described = task_runner(parallel, address)
    log.info("the series train on %s", described)
    return training_flow.with_options(task_runner=runner)


def run_training(cfg: PipelineConfig, config_path: str | None, force: bool) -> TrainingSummary:
    """The body of `training_flow`: set up, ingest, then nothing to do or a tracked training run."""
    timings = Timings.since_process_start()
    with timings.stage("setup"):
        client = tracking.get_client(cfg)
        experiment_id = tracking.open_experiment(client, cfg.tracking.experiment)
    ctx = report_context(cfg.name, cfg.data.source_label, reports.config_digest(cfg.model_dump(mode="json")),
                         client.tracking_uri, experiment_id)
    try:
        with timings.stage("ingest"):
            raw = ingest_task(cfg.data.source)
        ctx.data_digest = raw.digest
        previous = None if force else tracking.last_finished_run(client, experiment_id, {"config_digest": ctx.config_digest})
        detail = runs.nothing_to_do(cfg, raw.digest, ctx.config_digest, previous)
        if previous is not None and detail:
            get_run_logger().info("nothing to do: %s", detail.replace("`", ""))
            summary = runs.skipped_summary(cfg, experiment_id, previous, detail)
            ctx.run_id = previous.run_id
            publish_report(reports.skipped_report(ctx, summary, previous.tags, detail))
            return summary
        tags = {**prefect_tags(), "data_digest": raw.digest, "forced": str(force)}
        name = runs.run_name(cfg.name, data_source=cfg.data.source_label)
        with tracking.tracked_run(client, experiment_id, name, tags, data_source=cfg.data.source_label,
                                  config_digest=ctx.config_digest) as run:
            ctx.run_id = run.run_id
            summary, data_tags = training_steps(cfg)(run, cfg, config_path, raw, timings)
            report = reports.trained_report(ctx, data_tags, summary, force)
            tracking.set_description(run.client, run.run_id, reports.run_markdown(report))  # the run page's notes
        get_run_logger().info("run %s finished: test RMSE %.6g vs persistence %.6g", run.run_id,
                              summary.metrics["test_rmse"], summary.metrics.get("test_naive_rmse", float("nan")))
        publish_report(report)
        return summary
    except BaseException as exc:
        publish_report(reports.failed_report(ctx, exc))
        raise


def training_steps(cfg: PipelineConfig) -> Any:
    """The steps inside the MLflow run: one series (`train_and_register`) or many (`flows.portfolio`)."""
    if cfg.data.series_column is None:
        return train_and_register
    from flows.portfolio import train_portfolio  # it builds on this module's tasks

    return train_portfolio


def train_and_register(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData,
                       timings: Timings) -> tuple[TrainingSummary, dict[str, str]]:
    """Inside the MLflow run: validate, prepare, train, evaluate, plot, log, register; the summary and data tags."""
    logger = get_run_logger()
    with timings.stage("validate"):
        data = validate_task(raw, cfg)
        cfg = resolve_auto(cfg, data.frame)  # `auto` settings from the data, logged as the run's params
    tracking.log_params_and_tags(run.client, run.run_id, cfg.flat(), {})
    for note in data.notes:
        logger.warning(note) if note.startswith("warning") else logger.info(note)
    with timings.stage("prepare"):
        pre, bounds, windows = prepare_task(data.frame, cfg)
    with runs.kept_on_tracking_failure(cfg, run.run_id) as kept:
        epoch_logger = tracking.EpochLogger(run.client, run.run_id)
        with timings.stage("train"):
            kept.pre, kept.result = pre, train_task(windows, cfg, epoch_logger)
            epoch_logger.flush()  # outside the task: a tracking failure here must not lose the result
        timings.seconds["epoch_logging"] = epoch_logger.seconds  # part of "train"
        with timings.stage("evaluate"):
            forecasts, scores, calibration = evaluate_task(kept.result.model, pre, data.frame, windows, cfg)
            kept.intervals = calibration.model if calibration else None
        kept.scores = metrics = scores.flat()
        with timings.stage("plots"):
            plots_task(run, data.frame, cfg, bounds, forecasts, scores["test"], kept.result)
        data_tags, warnings = record_findings(run, cfg, raw, data, pre, bounds, kept.result, scores, metrics)
        with timings.stage("tracking"):
            logged = log_model_task(run, cfg, config_path, raw, data, pre, kept.result, metrics, calibration)
        kept.logged = logged.model_uri
        summary = TrainingSummary(run_id=run.run_id, experiment_id=run.experiment_id, metrics=metrics,
                                  model_uri=logged.model_uri, model_id=logged.model_id,
                                  notes=[*data.notes, *(f"warning: {w}" for w in warnings),
                                         *(f"warning: {n}" for n in (calibration.notes if calibration else ()))],
                                  timings=timings.seconds,
                                  test_forecasts=forecasts["test"].table())
        if cfg.registry.enabled:
            register(run, cfg, raw, data.frame, forecasts["test"], summary, timings)
        tracking.log_metrics(run.client, run.run_id, timings.metrics())
    return summary, data_tags


def record_findings(run: TrackedRun, cfg: PipelineConfig, raw: RawData, data: ValidatedData, pre: Preprocessor,
                    bounds: SplitBounds, result: TrainResult, scores: Scores,
                    metrics: dict[str, float]) -> tuple[dict[str, str], list[str]]:
    """Tags, extra metrics (added to `metrics`) and warnings from `evaluate.findings`; the tags and warnings."""
    tags, extra_metrics, warnings = evaluate.findings(cfg, raw.digest, data, pre, bounds, result, scores["test"],
                                                      scores.splits.get("val"))
    metrics.update(extra_metrics)
    for warning in warnings:
        get_run_logger().warning(warning)
    if data.notes:
        tracking.log_text(run.client, run.run_id, "\n".join(data.notes), "data/validation_notes.txt")
    tracking.log_params_and_tags(run.client, run.run_id, {}, tags)
    return tags, warnings


def register(run: TrackedRun, cfg: PipelineConfig, raw: RawData, frame: pd.DataFrame, test: Forecasts,
             summary: TrainingSummary, timings: Timings) -> None:
    """Register and gate the model (one registration at a time on a local SQLite store), then tag the run."""
    with timings.stage("registry"), tracking.store_lock(run.tracking_uri):
        decision = register_task(run, cfg, summary.model_uri, summary.model_id, raw, frame, test, summary.metrics,
                                 prefect_tags())
    kill_point("after-alias-move")
    summary.model_name, summary.version, summary.alias, summary.reason = (
        cfg.registry.model_name, decision.version, decision.alias, decision.reason)
    tracking.log_params_and_tags(run.client, run.run_id, {}, {
        "registered_version": decision.version, "registered_alias": decision.alias, "promotion": decision.reason,
        **decision.tags()})
