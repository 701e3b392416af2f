"""What a run records about the process and checkout it ran in: the process that owns it (host, pid, start
time, boot id: a run left RUNNING by a process that died can be told from a live one) and the git state.

Plain functions on /proc, the hostname and git; imported by the tracking, registry and reproduce modules alike,
so none of them imports another for these.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """`git_commit` and `git_dirty` of the working tree ('unknown' outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


# ---------------------------------------------------------------- this process
def process_stat(pid: int | str = "self") -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks after boot) from /proc (Linux); None when gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None: for `pipeline train`, the import and start-up cost."""
    stat = process_stat()
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return None if stat is None else max(0.0, uptime - stat[1] / os.sysconf("SC_CLK_TCK"))


# ---------------------------------------------------------------- who owns a RUNNING run
OWNER_TAG = "pipeline.owner"  # host:pid of the process that started the run and would end it


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessOwner:
    """The process that started a run, recorded on it as tags: a run left RUNNING by a process that died
    (`kill -9`, the OOM killer, a reboot) can then be told from one still running.

    `started` (clock ticks after boot), `boot` (the kernel's boot id) and `pid_ns` (the pid namespace)
    tell a reused pid and another container from the same process; empty where /proc does not exist.
    """

    host: str
    pid: int
    started: str = ""
    boot: str = ""
    pid_ns: str = ""

    @classmethod
    def current(cls) -> ProcessOwner:
        stat = process_stat()
        try:
            pid_ns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pid_ns = ""
        return cls(socket.gethostname(), os.getpid(), str(stat[1]) if stat else "",
                   _read("/proc/sys/kernel/random/boot_id"), pid_ns)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    def tags(self) -> dict[str, str]:
        return {OWNER_TAG: self.label, f"{OWNER_TAG}.started": self.started, f"{OWNER_TAG}.boot": self.boot,
                f"{OWNER_TAG}.pid_ns": self.pid_ns}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ProcessOwner | None:
        """The owner a run recorded; None for a run that recorded none (started before owners were recorded)."""
        host, _, pid = tags.get(OWNER_TAG, "").rpartition(":")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), tags.get(f"{OWNER_TAG}.started", ""), tags.get(f"{OWNER_TAG}.boot", ""),
                   tags.get(f"{OWNER_TAG}.pid_ns", ""))

    def gone(self, here: ProcessOwner) -> str | None:
        """Why this owner has certainly ended, judged from `here` (this process); None when it may still run
        (alive, on another host or in another container: not ours to judge)."""
        if self.host != here.host:
            return None
        if self.boot and here.boot and self.boot != here.boot:
            return "the machine restarted since"
        if self.pid_ns != here.pid_ns:
            return None
        if self.pid == here.pid and self.started == here.started:
            return None
        if here.started:  # /proc: compare the start time, so that a reused pid is not taken for the owner
            stat = process_stat(self.pid)
            if stat is None:
                return f"process {self.pid} no longer exists"
            if stat[0] in ("Z", "X"):
                return f"process {self.pid} has exited"
            return f"pid {self.pid} now belongs to another process" if str(stat[1]) != self.started else None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return f"process {self.pid} no longer exists"
        except PermissionError:  # alive, another user's
            return None
        return None
