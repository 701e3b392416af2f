"""A logged model holds no pickle, and our loaders check its files against its manifest before MLflow reads any.

Models-from-code (pipeline/model_code.py) replaces the pickled wrapper; `manifest.json` lists every
file's SHA-256 and the registered version records the manifest's own digest. `pipeline predict`,
the gate's re-scoring of the champion and the wrapper's `load_context` refuse a model whose files
changed (exit 2, naming the file), and code planted in it never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import pandas as pd
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.errors import ModelIntegrityError
from pipeline.serving.model_format import MANIFEST_FILE, MANIFEST_TAG, is_cache, write_manifest
from pipeline.serving.pyfunc import load_pyfunc
from pipeline.tracking import promotion, registry, store
from pipeline.training.steps import series_example
from tests.integration import registry_support as rs
from tests.integration.test_predict import champion  # noqa: F401 - the registered @champion fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def model_dir(client, name: str = "planted", version: str = "1") -> Path:
    """Where the registered version's logged model keeps its files in the local store."""
    model_id = client.get_model_version(name, version).source.removeprefix("models:/")  # models:/m-...
    return Path(url2pathname(urlparse(client.get_logged_model(model_id).artifact_location).path))


def marker_pickle(marker: Path) -> bytes:
    """A pickle that, once unpickled, writes `marker`: what an attacker would plant."""
    import pickle

    class Planted:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    return pickle.dumps(Planted())


def predict_exit(data: pd.DataFrame, tmp_path: Path) -> int:
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    return main(["predict", "--model", "models:/planted@champion", "--data", str(csv), "--out", str(tmp_path / "f.csv")])


def rescore(data: pd.DataFrame) -> promotion.Score:
    cfg = rs.config()
    win = rs.window_of(rs.plant(data, cfg, 0.0).frame, cfg)
    return registry.rescore("models:/planted/1", win.raw_rows, cfg.data.target, lambda table: promotion.scored_in_full(
        table, win.actual, win.first_dates, cfg.window.horizon))


def test_a_logged_model_holds_no_pickle_and_its_manifest_digest_is_recorded(champion) -> None:  # noqa: F811
    client, data = champion
    root = model_dir(client)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))] and "model_code.py" in files
    assert yaml.safe_load((root / "MLmodel").read_text())["flavors"]["python_function"]["model_code_path"]
    manifest = (root / MANIFEST_FILE).read_bytes()
    listed = json.loads(manifest)["files"]
    # every file but the manifest and Python's bytecode cache, which importing the code from the store may have
    # written by now (whether it did depends on which test loaded the model first)
    assert sorted(listed) == [f for f in files if f != MANIFEST_FILE and not is_cache(f)]
    assert all(hashlib.sha256((root / f).read_bytes()).hexdigest() == e["sha256"] for f, e in listed.items())
    digest = hashlib.sha256(manifest).hexdigest()
    version = client.get_model_version("planted", "1")
    assert version.tags[MANIFEST_TAG] == digest
    assert client.get_run(version.run_id).data.tags[MANIFEST_TAG] == digest
    assert client.get_logged_model(version.source.removeprefix("models:/")).tags[MANIFEST_TAG] == digest
    assert mlflow.artifacts.load_text(f"runs:/{version.run_id}/model/{MANIFEST_FILE}").encode() == manifest
    # MLflow's own loader and ours read it, and forecast alike
    expected = mlflow.pyfunc.load_model("models:/planted/1").predict(data)
    pd.testing.assert_frame_equal(load_pyfunc("models:/planted@champion").predict(data), expected)


def test_a_changed_data_file_is_refused_naming_it(prefect_harness, champion, tmp_path, capsys) -> None:  # noqa: F811
    client, data = champion
    root = model_dir(client)
    pre = root / "artifacts" / "forecaster" / "preprocessor.json"
    pre.write_text(pre.read_text().replace('"lookback": 5', '"lookback": 4'))
    assert predict_exit(data, tmp_path) == 2
    err = capsys.readouterr().err
    assert "artifacts/forecaster/preprocessor.json: SHA-256" in err and "changed after the model was logged" in err
    assert not (tmp_path / "f.csv").exists()
    score = rescore(data)
    assert score.rmse is None and "ModelIntegrityError" in score.error and "preprocessor.json" in score.error
    with pytest.raises(Exception, match="preprocessor.json: SHA-256"):  # MLflow's own loader: load_context refuses
        mlflow.pyfunc.load_model("models:/planted/1")


def test_a_planted_pickle_is_refused_and_never_runs(prefect_harness, champion, tmp_path, capsys) -> None:  # noqa: F811
    client, data = champion
    root = model_dir(client)
    marker = tmp_path / "pwned.txt"
    (root / "python_model.pkl").write_bytes(marker_pickle(marker))
    mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor.pop("model_code_path")
    flavor.update(python_model="python_model.pkl", loader_module="mlflow.pyfunc.model")
    (root / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    assert predict_exit(data, tmp_path) == 2
    assert "MLmodel: SHA-256" in capsys.readouterr().err
    assert "MLmodel" in rescore(data).error
    (root / "MLmodel").write_text(yaml.safe_dump({**mlmodel, "flavors": {}}))  # and the pickle alone, unlisted
    with pytest.raises(ModelIntegrityError, match="python_model.pkl: not listed in the manifest|MLmodel: SHA-256"):
        load_pyfunc("models:/planted/1")
    assert not marker.exists()


def test_a_replaced_code_file_is_refused_and_never_runs(prefect_harness, champion, tmp_path, capsys) -> None:  # noqa: F811
    client, data = champion
    marker = tmp_path / "pwned.txt"
    (model_dir(client) / "model_code.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    assert predict_exit(data, tmp_path) == 2
    assert "model_code.py: SHA-256" in capsys.readouterr().err
    assert "model_code.py" in rescore(data).error
    assert not marker.exists()


def test_a_manifest_rewritten_to_match_is_refused_by_the_recorded_digest(champion) -> None:  # noqa: F811
    client, data = champion
    root = model_dir(client)
    weights = root / "artifacts" / "forecaster" / "weights.pt"
    weights.write_bytes(weights.read_bytes())  # same bytes: still fine
    load_pyfunc("models:/planted/1")
    import torch

    state = torch.load(weights, weights_only=True)
    state["head.0.bias"] = state["head.0.bias"] + 1.0
    torch.save(state, weights)
    write_manifest(root)  # the attacker lists the new weights
    with pytest.raises(ModelIntegrityError, match=r"manifest.json: SHA-256 \w+, but the registry recorded"):
        load_pyfunc("models:/planted@champion")
    with pytest.raises(ModelIntegrityError, match=r"manifest.json: SHA-256 \w+, but the registry recorded"):
        load_pyfunc(client.get_model_version("planted", "1").source)  # models:/m-...: the logged model's record
    (root / MANIFEST_FILE).unlink()  # or drops the manifest
    with pytest.raises(ModelIntegrityError, match=r"manifest.json: missing, but the registry recorded"):
        load_pyfunc("models:/planted/1")


def test_a_saved_model_directory_is_checked_against_its_own_manifest(tmp_path) -> None:
    cfg = rs.config()
    planted = rs.plant(rs.trend(), cfg, 0.01)
    path = store.save_model(tmp_path / "model", planted.bundle,
                               series_example(planted.frame, cfg, rows=planted.bundle.preprocessor.input_rows))
    assert (path / MANIFEST_FILE).is_file() and not list(path.rglob("*.pkl"))
    expected = mlflow.pyfunc.load_model(str(path)).predict(planted.raw)  # leaves a __pycache__ beside the code: fine
    pd.testing.assert_frame_equal(load_pyfunc(str(path)).predict(planted.raw), expected)
    (path / "artifacts" / "forecaster" / "extra.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="extra.json: not listed in the manifest"):
        load_pyfunc(str(path))


@pytest.mark.parametrize("fixture", ["model_v1", "model_v2", "model_v5"])
def test_models_logged_before_manifests_load_with_a_warning(fixture, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.serving.pyfunc"):
        model = load_pyfunc(str(FIXTURES / fixture / "model"))
    assert "has no manifest.json: it was logged before this pipeline wrote manifests" in caplog.text
    assert len(model.predict(pd.read_csv(FIXTURES / fixture / "input.csv"))) > 0


def test_a_model_saved_wrong_is_refused_by_predict_naming_its_file(prefect_harness, champion, tmp_path,  # noqa: F811
                                                                   capsys) -> None:
    """NaN weights with a manifest (and a recorded digest) to match: the checks of the numbers refuse them (exit 2)."""
    import torch

    client, data = champion
    root = model_dir(client)
    weights = root / "artifacts" / "forecaster" / "weights.pt"
    state = torch.load(weights, weights_only=True)
    state["head.0.bias"][0] = float("nan")
    torch.save(state, weights)
    client.set_model_version_tag("planted", "1", MANIFEST_TAG, write_manifest(root))
    assert predict_exit(data, tmp_path) == 2
    err = capsys.readouterr().err
    assert "models:/planted/1/artifacts/forecaster/weights.pt: head.0.bias holds 1 NaN" in err, err
    assert "rule: every weight is finite" in err and not (tmp_path / "f.csv").exists()
