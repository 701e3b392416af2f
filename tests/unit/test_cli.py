"""The command line as a user meets it: --version, help, model names, logging levels, tables, progress."""

from __future__ import annotations

import io
import logging
import os

import pytest

from pipeline.cli import main
from pipeline.errors import RegistryError
from pipeline.model import progress
from pipeline.tracking.registry import resolve_model
from pipeline.tracking.run_report import metrics_table
from pipeline.tracking.training_run import TrainingSummary


def test_version_names_the_package_and_its_libraries(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main.build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"pipeline (lstm-forecast-pipeline) {version('lstm-forecast-pipeline')} (")
    for lib in ("torch", "prefect", "mlflow"):
        assert f"{lib} {version(lib)}" in out
    assert "\n" not in out


@pytest.mark.parametrize("command", ["rollback", "history"])
def test_every_command_has_a_description(command, capsys) -> None:
    with pytest.raises(SystemExit):
        main.build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "recorded" in text.split("positional arguments")[0].split("\n", 2)[2]


def test_sweep_help_says_where_trials_run_as_the_docs_do(capsys) -> None:
    from tests.conftest import ROOT

    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "thread" not in text  # trials never run on a pool of local threads
    assert "P > 1 in P local worker processes" in text and "one after another in this process" in text
    docs = " ".join((ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8").split())
    assert "| `--parallel P` | Prefect's `ProcessPoolTaskRunner`, P worker processes |" in docs
    assert "| `--parallel 1` (default) | one worker thread in the command's process |" in docs


@pytest.mark.parametrize("word", ["lstm-forecaster", "champion", "planted@champion"])
def test_a_bare_model_name_is_refused_with_the_uri_forms(word, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryError) as info:
        resolve_model(None, word)  # refused before any registry call
    message = str(info.value)
    assert f"model {word!r} is neither a model URI nor an existing path" in message
    assert "models:/NAME@ALIAS or models:/NAME/VERSION" in message and "\n" not in message


def test_uris_and_existing_paths_pass_through(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    for uri in ("runs:/abc/model", "file:///tmp/x", f"file:{tmp_path}", "my-model", str(tmp_path / "my-model")):
        assert resolve_model(None, uri).uri == uri


def test_a_bare_model_name_exits_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    """The command refuses before starting anything: one error line, no traceback, exit 1, no store made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recent.csv").write_text("Date,Close\n2020-01-01,1\n")
    assert main.main(["predict", "--model", "lstm-forecaster", "--data", "recent.csv", "--out", ""]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model 'lstm-forecaster' is neither a model URI nor an existing path")
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["recent.csv"]


def test_verbose_keeps_http_request_logs_quiet(monkeypatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    main.configure_logging()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"  # MLflow's INFO lines only with -v
    main.configure_logging(verbose=True)
    for name in main.CHATTY_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
    assert os.environ["PREFECT_LOGGING_LEVEL"] == os.environ["MLFLOW_LOGGING_LEVEL"] == "INFO"
    main.configure_logging(quiet=True)
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.ERROR
    assert os.environ["PREFECT_LOGGING_LEVEL"] == os.environ["MLFLOW_LOGGING_LEVEL"] == "ERROR"
    assert progress.get_mode() == "off"


def test_progress_mode_follows_the_terminal(monkeypatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    main.configure_logging()
    assert progress.get_mode() == "lines"
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    main.configure_logging()
    assert progress.get_mode() == "bar"


def test_quiet_and_verbose_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.build_parser().parse_args(["-q", "-v", "history", "m"])
    assert exit_.value.code == 2


def test_the_command_leaves_the_progress_mode_as_it_found_it(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(progress.ENV, "off")
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    (tmp_path / "recent.csv").write_text("Date,Close\n2020-01-01,1\n")
    assert main.main(["-v", "predict", "--model", "nope", "--data", "recent.csv", "--out", ""]) == 1
    assert os.environ[progress.ENV] == "off" and "PREFECT_LOGGING_LEVEL" not in os.environ


# ------------------------------------------------------------------ tables
def summary(**extra: float) -> TrainingSummary:
    metrics = {"test_rmse": 1.5, "test_naive_rmse": 2.0, "test_mae": 1.0, "test_naive_mae": 1.2,
               "test_mape": 144.0, "test_naive_mape": 150.0, "test_direction_acc": 0.55,
               "test_naive_direction_acc": float("nan"), "test_rmse_ratio": 0.75, **extra}
    return TrainingSummary(run_id="r", experiment_id="1", metrics=metrics)


def test_training_table_shows_undefined_direction_accuracy_as_na(capsys) -> None:
    main.print_training_summary(summary())
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("direction_acc"))
    assert row.split()[1:] == ["0.55", "n/a"]


def test_training_table_flags_mape_near_zero(capsys) -> None:
    main.print_training_summary(summary(test_actual_near_zero=1.0))
    out = capsys.readouterr().out
    assert "mape *" in out and "MAPE is unreliable here" in out
    main.print_training_summary(summary(test_actual_near_zero=0.0))
    assert "unreliable" not in capsys.readouterr().out


def test_report_table_shows_na_and_the_mape_note() -> None:
    rows = metrics_table(summary(test_actual_near_zero=1.0).metrics)
    assert "| direction accuracy | 0.55 | n/a |" in rows
    assert "| MAPE % * | 144 | 150 |" in rows and any("MAPE is unreliable" in r for r in rows)
    assert not any("unreliable" in r for r in metrics_table(summary().metrics))


# ------------------------------------------------------------------ progress
def test_plain_lines_print_at_most_ten_lines_and_the_last_epoch() -> None:
    out = io.StringIO()
    with progress.EpochProgress("training", 200, mode="lines", stream=out) as shown:
        for epoch in range(200):
            shown(epoch, 1.0 / (epoch + 1), 2.0 / (epoch + 1))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "training: epoch 20/200  train loss 0.05  val loss 0.1"
    assert lines[-1].startswith("training: epoch 200/200")
    out = io.StringIO()
    with progress.EpochProgress("fold 2/5", 200, mode="lines", stream=out) as shown:  # early stop at 47
        for epoch in range(47):
            shown(epoch, 0.5, None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1] == "fold 2/5: epoch 47/200  train loss 0.5  val loss n/a"


def test_the_bar_shows_epoch_and_both_losses() -> None:
    out = io.StringIO()
    with progress.EpochProgress("training", 5, mode="bar", stream=out) as shown:
        for epoch in range(5):
            shown(epoch, 0.25, 0.125)
    text = out.getvalue()
    assert "training" in text and "5/5" in text and "train loss 0.25" in text and "val loss 0.125" in text
    assert "stopped early" not in text
    out = io.StringIO()
    with progress.EpochProgress("fold 1/3", 200, mode="bar", stream=out) as shown:
        for epoch in range(21):
            shown(epoch, 0.25, None)
    assert "fold 1/3 (stopped early)" in out.getvalue() and "epoch  21/2" in out.getvalue()


def test_no_progress_when_off() -> None:
    out = io.StringIO()
    with progress.EpochProgress("training", 5, mode="off", stream=out) as shown:
        shown(0, 1.0, 1.0)
    assert out.getvalue() == ""


def test_mode_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.get_mode() == "off"
    progress.set_mode("lines")
    assert progress.get_mode() == "lines"
    with pytest.raises(ValueError):
        progress.set_mode("loud")  # type: ignore[arg-type]


def test_the_console_shows_each_warning_once_and_the_summary_only_the_rest() -> None:
    console = main.OnceOnConsole()

    def record(name: str, message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    note = "the model's 95 % intervals rest on 12 validation window(s)"
    assert console.filter(record("pipeline.evaluation.intervals", note))
    assert not console.filter(record("prefect.task_runs", note))  # the same note again, through the task run
    assert console.filter(record("prefect.task_runs", "another warning"))
    assert console.filter(record("pipeline", "info lines pass untouched", logging.INFO))
    assert not console.filter(record("pipeline.data.contract", f"data/x.csv: warning: {note}"))  # with the source named
    assert console.unseen([f"warning: {note}", "warning: not shown yet", "rows sorted"]) == [
        "warning: not shown yet", "rows sorted"]
