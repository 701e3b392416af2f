"""The monitor flow: how the champion does on the actuals that arrived, and whether to retrain.

resolve the model -> read the data with the new rows (held to the model's contract) -> find the forecasts
that batch runs logged for that model -> join them with the actuals -> score (per series, per step, per date,
pooled) beside what the registered version promised -> test the new rows for drift -> apply the retraining
policy (`monitoring:`) -> log one MLflow run in the `monitoring` experiment -> emit a Prefect event when the
policy says retrain (prefect.yaml's retraining deployment has a trigger on it) -> promote a shadow challenger
that earned it. Steps are plain functions in `pipeline.evaluation.monitoring`; docs/monitoring.md draws the loop.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.reporting import library_logs_to_run, run_url
from flows.tasks import STEP, ingest_task, load_task, prefect_tags, resolve_task
from pipeline.config.settings import MonitoringConfig, load_config
from pipeline.data.reading import RawData
from pipeline.errors import DataError, RegistryError
from pipeline.evaluation import monitoring, plots
from pipeline.evaluation.monitoring import SERIES, Promise, Verdict
from pipeline.serving.forecast import ForecastBundle, series_frames, validate_input
from pipeline.tracking import promotion, registry, run_report, store

log = logging.getLogger(__name__)

RETRAIN_EVENT = "pipeline.monitor.retrain-requested"
RESOURCE_PREFIX = "pipeline.model.network."
FORECASTS_ARTIFACT = "forecasts/forecasts.csv"
SERIES_SCORES_ARTIFACT = "evaluation/test_series_scores.csv"


@dataclass
class MonitorSummary:
    """What `pipeline monitor` prints: the verdict, the window's live figures beside the promised ones."""

    run_id: str
    experiment_id: str
    model: registry.ModelRef
    verdict: Verdict
    window: dict[str, float]
    promise: Promise
    table: pd.DataFrame
    nothing_to_score: str | None = None
    event_id: str | None = None
    challenger: str | None = None  # the shadow challenger's version, when there is one
    challenger_figures: dict[str, float] = field(default_factory=dict)
    promoted: str | None = None  # the version promoted to @champion by this run


# ---------------------------------------------------------------- reading
@task(name="actuals", **STEP)
def actuals_task(raw: RawData, bundle: ForecastBundle) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The data's series as the model reads them (its contract; errors name file, line and rule), and the ids of
    series the model was never trained on (reported, not refused)."""
    if bundle.series is None:
        frame = validate_input(raw.frame, bundle, raw.source)
        return {one_series_id(bundle): frame}, []
    column = bundle.series.column
    if column not in raw.frame.columns:
        raise DataError(f"{raw.source}: no column {column!r}; rule: the data of a model of many series has its "
                        f"series id column")
    ids = raw.frame[column].astype(str)
    unseen = sorted(set(ids) - set(bundle.series.preprocessors))
    known = raw.frame[~ids.isin(unseen)]
    if known.empty:
        return {}, unseen
    lenient = dataclasses.replace(bundle, config=bundle.config.model_copy(
        update={"data": bundle.config.data.model_copy(update={"on_bad_series": "skip"})}))
    return series_frames(known, lenient, raw.source), unseen


def one_series_id(bundle: ForecastBundle) -> str:
    """The id a model of one series goes by in the monitor's tables: its target column."""
    return bundle.config.data.target


@task(name="find-forecasts", **STEP)
def forecasts_task(client: Any, name: str, bundle: ForecastBundle, policy: MonitoringConfig) -> pd.DataFrame:
    """Every forecast that `pipeline predict` and the batch-forecast flow logged for registered model `name`."""
    experiment = client.get_experiment_by_name(policy.forecast_experiment)
    if experiment is None:
        return monitoring.forecast_log([])
    runs = store.retry(lambda: client.search_runs(
        [experiment.experiment_id],
        f"{registry.name_filter(name, 'params.model_name')} and attributes.status = 'FINISHED'",
        max_results=policy.max_forecast_runs, order_by=["attributes.start_time DESC"]),
        "search forecast runs", client.tracking_uri)
    column = bundle.series.column if bundle.series is not None else None
    parts = []
    for run in runs:
        try:
            text = store.download_text(client, run.info.run_id, FORECASTS_ARTIFACT)
        except Exception as exc:  # noqa: BLE001 - a run without its CSV (deleted artifact) is skipped, said once
            log.warning("forecast run %s has no readable %s (%s): skipped", run.info.run_id, FORECASTS_ARTIFACT, exc)
            continue
        tags = run.data.tags
        parts.append(monitoring.forecast_rows(
            pd.read_csv(io.StringIO(text)), column, one_series_id(bundle), version=tags.get("model_version", ""),
            role=tags.get("forecast_role", "served"), run_id=run.info.run_id,
            logged=pd.Timestamp(run.info.start_time, unit="ms")))
    return monitoring.forecast_log(parts)


def promise_of(client: Any, ref: registry.ModelRef, bundle: ForecastBundle) -> tuple[Promise, pd.Timestamp | None]:
    """What the version's training run promised on its test split, and the last date it was trained on."""
    if not ref.run_id:
        return Promise({}), None
    record = store.get_run(client, ref.run_id)
    table = None
    if bundle.series is not None:
        try:
            table = pd.read_csv(io.StringIO(store.download_text(client, ref.run_id, SERIES_SCORES_ARTIFACT)),
                                dtype={bundle.series.column: str})
        except Exception:  # noqa: BLE001 - older runs: pooled figures only
            table = None
    end = record.tags.get("data_end")
    return (Promise.from_run(record.metrics, table, bundle.series.column if bundle.series else None),
            pd.Timestamp(end) if end else None)


# ---------------------------------------------------------------- the flow
@flow(name="lstm-monitor", log_prints=False)
def monitor_flow(model: str = "models:/lstm-forecaster@champion", data: str = "data/SBUX.csv",
                 config_path: str | None = None, retrain_config: str | None = None,
                 emit: bool = True) -> MonitorSummary:
    """Score `model`'s logged forecasts on the actuals in `data`, test for drift, decide, and request retraining
    (a Prefect event) when the policy says so. `config_path`: a config whose `monitoring:` overrides the model's;
    `retrain_config`: the config the retraining deployment should train (sent in the event)."""
    with library_logs_to_run():
        return run_monitor(model, data, config_path, retrain_config, emit)


def run_monitor(model: str, data: str, config_path: str | None, retrain_config: str | None,
                emit: bool) -> MonitorSummary:
    client = store.get_client()
    ref = resolve_task(client, model)
    if not ref.name:
        raise RegistryError(f"model {model!r}: monitoring reads the forecasts logged for a registered "
                            "model; give models:/NAME@ALIAS or models:/NAME/VERSION")
    _, bundle = load_task(ref.uri)
    policy = load_config(config_path).monitoring if config_path else bundle.config.monitoring
    raw = ingest_task(data)
    frames, unseen = actuals_task(raw, bundle)
    forecasts = forecasts_task(client, ref.name, bundle, policy)
    challenger = registry.get_aliases(client, ref.name).get(promotion.CHALLENGER)
    challenger = challenger if challenger and challenger != ref.version else None
    found, promise = assess_task(client, ref, bundle, frames, unseen, forecasts, challenger, policy)
    experiment_id = store.open_experiment(client, policy.experiment)
    tags = {**prefect_tags(), "model_uri": model, "model_name": ref.name, "model_version": ref.version or "",
            "model_run_id": ref.run_id or ""}
    with store.tracked_run(client, experiment_id, f"monitor-{ref.name}-v{ref.version}", tags,
                              data_source=data) as run:
        summary = MonitorSummary(run.run_id, experiment_id, ref, found.verdict, found.window, promise, found.table,
                                 found.nothing_to_score, challenger=challenger,
                                 challenger_figures=found.challenger_figures)
        log_scores_task(run, summary, policy, raw)
        log_tables_task(run, summary, found.scored, frames, bundle)
        act_task(client, run.run_id, summary, data, retrain_config or config_path, emit)
    publish_task(summary, bundle, run_url(client.tracking_uri, experiment_id, run.run_id))
    get_run_logger().info("monitor %s v%s: %s", ref.name, ref.version, found.nothing_to_score or found.verdict.headline)
    return summary


@task(name="assess", **STEP)
def assess_task(client: Any, ref: registry.ModelRef, bundle: ForecastBundle, frames: dict[str, pd.DataFrame],
                unseen: list[str], forecasts: pd.DataFrame, challenger: str | None,
                policy: MonitoringConfig) -> tuple[monitoring.Assessment, Promise]:
    """The promise of the version's training run, its age, and `monitoring.assess` on the logged forecasts."""
    promise, trained_end = promise_of(client, ref, bundle)
    version = client.get_model_version(ref.name, ref.version)
    age = (time.time() * 1000 - version.creation_timestamp) / 86_400_000 if version.creation_timestamp else None
    season = bundle.config.evaluate.season_length if isinstance(bundle.config.evaluate.season_length, int) else 1
    return monitoring.assess(frames, unseen, forecasts, promise, trained_end, bundle.config.data.target, season,
                             (ref.name, ref.version), challenger, policy, age), promise


@task(name="act", **STEP)
def act_task(client: Any, run_id: str, summary: MonitorSummary, data: str, retrain_config: str | None,
             emit: bool) -> None:
    """What the verdict asks: promote the challenger that earned it, emit the retraining event."""
    ref, verdict = summary.model, summary.verdict
    if verdict.promote_challenger and summary.challenger:
        move = registry.promote(client, ref.name, summary.challenger, f"monitor: {verdict.challenger_reason}",
                                by=f"monitor (MLflow run {run_id})")
        summary.promoted = summary.challenger if move is not None else None
        store.log_params_and_tags(client, run_id, {}, {"monitor.promoted": summary.challenger})
    if verdict.retrain and emit:
        summary.event_id = emit_retrain(ref, verdict, run_id, data, retrain_config)
        store.log_params_and_tags(client, run_id, {}, {"monitor.event_id": summary.event_id or "not sent"})


@task(name="log-monitor", **STEP)
def log_scores_task(run: store.TrackedRun, summary: MonitorSummary, policy: MonitoringConfig, raw: RawData) -> None:
    """The policy as params; the verdict as tags; the window's figures, the promise, their ratios and counts."""
    client, run_id, verdict = run.client, run.run_id, summary.verdict
    params = {f"monitoring.{k}": str(v) for k, v in policy.model_dump(mode="json").items()}
    store.log_params_and_tags(client, run_id, {**params, "data_source": raw.source, "rows_read": str(len(raw.frame))},
                                 {"monitor.verdict": "retrain" if verdict.retrain else "keep",
                                  "monitor.reasons": " | ".join(verdict.reasons)[:5000],
                                  "monitor.nothing_to_score": summary.nothing_to_score or "",
                                  "data_digest": raw.digest})
    values = {f"live_{k}": v for k, v in summary.window.items()}
    values.update({f"promised_{k}": v for k, v in summary.promise.pooled.items()})
    values.update({f"live_{k}_ratio": monitoring.ratio(v, summary.promise.pooled[k])
                   for k, v in summary.window.items() if k in summary.promise.pooled})
    values.update({"series_scored": float(summary.table["points"].notna().sum()),
                   "series_degraded": float(len(verdict.degraded)), "series_drifted": float(len(verdict.drifted)),
                   "series_unseen": float(len(verdict.unseen)), "retrain": float(verdict.retrain)})
    values.update({f"challenger_{k}": v for k, v in summary.challenger_figures.items()})
    store.log_metrics(client, run_id, values)


@task(name="log-monitor-tables", **STEP)
def log_tables_task(run: store.TrackedRun, summary: MonitorSummary, scored: pd.DataFrame,
                    frames: dict[str, pd.DataFrame], bundle: ForecastBundle) -> None:
    """The live metrics per forecast date (step = the date, so the UI draws them over time), the per-series,
    per-step, per-date and scored tables, the plot, the description; the version's tags point at this run."""
    client, run_id = run.client, run.run_id
    if len(scored):
        levels = monitoring.levels_of(scored)
        by_date = monitoring.grouped(scored, "date", levels)
        steps = monitoring.metric_step(by_date["date"])
        store.log_metric_history(client, run_id, {f"live_date_{m}": list(zip(steps, by_date["date"], by_date[m]))
                                                     for m in by_date.columns[2:]})
        for name, table in (("dates", by_date), ("steps", monitoring.grouped(scored, "step", levels)),
                            ("scored", scored)):
            store.log_text(client, run_id, table.to_csv(index=False, float_format="%.6g"), f"monitoring/{name}.csv")
        worst = worst_series(summary.table, summary.promise.error_metric())
        target = bundle.config.data.target
        fig = plots.plot_live(scored, {sid: frames[sid][target] for sid in worst if sid in frames}, worst, levels)
        store.log_figure(client, run_id, fig, "plots/live.png")
        plots.close(fig)
    store.log_text(client, run_id, summary.table.to_csv(index=False, float_format="%.6g"), "monitoring/series.csv")
    store.set_description(client, run_id, monitor_markdown(summary))
    tag_version(client, summary)


def tag_version(client: Any, summary: MonitorSummary) -> None:
    """The monitored version's tags point at its latest monitor run, verdict and live error."""
    ref, metric = summary.model, summary.promise.error_metric() or "mae"
    tags = {"monitor.last_run_id": summary.run_id, "monitor.verdict": "retrain" if summary.verdict.retrain else "keep",
            f"monitor.live_{metric}": f"{summary.window.get(metric, float('nan')):.6g}"}
    for key, value in tags.items():
        store.retry(lambda: client.set_model_version_tag(ref.name, ref.version, key, value),
                       "tag the model version", client.tracking_uri)


def worst_series(table: pd.DataFrame, metric: str | None, count: int = 4) -> list[str]:
    """The series to draw: the worst by live error ratio (or live MASE), at most `count`."""
    if table.empty or "points" not in table:
        return []
    key = f"ratio_{metric}" if metric and f"ratio_{metric}" in table else "mase"
    ranked = table[table["points"].fillna(0) > 0].sort_values(key, ascending=False, na_position="last")
    return [str(s) for s in ranked[SERIES].head(count)]


def monitor_markdown(summary: MonitorSummary) -> str:
    """The verdict as markdown: the MLflow run description and the Prefect artifact."""
    v, ref = summary.verdict, summary.model
    lines = [f"# Monitor: {ref.name} version {ref.version}", "",
             f"**{'Retrain' if v.retrain else 'Keep the champion'}**" + (f": {'; '.join(v.reasons)}" if v.reasons else ""),
             ""]
    if summary.nothing_to_score:
        lines += [summary.nothing_to_score, ""]
    lines += [f"- {note}" for note in v.notes]
    lines += ["", "| figure | live (window) | promised | ratio |", "|---|---|---|---|"]
    for key, live in summary.window.items():
        promised = summary.promise.pooled.get(key, float("nan"))
        lines.append(f"| {key} | {live:.4g} | {promised:.4g} | {monitoring.ratio(live, promised):.3g} |")
    for label, ids in (("degraded", v.degraded), ("drifted", v.drifted), ("never seen in training", v.unseen)):
        if ids:
            lines.append(f"\nSeries {label} ({len(ids)}): {monitoring.named(list(ids), 20)}")
    if summary.challenger:
        lines.append(f"\nShadow challenger v{summary.challenger}: {v.challenger_reason or 'not scored yet'}"
                     + ("; promoted to @champion" if summary.promoted else ""))
    if summary.event_id:
        lines.append(f"\nRetraining requested: Prefect event `{RETRAIN_EVENT}` ({summary.event_id})")
    return "\n".join(lines) + "\n"


@task(name="publish-monitor", **STEP)
def publish_task(summary: MonitorSummary, bundle: ForecastBundle, url: str | None) -> None:
    """The verdict as a Prefect markdown artifact (best effort: MLflow already holds it)."""
    from prefect.artifacts import create_markdown_artifact

    try:
        body = monitor_markdown(summary) + (f"\n[MLflow run {summary.run_id}]({url})\n" if url else "")
        create_markdown_artifact(body, key=run_report.artifact_key(f"monitor-{summary.model.name}", "verdict"),
                                 description=summary.verdict.headline[:500])
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not create the monitor artifact: %s", exc)


def emit_retrain(ref: registry.ModelRef, verdict: Verdict, run_id: str, data: str,
                 config_path: str | None) -> str | None:
    """Ask for retraining: a Prefect event that prefect.yaml's retraining deployment is triggered by."""
    from prefect.events import emit_event

    event = emit_event(
        event=RETRAIN_EVENT,
        resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{ref.name}", "prefect.resource.name": ref.name,
                  "pipeline.model.network.version": str(ref.version)},
        payload={"model": ref.name, "version": str(ref.version), "reasons": list(verdict.reasons),
                 "config_path": config_path or "configs/default.yaml", "data": data, "monitor_run_id": run_id},
    )
    if event is None:
        get_run_logger().warning("the retraining event was not sent (Prefect events are off in this process)")
        return None
    get_run_logger().info("retraining requested: event %s (%s)", RETRAIN_EVENT, event.id)
    return str(event.id)
