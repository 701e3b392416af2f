"""Many series in one training run (`data.series_column`): thin Prefect wiring of `pipeline.panel`.

validate each series -> split/scale/window each series -> train (one global network, or one per
series as mapped tasks) -> per-series scores and their means -> refit on every row (optional)
-> log the model of every series -> register, the gate comparing mean MASE with seasonal naive
and with the champion. Called by `flows.training.run_training` inside its tracked MLflow run.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, task, unmapped
from prefect.futures import wait

from flows.common import STEP, prefect_tags
from flows.reporting import publish_promotion
from flows.training import train_task
from pipeline import backtest, evaluate, gate, panel, plots, registry, reports, runs, tracking
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError, TrainingError
from pipeline.evaluate import Forecasts
from pipeline.features import Preprocessor, Windows, input_rows_needed
from pipeline.ingest import RawData
from pipeline.intervals import Calibration
from pipeline.panel import Panel, PanelFit, PanelScores, SeriesPrep
from pipeline.runs import Timings, TrainingSummary
from pipeline.tracking import TrackedRun
from pipeline.train import TrainResult, fit, init_model

SPLITS_SCORED = ("val", "test")


@task(name="validate-series", **STEP)
def validate_panel_task(raw: RawData, cfg: PipelineConfig) -> tuple[PipelineConfig, Panel]:
    """Each series held to the contract; `auto` settings then resolved over every series (`panel.resolve_panel`)."""
    data = panel.validate_panel(raw, cfg, min_rows=input_rows_needed(cfg))
    return panel.resolve_panel(raw, cfg, data)


@task(name="split-scale-window", **STEP)
def prepare_panel_task(data: Panel, cfg: PipelineConfig) -> dict[str, SeriesPrep]:
    return panel.prepare_panel(data, cfg)


def retry_lost_work(task: Any, task_run: Any, state: Any) -> bool:
    """Try a series again when its task was lost (a Dask worker gone, a process killed), not when it failed on
    its own terms (a PipelineError: a diverged loss, a series too short): that would only fail again."""
    try:
        state.result()
    except PipelineError:
        return False
    except BaseException:  # noqa: BLE001 - anything else is the machinery's, not the series'
        return True
    return False


@task(name="train-series", retries=1, retry_condition_fn=retry_lost_work, **STEP)
def train_series_task(series: str, windows: dict[str, Windows], cfg: PipelineConfig) -> TrainResult:
    """One series' own network (model.strategy: local)."""
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    return fit(model, windows["train"], windows["val"] if len(windows["val"]) else None, cfg.train)


def train_local(preps: dict[str, SeriesPrep], cfg: PipelineConfig) -> PanelFit:
    """One mapped task per trainable series; a series whose training fails is left out alone."""
    chosen = [sid for sid, p in preps.items() if p.trainable]
    futures = train_series_task.map(chosen, [preps[s].windows for s in chosen], unmapped(cfg))
    wait(futures)
    result = PanelFit()
    for sid, future in zip(chosen, futures):
        if future.state.is_completed():
            result.local[sid] = future.result()
        else:
            result.failed[sid] = str(future.state.result(raise_on_failure=False))
            get_run_logger().warning("series %r failed to train and is left out: %s", sid, result.failed[sid])
    if not result.local:
        raise TrainingError(f"every series failed to train: {result.failed}")
    return result


def train_panel(run: TrackedRun, preps: dict[str, SeriesPrep], cfg: PipelineConfig) -> PanelFit:
    """The global network on the stacked windows of every series, or one network per series."""
    if cfg.model.strategy == "local":
        return train_local(preps, cfg)
    epoch_logger = tracking.EpochLogger(run.client, run.run_id)
    result = train_task(panel.stacked(preps), cfg, epoch_logger, rows=panel.rows_of(preps))
    epoch_logger.flush()
    return PanelFit(shared=result)


@task(name="evaluate", **STEP)
def evaluate_panel_task(trained: PanelFit, data: Panel, preps: dict[str, SeriesPrep],
                        cfg: PipelineConfig) -> tuple[dict[str, Forecasts], dict[str, PanelScores], Calibration | None]:
    """Each series' forecasts of the validation and test parts with intervals fitted on the validation errors
    (scaled per series), and their scores; the test forecasts, the scores and the intervals."""
    served = trained.serves(preps)
    forecasts = {s: panel.forecast_panel(trained.model_for, data, served, cfg, s) for s in SPLITS_SCORED}
    scales = panel.series_scales(data, preps, cfg)
    calibration = panel.calibrate_panel(forecasts["val"], scales, cfg)
    for note in calibration.notes if calibration else ():
        get_run_logger().warning(note)
    forecasts = {s: panel.with_panel_intervals(fc, calibration, scales) for s, fc in forecasts.items()}
    scores = {s: panel.score_panel(fc, data, preps, cfg, s) for s, fc in forecasts.items() if fc}
    return forecasts["test"], scores, calibration


@task(name="refit", **STEP)
def refit_task(trained: PanelFit, data: Panel, cfg: PipelineConfig) -> tuple[PanelFit, dict[str, SeriesPrep]]:
    """Train again on every row up to the last one, for the epochs early stopping chose (train.refit)."""
    preps = panel.refit_panel(data, cfg)
    epochs = trained.best_epochs()
    if trained.shared is not None:
        again = panel.refit_config(cfg, epochs["*"])
        windows = panel.stacked(preps)
        model = init_model(cfg, n_features=windows["train"].X.shape[2])
        return PanelFit(shared=fit(model, windows["train"], None, again.train)), preps
    refit = PanelFit()
    for sid, n in epochs.items():
        w = preps[sid].windows
        model = init_model(cfg, n_features=w["train"].X.shape[2])
        refit.local[sid] = fit(model, w["train"], None, panel.refit_config(cfg, n).train)
    return refit, preps


def log_scores(run: TrackedRun, cfg: PipelineConfig, scores: dict[str, PanelScores], test: dict[str, Forecasts],
               data: Panel, trained: PanelFit) -> None:
    """The per-series tables as MLflow artifacts (CSV) and a Prefect table artifact; the test forecasts as CSV;
    the figures: calibration, loss, chosen or worst series' forecasts, per-series MASE against seasonal naive."""
    column = data.column
    fit_shown = trained.first  # the global network, or the first series' own
    losses = (fit_shown.train_loss, fit_shown.val_loss, fit_shown.best_epoch,
              "Loss per epoch" if trained.shared is not None else f"Loss per epoch of {column} {next(iter(trained.local))}")
    for path, fig in plots.panel_figures({s: f[cfg.data.target] for s, f in data.series.items()}, test,
                                         scores["test"].table, column, cfg.plots.series, cfg.plots.worst,
                                         losses).items():
        tracking.log_figure(run.client, run.run_id, fig, path)
        plots.close(fig)
    for split, table in scores.items():
        tracking.log_text(run.client, run.run_id, table.csv(), f"evaluation/{split}_series_scores.csv")
    tracking.log_text(run.client, run.run_id, panel.forecast_tables(test, column).to_csv(index=False),
                      "evaluation/test_forecasts.csv")
    pooled = backtest.concat_forecasts(list(test.values()))
    if pooled.bands:  # nominal vs achieved coverage per step, every series' test windows pooled
        fig = plots.plot_calibration(pooled, f"{cfg.name}: test intervals, {len(test)} series pooled")
        tracking.log_figure(run.client, run.run_id, fig, "plots/calibration.png")
        plots.close(fig)
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(scores["test"].records(), key=reports.artifact_key(cfg.name, "series-scores"),
                              description=f"{cfg.name}: test scores per series (RMSE, sMAPE, MASE beside the baselines)")
    except Exception as exc:  # noqa: BLE001 - best effort: MLflow holds the same table
        get_run_logger().warning("could not create the per-series table artifact: %s", exc)


@task(name="log-model", **STEP)
def log_panel_model_task(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData, data: Panel,
                         trained: PanelFit, preps: dict[str, SeriesPrep], metrics: dict[str, float],
                         calibration: Calibration | None = None) -> Any:
    """Log the config, the dataset and the model of every series (with the intervals), then the metrics;
    MLflow's ModelInfo."""
    tracking.log_config(run.client, run.run_id, cfg, config_path)
    bundle = panel.bundle(trained, preps, cfg, calibration)
    tracking.log_dict(run.client, run.run_id, bundle.series.to_dict(), "scalers/series.json")  # type: ignore[union-attr]
    long = panel.input_example(data, cfg, rows=10**9, series=len(data.series))
    tracking.log_dataset(run.client, run.run_id, long, raw.source, raw.digest, cfg.data.target, name=cfg.name)
    example = panel.input_example(data, cfg, rows=bundle.preprocessor.input_rows)
    info = tracking.log_model(run.run_id, bundle, example, run.client.tracking_uri)
    tracking.log_metrics(run.client, run.run_id, metrics, model_id=info.model_id, dataset=(cfg.name, raw.digest))
    return info


@task(name="register", **STEP)
def register_panel_task(run: TrackedRun, cfg: PipelineConfig, model_uri: str, model_id: str | None, raw: RawData,
                        inputs: panel.GateInputs, metrics: dict[str, float]) -> registry.Decision:
    """Register a `@challenger` version; the gate compares mean MASE with seasonal naive's and the champion's."""
    name = cfg.registry.model_name
    seasonal = "test_seasonal_naive_mase" in metrics
    baseline = metrics["test_seasonal_naive_mase" if seasonal else "test_naive_mase"]
    column = str(cfg.data.series_column)

    def rescore(uri: str) -> gate.Score:  # the champion, with its own logged preprocessing, on every series
        return registry.rescore(uri, inputs.rows, inputs.actual, [], cfg.window.horizon, cfg.data.target,
                                score_table=lambda t: gate.table_mase(t, column, inputs.actual, inputs.first_dates,
                                                                      inputs.scales, cfg.window.horizon))

    window = registry.TestWindow(*inputs.window, raw.digest)
    decision = registry.register_and_promote(
        run.client, name, model_uri, run.run_id, runs.version_tags(raw.digest, metrics, prefect_tags()), window,
        metrics["test_mase"], baseline, rescore,
        (cfg.registry.min_gain_over_persistence, cfg.registry.min_gain_over_champion),
        runs.registered_by(run.run_id, prefect_tags().get("prefect.flow_run_id")), model_id=model_id,
        measure=("MASE", "seasonal naive" if seasonal else "naive"),
        coverage=gate.coverage_requirement(metrics, cfg.registry.max_coverage_error))
    publish_promotion(decision.markdown(name, run.run_id), name, f"{name} v{decision.version}: {decision.reason}")
    return decision


def train_portfolio(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData,
                    timings: Timings) -> tuple[TrainingSummary, dict[str, str]]:
    """Inside the MLflow run: validate, prepare, train, evaluate, (refit,) log, register; the summary and data tags."""
    with timings.stage("validate"):
        cfg, data = validate_panel_task(raw, cfg)
    tracking.log_params_and_tags(run.client, run.run_id, cfg.flat(), {})  # `auto` settings as resolved
    with timings.stage("prepare"):
        preps = prepare_panel_task(data, cfg)
    with timings.stage("train"):
        trained = train_panel(run, preps, cfg)
    with timings.stage("evaluate"):
        test, scores, calibration = evaluate_panel_task(trained, data, preps, cfg)
    metrics = {k: v for s in scores.values() for k, v in s.means().items()}
    tags = record_panel_findings(run, cfg, raw, data, preps, trained, metrics)
    log_scores(run, cfg, scores, test, data, trained)
    served, served_preps = trained, preps
    if cfg.train.refit:
        with timings.stage("refit"):
            served, served_preps = refit_task(trained, data, cfg)
    with timings.stage("tracking"):
        logged = log_panel_model_task(run, cfg, config_path, raw, data, served, served_preps, metrics, calibration)
    summary = TrainingSummary(run_id=run.run_id, experiment_id=run.experiment_id, metrics=metrics,
                              model_uri=logged.model_uri, model_id=logged.model_id,
                              notes=[*data.notes, *(f"warning: {n}" for n in (calibration.notes if calibration else ()))],
                              timings=timings.seconds, test_forecasts=panel.forecast_tables(test, data.column),
                              series_scores=scores["test"].table)
    if cfg.registry.enabled:
        inputs = panel.gate_inputs(data, preps, test, cfg, context_rows=4 * Preprocessor(cfg).input_rows)
        register_panel(run, cfg, raw, inputs, summary, timings)
    tracking.log_metrics(run.client, run.run_id, timings.metrics())
    return summary, tags


def record_panel_findings(run: TrackedRun, cfg: PipelineConfig, raw: RawData, data: Panel,
                          preps: dict[str, SeriesPrep], trained: PanelFit, metrics: dict[str, float]) -> dict[str, str]:
    """Run tags (series counts, dates, training) and the notes; adds training figures to `metrics`; the tags."""
    logger = get_run_logger()
    for note in data.notes:
        logger.warning(note) if note.startswith("warning") else logger.info(note)
    first = trained.first
    tags = {"data_digest": raw.digest, **panel.panel_tags(data, preps), "model_strategy": cfg.model.strategy,
            "train_device": first.device, "series_failed": str(len(trained.failed))}
    if trained.shared is not None:
        tags.update(best_epoch=str(first.best_epoch + 1), stopped_early=str(first.stopped_early))
        stalled = evaluate.training_stalled(first)  # stuck at epoch 1, or still improving at the epoch limit
        if stalled:
            tags["training_warning"] = stalled
            logger.warning(stalled)
    metrics.update(epochs_run=float(max(r.epochs_run for r in [trained.shared, *trained.local.values()] if r)),
                   train_threads=float(first.threads))
    if data.notes:
        tracking.log_text(run.client, run.run_id, "\n".join(data.notes), "data/validation_notes.txt")
    tracking.log_params_and_tags(run.client, run.run_id, {}, tags)
    logger.log(logging.INFO, "test over %d series: MASE %.4g (seasonal naive %.4g), sMAPE %.4g", int(metrics.get(
        "test_series", 0)), metrics.get("test_mase", float("nan")), metrics.get("test_seasonal_naive_mase", float("nan")),
        metrics.get("test_smape", float("nan")))
    return tags


def register_panel(run: TrackedRun, cfg: PipelineConfig, raw: RawData, inputs: panel.GateInputs,
                   summary: TrainingSummary, timings: Timings) -> None:
    """Register and gate the model of every series (one registration at a time on a local store), then tag the run."""
    with timings.stage("registry"), tracking.store_lock(run.tracking_uri):
        decision = register_panel_task(run, cfg, summary.model_uri, summary.model_id, raw, inputs, summary.metrics)
    summary.model_name, summary.version, summary.alias, summary.reason = (
        cfg.registry.model_name, decision.version, decision.alias, decision.reason)
    tracking.log_params_and_tags(run.client, run.run_id, {}, {
        "registered_version": decision.version, "registered_alias": decision.alias, "promotion": decision.reason,
        **decision.tags()})
