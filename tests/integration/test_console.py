"""What `pipeline train` prints on a terminal: each warning once, whichever roads it travels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# pipeline.evaluation.intervals' notes: too few validation windows for a finite-sample 95 % interval, the model's and a baseline's
NOTES = ("the model's 95 % intervals rest on", "seasonal naive's 95 % intervals rest on")


def test_an_interval_warning_is_printed_once(prefect_harness, mlflow_store, write_config, tmp_path) -> None:
    """The note reaches the console through the library logger, the Prefect task run logger and the summary's
    `note:` lines; one of the three is shown. The tiny config's 16 validation rows give 12 windows, fewer than
    the 19 a finite-sample 95 % interval needs."""
    from prefect.settings import PREFECT_API_URL

    config = write_config("console.yaml")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_LOGGING"))},
           "MLFLOW_TRACKING_URI": mlflow_store, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config", config], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert [output.count(note) for note in NOTES] == [1, 1], output[-5000:]
    quiet = subprocess.run([sys.executable, "-m", "pipeline.cli", "--quiet", "train", "--force", "--config", config],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    for note in NOTES:  # --quiet: in the summary only
        assert note not in quiet.stderr and quiet.stdout.count(note) == 1, quiet.stdout
