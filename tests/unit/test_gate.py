"""The promotion gate's arithmetic and forecast-table scoring: plain numbers, no MLflow or Prefect."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.tracking import promotion
from pipeline.tracking.promotion import Check, Decision, Score, covers_window, decide, table_rmse
from tests.conftest import ROOT


def checks(challenger, baseline_score, champion_version, champion, *margins):
    return decide("5", challenger, baseline_score, champion_version, champion, margins).checks


def test_the_decision_checks_the_numbers():
    champ = Score(1.0, 10)
    assert [c.passed for c in checks(0.9, 1.2, "4", champ, 0.0, 0.0)] == [True, True]
    assert [c.passed for c in checks(0.9, 1.2, "4", champ, 0.3, 0.0)] == [False, True]  # needs < 0.84
    assert [c.passed for c in checks(0.9, 1.2, "4", champ, 0.0, 0.2)] == [True, False]  # needs < 0.8
    assert [c.passed for c in checks(1.0, 1.2, "4", champ, 0.0, 0.0)] == [True, False]  # a tie is no gain
    assert [c.passed for c in checks(1.3, 1.2, None, None, -0.1, 0.0)] == [True, True]  # tolerated
    unscored = checks(0.5, 1.2, "4", Score(None, 0, "could not be loaded"), 0.0, 0.0)
    assert not unscored[1].passed and "v4 could not be loaded" in unscored[1].detail
    assert not checks(float("nan"), 1.2, None, None, 0.0, 0.0)[0].passed


def test_the_decision_promotes_only_when_every_check_passes():
    first = decide("1", 0.9, 1.2, None, None, (0.0, 0.0))
    assert (first.alias, first.promoted, first.champion_score) == ("champion", True, None)
    worse = decide("2", 1.1, 1.2, "1", Score(1.0, 10), (0.0, 0.0))
    assert (worse.alias, worse.champion_version, worse.champion_score) == ("challenger", "1", 1.0)
    assert [c.passed for c in worse.checks] == [True, False] and worse.margins == (0.0, 0.0)
    assert decide("3", 0.5, 1.2, "1", Score(None, 0, "could not be loaded"), (0.0, 0.0)).alias == "challenger"


def test_table_rmse_scores_every_step_of_the_windows_on_the_test_dates():
    table = pd.DataFrame({
        "origin": ["d0", "d0", "d1", "d1", "d2", "d2"],
        "step": [1, 2, 1, 2, 1, 2],
        "date": ["d1", "d2", "d2", "d3", "d3", "d4"],
        "forecast": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })
    actual = pd.Series([0.0, 1.0, 2.0, 2.0], index=["d0", "d1", "d2", "d3"])
    one_step = table_rmse(table, actual, ["d2", "d3"], horizon=1)  # windows from d1 and d2, step 1
    assert one_step.count == 2 and one_step.rmse == pytest.approx(math.sqrt((1 + 9) / 2))
    both = table_rmse(table, actual, ["d2", "d3"], horizon=2)  # d4 has no actual: left out
    assert both.count == 3 and both.rmse == pytest.approx(math.sqrt((1 + 4 + 9) / 3))
    assert table_rmse(table, actual, ["x"], horizon=1).error == "no forecasts on the test window"
    # a champion must cover every test forecast to be compared
    assert covers_window(one_step, ["d2", "d3"], 1) == one_step
    partial = covers_window(both, ["d2", "d3"], 2)
    assert partial.rmse is None and partial.error.startswith("covers 3 of the 4 test forecasts")


def test_decision_reports_both_sides_of_each_check():
    d = Decision("3", "challenger", 1.1, 1.3, "2", 1.0,
                 [Check("baseline", True, "a"), Check("champion", False, "b")], (0.0, 0.05))
    assert not d.promoted
    assert d.reason == "kept as @challenger: baseline PASS: a; champion FAIL: b"
    tags = d.tags()
    assert tags["gate.decision"] == "refused" and tags["gate.check.champion"] == "FAIL: b"
    assert (tags["gate.metric"], tags["gate.challenger"], tags["gate.baseline"], tags["gate.baseline_score"]) == (
        "rmse", "1.1", "naive", "1.3")
    assert tags["gate.champion_score"] == "1.0" and tags["gate.min_gain_over_champion"] == "0.05"
    md = d.markdown("m", "run1")
    assert "| champion v2 (re-scored, its own preprocessing) | 1 |" in md and "| champion | FAIL | b |" in md
    assert "| test RMSE |" in md and "| persistence | 1.3 |" in md and "5.00% lower than the champion" in md
    assert d.description().splitlines() == ["Promotion gate: REFUSED, stays @challenger",
                                            "- baseline: PASS: a", "- champion: FAIL: b"]


def test_the_gate_holds_the_model_to_the_strongest_baseline_unless_one_is_named():
    metrics = {"test_rmse": 2.0, "test_naive_rmse": 3.0, "test_seasonal_naive_rmse": 1.0, "test_drift_rmse": float("nan"),
               "test_mase": 0.9, "test_naive_mase": 1.1, "test_seasonal_naive_mase": 1.3}
    assert promotion.strongest_baseline(metrics, "rmse") == ("seasonal_naive", 1.0)  # 2x seasonal naive: no champion
    assert promotion.strongest_baseline(metrics, "mase") == ("naive", 1.1)
    assert promotion.strongest_baseline(metrics, "rmse", "naive") == ("naive", 3.0)
    named = promotion.strongest_baseline(metrics, "rmse", "moving_average")  # named but not computed: nothing to beat
    assert named[0] == "moving_average" and math.isnan(named[1])
    assert not decide("1", 2.0, math.nan, None, None, (0.0, 0.0), "rmse", "moving_average").promoted
    decision = decide("1", 2.0, 1.0, None, None, (0.0, 0.0), "rmse", "seasonal_naive")
    assert not decision.promoted and "baseline FAIL: test RMSE 2 vs seasonal naive 1" in decision.reason
    assert decision.tags()["gate.baseline"] == "seasonal_naive"


def test_versions_gated_before_the_gate_named_its_metric_still_read():
    old = {"gate.decision": "promoted", "gate.challenger_rmse": "0.5", "gate.persistence_rmse": "0.7",
           "gate.champion_rmse": "0.6", "gate.champion_version": "1", "gate.persistence": "PASS: x",
           "gate.champion": "PASS: y"}
    read = promotion.recorded(old)
    assert (read["gate.metric"], read["gate.challenger"], read["gate.baseline"], read["gate.baseline_score"]) == (
        "rmse", "0.5", "naive", "0.7")
    assert read["gate.check.champion"] == "PASS: y" and read["gate.champion_score"] == "0.6"
    assert promotion.recorded_line(old) == "test RMSE 0.5 vs persistence 0.7; champion v1 0.6"
    portfolio = {**old, "gate.metric": "MASE", "gate.baseline": "seasonal naive"}
    assert promotion.recorded_line(portfolio).startswith("test MASE 0.5 vs seasonal naive 0.7")
    new = Decision("2", "champion", 0.4, 0.5, None, None, [], (0.0, 0.0), "mase", "seasonal_naive").tags()
    assert promotion.recorded_line(new) == "test MASE 0.4 vs seasonal naive 0.5"
    assert promotion.recorded_line({"data_digest": "x"}) is None


def test_gate_and_history_import_neither_mlflow_nor_prefect():
    code = ("import sys, pipeline.tracking.promotion, pipeline.tracking.history; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'prefect', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}).stdout
    assert out.strip() == "[]"
