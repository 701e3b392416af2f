"""The MLflow pyfunc flavour of the forecaster, with its explicit signature.

Kept apart from `serving` so in-process forecasting does not import MLflow.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType

from pipeline.config.settings import PipelineConfig
from pipeline.errors import DataError, ModelFormatError, ModelIntegrityError
from pipeline.evaluation.intervals import band_columns
from pipeline.serving.forecast import ForecastBundle, ForecastModel
from pipeline.serving.model_format import MANIFEST_TAG, READABLE_VERSIONS, check_manifest, copy_verified, read_manifest

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "forecaster"  # the pyfunc artifact holding the model directory (pipeline.serving.model_format)
MODEL_CODE = Path(__file__).with_name("model_code.py")  # the logged model's code (models-from-code)
# Files MLflow itself adds to a model directory it downloads (a registered version's name and version).
MLFLOW_ADDED = ("registered_model_meta",)


class LSTMForecastPyfunc(mlflow.pyfunc.PythonModel, ForecastModel):
    """Takes raw recent rows (date + value columns); returns forecasts in original units.

    Param `all_windows` (default false): forecast from every window of the input instead of
    only the latest one. Param `evaluated` (default false): forecast with the model the run's scores measured
    (the one early stopping kept) where this one was refit on every row; the gate re-scores a champion so.

    A model logged today names this class in its code file (`model_code.py`, MLflow's
    models-from-code): no pickle. Models logged before held it as `python_model.pkl`, by reference
    (`pipeline.serving.pyfunc.LSTMForecastPyfunc`, a name to keep importable) with no state. Either way
    everything the model is lives in its `forecaster` artifact, read by `load_context` after the
    model's files are checked against its manifest (pipeline.serving.model_format).
    """

    def load_context(self, context: Any) -> None:
        import torch

        torch.set_num_threads(1)  # small windows: a second thread costs more than it gives
        if MODEL_ARTIFACT not in context.artifacts:
            found = ", ".join(sorted(context.artifacts)) or "none"
            raise ModelFormatError(
                f"this pyfunc model has no {MODEL_ARTIFACT!r} artifact (artifacts: {found}); it was saved before "
                f"versioned model directories (a pickled bundle, format version 0), and this pipeline reads format "
                f"version(s) {', '.join(map(str, READABLE_VERSIONS))} only. Retrain it, or load it with the pipeline "
                "version that saved it.")
        forecaster = Path(context.artifacts[MODEL_ARTIFACT])
        check_model_files(forecaster.parents[1])  # the model's root: <root>/artifacts/forecaster
        self.load(forecaster)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without what `load_context` read: the model is its artifacts, never a pickle of them."""
        return {k: v for k, v in self.__dict__.items() if k not in ("bundle", "model", "networks", "evaluated")}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        all_windows = bool((params or {}).get("all_windows", False))
        evaluated = bool((params or {}).get("evaluated", False))
        try:
            return self.forecast(model_input, all_windows=all_windows, evaluated=evaluated)
        except DataError as exc:  # a clean 400 with the message for REST clients
            raise input_rejected(str(exc)) from None


def input_rejected(message: str) -> MlflowException:
    """The error for input the model cannot forecast from: a 400 INVALID_PARAMETER_VALUE over REST.

    MLflow's scoring server (3.17, `scoring_server.invocations`) rewrites the `message` of any
    MlflowException raised in predict to "Failed to predict data '<the whole input frame>'.
    Error: <message>", with no option to turn that off; so the project's message alone also
    travels as `detail`, one of the extra JSON fields MlflowException documents (its `kwargs`).
    """
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE, detail=message)


def model_signature(cfg: PipelineConfig) -> ModelSignature:
    """The columns the model needs, written out rather than inferred from samples.

    Their types are left open (MLflow's AnyType): MLflow would refuse integer volumes for a
    `double` column ("cannot safely convert int64") or parsed dates for a `string` one, while the
    pandera contract inside `predict` parses them and names any bad value with its row.
    """
    series = [cfg.data.series_column] if cfg.data.series_column else []  # a long frame of many series
    inputs = Schema([ColSpec(AnyType(), c) for c in (*series, cfg.data.date_column, *cfg.data.columns)])
    outputs = Schema([
        *(ColSpec("string", c) for c in series),
        ColSpec("string", "origin"), ColSpec("long", "step"),
        ColSpec("string", "date"), ColSpec("double", "forecast"),
        # the prediction intervals (lower_80, upper_80, ...); absent when none were fitted (no validation windows)
        *(ColSpec("double", c, required=False) for c in band_columns(cfg.intervals.levels)),
    ])
    params = ParamSchema([ParamSpec("all_windows", "boolean", False), ParamSpec("evaluated", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def check_model_files(root: Path) -> None:
    """Check a pyfunc model directory against its manifest: ModelIntegrityError naming the file that changed. A
    model logged before manifests has none: it loads with a warning that says so."""
    files = read_manifest(root)
    if files is None:
        log.warning("model %s has no manifest.json: it was logged before this pipeline wrote manifests, so its files "
                    "are not checked", root)
        return
    check_manifest(root, files, tolerated=MLFLOW_ADDED)


def recorded_manifest(model_uri: str) -> str | None:
    """The manifest digest recorded for `model_uri` when it was logged: on the registered version (models:/NAME/V,
    models:/NAME@ALIAS) or the logged model (models:/m-...); None for other URIs and models logged before."""
    import re

    from mlflow import MlflowClient

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))?/?", model_uri)
    if not match:
        return None
    client = MlflowClient()
    name, alias, version = match.groups()
    if alias or version:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        if (mv.tags or {}).get(MANIFEST_TAG):
            return mv.tags[MANIFEST_TAG]
        name = getattr(mv, "model_id", None) or str(mv.source).removeprefix("models:/")  # a version registered elsewhere
    return client.get_logged_model(name).tags.get(MANIFEST_TAG) if re.fullmatch(r"m-[0-9a-f]+", name) else None


def load_pyfunc(model_uri: str, suppress_warnings: bool = False) -> mlflow.pyfunc.PyFuncModel:
    """`mlflow.pyfunc.load_model`, after the model's files are checked, leaving `sys.path` as it was.

    The model is fetched (or read, for a local directory) and checked against its manifest and
    the digest the registry recorded before MLflow reads any of it; what MLflow then loads is a
    copy of exactly the bytes checked, so a file changed or added later (a planted pickle, an
    edited code file) never runs. A model logged before manifests loads as before, with a warning.

    MLflow puts the model's copy of its serving code (its `code/`, from `code_paths`:
    pipeline.tracking.code_closure) in front of `sys.path` for good; in a process that already runs
    this package, modules imported later would then come from the model's old copy, mixed with
    today's. The model is data (pipeline.serving.model_format), so today's code reads it; the copy
    serves only processes without the package (`mlflow models serve` in a fresh environment).
    """
    import mlflow.artifacts

    recorded = recorded_manifest(model_uri)
    saved = list(sys.path)
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as tmp:
        local = Path(model_uri)
        if not local.is_dir():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(Path(tmp) / "fetched")))
        source = local
        try:
            files = read_manifest(local, recorded)  # None: logged before manifests (load_context warns)
            if files is not None:
                check_manifest(local, files, tolerated=MLFLOW_ADDED)
                source = copy_verified(local, files, Path(tmp) / "checked")
            return mlflow.pyfunc.load_model(str(source), suppress_warnings=suppress_warnings)
        except ModelIntegrityError as exc:  # name the model's file, not the temporary copy's
            message = str(exc).replace(str(source), model_uri.rstrip("/")).replace(str(local), model_uri.rstrip("/"))
            raise ModelIntegrityError(message) from None
        finally:
            sys.path[:] = saved


def load_forecaster(model_uri: str) -> tuple[mlflow.pyfunc.PyFuncModel, ForecastBundle]:
    """The logged pyfunc and the bundle inside it (`bundle.target`, `bundle.config.data`: the data contract)."""
    model = load_pyfunc(model_uri)
    bundle = getattr(model.unwrap_python_model(), "bundle", None)
    if not isinstance(bundle, ForecastBundle):
        raise MlflowException(f"{model_uri} is not a forecaster logged by this pipeline", error_code=INVALID_PARAMETER_VALUE)
    return model, bundle


def predict_rows(model: mlflow.pyfunc.PyFuncModel, rows: pd.DataFrame, all_windows: bool = False) -> pd.DataFrame:
    """`model.predict`, with input the model rejects reported as a DataError."""
    try:
        return model.predict(rows, params={"all_windows": all_windows})
    except MlflowException as exc:
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise DataError(f"the model rejected its input: {exc.message}") from None
        raise
