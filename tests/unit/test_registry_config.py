"""Registered model names are checked when the config loads, by MLflow's rule, not after training."""

from __future__ import annotations

import pytest

from pipeline.config.settings import PipelineConfig, RegistryConfig, parse_config
from pipeline.errors import ConfigError


@pytest.mark.parametrize("name", ["a/b", "x:y", "", "   ", ".", "..", "..hidden", "50%", "models:/m"])
def test_names_the_registry_refuses_are_refused_on_load(name):
    with pytest.raises(ConfigError) as info:
        parse_config({"registry": {"model_name": name}}, origin="cfg.yaml")
    message = str(info.value)
    assert "invalid config cfg.yaml" in message and "registry.model_name" in message
    assert f"{name!r} cannot be registered" in message and "must not contain '/', ':' or '%'" in message


@pytest.mark.parametrize("name", ["lstm-forecaster", "SBUX close", ".hidden", "v1.2_final", "it's", "prix-€"])
def test_names_the_registry_accepts_pass(name):
    assert RegistryConfig(model_name=name).model_name == name


def test_an_override_goes_through_the_same_rule():
    with pytest.raises(ConfigError, match="invalid config overrides:\n  registry.model_name: .*'x:y' cannot be registered"):
        PipelineConfig().with_overrides(registry={"model_name": "x:y"})
