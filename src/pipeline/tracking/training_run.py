"""What a training run decides and keeps around its stages: plain functions the flow calls.

Whether there is anything to do, the run's name, stage timings, the local copy of a model that
could not be tracked, the inputs of the champion's re-scoring and the summary a run returns.
No Prefect or MLflow import: the flow wires these to its tasks and to `pipeline.tracking.store`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.config.settings import PipelineConfig
from pipeline.errors import TrackingError
from pipeline.runtime import process_age

if TYPE_CHECKING:
    from pipeline.evaluation.intervals import IntervalState
    from pipeline.evaluation.metrics import SplitScores
    from pipeline.features.windows import Preprocessor
    from pipeline.model.training import TrainResult
    from pipeline.tracking.store import RunRecord

# The test metrics copied onto a registered version as tags, for the registry's own pages.
VERSION_METRIC_TAGS = ("test_rmse_ratio", "test_mae", "test_mape", "test_direction_acc")


@dataclass
class TrainingSummary:
    """What `pipeline train` prints: the run, the metrics next to the baseline, the registry outcome."""

    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    model_uri: str | None = None
    model_id: str | None = None  # the logged model's id: a tracking server needs it to register a version
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # nothing to do: same data and config as the run above, which registered `version`
    test_forecasts: pd.DataFrame | None = None  # the in-process model's test forecasts (date, step, forecast)
    series_scores: pd.DataFrame | None = None  # many series: the test scores per series (steps.PanelScores.table)
    gate: tuple[str, str] = ("rmse", "naive")  # the metric and baseline the gate and the headline hold the model to


def run_name(config_name: str, kind: str = "", data_source: str | None = None) -> str:
    """`<config>-[<data>-][<kind>-]<local date>-<time>`, the MLflow run name: which config, on which
    data (the file's name without its folder or suffix), when."""
    data = Path(data_source.split("?")[0].rstrip("/")).stem if data_source else ""
    return "-".join(p for p in (config_name, data, kind, time.strftime("%Y%m%d-%H%M%S")) if p)


# ---------------------------------------------------------------- nothing to do
def nothing_to_do(cfg: PipelineConfig, data_digest: str, config_digest: str, previous: RunRecord | None) -> str | None:
    """Why this run has nothing to do, or None: the last complete run of this config saw the same data.

    `previous` is the newest complete run with this config digest (`store.last_finished_run`:
    FINISHED and tagged complete). With registration on it must also have registered a version.
    """
    if previous is None or previous.tags.get("data_digest") != data_digest:
        return None
    version = previous.tags.get("registered_version")
    if cfg.registry.enabled and not version:
        return None
    return (f"The data digest `{data_digest}` and the resolved config digest `{config_digest}` are the same as "
            f"those of MLflow run `{previous.run_id}`, the last successful run of this config"
            + (f", which registered {cfg.registry.model_name} v{version}" if version else "")
            + ". Nothing was trained or registered; retrain anyway with `--force` (CLI) or `force=true` (flow parameter).")


def skipped_summary(cfg: PipelineConfig, experiment_id: str, previous: RunRecord, detail: str) -> TrainingSummary:
    """The summary of a run with nothing to do: the previous run's metrics and registered version."""
    version = previous.tags.get("registered_version")
    return TrainingSummary(run_id=previous.run_id, experiment_id=experiment_id, metrics=dict(previous.metrics),
                           model_name=cfg.registry.model_name if version else None, version=version,
                           alias=previous.tags.get("registered_alias"), reason=detail.replace("`", ""), skipped=True)


# ---------------------------------------------------------------- timings
@dataclass
class Timings:
    """Wall time per stage, in seconds; `metrics()` names them `time_<stage>_s` for MLflow."""

    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def since_process_start(cls) -> Timings:
        """Timings that start with `startup`: process start to now (interpreter, imports, Prefect)."""
        age = process_age()
        return cls({"startup": age} if age is not None else {})

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"time_{k}_s": v for k, v in self.seconds.items()}


# ---------------------------------------------------------------- a model that could not be tracked
@dataclass
class Trained:
    """What training produced so far, kept for `keep_trained_model` if tracking fails later."""

    pre: Preprocessor | None = None
    result: TrainResult | None = None
    scores: dict[str, float] = field(default_factory=dict)
    intervals: IntervalState | None = None
    config: PipelineConfig | None = None  # the config as settled after training (`model.theta_weight`)
    logged: str | None = None  # the logged model's URI, once MLflow has it: nothing to save locally then


def keep_trained_model(exc: BaseException, cfg: PipelineConfig, run_id: str, trained: Trained) -> BaseException:
    """A tracking failure after training: save the model locally and say where, in the error itself."""
    from pipeline.serving.forecast import ForecastBundle
    from pipeline.tracking import store

    if not isinstance(exc, TrackingError) or trained.result is None or trained.pre is None:
        return exc
    if trained.logged:
        return TrackingError(f"{exc}\nThe trained model itself was logged to MLflow before the failure "
                             f"({trained.logged}); nothing was saved locally.")
    cfg = trained.config or cfg
    bundle = ForecastBundle(checkpoint=trained.result.model.checkpoint(), preprocessor=trained.pre, config=cfg,
                            intervals=trained.intervals)
    try:
        path = store.save_unlogged(bundle, run_id, str(exc), trained.scores)
    except OSError as err:
        return TrackingError(f"{exc}\nThe trained model could not be saved locally either ({err}).")
    return TrackingError(f"{exc}\nThe trained model is not lost: it is saved at {path} "
                         "(README.txt beside it says how to load it).")


@contextmanager
def kept_on_tracking_failure(cfg: PipelineConfig, run_id: str) -> Iterator[Trained]:
    """Fill the yielded `Trained` as training goes; a TrackingError leaving the block is raised
    again with where the model was saved locally (nothing is saved before training ends)."""
    trained = Trained()
    try:
        yield trained
    except TrackingError as exc:
        error = keep_trained_model(exc, cfg, run_id, trained)
        if error is exc:
            raise
        raise error from exc


# ---------------------------------------------------------------- registration
def version_tags(data_digest: str, metrics: Mapping[str, float], extra: Mapping[str, str]) -> dict[str, str]:
    """The tags of a registered version: the data digest, the headline test metrics, the Prefect links."""
    shown = {k: f"{metrics[k]:.6g}" for k in VERSION_METRIC_TAGS if k in metrics}
    return {"data_digest": data_digest, **shown, **extra}


def registered_by(run_id: str, flow_run_id: str | None) -> str:
    """Who registered a version, for the alias history."""
    where = f"Prefect flow run {flow_run_id}, MLflow run {run_id}" if flow_run_id else f"MLflow run {run_id}"
    return f"training flow ({where})"


def finished_line(run_id: str, test: SplitScores) -> str:
    """The log line of a finished run: its test RMSE against persistence."""
    return (f"run {run_id} finished: test RMSE {test.model['rmse']:.6g} vs persistence "
            f"{test.baselines['naive']['rmse']:.6g}")
