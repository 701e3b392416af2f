"""The sweep flow: Optuna trials as Prefect tasks, one MLflow parent run with a child run per trial.

ingest -> validate -> (ask the study, run the trial as a task on the task runner, tell the study)
until `trials` are done, `parallel` at a time -> the objective plot and the best trial on the parent
-> the winner retrained on the parent run through the training flow's own steps: scored once on
test, logged, registered and gated exactly as `pipeline train` does. Trials run one at a time in this
process, `parallel` at a time in local worker processes, or on a Dask cluster when a scheduler
address is given (`flows.tasks.task_runner`): the same flow either way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.futures import as_completed

from flows.reporting import library_logs_to_run
from flows.tasks import (
    DASK_ADDRESS_ENV,
    STEP,
    ParentRef,
    ingest_task,
    prefect_tags,
    task_runner,
    training_steps,
    validate_task,
)
from pipeline.config.settings import PipelineConfig, resolve
from pipeline.data import panel
from pipeline.data.panel import Panel
from pipeline.data.reading import RawData
from pipeline.errors import ConfigError, PipelineError
from pipeline.evaluation import plots
from pipeline.features.windows import input_rows_needed
from pipeline.tracking import store, training_run
from pipeline.tracking.store import TrackedRun
from pipeline.tracking.training_run import Timings, TrainingSummary
from pipeline.tuning import sweep
from pipeline.tuning.sweep import SweepSpace, TrialOutcome, TrialSpec

__all__ = ["SweepSummary", "run_sweep", "sweep_flow"]

@dataclass
class SweepSummary:
    """A finished sweep: its parent run, every trial's outcome and the winner's training summary."""

    run_id: str
    experiment_id: str
    outcomes: list[TrialOutcome]
    best: TrialOutcome
    trial_run_ids: dict[int, str]
    winner: TrainingSummary
    runner: str
    seconds: float = 0.0  # the whole flow
    trials_seconds: float = 0.0  # from the first trial's start to the last one's end
    notes: list[str] = field(default_factory=list)


@task(name="trial", **STEP)
def trial_task(spec: TrialSpec, data: Panel, parent: ParentRef) -> tuple[TrialOutcome, str]:
    """One trial as a child run of the sweep: its params, per-epoch losses and validation scores."""
    cfg = spec.config
    client = store.get_client(cfg.with_overrides(tracking={"uri": spec.tracking_uri}) if spec.tracking_uri else cfg)
    tags = {store.PARENT_RUN_TAG: parent.run_id, "run_type": "sweep-trial", "sweep.trial": str(spec.number),
            "data_digest": parent.data_digest, **prefect_tags()}
    with store.tracked_run(client, parent.experiment_id, f"{parent.name}-trial{spec.number}", tags,
                              data_source=cfg.data.source) as run:
        store.log_params_and_tags(client, run.run_id, {**cfg.flat(), "sweep.trial": str(spec.number)}, {})
        epoch_logger = store.EpochLogger(client, run.run_id)
        try:
            outcome = sweep.run_trial(data, spec, on_epoch_end=epoch_logger)
        finally:
            epoch_logger.flush()
        store.log_params_and_tags(client, run.run_id, {}, {"sweep.state": outcome.state})
        store.log_metrics(client, run.run_id, outcome.metrics)
    return outcome, run.run_id


def run_sweep(space_path: str, config_path: str | None = "configs/default.yaml", data: str | None = None,
              experiment: str | None = None, model_name: str | None = None, trials: int | None = None,
              parallel: int = 1, dask_address: str | None = None, config: PipelineConfig | None = None) -> SweepSummary:
    """Run `sweep_flow` on the task runner the settings ask for: `dask_address`, else $PIPELINE_DASK_ADDRESS,
    else the space file's `dask_address`; none of them: `parallel` local worker processes (see `task_runner`)."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1 (got {parallel})")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials})")
    cfg = resolve(config or config_path, data, experiment, model_name)
    space = sweep.load_space(space_path, cfg)
    address = dask_address or os.environ.get(DASK_ADDRESS_ENV) or space.dask_address
    runner, described = task_runner(parallel, address)
    return sweep_flow.with_options(task_runner=runner)(
        space_path=space_path, config_path=config_path, cfg=cfg, trials=trials or space.trials, parallel=parallel,
        runner=described)


@flow(name="lstm-sweep", log_prints=False)
def sweep_flow(space_path: str, config_path: str | None, cfg: PipelineConfig, trials: int, parallel: int,
               runner: str = "this process") -> SweepSummary:
    """Search the space of `space_path` around `cfg`; the winner is trained, scored on test and registered."""
    with library_logs_to_run():
        started, timings = time.perf_counter(), Timings.since_process_start()
        space = sweep.load_space(space_path, cfg)
        client = store.get_client(cfg)
        experiment_id = store.open_experiment(client, cfg.tracking.experiment)
        raw = ingest_task(cfg.data.source)
        cfg, data = validated_data(raw, cfg)
        name = training_run.run_name(cfg.name, "sweep", cfg.data.source)
        tags = {**prefect_tags(), "run_type": "sweep", "data_digest": raw.digest}
        with store.tracked_run(client, experiment_id, name, tags, data_source=cfg.data.source) as run:
            store.log_params_and_tags(client, run.run_id, {
                "sweep.space": space_path, "sweep.trials": str(trials), "sweep.parallel": str(parallel),
                "sweep.runner": runner, "sweep.objective": sweep.OBJECTIVE, "sweep.seed": str(space.seed)}, {})
            store.log_text(client, run.run_id, Path(space_path).read_text(encoding="utf-8"), "sweep/space.yaml")
            parent = ParentRef(run.run_id, experiment_id, name, raw.digest)
            trials_started = time.perf_counter()
            outcomes, run_ids = run_trials(space, cfg, data, parent, trials, parallel, client.tracking_uri)
            trials_seconds = time.perf_counter() - trials_started
            best = record_sweep(run, outcomes)
            winner_cfg = sweep.trial_config(cfg, best.params, threads=best.threads)
            with timings.stage("winner"):
                winner, _ = training_steps(winner_cfg)(run, winner_cfg, config_path, raw, timings)
        get_run_logger().info("sweep %s finished: trial %d won (%s %.6g); test RMSE %.6g vs persistence %.6g",
                              run.run_id, best.number, sweep.OBJECTIVE, best.value, winner.metrics["test_rmse"],
                              winner.metrics["test_naive_rmse"])
        return SweepSummary(run_id=run.run_id, experiment_id=experiment_id, outcomes=outcomes, best=best,
                            trial_run_ids=run_ids, winner=winner, runner=runner,
                            seconds=time.perf_counter() - started, trials_seconds=trials_seconds, notes=winner.notes)


def validated_data(raw: RawData, cfg: PipelineConfig) -> tuple[PipelineConfig, Panel]:
    """The data the trials share: one validated series (a panel of one; each trial resolves its own `auto`
    settings), or many (`data.series_column`) with the config's `auto` settings resolved over every series (each
    trial's config then keeps them)."""
    if cfg.data.series_column is None:
        return cfg, panel.of_one(validate_task(raw, cfg))
    data = panel.validate_panel(raw, cfg, min_rows=input_rows_needed(cfg))
    return panel.resolve_panel(raw, cfg, data)


def run_trials(space: SweepSpace, cfg: PipelineConfig, data: Panel, parent: ParentRef, trials: int,
               parallel: int, tracking_uri: str) -> tuple[list[TrialOutcome], dict[int, str]]:
    """Keep `parallel` trials in flight until `trials` have run; each new trial is asked for as one ends,
    so the sampler learns from every finished trial. Outcomes in the order the trials ended."""
    logger = get_run_logger()
    study = sweep.create_study(space)
    distributions = space.distributions()
    inflight: dict[Any, Any] = {}
    outcomes: list[TrialOutcome] = []
    run_ids: dict[int, str] = {}
    asked = 0
    while asked < trials or inflight:
        while asked < trials and len(inflight) < parallel:
            trial = study.ask(distributions)
            asked += 1
            try:
                trial_cfg = sweep.trial_config(cfg, trial.params)
            except ConfigError as exc:  # a combination of values the config refuses: nothing to train
                outcome = TrialOutcome(trial.number, dict(trial.params), "failed", error=str(exc).splitlines()[-1])
                sweep.record_outcome(study, trial, outcome)
                outcomes.append(outcome)
                continue
            spec = TrialSpec(number=trial.number, params=dict(trial.params), config=trial_cfg, pruning=space.pruning,
                             parallel=parallel, tracking_uri=tracking_uri, finished=sweep.finished_trials(study))
            future = trial_task.with_options(task_run_name=f"trial-{trial.number}").submit(spec, data, parent)
            inflight[future] = trial
        if not inflight:
            continue
        done = next(as_completed(list(inflight)))
        trial = inflight.pop(done)
        try:
            outcome, run_ids[trial.number] = done.result()
        except PipelineError as exc:  # diverged, or a lookback the data cannot fill: the trial failed
            outcome = TrialOutcome(trial.number, dict(trial.params), "failed", error=str(exc).splitlines()[0])
            logger.warning("trial %d failed: %s", trial.number, outcome.error)
        sweep.record_outcome(study, trial, outcome)
        outcomes.append(outcome)
        logger.info("trial %d %s%s", trial.number, outcome.state,
                    f": {sweep.OBJECTIVE} {outcome.value:.6g}" if outcome.value is not None else "")
    return outcomes, run_ids


def record_sweep(run: TrackedRun, outcomes: list[TrialOutcome]) -> TrialOutcome:
    """The best trial (validation only) with its values and scores on the parent, and the objective plot."""
    best = sweep.best_outcome(outcomes)
    store.log_params_and_tags(run.client, run.run_id, {"sweep.best_trial": str(best.number)},
                                 {f"sweep.best.{k}": str(v) for k, v in best.params.items()})
    store.log_metrics(run.client, run.run_id, sweep.summary_metrics(outcomes, best))
    table = pd.DataFrame([{"trial": o.number, "state": o.state, sweep.OBJECTIVE: o.value, **o.params,
                           "seconds": o.seconds, "error": o.error or ""} for o in sorted(outcomes, key=lambda o: o.number)])
    store.log_text(run.client, run.run_id, table.to_csv(index=False), "sweep/trials.csv")
    fig = plots.plot_sweep([(o.number, o.state, o.value) for o in outcomes], sweep.OBJECTIVE, best.number)
    store.log_figure(run.client, run.run_id, fig, "plots/sweep_objective.png")
    plots.close(fig)
    return best
