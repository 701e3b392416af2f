"""The batch forecast flow: the next horizon from the latest rows, with a registered model.

resolve the model (an alias is pinned to its version first) -> ingest -> validate against the
model's own data contract -> predict -> write the CSV -> log the forecast to MLflow. The MLflow
run (`store.tracked_run`) ends FINISHED only after everything else; on failure it is FAILED
with a report, and the output file is never left half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from flows.reporting import library_logs_to_run
from flows.tasks import STEP, ingest_task, load_task, prefect_files, prefect_tags, resolve_task
from pipeline.data.reading import RawData
from pipeline.errors import PipelineError
from pipeline.serving.forecast import ForecastBundle, model_input
from pipeline.tracking import registry, store, training_run
from pipeline.tracking.forecast_files import check_output, write_forecasts
from pipeline.tracking.promotion import CHALLENGER, CHAMPION

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
    shadow: ForecastSummary | None = None  # the challenger's shadow forecast, when one was made


@task(name="predict", **STEP)
def predict_task(model: Any, bundle: ForecastBundle, raw: RawData) -> pd.DataFrame:
    from pipeline.serving.pyfunc import predict_rows

    rows = model_input(raw.frame, bundle, raw.source)  # file and line numbers in any error
    return predict_rows(model, rows)


@task(name="write-csv", **STEP)
def write_task(forecasts: pd.DataFrame, out: str, overwrite: bool = False) -> str:
    """Write the CSV (pipeline.tracking.forecast_files: refusals, temporary file and rename, usual permissions)."""
    return str(write_forecasts(forecasts, out, overwrite, guarded=prefect_files()))


@task(name="log-forecast", **STEP)
def log_task(client: Any, run_id: str, ref: registry.ModelRef, raw: RawData, forecasts: pd.DataFrame,
             role: str = "served") -> None:
    """The forecast's model, data and role (`served`; `champion`; `challenger`: a shadow forecast, never served),
    each step's value for one series, and the forecasts CSV that `pipeline monitor` later scores."""
    store.log_params_and_tags(client, run_id, {
        "model_uri": ref.uri, "model_name": ref.name or "", "model_version": ref.version or "",
        "model_alias": ref.alias or "", "data_source": raw.source, "rows_read": str(len(raw.frame)),
    }, {"model_version": ref.version or "", "model_run_id": ref.run_id or "", "data_digest": raw.digest,
        "forecast_role": role,
        "forecast_origin": str(forecasts["origin"].iloc[-1]),
        "forecast_dates": ",".join(forecasts["date"].astype(str))[:5000]})
    if forecasts["step"].is_unique:  # one series: each step's value as a metric (many series: the CSV only)
        store.log_metrics(client, run_id, {f"forecast_step_{int(s)}": float(v)
                                              for s, v in zip(forecasts["step"], forecasts["forecast"])})
    store.log_text(client, run_id, forecasts.to_csv(index=False), "forecasts/forecasts.csv")


@flow(name="lstm-batch-forecast", log_prints=False)
def forecast_flow(model: str, data: str, out: str | None = "forecasts.csv",
                  experiment: str | None = None, overwrite: bool = False, shadow: bool = False) -> ForecastSummary:
    """Forecast the next horizon from the latest rows of `data` with `model` (e.g. models:/NAME@champion).

    `shadow`: when `model` is the `@champion` and the model has a `@challenger`, forecast with it too, into its own
    MLflow run and file (`<out>.challenger.csv`): never served, scored beside the champion by `pipeline monitor`.
    """
    with library_logs_to_run():
        return run_forecast(model, data, out, experiment, overwrite, shadow)


def shadow_path(out: str) -> str:
    """Where a shadow forecast goes: beside `out`, `.challenger` before its suffix."""
    path = Path(out)
    return str(path.with_name(f"{path.stem}.challenger{path.suffix or '.csv'}"))


def run_forecast(model: str, data: str, out: str | None, experiment: str | None,
                 overwrite: bool = False, shadow: bool = False) -> ForecastSummary:
    """The body of `forecast_flow`, inside its flow run."""
    client = store.get_client()
    if out:
        check_output(out, overwrite, guarded=prefect_files())  # a refused path fails before any run or model load
    ref = resolve_task(client, model)  # unknown names or aliases fail here, before any run or file
    experiment_id = store.open_experiment(client, experiment or DEFAULT_EXPERIMENT)
    role = CHAMPION if ref.alias == CHAMPION else "served"
    summary, raw = forecast_with(client, experiment_id, ref, data, model, out, overwrite, role)
    challenger = registry.get_aliases(client, ref.name).get(CHALLENGER) if shadow and role == CHAMPION else None
    if challenger and challenger != ref.version:
        shadow_ref = resolve_task(client, f"models:/{ref.name}@{CHALLENGER}")
        shadow_out = shadow_path(out) if out else None
        try:
            if shadow_out:
                check_output(shadow_out, overwrite, guarded=prefect_files())
            summary.shadow = forecast_with(client, experiment_id, shadow_ref, raw, shadow_ref.uri, shadow_out,
                                           overwrite, CHALLENGER)[0]
        except PipelineError as exc:  # the served forecast stands; the shadow run is FAILED with its report
            get_run_logger().warning("shadow forecast with %s@%s (v%s) failed, the champion's forecast stands: %s",
                                     ref.name, CHALLENGER, challenger, exc)
    return summary


def forecast_with(client: Any, experiment_id: str, ref: registry.ModelRef, data: str | RawData, model: str,
                  out: str | None, overwrite: bool, role: str) -> tuple[ForecastSummary, RawData]:
    """One model's forecast of `data` (read inside the run unless already read), in its own MLflow run: predicted,
    written, logged with its role."""
    label = f"{ref.name}-v{ref.version}" if ref.name else "model"
    tags = {**prefect_tags(), "model_uri": model}
    name = training_run.run_name("forecast" if role != CHALLENGER else "shadow-forecast", label)
    source = data.source if isinstance(data, RawData) else data
    with store.tracked_run(client, experiment_id, name, tags, data_source=source) as run:
        raw = data if isinstance(data, RawData) else ingest_task(data)
        loaded, bundle = load_task(ref.uri)
        forecasts = predict_task(loaded, bundle, raw)
        written = write_task(forecasts, out, overwrite) if out else None
        log_task(client, run.run_id, ref, raw, forecasts, role)
    get_run_logger().info("%s forecast %d step(s) from %s with %s -> %s", role, len(forecasts), raw.source, ref.uri,
                          written or "(not written)")
    return ForecastSummary(run.run_id, experiment_id, ref, forecasts, len(raw.frame), written), raw
