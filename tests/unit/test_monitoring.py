"""The monitor's steps on hand-made forecast logs and series: joins, live scores, drift tests, the policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import MonitoringConfig
from pipeline.evaluation import monitoring
from pipeline.evaluation.monitoring import Promise


def logged(values: list[float], origin: str, version: str = "1", series: str = "A", run: str = "r1",
           when: str = "2024-01-01", width: float = 1.0, freq: str = "D") -> pd.DataFrame:
    """A forecasts CSV as `pipeline predict` writes it (text dates), in the monitor's form."""
    start = pd.Timestamp(origin)
    dates = pd.date_range(start + pd.tseries.frequencies.to_offset(freq), periods=len(values), freq=freq)
    table = pd.DataFrame({"store": series, "origin": start.isoformat(sep=" "), "step": range(1, len(values) + 1),
                          "date": dates.strftime("%Y-%m-%d"), "forecast": values,
                          "lower_80": np.array(values) - width, "upper_80": np.array(values) + width})
    return monitoring.forecast_rows(table, "store", "value", version=version, role="champion", run_id=run,
                                    logged=pd.Timestamp(when))


def history(values: np.ndarray, start: str = "2024-01-01", freq: str = "D") -> pd.DataFrame:
    return pd.DataFrame({"y": values}, index=pd.date_range(start, periods=len(values), freq=freq))


def test_a_forecast_logged_twice_by_one_version_counts_once_the_newest():
    first = logged([10.0, 11.0], "2024-01-10", run="r1", when="2024-01-10 18:00")
    again = logged([12.0, 13.0], "2024-01-10", run="r2", when="2024-01-10 19:00")
    other = logged([9.0, 9.5], "2024-01-10", version="2", run="r3", when="2024-01-10 18:30")
    log = monitoring.forecast_log([first, again, other])
    assert len(log) == 4
    assert log[log["version"] == "1"]["forecast"].tolist() == [12.0, 13.0]
    assert log["origin"].dtype.kind == "M" and log["date"].iloc[0] == pd.Timestamp("2024-01-11")


def test_one_series_goes_by_the_id_given_and_levels_are_read_from_the_columns():
    table = pd.DataFrame({"origin": ["2024-01-01 10:00"], "step": [1], "date": ["2024-01-01 11:00"],
                          "forecast": [1.0], "lower_95": [0.0], "upper_95": [2.0], "lower_80": [0.5]})
    rows = monitoring.forecast_rows(table, None, "Close", version="3", role="served", run_id="r", logged=pd.Timestamp(0))
    assert rows["series"].tolist() == ["Close"] and rows["date"].iloc[0] == pd.Timestamp("2024-01-01 11:00")
    assert monitoring.levels_of(rows) == [95]  # lower_80 without its upper is no level


def test_live_scores_are_the_textbook_definitions():
    frame = history(np.array([10.0, 12.0, 10.0, 12.0, 10.0, 12.0, 11.0, 13.0]))  # |diffs| = 2: MASE scale 2
    log = monitoring.forecast_log([logged([10.0, 14.0], "2024-01-06", series="A")])
    actuals = monitoring.actual_table({"A": frame}, "y")
    scales = monitoring.mase_scales({"A": frame}, "y", {"A": pd.Timestamp("2024-01-06")}, season=1)
    assert scales == {"A": 2.0}
    scored = monitoring.join_actuals(log, actuals, scales)
    assert scored["actual"].tolist() == [11.0, 13.0]  # 2024-01-07, 2024-01-08
    m = monitoring.live_metrics(scored, [80])
    assert m["points"] == 2 and m["mae"] == pytest.approx(1.0) and m["mase"] == pytest.approx(0.5)
    assert m["smape"] == pytest.approx(100 * (2 / 21 + 2 / 27) / 2)
    assert m["coverage_80"] == pytest.approx(1.0)  # both errors 1.0, at the band's edge: inside


def test_forecasts_whose_dates_have_not_arrived_are_not_scored():
    frame = history(np.arange(10.0))
    log = monitoring.forecast_log([logged([1.0, 2.0, 3.0], "2024-01-09")])  # dates 10, 11, 12 January
    scored = monitoring.join_actuals(log, monitoring.actual_table({"A": frame}, "y"), {"A": 1.0})
    assert scored["date"].tolist() == [pd.Timestamp("2024-01-10")]


def test_drift_finds_a_thirty_percent_level_shift_and_leaves_a_steady_series_alone():
    rng = np.random.default_rng(0)
    steady = 100 + rng.normal(0, 1, 60)
    shifted = steady.copy()
    shifted[50:] *= 1.3
    frames = {"steady": history(steady), "shifted": history(shifted), "short": history(steady[:52])}
    end = frames["steady"].index[49]
    table = monitoring.drift_tests(frames, "y", dict.fromkeys(frames, end), season=7,
                                   policy=MonitoringConfig()).set_index("series")
    assert bool(table.loc["shifted", "level_drift"]) and table.loc["shifted", "level_change"] == pytest.approx(0.3, abs=0.03)
    assert not bool(table.loc["steady", "drift"])
    assert table.loc["short", "new_rows"] == 2 and not bool(table.loc["short", "drift"])  # too few new rows to test


def test_drift_finds_a_variance_change():
    rng = np.random.default_rng(1)
    calm = 50 + np.cumsum(rng.normal(0, 0.2, 120))
    wild = calm.copy()
    wild[80:] = wild[79] + np.cumsum(rng.normal(0, 2.0, 40))
    table = monitoring.drift_tests({"w": history(wild)}, "y", {"w": history(wild).index[79]}, season=1,
                                   policy=MonitoringConfig())
    assert bool(table["variance_drift"].iloc[0]) and table["variance_ratio"].iloc[0] > 5


def scored_rows(errors: list[float], series: str = "A", covered: bool = True, version: str = "1") -> pd.DataFrame:
    n = len(errors)
    dates = pd.date_range("2024-02-01", periods=n, freq="D")
    return pd.DataFrame({"series": series, "origin": dates - pd.Timedelta(days=1), "step": 1, "date": dates,
                         "forecast": 10.0, "actual": 10.0 + np.array(errors), "scale": 1.0, "version": version,
                         "lower_95": 10.0 - (100 if covered else 0.001), "upper_95": 10.0 + (100 if covered else 0.001)})


def test_the_policy_retrains_when_live_mase_breaks_its_promise_and_names_the_degraded_series():
    policy = MonitoringConfig(window=10, max_mase_ratio=1.5)
    scored = pd.concat([scored_rows([2.0] * 10, "A"), scored_rows([0.5] * 10, "B")])
    promise = Promise({"mase": 0.8, "coverage_95": 0.95})
    window = monitoring.live_metrics(monitoring.last_dates(scored, policy.window), [95])
    table = monitoring.series_table(scored, [95], promise, policy)
    verdict = monitoring.decide(policy, window, promise, table, [], None)
    assert verdict.retrain and "1.56x the promised 0.8" in verdict.reasons[0]
    assert verdict.degraded == ("A",)
    assert table.set_index("series").loc["A", "ratio_mase"] == pytest.approx(2.5)


def test_the_policy_keeps_a_champion_that_keeps_its_promise():
    policy = MonitoringConfig(window=10)
    scored = scored_rows([0.7] * 10)
    promise = Promise({"mase": 0.8, "coverage_95": 0.95})
    window = monitoring.live_metrics(scored, [95])
    verdict = monitoring.decide(policy, window, promise, monitoring.series_table(scored, [95], promise, policy), [], 2.0)
    assert not verdict.retrain and verdict.reasons == () and verdict.headline.startswith("keep")


def test_a_coverage_breach_retrains():
    policy = MonitoringConfig(window=20, coverage_tolerance=0.1)
    scored = pd.concat([scored_rows([0.5] * 12, covered=True), scored_rows([0.5] * 8, "B", covered=False)])
    promise = Promise({"mase": 0.8})
    window = monitoring.live_metrics(scored, [95])
    assert window["coverage_95"] == pytest.approx(0.6)
    verdict = monitoring.decide(policy, window, promise, monitoring.series_table(scored, [95], promise, policy), [], None)
    assert verdict.retrain and "95 % intervals covered 0.600" in verdict.reasons[0]


def test_too_few_points_give_a_note_not_a_verdict_and_new_series_or_age_still_retrain():
    policy = MonitoringConfig(min_points=5, retrain_every_days=30)
    scored = scored_rows([9.0] * 3)
    promise = Promise({"mase": 0.8})
    window = monitoring.live_metrics(scored, [])
    table = monitoring.series_table(scored, [], promise, policy)
    verdict = monitoring.decide(policy, window, promise, table, ["Z"], 45.0)
    assert "fewer than monitoring.min_points" in verdict.notes[0]
    assert [r.split(" ")[1] for r in verdict.reasons] == ["series", "champion"]
    assert verdict.unseen == ("Z",)


def test_the_challenger_earns_promotion_only_by_the_margin_over_enough_origins():
    champion = scored_rows([1.0] * 6)

    def challenger_off_by(error: float) -> pd.DataFrame:  # the same actuals, its own forecasts
        return champion.assign(forecast=champion["actual"] - error, version="2")

    challenger = challenger_off_by(0.5)
    promote, why, figures = monitoring.compare_challenger(
        champion, challenger, MonitoringConfig(promote_challenger=True, challenger_margin=0.1, challenger_min_origins=5))
    assert promote and figures["challenger_mase"] == pytest.approx(0.5) and "6 origin(s)" in why
    promote, why, _ = monitoring.compare_challenger(
        champion, challenger, MonitoringConfig(promote_challenger=True, challenger_min_origins=7))
    assert not promote and "fewer origins" in why
    promote, why, _ = monitoring.compare_challenger(
        champion, challenger_off_by(0.97), MonitoringConfig(promote_challenger=True, challenger_margin=0.05))
    assert not promote and "not better by the margin" in why


def test_the_rows_a_model_had_seen_end_at_its_first_forecast_origin_or_the_training_day():
    log = monitoring.forecast_log([logged([1.0], "2024-01-05 07:00", series="A")])
    until = monitoring.seen_until(log, ["A", "B"], pd.Timestamp("2024-01-04"))
    assert until == {"A": pd.Timestamp("2024-01-05 07:00"), "B": pd.Timestamp("2024-01-04 23:59:59.999999999")}
    assert monitoring.seen_until(log.iloc[0:0], ["A"], None) == {}


def test_metric_steps_count_days_or_hours_since_1970():
    days = monitoring.metric_step(pd.to_datetime(["1970-01-02", "1970-01-05"]))
    hours = monitoring.metric_step(pd.to_datetime(["1970-01-01 01:00", "1970-01-02 00:00"]))
    assert days.tolist() == [1, 4] and hours.tolist() == [1, 24]
