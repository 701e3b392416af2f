"""The promotion gate's arithmetic, forecast-table scoring and the champion lineage: no MLflow."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline import registry
from pipeline.registry import AliasMove, Check, Decision, champion_lineage, table_rmse


def test_gate_checks_on_numbers():
    champ = registry.Score(1.0, 10)
    checks = registry.gate(0.9, 1.2, "4", champ, 0.0, 0.0)
    assert [c.passed for c in checks] == [True, True]
    assert [c.passed for c in registry.gate(0.9, 1.2, "4", champ, 0.3, 0.0)] == [False, True]  # needs < 0.84
    assert [c.passed for c in registry.gate(0.9, 1.2, "4", champ, 0.0, 0.2)] == [True, False]  # needs < 0.8
    assert [c.passed for c in registry.gate(1.0, 1.2, "4", champ, 0.0, 0.0)] == [True, False]  # a tie is no gain
    assert [c.passed for c in registry.gate(1.3, 1.2, None, None, -0.1, 0.0)] == [True, True]  # tolerated
    unscored = registry.gate(0.5, 1.2, "4", registry.Score(None, 0, "could not be loaded"), 0.0, 0.0)
    assert not unscored[1].passed and "v4 could not be loaded" in unscored[1].detail
    assert not registry.gate(float("nan"), 1.2, None, None, 0.0, 0.0)[0].passed


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


def move(alias, src, dst, kind):
    return AliasMove(alias, src, dst, "2026-01-01T00:00:00+00:00", "tests", "why", kind)


def test_champion_lineage_pushes_promotions_and_pops_rollbacks():
    moves = [
        move("challenger", None, "1", "register"), move("champion", None, "1", "gate"),
        move("champion", "1", "3", "gate"), move("champion", "3", "2", "manual"),
        move("champion", "2", "3", "rollback"),
    ]
    assert champion_lineage(moves, "3") == ["1", "3"]
    assert champion_lineage(moves + [move("champion", "3", "1", "rollback")], "1") == ["1"]
    # moved outside the pipeline (the UI): the current champion still counts as in force
    assert champion_lineage(moves, "5") == ["1", "3", "5"]
    assert champion_lineage([], None) == []


def test_alias_move_round_trips_through_json():
    m = AliasMove("champion", "1", "2", "2026-01-01T00:00:00+00:00", "me", "better", "manual", "abc")
    assert AliasMove.from_json(m.to_json()) == m


def test_decision_reports_both_sides_of_each_check():
    d = Decision("3", "challenger", 1.1, 1.3, "2", 1.0,
                 [Check("persistence", True, "a"), Check("champion", False, "b")], (0.0, 0.05))
    assert not d.promoted
    assert d.reason == "kept as @challenger: persistence PASS: a; champion FAIL: b"
    tags = d.tags()
    assert tags["gate.decision"] == "refused" and tags["gate.champion"] == "FAIL: b"
    assert tags["gate.champion_rmse"] == "1.0" and tags["gate.min_gain_over_champion"] == "0.05"
    md = d.markdown("m", "run1")
    assert "| champion v2 (re-scored, its own preprocessing) | 1 |" in md and "| champion | FAIL | b |" in md
    assert "5.00% lower than the champion" in md


def test_history_keys_sort_in_write_order():
    keys = [registry._history_key() for _ in range(50)]
    assert keys == sorted(keys) and len(set(keys)) == 50
