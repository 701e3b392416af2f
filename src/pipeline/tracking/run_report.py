"""Human-readable run reports: the markdown a user reads in the Prefect UI, and links to MLflow.

Plain text builders, no Prefect or MLflow import: the flow publishes what these return.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.evaluation.metrics import verdict

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.tracking.training_run import TrainingSummary

UI_PORT_ENV, DEFAULT_UI_PORT = "MLFLOW_PORT", "5000"  # the Makefile's `make ui` port, and its default
DEFAULT_MLFLOW_UI = f"http://127.0.0.1:{DEFAULT_UI_PORT}"  # what `make ui` serves unless MLFLOW_PORT says otherwise
METRICS = (("rmse", "RMSE"), ("mae", "MAE"), ("mape", "MAPE %"), ("direction_acc", "direction accuracy"))
MAPE_NOTE = "MAPE is unreliable here: some actual test values are near zero or change sign (read RMSE and MAE)"


def config_digest(resolved: Mapping[str, Any]) -> str:
    """A short stable digest of a resolved config (its JSON dump): equal configs, equal digests."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_key(name: str, suffix: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a config name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "pipeline"
    return f"{slug}-{suffix}"


def on_server(tracking_uri: str) -> bool:
    """Whether the store is a tracking server, whose own host and port serve the UI."""
    return tracking_uri.startswith(("http://", "https://"))


def local_ui_url(environ: Mapping[str, str], ui_url_env: str) -> str:
    """Where people open MLflow's UI on a local store: `ui_url_env`'s URL, else `make ui`'s address (its port from
    MLFLOW_PORT, as the Makefile reads it)."""
    return environ.get(ui_url_env) or f"http://127.0.0.1:{environ.get(UI_PORT_ENV) or DEFAULT_UI_PORT}"


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str, ui_url: str | None = None) -> str:
    """The MLflow UI page of a run: on the tracking server itself, else on `ui_url` (`make ui`)."""
    base = tracking_uri if on_server(tracking_uri) else (ui_url or DEFAULT_MLFLOW_UI)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(tracking_uri: str, ui_url: str | None = None) -> str | None:
    """For a local store, what serves the run's link: nothing answers there until a UI is started."""
    if on_server(tracking_uri):
        return None
    where = (ui_url or DEFAULT_MLFLOW_UI).rstrip("/")
    port = where.rsplit(":", 1)[-1] if where.rsplit(":", 1)[-1].isdigit() else DEFAULT_UI_PORT
    return (f"the link needs MLflow's UI running on {where}: `make ui` serves the project's `mlflow.db` there "
            f"(`{UI_PORT_ENV}=<port> make ui` for another port, default {DEFAULT_UI_PORT}); for this store: "
            f"`mlflow ui --backend-store-uri {tracking_uri} --port {port}`")


@dataclass(frozen=True)
class RunReport:
    """What one flow run did, in the terms a user checks after a scheduled retraining."""

    config_name: str
    outcome: str  # "trained", "nothing to do" or "failed"
    data_source: str
    data_digest: str | None = None
    config_digest: str | None = None
    data_rows: str | None = None
    data_start: str | None = None
    data_end: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None
    promotion: str | None = None
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    mlflow_ui_hint: str | None = None  # a local store: the command that serves the link
    detail: str = ""
    series_table: tuple[str, ...] = ()  # many series: markdown lines of the test scores per series
    gate: tuple[str, str] | None = None  # the metric and baseline the model is held to (the gate's)


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.6g}"


def headline(metrics: Mapping[str, float], measure: tuple[str, str], split: str = "test") -> str:
    """The model against the baseline it is held to, in one line: "RMSE ratio model/seasonal naive: 0.93 (better
    than seasonal naive)". `measure`: the metric and the baseline (`promotion.strongest_baseline`, the gate's own)."""
    from pipeline.evaluation.baselines import baseline_words

    metric, baseline = measure
    model, base = metrics.get(f"{split}_{metric}"), metrics.get(f"{split}_{baseline}_{metric}")
    ratio = model / base if model is not None and base and math.isfinite(base) else float("nan")
    if model is None and baseline == "naive":  # a summary that kept only the ratio to persistence
        ratio = metrics.get(f"{split}_{metric}_ratio", float("nan"))
    words = baseline_words(baseline)
    return f"{metric.upper()} ratio model/{words}: {_num(ratio)} ({verdict(ratio, words)})"


def metrics_table(metrics: Mapping[str, float], measure: tuple[str, str] | None = None) -> list[str]:
    """Test metrics of the model next to the persistence baseline, as markdown table rows, and the headline against
    the baseline the gate holds it to (`measure`; by default the strongest by RMSE).

    Undefined figures (persistence's direction accuracy) read n/a; MAPE gets a note when the
    test's actual values come near zero (metric `test_actual_near_zero`).
    """
    flag_mape = bool(metrics.get("test_actual_near_zero"))
    rows = ["| test metric | model | persistence |", "|---|---:|---:|"]
    for key, label in METRICS:
        label = f"{label} *" if key == "mape" and flag_mape else label
        rows.append(f"| {label} | {_num(metrics.get(f'test_{key}'))} | {_num(metrics.get(f'test_naive_{key}'))} |")
    if flag_mape:
        rows += ["", f"\\* {MAPE_NOTE}"]
    if "test_rmse" in metrics or "test_rmse_ratio" in metrics:
        from pipeline.tracking.promotion import strongest_baseline

        rows += ["", headline(metrics, measure or ("rmse", strongest_baseline(dict(metrics), "rmse")[0]))]
    intervals = interval_summary(metrics)
    if intervals:
        rows += ["", intervals[0].upper() + intervals[1:]]
    theta = theta_summary(metrics)
    if theta:
        rows += ["", theta]
    return rows


def theta_summary(metrics: Mapping[str, float]) -> str | None:
    """One line on Theta's share of the forecasts (`model.theta_weight`): the share the test scores were measured
    with and, where it differs, the one the logged model serves (`model.theta_weight_served`); None where both are 0
    or the run combined nothing."""
    scored, served = metrics.get("theta_weight"), metrics.get("theta_weight_served", metrics.get("theta_weight"))
    if not scored and not served:
        return None
    if served == scored:
        return f"Theta's share of the forecasts: {_num(scored)} (scored and served)"
    return (f"Theta's share of the forecasts: {_num(scored)} in the test scores (chosen on the validation origins); "
            f"the logged model serves {_num(served)} (chosen on the test origins)")


def interval_summary(metrics: Mapping[str, float], prefix: str = "test") -> str | None:
    """One line on the intervals of a split: coverage per level against nominal, MSIS beside the interval
    baseline's; None when the run fitted none."""
    levels = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if re.fullmatch(rf"{prefix}_coverage_\d+", k))
    if not levels:
        return None
    covered = ", ".join(f"{level} %: {_num(metrics[f'{prefix}_coverage_{level}'])}" for level in levels)
    baseline = next((b for b in ("seasonal_naive", "naive") if f"{prefix}_{b}_msis" in metrics), None)
    msis = f"; MSIS {_num(metrics.get(f'{prefix}_msis'))}" if f"{prefix}_msis" in metrics else ""
    if msis and baseline:
        msis += f" ({baseline.replace('_', ' ')} {_num(metrics[f'{prefix}_{baseline}_msis'])})"
    return f"{prefix} intervals, achieved coverage {covered}{msis}"


def run_markdown(report: RunReport) -> str:
    """The run summary shown as a Prefect markdown artifact."""
    headline = {
        "trained": "trained a new model",
        "nothing to do": "nothing to do: same data and config as the last successful run",
        "failed": "FAILED",
    }.get(report.outcome, report.outcome)
    lines = [f"# {report.config_name}: {headline}", ""]
    if report.detail:
        lines += [report.detail, ""]
    lines += [
        "## Data",
        "| source | rows | first date | last date | digest |",
        "|---|---:|---|---|---|",
        f"| `{report.data_source}` | {report.data_rows or 'n/a'} | {report.data_start or 'n/a'} "
        f"| {report.data_end or 'n/a'} | `{report.data_digest or 'n/a'}` |",
        "",
    ]
    if report.config_digest:
        lines += [f"Resolved config digest: `{report.config_digest}`", ""]
    if report.metrics:
        scope = " (of that run)" if report.outcome == "nothing to do" else ""
        lines += [f"## Metrics vs baselines{scope}", *metrics_table(report.metrics, report.gate), ""]
    if report.series_table:
        lines += ["## Test scores per series", *report.series_table, ""]
    lines.append("## Registry")
    if report.version:
        lines.append(f"- version registered: **{report.model_name} v{report.version}** -> `@{report.alias}`")
        lines.append(f"- promotion decision: {report.promotion or 'n/a'}")
    elif report.outcome == "trained":
        lines.append("- no version registered (registry.enabled is false)")
    else:
        lines.append("- no version registered by this flow run")
    lines.append("")
    if report.mlflow_run_id:
        link = f"[{report.mlflow_run_id}]({report.mlflow_run_url})" if report.mlflow_run_url else report.mlflow_run_id
        lines += ["## MLflow", f"- run: {link}"]
        if report.mlflow_run_url and report.mlflow_ui_hint:
            lines.append(f"- {report.mlflow_ui_hint}")
    return "\n".join(lines).rstrip() + "\n"


SERIES_ROWS = 30  # series listed in a summary, worst first; the CSV artifact holds every one


def series_markdown(table: pd.DataFrame, rows: int = SERIES_ROWS) -> tuple[str, ...]:
    """Per-series test scores (`steps.PanelScores.table`: the id column, windows, `<who>__<metric>`) as a markdown
    table, highest model MASE first: MASE beside seasonal naive's (else naive's), their ratio, sMAPE."""
    column = str(table.columns[0])
    base = "seasonal_naive" if "seasonal_naive__mase" in table else "naive"
    ordered = table.sort_values("model__mase", ascending=False, na_position="last")
    lines = [f"| {column} | windows | MASE | {base.replace('_', ' ')} MASE | ratio | sMAPE |",
             "|---|---:|---:|---:|---:|---:|"]
    for _, row in ordered.head(rows).iterrows():
        ratio = row["model__mase"] / row[f"{base}__mase"] if row[f"{base}__mase"] else float("nan")
        lines.append(f"| {row[column]} | {int(row['windows'])} | {_num(row['model__mase'])} | "
                     f"{_num(row[f'{base}__mase'])} | {_num(ratio)} | {_num(row['model__smape'])} |")
    if len(table) > rows:
        lines += ["", f"{len(table) - rows} more series in `evaluation/test_series_scores.csv`."]
    return tuple(lines)


# ---------------------------------------------------------------- the report of each outcome
@dataclass
class ReportContext:
    """What every report of one flow run shares; the data digest and run id fill in as the run goes."""

    config_name: str
    data_source: str
    config_digest: str
    tracking_uri: str
    experiment_id: str
    ui_url: str | None = None  # where people open MLflow when the store is not a tracking server
    data_digest: str | None = None
    run_id: str | None = None

    @property
    def run_url(self) -> str | None:
        return mlflow_run_url(self.tracking_uri, self.experiment_id, self.run_id, self.ui_url) if self.run_id else None

    @property
    def links(self) -> dict[str, str | None]:
        """The report fields of the MLflow run: its id, its UI page and, on a local store, what serves that page."""
        return {"mlflow_run_id": self.run_id, "mlflow_run_url": self.run_url,
                "mlflow_ui_hint": ui_hint(self.tracking_uri, self.ui_url)}


def trained_report(ctx: ReportContext, data_tags: Mapping[str, str], summary: TrainingSummary, forced: bool) -> RunReport:
    """A run that trained (and registered, when registration is on)."""
    return RunReport(
        config_name=ctx.config_name, outcome="trained", data_source=ctx.data_source, data_digest=ctx.data_digest,
        config_digest=ctx.config_digest, data_rows=data_tags.get("data_rows"), data_start=data_tags.get("data_start"),
        data_end=data_tags.get("data_end"), metrics=summary.metrics, model_name=summary.model_name,
        version=summary.version, alias=summary.alias, promotion=summary.reason, **ctx.links,
        detail="Forced retraining (force=true)." if forced else "",
        series_table=series_markdown(summary.series_scores) if summary.series_scores is not None else (),
        gate=summary.gate)


def skipped_report(ctx: ReportContext, summary: TrainingSummary, previous_tags: Mapping[str, str],
                   detail: str) -> RunReport:
    """Nothing to do: the run it rests on (`ctx.run_id`), its data, metrics and registered version."""
    return RunReport(
        config_name=ctx.config_name, outcome="nothing to do", data_source=ctx.data_source, data_digest=ctx.data_digest,
        config_digest=ctx.config_digest, data_rows=previous_tags.get("data_rows"),
        data_start=previous_tags.get("data_start"), data_end=previous_tags.get("data_end"), metrics=summary.metrics,
        model_name=summary.model_name, version=summary.version, alias=summary.alias,
        promotion=previous_tags.get("promotion"), **ctx.links, detail=detail)


def failed_report(ctx: ReportContext, exc: BaseException) -> RunReport:
    """A failed run: the error's first line (and whether an MLflow run was started at all)."""
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return RunReport(
        config_name=ctx.config_name, outcome="failed", data_source=ctx.data_source, data_digest=ctx.data_digest,
        config_digest=ctx.config_digest, **ctx.links,
        detail=f"`{type(exc).__name__}: {first_line}`" + ("" if ctx.run_id else " (before any MLflow run was started)"))
