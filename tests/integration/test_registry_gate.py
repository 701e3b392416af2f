"""The promotion gate against a real MLflow registry, with planted models of known quality."""

from __future__ import annotations

import pytest

from pipeline.tracking.history import AUDIT_EXPERIMENT
from pipeline.tracking.registry import get_aliases, read_history
from tests.integration import registry_support as rs


def test_gate_promotes_a_better_and_refuses_a_worse_challenger(mlflow_store):
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)  # 1 % higher each day: persistence is ~1 % off

    # v1 forecasts +0.5 % a day: beats persistence, no champion yet
    first = rs.register(client, rs.plant(data, cfg, 0.005), win, frame)
    assert (first.version, first.alias) == ("1", "champion")
    assert [c.passed for c in first.checks] == [True, True]
    assert first.challenger < 0.6 * win.persistence_rmse

    # planted worse: +3 % a day is worse than persistence and than the champion
    worse = rs.plant(data, cfg, 0.03)
    decision = rs.register(client, worse, win, frame)
    assert (decision.version, decision.alias) == ("2", "challenger")
    assert [c.passed for c in decision.checks] == [False, False]
    assert get_aliases(client, "planted") == {"champion": "1", "challenger": "2"}
    # the champion was re-scored on the same window: exactly its own in-process RMSE
    assert decision.champion_version == "1"
    assert decision.champion_score == pytest.approx(first.challenger, rel=1e-9)
    mv = client.get_model_version("planted", "2")
    assert mv.tags["gate.decision"] == "refused"
    assert mv.tags["gate.check.baseline"].startswith("FAIL: test RMSE")
    assert f"{decision.champion_score:.6g}" in mv.tags["gate.check.champion"]
    assert mv.tags["test_window"] == win.window.tag() and mv.tags["run_id"] == mv.run_id
    assert "REFUSED" in mv.description and "baseline: FAIL: test RMSE" in mv.description

    # planted better: +1 % a day is the truth; promoted, and @challenger leaves it
    better = rs.register(client, rs.plant(data, cfg, 0.01), win, frame)
    assert (better.version, better.alias) == ("3", "champion")
    assert better.challenger < decision.champion_score
    assert get_aliases(client, "planted") == {"champion": "3"}
    assert client.get_model_version("planted", "3").tags["gate.decision"] == "promoted"

    champion_moves = [(m.from_version, m.to_version, m.kind) for m in read_history(client, "planted")
                      if m.alias == "champion"]
    assert champion_moves == [(None, "1", "gate"), ("1", "3", "gate")]
    reason = [m for m in read_history(client, "planted") if m.alias == "champion"][-1].reason
    assert f"{better.challenger:.6g}" in reason and f"{better.champion_score:.6g}" in reason


def test_the_calibration_check_refuses_a_model_whose_intervals_lie(mlflow_store):
    """registry.max_coverage_error: a version that beats persistence but whose 95 % intervals cover 80 % stays
    @challenger, tagged with why; an honest one becomes @champion."""
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    liar = rs.register(client, rs.plant(data, cfg, 0.01), win, frame, coverage=(0.15, 0.03))
    assert liar.alias == "challenger" and [c.passed for c in liar.checks] == [True, True, False]
    tag = client.get_model_version("planted", liar.version).tags["gate.check.calibration"]
    assert tag.startswith("FAIL") and "0.1500" in tag and "registry.max_coverage_error" in tag
    honest = rs.register(client, rs.plant(data, cfg, 0.01), win, frame, coverage=(0.01, 0.03))
    assert honest.alias == "champion" and get_aliases(client, "planted") == {"champion": honest.version}


def test_margin_over_the_champion_refuses_a_small_gain(mlflow_store):
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    rs.register(client, rs.plant(data, cfg, 0.008), win, frame)
    # 0.009 is a little better than 0.008, but not 50 % better
    small = rs.register(client, rs.plant(data, cfg, 0.009), win, frame, margins=(0.0, 0.5))
    assert small.alias == "challenger"
    assert small.challenger < small.champion_score
    assert [c.passed for c in small.checks] == [True, False]
    assert "margin 50.00%" in small.checks[1].detail
    assert get_aliases(client, "planted") == {"champion": "1", "challenger": "2"}


def test_champion_is_rescored_with_its_own_old_scalers_after_the_range_shifts(mlflow_store):
    client = rs.client_for(mlflow_store)
    # price levels, standard-scaled: the scaler learns the level of its training rows
    cfg = rs.config(preprocess={"target_transform": "level", "target_scaler": "standard"})
    old, new = rs.level(mean=100.0, seed=1), rs.level(mean=200.0, seed=2)
    champion = rs.plant(old, cfg, 0.0)  # forecasts its training mean, ~100
    first = rs.register(client, champion, rs.window_of(champion.frame, cfg), champion.frame)
    assert first.alias == "champion"

    challenger = rs.plant(new, cfg, 0.0)  # fit on the shifted data: forecasts ~200
    win = rs.window_of(challenger.frame, cfg)
    decision = rs.register(client, challenger, win, challenger.frame)

    expected = rs.own_rmse(champion, challenger.frame, win)  # the champion with its own scalers
    assert decision.champion_score == pytest.approx(expected, rel=1e-9)
    assert 90 < decision.champion_score < 110  # still forecasts ~100 on data near 200
    # with the challenger's scalers the champion would have scored as well as the challenger
    borrowed = rs.Planted(rs.ForecastBundle(champion.bundle.checkpoint, challenger.bundle.preprocessor, cfg),
                          challenger.frame, new)
    assert rs.own_rmse(borrowed, challenger.frame, win) < 5
    assert decision.alias == "champion" and decision.challenger < 5


def test_champion_of_another_target_cannot_be_beaten_automatically(mlflow_store):
    client = rs.client_for(mlflow_store)
    data = rs.trend(growth=0.01)
    volume_cfg = rs.config(data={"target": "Volume", "features": ["Open", "High", "Low", "Close"]},
                           preprocess={"target_transform": "level", "target_scaler": "standard"})
    vol = rs.plant(data, volume_cfg, 0.0)
    rs.register(client, vol, rs.window_of(vol.frame, volume_cfg), vol.frame, margins=(-0.99, 0.0))
    cfg = rs.config()
    close = rs.plant(data, cfg, 0.01)
    decision = rs.register(client, close, rs.window_of(close.frame, cfg), close.frame)
    assert decision.alias == "challenger"
    assert "forecasts 'Volume', not 'Close'" in decision.checks[1].detail


def test_failure_after_registration_leaves_nothing_behind(mlflow_store, monkeypatch):
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    rs.register(client, rs.plant(data, cfg, 0.005), win, frame)
    history_before = read_history(client, "planted")

    def broken(*args, **kwargs):
        raise RuntimeError("store went away")

    monkeypatch.setattr(client, "update_model_version", broken)
    with pytest.raises(RuntimeError, match="store went away"):
        rs.register(client, rs.plant(data, cfg, 0.01), win, frame)
    assert get_aliases(client, "planted") == {"champion": "1"}
    assert read_history(client, "planted") == history_before
    assert [str(v.version) for v in client.search_model_versions("name = 'planted'")] == ["1"]


def test_failure_while_recording_a_move_leaves_no_history_behind(mlflow_store, monkeypatch):
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    rs.register(client, rs.plant(data, cfg, 0.005), win, frame)
    history_before = read_history(client, "planted")
    audit = client.get_experiment_by_name(AUDIT_EXPERIMENT).experiment_id
    finish, finished = client.set_terminated, []

    def flaky(run_id, *args, **kwargs):  # the audit run of the champion move exists but cannot be finished
        if client.get_run(run_id).info.experiment_id == audit:
            finished.append(run_id)
            if len(finished) == 2:
                raise RuntimeError("store went away")
        return finish(run_id, *args, **kwargs)

    monkeypatch.setattr(client, "set_terminated", flaky)
    with pytest.raises(RuntimeError, match="store went away"):
        rs.register(client, rs.plant(data, cfg, 0.01), win, frame)
    assert get_aliases(client, "planted") == {"champion": "1"}
    assert read_history(client, "planted") == history_before
    assert len(client.search_runs([audit])) == len(history_before)  # the two written are deleted
    assert [str(v.version) for v in client.search_model_versions("name = 'planted'")] == ["1"]


def test_a_refit_champion_is_rescored_with_the_model_its_run_evaluated(mlflow_store):
    """A refit champion trained on the rows of the window it is re-scored on; its model carries the one its run
    evaluated (format 9), and the gate scores that one, out of sample, and says so."""
    import dataclasses

    from pipeline.tracking.registry import EVALUATED_NOTE

    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    kept = rs.plant(data, cfg, 0.004)  # what its run evaluated
    refit = rs.plant(data, cfg, 0.01)  # trained on every row: it forecasts this window as well as the truth
    champion = dataclasses.replace(refit, bundle=dataclasses.replace(refit.bundle, evaluated=kept.bundle))
    assert rs.register(client, champion, win, frame).alias == "champion"
    decision = rs.register(client, rs.plant(data, cfg, 0.008), win, frame)
    assert decision.champion_score == pytest.approx(rs.own_rmse(kept, frame, win), rel=1e-9)
    assert decision.champion_score != pytest.approx(rs.own_rmse(refit, frame, win), rel=1e-3)
    assert EVALUATED_NOTE in decision.checks[1].detail
    assert decision.alias == "champion"  # 0.008 beats the evaluated 0.004, though not the refit 0.01


def test_a_refit_champion_logged_before_format_9_is_flagged_as_partly_in_sample(mlflow_store):
    """A refit champion with no evaluated model beside it can only be re-scored as it is: the gate says its score
    is flattered where its data reach into the window."""
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    rs.register(client, rs.plant(data, cfg, 0.004), win, frame)
    run_id = client.get_model_version_by_alias("planted", "champion").run_id
    client.log_param(run_id, "train.refit", "True")
    client.set_tag(run_id, "data_end", str(frame.index[-1].date()))
    decision = rs.register(client, rs.plant(data, cfg, 0.008), win, frame)
    assert f"partly in-sample: refit on its data through {frame.index[-1].date()}, inside this window" in \
        decision.checks[1].detail
