"""The `pipeline` command. Heavy libraries are imported inside each command, not at start-up."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")


def _prepare_environment() -> None:
    """Quiet, offline-friendly Prefect defaults; our library logs reach the Prefect run logs."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # Flows import `flows.*` from the project root when run from a checkout.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.6g}"


def print_training_summary(summary: object) -> None:
    if getattr(summary, "skipped", False):
        print(f"Nothing to do: {summary.reason}")  # type: ignore[attr-defined]
        return
    m = summary.metrics  # type: ignore[attr-defined]
    print(f"MLflow run:        {summary.run_id} (experiment {summary.experiment_id})")  # type: ignore[attr-defined]
    print(f"{'test metric':<18}{'model':>14}{'persistence':>14}")
    for name in ("rmse", "mae", "mape", "direction_acc"):
        print(f"{name:<18}{_fmt(m.get(f'test_{name}')):>14}{_fmt(m.get(f'test_naive_{name}')):>14}")
    ratio = m.get("test_rmse_ratio")
    verdict = "better than" if ratio is not None and ratio < 1 else "NOT better than"
    print(f"RMSE ratio model/persistence: {_fmt(ratio)} ({verdict} persistence)")
    if summary.version:  # type: ignore[attr-defined]
        print(f"Registered model:  {summary.model_name} version {summary.version} -> @{summary.alias}")  # type: ignore[attr-defined]
        print(f"  {summary.reason}")  # type: ignore[attr-defined]
    else:
        print("Registered model:  none (registry.enabled is false)")
    for note in summary.notes:  # type: ignore[attr-defined]
        print(f"note: {note}")


def cmd_train(args: argparse.Namespace) -> int:
    from flows.training import training_flow

    summary = training_flow(config_path=args.config, data=args.data, experiment=args.experiment,
                            model_name=args.model_name, force=args.force)
    print_training_summary(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="LSTM time-series forecasting orchestrated by Prefect and tracked in MLflow.",
        epilog="Tracking: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db. "
               "Orchestration: $PREFECT_API_URL, else Prefect's ephemeral local server.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train, evaluate, log and register a model",
                           description="Run the training flow: ingest, validate, split/scale, train, "
                                       "evaluate, plot, log to MLflow and register the model.")
    train.add_argument("--config", default="configs/default.yaml", help="YAML config (default: %(default)s)")
    train.add_argument("--data", help="CSV path or http(s) URL; overrides data.source")
    train.add_argument("--experiment", help="MLflow experiment; overrides tracking.experiment")
    train.add_argument("--model-name", help="registered model name; overrides registry.model_name")
    train.add_argument("--force", action="store_true",
                       help="train even when the data and config are those of the last successful run")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _prepare_environment()
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
