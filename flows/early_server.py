"""Prefect's temporary API server, started before the heavy imports rather than after them.

With no PREFECT_API_URL, the first flow call of a process imports Prefect's whole server
package in that process (about 4.5 s here) and only then starts a uvicorn subprocess that
imports it again and opens the database (about 5 s more), while the caller waits. The CLI
instead starts that same subprocess (Prefect's own command line and environment) first, lets
it boot on the other core while torch, MLflow and Prefect import here, and then points Prefect
at it. When a Prefect profile or file turns out to name a server, or ephemeral mode is off,
the early server is stopped and Prefect does what it would have done anyway.

This module imports nothing heavy at import time; `start()` must come before `import prefect`
to help at all.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger(__name__)

FALSE = {"0", "false", "no", "off"}
PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind
SWITCH = "PIPELINE_EARLY_PREFECT_SERVER"


@dataclass
class EarlyServer:
    """A uvicorn subprocess serving Prefect's API on a loopback port."""

    process: subprocess.Popen
    port: int
    started: float = field(default_factory=time.perf_counter)
    ready_after: float | None = None  # seconds from start to a healthy API

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until GET /api/health answers 200; RuntimeError when the process dies or times out."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"Prefect's temporary server exited with status {code} before it was ready")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.ready_after = time.perf_counter() - self.started
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Prefect's temporary server was not ready after {timeout:.0f}s")

    def stop(self) -> None:
        """Terminate the server (as Prefect does: SIGTERM, 5 s grace, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wanted() -> bool:
    """Whether this process would start an ephemeral server, as far as the environment tells.

    PIPELINE_EARLY_PREFECT_SERVER=0 leaves the start to Prefect (the benchmark's baseline).
    """
    if os.environ.get("PREFECT_API_URL") or os.environ.get(SWITCH, "").strip().lower() in FALSE:
        return False
    for name in ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        if os.environ.get(name, "").strip().lower() in FALSE:
            return False
    return find_spec("prefect") is not None and find_spec("uvicorn") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(port: int) -> subprocess.Popen:
    """Prefect's own ephemeral command line (`SubprocessASGIServer._run_uvicorn_command`)."""
    spec = find_spec("prefect")
    assert spec is not None and spec.origin is not None
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env,
    )


def start() -> EarlyServer | None:
    """Start the server in the background when this process would need one; None otherwise.

    It is stopped when the interpreter exits, after Prefect has flushed its logs and events:
    handlers registered later (Prefect's) run first.
    """
    if not wanted():
        return None
    port = free_port()
    server = EarlyServer(process=_launch(port), port=port)
    atexit.register(server.stop)
    return server


def adopt(server: EarlyServer | None, timeout: float = 60.0) -> str | None:
    """After `import prefect`: point Prefect at the early server, or stop it when not needed.

    Returns the API URL in use, or None when Prefect is left to its own devices.
    """
    if server is None:
        return None
    from prefect import context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    refresh = getattr(context, "refresh_global_settings_context", None)
    if settings.api.url or not settings.server.ephemeral.enabled or refresh is None:
        server.stop()  # a profile names a server, ephemeral mode is off, or this Prefect cannot be re-pointed
        return None
    for attempt in range(3):
        try:
            server.wait_ready(timeout)
            break
        except RuntimeError as exc:
            if server.process.poll() == PORT_IN_USE and attempt < 2:  # the port was taken since free_port()
                server.port = free_port()
                server.process = _launch(server.port)
                continue
            server.stop()
            log.warning("%s; Prefect will start its own", exc)
            return None
    os.environ["PREFECT_API_URL"] = server.api_url
    refresh()  # Prefect's settings now name the early server, for this process's flows and workers
    log.info("Prefect API: temporary server at %s (ready %.1fs after start)", server.api_url, server.ready_after or 0)
    return server.api_url
