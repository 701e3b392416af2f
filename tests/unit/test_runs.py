"""The plain decisions around a training run: nothing to do, timings, scores' MLflow names, verdicts."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import runtime
from pipeline.config.settings import resolve
from pipeline.errors import TrackingError
from pipeline.evaluation.metrics import Forecasts, SplitScores, per_step, score, verdict, worse_than_persistence
from pipeline.tracking import training_run
from pipeline.tracking.store import RunRecord


def record(**tags: str) -> RunRecord:
    return RunRecord("r1", "FINISHED", {"data_digest": "d1", **tags}, {"test_rmse": 1.0})


def test_nothing_to_do_needs_the_same_data_and_a_registered_version_when_registration_is_on(tiny_config) -> None:
    assert training_run.nothing_to_do(tiny_config, "d1", "c1", None) is None
    assert training_run.nothing_to_do(tiny_config, "d2", "c1", record(registered_version="3")) is None  # new data
    # a run that never registered (killed after logging its model, say) is not a reason to stop
    assert training_run.nothing_to_do(tiny_config, "d1", "c1", record()) is None
    detail = training_run.nothing_to_do(tiny_config, "d1", "c1", record(registered_version="3"))
    assert "`d1`" in detail and "`c1`" in detail and "tiny-forecaster v3" in detail and "--force" in detail
    off = tiny_config.with_overrides(registry={"enabled": False})
    assert training_run.nothing_to_do(off, "d1", "c1", record()) is not None
    summary = training_run.skipped_summary(tiny_config, "7", record(registered_version="3", registered_alias="champion"), detail)
    assert (summary.skipped, summary.run_id, summary.version, summary.alias) == (True, "r1", "3", "champion")
    assert "`" not in summary.reason and summary.metrics == {"test_rmse": 1.0}


def test_timings_name_each_stage_for_mlflow() -> None:
    timings = training_run.Timings()
    with timings.stage("train"):
        pass
    with pytest.raises(ValueError), timings.stage("evaluate"):
        raise ValueError("a failing stage is timed too")
    assert set(timings.metrics()) == {"time_train_s", "time_evaluate_s"}
    assert "startup" in training_run.Timings.since_process_start().seconds  # psutil tells the process age


def test_the_process_age_is_the_time_since_the_interpreter_started() -> None:
    """To the clock tick: the wall clock less psutil's creation time would be off by up to a second (Linux gives
    the boot time in whole seconds)."""
    import subprocess
    import time

    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5); from pipeline.runtime import process_age; "
                          "print(process_age())"], capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - started
    assert 0.5 <= float(out) <= elapsed + 0.02, (out, elapsed)  # a tick (10 ms) of rounding either side


def test_a_tracking_failure_after_training_saves_the_model_and_says_where(tiny_config, tmp_path, monkeypatch) -> None:
    from pipeline.features.windows import prepare
    from pipeline.model.network import LSTMForecaster
    from pipeline.model.training import TrainResult
    from tests.conftest import make_prices

    prices = make_prices(80)
    frame = prices.drop(columns="Date").set_index(pd.DatetimeIndex(pd.to_datetime(prices["Date"]), name="Date"))

    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError, match="store down") as before_training:
        with training_run.kept_on_tracking_failure(tiny_config, "run1"):
            raise TrackingError("store down")
    assert "saved at" not in str(before_training.value)  # nothing trained yet, nothing to keep
    with pytest.raises(TrackingError, match="saved at") as after_training:
        with training_run.kept_on_tracking_failure(tiny_config, "run1") as kept:
            kept.pre = prepare(frame, tiny_config)[0]
            kept.result = TrainResult(model=LSTMForecaster(n_features=5), train_loss=[1.0], val_loss=[], best_epoch=0)
            raise TrackingError("store down")
    assert str(after_training.value).startswith("store down\n")
    assert (tmp_path / "mlruns" / "unlogged" / "run1" / "forecaster" / "format.json").is_file()


def forecasts(horizon: int) -> Forecasts:
    rng = np.random.default_rng(0)
    actual = 10 + rng.normal(size=(6, horizon))
    anchor = actual[:, 0] - 0.1
    drift = actual + 0.3
    return Forecasts(dates=np.arange(6).astype("datetime64[D]"), actual=actual, predicted=actual + 0.2,
                     anchor=anchor, baselines={"naive": np.repeat(anchor[:, None], horizon, axis=1), "drift": drift})


def test_flat_gives_the_mlflow_metric_names_runs_have_always_had() -> None:
    names = set(score(forecasts(2), prefix="val").flat())
    metrics = ("rmse", "mae", "mape", "direction_acc")
    assert names == {
        *(f"val_{m}" for m in metrics), *(f"val_naive_{m}" for m in metrics), *(f"val_drift_{m}" for m in metrics),
        "val_rmse_ratio", "val_mae_ratio", "val_rmse_ratio_drift", "val_rmse_ratio_best_baseline",
        "val_rmse_h1", "val_rmse_h2", "val_mae_h1", "val_mae_h2", "val_naive_rmse_h1", "val_naive_rmse_h2",
        "val_drift_rmse_h1", "val_drift_rmse_h2", "val_windows"}
    one_step = set(score(forecasts(1), prefix="test").flat())
    assert not any("_h1" in name for name in one_step) and "test_rmse_ratio" in one_step


def test_scores_read_per_step_and_ratios_from_fields() -> None:
    s = score(forecasts(2))
    assert per_step(s) == {"model": pytest.approx([0.2, 0.2]), "naive": list(s.steps["naive"]["rmse"]),
                                    "drift": pytest.approx([0.3, 0.3])}
    assert per_step(s, "mae") == {"model": pytest.approx([0.2, 0.2])}
    assert s.rmse_ratio == pytest.approx(0.2 / s.baselines["naive"]["rmse"]) == s.flat()["test_rmse_ratio"]
    assert s.beaten_by() == [] and s.windows == 6
    assert SplitScores("test", {"rmse": 2.0}, {"naive": {"rmse": 1.0}}).beaten_by() == ["naive"]


def test_one_verdict_wording_for_every_report() -> None:
    assert verdict(0.9) == "better than persistence"
    assert verdict(1.0) == verdict(None) == verdict(float("nan")) == "NOT better than persistence"
    assert worse_than_persistence(1.25, "on test") == "model is worse than persistence on test (RMSE ratio 1.250)"
    # the warning's threshold is the verdict's: at a ratio of exactly 1 the verdict is "NOT better", so it warns
    assert worse_than_persistence(1.0, "on test") == "model is no better than persistence on test (RMSE ratio 1.000)"
    assert worse_than_persistence(0.9996, "on test") is None
    assert worse_than_persistence(None, "on test") is None
    assert worse_than_persistence(float("nan"), "on test") is None
    assert worse_than_persistence(1.5, "on average", "a, b") == "model is worse than persistence on average (a, b)"


def test_resolve_applies_only_the_overrides_given(tiny_config, tmp_path) -> None:
    assert resolve(tiny_config) is tiny_config
    cfg = resolve(tiny_config, data="other.csv", experiment="", model_name="m2", folds=4)
    assert (cfg.data.source, cfg.tracking.experiment, cfg.registry.model_name, cfg.backtest.folds) == (
        "other.csv", tiny_config.tracking.experiment, "m2", 4)
    path = tmp_path / "c.yaml"
    path.write_text("name: from-file\n")
    assert resolve(str(path), window="rolling").backtest.window == "rolling"
    assert resolve(None).name == "default"


def test_run_names_say_config_data_and_when() -> None:
    assert re.fullmatch(r"default-SBUX-\d{8}-\d{6}", training_run.run_name("default", data_source="data/SBUX.csv"))
    assert re.fullmatch(r"m4-hourly-backtest-\d{8}-\d{6}",
                        training_run.run_name("m4", "backtest", "https://host/files/hourly.csv?token=1"))
    assert re.fullmatch(r"forecast-m-v2-\d{8}-\d{6}", training_run.run_name("forecast", "m-v2"))


def test_a_process_owner_round_trips_through_tags_and_is_alive_while_it_runs() -> None:
    here = runtime.ProcessOwner.current()
    assert runtime.ProcessOwner.from_tags(here.tags()) == here
    assert here.gone(here) is None
    assert runtime.ProcessOwner.from_tags({}) is None  # a run from before owners were recorded: not judged


def test_a_dead_or_replaced_owner_on_this_host_is_gone_and_others_are_not_judged() -> None:
    import dataclasses
    import subprocess
    import time

    import psutil

    here = runtime.ProcessOwner.current()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = dataclasses.replace(here, pid=child.pid, started=runtime.started_after_boot(psutil.Process(child.pid)))
        assert alive.gone(here) is None
        assert "another process" in dataclasses.replace(alive, started="1").gone(here)  # a reused pid
        # the clock set forward since the owner started moves the boot time, but not past the owner's start
        assert dataclasses.replace(alive, boot=str(float(here.boot) - 5)).gone(here) is None
        assert dataclasses.replace(alive, boot="0b6c4d6e-boot-id").gone(here) is None  # recorded by earlier versions
        child.kill()
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:  # a zombie until its parent waits
            time.sleep(0.01)
        assert alive.gone(here) == f"process {child.pid} has exited"
    finally:
        child.kill()
        child.wait()
    assert alive.gone(here) == f"process {child.pid} no longer exists"
    assert dataclasses.replace(alive, host="elsewhere").gone(here) is None
    assert dataclasses.replace(alive, pid_ns="pid:[1]").gone(here) is None  # another container
    # the owner started a minute before this boot began
    restarted = dataclasses.replace(alive, boot=str(float(here.boot) - int(alive.started) / runtime.CLOCK_TICKS - 60))
    assert restarted.gone(here) == "the machine restarted since"
