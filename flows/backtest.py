"""The backtest flow: walk-forward evaluation as one MLflow parent run with a child run per fold.

ingest -> validate -> plan folds -> (refit scalers + model on the rows before the cutoff,
forecast the next block) per fold -> summary (mean and spread per metric, pooled metrics),
the plot of every fold's forecasts against the series, and the fold table on the parent.
Many series (`data.series_column`): folds counted from each series' end, every series' scalers
and the model refit per fold, per-series and pooled scores beside naive and seasonal naive, a
per-series CSV and the plot of the per-series errors per fold; folds run `parallel` at a time
(or on Dask) as sweep trials do. Nothing is registered: a backtest measures a config, it does
not ship a model.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.futures import wait

from flows.tasks import (
    DASK_ADDRESS_ENV,
    STEP,
    ParentRef,
    ingest_task,
    prefect_tags,
    task_runner,
    validate_series_task,
    validate_task,
)
from pipeline.config.settings import PipelineConfig, resolve
from pipeline.data.auto import resolve_auto
from pipeline.data.panel import Panel
from pipeline.errors import ConfigError
from pipeline.evaluation import plots
from pipeline.model import progress
from pipeline.tracking import promotion, run_report, store, training_run
from pipeline.tracking.store import TrackedRun
from pipeline.training import backtest
from pipeline.training.backtest import BacktestSummary, Fold, FoldResult, PanelFold, PanelFoldResult

__all__ = ["BacktestSummary", "backtest_flow"]


@task(name="plan-folds", **STEP)
def plan_task(frame: pd.DataFrame, cfg: PipelineConfig) -> list[Fold]:
    return backtest.plan_folds(len(frame), cfg)


@task(name="fold", **STEP)
def fold_task(frame: pd.DataFrame, cfg: PipelineConfig, fold: Fold, epoch_logger: Any, folds: int = 0) -> FoldResult:
    label = f"fold {fold.index + 1}/{folds}" if folds else f"fold {fold.index + 1}"
    with progress.EpochProgress(label, cfg.train.epochs) as shown:  # a bar, plain lines or nothing: the CLI's choice
        result = backtest.run_fold(frame, cfg, fold, on_epoch_end=progress.chain(epoch_logger, shown))
    epoch_logger.flush()
    return result


@flow(name="lstm-backtest", log_prints=False)
def backtest_flow(
    config_path: str | None = "configs/default.yaml",
    data: str | None = None,
    folds: int | None = None,
    window: str | None = None,
    experiment: str | None = None,
    config: PipelineConfig | None = None,
) -> BacktestSummary:
    """Walk-forward backtest of a config (`config`, else the file `config_path`, with the overrides):
    each fold refits on rows before its cutoff only (of each series, for many)."""
    started = time.perf_counter()
    cfg = resolve(config or config_path, data, experiment, folds=folds, window=window)
    client = store.get_client(cfg)
    experiment_id = store.open_experiment(client, cfg.tracking.experiment)
    name = training_run.run_name(cfg.name, "backtest", cfg.data.source_label)
    tags = {**prefect_tags(), "run_type": "backtest"}
    with store.tracked_run(client, experiment_id, name, tags, data_source=cfg.data.source_label) as run:
        raw = ingest_task(cfg.data.source)
        if cfg.data.series_column is not None:
            summary = panel_backtest(run, name, cfg, config_path, raw, started)
        else:
            frame = validate_task(raw, cfg).frame
            cfg = resolve_auto(cfg, frame)  # `auto` settings from the data, logged as the run's params
            store.log_params_and_tags(client, run.run_id, cfg.flat(), {})
            store.log_config(client, run.run_id, cfg, config_path)
            plan = plan_task(frame, cfg)
            store.log_params_and_tags(client, run.run_id, {}, backtest.data_tags(frame, raw.digest))
            store.log_dataset(client, run.run_id, frame, raw.source, raw.digest, cfg.data.target, name=cfg.name)
            folds_run = [fold_run(run, f"{name}-fold{fold.index + 1}", cfg, frame, raw.digest, fold, len(plan))
                         for fold in plan]
            summary = record_summary(run, cfg, frame, [result for result, _ in folds_run], started)
            summary.fold_run_ids = [run_id for _, run_id in folds_run]
    get_run_logger().info("backtest %s finished: %s", run.run_id, summary.headline)
    return summary


def run_backtest(config_path: str | None = "configs/default.yaml", data: str | None = None, folds: int | None = None,
                 window: str | None = None, experiment: str | None = None, config: PipelineConfig | None = None,
                 parallel: int = 1, dask_address: str | None = None) -> BacktestSummary:
    """`backtest_flow` on the task runner its folds run on (many series): `dask_address` (else
    $PIPELINE_DASK_ADDRESS), else `parallel` local processes, as sweep trials (`tasks.task_runner`)."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1 (got {parallel})")
    runner, _ = task_runner(parallel, dask_address or os.environ.get(DASK_ADDRESS_ENV))
    return backtest_flow.with_options(task_runner=runner)(config_path=config_path, data=data, folds=folds,
                                                           window=window, experiment=experiment, config=config)


@task(name="fold", **STEP)
def panel_fold_task(data: Panel, cfg: PipelineConfig, fold: PanelFold, parent: ParentRef,
                    tracking_uri: str) -> tuple[PanelFoldResult, str]:
    """One fold of many series as a child run of the backtest: its params, per-epoch losses, pooled scores and
    its per-series table."""
    client = store.get_client(cfg.with_overrides(tracking={"uri": tracking_uri}))
    tags = {store.PARENT_RUN_TAG: parent.run_id, "run_type": "backtest-fold", "fold": str(fold.index + 1),
            "data_digest": parent.data_digest, **prefect_tags()}
    with store.tracked_run(client, parent.experiment_id, f"{parent.name}-fold{fold.index + 1}", tags,
                              data_source=cfg.data.source_label) as run:
        store.log_params_and_tags(client, run.run_id, {
            "fold": str(fold.index + 1), "series": str(len(fold.folds)), "test_rows": str(fold.step),
            "val_rows": str(fold.val_rows)}, {})
        epoch_logger = store.EpochLogger(client, run.run_id)
        try:
            result = backtest.run_panel_fold(data, cfg, fold, on_epoch_end=epoch_logger)
        finally:
            epoch_logger.flush()
        store.log_metrics(client, run.run_id, result.metrics())
        store.log_text(client, run.run_id, result.scores.csv(), "backtest/series_scores.csv")
    return result, run.run_id


def panel_backtest(run: TrackedRun, name: str, cfg: PipelineConfig, config_path: str | None, raw: Any,
                   started: float) -> BacktestSummary:
    """The folds of many series, every fold a child run, `parallel` at a time on the flow's task runner; then the
    per-series table, the error distribution per fold and the pooled verdict on the parent."""
    client = run.client
    cfg, data = validate_series_task(raw, cfg)
    store.log_params_and_tags(client, run.run_id, cfg.flat(), {"data_digest": raw.digest})
    store.log_config(client, run.run_id, cfg, config_path)
    plan, notes = backtest.plan_panel_folds(data, cfg)
    for note in notes:
        get_run_logger().warning(note)
    parent = ParentRef(run.run_id, run.experiment_id, name, raw.digest)
    futures = [panel_fold_task.with_options(task_run_name=f"fold-{fold.index + 1}").submit(
        data, cfg, fold, parent, client.tracking_uri) for fold in plan]
    wait(futures)
    done = [future.result() for future in futures]
    results = [result for result, _ in done]
    summary = record_panel_summary(run, cfg, data, results, started)
    summary.fold_run_ids, summary.notes = [r for _, r in done], [*notes, *summary.notes]
    return summary


def record_panel_summary(run: TrackedRun, cfg: PipelineConfig, data: Panel, results: list[PanelFoldResult],
                         started: float) -> BacktestSummary:
    """The parent run's summary of many series: metrics over folds and pooled, the verdict against the strongest
    baseline, the per-series CSV, the fold table, the error distribution per fold and the calibration plot."""
    client, column = run.client, str(data.column)
    metrics = backtest.summarize_panel(results, column)
    baseline = promotion.strongest_baseline(metrics, "mase", cfg.registry.baseline, split="backtest")
    table = backtest.panel_fold_table(results)
    tags, notes = backtest.panel_findings(metrics, table, baseline, cfg.backtest.window)
    if "warning" in tags:
        get_run_logger().warning(tags["warning"])
    metrics["time_total_s"] = time.perf_counter() - started
    store.log_params_and_tags(client, run.run_id, {}, {**tags, "data_series": str(len(data.series))})
    store.log_metrics(client, run.run_id, metrics)
    series = backtest.series_table(results, column)
    store.log_text(client, run.run_id, series.to_csv(index=False, float_format="%.6g"), "backtest/series_scores.csv")
    store.log_text(client, run.run_id, table.to_csv(index=False), "backtest/folds.csv")
    fig = plots.plot_fold_distribution(series, "mase", ["naive", "seasonal_naive"],
                                       f"{cfg.name}: MASE per series, {len(results)} {cfg.backtest.window} folds")
    store.log_figure(client, run.run_id, fig, "plots/backtest_series_mase.png")
    plots.close(fig)
    pooled = backtest.concat_forecasts([fc for r in results for fc in r.forecasts.values()])
    if pooled.bands:  # nominal vs achieved coverage of every fold's and series' intervals, per step
        fig = plots.plot_calibration(pooled, f"{cfg.name}: backtest intervals, {len(results)} folds pooled")
        store.log_figure(client, run.run_id, fig, "plots/calibration.png")
        plots.close(fig)
    headline = run_report.headline(metrics, ("mase", baseline[0]), split="backtest")
    return BacktestSummary(run_id=run.run_id, experiment_id=run.experiment_id, fold_run_ids=[], folds=table,
                           metrics=metrics, window=cfg.backtest.window, notes=notes,
                           headline=f"pooled over {len(data.series)} series: {headline}", series=series)


def fold_run(parent: TrackedRun, name: str, cfg: PipelineConfig, frame: pd.DataFrame, digest: str,
             fold: Fold, folds: int = 0) -> tuple[FoldResult, str]:
    """One fold as a child run of `parent`: its params, its training and scores; the result and the run id."""
    tags = {store.PARENT_RUN_TAG: parent.run_id, "run_type": "backtest-fold", "fold": str(fold.index + 1),
            "data_digest": digest, **prefect_tags()}
    with store.tracked_run(parent.client, parent.experiment_id, name, tags, data_source=cfg.data.source) as run:
        store.log_params_and_tags(run.client, run.run_id, backtest.fold_params(frame, fold, cfg.backtest.window), {})
        result = fold_task(frame, cfg, fold, store.EpochLogger(run.client, run.run_id), folds)
        fold_tags, fold_metrics = backtest.fold_record(result)
        store.log_params_and_tags(run.client, run.run_id, {}, fold_tags)
        store.log_metrics(run.client, run.run_id, fold_metrics)
    return result, run.run_id


def record_summary(run: TrackedRun, cfg: PipelineConfig, frame: pd.DataFrame, results: list[FoldResult],
                   started: float) -> BacktestSummary:
    """The parent run's summary: metrics over folds, warnings, the fold table and the plot of every fold."""
    metrics = backtest.summarize(results)
    table = backtest.fold_table(frame, results)
    tags, notes = backtest.summary_findings(metrics, table, cfg.backtest.window)
    if "warning" in tags:
        get_run_logger().warning(tags["warning"])
    metrics["time_total_s"] = time.perf_counter() - started
    store.log_params_and_tags(run.client, run.run_id, {}, tags)
    store.log_metrics(run.client, run.run_id, metrics)
    store.log_text(run.client, run.run_id, table.to_csv(index=False), "backtest/folds.csv")
    fig = plots.plot_backtest(
        frame[cfg.data.target], [(frame.index[r.fold.cutoff], r.forecasts) for r in results],
        f"{cfg.data.target}: walk-forward backtest, {len(results)} {cfg.backtest.window} folds ({cfg.name})")
    store.log_figure(run.client, run.run_id, fig, "plots/backtest.png")
    plots.close(fig)
    pooled = backtest.concat_forecasts([r.forecasts for r in results])
    if pooled.bands:  # nominal vs achieved coverage of every fold's intervals, per step
        fig = plots.plot_calibration(pooled, f"{cfg.name}: backtest intervals, {len(results)} folds pooled")
        store.log_figure(run.client, run.run_id, fig, "plots/calibration.png")
        plots.close(fig)
    measure = ("rmse", promotion.strongest_baseline(metrics, "rmse", cfg.registry.baseline, split="backtest")[0])
    return BacktestSummary(run_id=run.run_id, experiment_id=run.experiment_id, fold_run_ids=[], folds=table,
                           metrics=metrics, window=cfg.backtest.window, notes=notes,
                           headline=run_report.headline(metrics, measure, split="backtest"))
