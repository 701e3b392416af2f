"""Run reports: config digests, artifact keys, MLflow links and the markdown summary."""

from __future__ import annotations

from pipeline.tracking.run_report import RunReport, artifact_key, config_digest, mlflow_run_url, run_markdown

METRICS = {"test_rmse": 1.5, "test_naive_rmse": 2.0, "test_mae": 1.0, "test_naive_mae": 1.25,
           "test_mape": 1.1, "test_naive_mape": 1.3, "test_direction_acc": 0.55, "test_naive_direction_acc": 0.0,
           "test_rmse_ratio": 0.75}


def test_config_digest_follows_values_not_key_order(tiny_config) -> None:
    resolved = tiny_config.model_dump(mode="json")
    reordered = dict(reversed(list(resolved.items())))
    assert config_digest(resolved) == config_digest(reordered)
    assert len(config_digest(resolved)) == 16
    assert config_digest(tiny_config.with_overrides(train={"epochs": 3}).model_dump(mode="json")) != config_digest(resolved)
    assert config_digest(tiny_config.with_overrides(train={"epochs": 2}).model_dump(mode="json")) == config_digest(resolved)


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("Default Config_1", "run-summary") == "default-config-1-run-summary"
    assert artifact_key("--", "mlflow-run") == "pipeline-mlflow-run"


def test_mlflow_links_go_to_the_server_or_the_local_ui() -> None:
    assert mlflow_run_url("http://mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert mlflow_run_url("sqlite:///x/mlflow.db", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert mlflow_run_url("sqlite:///x/mlflow.db", "3", "abc", "http://box:8080") == "http://box:8080/#/experiments/3/runs/abc"


def test_the_link_follows_the_ui_port_and_a_local_store_says_what_serves_it() -> None:
    from pipeline.tracking.run_report import ReportContext, failed_report, local_ui_url, ui_hint

    assert local_ui_url({}, "UI") == "http://127.0.0.1:5000"
    assert local_ui_url({"MLFLOW_PORT": "5077"}, "UI") == "http://127.0.0.1:5077"  # `MLFLOW_PORT=5077 make ui`
    assert local_ui_url({"MLFLOW_PORT": "5077", "UI": "http://box:8080"}, "UI") == "http://box:8080"
    server = ReportContext("default", "a.csv", "c", "https://mlflow.example:8443", "2", run_id="r9")
    local = ReportContext("default", "a.csv", "c", "sqlite:///mlflow.db", "2", ui_url="http://127.0.0.1:5077",
                          run_id="r9")
    on_server = run_markdown(failed_report(server, ValueError("x")))
    assert "(https://mlflow.example:8443/#/experiments/2/runs/r9)" in on_server and ":5000" not in on_server
    assert "make ui" not in on_server and ui_hint(server.tracking_uri) is None
    text = run_markdown(failed_report(local, ValueError("x")))
    assert "[r9](http://127.0.0.1:5077/#/experiments/2/runs/r9)" in text and ":5000" not in text
    assert "`MLFLOW_PORT=<port> make ui`" in text and "--backend-store-uri sqlite:///mlflow.db --port 5077" in text


def test_trained_summary_has_data_metrics_registry_and_link() -> None:
    text = run_markdown(RunReport(
        config_name="default", outcome="trained", data_source="data/SBUX.csv", data_digest="d1", config_digest="c1",
        data_rows="253", data_start="2023-01-03", data_end="2023-12-29", metrics=METRICS, model_name="lstm-forecaster",
        version="4", alias="champion", promotion="beats champion v3", mlflow_run_id="r1",
        mlflow_run_url="http://127.0.0.1:5000/#/experiments/1/runs/r1"))
    assert text.startswith("# default: trained a new model\n")
    assert "| `data/SBUX.csv` | 253 | 2023-01-03 | 2023-12-29 | `d1` |" in text
    assert "| RMSE | 1.5 | 2 |" in text and "| direction accuracy | 0.55 | 0 |" in text
    assert "RMSE ratio model/persistence: 0.75 (better than persistence)" in text
    assert "**lstm-forecaster v4** -> `@champion`" in text and "promotion decision: beats champion v3" in text
    assert "[r1](http://127.0.0.1:5000/#/experiments/1/runs/r1)" in text


def test_nothing_to_do_and_failed_summaries_say_so() -> None:
    skipped = run_markdown(RunReport(config_name="default", outcome="nothing to do", data_source="a.csv",
                                     metrics={"test_rmse_ratio": 1.2}, version="4", model_name="m", alias="challenger",
                                     detail="Same as run r1.", mlflow_run_id="r1"))
    assert "nothing to do: same data and config" in skipped and "Same as run r1." in skipped
    assert "## Metrics vs baselines (of that run)" in skipped and "NOT better than persistence" in skipped
    failed = run_markdown(RunReport(config_name="default", outcome="failed", data_source="a.csv",
                                    detail="`DataError: a.csv: data file not found`"))
    assert failed.startswith("# default: FAILED") and "data file not found" in failed
    assert "no version registered by this flow run" in failed and "## MLflow" not in failed
    assert "| `a.csv` | n/a | n/a | n/a | `n/a` |" in failed


def test_the_per_series_table_lists_the_worst_first_and_points_at_the_csv() -> None:
    import pandas as pd

    from pipeline.tracking.run_report import series_markdown

    table = pd.DataFrame({"store": ["a", "b", "c"], "windows": [3, 3, 3], "model__mase": [0.8, 1.6, 1.2],
                          "seasonal_naive__mase": [1.0, 1.0, 1.5], "model__smape": [5.0, 9.0, 7.0]})
    lines = series_markdown(table, rows=2)
    assert lines[0] == "| store | windows | MASE | seasonal naive MASE | ratio | sMAPE |"
    assert lines[2] == "| b | 3 | 1.6 | 1 | 1.6 | 9 |" and lines[3] == "| c | 3 | 1.2 | 1.5 | 0.8 | 7 |"
    assert lines[-1] == "1 more series in `evaluation/test_series_scores.csv`."
    text = run_markdown(RunReport(config_name="p", outcome="trained", data_source="p.csv", series_table=lines))
    assert "## Test scores per series\n| store |" in text
