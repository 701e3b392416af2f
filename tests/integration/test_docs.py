"""The README and docs/ as a new user reads them: every command marked runnable works as written.

A fenced block opened with ```` ```bash runnable ```` is run line by line, in page order, in a
fresh temporary copy of the project for each page (tracked and new files, modification times kept, the project's
`.venv` linked in), with no MLflow or Prefect variables set and a home of its own. A block opened
with ```` ```bash runnable server=URL ```` starts a server: it runs in the background until URL
answers, and is stopped when the page is done.

A page's independent sections may name a session (```` ```bash runnable session=NAME ````): each session of a
page runs in its own fresh copy, in page order, as its own test (so pytest-xdist runs them side by side). A block
that repeats commands another page already runs says so (```` ```bash runnable covered-by=README.md ````): it is
not run again, and a test fails unless its commands appear, in the same order, in one session of that page.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.processes import stop_groups

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```bash runnable(?P<attrs>(?: [a-z-]+=\S+)*)\s*\n(?P<body>.*?)^```\s*$", re.M | re.S)
ATTRIBUTES = ("server", "session", "covered-by")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT_S = 600
SERVER_TIMEOUT_S = 180


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    body: str
    server: str | None = None
    session: str = "main"
    covered_by: str | None = None

    def commands(self) -> list[str]:
        return [c for c in self.body.splitlines() if c.strip() and not c.lstrip().startswith("#")]


def runnable_blocks(text: str, page: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        attrs = dict(pair.split("=", 1) for pair in m.group("attrs").split())
        unknown = set(attrs) - set(ATTRIBUTES)
        assert not unknown, f"{page} line {line}: unknown runnable attribute(s) {sorted(unknown)} (known: {ATTRIBUTES})"
        blocks.append(Block(page, line, m.group("body"), attrs.get("server"), attrs.get("session", "main"),
                            attrs.get("covered-by")))
    return blocks


def page_blocks(page: Path) -> list[Block]:
    return runnable_blocks(page.read_text(encoding="utf-8"), page.name)


def sessions(pages: list[Path]) -> list[tuple[Path, str]]:
    """Every (page, session) with a block to run, in page order."""
    found = [(page, b.session) for page in pages for b in page_blocks(page) if not b.covered_by]
    return list(dict.fromkeys(found))


def test_the_fence_grammar() -> None:
    text = ("intro\n```bash runnable\nmake run\n```\n```bash\nnot me\n```\n```bash runnable server=http://x/y\nmake ui\n```\n"
            "```bash runnable session=other\nmake seed\n```\n```bash runnable covered-by=README.md\nmake run\n```\n")
    blocks = runnable_blocks(text, "p")
    assert [(b.line, b.body, b.server, b.session, b.covered_by) for b in blocks] == [
        (2, "make run\n", None, "main", None), (8, "make ui\n", "http://x/y", "main", None),
        (11, "make seed\n", None, "other", None), (14, "make run\n", None, "main", "README.md")]
    with pytest.raises(AssertionError, match="unknown runnable attribute"):
        runnable_blocks("```bash runnable sesion=x\nmake run\n```\n", "p")


def contains_in_order(commands: list[str], within: list[str]) -> bool:
    """`commands` appear in `within` as one unbroken run."""
    return any(within[i:i + len(commands)] == commands for i in range(len(within) - len(commands) + 1))


def test_a_covered_block_repeats_commands_its_page_runs() -> None:
    """A block marked covered-by is not run; its commands, in order, must be one session's of the page it names
    (so the two pages cannot drift apart)."""
    assert contains_in_order(["b", "c"], ["a", "b", "c"]) and not contains_in_order(["c", "b"], ["a", "b", "c"])
    by_name = {page.name: page for page in PAGES}
    covered = [b for page in PAGES for b in page_blocks(page) if b.covered_by]
    for block in covered:
        where = f"{block.page} line {block.line}"
        assert block.covered_by in by_name, f"{where}: covered-by names no page ({block.covered_by})"
        runs = [b for b in page_blocks(by_name[block.covered_by]) if not b.covered_by]
        per_session = {s: [c for b in runs if b.session == s and not b.server for c in b.commands()]
                       for s in {b.session for b in runs}}
        assert any(contains_in_order(block.commands(), cmds) for cmds in per_session.values()), \
            f"{where}: its commands are not run, in this order, by any session of {block.covered_by}"


def project_copy(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files, with their modification times, and the venv linked."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    stamp = ROOT / ".venv" / ".installed"
    if stamp.exists():  # `make` in the copy must use the linked venv as it is, never reinstall into it
        before = stamp.stat().st_mtime - 1
        for name in ("pyproject.toml", "requirements.lock"):
            os.utime(dest / name, (before, before))
    return dest


def test_each_page_starts_from_a_fresh_copy(tmp_path: Path) -> None:
    """A page's blocks run in order on a copy with no state of earlier runs (a first run, as a reader's): the
    checkout's own store, models and outputs (ignored files) stay behind, so an order fault such as asking for
    an alias the first run never sets fails its page."""
    work = project_copy(tmp_path / "project")
    assert (work / "README.md").exists() and (work / "configs" / "default.yaml").exists()
    for state in ("mlflow.db", "mlruns", "forecasts.csv", ".prefect"):
        assert not (work / state).exists(), f"{state} of the checkout leaked into the page's copy"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "PREFECT_", "PIPELINE_", "PYTEST", "MAKE")) and k != "PYTHONPATH"}
    env.update({"HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})  # no network here
    return env


def answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    return False


@pytest.mark.parametrize(("page", "session"), sessions(PAGES),
                         ids=[f"{page.name}:{session}" for page, session in sessions(PAGES)])
@pytest.mark.slow
def test_runnable_commands_work_as_written(page: Path, session: str, tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "pipeline").exists():
        pytest.skip("the project's .venv is not installed here (run `make setup`)")
    work = project_copy(tmp_path / "project")
    (tmp_path / "home").mkdir()
    env = clean_env(tmp_path / "home")
    servers: list[subprocess.Popen] = []
    try:
        for block in [b for b in page_blocks(page) if b.session == session and not b.covered_by]:
            where = f"{block.page} line {block.line}"
            if block.server:
                log = (tmp_path / f"server-{block.line}.log").open("w")
                proc = subprocess.Popen(["bash", "-c", block.body], cwd=work, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                servers.append(proc)
                deadline = time.monotonic() + SERVER_TIMEOUT_S
                while not answers(block.server):
                    assert proc.poll() is None, f"{where}: the server exited {proc.returncode}:\n" + \
                        (tmp_path / f"server-{block.line}.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"{where}: {block.server} did not answer in {SERVER_TIMEOUT_S} s"
                    time.sleep(0.5)
                continue
            for command in block.commands():
                done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
                assert done.returncode == 0, (f"{where}: `{command}` exited {done.returncode}\n"
                                              f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
                assert "Traceback" not in done.stderr, f"{where}: `{command}` printed a traceback:\n{done.stderr[-3000:]}"
    finally:
        stop_groups(servers, timeout=20)
