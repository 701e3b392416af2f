"""Same seed, same data, same code: bit-identical weights and metrics; what a run records; the checks
`pipeline reproduce` makes."""

import math
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline import runtime
from pipeline.config.settings import parse_config
from pipeline.data.contract import validate_prices
from pipeline.errors import DataError
from pipeline.evaluation.metrics import forecast_split, score
from pipeline.features.windows import prepare
from pipeline.model.network import weights_digest
from pipeline.model.training import fit, init_model
from pipeline.tracking import reproduce
from pipeline.tracking.reproduce import MetricCheck, RecordedRun, ReproduceReport
from tests.conftest import make_prices


def train_once(cfg) -> tuple[str, dict[str, float]]:
    frame = validate_prices(make_prices(90), cfg.data, "synthetic", min_rows=1).frame
    pre, _, windows = prepare(frame, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    result = fit(model, windows["train"], windows["val"], cfg.train)
    fc = forecast_split(result.model, pre, frame, windows["test"], cfg.evaluate)
    return weights_digest(result.model.state_dict()), score(fc).flat()


@pytest.mark.parametrize("threads", [1, 2])
def test_two_runs_with_one_seed_are_bit_identical(tiny_config_dict, threads) -> None:
    cfg = parse_config({**tiny_config_dict, "model": {"hidden_size": 8, "num_layers": 2, "dropout": 0.2},
                        "train": {**tiny_config_dict["train"], "epochs": 3, "num_threads": threads}})
    first = train_once(cfg)
    torch.rand(1000)  # use the global RNGs in between: the second run must not notice
    torch.manual_seed(12345)
    second = train_once(cfg)
    assert first[0] == second[0]
    assert first[1].keys() == second[1].keys()
    for key, value in first[1].items():
        assert value == second[1][key] or (math.isnan(value) and math.isnan(second[1][key])), key


def test_another_seed_gives_other_weights(tiny_config_dict) -> None:
    cfg = parse_config(tiny_config_dict)
    other = cfg.with_overrides(train={"seed": cfg.train.seed + 1})
    assert train_once(cfg)[0] != train_once(other)[0]


def test_weights_digest_sees_a_single_changed_value(tiny_config) -> None:
    model = init_model(tiny_config, n_features=5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = weights_digest(state)
    name = next(iter(state))
    state[name].view(-1)[0] = torch.nextafter(state[name].view(-1)[0], torch.tensor(10.0))
    assert weights_digest(state) != before
    assert len(before) == 16


def test_git_state_names_the_commit_and_dirty_flag(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    state = runtime.git_state(root)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert state["git_commit"] == head.stdout.strip()
    assert state["git_dirty"] in {"true", "false"}
    assert runtime.git_state(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}


def recorded_run(cfg, source: str, digest: str, **metrics: float) -> RecordedRun:
    return RecordedRun(run_id="abc123", config=cfg, source=source, digest=digest,
                       metrics={"test_rmse": 1.5, "train_threads": 2.0, **metrics},
                       tags={"git_commit": "1111", "git_dirty": "false", "version.torch": "2.0"})


def test_changed_data_is_refused_naming_both_digests(tiny_config, prices_csv: Path) -> None:
    from pipeline.data.reading import load_prices

    digest = load_prices(str(prices_csv)).digest
    rec = recorded_run(tiny_config, str(prices_csv), digest)
    assert reproduce.check_data(rec) == digest
    prices_csv.write_text(prices_csv.read_text().replace("2021-01-04", "2021-01-04", 1) + "\n")
    changed = load_prices(str(prices_csv)).digest
    assert changed != digest
    with pytest.raises(DataError) as info:
        reproduce.check_data(rec)
    assert digest in str(info.value) and changed in str(info.value) and "abc123" in str(info.value)


def test_replay_pins_threads_and_leaves_the_registry_alone(tiny_config) -> None:
    cfg = reproduce.replay_config(recorded_run(tiny_config, "x.csv", "d"))
    assert cfg.train.num_threads == 2 and cfg.registry.enabled is False
    assert cfg.model == tiny_config.model and cfg.split == tiny_config.split
    assert reproduce.replay_config(recorded_run(tiny_config, "x.csv", "d"), "y.csv").data.source == "y.csv"


def test_metrics_compare_exactly_and_skip_wall_clock() -> None:
    recorded = {"test_rmse": 1.25, "test_mape": float("nan"), "time_train_s": 3.0, "epochs_run": 4.0}
    same = reproduce.compare_metrics(recorded, {"test_rmse": 1.25, "test_mape": float("nan"), "time_train_s": 9.0,
                                                "epochs_run": 4.0})
    assert [c.name for c in same] == ["epochs_run", "test_mape", "test_rmse"]
    assert all(c.match for c in same)
    off = reproduce.compare_metrics(recorded, {"test_rmse": 1.25 + 1e-15, "test_mape": float("nan")})
    assert {c.name: c.match for c in off} == {"epochs_run": False, "test_rmse": False, "test_mape": True}
    report = ReproduceReport("a", "b", off, weights=("w1", "w1"))
    assert not report.ok and "NOT REPRODUCED" in report.lines()[-1] and "missing" in "\n".join(report.lines())
    good = ReproduceReport("a", "b", [MetricCheck("x", 1.0, 1.0)], weights=("w1", "w2"))
    assert not good.ok  # equal metrics, other weights: not reproduced
    assert ReproduceReport("a", "b", [MetricCheck("x", 1.0, 1.0)], weights=("w1", "w1")).ok


def test_environment_notes_explain_what_differs(tiny_config) -> None:
    rec = recorded_run(tiny_config, "x.csv", "d")
    notes = reproduce.environment_notes(rec, {"git_commit": "2222", "git_dirty": "true", "version.torch": "2.1"})
    text = "\n".join(notes)
    assert "1111" in text and "2222" in text and "uncommitted" in text and "torch" in text
    assert reproduce.environment_notes(rec, {"git_commit": "1111", "git_dirty": "false", "version.torch": "2.0"}) == []
