import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config
from pipeline.data.contract import validate_prices
from pipeline.features.transforms import apply_transform, invert_transform
from pipeline.features.windows import Preprocessor, prepare, split_by_time
from tests.conftest import make_prices


def frame_of(raw: pd.DataFrame, cfg) -> pd.DataFrame:
    return validate_prices(raw, cfg.data, "synthetic", min_rows=1).frame


@pytest.mark.parametrize("kind", ["level", "difference", "log_return", "log"])
def test_target_transforms_round_trip(kind: str) -> None:
    levels = np.array([10.0, 11.0, 10.5, 12.0, 12.5, 11.0])
    steps = apply_transform(levels, kind)
    # Rebuild levels 1..5 one step at a time and all at once from the first anchor.
    for t in range(1, len(levels)):
        rebuilt = invert_transform(steps[t:t + 1].reshape(1, 1), levels[t - 1:t], kind)
        assert rebuilt[0, 0] == pytest.approx(levels[t])
    all_at_once = invert_transform(steps[1:].reshape(1, -1), levels[:1], kind)
    np.testing.assert_allclose(all_at_once[0], levels[1:])


def test_split_by_fractions_counts_and_dates() -> None:
    index = pd.bdate_range("2021-01-04", periods=100)
    b = split_by_time(index, parse_config({"split": {"train": 0.7, "val": 0.15}}).split)
    assert (b.val_start, b.test_start, b.n_rows) == (70, 85, 100)
    b = split_by_time(index, parse_config({"split": {"train": 60, "val": 0}, "train": {"patience": None}}).split)
    assert (b.val_start, b.test_start) == (60, 60)
    cfg = parse_config({"split": {"train_end": str(index[49].date()), "val_end": str(index[79].date())}})
    b = split_by_time(index, cfg.split)
    assert (b.val_start, b.test_start) == (50, 80)


def test_scalers_never_see_test_rows(tiny_config) -> None:
    raw = make_prices(100)
    frame = frame_of(raw, tiny_config)
    pre, bounds, _ = prepare(frame, tiny_config)
    planted = frame.copy()
    planted.iloc[bounds.val_start:, :] *= 1000.0  # absurd values after the training part
    pre2, _, _ = prepare(planted, tiny_config)
    np.testing.assert_array_equal(pre.feature_scaler.mean_, pre2.feature_scaler.mean_)
    np.testing.assert_array_equal(pre.target_scaler.scale_, pre2.target_scaler.scale_)
    # Refit on everything would differ: the check above can fail.
    everything = Preprocessor(tiny_config)
    feats, _ = everything.transformed(planted)
    assert not np.allclose(np.nanmean(feats[1:], axis=0), pre.feature_scaler.mean_)


@pytest.mark.parametrize("horizon,lead", [(1, 1), (3, 1), (2, 0)])
def test_windows_never_cross_a_split_boundary(tiny_config_dict, horizon: int, lead: int) -> None:
    tiny_config_dict["window"] = {"lookback": 4, "horizon": horizon, "lead": lead}
    if lead == 0:
        tiny_config_dict["data"]["features"] = ["Open", "High", "Low"]
    cfg = parse_config(tiny_config_dict)
    frame = frame_of(make_prices(90), cfg)
    pre, bounds, windows = prepare(frame, cfg)
    order = {"train": 0, "val": 1, "test": 2}
    for split, w in windows.items():
        assert len(w) > 0
        labels = bounds.label(w.target_positions)
        assert (labels == split).all(), f"{split} targets leave their split"
        inputs = w.origins[:, None] - np.arange(cfg.window.lookback)[None, :]
        assert (inputs.min() >= pre.warmup)
        # inputs never come from a later split than the targets'
        assert max(order[x] for x in bounds.label(inputs).ravel()) <= order[split]
        assert (inputs.max(axis=1) <= w.target_positions.min(axis=1)).all()
        if split == "train":
            assert (inputs < bounds.val_start).all()
        assert w.X.shape == (len(w), cfg.window.lookback, len(cfg.data.features))
        assert w.y.shape == (len(w), horizon)


def test_windows_are_the_scaled_rows_they_claim(tiny_config) -> None:
    frame = frame_of(make_prices(60), tiny_config)
    pre, _, windows = prepare(frame, tiny_config)
    feats, target = pre.scaled(frame)
    w = windows["val"]
    i = 3
    np.testing.assert_array_equal(w.X[i], feats[w.origins[i] - 4: w.origins[i] + 1])
    assert w.y[i, 0] == target[w.origins[i] + 1]


def test_too_few_rows_is_a_data_error(tiny_config) -> None:
    from pipeline.errors import DataError

    frame = frame_of(make_prices(12), tiny_config)
    with pytest.raises(DataError, match="too few rows"):
        prepare(frame, tiny_config)


def test_levels_are_rebuilt_from_the_last_known_close(tiny_config) -> None:
    frame = frame_of(make_prices(60), tiny_config)
    pre, _, windows = prepare(frame, tiny_config)
    w = windows["test"]
    levels = frame["Close"].to_numpy()
    anchors = pre.anchors(levels, w.origins)
    np.testing.assert_allclose(pre.to_levels(w.y, anchors)[:, 0], levels[w.target_positions[:, 0]], rtol=1e-5)
