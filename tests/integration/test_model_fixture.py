"""A model saved by format version 1 (tests/fixtures/model_v1) keeps loading and predicting the same numbers.

The fixture was written by tests/fixtures/make_model_fixture.py; do not regenerate it to make
this test pass: a change that breaks it breaks every model users have logged.
"""

from __future__ import annotations

import importlib
import json
import pickle
import pickletools
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.errors import ModelFormatError
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "model_v1"
MODEL = FIXTURE / "model"


@pytest.fixture(autouse=True)
def today_s_code() -> None:
    """Today's package, imported from src/ before any model loads (tests/conftest.py restores `sys.path` after each
    test)."""
    import pipeline.serving.pyfunc  # noqa: F401


def load(path: Path):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(path))


def test_the_committed_model_predicts_what_it_predicted_when_saved() -> None:
    model = load(MODEL)
    assert sys.modules["pipeline.serving.model_format"].__file__.startswith(str(ROOT / "src"))  # today's loader, not the copy
    expected = pd.read_csv(FIXTURE / "expected.csv")
    got = model.predict(pd.read_csv(FIXTURE / "input.csv"), params={"all_windows": True})
    assert list(got.columns) == list(expected.columns)
    assert got["origin"].tolist() == expected["origin"].tolist()  # hourly: times kept
    assert got["date"].tolist() == expected["date"].tolist()
    assert got["step"].tolist() == expected["step"].tolist()
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"].to_numpy(), rtol=1e-6, atol=0)  # relative: float32 differs in the last bits between CPUs
    bundle = model.unwrap_python_model().bundle
    assert (bundle.target, bundle.config.data.target, bundle.frequency) == ("load", "load", "h")


def test_the_python_model_pickle_is_a_bare_class_reference() -> None:
    """python_model.pkl names `pipeline.pyfunc.LSTMForecastPyfunc` (the class's path before the rooms) and holds none of
    the model."""
    data = (MODEL / "python_model.pkl").read_bytes()
    strings = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    ours = [s for s in strings if s.startswith("pipeline")]
    assert ours == ["pipeline.pyfunc"] and strings[strings.index("pipeline.pyfunc") + 1] == "LSTMForecastPyfunc"
    assert not [s for s in strings if s.split(".")[0] in {"torch", "sklearn", "numpy"}]
    # The name it refers to must stay importable, wherever the class itself moves.
    cls = getattr(importlib.import_module("pipeline.pyfunc"), "LSTMForecastPyfunc")
    assert cls is importlib.import_module("pipeline.serving.pyfunc").LSTMForecastPyfunc
    instance = pickle.loads(data)  # noqa: S301 - our own fixture
    assert type(instance) is cls and not {"bundle", "model"} & set(vars(instance))


FIXTURES = ("model_v1", "model_v2", "model_v5")


@pytest.mark.parametrize("name", FIXTURES)
def test_the_committed_fixtures_hold_the_model_and_no_copy_of_the_code(name: str) -> None:
    """The fixtures are old model directories read by today's code (docs/model-format.md): whatever code they once
    carried (a copy of the whole package, training and tracking included) is gone, and their MLmodel names none."""
    model = ROOT / "tests" / "fixtures" / name / "model"
    assert not [p for p in model.rglob("*.py")] and not (model / "code").exists()
    assert "code" not in yaml.safe_load((model / "MLmodel").read_text())["flavors"]["python_function"]


def copy_model(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(MODEL, copy)
    return copy


def test_an_unknown_format_version_is_refused_with_the_versions_named(tmp_path) -> None:
    copy = copy_model(tmp_path)
    marker = copy / "artifacts" / "forecaster" / "format.json"
    marker.write_text(json.dumps({"format": "lstm-forecaster", "format_version": 99}))  # 2 exists since many series
    with pytest.raises(ModelFormatError, match=r"version 99 found, but this pipeline reads 'lstm-forecaster' model "
                                               r"directories of format version\(s\) 1, 2, 3"):
        load(copy)


def test_a_pickled_model_from_before_the_format_is_refused(tmp_path) -> None:
    """Models logged before format version 1 carried a pickled bundle under the artifact 'bundle'."""
    copy = copy_model(tmp_path)
    shutil.rmtree(copy / "artifacts" / "forecaster")
    (copy / "artifacts" / "forecaster.pkl").write_bytes(b"not read")
    spec = yaml.safe_load((copy / "MLmodel").read_text())
    spec["flavors"]["python_function"]["artifacts"] = {"bundle": {"path": "artifacts/forecaster.pkl", "uri": "x"}}
    (copy / "MLmodel").write_text(yaml.safe_dump(spec))
    with pytest.raises(ModelFormatError, match=r"format version 0.*reads format version\(s\) 1"):
        load(copy)


def test_our_loader_reads_the_committed_model_and_leaves_sys_path_as_it_was() -> None:
    from pipeline.serving.pyfunc import load_forecaster

    before = list(sys.path)
    _, bundle = load_forecaster(str(MODEL))
    assert sys.path == before
    assert bundle.target == "load" and bundle.config.window.lookback == 5


def test_the_model_loads_when_the_class_behind_the_name_has_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pickle resolves `pipeline.pyfunc.LSTMForecastPyfunc` by name: a re-export there is all a move needs."""
    import pipeline.pyfunc

    moved = type("LSTMForecastPyfunc", (pipeline.pyfunc.LSTMForecastPyfunc,), {"__module__": "pipeline.elsewhere"})
    monkeypatch.setattr(pipeline.pyfunc, "LSTMForecastPyfunc", moved)
    model = load(MODEL)
    assert type(model.unwrap_python_model()) is moved
    got = model.predict(pd.read_csv(FIXTURE / "input.csv"))
    expected = pd.read_csv(FIXTURE / "expected.csv").tail(len(got))
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"].to_numpy(), rtol=1e-6, atol=0)  # relative: float32 differs in the last bits between CPUs


FIXTURE_V2 = ROOT / "tests" / "fixtures" / "model_v2"


def test_the_committed_model_of_many_series_predicts_what_it_predicted_when_saved() -> None:
    """Format 2 (tests/fixtures/model_v2, three meters, one global network): the long frame in, every series out."""
    model = load(FIXTURE_V2 / "model")
    expected = pd.read_csv(FIXTURE_V2 / "expected.csv")
    got = model.predict(pd.read_csv(FIXTURE_V2 / "input.csv"), params={"all_windows": True})
    assert list(got.columns) == ["meter", "origin", "step", "date", "forecast"] == list(expected.columns)
    assert got["meter"].tolist() == expected["meter"].tolist() and got["date"].tolist() == expected["date"].tolist()
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"].to_numpy(), rtol=1e-6, atol=0)  # relative: float32 differs in the last bits between CPUs
    bundle = model.unwrap_python_model().bundle
    assert bundle.series.column == "meter" and sorted(bundle.series.preprocessors) == ["m1", "m2", "m3"]


FIXTURE_V5 = ROOT / "tests" / "fixtures" / "model_v5"


def test_the_committed_quantile_head_model_predicts_what_it_predicted_when_saved() -> None:
    """Format 5 (tests/fixtures/model_v5): a quantile head whose conformalized quantile intervals come back to 1e-6 (relative)."""
    model = load(FIXTURE_V5 / "model")
    expected = pd.read_csv(FIXTURE_V5 / "expected.csv")
    got = model.predict(pd.read_csv(FIXTURE_V5 / "input.csv"), params={"all_windows": True})
    bands = ["lower_80", "upper_80", "lower_95", "upper_95"]
    assert list(got.columns) == ["origin", "step", "date", "forecast", *bands] == list(expected.columns)
    assert got["date"].tolist() == expected["date"].tolist()
    for column in ("forecast", *bands):
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-6, atol=0)  # relative: float32 differs in the last bits between CPUs
    bundle = model.unwrap_python_model().bundle
    assert bundle.intervals.method == "quantile" and bundle.checkpoint["init_args"]["quantiles"] == [0.025, 0.1, 0.9, 0.975]


FIXTURE_V9 = ROOT / "tests" / "fixtures" / "model_v9"


def test_the_committed_refit_model_predicts_both_its_models_stored_numbers() -> None:
    """Format 9 (tests/fixtures/model_v9, `--refit`): the refit model serves its stored forecasts, and param
    `evaluated` gives those of the model trained first, saved beside it in `evaluated/`; it carries no code."""
    model = load(FIXTURE_V9 / "model")
    rows = pd.read_csv(FIXTURE_V9 / "input.csv")
    served = model.predict(rows, params={"all_windows": True})
    evaluated = model.predict(rows, params={"all_windows": True, "evaluated": True})
    for got, file in ((served, "expected.csv"), (evaluated, "expected-evaluated.csv")):
        expected = pd.read_csv(FIXTURE_V9 / file)
        assert list(got.columns) == list(expected.columns) and got["date"].tolist() == expected["date"].tolist()
        for column in ("forecast", "lower_80", "upper_80", "lower_95", "upper_95"):
            np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-6, atol=0)
    assert not np.allclose(served["forecast"], evaluated["forecast"])
    bundle = model.unwrap_python_model().bundle
    assert bundle.format_version == 9 and bundle.evaluated.format_version == 6
    assert not (FIXTURE_V9 / "model" / "code").exists()


def test_the_fixture_script_writes_a_model_of_today_s_format_that_predicts_its_stored_numbers(tmp_path: Path) -> None:
    """tests/fixtures/make_model_fixture.py runs on today's road (it had gone stale once, naming moved functions)."""
    from pipeline.serving.model_format import FLOOR_VERSION
    from tests.fixtures import make_model_fixture as script

    out = tmp_path / "fixture"
    script.build(out, script.fixture_long(), script.fixture_config().with_overrides(data={"series_column": "meter"}))
    # every load is >= 0: `data.floor: auto` gives 0, saved as format 11
    assert json.loads((out / "model" / "artifacts" / "forecaster" / "format.json").read_text())["format_version"] == FLOOR_VERSION
    got = load(out / "model").predict(pd.read_csv(out / "input.csv"), params={"all_windows": True})
    expected = pd.read_csv(out / "expected.csv")
    assert sorted(got["meter"].unique()) == ["m1", "m2", "m3"] and len(got) == len(expected)
    np.testing.assert_allclose(got["forecast"].to_numpy(), expected["forecast"].to_numpy(), rtol=1e-6, atol=0)


FIXTURE_V11 = ROOT / "tests" / "fixtures" / "model_v11"


def test_the_committed_floored_model_raises_its_forecasts_and_bounds_to_the_floor() -> None:
    """Format 11 (tests/fixtures/model_v11, `--floor`, `data.floor: 76`): forecasts and interval bounds below the
    floor come back raised to it, as stored; it carries no code."""
    model = load(FIXTURE_V11 / "model")
    got = model.predict(pd.read_csv(FIXTURE_V11 / "input.csv"), params={"all_windows": True})
    expected = pd.read_csv(FIXTURE_V11 / "expected.csv")
    assert list(got.columns) == list(expected.columns) and got["date"].tolist() == expected["date"].tolist()
    for column in ("forecast", "lower_80", "upper_80", "lower_95", "upper_95"):
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-6, atol=0)
    assert got["forecast"].min() == 76.0 and (got["lower_95"] == 76.0).sum() > 10
    bundle = model.unwrap_python_model().bundle
    assert bundle.format_version == 11 and bundle.preprocessor.floor == 76.0
    assert not (FIXTURE_V11 / "model" / "code").exists()
