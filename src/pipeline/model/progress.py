"""Training progress for people: a bar on a terminal, a few plain lines in a log, or nothing.

An `EpochProgress` is an `on_epoch_end` callback (epoch, train loss, validation loss), so the
training loop stays free of any UI. The mode comes from the environment variable
`PIPELINE_PROGRESS` (`bar`, `lines` or `off`; unset means `off`), which the CLI sets from
`-q` and from whether stderr is a terminal; the flows run in the CLI's process and read it when
they build the callback. Progress goes to stderr, apart from the results on stdout.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Any, Literal

ENV = "PIPELINE_PROGRESS"
Mode = Literal["bar", "lines", "off"]
MODES: tuple[Mode, ...] = ("bar", "lines", "off")
MAX_LINES = 10  # plain-line mode: at most about this many lines per training


def get_mode() -> Mode:
    """The progress mode from `PIPELINE_PROGRESS`; `off` when unset or unknown."""
    value = os.environ.get(ENV, "off").strip().lower()
    return value if value in MODES else "off"  # type: ignore[return-value]


def set_mode(mode: Mode) -> None:
    """Choose the progress mode for flows run later in this process (and its children)."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    os.environ[ENV] = mode


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", None)) and sys.stderr.isatty()


def line_every(total: int, max_lines: int = MAX_LINES) -> int:
    """Print one line every this many epochs, so `total` epochs print at most `max_lines` lines."""
    return max(1, math.ceil(total / max(1, max_lines)))


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


class EpochProgress:
    """An `on_epoch_end` callback that shows epoch, train loss and validation loss of one training.

    `label` names the training ("training", "fold 2/5"), `total` is the most epochs it may run
    (early stopping ends sooner: `close()` then says where it stopped). Use it as a context
    manager, or call `close()`, so a bar is taken down before the results are printed.
    """

    def __init__(self, label: str, total: int, mode: Mode | None = None, stream: IO[str] | None = None,
                 max_lines: int = MAX_LINES) -> None:
        self.label, self.total = label, total
        self.mode: Mode = mode or get_mode()
        self.stream = stream
        self.every = line_every(total, max_lines)
        self.last: tuple[int, float, float | None] | None = None
        self.printed_epoch = -1
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _out(self) -> IO[str]:
        return self.stream or sys.stderr

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("epoch"), MofNCompleteColumn(),
            TextColumn("train loss {task.fields[train]}  val loss {task.fields[val]}"), TimeElapsedColumn(),
            console=Console(file=self._out()), transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.label, total=self.total, train="n/a", val="n/a")

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        """`epoch` counts from 0, as `training.fit` passes it."""
        self.last = (epoch, train_loss, val_loss)
        if self.mode == "bar":
            if self._bar is None:
                self._start_bar()
            self._bar.update(self._task, completed=epoch + 1, train=_loss(train_loss), val=_loss(val_loss))
        elif self.mode == "lines" and (epoch + 1) % self.every == 0:
            self._line(epoch, train_loss, val_loss)

    def _line(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        self.printed_epoch = epoch
        out = self._out()
        out.write(f"{self.label}: epoch {epoch + 1}/{self.total}  train loss {_loss(train_loss)}  "
                  f"val loss {_loss(val_loss)}\n")
        out.flush()

    def close(self) -> None:
        """Take the bar down; in line mode, print the last epoch if it was not printed (an early stop)."""
        if self._bar is not None:
            if self.last is not None and self.last[0] + 1 < self.total:  # early stopping: say so beside the bar
                self._bar.update(self._task, description=f"{self.label} (stopped early)")
            self._bar.stop()
            self._bar = None
        elif self.mode == "lines" and self.last is not None and self.last[0] != self.printed_epoch:
            self._line(*self.last)


def chain(*callbacks: Any) -> Any:
    """One `on_epoch_end` callback that calls each of `callbacks` in turn."""
    def on_epoch_end(epoch: int, train_loss: float, val_loss: float | None) -> None:
        for callback in callbacks:
            callback(epoch, train_loss, val_loss)
    return on_epoch_end
