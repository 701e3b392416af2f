"""Prefect's API server for one command, started before the heavy imports rather than after them.

With no PREFECT_API_URL, the first flow call of a process imports Prefect's whole server
package in that process and only then starts a temporary server that imports it again and
opens the database, while the caller waits. The CLI instead runs Prefect's own public command,
`prefect server start --host 127.0.0.1 --port P --no-ui --no-services`, before importing torch,
MLflow and Prefect, so the server boots on the other core during those imports. The port is
chosen first and PREFECT_API_URL set in this process's environment before `import prefect`,
so Prefect reads it like any user setting; nothing of Prefect is touched after import.

The server never outlives the command: its output goes to an anonymous temporary file (never
the caller's stdout, so `pipeline train | tee` ends with the command), it runs in its own
session (a Ctrl-C in the terminal reaches the CLI, which stops it in order), and on Linux the
kernel sends it SIGKILL when the CLI dies, `kill -9` included (`prctl(PR_SET_PDEATHSIG)`).
`prefect server start` serves in its own process (one uvicorn worker), so nothing else is left.

A fresh PREFECT_HOME's database is created, migrated and filled with Prefect's block types by
the first server that opens it; two servers doing that at once race (`UNIQUE constraint
failed: block_schema...`). An exclusive lock in PREFECT_HOME is held from a server's start until
it answers, so the set-up happens once and the next server finds it done.

Skipped (Prefect does what it would have done anyway) when PREFECT_API_URL, a Prefect profile
or settings file names a server or turns ephemeral mode off, or PIPELINE_EARLY_PREFECT_SERVER=0.
This module imports nothing heavy; `start()` must come before `import prefect` to help at all.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from pipeline.errors import OrchestrationError

log = logging.getLogger(__name__)

FALSE = {"0", "false", "no", "off"}
SWITCH = "PIPELINE_EARLY_PREFECT_SERVER"
LOCK_NAME = "pipeline-server.lock"  # in PREFECT_HOME: one server at a time sets up the database
EPHEMERAL_SWITCHES = ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class EarlyServer:
    """A `prefect server start` subprocess serving Prefect's API on a loopback port."""

    port: int
    output: IO[bytes]  # the server's stdout and stderr (an anonymous temporary file)
    lock: IO[str]  # the set-up lock's file, held while `locked`
    locked: bool = False
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.perf_counter)
    ready_after: float | None = None  # seconds from start to a healthy API

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        self.process = subprocess.Popen(server_command(self.port), stdin=subprocess.DEVNULL, stdout=self.output,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=die_with_parent(os.getpid()))
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until GET /api/health answers 200; OrchestrationError when the process dies or times out."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            code = self.process.poll()
            if code is not None:
                raise OrchestrationError(f"Prefect's temporary server exited with status {code} before it was ready"
                                  f"{self.output_tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.ready_after = time.perf_counter() - self.started
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise OrchestrationError(f"Prefect's temporary server was not ready after {timeout:.0f}s{self.output_tail()}")

    def output_tail(self, chars: int = 2000) -> str:
        self.output.seek(0)
        text = self.output.read().decode(errors="replace").strip()
        return f"; its output ends:\n{text[-chars:]}" if text else ""

    def release(self) -> None:
        if self.locked:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.locked = False

    def errors(self) -> str:
        """What the server logged at ERROR or above (it runs with `--log-level ERROR`), else ''."""
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        start = min((i for i in (text.find("Traceback"), text.find("ERROR")) if i >= 0), default=-1)
        return text[start:].strip() if start >= 0 else ""

    def stop(self) -> None:
        """Terminate the server (as Prefect stops its own: SIGTERM, 5 s grace, then SIGKILL).

        Errors the server logged are passed on to stderr: its output is kept off the caller's
        streams, not hidden.
        """
        self.release()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.output.closed and (errors := self.errors()):
            print(f"Prefect's temporary server at {self.api_url} reported:\n{errors}", file=sys.stderr)
        self.output.close()
        self.lock.close()


def server_command(port: int) -> list[str]:
    """Prefect's public command line for a local API server: no UI, no background services."""
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
    program = [prefect] if prefect else [sys.executable, "-m", "prefect"]
    return [*program, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--no-services",
            "--log-level", "ERROR"]


def die_with_parent(parent: int) -> Any:
    """A `preexec_fn` asking Linux to SIGKILL the child when its parent dies (None elsewhere).

    Runs in the child between fork and exec, before any thread of ours exists (`start()` comes
    before the imports). A parent that died before the call is caught by its pid changing.
    """
    if not sys.platform.startswith("linux"):
        return None
    return functools.partial(exit_with_parent, parent)


def exit_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when `parent` dies, `kill -9` included (`prctl(PR_SET_PDEATHSIG)`).

    For children that are not started through `die_with_parent`: the worker processes of a
    `ProcessPoolTaskRunner` run it as their `initializer` (a module-level function: it is pickled).
    Linux sends the signal when the thread that started the child ends: a pool's workers are
    started by its own threads, which live until the pool has shut its workers down. A parent that
    died before the call is caught by its pid changing. Does nothing outside Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def _names_a_server(settings: dict[str, Any]) -> bool:
    """Whether PREFECT_* settings (a profile's table) name an API URL or turn ephemeral mode off."""
    if settings.get("PREFECT_API_URL"):
        return True
    return any(str(settings.get(name, "")).strip().lower() in FALSE for name in EPHEMERAL_SWITCHES)


def configured_elsewhere(cwd: Path | None = None) -> bool:
    """Whether a Prefect settings file may name a server (Prefect's documented sources besides the
    environment): the active profile in the profiles file, or a `.env`, `prefect.toml` or
    `pyproject.toml` [tool.prefect] in the working directory. Those are left to Prefect to read.
    """
    cwd = cwd or Path.cwd()
    if (cwd / "prefect.toml").is_file():
        return True
    try:
        dotenv = dict(line.split("=", 1) for line in (cwd / ".env").read_text().splitlines() if "=" in line)
    except OSError:
        dotenv = {}
    dotenv = {k.strip().removeprefix("export "): v.strip().strip("'\"") for k, v in dotenv.items()}
    if _names_a_server(dotenv) or any(k.startswith("PREFECT_PROFILE") for k in dotenv):
        return True
    try:
        if "prefect" in tomllib.loads((cwd / "pyproject.toml").read_text()).get("tool", {}):
            return True
    except (OSError, tomllib.TOMLDecodeError):
        pass
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home() / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, tomllib.TOMLDecodeError):
        return True  # unreadable: let Prefect read it and report
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    return _names_a_server(profiles.get("profiles", {}).get(active, {}))


def wanted() -> bool:
    """Whether this process would start Prefect's temporary server, as far as its settings tell.

    PIPELINE_EARLY_PREFECT_SERVER=0 leaves the start to Prefect (the benchmark's baseline).
    """
    if os.environ.get(SWITCH, "").strip().lower() in FALSE or _names_a_server(dict(os.environ)):
        return False
    if find_spec("prefect") is None or configured_elsewhere():
        return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> EarlyServer | None:
    """Start the server in the background when this process would need one; None otherwise.

    Sets PREFECT_API_URL for this process (and its children) to the server's address. When
    another command holds the set-up lock, the launch waits for `adopt`, after the imports.
    The server is stopped when the interpreter exits, after Prefect has flushed its logs and
    events (atexit handlers registered later, Prefect's, run first).
    """
    if "prefect" in sys.modules or not wanted():  # too late to help, or Prefect's settings decide (tests)
        return None
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    server = EarlyServer(port=free_port(), output=tempfile.TemporaryFile(), lock=(home / LOCK_NAME).open("a"))
    os.environ["PREFECT_API_URL"] = server.api_url
    with contextlib.suppress(BlockingIOError):
        fcntl.flock(server.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        server.locked = True
        server.launch()
    atexit.register(server.stop)
    return server


def adopt(server: EarlyServer | None, timeout: float = 120.0) -> str | None:
    """After the imports: wait until the server answers; the API URL in use, None when not started.

    Raises OrchestrationError (with the server's own output) when it does not come up: Prefect already
    points at its address, so there is nothing to fall back to in this process.
    """
    if server is None:
        return None
    if server.process is None:  # another command is setting up this PREFECT_HOME: wait for it
        fcntl.flock(server.lock, fcntl.LOCK_EX)
        server.locked = True
        server.launch()
    try:
        server.wait_ready(timeout)
    finally:
        server.release()
    log.info("Prefect API: temporary server at %s (ready %.1fs after start)", server.api_url, server.ready_after or 0)
    return server.api_url
