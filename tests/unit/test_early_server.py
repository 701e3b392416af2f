"""The early server's failure reporting and start-up lock, with stand-in processes (no Prefect)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows import early_server
from pipeline.errors import OrchestrationError


def stand_in(tmp_path: Path, script: str) -> early_server.EarlyServer:
    server = early_server.EarlyServer(port=early_server.free_port(), output=tempfile.TemporaryFile(),
                                      lock=(tmp_path / early_server.LOCK_NAME).open("a"))
    server.process = subprocess.Popen([sys.executable, "-c", script], stdout=server.output, stderr=subprocess.STDOUT)
    return server


def test_a_server_that_dies_is_an_orchestration_error_carrying_its_output(tmp_path: Path) -> None:
    server = stand_in(tmp_path, "print('ERROR: database is corrupt'); raise SystemExit(3)")
    with pytest.raises(OrchestrationError, match=r"status 3 before it was ready(.|\n)*database is corrupt"):
        server.wait_ready(timeout=30)
    server.stop()


def test_errors_the_server_logged_are_passed_on_at_stop(tmp_path: Path, capsys) -> None:
    banner = "Configure Prefect to communicate with the server with: ...\\n"
    server = stand_in(tmp_path, f"print({banner!r}); import time; time.sleep(60)")
    server.stop()
    assert capsys.readouterr().err == ""  # a banner alone is no news
    server = stand_in(tmp_path, "import sys; print('Traceback (most recent call last):\\nUNIQUE constraint failed')")
    server.process.wait()
    server.stop()
    err = capsys.readouterr().err
    assert "reported:" in err and "UNIQUE constraint failed" in err


def test_the_set_up_lock_is_released_once_the_server_answers(tmp_path: Path, monkeypatch) -> None:
    server = stand_in(tmp_path, "import time; time.sleep(60)")
    fcntl.flock(server.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    server.locked = True
    monkeypatch.setattr(server, "wait_ready", lambda timeout: None)
    other = (tmp_path / early_server.LOCK_NAME).open("a")
    with pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert early_server.adopt(server) == server.api_url
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    other.close()
    server.stop()
