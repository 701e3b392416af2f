"""A test hook: kill this process at a named stage boundary, to test what a crash leaves behind.

`PIPELINE_KILL_AT=<stage>` in the environment makes `kill_point(stage)` send SIGKILL to its own
process there: nothing runs after it (no `finally`, no atexit), as with `kill -9` or the OOM
killer. Unset (always, outside tests) it does nothing. The training flow's stages:

- `training`: at the end of the first epoch (the run is RUNNING, nothing logged as a model);
- `model-logging`: right after the pyfunc is logged, before its scores;
- `registration`: right after the model version is created, before its aliases move;
- `after-alias-move`: right after registration and the gate's alias moves, before the run's tags.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "PIPELINE_KILL_AT"
STAGES = ("training", "model-logging", "registration", "after-alias-move")


def kill_point(stage: str) -> None:
    """SIGKILL this process when `PIPELINE_KILL_AT` names `stage`; otherwise nothing."""
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
