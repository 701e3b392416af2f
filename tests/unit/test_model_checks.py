"""A saved model whose numbers no training could have written is refused on load, naming the file and the rule.

One test per check of pipeline.serving.model_format (`check_files`, `check_preprocessor`, `check_weights`,
`check_intervals`); each refusal is a ModelIntegrityError, exit 2.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import ModelIntegrityError
from pipeline.evaluation.intervals import IntervalState
from pipeline.serving.model_format import INTERVALS_FILE, ForecastBundle
from tests.integration import registry_support as rs


@pytest.fixture
def saved(tmp_path):
    """A model directory as saved today (format 6): one series, standard-scaled features, a minmax target, 80 and 95 % intervals."""
    cfg = rs.config(preprocess={"target_scaler": "minmax"}, window={"lookback": 5, "horizon": 2})
    planted = rs.plant(rs.trend(n=50, growth=0.01), cfg, 0.3)
    bundle = ForecastBundle(planted.bundle.checkpoint, planted.bundle.preprocessor, cfg,
                            intervals=IntervalState((80, 95), {80: (1.0, 1.5), 95: (2.0, 2.5)}, 20))
    path = bundle.save(tmp_path / "forecaster")
    assert json.loads((path / "format.json").read_text())["format_version"] == 6
    ForecastBundle.load(path)  # as saved, it loads
    return path


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def refused(path, *patterns: str) -> str:
    with pytest.raises(ModelIntegrityError) as caught:
        ForecastBundle.load(path)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_nan_in_a_scaler_is_refused(saved) -> None:
    edit_json(saved / "preprocessor.json", lambda d: d["feature_scaler"]["mean_"].__setitem__(0, float("nan")))
    refused(saved, "preprocessor.json", "feature_scaler.mean_ holds 1 NaN", "rule: every fitted scaler number is finite")


def test_a_scaler_not_one_number_per_column_is_refused(saved) -> None:
    edit_json(saved / "preprocessor.json", lambda d: d["target_scaler"]["scale_"].append(1.0))
    refused(saved, "preprocessor.json", "target_scaler.scale_ has 2 number(s) for 1 column(s)",
            "rule: a scaler holds one number per column it scales")


def test_a_zero_scale_is_refused(saved) -> None:
    edit_json(saved / "preprocessor.json", lambda d: d["feature_scaler"]["scale_"].__setitem__(0, 0.0))
    refused(saved, "preprocessor.json", "scale_ holds 1 number(s) <= 0", "rule: a scaler divides by positive scales")


def test_nan_in_the_weights_is_refused(saved) -> None:
    state = torch.load(saved / "weights.pt", weights_only=True)
    state["lstm.weight_hh_l0"][0, 0] = float("nan")
    torch.save(state, saved / "weights.pt")
    refused(saved, "weights.pt", "lstm.weight_hh_l0 holds 1 NaN", "rule: every weight is finite")


def test_weights_shaped_otherwise_than_init_args_are_refused(saved) -> None:
    state = torch.load(saved / "weights.pt", weights_only=True)
    state["lstm.weight_ih_l0"] = torch.zeros(3, 3)
    torch.save(state, saved / "weights.pt")
    refused(saved, "weights.pt", "lstm.weight_ih_l0 has shape (3, 3), but model.json's init_args give",
            "rule: weights hold the tensors, shaped as model.json's init_args build the network")


def test_weights_missing_a_tensor_are_refused(saved) -> None:
    state = torch.load(saved / "weights.pt", weights_only=True)
    del state["lstm.bias_hh_l0"]
    torch.save(state, saved / "weights.pt")
    refused(saved, "weights.pt", "tensors lstm.bias_hh_l0 missing")


def test_init_args_that_build_no_network_are_refused(saved) -> None:
    edit_json(saved / "model.json", lambda d: d["init_args"].__setitem__("colour", "red"))
    refused(saved, "model.json", "init_args do not build the network")


def test_a_negative_half_width_lower_above_upper_is_refused(saved) -> None:
    edit_json(saved / INTERVALS_FILE, lambda d: d["quantiles"].__setitem__("80", [-1e6, 1.5]))
    refused(saved, "intervals.json", "quantiles[80] holds a negative half-width",
            "rule: each level's lower bound lies below its upper")


def test_levels_that_do_not_nest_are_refused(saved) -> None:
    edit_json(saved / INTERVALS_FILE, lambda d: d["quantiles"].__setitem__("95", [0.5, 2.5]))
    refused(saved, "intervals.json", "step 1: the 80 % half-width 1 exceeds the 95 % one 0.5",
            "rule: a wider level's band holds the narrower one (nested levels)")


def test_nan_or_a_short_list_in_the_intervals_is_refused(saved) -> None:
    edit_json(saved / INTERVALS_FILE, lambda d: d["quantiles"].__setitem__("95", [float("nan"), 2.5]))
    refused(saved, "intervals.json", "quantiles[95] holds 1 NaN", "rule: every interval number is finite")
    edit_json(saved / INTERVALS_FILE, lambda d: d["quantiles"].update({"80": [1.0], "95": [2.0]}))
    refused(saved, "intervals.json", "quantiles[80] has 1 number(s) for a horizon of 2",
            "rule: one interval number per horizon step")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_format_version_edited_down_is_refused_by_the_files_it_holds(saved, version) -> None:
    """Format 4 edited to 1-3 would load without its intervals (or, at 1 or 2, fail blaming the data)."""
    edit_json(saved / "format.json", lambda d: d.__setitem__("format_version", version))
    refused(saved, f"{INTERVALS_FILE}: not a file of a format-{version} model directory",
            f"rule: a format-{version} model directory holds exactly the files of its format version")


def test_a_missing_or_an_extra_file_is_refused(saved) -> None:
    (saved / "notes.txt").write_text("hello")
    refused(saved, "notes.txt: not a file of a format-6 model directory")
    (saved / "notes.txt").unlink()
    (saved / INTERVALS_FILE).unlink()
    refused(saved, "intervals.json: missing", "rule: a format-6 model directory whose series.json says it has "
            "intervals holds them")


def test_a_series_scale_that_is_nan_or_not_positive_is_refused(saved) -> None:
    for bad in (float("nan"), 0.0):
        edit_json(saved / INTERVALS_FILE, lambda d, bad=bad: d.__setitem__("scales", {"A": 2.0, "B": bad}))
        refused(saved, "intervals.json", "scales holds a NaN, infinite or non-positive number",
                "rule: every series' scale is a positive number")


# ---------------------------------------------------------------- the manifest (pipeline.serving.model_format)
def test_the_manifest_lists_every_file_and_a_checked_copy_holds_only_those(tmp_path) -> None:
    from pipeline.serving.model_format import (
        MANIFEST_FILE,
        check_manifest,
        copy_verified,
        read_manifest,
        write_manifest,
    )

    root = tmp_path / "model"
    (root / "artifacts").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "artifacts" / "weights.pt").write_bytes(b"\x00\x01")
    digest = write_manifest(root)
    files = read_manifest(root, digest)
    assert sorted(files) == ["MLmodel", "artifacts/weights.pt"]
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "model_code.cpython-311.pyc").write_bytes(b"cache")  # Python's own: tolerated, not copied
    check_manifest(root, files)
    copy = copy_verified(root, files, tmp_path / "copy")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        "MLmodel", "artifacts/weights.pt", MANIFEST_FILE]
    (root / "python_model.pkl").write_bytes(b"planted")
    with pytest.raises(ModelIntegrityError, match=r"python_model.pkl: not listed in the manifest"):
        check_manifest(root, files)
    with pytest.raises(ModelIntegrityError, match=r"lists '../outside', outside the model directory"):
        check_manifest(root, {"../outside": {"sha256": "0", "bytes": 0}})
    with pytest.raises(ModelIntegrityError, match=r"manifest.json: SHA-256 \w+, but the registry recorded 00"):
        read_manifest(root, "00")
    assert read_manifest(tmp_path / "copy") == files and read_manifest(tmp_path) is None  # none: a model from before
    # importing the model's code writes a __pycache__ beside it, and again whenever the code's copy is newer: a
    # manifest written over it leaves it out, and one from before that listed it reads without it
    (root / "python_model.pkl").unlink()
    digest = write_manifest(root)
    assert read_manifest(root, digest) == files
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["files"]["__pycache__/model_code.cpython-311.pyc"] = {"sha256": "0", "bytes": 5}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert read_manifest(root) == files
    check_manifest(root, read_manifest(root))
