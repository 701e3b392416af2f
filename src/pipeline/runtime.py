"""The machine and process a run works in, and the tricks that make it fast there, in one place: the process
that owns a run (host, pid, start time, boot time: a run left RUNNING by a process that died can be told from a
live one), the git state it records, the threads torch trains with, denormal floats, and the interpreter's
start-up and exit (imports with the collector paused, the collector frozen at exit), and the test hook that
kills the process at a named stage (`kill_point`).

Plain functions on psutil, the hostname, git, torch's and the interpreter's settings; torch and psutil are imported
only by the functions that use them (the logged model carries this module and needs neither for its processes).
Imported by training, the model, the tracking and registry modules and the CLI alike.
"""

from __future__ import annotations

import atexit
import copy
import gc
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil
    import torch
    from torch import nn


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
# A process's start is recorded in clock ticks after boot, as /proc/<pid>/stat counts it (the format of the
# `pipeline.owner.started` tag): psutil's creation and boot times are both wall-clock and move together when
# the clock is set, so their difference is the same whenever it is read.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def started_after_boot(process: psutil.Process) -> str:
    """When `process` started, in clock ticks after boot (psutil's `create_time() - boot_time()`)."""
    import psutil

    return str(round((process.create_time() - psutil.boot_time()) * CLOCK_TICKS))


def process_age() -> float | None:
    """Seconds since this process started, or None: for `pipeline train`, the import and start-up cost.

    Linux: the time since boot (CLOCK_BOOTTIME) less the start after boot, exact to a clock tick; elsewhere the wall
    clock less psutil's creation time.
    """
    import psutil

    try:
        process = psutil.Process()
        if hasattr(time, "CLOCK_BOOTTIME"):
            return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - int(started_after_boot(process)) / CLOCK_TICKS)
        return max(0.0, time.time() - process.create_time())
    except psutil.Error:
        return None


# ---------------------------------------------------------------- who owns a RUNNING run
OWNER_TAG = "pipeline.owner"  # host:pid of the process that started the run and would end it


@dataclass(frozen=True)
class ProcessOwner:
    """The process that started a run, recorded on it as tags: a run left RUNNING by a process that died
    (`kill -9`, the OOM killer, a reboot) can then be told from one still running.

    `started` (clock ticks after boot), `boot` (the boot time, epoch seconds) and `pid_ns` (the pid namespace,
    Linux) tell a reused pid, a restarted machine and another container from the same process. Runs recorded
    before boot times were carry the kernel's boot id in `boot`: a restart is then not judged by it.
    """

    host: str
    pid: int
    started: str = ""
    boot: str = ""
    pid_ns: str = ""

    @classmethod
    def current(cls) -> ProcessOwner:
        import psutil

        try:
            pid_ns = os.readlink("/proc/self/ns/pid")  # Linux names a process's pid namespace by this link
        except OSError:
            pid_ns = ""
        return cls(socket.gethostname(), os.getpid(), started_after_boot(psutil.Process()), str(psutil.boot_time()),
                   pid_ns)

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

    def restarted_since(self, here: ProcessOwner) -> bool:
        """Whether the machine booted again after this owner started: the current boot time is later than the
        owner's creation (its boot time plus its start after boot). Setting the clock moves the boot time too,
        but a false restart needs it set forward by more than the machine had been up when the owner started."""
        try:
            created = float(self.boot) + int(self.started) / CLOCK_TICKS
            return float(here.boot) > created + 1  # boot times are whole seconds on Linux
        except ValueError:  # a boot id (recorded before boot times were) or nothing: not judged by it
            return False

    def gone(self, here: ProcessOwner) -> str | None:
        """Why this owner has certainly ended, judged from `here` (this process); None when it may still run
        (alive, on another host or in another container: not ours to judge)."""
        import psutil

        if self.host != here.host:
            return None
        if self.restarted_since(here):
            return "the machine restarted since"
        if self.pid_ns != here.pid_ns:
            return None
        if self.pid == here.pid and self.started == here.started:
            return None
        try:
            process = psutil.Process(self.pid)
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return f"process {self.pid} has exited"
            started = started_after_boot(process)
        except psutil.ZombieProcess:
            return f"process {self.pid} has exited"
        except psutil.NoSuchProcess:
            return f"process {self.pid} no longer exists"
        except psutil.AccessDenied:  # alive, another user's, where its start cannot be read
            return None
        if self.started and started != self.started:  # the start tells a reused pid from the owner
            return f"pid {self.pid} now belongs to another process"
        return None


# ---------------------------------------------------------------- threads
# Multiply-adds of one LSTM time step over one batch (parameters x batch rows): the width a second
# thread can split. Below it the hand-off per small matmul costs more than it saves (measured on
# 2 cores: hidden 32 at batch 64, 0.9 M, gains nothing; hidden 32 at batch 1024, 14 M, gains 1.6x).
THREADS_WORK_THRESHOLD = 10_000_000


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_threads(model: nn.Module, batch_rows: int, lookback: int, requested: int | None) -> int:
    """Threads for CPU training: one unless each step is wide enough to split across cores.

    A time step's matmuls are as wide as parameters x batch rows; the `lookback` steps run one
    after another and add nothing a second thread could share. On a busy machine a second
    thread waits on a core someone else holds: the seed config took 45 s with two threads
    against 1.2 s with one. The choice depends on the work and the machine only, never on the
    momentary load, so the same config on the same machine always trains with the same threads
    (float reductions, and so the weights, depend on the thread count); `train.num_threads` pins it.
    """
    if requested is not None:
        return requested
    work = sum(p.numel() for p in model.parameters()) * batch_rows
    return 1 if work < THREADS_WORK_THRESHOLD else usable_cores()


# ---------------------------------------------------------------- denormal floats
# Weight decay pulls weights that the loss no longer moves towards zero, and below float32's
# smallest normal value (1.2e-38) every multiply with them takes a slow microcode path: on a
# 200,000-row series the third epoch took 9x the first, and scoring a trained model 16x.
# Flush-to-zero mode treats such values as 0 at full speed; torch sets it for the calling
# thread only (threads started later inherit it, a running pool does not), so work on other
# threads is covered by zeroing denormal weights explicitly.


def flush_denormal_mode() -> bool:
    import torch

    """Whether the calling thread flushes denormal floats to zero now.

    torch has a setter only; this asks the CPU: in flush mode a denormal operand or result reads
    as 0 (the behaviour `torch.set_flush_denormal` documents). A one-element op runs on this thread.
    """
    probe = torch.tensor([torch.finfo(torch.float32).tiny / 4], dtype=torch.float32)
    return bool((probe * 1.0).item() == 0.0)


@contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush denormal floats to zero on this thread inside the block, then restore the previous mode.

    Yields whether the CPU does it: `torch.set_flush_denormal` returns False and changes nothing
    on CPUs without the mode (it needs x86 with SSE3 or AArch64).
    """
    import torch

    previous = flush_denormal_mode()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported:
            torch.set_flush_denormal(previous)


def has_denormals(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether any floating-point value is non-zero and below its type's smallest normal magnitude."""
    import torch

    return any(
        bool(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).any()) for t in tensors if t.is_floating_point()
    )


def zero_denormals_(tensors: Iterable[torch.Tensor]) -> None:
    """Set denormal values to 0 in place: what flush-to-zero mode would have made of them."""
    import torch

    with torch.no_grad():
        for t in tensors:
            if t.is_floating_point():
                t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny, 0.0)


def without_denormals(model: nn.Module) -> nn.Module:
    """The model itself, or a copy with its denormal weights set to 0 when it has any."""
    if not has_denormals(model.parameters()):
        return model
    clean = copy.deepcopy(model)
    zero_denormals_(clean.parameters())
    return clean


# ---------------------------------------------------------------- interpreter start-up and exit
@contextmanager
def imports_without_gc() -> Iterator[None]:
    """Import the heavy libraries with the cyclic garbage collector paused, then freeze what they made.

    Importing torch, pandas, MLflow and Prefect creates some 900k objects, and the collector
    walked all of them again and again on the way (8 full passes): 4.8 s with the collector,
    3.5 s without, here. `gc.freeze()` then moves those long-lived objects out of every later
    collection, so the run's own garbage is collected as usual, only faster.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def freeze_collector_at_exit() -> None:
    """Freeze the collector's objects at exit, before every library's own exit handler registered later runs.

    Registered first, it runs last: the interpreter's final collections then skip every object still alive (a
    second and more of walking the run's object graph for garbage the process is about to drop anyway; the OS
    reclaims it all). Only the cyclic collector is paused: objects are still freed and closed as their
    references go.
    """
    atexit.register(gc.freeze)


# ---------------------------------------------------------------- a test hook: kill at a stage
# A test hook: kill this process at a named stage boundary, to test what a crash leaves behind.
#
# `PIPELINE_KILL_AT=<stage>` in the environment makes `kill_point(stage)` send SIGKILL to its own
# process there: nothing runs after it (no `finally`, no atexit), as with `kill -9` or the OOM
# killer. Unset (always, outside tests) it does nothing. The training flow's stages:
#
# - `training`: at the end of the first epoch (the run is RUNNING, nothing logged as a model);
# - `model-logging`: right after the pyfunc is logged, before its scores;
# - `registration`: right after the model version is created, before its aliases move;
# - `after-alias-move`: right after registration and the gate's alias moves, before the run's tags.
KILL_ENV = "PIPELINE_KILL_AT"
STAGES = ("training", "model-logging", "registration", "after-alias-move")


def kill_point(stage: str) -> None:
    """SIGKILL this process when `PIPELINE_KILL_AT` names `stage`; otherwise nothing."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
