"""The saved model as data: a versioned directory, read back exactly, unknown versions refused."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from pipeline.errors import ModelFormatError
from pipeline.features.scalers import fit_scaler, scaler_from_dict, scaler_to_dict
from pipeline.features.windows import Preprocessor
from pipeline.model.network import from_checkpoint
from pipeline.serving.forecast import ForecastModel, forecast_frame
from pipeline.serving.model_format import FILES, SERIES_FILE, ForecastBundle
from tests.integration import registry_support as rs


@pytest.fixture
def planted():
    cfg = rs.config(preprocess={"target_transform": "difference", "target_scaler": "minmax"},
                    window={"lookback": 5, "horizon": 2})
    planted = rs.plant(rs.trend(n=50, growth=0.01), cfg, 0.3)
    with torch.no_grad():  # a head that reads the LSTM, so every weight matters
        planted.bundle.checkpoint["state_dict"]["head.0.weight"].normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return planted


def forecasts(bundle: ForecastBundle, frame) -> np.ndarray:
    model = from_checkpoint(bundle.checkpoint)
    return forecast_frame(model, bundle.preprocessor, frame, all_windows=True)["forecast"].to_numpy()


def test_saved_directory_is_json_and_weights_only(planted, tmp_path) -> None:
    path = planted.bundle.save(tmp_path / "forecaster")
    assert sorted(p.name for p in path.iterdir()) == sorted([*FILES, SERIES_FILE])  # format 6: series.json too
    assert json.loads((path / "format.json").read_text()) == {"format": "lstm-forecaster", "format_version": 6}
    pre = json.loads((path / "preprocessor.json").read_text())
    assert pre["frequency"] == "B" and pre["target_scaler"]["kind"] == "minmax" and "mean_" in pre["feature_scaler"]
    contract = json.loads((path / "contract.json").read_text())
    assert contract["target"] == "Close" and contract["date_column"] == "Date" and contract["input_rows"] == 6
    assert contract["config"]["window"]["horizon"] == 2
    for name in ("format.json", "model.json", "preprocessor.json", "contract.json"):
        assert b"pipeline" not in (path / name).read_bytes().replace(b'"pipeline"', b"")  # no class paths


def test_loaded_model_forecasts_bit_for_bit(planted, tmp_path) -> None:
    path = planted.bundle.save(tmp_path / "forecaster")
    loaded = ForecastBundle.load(path)
    np.testing.assert_array_equal(forecasts(loaded, planted.frame), forecasts(planted.bundle, planted.frame))
    assert loaded.config == planted.bundle.config and loaded.target == "Close" and loaded.frequency == "B"
    served = ForecastModel()
    served.load(path)
    assert len(served.forecast(planted.raw.tail(10))) == 2


def test_unknown_or_missing_format_versions_are_refused(planted, tmp_path) -> None:
    path = planted.bundle.save(tmp_path / "forecaster")
    (path / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 99}))
    with pytest.raises(ModelFormatError, match=r"version 99 found, but .*format version\(s\) 1"):
        ForecastBundle.load(path)
    (path / "format.json").unlink()
    with pytest.raises(ModelFormatError, match=r"format.json: missing.*format version\(s\) 1"):
        ForecastBundle.load(path)
    old = tmp_path / "forecaster.pkl"  # what versions before the format saved
    old.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFormatError, match=r"pickles, format version 0.*format version\(s\) 1"):
        ForecastBundle.load(old)


def test_weights_that_are_not_plain_tensors_are_refused(planted, tmp_path) -> None:
    """weights.pt is read weights-only: a pickle with code in it does not run."""
    path = planted.bundle.save(tmp_path / "forecaster")
    torch.save({"lstm.weight_ih_l0": Preprocessor}, path / "weights.pt")
    with pytest.raises(ModelFormatError, match=r"not a valid format-6 model directory"):
        ForecastBundle.load(path)


def test_a_directory_is_not_overwritten(planted, tmp_path) -> None:
    path = planted.bundle.save(tmp_path / "forecaster")
    with pytest.raises(FileExistsError):
        planted.bundle.save(path)


@pytest.mark.parametrize("fit_nan", [False, True])
@pytest.mark.parametrize(("kind", "reference"), [("standard", StandardScaler), ("minmax", MinMaxScaler)])
def test_scalers_fit_and_apply_as_scikit_learn_does(kind, reference, fit_nan) -> None:
    rng = np.random.default_rng(0)
    fit_rows, rows = rng.normal(5, 3, (40, 3)), rng.normal(5, 3, (25, 3))
    fit_rows[:, 2] = 7.0  # a constant column: scale 1, as scikit-learn has it
    if fit_nan:
        fit_rows[[3, 9], 0] = np.nan  # ignored when fitting, per column
    rows[4, 1] = np.nan  # kept as NaN, as scikit-learn does
    sk = reference().fit(fit_rows)
    fitted = fit_scaler(kind, fit_rows)
    for name in (f.name for f in dataclasses.fields(fitted) if f.name != "feature_range"):
        np.testing.assert_array_equal(np.asarray(getattr(fitted, name)), np.asarray(getattr(sk, name)), err_msg=name)
    ours = scaler_from_dict(json.loads(json.dumps(scaler_to_dict(fit_scaler(kind, fit_rows)))))
    np.testing.assert_array_equal(ours.transform(rows), sk.transform(rows))
    np.testing.assert_array_equal(ours.inverse_transform(rows), sk.inverse_transform(rows))
    assert fit_scaler("none", fit_rows) is None and scaler_from_dict({"kind": "none"}) is None


def test_preprocessor_round_trips_through_json(planted) -> None:
    pre = planted.bundle.preprocessor
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    for mine, theirs in zip(pre.scaled(planted.frame), again.scaled(planted.frame), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert (again.input_rows, again.frequency, again.target_transform) == (pre.input_rows, pre.frequency, "difference")
    with pytest.raises(ValueError, match="lacks"):
        Preprocessor.from_dict({k: v for k, v in pre.to_dict().items() if k != "lookback"})


def refit_with_evaluated(planted) -> ForecastBundle:
    """`planted` as a refit model (its head's bias moved) with the model its run evaluated beside it (format 9)."""
    served = dataclasses.replace(planted.bundle, checkpoint={
        "init_args": planted.bundle.checkpoint["init_args"],
        "state_dict": {k: v.clone() + (0.5 if k.endswith("bias") else 0.0)
                       for k, v in planted.bundle.checkpoint["state_dict"].items()}})
    return dataclasses.replace(served, evaluated=planted.bundle)


def test_a_refit_model_carries_the_model_its_run_evaluated(planted, tmp_path) -> None:
    """Format 9: `evaluated/` is a whole model directory of the kept network; the served forecasts are the refit
    one's, and `evaluated=True` (the gate's re-score) gives the evaluated one's, bit for bit."""
    from pipeline.serving.model_format import EVALUATED_DIR

    bundle = refit_with_evaluated(planted)
    path = bundle.save(tmp_path / "forecaster")
    assert json.loads((path / "format.json").read_text())["format_version"] == 9
    assert json.loads((path / EVALUATED_DIR / "format.json").read_text())["format_version"] == 6
    served = ForecastModel()
    served.load(path)
    assert served.bundle.evaluated is not None and served.bundle.evaluated.evaluated is None
    rows = planted.raw.tail(30)
    refit, kept = served.forecast(rows, all_windows=True), served.forecast(rows, all_windows=True, evaluated=True)
    np.testing.assert_array_equal(kept["forecast"].to_numpy(), forecasts(planted.bundle, planted.frame)[-len(kept):])
    assert not np.allclose(refit["forecast"], kept["forecast"])
    alone = ForecastModel()  # a model that was not refit: `evaluated` is the model itself
    alone.load(planted.bundle.save(tmp_path / "kept"))
    np.testing.assert_array_equal(alone.forecast(rows, evaluated=True)["forecast"], alone.forecast(rows)["forecast"])


def test_an_evaluated_model_that_is_missing_changed_or_unannounced_is_refused(planted, tmp_path) -> None:
    import shutil

    from pipeline.errors import ModelIntegrityError
    from pipeline.serving.model_format import EVALUATED_DIR

    path = refit_with_evaluated(planted).save(tmp_path / "forecaster")
    edited = tmp_path / "other-config"
    shutil.copytree(path, edited)
    contract = json.loads((edited / EVALUATED_DIR / "contract.json").read_text())
    contract["config"]["train"]["epochs"] += 1
    (edited / EVALUATED_DIR / "contract.json").write_text(json.dumps(contract))
    with pytest.raises(ModelIntegrityError, match="not the evaluated model of the model around it"):
        ForecastBundle.load(edited)
    down = tmp_path / "edited-down"
    shutil.copytree(path, down)
    (down / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 8}))
    with pytest.raises(ModelIntegrityError, match="evaluated: not a file of a format-8 model directory"):
        ForecastBundle.load(down)
    shutil.rmtree(path / EVALUATED_DIR)
    with pytest.raises(ModelIntegrityError, match="evaluated: missing"):
        ForecastBundle.load(path)
    with pytest.raises(ValueError, match="no evaluated model of its own"):
        dataclasses.replace(planted.bundle, evaluated=refit_with_evaluated(planted)).save(tmp_path / "nested")
