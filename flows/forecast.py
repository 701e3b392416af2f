"""The batch forecast flow: the next horizon from the latest rows, with a registered model.

resolve the model (an alias is pinned to its version first) -> ingest -> validate against the
model's own data contract -> predict -> write the CSV -> log the forecast to MLflow. The MLflow
run (`tracking.tracked_run`) ends FINISHED only after everything else; on failure it is FAILED
with a report, and the output file is never left half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.tasks import STEP, ingest_task, prefect_tags
from flows.reporting import library_logs_to_run
from pipeline import registry, runs, tracking
from pipeline.ingest import RawData
from pipeline.output import check_output, write_forecasts
from pipeline.serving import ForecastBundle, model_input

DEFAULT_EXPERIMENT = "batch-forecasts"


@dataclass
class ForecastSummary:
    """What `pipeline predict` prints: the forecasts, the model version used, where they went."""

    run_id: str
    experiment_id: str
    model: registry.ModelRef
    forecasts: pd.DataFrame
    rows_read: int
    out: str | None = None


@task(name="resolve-model", **STEP)
def resolve_task(client: Any, model_uri: str) -> registry.ModelRef:
    return registry.resolve_model(client, model_uri)


@task(name="load-model", **STEP)
def load_task(model_uri: str) -> tuple[Any, ForecastBundle]:
    from pipeline.pyfunc import load_forecaster

    return load_forecaster(model_uri)


@task(name="predict", **STEP)
def predict_task(model: Any, bundle: ForecastBundle, raw: RawData) -> pd.DataFrame:
    from pipeline.pyfunc import predict_rows

    rows = model_input(raw.frame, bundle, raw.source)  # file and line numbers in any error
    return predict_rows(model, rows)


@task(name="write-csv", **STEP)
def write_task(forecasts: pd.DataFrame, out: str, overwrite: bool = False) -> str:
    """Write the CSV (pipeline.output: refusals, temporary file and rename, usual permissions)."""
    return str(write_forecasts(forecasts, out, overwrite))


@task(name="log-forecast", **STEP)
def log_task(client: Any, run_id: str, ref: registry.ModelRef, raw: RawData, forecasts: pd.DataFrame) -> None:
    tracking.log_params_and_tags(client, run_id, {
        "model_uri": ref.uri, "model_name": ref.name or "", "model_version": ref.version or "",
        "model_alias": ref.alias or "", "data_source": raw.source, "rows_read": str(len(raw.frame)),
    }, {"model_version": ref.version or "", "model_run_id": ref.run_id or "", "data_digest": raw.digest,
        "forecast_origin": str(forecasts["origin"].iloc[-1]),
        "forecast_dates": ",".join(forecasts["date"].astype(str))[:5000]})
    if forecasts["step"].is_unique:  # one series: each step's value as a metric (many series: the CSV only)
        tracking.log_metrics(client, run_id, {f"forecast_step_{int(s)}": float(v)
                                              for s, v in zip(forecasts["step"], forecasts["forecast"])})
    tracking.log_text(client, run_id, forecasts.to_csv(index=False), "forecasts/forecasts.csv")


@flow(name="lstm-batch-forecast", log_prints=False)
def forecast_flow(model: str, data: str, out: str | None = "forecasts.csv",
                  experiment: str | None = None, overwrite: bool = False) -> ForecastSummary:
    """Forecast the next horizon from the latest rows of `data` with `model` (e.g. models:/NAME@champion)."""
    with library_logs_to_run():
        return run_forecast(model, data, out, experiment, overwrite)


def run_forecast(model: str, data: str, out: str | None, experiment: str | None,
                 overwrite: bool = False) -> ForecastSummary:
    """The body of `forecast_flow`, inside its flow run."""
    client = tracking.get_client()
    if out:
        check_output(out, overwrite)  # a refused path fails before any run or model load
    ref = resolve_task(client, model)  # unknown names or aliases fail here, before any run or file
    experiment_id = tracking.ensure_experiment(client, experiment or DEFAULT_EXPERIMENT)
    label = f"{ref.name}-v{ref.version}" if ref.name else "model"
    tags = {**prefect_tags(), "model_uri": model}
    with tracking.tracked_run(client, experiment_id, runs.run_name("forecast", label), tags, data_source=data) as run:
        raw = ingest_task(data)
        loaded, bundle = load_task(ref.uri)
        forecasts = predict_task(loaded, bundle, raw)
        written = write_task(forecasts, out, overwrite) if out else None
        log_task(client, run.run_id, ref, raw, forecasts)
    get_run_logger().info("forecast %d step(s) from %s with %s -> %s", len(forecasts), data, ref.uri,
                          written or "(not written)")
    return ForecastSummary(run.run_id, experiment_id, ref, forecasts, len(raw.frame), written)
