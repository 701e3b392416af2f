"""The backtest flow: walk-forward evaluation as one MLflow parent run with a child run per fold.

ingest -> validate -> plan folds -> (refit scalers + model on the rows before the cutoff,
forecast the next block) per fold -> summary (mean and spread per metric, pooled metrics),
the plot of every fold's forecasts against the series, and the fold table on the parent.
Nothing is registered: a backtest measures a config, it does not ship a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.common import STEP, ingest_task, prefect_tags
from flows.training import resolve, validate_task
from pipeline import backtest, plots, tracking
from pipeline.backtest import Fold, FoldResult
from pipeline.config import PipelineConfig
from pipeline.errors import DataError, PipelineError
from pipeline.reproduce import git_state, weights_digest

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow nests a run under the run with this id


@dataclass
class BacktestSummary:
    """What `pipeline backtest` prints: the parent run, the fold table and the summary metrics."""

    run_id: str
    experiment_id: str
    fold_run_ids: list[str]
    folds: pd.DataFrame
    metrics: dict[str, float]
    window: str
    notes: list[str] = field(default_factory=list)


@task(name="plan-folds", **STEP)
def plan_task(frame: pd.DataFrame, cfg: PipelineConfig, folds: int | None, window: str | None) -> list[Fold]:
    return backtest.plan_folds(len(frame), cfg, folds, window)


@task(name="fold", **STEP)
def fold_task(frame: pd.DataFrame, cfg: PipelineConfig, fold: Fold, epoch_logger: Any) -> FoldResult:
    result = backtest.run_fold(frame, cfg, fold, on_epoch_end=epoch_logger)
    epoch_logger.flush()
    return result


def fold_params(frame: pd.DataFrame, fold: Fold, window: str) -> dict[str, str]:
    return {
        "fold": str(fold.index + 1), "window": window,
        "train_start": str(frame.index[fold.start].date()), "val_start": str(frame.index[fold.val_start].date()),
        "cutoff": str(frame.index[fold.cutoff].date()), "test_end": str(frame.index[fold.end - 1].date()),
        "train_rows": str(fold.train_rows), "val_rows": str(fold.val_rows), "test_rows": str(fold.test_rows),
    }


def worse_than_persistence(metrics: dict[str, float], what: str) -> str | None:
    ratio = metrics.get("test_rmse_ratio")
    if ratio is not None and ratio > 1.0:
        return f"model is worse than persistence on {what} (RMSE ratio {ratio:.3f})"
    return None


@flow(name="lstm-backtest", log_prints=False)
def backtest_flow(
    config_path: str | None = "configs/default.yaml",
    data: str | None = None,
    folds: int | None = None,
    window: str | None = None,
    experiment: str | None = None,
) -> BacktestSummary:
    """Walk-forward backtest of a config: each fold refits on rows before its cutoff only."""
    logger = get_run_logger()
    started = time.perf_counter()
    cfg = resolve(config_path, data, experiment, None)
    overrides = {k: v for k, v in {"folds": folds, "window": window}.items() if v is not None}
    if overrides:
        cfg = cfg.with_overrides(backtest=overrides)
    client = tracking.get_client(cfg)
    experiment_id = tracking.ensure_experiment(client, cfg.tracking.experiment)
    run_name = f"{cfg.name}-backtest-{time.strftime('%Y%m%d-%H%M%S')}"
    base_tags = {**prefect_tags(), "run_type": "backtest", "data_source": cfg.data.source, **git_state(),
                 **{f"version.{k}": v for k, v in tracking.library_versions().items()}}
    run_id = tracking.start_run(client, experiment_id, run_name=run_name, tags=base_tags)
    logger.info("MLflow backtest run %s in experiment %r", run_id, cfg.tracking.experiment)
    fold_run_id: str | None = None
    try:
        tracking.log_params_and_tags(client, run_id, cfg.flat(), {})
        tracking.log_config(client, run_id, cfg, config_path)
        raw = ingest_task(cfg.data.source)
        data_ = validate_task(raw, cfg)
        frame = data_.frame
        plan = plan_task(frame, cfg, folds, window)
        tracking.log_params_and_tags(client, run_id, {}, {
            "data_digest": raw.digest, "data_rows": str(len(frame)),
            "data_start": str(frame.index[0].date()), "data_end": str(frame.index[-1].date())})
        tracking.log_dataset(client, run_id, frame, raw.source, raw.digest, cfg.data.target, name=cfg.name)
        results: list[FoldResult] = []
        fold_run_ids: list[str] = []
        for fold in plan:
            fold_run_id = tracking.start_run(
                client, experiment_id, run_name=f"{run_name}-fold{fold.index + 1}",
                tags={PARENT_RUN_TAG: run_id, "run_type": "backtest-fold", "fold": str(fold.index + 1),
                      "data_digest": raw.digest, **{k: v for k, v in base_tags.items() if k != "run_type"}})
            tracking.log_params_and_tags(client, fold_run_id, fold_params(frame, fold, cfg.backtest.window), {})
            result = fold_task(frame, cfg, fold, tracking.EpochLogger(client, fold_run_id))
            fold_tags = {"weights_digest": weights_digest(result.train.model.state_dict()),
                         "best_epoch": str(result.train.best_epoch + 1)}
            warning = worse_than_persistence(result.scores, f"fold {fold.index + 1}")
            if warning:
                fold_tags["warning"] = warning
            tracking.log_params_and_tags(client, fold_run_id, {}, fold_tags)
            tracking.log_metrics(client, fold_run_id, {**result.scores, "epochs_run": result.train.epochs_run,
                                                       "train_threads": result.train.threads,
                                                       "time_fold_s": result.seconds})
            tracking.end_run(client, fold_run_id, "FINISHED")
            fold_run_ids.append(fold_run_id)
            fold_run_id = None
            results.append(result)
        summary_metrics = backtest.summarize(results)
        table = backtest.fold_table(frame, results)
        notes: list[str] = []
        tags: dict[str, str] = {"folds": str(len(plan)), "window": cfg.backtest.window}
        mean_ratio = summary_metrics.get("test_rmse_ratio_mean", float("nan"))
        pooled_ratio = summary_metrics.get("backtest_rmse_ratio", float("nan"))
        if mean_ratio > 1.0 or pooled_ratio > 1.0:
            which = " and ".join(name for name, ratio in (("pooled over all folds", pooled_ratio),
                                                          ("on average over folds", mean_ratio)) if ratio > 1.0)
            tags["warning"] = (f"model is worse than persistence {which} (pooled RMSE ratio "
                               f"{pooled_ratio:.4f}, mean over folds {mean_ratio:.4f})")
            notes.append(tags["warning"])
            logger.warning(tags["warning"])
        worse_folds = int((table["rmse_ratio"] > 1.0).sum())
        if worse_folds:
            notes.append(f"{worse_folds} of {len(plan)} folds are worse than persistence")
        tracking.log_params_and_tags(client, run_id, {}, tags)
        summary_metrics["time_total_s"] = time.perf_counter() - started
        tracking.log_metrics(client, run_id, summary_metrics)
        tracking.log_text(client, run_id, table.to_csv(index=False), "backtest/folds.csv")
        fig = plots.plot_backtest(
            frame[cfg.data.target], [(frame.index[r.fold.cutoff], r.forecasts) for r in results],
            f"{cfg.data.target}: walk-forward backtest, {len(plan)} {cfg.backtest.window} folds ({cfg.name})")
        tracking.log_figure(client, run_id, fig, "plots/backtest.png")
        plots.close(fig)
        tracking.end_run(client, run_id, "FINISHED")
        logger.info("backtest %s finished: pooled RMSE %.6g vs persistence %.6g", run_id,
                    summary_metrics["backtest_rmse"], summary_metrics["backtest_naive_rmse"])
        return BacktestSummary(run_id=run_id, experiment_id=experiment_id, fold_run_ids=fold_run_ids, folds=table,
                               metrics=summary_metrics, window=cfg.backtest.window, notes=notes)
    except BaseException as exc:
        report = exc.report if isinstance(exc, DataError) else None
        if fold_run_id is not None:
            tracking.failure_report(client, fold_run_id, exc, report)
        tracking.failure_report(client, run_id, exc, report)
        if not isinstance(exc, PipelineError):
            logger.exception("backtest run %s failed", run_id)
        raise
