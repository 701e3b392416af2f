"""The suite's check that tests leave no files in the checkout (tests/leftovers.py), on a throwaway repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run_suite(repo: Path, body: str) -> subprocess.CompletedProcess:
    """`pytest` with the check, in a git repository holding one test whose body is `body`."""
    (repo / "test_writes.py").write_text(f"from pathlib import Path\n\n\ndef test_writes():\n    {body}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.leftovers",
                           "test_writes.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / ".gitignore").write_text("ignored/\n__pycache__/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "mine.txt").write_text("untracked before the run: not the tests' doing\n")
    return repo


def test_new_untracked_files_fail_the_run_and_are_named(repo: Path):
    done = run_suite(repo, "Path('mlartifacts/0/a.txt').parent.mkdir(parents=True); "
                           "Path('mlartifacts/0/a.txt').write_text('x'); Path('left.txt').write_text('x')")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "the tests left 2 new untracked file(s) in the checkout" in done.stdout
    assert "left.txt\nmlartifacts/0/a.txt" in done.stdout
    assert "mine.txt" not in done.stdout


def test_ignored_and_earlier_files_pass(repo: Path):
    done = run_suite(repo, "Path('ignored').mkdir(); Path('ignored/a.txt').write_text('x')")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left" not in done.stdout
