"""`auto` settings resolved from the data (pipeline.data.auto): season, lookback, transforms, in one place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import PipelineConfig, parse_config
from pipeline.data.auto import choose_lookback, choose_transform, drifts, is_resolved, resolve_auto, season_for
from pipeline.errors import ConfigError
from pipeline.features.windows import Preprocessor, min_rows_needed, prepare


@pytest.mark.parametrize(("freq", "season"), [
    ("h", 24), ("15min", 96), ("30min", 48), ("min", 60), ("D", 7), ("B", 5), ("W-SUN", 52), ("W-MON", 52),
    ("MS", 12), ("ME", 12), ("1months", 12), ("3months", 4), ("QS-JAN", 4), ("QE-DEC", 4), ("YS-JAN", None),
    ("YE-DEC", None), ("2W-SUN", 26), ("7D", None), (None, None),
])
def test_season_from_the_frequency(freq: str | None, season: int | None) -> None:
    assert season_for(freq) == season


def test_lookback_is_two_seasons_bounded_by_the_training_rows() -> None:
    assert choose_lookback(52, 350) == 104
    assert choose_lookback(52, 150) == 50  # a third of the training rows
    assert choose_lookback(5, 1000) == 10
    assert choose_lookback(None, 60) == 8
    assert choose_lookback(24, 2) == 1


def test_transform_rule() -> None:
    t = np.arange(200.0)
    seasonal = 10 + 3 * np.sin(2 * np.pi * t / 12)
    assert not drifts(seasonal) and choose_transform(seasonal, 150) == "level"
    assert choose_transform(seasonal - 10, 150) == "level"  # negatives without drift: level too
    assert choose_transform(100 + t, 150) == "log_return"  # positive and trending
    assert choose_transform(t - 50, 150) == "difference"  # trending through zero
    walk = 100 + np.cumsum(np.random.default_rng(0).normal(0, 1, 200))
    assert drifts(walk[:150])


def weekly(n: int = 300, trend: float = 0.0, offset: float = 10.0) -> pd.DataFrame:
    t = np.arange(n)
    values = offset + trend * t + 3 * np.sin(2 * np.pi * t / 52) + np.random.default_rng(1).normal(0, 0.3, n)
    return pd.DataFrame({"y": values}, index=pd.DatetimeIndex(pd.date_range("2015-01-04", periods=n, freq="W-SUN"),
                                                              name="week"))


MINIMAL = {"name": "sales", "data": {"source": "sales.csv", "date_column": "week", "target": "y", "features": ["y"]}}


def test_a_minimal_config_resolves_from_its_data() -> None:
    cfg = parse_config(MINIMAL)
    assert not is_resolved(cfg)
    frame = weekly()
    resolved = resolve_auto(cfg, frame)
    assert is_resolved(resolved)
    assert resolved.evaluate.season_length == 52
    assert resolved.window.lookback == 70  # 2 x 52 = 104 > 210 // 3
    assert resolved.preprocess.target_transform == "level"
    assert resolved.preprocess.feature_transforms == {"y": "level"}
    assert resolve_auto(resolved, frame) == resolved  # nothing left to resolve
    flat = resolved.flat()
    assert flat["window.lookback"] == "70" and flat["evaluate.season_length"] == "52"
    pre, _, windows = prepare(frame, resolved)
    assert pre.lookback == 70 and len(windows["train"]) > 100


def test_given_values_win_over_auto() -> None:
    cfg = parse_config({**MINIMAL, "window": {"lookback": 12}, "evaluate": {"season_length": None},
                        "preprocess": {"target_transform": "difference", "default_feature_transform": "difference"}})
    assert resolve_auto(cfg, weekly()) == cfg


def test_a_trending_series_with_zeros_is_differenced() -> None:
    frame = weekly(trend=0.1, offset=-5.0)
    resolved = resolve_auto(parse_config(MINIMAL), frame)
    assert resolved.preprocess.target_transform == "difference"


def test_a_config_frequency_sets_the_season() -> None:
    cfg = parse_config({**MINIMAL, "data": {**MINIMAL["data"], "freq": "MS"}})
    assert resolve_auto(cfg, weekly()).evaluate.season_length == 12


def test_unresolved_settings_cannot_reach_the_preprocessor_and_count_small_for_validation() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(ConfigError, match="resolve_auto"):
        Preprocessor(cfg)
    assert min_rows_needed(cfg) == 1 + 1 + 1 + 1 + 2  # horizon + lookback 1 + warm-up + 1, then 2 more splits


def test_the_code_defaults_are_what_a_config_naming_only_its_data_gets() -> None:
    """One source of truth: every value default.yaml states differently from the code says why in a comment."""
    import yaml

    from tests.conftest import ROOT

    code = PipelineConfig().model_dump(mode="json")
    text = (ROOT / "configs" / "default.yaml").read_text(encoding="utf-8")
    stated = yaml.safe_load(text)
    lines = text.splitlines()
    for section, values in stated.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if code[section][key] != (list(value) if isinstance(value, tuple) else value):
                line = next(i for i, text_line in enumerate(lines) if text_line.strip().startswith(f"{key}:"))
                said = "#" in lines[line] or (line + 1 < len(lines) and lines[line + 1].strip().startswith("#"))
                assert said, f"configs/default.yaml: {section}.{key} = {value!r} differs from the code's " \
                             f"{code[section][key]!r} without a comment saying why"
