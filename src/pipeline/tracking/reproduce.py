"""What a run records so it can be repeated, and the check that a repeat matches it.

A training run records its resolved config (`config/resolved.yaml`), its data source and
digest (`data_source`, `data_digest`), the git commit and whether the tree was dirty
(`git_commit`, `git_dirty`), library versions (`version.*`), its thread count
(`train_threads`) and a digest of the trained weights (`weights_digest`, `network.weights_digest`).
`reproduce()` checks the data first, re-runs through a caller-supplied function (the CLI passes
the training flow the recorded config), then compares metric by metric and the weights, bit for
bit. It reads and tags runs through `pipeline.tracking.store`; it imports no MLflow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.config.settings import PipelineConfig, parse_config
from pipeline.data.reading import load_prices
from pipeline.errors import DataError, PipelineError
from pipeline.tracking import store

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "config/resolved.yaml"
# Wall-clock figures never repeat; they are not part of a run's result.
NOT_COMPARED_PREFIXES = ("time_",)


class DataChangedError(DataError):
    """The data at the recorded source no longer has the recorded digest."""


@dataclass(frozen=True)
class RecordedRun:
    """What a finished training run recorded about itself."""

    run_id: str
    config: PipelineConfig
    source: str
    digest: str
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True)
class MetricCheck:
    name: str
    recorded: float
    reproduced: float | None

    @property
    def match(self) -> bool:
        if self.reproduced is None:
            return False
        if math.isnan(self.recorded) and math.isnan(self.reproduced):
            return True
        return self.recorded == self.reproduced


@dataclass
class ReproduceReport:
    run_id: str
    new_run_id: str
    checks: list[MetricCheck]
    weights: tuple[str | None, str | None] = (None, None)
    notes: list[str] = field(default_factory=list)

    @property
    def weights_match(self) -> bool | None:
        recorded, reproduced = self.weights
        return None if recorded is None else recorded == reproduced

    @property
    def ok(self) -> bool:
        return all(c.match for c in self.checks) and self.weights_match is not False

    def lines(self) -> list[str]:
        out = [f"{'metric':<34}{'recorded':>22}{'reproduced':>22}  result"]
        for c in self.checks:
            rep = "missing" if c.reproduced is None else repr(c.reproduced)
            out.append(f"{c.name:<34}{c.recorded!r:>22}{rep:>22}  {'match' if c.match else 'DIFFERS'}")
        recorded, reproduced = self.weights
        if recorded is None:
            out.append("weights: the run recorded no weights_digest; not compared")
        else:
            out.append(f"weights sha256 {recorded} vs {reproduced}: {'match' if self.weights_match else 'DIFFER'}")
        differing = sum(not c.match for c in self.checks)
        out.append(f"{len(self.checks) - differing} of {len(self.checks)} metrics match; "
                   + ("REPRODUCED" if self.ok else "NOT REPRODUCED"))
        return out


def load_recorded(client: Any, run_id: str) -> RecordedRun:
    """The config, data source and digest, metrics and tags a training run recorded."""
    run = store.get_run(client, run_id)
    tags = run.tags
    if tags.get("run_type") == "backtest" or store.PARENT_RUN_TAG in tags:
        raise PipelineError(f"run {run_id} is a backtest run; `pipeline reproduce` repeats training runs")
    if run.status != "FINISHED":
        raise PipelineError(f"run {run_id} is {run.status}, not FINISHED: there is no result to reproduce")
    try:
        text = store.download_text(client, run_id, RESOLVED_CONFIG)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
        raise PipelineError(f"run {run_id} has no {RESOLVED_CONFIG} artifact to reproduce from ({exc})") from None
    config = parse_config(yaml.safe_load(text) or {}, origin=f"run {run_id} {RESOLVED_CONFIG}")
    digest = tags.get("data_digest")
    if not digest:
        raise PipelineError(f"run {run_id} recorded no data_digest tag; cannot check its data")
    return RecordedRun(run_id=run_id, config=config, source=tags.get("data_source", config.data.source),
                       digest=digest, metrics=run.metrics, tags=tags)


def check_data(recorded: RecordedRun, source: str | None = None) -> str:
    """The digest of the data at the recorded source (or `source`); DataChangedError when it differs."""
    where = source or recorded.source
    digest = load_prices(where).digest
    if digest != recorded.digest:
        raise DataChangedError(
            f"the data changed since run {recorded.run_id}: {where} now has sha256 {digest}, "
            f"the run recorded {recorded.digest}; its results cannot be reproduced from this data"
        )
    return digest


def replay_config(recorded: RecordedRun, source: str | None = None) -> PipelineConfig:
    """The recorded config, with the recorded thread count pinned and the registry left alone."""
    train: dict[str, Any] = {}
    threads = recorded.metrics.get("train_threads")
    if recorded.config.train.num_threads is None and threads is not None:
        train["num_threads"] = int(threads)
    overrides: dict[str, dict[str, Any]] = {"registry": {"enabled": False}}
    if train:
        overrides["train"] = train
    if source:
        overrides["data"] = {"source": source}
    return recorded.config.with_overrides(**overrides)


def compare_metrics(recorded: Mapping[str, float], reproduced: Mapping[str, float]) -> list[MetricCheck]:
    """Every recorded metric but wall-clock timings, against the reproduction, exactly."""
    return [MetricCheck(name, float(value), None if name not in reproduced else float(reproduced[name]))
            for name, value in sorted(recorded.items()) if not name.startswith(NOT_COMPARED_PREFIXES)]


def environment_notes(recorded: RecordedRun, current: Mapping[str, str]) -> list[str]:
    """Differences in code and library versions that would explain a mismatch."""
    notes = []
    commit, dirty = recorded.tags.get("git_commit"), recorded.tags.get("git_dirty")
    if commit and commit != current.get("git_commit"):
        notes.append(f"code: the run was made at commit {commit}, this is {current.get('git_commit')}")
    if dirty == "true":
        notes.append("code: the run was made from a working tree with uncommitted changes")
    if current.get("git_dirty") == "true":
        notes.append("code: this working tree has uncommitted changes")
    for key, value in sorted(recorded.tags.items()):
        if key.startswith("version.") and key in current and current[key] != value:
            notes.append(f"{key[8:]}: the run used {value}, this environment has {current[key]}")
    return notes


def reproduce(client: Any, run_id: str, rerun: Callable[[PipelineConfig], str], source: str | None = None,
              current_env: Mapping[str, str] | None = None) -> ReproduceReport:
    """Check the data, re-run with `rerun(config) -> new run id`, and compare the results.

    Raises DataChangedError (naming both digests) before re-running when the data changed.
    """
    recorded = load_recorded(client, run_id)
    check_data(recorded, source)
    config = replay_config(recorded, source)
    log.info("reproducing run %s from %s (sha256 %s)", run_id, config.data.source, recorded.digest)
    new_run_id = rerun(config)
    new = store.get_run(client, new_run_id)
    checks = compare_metrics(recorded.metrics, new.metrics)
    weights = (recorded.tags.get("weights_digest"), new.tags.get("weights_digest"))
    notes = environment_notes(recorded, current_env or {})
    report = ReproduceReport(run_id=run_id, new_run_id=new_run_id, checks=checks, weights=weights, notes=notes)
    store.log_params_and_tags(client, new_run_id, {}, {
        "reproduces": run_id, "reproduce_result": "match" if report.ok else "mismatch"})
    return report
