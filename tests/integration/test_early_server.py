"""Prefect's temporary server started by the CLI: it never outlives the command, and a fresh
PREFECT_HOME is set up once when commands start together (issue 12, items 4 and 8)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, make_prices
from tests.integration.processes import alive, descendants

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")]


def cli_env(tmp_path: Path, home: Path) -> dict[str, str]:
    """No Prefect server configured: the CLI starts its own, in a fresh PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    return env


def write_tiny(tmp_path: Path, name: str, epochs: int = 2) -> Path:
    make_prices(80).to_csv(tmp_path / "prices.csv", index=False)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "data": {"source": str(tmp_path / "prices.csv")},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "window": {"lookback": 5},
        "model": {"hidden_size": 8, "num_layers": 1},
        "train": {"epochs": epochs, "batch_size": 16, "patience": 5, "seed": 1},
        "tracking": {"experiment": name}, "registry": {"model_name": f"{name}-model"}}))
    return path


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_kill_9_of_train_leaves_no_server_and_releases_the_callers_pipe(tmp_path: Path) -> None:
    """`pipeline train | tee` must end when the command is killed: nothing it started lives on."""
    config = write_tiny(tmp_path, "killed", epochs=400)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--config", str(config)],
                            cwd=tmp_path, env=cli_env(tmp_path, tmp_path / "home"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, server, port = time.monotonic() + 240, None, None
        while time.monotonic() < deadline and proc.poll() is None:
            for pid in descendants(proc.pid):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"server" in cmd and b"--port" in cmd:
                    server, port = pid, int(cmd[cmd.index(b"--port") + 1])
            if port and healthy(port):
                break
            time.sleep(0.1)
        assert server and port and healthy(port), "the CLI's Prefect server never came up"
        tree = descendants(proc.pid)
        assert proc.poll() is None, "the command ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)  # EOF on both pipes: nothing else holds them
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (any(alive(p) for p in tree) or port_open(port)):
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], f"processes outlived the command: {tree}"
    assert not port_open(port), f"port {port} is still open"
    try:
        os.killpg(proc.pid, 0)
        group_left = True
    except ProcessLookupError:
        group_left = False
    assert not group_left, "a process of the command's group is still running"


def test_two_first_runs_at_once_set_up_a_fresh_prefect_home_once(tmp_path: Path) -> None:
    """Both succeed and neither prints a server traceback (no racing database set-up)."""
    env = cli_env(tmp_path, tmp_path / "fresh-home")
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "train", "--config",
                               str(write_tiny(tmp_path, name))], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("first", "second")]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=400)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for code, out, err in results:
        assert code == 0, err
        assert "Traceback" not in err and "UNIQUE constraint" not in err, err
        assert "reported:" not in err, err
        assert re.search(r"^MLflow run: +\w+", out, re.M), out
