"""`pipeline monitor` in-process: forecasts logged by `pipeline predict`, actuals arriving, the verdict and its
MLflow run; a shadow challenger scored beside the champion and promoted on evidence."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli.main import main
from tests.conftest import long_config_dict, make_long
from tests.integration import registry_support as rs

TOLERANT = {"min_gain_over_persistence": -0.99}  # a few epochs make no forecaster: these tests are about the loop


def write_yaml(path: Path, raw: dict) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def monitor_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("monitoring")
    return [] if experiment is None else client.search_runs([experiment.experiment_id],
                                                            order_by=["attributes.start_time ASC"])


def test_monitor_scores_the_champion_on_arriving_actuals_and_finds_the_shifted_series(
        prefect_harness, mlflow_store, tmp_path, capsys):
    full = make_long("ABCD", n=72, seed=3)  # hourly; the model sees 56 rows of each, then 16 arrive
    history = full.groupby("id").head(56)
    hist_csv, full_csv = tmp_path / "history.csv", tmp_path / "arrived.csv"
    history.to_csv(hist_csv, index=False)
    shifted = full.copy()
    late = shifted.groupby("id").cumcount() >= 56
    for sid in ("A", "B"):  # a 30 % level shift after the training end
        rows = late & (shifted["id"] == sid)
        shifted.loc[rows, "y"] = (shifted.loc[rows, "y"].astype(float) * 1.3).map("{:.4f}".format)
    shifted.to_csv(full_csv, index=False)
    steady_csv = tmp_path / "steady.csv"
    full.to_csv(steady_csv, index=False)
    config = write_yaml(tmp_path / "panel.yaml", long_config_dict(
        str(hist_csv), registry=TOLERANT, split={"val": 16, "test": 4},  # 16 validation hours calibrate the bands
        monitoring={"max_mase_ratio": 2.0, "coverage_tolerance": 0.15},
        model={"theta_weight": 0}))  # the network alone: a three-epoch one would hand Theta the whole share
    assert main(["train", "--config", config]) == 0
    # three epochs may lose to seasonal naive at the gate: the loop is what is tested here
    assert main(["promote", "panel-forecaster", "1", "--reason", "the monitor test's champion"]) == 0
    model = "models:/panel-forecaster@champion"
    capsys.readouterr()

    # nothing logged yet: nothing to score, exit 0, and the run says so
    assert main(["monitor", "--model", model, "--data", str(hist_csv), "--no-event"]) == 0
    assert "nothing to score: no forecasts of panel-forecaster were logged" in capsys.readouterr().out

    # forecasts from three origins (the data as it stood at 56, 60 and 64 rows), no actuals yet for the first
    for rows in (56, 60, 64):
        part = tmp_path / f"upto{rows}.csv"
        full.groupby("id").head(rows).to_csv(part, index=False)
        assert main(["predict", "--model", model, "--data", str(part), "--out", str(tmp_path / f"f{rows}.csv")]) == 0
    assert main(["monitor", "--model", model, "--data", str(hist_csv), "--no-event"]) == 0
    assert "nothing to score: none of the 12 forecast date(s) of version 1" in capsys.readouterr().out

    # the actuals arrive unchanged: scored, kept, nothing requested
    assert main(["monitor", "--model", model, "--data", str(steady_csv)]) == 0
    out = capsys.readouterr().out
    assert "Verdict:     keep the champion" in out and "Retraining" not in out, out

    # they arrive with A and B 30 % higher: both degraded and drifted, retraining requested through an event
    assert main(["monitor", "--model", model, "--data", str(full_csv), "--retrain-config", config]) == 0
    out = capsys.readouterr().out
    assert "Series degraded (2): A, B" in out and "Series drifted (2): A, B" in out, out
    assert "Verdict:     retrain: live MASE" in out and "Retraining:  requested (Prefect event" in out, out

    client = MlflowClient(mlflow_store)
    runs = monitor_runs(client)
    assert [r.data.tags["monitor.verdict"] for r in runs] == ["keep", "keep", "keep", "retrain"]
    last = runs[-1]
    assert last.info.status == "FINISHED" and last.data.tags["model_version"] == "1"
    assert last.data.tags["monitor.event_id"] != "not sent"
    assert last.data.metrics["live_points"] == 48 and last.data.metrics["series_degraded"] == 2
    assert last.data.metrics["live_mase_ratio"] > 2
    history_points = client.get_metric_history(last.info.run_id, "live_date_mase")
    assert len(history_points) == 12 and len({p.step for p in history_points}) == 12  # one per forecast hour
    first_date = pd.Timestamp(full["ts"].iloc[56])  # the first forecast hour
    assert min(p.timestamp for p in history_points) == first_date.value // 10**6
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=last.info.run_id,
                                                            artifact_path="monitoring/series.csv"))
    assert table.set_index("series")["degraded"].to_dict() == {"A": True, "B": True, "C": False, "D": False}
    assert table.set_index("series").loc["A", "level_change"] == pytest.approx(0.3, abs=0.08)
    listed = {a.path for a in client.list_artifacts(last.info.run_id, "plots")}
    assert "plots/live.png" in listed
    version = client.get_model_version("panel-forecaster", "1")
    assert version.tags["monitor.verdict"] == "retrain" and version.tags["monitor.last_run_id"] == last.info.run_id
    assert [str(v.version) for v in client.search_model_versions("name = 'panel-forecaster'")] == ["1"]

    # a coverage breach alone retrains: errors and drift switched off in the policy
    coverage_only = write_yaml(tmp_path / "coverage.yaml", {"monitoring": {
        "max_mase_ratio": None, "drift": False, "coverage_tolerance": 0.05}})
    assert main(["monitor", "--model", model, "--data", str(full_csv), "--config", coverage_only, "--no-event"]) == 0
    out = capsys.readouterr().out
    assert "Verdict:     retrain: the 80 % intervals covered" in out and "live MASE" not in out.split("Verdict")[1]
    assert "Retraining:  not requested (--no-event)" in out


def test_malformed_new_rows_exit_2_naming_the_line(prefect_harness, mlflow_store, tmp_path, capsys):
    client = rs.client_for(mlflow_store)
    data = rs.trend(growth=0.01)
    cfg = rs.config()
    planted = rs.plant(data, cfg, 0.01)
    assert rs.register(client, planted, rs.window_of(planted.frame, cfg), planted.frame).alias == "champion"
    bad = data.astype({"Close": object})
    bad.loc[57, "Close"] = "n/a"
    csv = tmp_path / "bad.csv"
    bad.to_csv(csv, index=False)
    assert main(["monitor", "--model", "models:/planted@champion", "--data", str(csv)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "line 59" in err and "Close" in err


def test_a_shadow_challenger_that_beats_the_champion_on_the_same_actuals_is_promoted(
        prefect_harness, mlflow_store, tmp_path, capsys):
    client = rs.client_for(mlflow_store)
    data = rs.trend(n=70, growth=0.01)  # +1 % a day
    cfg = rs.config()
    scene = rs.plant(data.head(50), cfg, 0.004)  # forecasts +0.4 % a day: beats persistence, not the truth
    win = rs.window_of(scene.frame, cfg)
    assert rs.register(client, scene, win, scene.frame).alias == "champion"
    better = rs.plant(data.head(50), cfg, 0.01)
    assert rs.register(client, better, win, scene.frame, margins=(0.0, 0.99)).alias == "challenger"

    for rows in range(50, 56):  # six days of batch forecasts, each with the challenger in the shadow
        part = tmp_path / f"upto{rows}.csv"
        data.head(rows).to_csv(part, index=False)
        out = tmp_path / "latest.csv"
        assert main(["predict", "--model", "models:/planted@champion", "--data", str(part), "--out", str(out),
                     "--overwrite", "--shadow"]) == 0
    assert "Shadow:      planted version 2 (@challenger), never served" in capsys.readouterr().out
    assert (tmp_path / "latest.challenger.csv").exists()
    forecasts = client.search_runs([client.get_experiment_by_name("batch-forecasts").experiment_id])
    assert sorted(r.data.tags["forecast_role"] for r in forecasts) == ["challenger"] * 6 + ["champion"] * 6

    policy = write_yaml(tmp_path / "policy.yaml", {"monitoring": {
        "promote_challenger": True, "challenger_margin": 0.2, "challenger_min_origins": 5}})
    csv = tmp_path / "arrived.csv"
    data.head(60).to_csv(csv, index=False)
    assert main(["monitor", "--model", "models:/planted@champion", "--data", str(csv), "--config", policy,
                 "--no-event"]) == 0
    out = capsys.readouterr().out
    assert "Challenger:  v2: challenger MASE" in out and "-> promoted to @champion" in out, out
    assert rs.registry_state(client)["planted"][1] == {"champion": "2"}
    moves = [m for m in rs.registry.read_history(client, "planted") if m.alias == "champion"]
    assert moves[-1].to_version == "2" and moves[-1].by.startswith("monitor (MLflow run")
    run = monitor_runs(client)[-1]
    assert run.data.tags["monitor.promoted"] == "2"
    assert run.data.metrics["challenger_challenger_mase"] < 0.5 * run.data.metrics["challenger_champion_mase"]
