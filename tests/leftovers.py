"""A run of the suite that leaves new untracked files in the checkout fails, naming them.

Every test writes under its temporary directory; a server or command started from the project
root (an `mlflow server` without `--artifacts-destination` makes `./mlartifacts`) shows up here.
Files .gitignore ignores are not counted. tests/conftest.py imports the two hooks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SHOWN = 20
BEFORE = pytest.StashKey[set[str] | None]()


def untracked(root: Path) -> set[str] | None:
    """Untracked, not ignored files under `root`'s git work tree; None outside one (or without git)."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "-z"], cwd=root,
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return {entry[3:] for entry in done.stdout.split("\0") if entry.startswith("?? ")}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controlling process only (pytest-xdist)
        session.config.stash[BEFORE] = untracked(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(BEFORE, None)
    after = untracked(session.config.rootpath) if before is not None else None
    if before is None or after is None or not (new := sorted(after - before)):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"the tests left {len(new)} new untracked file(s) in the checkout {session.config.rootpath} (every test "
             "must write under its temporary directory):", *new[:SHOWN]]
    if len(new) > SHOWN:
        lines.append(f"... and {len(new) - SHOWN} more")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "files left in the checkout", red=True)
        reporter.write_line("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

