"""One typed, frozen configuration tree, loaded from YAML and validated on load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

Transform = Literal["level", "difference", "log_return", "log"]
ScalerKind = Literal["standard", "minmax", "none"]
Activation = Literal["relu", "tanh", "none"]
BacktestWindow = Literal["expanding", "rolling"]  # every earlier row, or the last `backtest.initial` rows


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """Where the series comes from and which columns mean what."""

    source: str = "data/SBUX.csv"
    date_column: str = "Date"
    target: str = "Close"
    features: tuple[str, ...] = ("Open", "High", "Low", "Close", "Volume")
    price_columns: tuple[str, ...] | None = Field(
        default=None,
        description="Columns that must be > 0. Default: the Yahoo price columns present.",
    )
    volume_column: str | None = "Volume"
    nan_policy: Literal["error", "drop", "ffill"] = "error"

    @model_validator(mode="after")
    def _columns_distinct(self) -> DataConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"data.features lists a column twice: {list(self.features)}")
        if self.date_column in self.features or self.date_column == self.target:
            raise ValueError("data.date_column cannot also be the target or a feature")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Every value column the pipeline reads: the features, then the target if not among them."""
        extra = () if self.target in self.features else (self.target,)
        return (*self.features, *extra)


class SplitConfig(_Frozen):
    """Chronological split: fractions (0-1), row counts (ints), or end dates.

    `train`/`val` give the sizes of the first two parts and the test part takes the rest;
    with fractions, `test` may be given too and the three must sum to 1. Dates (`train_end`,
    `val_end`) are inclusive and override the sizes.
    """

    train: float = 0.7
    val: float = 0.15
    test: float | None = None
    train_end: dt.date | None = None
    val_end: dt.date | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.train_end is not None:
            if self.val_end is not None and self.val_end < self.train_end:
                raise ValueError("split.val_end must not be before split.train_end")
            return self
        if self.train <= 0 or self.val < 0:
            raise ValueError("split.train must be > 0 and split.val >= 0")
        fractions = self.train < 1 and self.val < 1
        if fractions:
            test = self.test if self.test is not None else 1.0 - self.train - self.val
            if test <= 0 or abs(self.train + self.val + test - 1.0) > 1e-9:
                raise ValueError(
                    f"split fractions must be positive and sum to 1: train={self.train}, "
                    f"val={self.val}, test={test}"
                )
        elif self.train != int(self.train) or self.val != int(self.val):
            raise ValueError("split sizes must be all fractions (<1) or all whole row counts")
        return self


class WindowConfig(_Frozen):
    """Sliding windows: `lookback` past rows predict `horizon` target values.

    `lead` is the distance from the window's last row to the first predicted value:
    1 forecasts the next row; 0 estimates the window's own last row (the tutorial's setup).
    """

    lookback: int = Field(30, ge=1)
    horizon: int = Field(1, ge=1)
    lead: int = Field(1, ge=0)


class PreprocessConfig(_Frozen):
    target_transform: Transform = "log_return"
    feature_transforms: dict[str, Transform] = Field(default_factory=dict)
    default_feature_transform: Transform = "log_return"
    feature_scaler: ScalerKind = "standard"
    target_scaler: ScalerKind = "standard"

    def transform_for(self, column: str) -> Transform:
        return self.feature_transforms.get(column, self.default_feature_transform)


class ModelConfig(_Frozen):
    hidden_size: int = Field(32, ge=1)
    num_layers: int = Field(1, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    head_hidden: tuple[int, ...] = ()
    head_activation: Activation = "none"


class TrainConfig(_Frozen):
    epochs: int = Field(200, ge=1)
    batch_size: int | None = Field(64, ge=1, description="None: full batch")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    patience: int | None = Field(20, ge=1, description="None: no early stopping")
    min_delta: float = Field(0.0, ge=0)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    num_threads: int | None = Field(None, ge=1, description="None: chosen from the work size")


class RegistryConfig(_Frozen):
    """Registration and the promotion gate.

    A new version becomes `@champion` only when its test RMSE is below persistence's by at
    least `min_gain_over_persistence` and below the current champion's (re-scored on the same
    window) by at least `min_gain_over_champion`; both are relative: 0.02 means 2 % lower.
    A negative margin tolerates being that much worse.
    """

    model_name: str = "lstm-forecaster"
    enabled: bool = Field(True, description="False: log the model but register no version")
    min_gain_over_persistence: float = Field(0.0, gt=-1.0, lt=1.0)
    min_gain_over_champion: float = Field(0.0, gt=-1.0, lt=1.0)

    @field_validator("model_name")
    @classmethod
    def _registrable(cls, name: str) -> str:
        """Refuse at load time what MLflow's registry would refuse after training.

        Mirrors MLflow 3.17's `_validate_model_name` (blank, '/', ':', a name that is not its own
        normalised path) and its file registry's extra refusal of '%' (and of '/').
        """
        import posixpath

        norm = posixpath.normpath(name)
        if (not name.strip() or any(c in name for c in "/:%") or norm != name or norm == "."
                or norm.startswith("..")):
            raise ValueError(f"{name!r} cannot be registered: a registered model name must not be blank, must not "
                             "contain '/', ':' or '%', and must not be '.' or start with '..' (MLflow's rule)")
        return name


class TrackingConfig(_Frozen):
    experiment: str = "lstm-forecasting"
    uri: str | None = Field(None, description="None: $MLFLOW_TRACKING_URI or the local store")


BaselineName = Literal["naive", "drift", "moving_average", "seasonal_naive"]


class EvaluateConfig(_Frozen):
    """Baselines scored beside the model in every evaluation (training and backtest).

    `naive` is persistence (the last known value); `drift` extends the line from the first to
    the last known value; `moving_average` repeats the mean of the last `moving_average_window`
    known values; `seasonal_naive` repeats the value one `season_length` earlier and is scored
    only when `season_length` is set.
    """

    baselines: tuple[BaselineName, ...] = ("naive", "drift", "moving_average", "seasonal_naive")
    moving_average_window: int = Field(5, ge=1)
    season_length: int | None = Field(None, ge=2, description="None: no seasonal naive baseline")

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if "naive" not in self.baselines:
            raise ValueError("evaluate.baselines must include 'naive' (persistence): every score stands next to it")
        return self


class BacktestConfig(_Frozen):
    """Walk-forward evaluation: `folds` consecutive test blocks after an initial training stretch.

    Each fold refits the scalers and the model on the rows before its cutoff only. `initial`
    is the rows before the first cutoff (a fraction of the series, or a row count); the rest is
    cut into `folds` equal test blocks (`test_size` rows each unless given). `expanding` keeps
    every earlier row; `rolling` keeps the last `initial` rows. `val` is the part of each fold's
    pre-cutoff rows held out for early stopping (fraction or rows; None: as in `split`).
    """

    folds: int = Field(5, ge=1)
    window: BacktestWindow = "expanding"
    initial: float = Field(0.5, gt=0)
    test_size: int | None = Field(None, ge=1)
    val: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BacktestConfig:
        if self.initial >= 1 and self.initial != int(self.initial):
            raise ValueError("backtest.initial must be a fraction (<1) or a whole row count")
        if self.val is not None and self.val >= 1 and self.val != int(self.val):
            raise ValueError("backtest.val must be a fraction (<1) or a whole row count")
        return self


class PipelineConfig(_Frozen):
    name: str = "default"
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    window: WindowConfig = WindowConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    backtest: BacktestConfig = BacktestConfig()

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        unknown = set(self.preprocess.feature_transforms) - set(self.data.features)
        if unknown:
            raise ValueError(
                f"preprocess.feature_transforms names columns that are not features: {sorted(unknown)}"
            )
        if self.window.lead == 0 and self.data.target in self.data.features:
            raise ValueError("window.lead 0 with the target among the features would leak the answer")
        if self.train.patience is not None and not self.split.train_end and self.split.val == 0:
            raise ValueError("early stopping (train.patience) needs a validation part (split.val > 0)")
        return self

    def with_overrides(self, **sections: dict[str, Any]) -> PipelineConfig:
        """A copy with some fields of some sections replaced, validated again."""
        raw = self.model_dump(mode="json")
        for section, values in sections.items():
            raw[section] = {**raw[section], **values}
        return parse_config(raw, origin="overrides")

    def flat(self) -> dict[str, str]:
        """Dotted `section.key -> value` pairs, as MLflow params."""
        out: dict[str, str] = {"name": self.name}
        for section, values in self.model_dump(mode="json").items():
            if isinstance(values, dict):
                for key, value in values.items():
                    out[f"{section}.{key}"] = str(value)
        return out


def parse_config(raw: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            f" (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ConfigError(f"invalid config {origin}:\n" + "\n".join(lines)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config; relative data paths stay relative to the working dir."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(raw, origin=str(path))


def resolve(config: str | Path | PipelineConfig | None, data: str | None = None, experiment: str | None = None,
            model_name: str | None = None, folds: int | None = None, window: str | None = None) -> PipelineConfig:
    """The config to run: a validated config (or the YAML file it comes from, or the defaults) with
    the command-line overrides applied (`data.source`, `tracking.experiment`, `registry.model_name`,
    `backtest.folds`, `backtest.window`); given values only."""
    cfg = config if isinstance(config, PipelineConfig) else load_config(config) if config else PipelineConfig()
    wanted = {"data": {"source": data}, "tracking": {"experiment": experiment}, "registry": {"model_name": model_name},
              "backtest": {"folds": folds, "window": window}}
    overrides = {section: given for section, values in wanted.items()
                 if (given := {k: v for k, v in values.items() if v not in (None, "")})}
    return cfg.with_overrides(**overrides) if overrides else cfg
