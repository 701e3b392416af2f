"""The sweep's plain steps: the search-space file and its rules, one config per trial, pruning, selection."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pipeline.config.settings import PipelineConfig, load_config
from pipeline.data import panel
from pipeline.errors import ConfigError, TrainingError
from pipeline.tuning import sweep
from pipeline.tuning.sweep import Pruning, SweepSpaceError, TrialOutcome
from tests.conftest import ROOT

GOOD = {"params": {"model.hidden_size": {"type": "int", "low": 8, "high": 64, "log": True}}}


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_space_parses_and_fits_the_default_config() -> None:
    space = sweep.load_space(ROOT / "configs" / "sweep.yaml", load_config(ROOT / "configs" / "default.yaml"))
    by_name = {p.name: p for p in space.params}
    assert set(by_name) == {"window.lookback", "model.hidden_size", "model.num_layers", "model.dropout",
                            "train.learning_rate", "train.batch_size", "train.weight_decay",
                            "preprocess.target_transform"}
    assert by_name["train.learning_rate"].log and by_name["train.learning_rate"].low == pytest.approx(1e-4)
    assert by_name["train.batch_size"].kind == "categorical" and by_name["window.lookback"].step == 5
    assert space.trials >= 1 and space.pruning.enabled
    dists = space.distributions()
    assert dists["model.hidden_size"].log and dists["preprocess.target_transform"].choices == ("log_return", "difference")


def test_numbers_written_like_1e_4_are_read_as_numbers(tmp_path: Path) -> None:
    # PyYAML reads `1e-4` (no dot) as text; a user writes it anyway.
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  train.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    (param,) = sweep.load_space(path).params
    assert (param.low, param.high) == (pytest.approx(1e-4), pytest.approx(1e-2))


@pytest.mark.parametrize(("raw", "expected"), [
    ({"params": {"data.target": {"type": "categorical", "choices": ["Close"]}}},
     "params.data.target: a searched key is `section.key` with section one of"),
    ({"params": {"model.hiddensize": {"type": "int", "low": 1, "high": 4}}},
     "params.model.hiddensize: unknown key; section `model` takes: hidden_size"),
    ({"params": {"model.hidden_size": {"type": "integer", "low": 1, "high": 4}}},
     "params.model.hidden_size.type: must be one of ['int', 'float', 'categorical'] (got 'integer')"),
    ({"params": {"model.hidden_size": {"type": "int", "low": 64, "high": 8}}},
     "params.model.hidden_size: low must be below high (got low=64, high=8)"),
    ({"params": {"model.hidden_size": {"type": "int", "low": 1.5, "high": 8}}},
     "params.model.hidden_size.low: must be a whole number for type int (got 1.5)"),
    ({"params": {"train.weight_decay": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "params.train.weight_decay.low: must be > 0 with log: true (got 0)"),
    ({"params": {"train.learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "step": 0.01}}},
     "params.train.learning_rate: log and step cannot be combined"),
    ({"params": {"train.batch_size": {"type": "categorical", "choices": []}}},
     "params.train.batch_size.choices: must be a non-empty list (got [])"),
    ({"params": {"train.batch_size": {"type": "categorical", "choices": [32, 32]}}},
     "params.train.batch_size.choices: must be distinct plain values"),
    ({"params": {"model.dropout": {"type": "float", "low": 0, "high": 0.5, "choices": [1]}}},
     "params.model.dropout: unknown key(s) ['choices'] for type float"),
    ({"params": {}}, "params: must map at least one `section.key` to its range"),
    ({**GOOD, "trials": 0}, "trials: must be a whole number >= 1 (got 0)"),
    ({**GOOD, "pruning": {"warmup": 3}}, "pruning: unknown key(s) ['warmup']"),
    ({**GOOD, "sampler": "random"}, "sampler: unknown key; a space file takes: trials, seed, pruning"),
])
def test_a_bad_space_names_the_file_the_key_and_the_rule(tmp_path: Path, raw: dict, expected: str) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(SweepSpaceError) as err:
        sweep.load_space(path)
    assert f"{path}: {expected}" in str(err.value)
    assert err.value.exit_code == 2 and isinstance(err.value, ConfigError)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"trials": -1, "params": {"model.hidden_size": {"type": "int", "low": 9, "high": 2},
                                                      "train.nope": {"type": "int", "low": 1, "high": 2}}})
    with pytest.raises(SweepSpaceError) as err:
        sweep.load_space(path)
    assert str(err.value).count(str(path)) == 4  # the header and three problems
    assert "trials:" in str(err.value) and "params.model.hidden_size" in str(err.value) and "params.train.nope" in str(err.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SweepSpaceError, match="search space file not found"):
        sweep.load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [unclosed\n")
    with pytest.raises(SweepSpaceError, match="not valid YAML"):
        sweep.load_space(bad)


def test_a_range_end_the_config_refuses_fails_before_any_trial(tmp_path: Path, tiny_config: PipelineConfig) -> None:
    path = write(tmp_path, {"params": {"model.dropout": {"type": "float", "low": 0.0, "high": 1.0},
                                       "preprocess.target_transform": {"type": "categorical", "choices": ["log", "cube"]}}})
    with pytest.raises(SweepSpaceError) as err:
        sweep.load_space(path, tiny_config)
    message = str(err.value)
    assert f"{path}: params.model.dropout: the value 1.0 makes an invalid config" in message
    assert f"{path}: params.preprocess.target_transform: the value 'cube' makes an invalid config" in message
    assert "0.0" not in message.split("dropout")[1].split("\n")[0].split("value")[1][:5]  # the low end is fine


def test_a_config_without_validation_rows_cannot_be_swept(tmp_path: Path, tiny_config: PipelineConfig) -> None:
    cfg = tiny_config.with_overrides(split={"train": 0.8, "val": 0.0, "test": 0.2}, train={"patience": None})
    with pytest.raises(SweepSpaceError, match=r"no validation part \(split.val is 0\)"):
        sweep.load_space(write(tmp_path, GOOD), cfg)


def test_trial_config_sets_each_value_in_its_section_and_leaves_the_base_alone(tiny_config: PipelineConfig) -> None:
    params = {"window.lookback": 12, "model.hidden_size": 24, "train.learning_rate": 0.003,
              "preprocess.target_transform": "difference"}
    cfg = sweep.trial_config(tiny_config, params, threads=1)
    assert (cfg.window.lookback, cfg.model.hidden_size, cfg.train.learning_rate) == (12, 24, 0.003)
    assert cfg.preprocess.target_transform == "difference" and cfg.train.num_threads == 1
    assert cfg.train.epochs == tiny_config.train.epochs and cfg.data == tiny_config.data  # the rest unchanged
    assert tiny_config.window.lookback == 5 and tiny_config.train.num_threads is None
    assert sweep.trial_config(tiny_config, {}) is tiny_config
    with pytest.raises(ConfigError):
        sweep.trial_config(tiny_config, {"model.dropout": 2.0})


@pytest.mark.parametrize(("parallel", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4), (3, 8, 2)])
def test_threads_per_trial_share_the_cores(parallel: int, cores: int, threads: int) -> None:
    assert sweep.threads_per_trial(parallel, cores) == threads


def test_a_trial_uses_at_most_its_share_of_this_machine(tiny_config: PipelineConfig, prices) -> None:
    from pipeline.data.contract import validate_prices
    from pipeline.runtime import usable_cores

    assert sweep.TrialSpec(0, {}, tiny_config, Pruning(), parallel=2).thread_cap() == max(1, usable_cores() // 2)
    frame = panel.of_one(validate_prices(prices, tiny_config.data, "prices", min_rows=20))  # a panel of one
    many = tiny_config.with_overrides(train={"num_threads": 64, "epochs": 1})  # asks for more than there is
    outcome = sweep.run_trial(frame, sweep.TrialSpec(0, {}, many, Pruning(enabled=False), parallel=usable_cores()))
    assert outcome.threads == 1 and outcome.metrics["threads"] == 1


def finished(curve: list[float], value: float) -> object:
    import optuna

    return optuna.trial.create_trial(value=value, intermediate_values=dict(enumerate(curve)))


def test_pruning_stops_a_trial_worse_than_the_median_of_the_finished_ones() -> None:
    import optuna

    done = [finished([1.0, 0.5, 0.4, 0.3], 0.3), finished([1.0, 0.6, 0.5, 0.4], 0.4)]
    check = sweep.PruningCheck(Pruning(startup_trials=2, warmup_epochs=1), done)
    check(0, 2.0, 5.0)  # epoch 0: still warming up, however bad
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        check(1, 2.0, 5.0)
    good = sweep.PruningCheck(Pruning(startup_trials=2, warmup_epochs=1), done)
    for epoch, loss in enumerate([0.9, 0.4, 0.3]):
        good(epoch, 1.0, loss)  # at or below the median: never pruned


def test_no_pruning_before_enough_trials_finished_or_when_disabled() -> None:
    import optuna

    done = [finished([1.0, 0.5, 0.4], 0.3)]
    for pruning in (Pruning(startup_trials=2, warmup_epochs=0), Pruning(enabled=False, startup_trials=0)):
        check = sweep.PruningCheck(pruning, done)
        for epoch in range(3):
            check(epoch, 1.0, 100.0)  # a validation loss 250x the finished trial's: raises TrialPruned if judged
    # the same loss is pruned once one finished trial is enough: the checks above could have failed
    with pytest.raises(optuna.TrialPruned):
        sweep.PruningCheck(Pruning(startup_trials=1, warmup_epochs=0), done)(0, 1.0, 100.0)


def test_run_trial_scores_on_validation_and_reports_a_pruned_trial(prices, tiny_config: PipelineConfig) -> None:
    from pipeline.data.contract import validate_prices

    frame = panel.of_one(validate_prices(prices, tiny_config.data, "prices", min_rows=20))  # a panel of one
    spec = sweep.TrialSpec(3, {"model.hidden_size": 8}, tiny_config, Pruning(enabled=False))
    seen: list[int] = []
    outcome = sweep.run_trial(frame, spec, on_epoch_end=lambda e, t, v: seen.append(e))
    assert outcome.state == "complete" and outcome.number == 3 and seen == [0, 1]
    assert outcome.value == outcome.metrics["val_mase"] > 0 and "val_rmse" in outcome.metrics
    assert not any(k.startswith("test_") for k in outcome.metrics)  # selection never sees the test rows
    assert sorted(outcome.val_loss) == [0, 1]
    # the same trial against finished trials whose losses were far lower: pruned after the warm-up
    done = [finished([1e-9] * 2, 0.1), finished([1e-9] * 2, 0.1)]
    hopeless = sweep.TrialSpec(4, {}, tiny_config, Pruning(startup_trials=2, warmup_epochs=0), finished=tuple(done))
    pruned = sweep.run_trial(frame, hopeless)
    assert pruned.state == "pruned" and pruned.value is None and list(pruned.val_loss) == [0]


def test_the_best_outcome_is_the_lowest_complete_value() -> None:
    outcomes = [TrialOutcome(0, {}, "complete", 0.9), TrialOutcome(1, {}, "pruned"), TrialOutcome(2, {}, "complete", 0.7),
                TrialOutcome(3, {}, "failed", error="diverged"), TrialOutcome(4, {}, "complete", 0.7)]
    assert sweep.best_outcome(outcomes).number == 2
    metrics = sweep.summary_metrics(outcomes, outcomes[2])
    assert metrics["trials"] == 5 and metrics["trials_pruned"] == 1 and metrics["trials_failed"] == 1
    with pytest.raises(TrainingError, match=r"no trial of the sweep completed \(trial 1: pruned, trial 3: failed \(diverged\)\)"):
        sweep.best_outcome([outcomes[1], outcomes[3]])


def test_outcomes_feed_the_study_so_later_trials_are_pruned_against_them() -> None:
    space = sweep.parse_space(GOOD)
    study = sweep.create_study(space)
    for value, state in ((0.5, "complete"), (None, "pruned"), (None, "failed")):
        trial = study.ask(space.distributions())
        sweep.record_outcome(study, trial, TrialOutcome(trial.number, dict(trial.params), state, value,
                                                        val_loss={0: 1.0, 1: 0.5}))
    kept = sweep.finished_trials(study)
    assert [t.state.name for t in kept] == ["COMPLETE", "PRUNED"]
    assert kept[0].intermediate_values == {0: 1.0, 1: 0.5} and kept[0].value == 0.5


def test_the_sampler_is_seeded() -> None:
    space = sweep.parse_space({**GOOD, "seed": 3})

    def first_values() -> list[int]:
        study = sweep.create_study(space)
        return [study.ask(space.distributions()).params["model.hidden_size"] for _ in range(3)]

    assert first_values() == first_values()


def test_the_objective_plot_marks_the_winner_and_the_stopped_trials() -> None:
    from matplotlib.figure import Figure

    from pipeline.evaluation import plots

    fig = plots.plot_sweep([(0, "complete", 0.9), (1, "pruned", None), (2, "complete", 0.7), (3, "failed", None)],
                           "val_mase", best=2)
    assert isinstance(fig, Figure)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["complete", "best so far", "winner (trial 2)", "pruned", "failed"]
    assert math.isclose(min(fig.axes[0].lines[0].get_ydata()), 0.7)
    plots.close(fig)
