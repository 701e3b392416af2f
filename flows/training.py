"""The training flow: thin Prefect wiring of the plain steps in `src/pipeline`.

ingest -> validate -> split/scale/windows -> train -> evaluate -> plots -> track -> register.
One MLflow run spans the flow; it ends FINISHED only after registration, FAILED otherwise
(with the failure report as an artifact), and a failed run never registers or moves an alias.
When the data and resolved config are those of the last successful run of this config, the
flow ends right after ingestion with nothing trained, tracked or registered (unless `force`).
Every flow run leaves a markdown summary and a link to its MLflow run as Prefect artifacts.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.common import STEP, ingest_task, prefect_tags
from flows.reporting import library_logs_to_run, publish_report, run_url
from pipeline import evaluate, features, plots, registry, reports, tracking
from pipeline.config import PipelineConfig, load_config
from pipeline.errors import DataError, PipelineError, TrackingError, TrainingError
from pipeline.evaluate import Forecasts
from pipeline.features import Preprocessor, SplitBounds, Windows
from pipeline.ingest import RawData
from pipeline.model import LSTMForecaster
from pipeline.schemas import ValidatedData, validate_prices
from pipeline.serving import ForecastBundle, input_example
from pipeline.reproduce import git_state
from pipeline.train import TrainResult, fit, init_model, plan_training


@dataclass
class TrainingSummary:
    """What `pipeline train` prints: the run, the metrics next to the baseline, the registry outcome."""

    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    model_uri: str | None = None
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # nothing to do: same data and config as the run above, which registered `version`
    test_forecasts: pd.DataFrame | None = None  # the in-process model's test forecasts (date, step, forecast)


@task(name="validate", **STEP)
def validate_task(raw: RawData, cfg: PipelineConfig) -> ValidatedData:
    return validate_prices(raw.frame, cfg.data, raw.source, min_rows=features.min_rows_needed(cfg))


@task(name="split-scale-window", **STEP)
def prepare_task(frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[Preprocessor, SplitBounds, dict[str, Windows]]:
    return features.prepare(frame, cfg)


@task(name="train", **STEP)
def train_task(windows: dict[str, Windows], cfg: PipelineConfig, epoch_logger: Any) -> TrainResult:
    model = init_model(cfg.model, cfg.train, n_features=windows["train"].X.shape[2], horizon=cfg.window.horizon)
    plan = plan_training(model, windows, cfg.train)
    get_run_logger().log(logging.WARNING if plan.long else logging.INFO, plan.describe())  # the size, before the wait
    val = windows["val"] if len(windows["val"]) else None
    try:
        return fit(model, windows["train"], val, cfg.train, on_epoch_end=epoch_logger)
    except TrainingError:
        with suppress(PipelineError):  # the losses up to a divergence help to diagnose it
            epoch_logger.flush()
        raise


@task(name="evaluate", **STEP)
def evaluate_task(model: LSTMForecaster, pre: Preprocessor, frame: pd.DataFrame,
                  windows: dict[str, Windows], cfg: PipelineConfig) -> tuple[dict[str, Forecasts], dict[str, float]]:
    forecasts = {split: evaluate.forecast_split(model, pre, frame, w, cfg.evaluate) for split, w in windows.items() if len(w)}
    scores: dict[str, float] = {}
    for split, fc in forecasts.items():
        scores.update(evaluate.score(fc, prefix=split))
    return forecasts, scores


@task(name="plots", **STEP)
def plots_task(client: Any, run_id: str, frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds,
               forecasts: dict[str, Forecasts], result: TrainResult) -> None:
    boundaries = {"validation": frame.index[bounds.val_start], "test": frame.index[bounds.test_start]}
    if bounds.val_start == bounds.test_start:
        boundaries = {"test": frame.index[bounds.test_start]}
    figures = {
        "plots/forecast.png": plots.plot_forecasts(
            frame[cfg.data.target], forecasts, boundaries,
            f"{cfg.data.target}: actual vs predicted ({cfg.name}, {cfg.preprocess.target_transform} target)"),
        "plots/loss.png": plots.plot_losses(result.train_loss, result.val_loss, result.best_epoch),
        "plots/residuals.png": plots.plot_residuals(forecasts["test"], cfg.data.target),
        **({"plots/horizon_rmse.png": plots.plot_horizon(evaluate.per_step(evaluate.score(forecasts["test"])), "rmse", cfg.data.target),
            "plots/horizon_paths.png": plots.plot_horizon_paths(frame[cfg.data.target], forecasts["test"])}
           if cfg.window.horizon > 1 else {}),
    }
    for path, fig in figures.items():
        tracking.log_figure(client, run_id, fig, path)
        plots.close(fig)


@task(name="log-model", **STEP)
def log_model_task(client: Any, run_id: str, cfg: PipelineConfig, config_path: str | None, raw: RawData,
                   data: ValidatedData, pre: Preprocessor, result: TrainResult, scores: dict[str, float]) -> Any:
    """Log the config, scalers, dataset and pyfunc, then the scores (on the run and the logged model); MLflow's ModelInfo."""
    tracking.log_config(client, run_id, cfg, config_path)
    tracking.log_preprocessor(client, run_id, pre)
    tracking.log_dataset(client, run_id, data.frame, raw.source, raw.digest, cfg.data.target, name=cfg.name)
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg)
    example = input_example(data.frame, cfg, rows=pre.input_rows)
    info = tracking.log_model(run_id, bundle, example, client.tracking_uri)
    # The scores belong to the run, to this logged model and to the training dataset.
    tracking.log_metrics(client, run_id, scores, model_id=info.model_id, dataset=(cfg.name, raw.digest))
    return info


@task(name="register", **STEP)
def register_task(client: Any, run_id: str, cfg: PipelineConfig, model_uri: str, raw: RawData,
                  frame: pd.DataFrame, forecasts: dict[str, Forecasts], scores: dict[str, float],
                  extra_tags: dict[str, str]) -> registry.Decision:
    """Register a `@challenger` version; the gate decides whether it also becomes `@champion`."""
    test = forecasts["test"]
    window = registry.TestWindow(str(test.dates[0].date()), str(test.dates[-1].date()), raw.digest)
    raw_rows = frame.reset_index()
    raw_rows[cfg.data.date_column] = raw_rows[cfg.data.date_column].dt.strftime("%Y-%m-%d")
    actual = pd.Series(frame[cfg.data.target].to_numpy(dtype=float), index=frame.index.strftime("%Y-%m-%d"))
    first_dates = list(test.dates.strftime("%Y-%m-%d"))

    def rescore(uri: str) -> registry.Score:  # the champion, with its own logged preprocessing
        return registry.rescore(uri, raw_rows, actual, first_dates, cfg.window.horizon, cfg.data.target)

    metric_tags = {k: f"{scores[k]:.6g}" for k in ("test_rmse_ratio", "test_mae", "test_mape", "test_direction_acc")
                   if k in scores}
    tags = {"data_digest": raw.digest, **metric_tags, **extra_tags}
    flow_run = extra_tags.get("prefect.flow_run_id")
    by = f"training flow (Prefect flow run {flow_run}, MLflow run {run_id})" if flow_run else f"training flow (MLflow run {run_id})"
    margins = (cfg.registry.min_gain_over_persistence, cfg.registry.min_gain_over_champion)
    decision = registry.register_and_promote(client, cfg.registry.model_name, model_uri, run_id, tags, window,
                                             scores["test_rmse"], scores["test_naive_rmse"], rescore, margins, by)
    try:
        from prefect.artifacts import create_markdown_artifact

        key = re.sub(r"[^a-z0-9-]+", "-", f"promotion-{cfg.registry.model_name}".lower()).strip("-")
        create_markdown_artifact(decision.markdown(cfg.registry.model_name, run_id), key=key,
                                 description=f"{cfg.registry.model_name} v{decision.version}: {decision.reason}"[:500])
    except Exception as exc:  # noqa: BLE001 - the registry is already updated; the report is a convenience
        get_run_logger().warning("could not create the promotion artifact: %s", exc)
    return decision


def keep_trained_model(exc: BaseException, cfg: PipelineConfig, run_id: str, pre: Preprocessor | None,
                       result: TrainResult | None, scores: dict[str, float]) -> BaseException:
    """A tracking failure after training: save the model locally and say where, in the error itself."""
    if not isinstance(exc, TrackingError) or result is None or pre is None:
        return exc
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg)
    try:
        path = tracking.save_unlogged(bundle, run_id, str(exc), scores)
    except OSError as err:
        return TrackingError(f"{exc}\nThe trained model could not be saved locally either ({err}).")
    return TrackingError(f"{exc}\nThe trained model is not lost: it is saved at {path} "
                         "(README.txt beside it says how to load it).")


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None: for `pipeline train`, the import and start-up cost."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - started


def resolve(config_path: str | None, data: str | None, experiment: str | None, model_name: str | None) -> PipelineConfig:
    """The config file (or defaults) with the command-line overrides applied."""
    cfg = load_config(config_path) if config_path else PipelineConfig()
    overrides: dict[str, dict[str, Any]] = {}
    if data:
        overrides["data"] = {"source": data}
    if experiment:
        overrides["tracking"] = {"experiment": experiment}
    if model_name:
        overrides["registry"] = {"model_name": model_name}
    return cfg.with_overrides(**overrides) if overrides else cfg


def nothing_to_do(cfg: PipelineConfig, client: Any, experiment_id: str, raw: RawData, config_digest: str,
                  previous: Any) -> TrainingSummary:
    """End a run whose data and config are those of the last successful run: no training, no new version."""
    tags, run_id = previous.data.tags, previous.info.run_id
    version = tags.get("registered_version")
    detail = (f"The data digest `{raw.digest}` and the resolved config digest `{config_digest}` are the same as "
              f"those of MLflow run `{run_id}`, the last successful run of this config"
              + (f", which registered {cfg.registry.model_name} v{version}" if version else "")
              + ". Nothing was trained or registered; retrain anyway with `--force` (CLI) or `force=true` (flow parameter).")
    get_run_logger().info("nothing to do: %s", detail.replace("`", ""))
    summary = TrainingSummary(run_id=run_id, experiment_id=experiment_id, metrics=dict(previous.data.metrics),
                              model_name=cfg.registry.model_name if version else None, version=version,
                              alias=tags.get("registered_alias"), reason=detail.replace("`", ""), skipped=True)
    publish_report(reports.RunReport(
        config_name=cfg.name, outcome="nothing to do", data_source=cfg.data.source, data_digest=raw.digest,
        config_digest=config_digest, data_rows=tags.get("data_rows"), data_start=tags.get("data_start"),
        data_end=tags.get("data_end"), metrics=summary.metrics, model_name=summary.model_name, version=version,
        alias=summary.alias, promotion=tags.get("promotion"), mlflow_run_id=run_id,
        mlflow_run_url=run_url(client.tracking_uri, experiment_id, run_id), detail=detail))
    return summary


def report_failure(cfg: PipelineConfig, exc: BaseException, client: Any, experiment_id: str, run_id: str | None,
                   digests: dict[str, str]) -> None:
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
    publish_report(reports.RunReport(
        config_name=cfg.name, outcome="failed", data_source=cfg.data.source, data_digest=digests.get("data_digest"),
        config_digest=digests.get("config_digest"), mlflow_run_id=run_id,
        mlflow_run_url=run_url(client.tracking_uri, experiment_id, run_id) if run_id else None,
        detail=f"`{type(exc).__name__}: {first_line}`" + ("" if run_id else " (before any MLflow run was started)")))


@flow(name="lstm-training", log_prints=False)
def training_flow(
    config_path: str | None = "configs/default.yaml",
    data: str | None = None,
    experiment: str | None = None,
    model_name: str | None = None,
    force: bool = False,
) -> TrainingSummary:
    """Train, evaluate, log and register an LSTM forecaster from a price CSV.

    When the data's digest and the resolved config are those of the last successful run of this
    config, there is nothing to do: the run says so and ends without training or registering.
    `force` trains anyway.
    """
    with library_logs_to_run():
        return run_training(config_path, data, experiment, model_name, force)


def run_training(config_path: str | None, data: str | None, experiment: str | None, model_name: str | None,
                 force: bool) -> TrainingSummary:
    """The body of `training_flow`, inside its flow run."""
    logger = get_run_logger()
    timings: dict[str, float] = {}
    started = process_age()
    if started is not None:
        timings["startup"] = started  # process start to here: interpreter, imports, Prefect server and flow run
    cfg = resolve(config_path, data, experiment, model_name)
    with timed(timings, "setup"):
        client = tracking.get_client(cfg)
        experiment_id = tracking.ensure_experiment(client, cfg.tracking.experiment)
    digests = {"config_digest": reports.config_digest(cfg.model_dump(mode="json"))}
    try:
        with timed(timings, "ingest"):
            raw = ingest_task(cfg.data.source)
    except BaseException as exc:
        report_failure(cfg, exc, client, experiment_id, None, digests)
        raise
    digests["data_digest"] = raw.digest
    if not force:
        previous = tracking.last_finished_run(client, experiment_id, {"config_digest": digests["config_digest"]})
        if previous is not None and previous.data.tags.get("data_digest") == raw.digest:
            return nothing_to_do(cfg, client, experiment_id, raw, digests["config_digest"], previous)
    run_tags = {**prefect_tags(), "data_source": cfg.data.source, **digests, **git_state(), "forced": str(force),
                **{f"version.{k}": v for k, v in tracking.library_versions().items()}}
    run_id = tracking.start_run(client, experiment_id, run_name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=run_tags)
    logger.info("MLflow run %s in experiment %r at %s", run_id, cfg.tracking.experiment, client.tracking_uri)
    pre: Preprocessor | None = None
    result: TrainResult | None = None
    scores: dict[str, float] = {}
    try:
        tracking.log_params_and_tags(client, run_id, cfg.flat(), {})
        with timed(timings, "validate"):
            data_ = validate_task(raw, cfg)
        for note in data_.notes:
            logger.warning(note) if note.startswith("warning") else logger.info(note)
        with timed(timings, "prepare"):
            pre, bounds, windows = prepare_task(data_.frame, cfg)
        epoch_logger = tracking.EpochLogger(client, run_id)
        with timed(timings, "train"):
            result = train_task(windows, cfg, epoch_logger)
            epoch_logger.flush()  # outside the task: a tracking failure here must not lose `result`
        timings["epoch_logging"] = epoch_logger.seconds  # part of "train"
        with timed(timings, "evaluate"):
            forecasts, scores = evaluate_task(result.model, pre, data_.frame, windows, cfg)
        with timed(timings, "plots"):
            plots_task(client, run_id, data_.frame, cfg, bounds, forecasts, result)
        summary_tags, extra_metrics, warnings = evaluate.findings(cfg, raw.digest, data_, pre, bounds, result, scores)
        scores.update(extra_metrics)
        for warning in warnings:
            logger.warning(warning)
        if data_.notes:
            tracking.log_text(client, run_id, "\n".join(data_.notes), "data/validation_notes.txt")
        tracking.log_params_and_tags(client, run_id, {}, summary_tags)
        with timed(timings, "tracking"):
            logged = log_model_task(client, run_id, cfg, config_path, raw, data_, pre, result, scores)
        summary = TrainingSummary(run_id=run_id, experiment_id=experiment_id, metrics=scores, model_uri=logged.model_uri,
                                  notes=data_.notes, timings=timings, test_forecasts=forecasts["test"].table())
        if cfg.registry.enabled:
            # One registration at a time on a local SQLite store: a second run waits its turn.
            with timed(timings, "registry"), tracking.store_lock(client.tracking_uri):
                decision = register_task(client, run_id, cfg, logged.model_uri, raw, data_.frame, forecasts, scores,
                                         {k: v for k, v in run_tags.items() if k.startswith("prefect.")})
            summary.model_name, summary.version, summary.alias, summary.reason = (
                cfg.registry.model_name, decision.version, decision.alias, decision.reason)
            tracking.log_params_and_tags(client, run_id, {}, {
                "registered_version": decision.version, "registered_alias": decision.alias, "promotion": decision.reason,
                **decision.tags()})
        tracking.log_metrics(client, run_id, {f"time_{k}_s": v for k, v in timings.items()})
        tracking.end_run(client, run_id, "FINISHED")
        logger.info("run %s finished: test RMSE %.6g vs persistence %.6g", run_id, scores["test_rmse"], scores["test_naive_rmse"])
        publish_report(reports.RunReport(
            config_name=cfg.name, outcome="trained", data_source=cfg.data.source, data_rows=summary_tags["data_rows"],
            data_start=summary_tags["data_start"], data_end=summary_tags["data_end"], metrics=scores, **digests,
            model_name=summary.model_name, version=summary.version, alias=summary.alias, promotion=summary.reason,
            mlflow_run_id=run_id, mlflow_run_url=run_url(client.tracking_uri, experiment_id, run_id),
            detail="Forced retraining (force=true)." if force else ""))
        return summary
    except BaseException as exc:
        error = keep_trained_model(exc, cfg, run_id, pre, result, scores)
        report = exc.report if isinstance(exc, DataError) else None
        tracking.failure_report(client, run_id, error, report)
        report_failure(cfg, error, client, experiment_id, run_id, digests)
        if error is not exc:
            raise error from exc
        if not isinstance(exc, PipelineError):
            logger.exception("run %s failed", run_id)
        raise
