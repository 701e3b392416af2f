"""Run reports: config digests, artifact keys, MLflow links and the markdown summary."""

from __future__ import annotations

from pipeline.reports import RunReport, artifact_key, config_digest, mlflow_run_url, run_markdown

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
