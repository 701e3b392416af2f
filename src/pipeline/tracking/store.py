"""Everything MLflow-tracking: where the store is, runs, params, metrics, artifacts, the model.

The tracking URI is resolved inside functions (never at import) from the config, then
$MLFLOW_TRACKING_URI, then MLflow's own default: a SQLite store `./mlflow.db` with artifacts under
`./mlruns/`, so `mlflow ui`, `mlflow models serve` and `mlflow.pyfunc.load_model` run from the
project root with nothing set see what the pipeline trained.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import yaml

from pipeline.config.settings import PipelineConfig
from pipeline.errors import PipelineError, TrackingError

log = logging.getLogger(__name__)

LOCAL_DIR = Path("mlruns")  # artifacts of the local store (MLflow's default folder)
LOCAL_DB = Path("mlflow.db")  # MLflow's default tracking database, in the working directory
MAX_BATCH = 1000  # MLflow accepts at most 1000 metrics and 100 params per log_batch call
# Requirements of the logged model, written out so MLflow need not load the model to infer them.
MODEL_REQUIREMENTS = ("torch", "mlflow", "pandas", "numpy", "pandera", "pydantic", "pyyaml", "cloudpickle", "psutil",
                      "holidays", "scipy")  # scipy: the Theta part (pipeline.model.theta)


def default_tracking_uri() -> str:
    return f"sqlite:///{LOCAL_DB.resolve()}"


def resolve_tracking_uri(cfg: PipelineConfig | None = None) -> str:
    return (cfg.tracking.uri if cfg and cfg.tracking.uri else None) or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


# Database schemes of MLflow's SQL stores, as its docs list them for `--backend-store-uri`.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def import_mlflow(uri: str | None = None) -> None:
    """Import the MLflow modules that a training run against `uri` loads anyway.

    The CLI calls this during its start-up, while imports run without the garbage collector
    (0.2 s cheaper than importing them on first use, and later collections skip them). Only a
    head start: should a later MLflow move its SQL store modules, they load on first use.
    """
    import mlflow.pyfunc  # noqa: F401

    if urlparse(uri or resolve_tracking_uri()).scheme.split("+")[0] in SQL_SCHEMES:
        with suppress(ImportError):
            import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def get_client(cfg: PipelineConfig | None = None) -> Any:
    """An MlflowClient for the resolved store; the local store's folder is created on demand."""
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(cfg)
    if is_local_sqlite(uri):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        bound_http_retries()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    if not is_local_sqlite(uri):
        return MlflowClient(tracking_uri=uri)
    with store_lock(uri):  # two processes must not create (migrate) a fresh database at once
        client = MlflowClient(tracking_uri=uri)
        retry(lambda: client.search_registered_models(max_results=1), "open the store", uri)
    return client


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store, held across processes (a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    if fcntl is None or not is_local_sqlite(uri):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///") + ".lock")
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# Our own retry policy wraps every tracking call; read at call time so a run (or a test) can bound it.
ATTEMPTS_ENV, BACKOFF_ENV = "PIPELINE_TRACKING_ATTEMPTS", "PIPELINE_TRACKING_BACKOFF_S"
DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_S = 4, 0.5
# MLflow's HTTP client retries each request on its own, 7 times with a factor-2 backoff by default:
# about 4 minutes per call against a dead server. Unless the user set them, keep its share small.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_UNREACHABLE = ("Max retries exceeded", "Connection refused", "NewConnectionError", "Failed to establish",
                "Name or service not known", "timed out")


def bound_http_retries() -> None:
    """Bound MLflow's per-request HTTP retries (only where the user has not set them)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def retry_policy() -> tuple[int, float]:
    """(attempts, first backoff in seconds) from the environment, or the defaults."""
    try:
        attempts = max(1, int(os.environ.get(ATTEMPTS_ENV, DEFAULT_ATTEMPTS)))
        backoff = max(0.0, float(os.environ.get(BACKOFF_ENV, DEFAULT_BACKOFF_S)))
    except ValueError:
        return DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_S
    return attempts, backoff


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


def retry(call: Any, what: str, uri: str, attempts: int | None = None, base_delay: float | None = None) -> Any:
    """Run `call()`, retrying with exponential backoff on errors reaching the tracking store.

    After the last attempt, a TrackingError names the URI, what failed and for how long.
    """
    from mlflow.exceptions import MlflowException

    default_attempts, default_delay = retry_policy()
    attempts = attempts or default_attempts
    base_delay = default_delay if base_delay is None else base_delay
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (MlflowException, OSError) as exc:
            transient = not isinstance(exc, MlflowException) or exc.error_code in {
                "TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
            } or "database is locked" in str(exc)
            if not transient or attempt == attempts:
                unreachable = any(mark in str(exc) for mark in _UNREACHABLE)
                problem = "cannot reach the tracking server" if unreachable else _short(exc)
                raise TrackingError(
                    f"MLflow tracking at {uri}: {what} failed after {attempt} attempt(s) in "
                    f"{time.monotonic() - started:.1f}s: {problem}"
                    + (f" ({_short(exc)}). Check that the server is up and that MLFLOW_TRACKING_URI "
                       "(or tracking.uri in the config) names it." if unreachable else "")
                ) from exc
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("MLflow %s failed (%s); retry %d/%d in %.1fs", what, _short(exc), attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def ensure_experiment(client: Any, name: str) -> str:
    """The experiment's id, created if needed; on a local store its artifacts go to mlruns/ beside the database."""
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else resolve_tracking_uri()
    experiment = retry(lambda: client.get_experiment_by_name(name), "get experiment", uri)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if is_local_sqlite(uri):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
        location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_DIR.name / slug).resolve().as_uri()
    try:
        return retry(lambda: client.create_experiment(name, artifact_location=location), "create experiment", uri)
    except TrackingError:
        # Two first runs at once: the other process created it between our read and our create.
        experiment = retry(lambda: client.get_experiment_by_name(name), "get experiment", uri)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_experiment(client: Any, name: str) -> str:
    """`ensure_experiment`, then end FAILED the runs of the experiment that a process of this host left RUNNING
    when it died (`fail_orphaned_runs`): what a command does first with the store."""
    experiment_id = ensure_experiment(client, name)
    fail_orphaned_runs(client, experiment_id)
    return experiment_id


ORPHANED_TAG = "pipeline.orphaned"  # on a run ended FAILED by a later command: why its own process could not


def fail_orphaned_runs(client: Any, experiment_id: str) -> list[str]:
    """End FAILED each RUNNING run of the experiment whose owner (`runtime.ProcessOwner`, recorded when the run
    started) ran on this host and has certainly ended; their ids. One line on the log says which.

    A run whose owner lives, runs on another host or in another container, or recorded no owner is
    left alone. Never raises: a store that cannot be searched now is searched by the next command.
    """
    from pipeline.runtime import ProcessOwner

    here = ProcessOwner.current()
    try:
        running = retry(lambda: client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000),
                        "search running runs", client.tracking_uri)
    except TrackingError as exc:
        log.warning("could not look for runs left RUNNING by dead processes: %s", exc)
        return []
    ended: dict[str, str] = {}  # run id -> what the log line says of it
    for run in running:
        owner = ProcessOwner.from_tags(run.data.tags)
        why = owner.gone(here) if owner is not None else None
        if why is None:
            continue
        note = (f"its process {owner.label} ended without ending it ({why}: kill -9, out of memory or a restart); "
                f"marked FAILED by {here.label} at {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
        try:
            log_params_and_tags(client, run.info.run_id, {}, {ORPHANED_TAG: why, "failure": note[:500]})
            end_run(client, run.info.run_id, "FAILED")
        except TrackingError as exc:
            log.warning("could not mark run %s FAILED: %s", run.info.run_id, exc)
            continue
        ended[run.info.run_id] = f"{run.info.run_id} ({run.data.tags.get('mlflow.runName', '')}, {owner.label})"
    if ended:
        log.warning("marked %d run(s) FAILED that a process on this host left RUNNING when it died: %s",
                    len(ended), "; ".join(ended.values()))
    return list(ended)


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "prefect", "mlflow", "pandas", "numpy", "scipy", "pandera"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def start_run(client: Any, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    run = retry(lambda: client.create_run(experiment_id, run_name=run_name, tags={MLFLOW_RUN_NAME: run_name, **tags}),
                "create run", client.tracking_uri)
    return run.info.run_id


def end_run(client: Any, run_id: str, status: str) -> None:
    retry(lambda: client.set_terminated(run_id, status), f"mark run {status}", client.tracking_uri)


def last_finished_run(client: Any, experiment_id: str, tags: dict[str, str]) -> RunRecord | None:
    """The newest complete run of the experiment (FINISHED, with `pipeline.complete=true`, see
    `tracked_run`) whose tags have these (plain word) values, or None."""
    for key, value in tags.items():
        if not (key.replace("_", "").isalnum() and value.replace("-", "").replace("_", "").isalnum()):
            raise ValueError(f"tag filter {key}={value!r}: only letters, digits, '_' and '-' are supported")
    query = " and ".join([*(f"tags.{k} = '{v}'" for k, v in tags.items()), f"tags.`{COMPLETE_TAG}` = 'true'",
                          "attributes.status = 'FINISHED'"])
    runs = retry(lambda: client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]),
                 "search runs", client.tracking_uri)
    return _record(runs[0]) if runs else None


def log_params_and_tags(client: Any, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retry(lambda: client.log_batch(run_id, params=items[i:i + 100], synchronous=True), "log params", client.tracking_uri)
    if tags:
        tag_items = [RunTag(k, str(v)) for k, v in tags.items()]
        retry(lambda: client.log_batch(run_id, tags=tag_items, synchronous=True), "log tags", client.tracking_uri)


def log_metrics(client: Any, run_id: str, values: dict[str, float], step: int = 0, model_id: str | None = None,
                dataset: tuple[str, str] | None = None) -> None:
    """Many metrics in one round trip (non-finite values are skipped: MLflow rejects NaN on some stores).

    With `model_id` (and `dataset`, its name and digest) the metrics also belong to that logged
    model, evaluated on that dataset: MLflow's model page and model comparison show them.
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    name, digest = dataset or (None, None)
    items = [Metric(k, float(v), now, step, model_id=model_id, dataset_name=name, dataset_digest=digest)
             for k, v in values.items() if pd.notna(v) and abs(float(v)) != float("inf")]
    for i in range(0, len(items), MAX_BATCH):
        retry(lambda: client.log_batch(run_id, metrics=items[i:i + MAX_BATCH], synchronous=True), "log metrics", client.tracking_uri)


def log_metric_history(client: Any, run_id: str, history: Mapping[str, Iterable[tuple[int, Any, float]]]) -> None:
    """Metrics with a value per (step, time): `history[name]` lists (step, timestamp, value), so MLflow's charts
    draw them against the step or against the time given (non-finite values are skipped)."""
    from mlflow.entities import Metric

    items = [Metric(name, float(value), int(pd.Timestamp(when).timestamp() * 1000), int(step))
             for name, points in history.items() for step, when, value in points
             if pd.notna(value) and abs(float(value)) != float("inf")]
    for i in range(0, len(items), MAX_BATCH):
        retry(lambda: client.log_batch(run_id, metrics=items[i:i + MAX_BATCH], synchronous=True), "log metrics",
              client.tracking_uri)


class EpochLogger:
    """An `on_epoch_end` callback that buffers per-epoch losses and writes them in batches."""

    def __init__(self, client: Any, run_id: str, flush_every: int = 500) -> None:
        self.client, self.run_id, self.flush_every = client, run_id, flush_every
        self.buffer: list[Any] = []
        self.round_trips = 0
        self.failing = False  # a flush failed during training: wait for the final flush
        self.seconds = 0.0  # wall time spent buffering and writing losses (part of the training time)

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        from mlflow.entities import Metric

        started = time.perf_counter()
        now = int(time.time() * 1000)
        self.buffer.append(Metric("train_loss", float(train_loss), now, epoch))
        if val_loss is not None:
            self.buffer.append(Metric("val_loss", float(val_loss), now, epoch))
        self.seconds += time.perf_counter() - started
        if len(self.buffer) >= self.flush_every and not self.failing:
            try:
                self.flush()
            except TrackingError as exc:  # keep training; the final flush() tries again and raises
                self.failing = True
                log.warning("per-epoch losses not logged yet (%s); training goes on", exc)

    def flush(self) -> None:
        """Write the buffered losses; a chunk leaves the buffer only once it is written."""
        started = time.perf_counter()
        try:
            while self.buffer:
                chunk = self.buffer[:MAX_BATCH]
                retry(lambda: self.client.log_batch(self.run_id, metrics=chunk, synchronous=True), "log losses", self.client.tracking_uri)
                self.buffer = self.buffer[len(chunk):]
                self.round_trips += 1
            self.failing = False
        finally:
            self.seconds += time.perf_counter() - started


def set_description(client: Any, run_id: str, markdown: str) -> None:
    """The run's description in the MLflow UI (its notes, `mlflow.note.content`), as markdown."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    log_params_and_tags(client, run_id, {}, {MLFLOW_RUN_NOTE: markdown})


def log_figure(client: Any, run_id: str, fig: Any, path: str) -> None:
    retry(lambda: client.log_figure(run_id, fig, path), f"log {path}", client.tracking_uri)


def log_text(client: Any, run_id: str, text: str, path: str) -> None:
    retry(lambda: client.log_text(run_id, text, path), f"log {path}", client.tracking_uri)


def log_dict(client: Any, run_id: str, data: dict[str, Any], path: str) -> None:
    retry(lambda: client.log_dict(run_id, data, path), f"log {path}", client.tracking_uri)


def log_config(client: Any, run_id: str, cfg: PipelineConfig, config_path: str | None) -> None:
    """The resolved config as YAML and, when there is one, the file the user gave."""
    log_text(client, run_id, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config/resolved.yaml")
    if config_path and Path(config_path).is_file():
        retry(lambda: client.log_artifact(run_id, config_path, "config"), "log config file", client.tracking_uri)


def log_preprocessor(client: Any, run_id: str, pre: Any) -> None:
    """The fitted preprocessor as data (the logged model's preprocessor.json) and a scaler summary for people."""
    log_dict(client, run_id, pre.to_dict(), "scalers/preprocessor.json")
    log_dict(client, run_id, scaler_summary(pre), "scalers/scalers.json")


def scaler_summary(pre: Any) -> dict[str, Any]:
    """Each scaler's kind, the columns it scales (with their transform) and its fitted numbers."""
    from pipeline.features.scalers import scaler_to_dict

    def describe(scaler: Any, names: list[str]) -> dict[str, Any]:
        numbers = scaler_to_dict(scaler)
        return numbers if scaler is None else {"kind": numbers.pop("kind"), "columns": names, **numbers}

    return {
        "features": describe(pre.feature_scaler, [f"{c} ({pre.feature_transforms[c]})" for c in pre.features]),
        "target": describe(pre.target_scaler, [f"{pre.target} ({pre.target_transform})"]),
        "frequency": pre.frequency,
    }


def log_dataset(client: Any, run_id: str, frame: pd.DataFrame, source: str, digest: str, target: str, name: str) -> None:
    """The training data as an MLflow dataset input, with our file digest.

    The run's `Dataset` entity is built from the dataset's public `to_dict()` (name, digest,
    source, source type, schema, profile) and logged with `MlflowClient.log_inputs`, so no
    fluent run needs to be active.
    """
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    # "source can be interpreted in multiple ways" (a local path is meant), and the schema's hint on
    # integer columns (a series id or count column is a data column like any other here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame.reset_index(), source=source, targets=target, name=name, digest=digest)
        fields = dataset.to_dict()
    entity = Dataset(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                     source=fields["source"], schema=fields.get("schema"), profile=fields.get("profile"))
    tagged = DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
    retry(lambda: client.log_inputs(run_id, datasets=[tagged]), "log dataset", client.tracking_uri)


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model, without local version tags (+cpu)."""
    reqs = []
    for dist in MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return reqs


def pyfunc_arguments(bundle: Any, folder: Path, input_example: pd.DataFrame) -> dict[str, Any]:
    """What `mlflow.pyfunc.log_model`/`save_model` take for this forecaster.

    The model directory (pipeline.serving.model_format, written into `folder`) is the pyfunc's only
    artifact; the python_model is the path of a code file naming the class that reads it
    (MLflow's models-from-code: no pickle in the model). Its code is the serving room's closure alone
    (`code_closure`), copied into `folder` as a `pipeline/` tree: nothing of training, tracking or the CLI.
    """
    from pipeline.serving.pyfunc import MODEL_ARTIFACT, MODEL_CODE, model_signature
    from pipeline.tracking.code_closure import copy_serving_code

    return {
        "python_model": str(MODEL_CODE),
        "artifacts": {MODEL_ARTIFACT: str(bundle.save(folder / MODEL_ARTIFACT))},
        "code_paths": [str(copy_serving_code(folder / "code"))],
        "signature": model_signature(bundle.config),
        "input_example": input_example,
        "pip_requirements": pip_requirements(),
    }


def log_model(run_id: str, bundle: Any, input_example: pd.DataFrame, uri: str) -> Any:
    """Log the pyfunc (weights + preprocessor + config as data, with its serving code) and its manifest; return
    MLflow's ModelInfo.

    MLflow copies every metric the run holds at step 0 onto the new logged model, one history
    read per metric (0.3 s for this pipeline's 70 scores): log the scores after the model, with
    `log_metrics(..., model_id=info.model_id)`, to attach them in one write.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment_id = retry(lambda: client.get_run(run_id).info.experiment_id, "read run", uri)
    # The run's logged model is created first and the model logged into it with no active run:
    # MLflow's fluent run context would end the run FINISHED on exit, before registration.
    model_id = retry(lambda: client.create_logged_model(experiment_id, name="model", source_run_id=run_id).model_id,
                     "create logged model", uri)
    with tempfile.TemporaryDirectory() as tmp:
        arguments = pyfunc_arguments(bundle, Path(tmp), input_example)

        def _log() -> Any:
            # pipeline.serving.pyfunc: MLflow checks the input example on the model before its manifest exists
            with quiet_logger("mlflow.pyfunc"), quiet_logger("pipeline.serving.pyfunc"):
                return mlflow.pyfunc.log_model(name="model", model_id=model_id, **arguments)

        info = retry(_log, "log model", uri)
    record_manifest(client, run_id, info.model_id, uri)
    return info


def record_manifest(client: Any, run_id: str, model_id: str, uri: str) -> str:
    """Write the logged model's manifest (each file's SHA-256, pipeline.serving.model_format) over the files as stored, add
    it to the model and the run (`model/manifest.json`), and record its own SHA-256 on both (tag
    `model_manifest_sha256`; registration copies it onto the version). Returns that digest."""
    import mlflow.artifacts

    from pipeline.serving.model_format import MANIFEST_FILE, MANIFEST_TAG, write_manifest
    from pipeline.serving.pyfunc import MLFLOW_ADDED

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(retry(lambda: mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=tmp),
                           "read the logged model", uri))
        digest = write_manifest(local, skip=MLFLOW_ADDED)
        manifest = str(local / MANIFEST_FILE)
        retry(lambda: client.log_model_artifact(model_id, manifest), "log the model's manifest", uri)
        retry(lambda: client.log_artifact(run_id, manifest, "model"), "log the model's manifest", uri)
    retry(lambda: client.set_logged_model_tags(model_id, {MANIFEST_TAG: digest}), "tag the logged model", uri)
    log_params_and_tags(client, run_id, {}, {MANIFEST_TAG: digest})
    return digest


def save_model(path: str | Path, bundle: Any, input_example: pd.DataFrame) -> Path:
    """The same pyfunc model directory as `log_model`, with its manifest, written at `path` without a tracking store."""
    import mlflow.pyfunc

    from pipeline.serving.model_format import write_manifest

    with tempfile.TemporaryDirectory() as tmp, quiet_logger("mlflow.pyfunc"), quiet_logger("pipeline.serving.pyfunc"):
        mlflow.pyfunc.save_model(str(path), **pyfunc_arguments(bundle, Path(tmp), input_example))
    write_manifest(Path(path))
    return Path(path)


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Silence a chatty library logger for a block (MLflow's notes on cloudpickle and examples)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


UNLOGGED_DIR = LOCAL_DIR / "unlogged"


def save_unlogged(bundle: Any, run_id: str, reason: str, scores: dict[str, float] | None = None) -> Path:
    """Keep a trained model that could not reach the tracking server: ./mlruns/unlogged/<run_id>/.

    The folder holds the model directory (pipeline.serving.model_format: weights, fitted preprocessor,
    config) and a note on how to load it, so a tracking outage never loses the training silently.
    """
    folder = (UNLOGGED_DIR / run_id).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = bundle.save(folder / "forecaster")
    metrics = "".join(f"  {k}: {v:.6g}\n" for k, v in sorted((scores or {}).items()) if isinstance(v, float | int))
    (folder / "README.txt").write_text(
        f"MLflow run {run_id} trained this model but could not log it:\n  {reason}\n\n"
        f"Load it with:\n  from pipeline.serving.forecast import ForecastBundle\n  bundle = ForecastBundle.load({str(path)!r})\n"
        + (f"\nTest metrics:\n{metrics}" if metrics else ""), encoding="utf-8")
    log.warning("tracking failed; the trained model is saved at %s", path)
    return path


def failure_report(client: Any, run_id: str, exc: BaseException, report: str | None = None) -> None:
    """Mark a run FAILED with its failure report as an artifact; never raises."""
    text = report or f"{type(exc).__name__}: {exc}"
    for call in (lambda: client.log_text(run_id, text, "failure/report.txt"),
                 lambda: client.set_tag(run_id, "failure", text.splitlines()[0][:500]),
                 lambda: client.set_terminated(run_id, "FAILED")):
        try:
            call()
        except Exception as err:  # noqa: BLE001 - best effort while already failing
            log.warning("could not record the failure on run %s: %s", run_id, err)


# ---------------------------------------------------------------- one owner of a tracked run
COMPLETE_TAG = "pipeline.complete"  # written last, just before FINISHED: the run did all it set out to do
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow nests a run under the run with this id


@dataclass(frozen=True)
class TrackedRun:
    """A run that `tracked_run` started: where it lives and its id."""

    client: Any
    experiment_id: str
    run_id: str

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri


def standard_tags(tags: Mapping[str, str], data_source: str | None = None,
                  config_digest: str | None = None) -> dict[str, str]:
    """The tags every run carries: the caller's (Prefect links, run type), the process that owns it
    (`pipeline.owner*`), the data source, the resolved config's digest, the git state and `version.*`
    of the libraries that shape a result."""
    from pipeline.runtime import ProcessOwner, git_state

    return {**tags, **ProcessOwner.current().tags(), **({"data_source": data_source} if data_source else {}),
            **({"config_digest": config_digest} if config_digest else {}), **git_state(),
            **{f"version.{k}": v for k, v in library_versions().items()}}


@contextmanager
def tracked_run(client: Any, experiment_id: str, run_name: str, tags: Mapping[str, str], *,
                data_source: str | None = None, config_digest: str | None = None) -> Iterator[TrackedRun]:
    """Start a run with the standard tags, yield it, and end it: the one owner of a run's lifecycle.

    Leaving the block normally writes `pipeline.complete=true` as the very last step and ends the
    run FINISHED, so a FINISHED run with that tag did everything it set out to do; a process killed
    on the way leaves the run RUNNING (or, at worst, FINISHED without the tag). An exception logs
    the failure report (`failure/report.txt`, the `failure` tag), ends the run FAILED and goes on.
    """
    run_id = start_run(client, experiment_id, run_name, standard_tags(tags, data_source, config_digest))
    log.info("MLflow run %s (%s) in experiment %s at %s", run_id, run_name, experiment_id, client.tracking_uri)
    try:
        yield TrackedRun(client, experiment_id, run_id)
        log_params_and_tags(client, run_id, {}, {COMPLETE_TAG: "true"})
        end_run(client, run_id, "FINISHED")
    except BaseException as exc:
        report = getattr(exc, "report", None) if isinstance(exc, PipelineError) else None
        failure_report(client, run_id, exc, report)
        if not isinstance(exc, PipelineError):
            log.exception("run %s failed", run_id)
        raise


@dataclass(frozen=True)
class RunRecord:
    """What a run recorded: its status, tags and latest metric values (plain data, no MLflow type)."""

    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]


def _record(run: Any) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.status, dict(run.data.tags), dict(run.data.metrics))


def get_run(client: Any, run_id: str) -> RunRecord:
    """A run by id; TrackingError naming the store when there is no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return _record(client.get_run(run_id))
    except MlflowException as exc:
        raise TrackingError(f"run {run_id} not found in {client.tracking_uri}: {exc.message}") from None


def download_text(client: Any, run_id: str, path: str) -> str:
    """The text of one artifact of a run (MLflow raises several kinds of errors for a missing one)."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")
