from pathlib import Path

import pytest

from pipeline.config.settings import PipelineConfig, load_config, parse_config
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["default", "seed"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.data.source == "data/SBUX.csv"


def test_default_config_forecasts_next_close_from_log_returns() -> None:
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert (cfg.window.lookback, cfg.window.horizon, cfg.window.lead) == (30, 1, 1)
    assert cfg.data.target == "Close" and cfg.preprocess.target_transform == "log_return"


def test_seed_config_is_the_tutorial_setup() -> None:
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    assert cfg.data.target == "Volume" and "Volume" not in cfg.data.features
    assert (cfg.window.lookback, cfg.window.lead, cfg.model.hidden_size) == (1, 0, 2)
    assert cfg.model.head_hidden == (128,) and cfg.train.epochs == 1000
    assert (cfg.split.train, cfg.split.val) == (200, 0)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"window": {"lookback": -1}}, "window.lookback"),
        ({"split": {"train": 0.7, "val": 0.2, "test": 0.2}}, "sum to 1"),
        ({"preprocess": {"target_transform": "sqrt"}}, "preprocess.target_transform"),
        ({"model": {"dropout": 1.5}}, "model.dropout"),
        ({"data": {"features": ["Close", "Close"]}}, "twice"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_impossible_values_are_refused_with_the_field_named(raw: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(raw)


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_validated_and_flat_params_cover_every_section() -> None:
    cfg = PipelineConfig().with_overrides(data={"source": "x.csv"}, registry={"model_name": "m"})
    assert cfg.data.source == "x.csv" and cfg.registry.model_name == "m"
    flat = cfg.flat()
    assert flat["data.source"] == "x.csv" and flat["window.lookback"] == "auto" and "train.seed" in flat
    with pytest.raises(ConfigError):
        cfg.with_overrides(window={"horizon": 0})


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"data": {"features": "sales"}}, "data.features: must be a list, for example `features: [sales]`"),
        ({"data": {"featurs": ["a"]}}, "data.featurs: unknown key; this section takes: source, date_column"),
        ({"train": {"epochs": "many"}}, "train.epochs: must be a whole number (got 'many')"),
        ({"preprocess": {"target_transform": "logg"}}, "must be one of 'level', 'difference', 'log_return', 'log' or 'auto'"),
        ({"train": 5}, "train: must be a section of `key: value` lines"),
        ({"split": {"train_end": "soon"}}, "split.train_end: must be a date written YYYY-MM-DD"),
        ({"registry": {"enabled": "perhaps"}}, "registry.enabled: must be true or false"),
    ],
)
def test_config_errors_say_what_to_write(raw: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert says in str(caught.value)
    assert "Input should" not in str(caught.value) and "valid tuple" not in str(caught.value)


def test_every_config_key_is_documented_and_the_reference_is_current() -> None:
    from pipeline.config.reference import describe, render

    for key, field in PipelineConfig.model_fields.items():
        if hasattr(field.annotation, "model_fields"):  # a section: its class docstring, then each key's
            assert field.annotation.__doc__, f"section {key} has no docstring"
            missing = [k for k in field.annotation.model_fields if not describe(field.annotation, k)]
            assert not missing, f"undocumented keys in {key}: {missing}"
        else:
            assert describe(PipelineConfig, key), f"top-level key {key} has no docstring"
    reference = ROOT / "docs" / "configuration.md"
    assert reference.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date: run `make docs`")
