"""Walk-forward folds: their plan, no look-ahead (a planted marker never reaches a fold's fit), summaries."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config.settings import parse_config
from pipeline.data.contract import validate_prices
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import rmse
from pipeline.training import backtest
from tests.conftest import make_prices


@pytest.fixture
def cfg(tiny_config_dict):
    return parse_config({**tiny_config_dict, "train": {**tiny_config_dict["train"], "num_threads": 1},
                         "backtest": {"folds": 3, "initial": 0.5}})


@pytest.fixture
def frame(cfg) -> pd.DataFrame:
    return validate_prices(make_prices(120), cfg.data, "synthetic", min_rows=1).frame


def test_expanding_folds_walk_forward_in_equal_consecutive_blocks(cfg) -> None:
    plan = backtest.plan_folds(120, cfg)
    assert [f.index for f in plan] == [0, 1, 2]
    assert plan[-1].end == 120
    assert all(f.start == 0 for f in plan)
    assert len({f.test_rows for f in plan}) == 1 and plan[0].test_rows == 20
    for before, after in zip(plan, plan[1:]):
        assert after.cutoff == before.end  # consecutive, never overlapping test blocks
    for f in plan:
        assert f.start < f.val_start < f.cutoff < f.end
        # validation share as in split: 0.2 / (0.6 + 0.2) of the pre-cutoff rows
        assert f.val_rows == round(0.25 * f.cutoff)


def test_rolling_folds_keep_a_fixed_history(cfg) -> None:
    plan = backtest.plan_folds(120, cfg, folds=4, window="rolling")
    assert len(plan) == 4 and plan[-1].end == 120
    assert len({f.cutoff - f.start for f in plan}) == 1
    assert [f.start for f in plan] == [0, 15, 30, 45]
    assert backtest.fold_config(cfg, plan[2]).split.train == plan[2].train_rows


def test_explicit_test_size_and_validation_rows(cfg) -> None:
    cfg2 = cfg.with_overrides(backtest={"test_size": 10, "val": 12, "folds": 2})
    plan = backtest.plan_folds(120, cfg2)
    assert [(f.cutoff, f.end, f.val_rows) for f in plan] == [(100, 110, 12), (110, 120, 12)]


def test_folds_that_do_not_fit_are_a_clear_config_error(cfg) -> None:
    with pytest.raises(ConfigError, match=r"does not fit 120 rows.*fewer folds"):
        backtest.plan_folds(120, cfg.with_overrides(backtest={"test_size": 40}), folds=3)
    with pytest.raises(ConfigError, match="horizon"):
        backtest.plan_folds(120, cfg.with_overrides(window={"horizon": 5}, backtest={"test_size": 3}))
    with pytest.raises(ConfigError, match="window"):
        backtest.plan_folds(120, cfg, window="sideways")


def test_a_marker_after_the_cutoff_never_reaches_the_folds_scalers_or_model(cfg, frame) -> None:
    fold = backtest.plan_folds(len(frame), cfg)[1]
    planted = frame.copy()
    # absurd values from the fold's cutoff on: its test block, and everything after it
    planted.iloc[fold.cutoff:, :] *= 1000.0
    clean = backtest.run_fold(frame, cfg, fold)
    dirty = backtest.run_fold(planted, cfg, fold)
    for attr in ("mean_", "scale_", "var_"):
        np.testing.assert_array_equal(getattr(clean.preprocessor.feature_scaler, attr),
                                      getattr(dirty.preprocessor.feature_scaler, attr))
        np.testing.assert_array_equal(getattr(clean.preprocessor.target_scaler, attr),
                                      getattr(dirty.preprocessor.target_scaler, attr))
    clean_state, dirty_state = clean.train.model.state_dict(), dirty.train.model.state_dict()
    assert all(torch.equal(clean_state[k], dirty_state[k]) for k in clean_state)
    assert clean.train.train_loss == dirty.train.train_loss and clean.train.val_loss == dirty.train.val_loss
    # The marker did reach the fold, in its evaluation only: so the checks above could fail.
    assert dirty.forecasts.actual.max() > 100 * clean.forecasts.actual.max()
    # Rows after the fold's test block are not even handed to it.
    assert backtest.fold_frame(planted, fold).index[-1] == frame.index[fold.end - 1]


def test_a_marker_before_the_cutoff_does_change_the_fit(cfg, frame) -> None:
    """The counterpart: the same check sees a change when the marker lies in the training rows."""
    fold = backtest.plan_folds(len(frame), cfg)[1]
    planted = frame.copy()
    planted.iloc[fold.val_start - 5, :] *= 1000.0
    clean = backtest.run_fold(frame, cfg, fold)
    dirty = backtest.run_fold(planted, cfg, fold)
    # (a one-row spike leaves the mean of log-returns alone: up, then down again; not their spread)
    assert not np.array_equal(clean.preprocessor.feature_scaler.scale_, dirty.preprocessor.feature_scaler.scale_)
    clean_state, dirty_state = clean.train.model.state_dict(), dirty.train.model.state_dict()
    assert not all(torch.equal(clean_state[k], dirty_state[k]) for k in clean_state)


def test_summary_is_mean_and_spread_over_folds_and_pooled_metrics(cfg, frame) -> None:
    plan = backtest.plan_folds(len(frame), cfg)
    results = [backtest.run_fold(frame, cfg, fold) for fold in plan]
    s = backtest.summarize(results)
    fold_rmse = np.array([r.scores.model["rmse"] for r in results])
    assert s["folds"] == 3
    assert s["test_rmse_mean"] == pytest.approx(fold_rmse.mean())
    assert s["test_rmse_std"] == pytest.approx(fold_rmse.std(ddof=1))
    assert s["test_drift_rmse_mean"] == pytest.approx(np.mean([r.scores.baselines["drift"]["rmse"] for r in results]))
    actual = np.vstack([r.forecasts.actual for r in results])
    predicted = np.vstack([r.forecasts.predicted for r in results])
    assert s["backtest_rmse"] == pytest.approx(rmse(actual, predicted))
    assert s["backtest_windows"] == sum(r.scores.windows for r in results)
    table = backtest.fold_table(frame, results)
    assert list(table["fold"]) == [1, 2, 3]
    assert list(table["cutoff"]) == [str(frame.index[f.cutoff].date()) for f in plan]
    # the folds' forecasts cover their test blocks exactly: dates from the cutoff to the block's end
    for r in results:
        assert r.forecasts.dates[0] == frame.index[r.fold.cutoff]
        assert r.forecasts.dates[-1] == frame.index[r.fold.end - 1]


def test_summary_findings_warn_in_the_old_words_when_the_model_loses() -> None:
    table = pd.DataFrame({"rmse_ratio": [0.9, 1.3, 1.1]})
    tags, notes = backtest.summary_findings({"test_rmse_ratio_mean": 0.98, "backtest_rmse_ratio": 1.05}, table, "rolling")
    assert tags == {"folds": "3", "window": "rolling", "warning": (
        "model is worse than persistence pooled over all folds (pooled RMSE ratio 1.0500; mean of the fold ratios 0.9800)")}
    assert notes == [tags["warning"], "2 of 3 folds are worse than persistence"]


def test_summary_warning_and_the_final_verdict_use_one_measure() -> None:
    """The sample's case: pooled 0.9996 (better), mean of the fold ratios 1.00003: no warning, as the verdict says."""
    from pipeline.evaluation.metrics import verdict

    table = pd.DataFrame({"rmse_ratio": [0.99, 1.01]})
    metrics = {"test_rmse_ratio_mean": 1.00003, "backtest_rmse_ratio": 0.999575}
    tags, notes = backtest.summary_findings(metrics, table, "expanding")
    assert "warning" not in tags and verdict(metrics["backtest_rmse_ratio"]) == "better than persistence"
    assert notes == ["1 of 2 folds are worse than persistence"]
    for pooled in (1.0, 1.2):  # the verdict says NOT better: the warning says so too
        tags, _ = backtest.summary_findings({**metrics, "backtest_rmse_ratio": pooled}, table, "expanding")
        assert verdict(pooled) == "NOT better than persistence" and "pooled over all folds" in tags["warning"]
    tags, notes = backtest.summary_findings({"test_rmse_ratio_mean": 0.9, "backtest_rmse_ratio": 0.8},
                                            table.iloc[:1], "expanding")
    assert tags == {"folds": "1", "window": "expanding"} and notes == []
