"""The `pipeline` command. Heavy libraries are imported inside each command, not at start-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError
from pipeline.runtime import freeze_collector_at_exit, imports_without_gc

if TYPE_CHECKING:
    from pipeline.tracking.training_run import TrainingSummary

log = logging.getLogger("pipeline")


class ExpectedFailures(logging.Filter):
    """Keep Prefect's console records of expected failures (PipelineError) off the console.

    The CLI prints such an error once, as one paragraph. Prefect logs a failing task or flow
    run's exception with `exc_info` (public: `LogRecord.exc_info`), then its "Finished in state
    Failed(...)" line for the same run; the run ids are the `task_run_id` / `flow_run_id`
    attributes Prefect's run loggers put on every record. A run whose exception was a
    PipelineError has its later error records dropped too. Prefect's run logs (API handler)
    still get every record: this filter sits on the console handlers only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.expected_runs: set[str] = set()

    @staticmethod
    def run_of(record: logging.LogRecord) -> str | None:
        run = getattr(record, "task_run_id", None) or getattr(record, "flow_run_id", None)
        return str(run) if run else None

    def filter(self, record: logging.LogRecord) -> bool:
        run = self.run_of(record)
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            if run:
                self.expected_runs.add(run)
            return False
        return not (run in self.expected_runs and record.levelno >= logging.ERROR)


class OnceOnConsole(logging.Filter):
    """Each warning once on the console, and the summary's notes only where the console has not shown them.

    A warning travels several roads: the library logs the note it returns (`pipeline.evaluation.intervals`),
    the flow logs it again to its Prefect run (whose records reach the console too), and the
    summary prints it as a `note:`. The Prefect run logs keep every record (this filter sits on
    the console handlers only); the console shows the first, the repeats of the same text (a
    `source: ` or `warning: ` prefix aside) are dropped, and `unseen` tells the summary which
    notes are still to print (all of them with --quiet).
    """

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[str] = []

    @staticmethod
    def _key(text: str) -> str:
        text = text.strip()
        return text.removeprefix("warning: ").strip()

    def seen(self, text: str) -> bool:
        key = self._key(text)
        return any(key == k or key.endswith(": " + k) or k.endswith(": " + key) for k in self.shown)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self.seen(record.getMessage()):
            return False
        self.shown.append(self._key(record.getMessage()))
        return True

    def unseen(self, notes: Sequence[str]) -> list[str]:
        return [n for n in notes if not self.seen(n)]


CONSOLE = OnceOnConsole()  # one per process: the console it filters is the process's


# HTTP client libraries log every request at INFO (Prefect's API calls among them, one a 422 Prefect
# expects and handles): noise, not progress. They stay at WARNING even with -v.
CHATTY_LOGGERS = ("httpx", "httpcore", "urllib3")


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """stderr logging for -v (INFO), the default (WARNING) or --quiet (ERROR), and the progress mode.

    Progress (`pipeline.model.progress`): a bar on a terminal, plain lines when stderr is redirected,
    none with --quiet. The flows read the mode from the environment (they run in this process).
    """
    from pipeline.model import progress

    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ExpectedFailures) for f in handler.filters):
            handler.addFilter(ExpectedFailures())
        if type(handler) is logging.StreamHandler and CONSOLE not in handler.filters:  # the console, not a capture
            handler.addFilter(CONSOLE)
    CONSOLE.shown.clear()  # one command, one console
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    if verbose or quiet:  # Prefect's and MLflow's own console logs follow -v / --quiet
        os.environ["PREFECT_LOGGING_LEVEL"] = os.environ["MLFLOW_LOGGING_LEVEL"] = logging.getLevelName(level)
    else:  # MLflow's INFO lines ("Creating initial MLflow database tables...") only with -v
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    progress.set_mode("off" if quiet else "bar" if progress.stderr_is_terminal() else "lines")


def _prepare_environment() -> None:
    """Quiet, offline-friendly Prefect defaults; our library logs reach the Prefect run logs."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # log_model re-reads the model it logged
    # Flows import `flows.*` from the project root when run from a checkout.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


PRINTED_ROWS = 60  # forecast rows printed by `predict` (the CSV holds them all)


def _fmt(value: float | None) -> str:
    """A figure for the tables; n/a for one that is missing or undefined (NaN)."""
    return "n/a" if value is None or value != value else f"{value:,.6g}"


def print_training_summary(summary: TrainingSummary) -> None:
    from pipeline.tracking.run_report import headline, interval_summary, theta_summary

    if summary.skipped:
        print(f"Nothing to do: {summary.reason}")
        return
    m = summary.metrics
    print(f"MLflow run:        {summary.run_id} (experiment {summary.experiment_id})")
    if m.get("test_series", 1) > 1:  # many series: means over the series, beside naive and seasonal naive
        print(f"{'test, mean of ' + str(int(m.get('test_series', 0))) + ' series':<24}{'model':>12}{'naive':>12}"
              f"{'seasonal naive':>16}")
        for name in ("mase", "smape", "rmse", "mae"):
            print(f"{name:<24}{_fmt(m.get(f'test_{name}')):>12}{_fmt(m.get(f'test_naive_{name}')):>12}"
                  f"{_fmt(m.get(f'test_seasonal_naive_{name}')):>16}")
    else:
        print_single_series_table(m, summary.gate[1])
    print(headline(m, summary.gate))  # against the baseline the gate holds the model to
    print(interval_summary(m) or "test intervals: none fitted")
    if theta := theta_summary(m):
        print(theta)
    if summary.version:
        print(f"Registered model:  {summary.model_name} version {summary.version} -> @{summary.alias}")
        print(f"  {summary.reason}")
    else:
        print("Registered model:  none (registry.enabled is false)")
    for note in CONSOLE.unseen(summary.notes):  # a warning shown while the run went is not repeated
        print(f"note: {note}")


def print_single_series_table(m: dict[str, float], baseline: str = "naive") -> None:
    """The test metrics of one series beside persistence and, when the gate holds the model to another, that one."""
    from pipeline.evaluation.baselines import baseline_words
    from pipeline.tracking.run_report import MAPE_NOTE, METRICS

    other = [baseline] if baseline != "naive" else []
    print(f"{'test metric':<18}{'model':>14}{'persistence':>14}" + "".join(f"{baseline_words(b):>16}" for b in other))
    flag_mape = bool(m.get("test_actual_near_zero"))
    for name, _ in METRICS:
        label = f"{name} *" if name == "mape" and flag_mape else name
        print(f"{label:<18}{_fmt(m.get(f'test_{name}')):>14}{_fmt(m.get(f'test_naive_{name}')):>14}"
              + "".join(f"{_fmt(m.get(f'test_{b}_{name}')):>16}" for b in other))
    if flag_mape:
        print(f"* {MAPE_NOTE}")


@contextlib.contextmanager
def flow_start_up() -> Iterator[None]:
    """The start-up of a command that runs a flow: its imports, with Prefect's API ready at the end.

    Prefect's temporary server (when no server is configured) boots on the other core while the
    heavy libraries import here without the garbage collector, MLflow's store modules among them.
    """
    from flows import early_server

    with imports_without_gc():
        server = early_server.start()
        yield
        from pipeline.tracking import store

        store.import_mlflow()
        early_server.adopt(server)


def cmd_train(args: argparse.Namespace) -> int:
    with flow_start_up():
        from flows.training import training_flow_for
        from pipeline.config.settings import resolve

    cfg = resolve(args.config, args.data, args.experiment, args.model_name)
    flow = training_flow_for(cfg, args.parallel, args.dask_address)
    summary = flow(config_path=args.config, config=cfg, force=args.force)
    print_training_summary(summary)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pipeline.config.settings import resolve
    from pipeline.tuning.sweep import load_space

    load_space(args.space, resolve(args.config, args.data, args.experiment, args.model_name))  # a bad file fails in a second
    with flow_start_up():
        from flows.sweep import run_sweep

    summary = run_sweep(args.space, args.config, args.data, args.experiment, args.model_name, trials=args.trials,
                        parallel=args.parallel, dask_address=args.dask_address)
    print(f"Sweep run:         {summary.run_id} (experiment {summary.experiment_id}), {len(summary.outcomes)} trials "
          f"as child runs on {summary.runner} in {summary.seconds:.1f}s")
    print(f"{'trial':>5}  {'state':<9}{'val_mase':>12}  values")
    for o in sorted(summary.outcomes, key=lambda o: o.number):
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.params.items())
        mark = " *" if o.number == summary.best.number else ""
        print(f"{o.number:>5}  {o.state:<9}{_fmt(o.value):>12}  {values}{mark}")
    print(f"* best on validation: trial {summary.best.number}; retrained on the sweep run and scored once on test:")
    print_training_summary(summary.winner)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.tracking.registry import refuse_bare_name

    refuse_bare_name(args.model)  # before any start-up: a bare name fails in a second, not after Prefect starts
    with flow_start_up():
        from flows.forecast import forecast_flow

    summary = forecast_flow(model=args.model, data=args.data, out=args.out, experiment=args.experiment,
                            overwrite=args.overwrite, shadow=args.shadow)
    ref = summary.model
    used = f"{ref.name} version {ref.version}" + (f" (@{ref.alias})" if ref.alias else "") if ref.name else ref.uri
    print(f"Model:       {used}")
    print(f"Data:        {args.data} ({summary.rows_read} rows)")
    shown = summary.forecasts
    print(shown.to_string(index=False) if len(shown) <= PRINTED_ROWS else
          shown.head(PRINTED_ROWS).to_string(index=False) + f"\n... and {len(shown) - PRINTED_ROWS} more rows")
    print(f"Written to:  {summary.out}" if summary.out else "Written to:  (nothing; --out '' given)")
    print(f"MLflow run:  {summary.run_id} (experiment {summary.experiment_id})")
    if summary.shadow is not None:
        shadow = summary.shadow
        print(f"Shadow:      {shadow.model.name} version {shadow.model.version} (@challenger), never served: "
              f"{shadow.out or '(not written)'}, MLflow run {shadow.run_id}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from pipeline.tracking.registry import refuse_bare_name

    refuse_bare_name(args.model)
    with flow_start_up():
        from flows.monitor import monitor_flow

    summary = monitor_flow(model=args.model, data=args.data, config_path=args.config,
                           retrain_config=args.retrain_config, emit=not args.no_event)
    ref, verdict = summary.model, summary.verdict
    print(f"Model:       {ref.name} version {ref.version}" + (f" (@{ref.alias})" if ref.alias else ""))
    if summary.nothing_to_score:
        print(summary.nothing_to_score)
    else:
        print(f"Scored:      {int(summary.window['points'])} point(s) in the window (monitoring.window: the last "
              f"forecast dates scored)")
        print(f"{'live (window)':<18}{'value':>12}{'promised':>12}{'ratio':>10}")
        for key, value in summary.window.items():
            if key == "points":
                continue
            promised = summary.promise.pooled.get(key)
            ratio = value / promised if promised else None
            print(f"{key:<18}{_fmt(value):>12}{_fmt(promised):>12}{_fmt(ratio):>10}")
    for label, ids in (("degraded", verdict.degraded), ("drifted", verdict.drifted), ("never seen", verdict.unseen)):
        if ids:
            print(f"Series {label} ({len(ids)}): {', '.join(ids[:20])}" + (" ..." if len(ids) > 20 else ""))
    for note in verdict.notes:
        print(f"note: {note}")
    if summary.challenger:
        print(f"Challenger:  v{summary.challenger}: {verdict.challenger_reason or 'no shared forecasts scored yet'}"
              + (" -> promoted to @champion" if summary.promoted else ""))
    print(f"Verdict:     {verdict.headline}")
    if verdict.retrain:
        if summary.event_id:
            print(f"Retraining:  requested (Prefect event {summary.event_id})")
        else:
            print("Retraining:  " + ("not requested (--no-event)" if args.no_event else "the event could not be sent"))
    print(f"MLflow run:  {summary.run_id} (experiment {summary.experiment_id})")
    return 0


def _registry_client() -> object:
    with imports_without_gc():
        from pipeline.tracking import store

        store.import_mlflow()

    return store.get_client()


def _print_move(move: object) -> None:
    src = f"v{move.from_version}" if move.from_version else "none"  # type: ignore[attr-defined]
    dst = f"v{move.to_version}" if move.to_version else "none"  # type: ignore[attr-defined]
    print(f"{move.at}  @{move.alias}: {src} -> {dst}  [{move.kind}] by {move.by}")  # type: ignore[attr-defined]
    print(f"    why: {move.reason}")  # type: ignore[attr-defined]


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.tracking import registry
    from pipeline.tracking.history import current_user

    move = registry.promote(_registry_client(), args.name, args.version, args.reason, current_user("promote"))
    if move is None:
        print(f"{args.name} version {args.version} is already @champion; nothing changed")
        return 0
    _print_move(move)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.tracking import registry
    from pipeline.tracking.history import current_user

    move = registry.rollback(_registry_client(), args.name, args.reason or "", current_user("rollback"))
    _print_move(move)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from pipeline.tracking import registry
    from pipeline.tracking.history import champion_lineage
    from pipeline.tracking.promotion import CHAMPION

    client = _registry_client()
    moves = registry.read_history(client, args.name)
    aliases = registry.get_aliases(client, args.name)
    shown = moves if args.all else [m for m in moves if m.alias == CHAMPION]
    print(f"{args.name}: {'every alias move' if args.all else '@champion lineage'}, oldest first")
    gated: dict[str, str | None] = {}  # version -> the gate's figures, read from its tags (old names too)
    for move in shown:
        _print_move(move)
        version = move.to_version
        if version and move.kind in ("register", "gate") and version not in gated:
            gated[version] = registry.gate_line(client, args.name, version)
            if gated[version]:
                print(f"    gate: {gated[version]}")
    if not shown:
        print("  (no recorded moves)")
    lineage = champion_lineage(moves, aliases.get(CHAMPION))
    print("champions in force: " + (" -> ".join(f"v{v}" for v in lineage) or "none"))
    print("aliases now: " + (", ".join(f"@{a} = v{v}" for a, v in sorted(aliases.items())) or "none"))
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    with flow_start_up():
        from flows.backtest import run_backtest
        from pipeline.config.settings import resolve
        from pipeline.tracking.run_report import interval_summary

    cfg = resolve(args.config, args.data, args.experiment, folds=args.folds, window=args.window)
    summary = run_backtest(config_path=args.config, config=cfg, parallel=args.parallel, dask_address=args.dask_address)
    m = summary.metrics
    print(f"MLflow run:        {summary.run_id} (experiment {summary.experiment_id}), "
          f"{len(summary.fold_run_ids)} {summary.window} folds as child runs")
    if summary.series is not None:  # many series: pooled per fold, then over every fold and series
        print(summary.folds.to_string(index=False))
        print(f"all folds pooled: MASE {_fmt(m.get('backtest_mase'))} (naive {_fmt(m.get('backtest_naive_mase'))}, "
              f"seasonal naive {_fmt(m.get('backtest_seasonal_naive_mase'))}), sMAPE {_fmt(m.get('backtest_smape'))}; "
              + summary.headline)
    else:
        print(summary.folds.drop(columns=["train_rows", "val_rows"]).to_string(index=False))
        print(f"{'over folds':<18}{'mean':>14}{'std':>14}")
        for name in ("rmse", "naive_rmse", "rmse_ratio"):
            print(f"test_{name:<13}{_fmt(m.get(f'test_{name}_mean')):>14}{_fmt(m.get(f'test_{name}_std')):>14}")
        print(f"all folds pooled: RMSE {_fmt(m.get('backtest_rmse'))} vs persistence "
              f"{_fmt(m.get('backtest_naive_rmse'))}; {summary.headline}")  # against the gate's baseline
    print(interval_summary(m, "backtest") or "backtest intervals: none fitted")
    for note in CONSOLE.unseen(summary.notes):
        print(f"note: {note}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    with flow_start_up():
        from flows.training import training_flow
        from pipeline import runtime
        from pipeline.tracking import reproduce, store

    client = store.get_client()

    def rerun(cfg: object) -> str:  # the recorded config, as a config object: no file in between
        return training_flow(config_path=None, config=cfg, force=True).run_id

    env = {**runtime.git_state(), **{f"version.{k}": v for k, v in store.library_versions().items()}}
    report = reproduce.reproduce(client, args.run_id, rerun, source=args.data, current_env=env)
    print(f"Reproducing run {report.run_id} as run {report.new_run_id}")
    for line in report.lines():
        print(line)
    for note in report.notes:
        print(f"note: {note}")
    return 0 if report.ok else 1


def version_line() -> str:
    """`pipeline --version`: this package's version and those of the libraries it runs on, from their metadata.

    Read from the installed distributions (no import of torch, Prefect or MLflow).
    """
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {of(name)}" for name in ("torch", "prefect", "mlflow"))
    return f"pipeline (lstm-forecast-pipeline) {of('lstm-forecast-pipeline')} ({libraries})"


class _Version(argparse.Action):
    """`--version`: print `version_line()` as one line (argparse's own action wraps it) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of the pipeline, torch, Prefect and MLflow, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="LSTM time-series forecasting orchestrated by Prefect and tracked in MLflow.",
        epilog="Tracking: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (MLflow's default; artifacts in mlruns/). "
               "Orchestration: $PREFECT_API_URL, else Prefect's ephemeral local server.",
    )
    parser.add_argument("--version", action=_Version)
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="also log what each step does (INFO) to stderr")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress and no warnings on stderr, errors only (the results still go to stdout)")
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
    train.add_argument("--parallel", type=int, default=1,
                       help="many series with model.strategy local, or an ensemble (model.ensemble): series or "
                            "members trained at once, in worker processes (default: %(default)s)")
    train.add_argument("--dask-address", help="many series with model.strategy local, or an ensemble: train the series "
                                              "or members on this Dask scheduler (else $PIPELINE_DASK_ADDRESS)")
    train.set_defaults(func=cmd_train)

    sw = sub.add_parser("sweep", help="tune hyper-parameters with Optuna; train, score and register the best",
                        description="Run the sweep flow: Optuna trials (TPE, median pruning on validation loss) as "
                                    "Prefect tasks, P at a time, each a child MLflow run; the best trial on validation "
                                    "is retrained on the parent run, scored once on test and registered and gated "
                                    "like `pipeline train`.")
    sw.add_argument("--space", required=True, help="search-space YAML (example: configs/sweep.yaml)")
    sw.add_argument("--trials", type=int, help="number of trials; overrides the space file's `trials`")
    sw.add_argument("--parallel", type=int, default=1,
                    help="trials at once: 1 runs them one after another in this process, P > 1 in P local worker "
                         "processes (default: %(default)s)")
    sw.add_argument("--dask-address", help="Dask scheduler to run the trials on (else $PIPELINE_DASK_ADDRESS, "
                                           "else the space file's dask_address, else this machine as --parallel "
                                           "says)")
    sw.add_argument("--config", default="configs/default.yaml", help="YAML config (default: %(default)s)")
    sw.add_argument("--data", help="CSV path or http(s) URL; overrides data.source")
    sw.add_argument("--experiment", help="MLflow experiment; overrides tracking.experiment")
    sw.add_argument("--model-name", help="registered model name; overrides registry.model_name")
    sw.set_defaults(func=cmd_sweep)

    predict = sub.add_parser("predict", help="forecast the next horizon with a registered model",
                             description="Run the batch forecast flow: load the model, check the data against "
                                         "its contract, forecast from the latest rows, write a CSV and log the "
                                         "forecast (with the model version used) to MLflow.")
    predict.add_argument("--model", required=True, help="model URI, e.g. models:/lstm-forecaster@champion")
    predict.add_argument("--data", required=True, help="CSV path or http(s) URL with the recent rows")
    predict.add_argument("--out", default="forecasts.csv", help="output CSV ('' for none; default: %(default)s)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace --out if it exists (never the tracking store or the project's own files)")
    predict.add_argument("--experiment", help="MLflow experiment for the forecast run (default: batch-forecasts)")
    predict.add_argument("--shadow", action="store_true",
                         help="with --model ...@champion: also forecast with @challenger, if any, into its own run "
                              "and <out>.challenger.csv (never served; `pipeline monitor` scores both)")
    predict.set_defaults(func=cmd_predict)

    mon = sub.add_parser("monitor", help="score the champion's logged forecasts on the actuals that arrived; "
                                         "drift; retrain when the policy says so",
                         description="Run the monitor flow: find the forecasts `pipeline predict` logged for the model, "
                                     "join them with the actuals in --data, score them (MAE, sMAPE, MASE, coverage; per "
                                     "series, step and date) beside what the registered version promised, test the new "
                                     "rows for drift, apply the config's `monitoring:` policy and, when it says retrain, "
                                     "emit the Prefect event that prefect.yaml's retraining deployment is triggered by. "
                                     "One MLflow run in the `monitoring` experiment. Nothing to score yet: exit 0.")
    mon.add_argument("--model", default="models:/lstm-forecaster@champion",
                     help="registered model URI (default: %(default)s)")
    mon.add_argument("--data", required=True, help="CSV path or http(s) URL with the rows that arrived (and history)")
    mon.add_argument("--config", help="YAML config whose `monitoring:` section overrides the model's own")
    mon.add_argument("--retrain-config", help="config the triggered retraining trains (sent in the event; default: "
                                              "--config, else configs/default.yaml)")
    mon.add_argument("--no-event", action="store_true", help="decide and record, but emit no retraining event")
    mon.set_defaults(func=cmd_monitor)

    promote = sub.add_parser("promote", help="make a model version @champion by hand (recorded)",
                             description="Manual override of the promotion gate; recorded in the history.")
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", help="model version number")
    promote.add_argument("--reason", required=True, help="why (kept in the history)")
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="point @champion back at the previous champion (recorded)",
                              description="Move @champion back to the version that held it before the current "
                                          "one, by the recorded alias history; the move itself is recorded too "
                                          "(see `pipeline history`).")
    rollback.add_argument("name", help="registered model name")
    rollback.add_argument("--reason", help="why (kept in the history)")
    rollback.set_defaults(func=cmd_rollback)

    history = sub.add_parser("history", help="print the champion's lineage: who moved it, when, from, to, why",
                             description="Print every recorded move of @champion (with --all: of every alias), "
                                         "oldest first: when, by whom, from which version to which, and why; "
                                         "then the champions in force and the aliases now.")
    history.add_argument("name", help="registered model name")
    history.add_argument("--all", action="store_true", help="every alias move, not only @champion")
    history.set_defaults(func=cmd_history)

    bt = sub.add_parser("backtest", help="walk-forward backtest: refit per fold, forecast the next block",
                        description="Each fold refits the scalers and the model on the rows before its cutoff "
                                    "only, then forecasts the next block. One MLflow parent run, a child run per "
                                    "fold; nothing is registered.")
    bt.add_argument("--config", default="configs/default.yaml", help="YAML config (default: %(default)s)")
    bt.add_argument("--data", help="CSV path or http(s) URL; overrides data.source")
    bt.add_argument("--folds", type=int, help="number of folds; overrides backtest.folds")
    bt.add_argument("--window", choices=["expanding", "rolling"], help="training window; overrides backtest.window")
    bt.add_argument("--experiment", help="MLflow experiment; overrides tracking.experiment")
    bt.add_argument("--parallel", type=int, default=1, help="many series: folds at once, in worker processes "
                    "(default: %(default)s)")
    bt.add_argument("--dask-address", help="many series: Dask scheduler to run the folds on (else "
                    "$PIPELINE_DASK_ADDRESS)")
    bt.set_defaults(func=cmd_backtest)

    rep = sub.add_parser("reproduce", help="re-run a training run from what it recorded and compare",
                         description="Reads the run's config/resolved.yaml, data source and digest; refuses "
                                     "when the data changed; re-trains (registering nothing) and compares every "
                                     "metric and the weights bit for bit. Exit 0 only when all match.")
    rep.add_argument("run_id", help="MLflow run id of a finished training run")
    rep.add_argument("--data", help="read the data from here instead of the recorded source (digest still checked)")
    rep.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its exit status (the `pipeline` command's entry point)."""
    freeze_collector_at_exit()
    return run(argv)


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The progress mode and Prefect's console level hold for this command only (a caller's own
    # flows afterwards, e.g. in tests, see them as they were).
    changed = ("PIPELINE_PROGRESS", "MLFLOW_LOGGING_LEVEL", *(("PREFECT_LOGGING_LEVEL",) if args.verbose or args.quiet else ()))
    saved = {key: os.environ.get(key) for key in changed}
    configure_logging(args.verbose, args.quiet)
    _prepare_environment()
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    sys.exit(main())
