"""Servers and processes the integration tests start: a free port, waiting until one answers, stopping it whole,
the processes a command left (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from pipeline.tracking.server import stop_process_group


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ok(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None,
                  what: str = "server", interval: float = 0.25) -> None:
    """Poll `url` until it answers 200; fail with the server's log tail if it exits or times out."""
    tail: Callable[[], str] = lambda: log.read_text(errors="replace")[-3000:] if log and log.exists() else ""  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what} exited {proc.returncode}:\n{tail()}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        assert time.monotonic() < deadline, f"{what} not ready at {url} in {timeout:.0f} s:\n{tail()}"
        time.sleep(interval)


def stop_groups(procs: Iterable[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM each process group started with start_new_session=True, then SIGKILL what stays.

    Every group is signalled first and waited for after, so they shut down together.
    """
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop_process_group(proc, timeout)


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    todo, seen = children(pid), []
    while todo:
        child = todo.pop()
        seen.append(child)
        todo += children(child)
    return seen


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def postgres_folder(prefix: str) -> Iterator[Path]:
    """A folder under /tmp that PostgreSQL's service user can reach, removed afterwards; the test is skipped, saying
    why, where PostgreSQL's programs or the driver are missing."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (the project's [postgres] extra)")
    from pipeline.tracking.server import PostgresUnavailable, pg_binary

    try:
        for program in ("initdb", "pg_ctl", "psql"):
            pg_binary(program)
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
