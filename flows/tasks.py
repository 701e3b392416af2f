"""The tasks and in-run steps every flow shares (training, backtest, sweep, forecast): thin Prefect wiring of
the plain steps in `src/pipeline`. No flow imports another flow; each imports this module.

ingest -> validate -> split/scale/windows -> train -> evaluate -> plots -> track -> register, for one
series (`train_and_register`) and for many (`train_portfolio`: validate each series -> split/scale/window
each -> one global network or one per series as mapped tasks -> per-series scores and their means ->
refit on every row (`train.refit`, on by default) -> log the model of every series -> register).
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.tasks import exponential_backoff

from flows.early_server import exit_with_parent
from flows.reporting import publish_promotion
from pipeline.config.settings import PipelineConfig, served_config, theta_weight
from pipeline.data import panel
from pipeline.data.auto import resolve_auto
from pipeline.data.contract import ValidatedData, validate_prices
from pipeline.data.panel import ONE_SERIES, Panel
from pipeline.data.reading import RawData, RemoteReadError, load_prices
from pipeline.errors import ConfigError, PipelineError, TrainingError
from pipeline.evaluation import plots
from pipeline.evaluation.intervals import Calibration
from pipeline.evaluation.metrics import Forecasts, Scores, SplitScores, findings, per_step, score, training_stalled
from pipeline.features import transforms
from pipeline.features.windows import Preprocessor, SplitBounds, Windows, input_rows_needed, min_rows_needed
from pipeline.model import progress
from pipeline.model.training import (TrainResult, ensemble_result, fit, fit_member, fit_network, init_model,
                                     member_runs, plan_training)
from pipeline.runtime import kill_point
from pipeline.serving.model_format import ForecastBundle
from pipeline.tracking import promotion, registry, run_report, store, training_run
from pipeline.tracking.forecast_files import SQLITE_SIBLINGS, Guarded
from pipeline.tracking.store import TrackedRun
from pipeline.tracking.training_run import Timings, TrainingSummary
from pipeline.training import backtest, steps
from pipeline.training.steps import PanelFit, PanelScores, SeriesPrep

DASK_ADDRESS_ENV = "PIPELINE_DASK_ADDRESS"  # a Dask scheduler for the parallel tasks when no option names one

# Data frames, models and clients hash badly: these tasks neither cache nor persist results.
STEP = {"cache_policy": NO_CACHE, "persist_result": False}


@dataclass(frozen=True)
class ParentRef:
    """What a child task (a sweep's trial, a backtest's fold) needs of the parent run (picklable: no client)."""

    run_id: str
    experiment_id: str
    name: str
    data_digest: str


def retry_remote_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only when a URL failed to download, not on a bad local file."""
    try:
        state.result()
    except RemoteReadError:
        return True
    except Exception:  # noqa: BLE001
        return False
    return False


@task(name="resolve-model", **STEP)
def resolve_task(client: Any, model_uri: str) -> registry.ModelRef:
    """A model URI pinned to its registered version (unknown names and aliases fail here)."""
    return registry.resolve_model(client, model_uri)


@task(name="load-model", **STEP)
def load_task(model_uri: str) -> tuple[Any, ForecastBundle]:
    """The logged pyfunc, checked against its manifest, and the model it holds as data."""
    from pipeline.serving.pyfunc import load_forecaster

    return load_forecaster(model_uri)


@task(name="ingest", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1),
      retry_condition_fn=retry_remote_only, **STEP)
def ingest_task(source: str | tuple[str, ...]) -> RawData:
    """The file (or, for many series, the files of a folder or a list) as read."""
    from pipeline.data.panel import load_sources

    return load_prices(source) if isinstance(source, str) and not Path(source).is_dir() else load_sources(source)


@task(name="validate", **STEP)
def validate_task(raw: RawData, cfg: PipelineConfig) -> ValidatedData:
    return validate_prices(raw.frame, cfg.data, raw.source, min_rows=min_rows_needed(cfg),
                           positive=transforms.transform_domain(cfg))


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


SPLITS_SCORED = ("val", "test")  # many series; one series also scores its training windows (train_rmse, ...)


def training_steps(cfg: PipelineConfig) -> Any:
    """The steps inside the MLflow run, one road for one series and many: `train_and_register`."""
    return train_and_register


@task(name="validate", **STEP)
def validate_series_task(raw: RawData, cfg: PipelineConfig) -> tuple[PipelineConfig, Panel]:
    """Each series held to the contract (one series: the whole file, a panel of one); `auto` settings then resolved
    from the data (over every series: `panel.resolve_panel`)."""
    if cfg.data.series_column is None:
        data = validate_task.fn(raw, cfg)
        return resolve_auto(cfg, data.frame), panel.of_one(data)
    data = panel.validate_panel(raw, cfg, min_rows=input_rows_needed(cfg))
    return panel.resolve_panel(raw, cfg, data)


@task(name="split-scale-window", **STEP)
def prepare_panel_task(data: Panel, cfg: PipelineConfig) -> dict[str, SeriesPrep]:
    return steps.prepare_panel(data, cfg)


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
    """One series' own network (model.strategy: local), its ensemble's members one after another."""
    return fit_network(cfg, windows["train"], windows["val"] if len(windows["val"]) else None)


@task(name="train-member", retries=1, retry_condition_fn=retry_lost_work, **STEP)
def train_member_task(member: int, windows: dict[str, Windows], cfg: PipelineConfig,
                      epochs: int | None = None) -> TrainResult:
    """One member of the shared network's ensemble, from its own seed, stopping early on its own (`epochs`: a refit
    of that many epochs, no validation)."""
    val = windows["val"] if epochs is None and len(windows["val"]) else None
    return fit_member(cfg, member, windows["train"], val, epochs)


def train_members(windows: dict[str, Windows], cfg: PipelineConfig, epochs: list[int] | None = None) -> TrainResult:
    """The ensemble's members as mapped tasks (in parallel on the flow's task runner: processes or Dask), combined
    by their median (`ensemble_result`); `epochs`, one count per member: a refit."""
    runs = member_runs(cfg, epochs)
    futures = train_member_task.map(list(range(len(runs))), unmapped(windows), unmapped(cfg), runs)
    return ensemble_result([future.result() for future in futures])


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


def train_panel(run: TrackedRun, preps: dict[str, SeriesPrep], cfg: PipelineConfig, timings: Timings) -> PanelFit:
    """The global network on the stacked windows of every series (one series: its own windows), or one network per
    series."""
    if cfg.model.strategy == "local" and cfg.data.series_column is not None:
        return train_local(preps, cfg)
    epoch_logger = store.EpochLogger(run.client, run.run_id)
    if cfg.model.ensemble > 1:
        windows = steps.stacked(preps)
        plan = plan_training(init_model(cfg, n_features=windows["train"].X.shape[2]), windows, cfg.train,
                             rows=steps.rows_of(preps))
        get_run_logger().info("an ensemble of %d members, each %s", cfg.model.ensemble, plan.describe())
        result = train_members(windows, cfg)
        for epoch, train_loss in enumerate(result.train_loss):  # the first member's curve, as one network's
            epoch_logger(epoch, train_loss, result.val_loss[epoch] if epoch < len(result.val_loss) else None)
    else:
        result = train_task(steps.stacked(preps), cfg, epoch_logger, rows=steps.rows_of(preps))
    epoch_logger.flush()  # outside the task: a tracking failure here must not lose the result
    timings.seconds["epoch_logging"] = epoch_logger.seconds  # part of "train"
    return PanelFit(shared=result)


@task(name="theta-weight", **STEP)
def theta_weight_task(trained: PanelFit, data: Panel, preps: dict[str, SeriesPrep], cfg: PipelineConfig
                      ) -> PipelineConfig:
    """The config the rest of the run uses: `model.theta_weight: auto` chosen on the validation origins."""
    settled_cfg = steps.with_theta_weight(trained.model_for, data, trained.serves(preps), cfg)
    if settled_cfg is not cfg:
        get_run_logger().info("Theta's weight in the forecasts, chosen on the validation origins: %s",
                              settled_cfg.model.theta_weight)
    return settled_cfg


@task(name="served-theta-weight", **STEP)
def served_theta_weight_task(trained: PanelFit, data: Panel, preps: dict[str, SeriesPrep], asked: PipelineConfig,
                             cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with the share of Theta the logged model serves (`model.theta_weight_served`): chosen again on the test
    origins, or the evaluated one."""
    recorded = steps.served_theta_weight(trained.model_for, data, trained.serves(preps), asked, cfg)
    if recorded.model.theta_weight_served != cfg.model.theta_weight:
        get_run_logger().info("Theta's weight in the served forecasts, chosen on the test origins: %s (evaluated "
                              "with %s)", recorded.model.theta_weight_served, cfg.model.theta_weight)
    return recorded


@task(name="evaluate", **STEP)
def evaluate_panel_task(trained: PanelFit, data: Panel, preps: dict[str, SeriesPrep], cfg: PipelineConfig
                        ) -> tuple[dict[str, dict[str, Forecasts]], dict[str, PanelScores], Calibration | None]:
    """Each series' forecasts of every scored split with intervals fitted on the validation errors (scaled per
    series), and their scores; the forecasts (split -> series -> forecasts), the scores and the intervals."""
    splits = SPLITS_SCORED if data.column is not None else ("train", *SPLITS_SCORED)
    forecasts, calibration = steps.forecast_splits(trained.model_for, data, trained.serves(preps), cfg, splits)
    for note in calibration.notes if calibration else ():
        get_run_logger().warning(note)
    scores = {s: steps.score_panel(forecasts[s], data, preps, cfg, s) for s in SPLITS_SCORED if forecasts[s]}
    return forecasts, scores, calibration


@task(name="served-intervals", **STEP)
def served_intervals_task(trained: PanelFit, data: Panel, preps: dict[str, SeriesPrep], cfg: PipelineConfig,
                          calibration: Calibration | None) -> Calibration | None:
    """The intervals the logged model serves with (`intervals.served`): the evaluated ones, or fitted again on the
    test origins' errors."""
    served = steps.served_calibration(trained.model_for, data, trained.serves(preps), cfg, calibration)
    for note in served.notes if served is not None and served is not calibration else ():
        get_run_logger().warning(f"served intervals: {note}")
    return served


def split_scores(forecasts: dict[str, dict[str, Forecasts]]) -> Scores:
    """One series' scores of every split (model and baselines, per step; `evaluation.metrics.score`)."""
    return Scores({split: score(fc[ONE_SERIES], prefix=split) for split, fc in forecasts.items() if fc})


@task(name="plots", **STEP)
def plots_task(run: TrackedRun, frame: pd.DataFrame, cfg: PipelineConfig, bounds: SplitBounds,
               forecasts: dict[str, Forecasts], test: SplitScores, result: TrainResult) -> None:
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
        **({"plots/horizon_rmse.png": plots.plot_horizon(per_step(test), "rmse", cfg.data.target),
            "plots/horizon_paths.png": plots.plot_horizon_paths(target, forecasts["test"])}
           if cfg.window.horizon > 1 else {}),
    }
    for path, fig in figures.items():
        store.log_figure(run.client, run.run_id, fig, path)
        plots.close(fig)


@task(name="refit", **STEP)
def refit_task(trained: PanelFit, data: Panel, cfg: PipelineConfig) -> tuple[PanelFit, dict[str, SeriesPrep]]:
    """Train again on every row up to the last one, for the epochs early stopping chose (train.refit)."""
    preps = steps.refit_panel(data, cfg)
    epochs = trained.best_epochs()
    if trained.shared is not None:
        windows = steps.stacked(preps)
        if len(epochs["*"]) > 1:  # each member for its own best epoch count, mapped tasks as they trained
            return PanelFit(shared=train_members(windows, cfg, epochs["*"])), preps
        return PanelFit(shared=fit_network(cfg, windows["train"], None, epochs=epochs["*"])), preps
    refit = PanelFit()
    for sid, counts in epochs.items():
        refit.local[sid] = fit_network(cfg, preps[sid].windows["train"], None, epochs=counts)
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
        store.log_figure(run.client, run.run_id, fig, path)
        plots.close(fig)
    for split, table in scores.items():
        store.log_text(run.client, run.run_id, table.csv(), f"evaluation/{split}_series_scores.csv")
    store.log_text(run.client, run.run_id, steps.forecast_tables(test, column).to_csv(index=False),
                      "evaluation/test_forecasts.csv")
    pooled = backtest.concat_forecasts(list(test.values()))
    if pooled.bands:  # nominal vs achieved coverage per step, every series' test windows pooled
        fig = plots.plot_calibration(pooled, f"{cfg.name}: test intervals, {len(test)} series pooled")
        store.log_figure(run.client, run.run_id, fig, "plots/calibration.png")
        plots.close(fig)
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(scores["test"].records(), key=run_report.artifact_key(cfg.name, "series-scores"),
                              description=f"{cfg.name}: test scores per series (RMSE, sMAPE, MASE beside the baselines)")
    except Exception as exc:  # noqa: BLE001 - best effort: MLflow holds the same table
        get_run_logger().warning("could not create the per-series table artifact: %s", exc)


@task(name="log-model", **STEP)
def log_model_task(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData, data: Panel,
                   trained: PanelFit, preps: dict[str, SeriesPrep], metrics: dict[str, float],
                   calibration: Calibration | None = None, evaluated: ForecastBundle | None = None) -> Any:
    """Log the config, the scalers, the dataset and the model (every series' preprocessor, the intervals; a refit
    one with the model the run evaluated beside it, `evaluated`), then the metrics (on the run and the logged
    model); MLflow's ModelInfo."""
    client, run_id = run.client, run.run_id
    store.log_config(client, run_id, cfg, config_path)
    bundle = steps.bundle(trained, preps, served_config(cfg), calibration, evaluated)
    if bundle.series is None:
        store.log_preprocessor(client, run_id, bundle.preprocessor)
    else:
        store.log_dict(client, run_id, bundle.series.to_dict(), "scalers/series.json")
    dataset = data.series[ONE_SERIES] if data.column is None else steps.input_example(data, cfg, rows=10**9,
                                                                                       series=len(data.series))
    store.log_dataset(client, run_id, dataset, raw.source, raw.digest, cfg.data.target, name=cfg.name)
    example = steps.input_example(data, cfg, rows=bundle.preprocessor.input_rows)
    info = store.log_model(run_id, bundle, example, client.tracking_uri)
    kill_point("model-logging")
    # The scores belong to the run, to this logged model and to the training dataset.
    store.log_metrics(client, run_id, metrics, model_id=info.model_id, dataset=(cfg.name, raw.digest))
    return info


@task(name="register", **STEP)
def register_task(run: TrackedRun, cfg: PipelineConfig, model_uri: str, model_id: str | None, raw: RawData,
                  data: Panel, preps: dict[str, SeriesPrep], test: dict[str, Forecasts],
                  metrics: dict[str, float]) -> promotion.Decision:
    """Register a `@challenger` version; the gate compares the test metric (the RMSE of one series, the mean MASE
    of many) with the strongest baseline's (or `registry.baseline`'s) and with the champion's, re-scored with its
    own preprocessing on the same windows, and decides whether it also becomes `@champion`."""
    name = cfg.registry.model_name
    metric = promotion.gate_metric(many_series=data.column is not None)
    baseline, baseline_score = promotion.strongest_baseline(metrics, metric, cfg.registry.baseline)  # summary.gate's
    one = data.column is None
    context = max(len(f) for f in data.series.values()) if one else 4 * Preprocessor(cfg).input_rows
    inputs = steps.gate_inputs(data, preps, test, cfg, context_rows=context)
    horizon, column = cfg.window.horizon, data.column

    def score_table(table: pd.DataFrame) -> promotion.Score:
        if column is None:  # one series: every step of its test windows, as the run scored them
            return promotion.scored_in_full(table, inputs.actual.loc[ONE_SERIES], inputs.first_dates[ONE_SERIES],
                                            horizon)
        return promotion.table_mase(table, column, inputs.actual, inputs.first_dates, inputs.scales, horizon)

    def rescore(uri: str) -> promotion.Score:  # the champion, with its own logged preprocessing, on every series
        return registry.rescore(uri, inputs.rows, cfg.data.target, score_table, inputs.history)

    extra = prefect_tags()
    decision = registry.register_and_promote(
        run.client, name, model_uri, run.run_id, training_run.version_tags(raw.digest, metrics, extra),
        promotion.TestWindow(*inputs.window, raw.digest), metrics[f"test_{metric}"], baseline_score, rescore,
        (cfg.registry.min_gain_over_persistence, cfg.registry.min_gain_over_champion),
        training_run.registered_by(run.run_id, extra.get("prefect.flow_run_id")), model_id=model_id,
        measure=(metric, baseline), coverage=promotion.coverage_requirement(metrics, cfg.registry.max_coverage_error))
    publish_promotion(decision.markdown(name, run.run_id), name, f"{name} v{decision.version}: {decision.reason}")
    return decision


def train_and_register(run: TrackedRun, cfg: PipelineConfig, config_path: str | None, raw: RawData,
                       timings: Timings) -> tuple[TrainingSummary, dict[str, str]]:
    """Inside the MLflow run, one series (a panel of one) and many alike: validate, prepare, train, evaluate, plot,
    (refit,) log, register; the summary and data tags."""
    with timings.stage("validate"):
        cfg, data = validate_series_task(raw, cfg)
    store.log_params_and_tags(run.client, run.run_id, cfg.flat(), {})  # `auto` settings as resolved
    with timings.stage("prepare"):
        preps = prepare_panel_task(data, cfg)
    with training_run.kept_on_tracking_failure(cfg, run.run_id) as kept:
        with timings.stage("train"):
            trained = train_panel(run, preps, cfg, timings)
        keep(kept, data, preps, trained)
        with timings.stage("evaluate"):
            asked, cfg = cfg, theta_weight_task(trained, data, preps, cfg)
            forecasts, scores, calibration = evaluate_panel_task(trained, data, preps, cfg)
            cfg = served_theta_weight_task(trained, data, preps, asked, cfg)
            kept.config = served_config(cfg)
            served_intervals = served_intervals_task(trained, data, preps, kept.config, calibration)
        kept.intervals = served_intervals.model if served_intervals else None  # what the logged model would serve
        metrics = {k: v for s in scores.values() for k, v in s.means().items()} | {
            "theta_weight": theta_weight(cfg), "theta_weight_served": theta_weight(kept.config)}
        metrics.update(trained.first.member_metrics() if trained.shared is not None else {})
        by_split = one_series_scores(run, cfg, data, preps, trained, forecasts, metrics, timings)
        kept.scores = metrics
        tags, warnings = record_findings(run, cfg, raw, data, preps, trained, by_split, metrics)
        if data.column is not None:
            log_scores(run, cfg, scores, forecasts["test"], data, trained)
        served, served_preps, evaluated = served_model(kept, data, preps, trained, cfg, calibration, timings)
        with timings.stage("tracking"):
            logged = log_model_task(run, cfg, config_path, raw, data, served, served_preps, metrics,
                                    served_intervals, evaluated)
        kept.logged = logged.model_uri
        summary = training_summary(run, cfg, data, metrics, logged, [*warnings, *(calibration.notes if calibration
                                                                                   else ())], forecasts["test"], timings,
                                   scores["test"].table if data.column is not None else None)
        if cfg.registry.enabled:
            register(run, cfg, raw, data, preps, forecasts["test"], summary, timings)
        store.log_metrics(run.client, run.run_id, timings.metrics())
    return summary, tags


def served_model(kept: training_run.Trained, data: Panel, preps: dict[str, SeriesPrep], trained: PanelFit,
                 cfg: PipelineConfig, calibration: Calibration | None, timings: Timings
                 ) -> tuple[PanelFit, dict[str, SeriesPrep], ForecastBundle | None]:
    """The model to log and its preprocessors: the one early stopping kept, or (`train.refit`) one trained again on
    every row, with the kept one (`calibration`: its intervals) as the bundle the gate re-scores it with as champion."""
    if not cfg.train.refit:
        return trained, preps, None
    with timings.stage("refit"):
        served, served_preps = refit_task(trained, data, cfg)
    keep(kept, data, served_preps, served)
    return served, served_preps, steps.bundle(trained, preps, cfg, calibration)


def keep(kept: training_run.Trained, data: Panel, preps: dict[str, SeriesPrep], trained: PanelFit) -> None:
    """What a tracking failure saves locally (one series: its preprocessor and network)."""
    if data.column is None:
        kept.pre, kept.result = preps[ONE_SERIES].pre, trained.first


def one_series_scores(run: TrackedRun, cfg: PipelineConfig, data: Panel, preps: dict[str, SeriesPrep],
                      trained: PanelFit, forecasts: dict[str, dict[str, Forecasts]], metrics: dict[str, float],
                      timings: Timings) -> Scores | None:
    """One series: every split's scores, per step (added to `metrics`), and the plots of its forecasts; None for
    many (their scores are per series)."""
    if data.column is not None:
        return None
    by_split = split_scores(forecasts)
    metrics.update(by_split.flat())
    with timings.stage("plots"):
        plots_task(run, data.series[ONE_SERIES], cfg, preps[ONE_SERIES].bounds,
                   {s: fc[ONE_SERIES] for s, fc in forecasts.items() if fc}, by_split["test"], trained.first)
    return by_split


def training_summary(run: TrackedRun, cfg: PipelineConfig, data: Panel, metrics: dict[str, float], logged: Any,
                     warnings: list[str], test: dict[str, Forecasts], timings: Timings,
                     series_scores: pd.DataFrame | None = None) -> TrainingSummary:
    """What `pipeline train` prints: the run, the metrics, the notes, the test forecasts, and the metric and baseline
    the gate holds the model to."""
    metric = promotion.gate_metric(many_series=data.column is not None)
    return TrainingSummary(run_id=run.run_id, experiment_id=run.experiment_id, metrics=metrics,
                           model_uri=logged.model_uri, model_id=logged.model_id,
                           notes=[*data.notes, *(f"warning: {w}" for w in warnings)], timings=timings.seconds,
                           test_forecasts=steps.forecast_tables(test, data.column), series_scores=series_scores,
                           gate=(metric, promotion.strongest_baseline(metrics, metric, cfg.registry.baseline)[0]))


def record_findings(run: TrackedRun, cfg: PipelineConfig, raw: RawData, data: Panel, preps: dict[str, SeriesPrep],
                    trained: PanelFit, by_split: Scores | None, metrics: dict[str, float]) -> tuple[dict[str, str], list[str]]:
    """Run tags (data, training), extra metrics (added to `metrics`) and warnings (one series:
    `evaluation.metrics.findings`);
    the tags and the warnings."""
    logger = get_run_logger()
    for note in data.notes:
        logger.warning(note) if note.startswith("warning") else logger.info(note)
    first = trained.first
    warnings: list[str] = []
    if data.one is not None and by_split is not None:
        prep = preps[ONE_SERIES]
        tags, extra, warnings = findings(cfg, raw.digest, data.one, prep.pre, prep.bounds, first,
                                                  by_split["test"], by_split.splits.get("val"))
        metrics.update(extra)
        for warning in warnings:
            logger.warning(warning)
    else:
        tags = {"data_digest": raw.digest, **steps.panel_tags(data, preps), "model_strategy": cfg.model.strategy,
                "train_device": first.device, "series_failed": str(len(trained.failed))}
        if trained.shared is not None:
            tags.update(best_epoch=str(first.best_epoch + 1), stopped_early=str(first.stopped_early))
            stalled = training_stalled(first)  # stuck at epoch 1, or still improving at the epoch limit
            if stalled:
                tags["training_warning"] = stalled
                logger.warning(stalled)
        metrics.update(epochs_run=float(max(r.epochs_run for r in [trained.shared, *trained.local.values()] if r)),
                       train_threads=float(first.threads))
        logger.info("test over %d series: MASE %.4g (seasonal naive %.4g), sMAPE %.4g", int(metrics.get(
            "test_series", 0)), metrics.get("test_mase", float("nan")), metrics.get("test_seasonal_naive_mase",
                                                                                     float("nan")),
            metrics.get("test_smape", float("nan")))
    if data.notes:
        store.log_text(run.client, run.run_id, "\n".join(data.notes), "data/validation_notes.txt")
    store.log_params_and_tags(run.client, run.run_id, {}, tags)
    return tags, warnings


def register(run: TrackedRun, cfg: PipelineConfig, raw: RawData, data: Panel, preps: dict[str, SeriesPrep],
             test: dict[str, Forecasts], summary: TrainingSummary, timings: Timings) -> None:
    """Register and gate the model (one registration at a time on a local store), then tag the run."""
    with timings.stage("registry"), store.store_lock(run.tracking_uri):
        decision = register_task(run, cfg, summary.model_uri, summary.model_id, raw, data, preps, test, summary.metrics)
    kill_point("after-alias-move")
    summary.model_name, summary.version, summary.alias, summary.reason = (
        cfg.registry.model_name, decision.version, decision.alias, decision.reason)
    store.log_params_and_tags(run.client, run.run_id, {}, {
        "registered_version": decision.version, "registered_alias": decision.alias, "promotion": decision.reason,
        **decision.tags()})
