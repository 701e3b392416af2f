"""What a flow run leaves for people in Prefect: library logs in the run logs, summary and link artifacts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger

from pipeline.tracking import run_report

UI_URL_ENV = "PIPELINE_MLFLOW_UI_URL"  # where people open MLflow when the store is not a tracking server


@contextmanager
def library_logs_to_run(name: str = "pipeline") -> Iterator[None]:
    """Send the `pipeline.*` loggers' records to this flow run's Prefect logs while the block runs.

    PREFECT_LOGGING_EXTRA_LOGGERS=pipeline (set by the CLI and by prefect.yaml's job variables)
    attaches Prefect's API handler; without it this adds one for the run. The library logger is
    lowered, never raised, to PREFECT_LOGGING_LEVEL (Prefect leaves it at the root's WARNING),
    and both changes are undone afterwards.
    """
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOGGING_LEVEL

    library = logging.getLogger(name)
    added = None if any(isinstance(h, APILogHandler) for h in library.handlers) else APILogHandler()
    if added is not None:
        library.addHandler(added)
    level_before = library.level
    target = logging.getLevelName(str(PREFECT_LOGGING_LEVEL.value()).upper())
    if isinstance(target, int) and library.getEffectiveLevel() > target:
        library.setLevel(target)
    try:
        yield
    finally:
        library.setLevel(level_before)
        if added is not None:
            library.removeHandler(added)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return run_report.mlflow_run_url(tracking_uri, experiment_id, run_id, run_report.local_ui_url(os.environ, UI_URL_ENV))


def report_context(name: str, data_source: str, config_digest: str, tracking_uri: str,
                   experiment_id: str) -> run_report.ReportContext:
    """The shared part of this flow run's reports, with the MLflow UI address from the environment."""
    return run_report.ReportContext(name, data_source, config_digest, tracking_uri, experiment_id,
                                 ui_url=run_report.local_ui_url(os.environ, UI_URL_ENV))


def publish_report(report: run_report.RunReport) -> None:
    """The run summary (markdown) and a link to the MLflow run, as artifacts of the current flow run.

    Best effort: the run's outcome is already recorded in MLflow, so a failure here only warns.
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    logger = get_run_logger()
    try:
        create_markdown_artifact(
            run_report.run_markdown(report), key=run_report.artifact_key(report.config_name, "run-summary"),
            description=f"{report.config_name}: {report.outcome}"[:500])
        if report.mlflow_run_url:
            create_link_artifact(
                report.mlflow_run_url, link_text=f"MLflow run {report.mlflow_run_id}",
                key=run_report.artifact_key(report.config_name, "mlflow-run"),
                description=f"The MLflow run {'behind' if report.outcome == 'nothing to do' else 'of'} this flow run")
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not create the run summary artifacts: %s", exc)


def publish_promotion(markdown: str, model_name: str, description: str) -> None:
    """The promotion decision as a markdown artifact; best effort (the registry is already updated)."""
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(markdown, key=run_report.artifact_key(f"promotion-{model_name}", "").rstrip("-"),
                                 description=description[:500])
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not create the promotion artifact: %s", exc)
