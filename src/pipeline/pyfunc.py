"""The MLflow pyfunc flavour of the forecaster, with its explicit signature.

Kept apart from `serving` so in-process forecasting does not import MLflow.
"""

from __future__ import annotations

import sys
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType

from pipeline.config import PipelineConfig
from pipeline.errors import DataError, ModelFormatError
from pipeline.intervals import band_columns
from pipeline.model_format import READABLE_VERSIONS
from pipeline.serving import ForecastBundle, ForecastModel

MODEL_ARTIFACT = "forecaster"  # the pyfunc artifact holding the model directory (pipeline.model_format)


class LSTMForecastPyfunc(mlflow.pyfunc.PythonModel, ForecastModel):
    """Takes raw recent rows (date + value columns); returns forecasts in original units.

    Param `all_windows` (default false): forecast from every window of the input instead of
    only the latest one.

    The logged `python_model.pkl` is this class by reference (`pipeline.pyfunc.LSTMForecastPyfunc`,
    a name to keep importable) with no state: everything the model is lives in its
    `forecaster` artifact, read by `load_context`.
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
        self.load(context.artifacts[MODEL_ARTIFACT])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without what `load_context` read: the model is its artifacts, never a pickle of them."""
        return {k: v for k, v in self.__dict__.items() if k not in ("bundle", "model", "networks")}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        all_windows = bool((params or {}).get("all_windows", False))
        try:
            return self.forecast(model_input, all_windows=all_windows)
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
    params = ParamSchema([ParamSpec("all_windows", "boolean", False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def load_pyfunc(model_uri: str, suppress_warnings: bool = False) -> mlflow.pyfunc.PyFuncModel:
    """`mlflow.pyfunc.load_model`, leaving `sys.path` as it was.

    MLflow puts the model's copy of the package (its `code/`, from `code_paths`) in front of
    `sys.path` for good; in a process that already runs this package, modules imported later
    would then come from the model's old copy, mixed with today's. The model is data
    (pipeline.model_format), so today's code reads it; the copy serves only processes without
    the package (`mlflow models serve` in a fresh environment).
    """
    saved = list(sys.path)
    try:
        return mlflow.pyfunc.load_model(model_uri, suppress_warnings=suppress_warnings)
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
