"""`mlflow models serve` with the logged champion: the REST answer equals the in-process one."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.integration import registry_support as rs
from tests.integration.processes import free_port, stop_groups, wait_until_ok

READY_TIMEOUT_S = 90  # about 6 s on an idle machine; CI machines are shared


def post(url: str, payload: dict) -> tuple[int, dict | list]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def split_payload(rows: pd.DataFrame, **params) -> dict:
    payload: dict = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    if params:
        payload["params"] = params
    return payload


@pytest.mark.slow
@pytest.mark.integration
def test_rest_server_answers_like_the_in_process_model(mlflow_store, tmp_path):
    client = rs.client_for(mlflow_store)
    cfg = rs.config()
    data = rs.trend(growth=0.01)
    planted = rs.plant(data, cfg, 0.01)
    assert rs.register(client, planted, rs.window_of(planted.frame, cfg), planted.frame).alias == "champion"

    with serve("models:/planted@champion", tmp_path, {"MLFLOW_TRACKING_URI": mlflow_store,
                                                      "MLFLOW_REGISTRY_URI": mlflow_store}) as base:

        in_process = mlflow.pyfunc.load_model("models:/planted@champion")
        recent = data.tail(12)
        status, body = post(f"{base}/invocations", split_payload(recent))
        assert status == 200, body
        served = pd.DataFrame(body["predictions"])
        pd.testing.assert_frame_equal(served, in_process.predict(recent), check_dtype=False, rtol=1e-12)

        status, body = post(f"{base}/invocations", split_payload(recent, all_windows=True))
        assert status == 200, body
        expected = in_process.predict(recent, params={"all_windows": True})
        assert len(body["predictions"]) == len(expected) == 7
        pd.testing.assert_frame_equal(pd.DataFrame(body["predictions"]), expected, check_dtype=False, rtol=1e-12)

        # integer volumes, as pandas reads them from most CSVs, are values like any other
        whole = recent.astype({"Volume": "int64"})
        status, body = post(f"{base}/invocations", split_payload(whole))
        assert status == 200, body
        pd.testing.assert_frame_equal(pd.DataFrame(body["predictions"]), in_process.predict(whole),
                                      check_dtype=False, rtol=1e-12)

        # too few rows for the lookback: a 400 whose message says so, without a stack trace to dig through
        status, body = post(f"{base}/invocations", split_payload(data.tail(3)))
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "at least 6 rows for the lookback window" in body["message"]
        assert "at least 6 rows for the lookback window" in body["detail"] and "Failed to predict" not in body["detail"]

        # a missing column and an unparseable value: 4xx with the column named
        status, body = post(f"{base}/invocations", split_payload(recent.drop(columns=["Volume"])))
        assert 400 <= status < 500 and "Volume" in body["message"]
        broken = recent.reset_index(drop=True)
        broken.loc[4, "Date"] = "not a date"
        status, body = post(f"{base}/invocations", split_payload(broken))
        assert status == 400 and "'Date'" in body["message"] and "not a date" in body["message"]
        # the row as the JSON frame counts it (from 0), not a file "line"; the project's message alone
        # in `detail`: MLflow's scoring server puts the whole input frame in front of it in `message`
        detail = body["detail"]
        assert detail.startswith("the input (rows counted from 0): ") and "row 4 ('not a date')" in detail
        assert "line" not in detail and len(detail) < 300 and body["message"].endswith(detail)
        assert body["message"].startswith("Failed to predict data '")  # MLflow 3.17: see pyfunc.input_rejected


@contextlib.contextmanager
def serve(model: str, tmp_path: Path, env: dict[str, str] | None = None, python: Path | None = None,
          cwd: Path | None = None) -> Iterator[str]:
    """`mlflow models serve` of `model` (a path or URI) on a free port; yields the base URL. `python`: the
    interpreter of another environment to serve from (`python -m mlflow`), its `bin/` first on PATH."""
    port = free_port()
    bin_dir = (python or Path(sys.executable)).parent  # uvicorn is started through PATH
    env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(python), "-m", "mlflow"] if python else [str(bin_dir / "mlflow")]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*command, "models", "serve", "-m", model, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ok(f"{base}/ping", server, READY_TIMEOUT_S, log_path, what="mlflow models serve")
            yield base
        finally:
            stop_groups([server])


@pytest.mark.slow
@pytest.mark.integration
def test_rest_serves_every_series_of_a_long_frame(tmp_path):
    """A model of many series (the format-2 fixture) over REST: the long frame in, each series' forecasts out."""
    from tests.conftest import ROOT

    fixture = ROOT / "tests" / "fixtures" / "model_v2"
    rows = pd.read_csv(fixture / "input.csv")
    recent = rows.groupby("meter").tail(8)
    with serve(str(fixture / "model"), tmp_path) as base:
        status, body = post(f"{base}/invocations", split_payload(recent))
        assert status == 200, body
        served = pd.DataFrame(body["predictions"])
        in_process = mlflow.pyfunc.load_model(str(fixture / "model")).predict(recent)
        assert list(served.columns) == ["meter", "origin", "step", "date", "forecast"]
        assert sorted(served["meter"].unique()) == ["m1", "m2", "m3"]
        pd.testing.assert_frame_equal(served, in_process, check_dtype=False, rtol=1e-12)
        # a bad value names its series and its row in the frame sent
        broken = recent.reset_index(drop=True).astype({"load": object})
        broken.loc[10, "load"] = "oops"
        status, body = post(f"{base}/invocations", split_payload(broken))
        assert status == 400 and "series 'm2'" in body["detail"] and "row 10 ('oops')" in body["detail"], body
