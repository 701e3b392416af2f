"""A logged model carries only its serving code, and `mlflow models serve` runs it where the project is not installed.

`store.log_model` hands MLflow the serving room's import closure (`pipeline.tracking.code_closure`, the graph
tests/unit/test_layering.py holds to the layering rules) as the model's `code/pipeline/`: nothing of training,
tracking, tuning or the CLI. A process that has no `pipeline` of its own imports that copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow
import pandas as pd
import pytest

from pipeline.serving.model_format import MANIFEST_FILE
from pipeline.serving.pyfunc import load_forecaster, load_pyfunc
from pipeline.tracking.code_closure import PACKAGE_DIR, module_files, module_graph, serving_closure
from tests.integration import registry_support as rs
from tests.integration.test_rest_serving import post, serve, split_payload

pytestmark = pytest.mark.integration

# Rooms and modules a logged model must never carry (pipeline/__init__.py's rooms above serving, the training loop,
# scoring and monitoring).
NEVER_CARRIED = ("pipeline/training/", "pipeline/tuning/", "pipeline/tracking/", "pipeline/cli/",
                 "pipeline/model/training.py", "pipeline/model/progress.py", "pipeline/evaluation/metrics.py",
                 "pipeline/evaluation/plots.py", "pipeline/evaluation/monitoring.py")


@pytest.fixture
def logged(mlflow_store: str, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A planted model freshly logged by `store.log_model` to a temporary store, copied out of the store: its folder
    and the rows it was planted on."""
    client = rs.client_for(mlflow_store)
    data = rs.trend(growth=0.01)
    _, _, model_id = rs.log_planted(client, rs.plant(data, rs.config(), 0.01))
    stored = Path(url2pathname(urlparse(client.get_logged_model(model_id).artifact_location).path))
    copy = tmp_path / "served" / "model"
    shutil.copytree(stored, copy)
    return copy, data


def code_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root / "code").as_posix() for p in (root / "code").rglob("*") if p.is_file())


def test_a_logged_model_carries_the_serving_closure_and_nothing_else(logged: tuple[Path, pd.DataFrame]) -> None:
    root, _ = logged
    files = code_files(root)
    modules = module_files({"pipeline": PACKAGE_DIR})
    closure = serving_closure(module_graph({"pipeline": PACKAGE_DIR}))
    assert files == sorted(modules[m].relative_to(PACKAGE_DIR.parent).as_posix() for m in closure)
    assert {"pipeline/__init__.py", "pipeline/pyfunc.py", "pipeline/serving/__init__.py", "pipeline/serving/pyfunc.py",
            "pipeline/model/__init__.py", "pipeline/model/network.py", "pipeline/evaluation/intervals.py"} <= set(files)
    assert not [f for f in files if f.startswith(NEVER_CARRIED)], files
    assert all((root / "code" / f).read_bytes() == (PACKAGE_DIR.parent / f).read_bytes() for f in files)
    listed = json.loads((root / MANIFEST_FILE).read_text())["files"]  # the manifest covers the code too
    assert sorted(f for f in listed if f.startswith("code/")) == [f"code/{f}" for f in files]


def test_loading_leaves_the_model_s_code_off_sys_path(logged: tuple[Path, pd.DataFrame]) -> None:
    """Otherwise modules imported later in a process that runs the project would come from the model's copy.
    (MLflow's own loader below leaves its entry behind; tests/conftest.py restores `sys.path` after the test.)"""
    root, _ = logged
    before = list(sys.path)
    _, bundle = load_forecaster(str(root))
    assert sys.path == before and bundle.target == "Close"
    mlflow.pyfunc.load_model(str(root))
    assert str(root / "code") in sys.path


def environment_without_the_project(folder: Path) -> Path:
    """A Python environment holding this one's packages but not the project; its interpreter.

    A virtual environment (no pip) whose one `.pth` file names this environment's site-packages as a plain path:
    the `.pth` files there, the project's editable-install hook among them, never run. `mlflow models serve` starts
    uvicorn through PATH, so the environment gets its own `bin/uvicorn`.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys((sysconfig.get_path("purelib"), sysconfig.get_path("platlib")))
    (Path(site) / "dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    uvicorn = folder / "bin" / "uvicorn"
    uvicorn.write_text(f"#!{python}\nimport sys\n\nfrom uvicorn.main import main\n\nsys.exit(main())\n")
    uvicorn.chmod(0o755)
    return python


def test_mlflow_models_serve_runs_a_logged_model_without_the_project_installed(
        logged: tuple[Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, data = logged
    monkeypatch.delenv("PYTHONPATH", raising=False)
    python = environment_without_the_project(tmp_path / "env")
    elsewhere = tmp_path / "elsewhere"  # a working directory without the project in it
    elsewhere.mkdir()

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-c", code], cwd=elsewhere, capture_output=True, text=True)

    assert run("import mlflow.pyfunc, torch, pandera, uvicorn").returncode == 0  # the dependencies are there
    missing = run("import pipeline")
    assert missing.returncode != 0 and "No module named 'pipeline'" in missing.stderr  # the project is not

    recent = data.tail(12)
    with serve(str(root), tmp_path, python=python, cwd=elsewhere) as base:
        status, body = post(f"{base}/invocations", split_payload(recent, all_windows=True))
        assert status == 200, body
        expected = load_pyfunc(str(root)).predict(recent, params={"all_windows": True})  # today's code, in-process
        assert len(expected) == 7
        pd.testing.assert_frame_equal(pd.DataFrame(body["predictions"]), expected, check_dtype=False, rtol=1e-12)
        # a bad value: the served code's own 400, naming the column (the serving room's contract, not MLflow's)
        broken = recent.reset_index(drop=True)
        broken.loc[4, "Date"] = "not a date"
        status, body = post(f"{base}/invocations", split_payload(broken))
        assert status == 400 and "row 4 ('not a date')" in body["detail"], body
