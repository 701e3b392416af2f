"""The backtest flow: walk-forward evaluation as one MLflow parent run with a child run per fold.

ingest -> validate -> plan folds -> (refit scalers + model on the rows before the cutoff,
forecast the next block) per fold -> summary (mean and spread per metric, pooled metrics),
the plot of every fold's forecasts against the series, and the fold table on the parent.
Nothing is registered: a backtest measures a config, it does not ship a model.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.tasks import STEP, ingest_task, prefect_tags, validate_task
from pipeline import backtest, plots, progress, runs, tracking
from pipeline.backtest import BacktestSummary, Fold, FoldResult
from pipeline.config import PipelineConfig, resolve
from pipeline.defaults import resolve_auto
from pipeline.tracking import TrackedRun

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
    each fold refits on rows before its cutoff only."""
    started = time.perf_counter()
    cfg = backtest.require_one_series(resolve(config or config_path, data, experiment, folds=folds, window=window))
    client = tracking.get_client(cfg)
    experiment_id = tracking.ensure_experiment(client, cfg.tracking.experiment)
    name = runs.run_name(cfg.name, "backtest", cfg.data.source)
    tags = {**prefect_tags(), "run_type": "backtest"}
    with tracking.tracked_run(client, experiment_id, name, tags, data_source=cfg.data.source) as run:
        raw = ingest_task(cfg.data.source)
        frame = validate_task(raw, cfg).frame
        cfg = resolve_auto(cfg, frame)  # `auto` settings from the data, logged as the run's params
        tracking.log_params_and_tags(client, run.run_id, cfg.flat(), {})
        tracking.log_config(client, run.run_id, cfg, config_path)
        plan = plan_task(frame, cfg)
        tracking.log_params_and_tags(client, run.run_id, {}, backtest.data_tags(frame, raw.digest))
        tracking.log_dataset(client, run.run_id, frame, raw.source, raw.digest, cfg.data.target, name=cfg.name)
        folds_run = [fold_run(run, f"{name}-fold{fold.index + 1}", cfg, frame, raw.digest, fold, len(plan)) for fold in plan]
        summary = record_summary(run, cfg, frame, [result for result, _ in folds_run], started)
    summary.fold_run_ids = [run_id for _, run_id in folds_run]
    get_run_logger().info("backtest %s finished: pooled RMSE %.6g vs persistence %.6g", run.run_id,
                          summary.metrics["backtest_rmse"], summary.metrics["backtest_naive_rmse"])
    return summary


def fold_run(parent: TrackedRun, name: str, cfg: PipelineConfig, frame: pd.DataFrame, digest: str,
             fold: Fold, folds: int = 0) -> tuple[FoldResult, str]:
    """One fold as a child run of `parent`: its params, its training and scores; the result and the run id."""
    tags = {tracking.PARENT_RUN_TAG: parent.run_id, "run_type": "backtest-fold", "fold": str(fold.index + 1),
            "data_digest": digest, **prefect_tags()}
    with tracking.tracked_run(parent.client, parent.experiment_id, name, tags, data_source=cfg.data.source) as run:
        tracking.log_params_and_tags(run.client, run.run_id, backtest.fold_params(frame, fold, cfg.backtest.window), {})
        result = fold_task(frame, cfg, fold, tracking.EpochLogger(run.client, run.run_id), folds)
        fold_tags, fold_metrics = backtest.fold_record(result)
        tracking.log_params_and_tags(run.client, run.run_id, {}, fold_tags)
        tracking.log_metrics(run.client, run.run_id, fold_metrics)
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
    tracking.log_params_and_tags(run.client, run.run_id, {}, tags)
    tracking.log_metrics(run.client, run.run_id, metrics)
    tracking.log_text(run.client, run.run_id, table.to_csv(index=False), "backtest/folds.csv")
    fig = plots.plot_backtest(
        frame[cfg.data.target], [(frame.index[r.fold.cutoff], r.forecasts) for r in results],
        f"{cfg.data.target}: walk-forward backtest, {len(results)} {cfg.backtest.window} folds ({cfg.name})")
    tracking.log_figure(run.client, run.run_id, fig, "plots/backtest.png")
    plots.close(fig)
    pooled = backtest.concat_forecasts([r.forecasts for r in results])
    if pooled.bands:  # nominal vs achieved coverage of every fold's intervals, per step
        fig = plots.plot_calibration(pooled, f"{cfg.name}: backtest intervals, {len(results)} folds pooled")
        tracking.log_figure(run.client, run.run_id, fig, "plots/calibration.png")
        plots.close(fig)
    return BacktestSummary(run_id=run.run_id, experiment_id=run.experiment_id, fold_run_ids=[], folds=table,
                           metrics=metrics, window=cfg.backtest.window, notes=notes)
