"""A trained forecaster saved as data: a directory of JSON files and a weights-only state dict.

A model logged today must load after the code has changed, so nothing in it is a pickled
class of this package. The directory (format "lstm-forecaster", version 1; docs/model-format.md):

    format.json        {"format": "lstm-forecaster", "format_version": 1}
    model.json         {"class": "LSTMForecaster", "init_args": {...}}: the constructor arguments
    weights.pt         the network's state dict (torch.save), read with torch.load(weights_only=True)
    preprocessor.json  features, target, transforms, lookback/horizon/lead, the training data's
                       frequency, each scaler's kind and fitted numbers (mean_, scale_, ...)
    contract.json      the data contract (date column, value columns, target, frequency, the
                       validation settings) and the whole resolved config the model was trained with

Format version 2 (a model of many series, `data.series_column`) is version 1 plus

    series.json        {"series_column": ..., "strategy": "global" | "local",
                        "preprocessors": {series id: what preprocessor.json holds, fitted on that series}}
    series_weights.pt  (local strategy only) {series id: that series' state dict}

where preprocessor.json and weights.pt hold the first series' preprocessor and weights. A
model of one series is still written as version 1, which it is: nothing in it changed meaning.

Format version 3 is version 1 or 2 (series.json when the model serves many series) whose
model.json `init_args` may also hold the network's window options (`input_chunk`,
`window_norm`, `residual_season`, `target_index`; pipeline.model.network): a network that uses any of
them is written as version 3, so code that predates them refuses it instead of predicting
without them. A network without them is still version 1 or 2.

Format version 4 is version 1, 2 or 3 plus

    intervals.json     the fitted prediction intervals (pipeline.evaluation.intervals.IntervalState.to_dict):
                       {"method": "conformal", "levels": [80, 95], "windows": n,
                        "quantiles": {"80": [half-width per step], "95": [...]},
                        "scales": null | {series id: scale}, "notes": [...]}

A model trained with `intervals.levels: []` (or without validation windows) has no intervals and is
still written as version 1, 2 or 3; older models load and forecast without interval columns.

Format version 5 is version 1-4 whose model.json `init_args` may also hold `quantiles` (the
probabilities a quantile head predicts beside the point forecast; its weights.pt head is (1 + Q) x
horizon wide) and whose intervals.json may say "method": "quantile" (conformalized quantile
regression: per level and step, the correction added to the head's own bounds). A model with either
is written as version 5; without them it is still written as version 1-4.

Format version 6 is one format for one series and many (a series is a panel of one): every model
writes series.json, whose "series_column" is null for a model of one series (its one preprocessor
under the implicit id "series") and names the id column for many, and whose "intervals" says
whether intervals.json is there (it must be); model.json may hold the window options and quantiles. Every model is
written as version 6; versions 1-5 still load and forecast as they did.

Format version 7 is version 6 whose model.json `init_args` also hold `members` (2 or more): the network is an
ensemble of that many networks of the other `init_args`' shape, combined by the median of their outputs
(pipeline.model.network.LSTMEnsemble); weights.pt (and each series' state dict in series_weights.pt) holds every
member's tensors under `members.<i>.`. A model of one network is still written as version 6.

Format version 8 is version 6 or 7 whose contract.json config combines the network's forecasts with the dynamic
optimised Theta model (`model.theta_weight` above 0, `model.theta_method: dynamic`; pipeline.model.theta). A model
of format 7 or earlier whose config names no `model.theta_method` combines with the standard Theta method, as it
did when it was logged. A model that does not combine (weight 0) is still written as version 6 or 7.

Format version 9 is a model refit on every row (`train.refit`): version 6, 7 or 8 with one directory more,
`evaluated/`, itself a model directory of version 6, 7 or 8 and of the same config: the model early stopping
kept, which the run's scores measured (the promotion gate re-scores a refit champion with it). Its
`model.theta_weight` may differ from the served model's: the share its scores were measured with, where the served
one was chosen again on the test origins (`model.theta_weight_served`).

Settings added since version 9 that old code refuses (a config of unknown fields or values), and so need no
version of their own: `model.window_norm: standard`; `model.theta_seasonality`, which a saved config that
does not name it reads as `positive` (Theta as those models were evaluated, `theta_of_old`);
`model.theta_weight_served`, the share of Theta the served model was given (its `model.theta_weight`); and
`model.theta_method: dynamic+damped`, the mean of the dynamic Theta model's forecasts and damped Holt's (a format-8
model: it combines with the dynamic one).

`load_bundle` reads it back and refuses a directory whose format or version it does not know
(ModelFormatError, naming the versions it reads and the one found). A change to any of these
files' meaning needs a new format version and, in `load_bundle`, a reader for the old one;
tests/fixtures/model holds a model logged by version 1 to hold the code to that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from pipeline.config.settings import PipelineConfig, theta_weight
from pipeline.data.panel import ONE_SERIES
from pipeline.errors import ModelFormatError, ModelIntegrityError
from pipeline.evaluation.intervals import IntervalState
from pipeline.features.windows import Preprocessor

log = logging.getLogger(__name__)

FORMAT_NAME = "lstm-forecaster"
FORMAT_VERSION = 6  # what every model of one network is written as (one series and many alike)
ENSEMBLE_VERSION = 7  # an ensemble of networks (model.json's init_args name `members`)
THETA_VERSION = 8  # combined with the dynamic optimised Theta model (model.theta_method)
EVALUATED_VERSION = 9  # refit on every row, with the network its run evaluated beside it (`evaluated/`)
SEASONS_VERSION = 10  # an ensemble whose members correct different seasons (init_args' `residual_seasons`); from
# here on `evaluated/` is there where the model was refit (9: always)
FLOOR_VERSION = 11  # forecasts and bounds raised to the target's floor (preprocessor.json's `floor`, data.floor)
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
WINDOW_OPTIONS = ("input_chunk", "window_norm", "residual_season", "target_index")  # format 3's model.json keys
FILES = ("format.json", "model.json", "weights.pt", "preprocessor.json", "contract.json")
SERIES_FILE = "series.json"  # format 2
SERIES_WEIGHTS = "series_weights.pt"  # format 2, local strategy
INTERVALS_FILE = "intervals.json"  # format 4
EVALUATED_DIR = "evaluated"  # format 9: the model directory of the network the run's scores measured


@dataclass
class SeriesModels:
    """What a model of many series adds: each series' fitted preprocessor and, one model per series, its weights."""

    column: str | None  # the series id column of the input; None: one series (its id implicit, `ONE_SERIES`)
    preprocessors: dict[str, Preprocessor]
    strategy: str = "global"  # "global": one network for all; "local": `state_dicts` per series
    state_dicts: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"series_column": self.column, "strategy": self.strategy,
                "preprocessors": {sid: pre.to_dict() for sid, pre in self.preprocessors.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], state_dicts: dict[str, dict[str, Any]] | None) -> SeriesModels:
        strategy = str(data["strategy"])
        if strategy not in ("global", "local") or (strategy == "local") != (state_dicts is not None):
            raise ValueError(f"strategy {strategy!r} with{'out' if state_dicts is None else ''} per-series weights")
        pres = {str(sid): Preprocessor.from_dict(pre) for sid, pre in data["preprocessors"].items()}
        if not pres or (state_dicts is not None and set(state_dicts) != set(pres)):
            raise ValueError("no series, or per-series weights not matching the series")
        column = data["series_column"]
        return cls(None if column is None else str(column), pres, strategy, state_dicts)


def needs_quantile_format(init_args: dict[str, Any], intervals: IntervalState | None) -> bool:
    """Whether a model holds what format 5 added: a quantile head, or intervals built on one."""
    return "quantiles" in init_args or (intervals is not None and intervals.method == "quantile")


@dataclass
class ForecastBundle:
    """What a forecast needs: the network checkpoint, the fitted preprocessor, the run's config."""

    checkpoint: dict[str, Any]  # {"init_args": constructor arguments, "state_dict": tensors}
    preprocessor: Preprocessor
    config: PipelineConfig
    series: SeriesModels | None = None  # a model of many series (format 2)
    intervals: IntervalState | None = None  # fitted prediction intervals (format 4)
    # A model refit on every row (`train.refit`): the model early stopping kept, which the run's test scores
    # measured, saved beside it (format 9); the gate re-scores a refit champion with it, out of sample
    evaluated: ForecastBundle | None = None

    @property
    def format_version(self) -> int:
        """The format version this bundle is written as: 6, one format for one series and many; 7 for an ensemble;
        8 for either combined with the dynamic optimised Theta model; 9 for any of them with its evaluated model;
        10 for any of them whose ensemble's members correct different seasons; 11 for any of them with a floor."""
        if self.floored:
            return FLOOR_VERSION
        if any(member_seasons(b.checkpoint["init_args"]) for b in (self, self.evaluated) if b is not None):
            return SEASONS_VERSION
        if self.evaluated is not None:
            return EVALUATED_VERSION
        if combines_with_dynamic_theta(self.config):
            return THETA_VERSION
        return ENSEMBLE_VERSION if "members" in self.checkpoint["init_args"] else FORMAT_VERSION

    @property
    def floored(self) -> bool:
        """Whether a preprocessor of the model (or of its evaluated one) raises forecasts to a floor (format 11)."""
        return any(has_floor(b.preprocessor, b.series) for b in (self, self.evaluated) if b is not None)

    @property
    def target(self) -> str:
        """The column the model forecasts (the data contract's target)."""
        return self.config.data.target

    @property
    def frequency(self) -> str | None:
        """The training data's calendar (a pandas offset alias), which forecast dates follow."""
        return self.preprocessor.frequency

    def contract(self) -> dict[str, Any]:
        """The data contract as plain data: what input the model takes, and the config it came from."""
        data = self.config.data
        return {
            "date_column": data.date_column,
            "value_columns": list(data.columns),
            "target": data.target,
            "frequency": self.frequency,
            "input_rows": self.preprocessor.input_rows,
            **({"series_column": self.series.column} if self.series is not None else {}),
            "rules": data.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"),
        }

    def save(self, path: str | Path) -> Path:
        """Write the model directory at `path` (created; it must not hold another model)."""
        return save_bundle(self, Path(path))

    @staticmethod
    def load(path: str | Path) -> ForecastBundle:
        return load_bundle(Path(path))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def save_bundle(bundle: ForecastBundle, path: Path) -> Path:
    """The bundle as a model directory (format 6: series.json for one series and many); returns the directory."""
    import torch

    path.mkdir(parents=True, exist_ok=True)
    if (path / "format.json").exists():
        raise FileExistsError(f"{path} already holds a saved model")
    _write_json(path / "model.json", {"class": "LSTMForecaster", "init_args": bundle.checkpoint["init_args"]})
    torch.save({k: v.detach().cpu() for k, v in bundle.checkpoint["state_dict"].items()}, path / "weights.pt")
    _write_json(path / "preprocessor.json", bundle.preprocessor.to_dict())
    _write_json(path / "contract.json", bundle.contract())
    series = bundle.series or SeriesModels(None, {ONE_SERIES: bundle.preprocessor})  # one series: a panel of one
    _write_json(path / SERIES_FILE, {**series.to_dict(), "intervals": bundle.intervals is not None})
    if bundle.series is not None:
        if bundle.series.state_dicts is not None:
            torch.save({sid: {k: v.detach().cpu() for k, v in sd.items()} for sid, sd in bundle.series.state_dicts.items()},
                       path / SERIES_WEIGHTS)
    if bundle.intervals is not None:
        _write_json(path / INTERVALS_FILE, bundle.intervals.to_dict())
    if bundle.evaluated is not None:
        if bundle.evaluated.evaluated is not None:
            raise ValueError("an evaluated model holds no evaluated model of its own")
        save_bundle(bundle.evaluated, path / EVALUATED_DIR)
    _write_json(path / "format.json", {"format": FORMAT_NAME, "format_version": bundle.format_version})  # last: complete
    return path


def read_format(path: Path) -> int:
    """The format version of the model directory at `path`; ModelFormatError when it is not one this code reads."""
    readable = ", ".join(str(v) for v in READABLE_VERSIONS)
    wanted = f"this pipeline reads {FORMAT_NAME!r} model directories of format version(s) {readable}"
    marker = path / "format.json"
    if path.is_file():
        raise ModelFormatError(f"{path}: a file, not a model directory (models saved before format version 1 were "
                               f"pickles, format version 0); {wanted}. Retrain the model to save it in a readable format.")
    if not marker.is_file():
        raise ModelFormatError(f"{marker}: missing, so no format version; {wanted}")
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{marker}: unreadable ({exc}); {wanted}") from None
    info = info if isinstance(info, dict) else {}
    name, version = info.get("format"), info.get("format_version")
    if name != FORMAT_NAME or isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ModelFormatError(f"{marker}: format {name!r} version {version!r} found, but {wanted}. "
                               "Load it with the pipeline version that saved it, or retrain.")
    return int(version)


def load_bundle(path: Path) -> ForecastBundle:
    """Read a model directory (any readable format version) back into a ForecastBundle.

    Before anything is built from it, the numbers are checked (`check_*` below): a model saved
    wrong is refused with a ModelIntegrityError naming the file and the rule, never served.
    """
    import torch

    version = read_format(path)
    check_files(path, version)
    listed = version == 2 or (version >= 3 and (path / SERIES_FILE).is_file()) or version >= 6
    series = intervals = None
    try:
        model = json.loads((path / "model.json").read_text(encoding="utf-8"))
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        pre_data = json.loads((path / "preprocessor.json").read_text(encoding="utf-8"))
        pre = Preprocessor.from_dict(pre_data)
        contract = json.loads((path / "contract.json").read_text(encoding="utf-8"))
        config = PipelineConfig.model_validate(theta_of_old(contract["config"], version))
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise TypeError("weights.pt must hold a state dict of tensors")
        if listed:
            series = _read_series(path, torch)
            series = series if series.column is not None else None  # a model of one series (format 6)
        if (version < 6 and (path / INTERVALS_FILE).is_file()) or (version >= 6 and _has_intervals(path)):
            intervals = IntervalState.from_dict(json.loads((path / INTERVALS_FILE).read_text(encoding="utf-8")))
        if version < 3 and any(k in model.get("init_args", {}) for k in WINDOW_OPTIONS):
            raise ValueError(f"model.json holds window options ({', '.join(WINDOW_OPTIONS)}), which need format 3")
        if version < 5 and needs_quantile_format(model.get("init_args", {}), intervals):
            raise ValueError("a quantile head or quantile intervals need format 5")
        if version < ENSEMBLE_VERSION and "members" in model.get("init_args", {}):
            raise ValueError(f"model.json's init_args name ensemble members, which need format {ENSEMBLE_VERSION}")
        if version < THETA_VERSION and combines_with_dynamic_theta(config):
            raise ValueError(f"contract.json's config combines with the dynamic Theta model, which needs format {THETA_VERSION}")
        if version < FLOOR_VERSION and has_floor(pre, series):
            raise ValueError(f"preprocessor.json gives a floor, which needs format {FLOOR_VERSION}")
        if version < SEASONS_VERSION and member_seasons(model.get("init_args", {})):
            raise ValueError(f"model.json's init_args give the ensemble's members their own residual seasons, which "
                             f"need format {SEASONS_VERSION}")
    except (OSError, ValueError, KeyError, TypeError, ValidationError, RuntimeError, pickle.UnpicklingError) as exc:
        text = " ".join(str(exc).split())
        text = text if len(text) <= 600 else text[:600] + "..."
        raise ModelFormatError(f"{path}: not a valid format-{version} model directory: {type(exc).__name__}: {text}") from None
    if model.get("class") != "LSTMForecaster":
        raise ModelFormatError(f"{path / 'model.json'}: unknown model class {model.get('class')!r} (known: LSTMForecaster)")
    init_args = model["init_args"]
    check_preprocessor(pre, path / "preprocessor.json")
    check_weights(state, init_args, path / "weights.pt")
    if series is not None:
        for sid, series_pre in series.preprocessors.items():
            check_preprocessor(series_pre, path / SERIES_FILE, f"series {sid!r}: ")
        for sid, state_dict in (series.state_dicts or {}).items():
            check_weights(state_dict, init_args, path / SERIES_WEIGHTS, f"series {sid!r}: ")
    if intervals is not None:
        check_intervals(intervals, pre.horizon, init_args, path / INTERVALS_FILE)
    holds = version == EVALUATED_VERSION or (version > EVALUATED_VERSION and (path / EVALUATED_DIR).is_dir())
    evaluated = load_evaluated(path / EVALUATED_DIR, config) if holds else None
    return ForecastBundle(checkpoint={"init_args": init_args, "state_dict": state}, preprocessor=pre, config=config,
                          series=series, intervals=intervals, evaluated=evaluated)


def load_evaluated(path: Path, config: PipelineConfig) -> ForecastBundle:
    """The evaluated model of a refit one (format 9): a model directory of the same config but for Theta's share (the
    served model's may have been chosen again on the test origins, `model.theta_weight_served`), holding none of its
    own."""
    evaluated = load_bundle(path)
    share = {"theta_weight": config.model.theta_weight}
    if evaluated.evaluated is not None or evaluated.config.with_overrides(model=share) != config:
        refuse(path / "contract.json", "not the evaluated model of the model around it",
               f"{EVALUATED_DIR}/ holds a model of the same config as its refit model (Theta's share aside), with no "
               f"{EVALUATED_DIR}/ of its own")
    return evaluated


def has_floor(pre: Preprocessor, series: SeriesModels | None) -> bool:
    """Whether the preprocessor or one of the series' raises forecasts to a floor (`data.floor`, format 11)."""
    return any(p.floor is not None for p in [pre, *(series.preprocessors.values() if series else ())])


def member_seasons(init_args: dict[str, Any]) -> bool:
    """Whether a network's constructor arguments give an ensemble's members their own residual seasons (format 10)."""
    from pipeline.model.network import MEMBER_SEASONS

    return MEMBER_SEASONS in init_args


def combines_with_dynamic_theta(config: PipelineConfig) -> bool:
    """Whether a model of this config combines its forecasts with the dynamic Theta model (format 8), alone or with
    damped Holt's (`dynamic+damped`)."""
    return theta_weight(config) > 0 and config.model.theta_method != "standard"


def theta_of_old(config: Any, version: int) -> Any:
    """A saved config as it reads today, Theta as it was evaluated: a model older than format 8 whose config names no
    `model.theta_method` combined with the standard Theta method, the only one there was; a config that names no
    `model.theta_seasonality` deseasonalised positive histories alone (additive indices came later)."""
    model = config.get("model", {}) if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return config
    old = {"theta_method": "standard"} if version < THETA_VERSION else {}
    old["theta_seasonality"] = "positive"
    missing = {key: value for key, value in old.items() if key not in model}
    return {**config, "model": {**model, **missing}} if missing else config


def _has_intervals(path: Path) -> bool:
    """Whether a format-6 model holds intervals (series.json says so; intervals.json must then be there)."""
    if not json.loads((path / SERIES_FILE).read_text(encoding="utf-8")).get("intervals", False):
        return False
    if not (path / INTERVALS_FILE).is_file():
        refuse(path / INTERVALS_FILE, "missing", f"a format-6 model directory whose {SERIES_FILE} says it has "
               "intervals holds them (docs/model-format.md)")
    return True


def _read_series(path: Path, torch: Any) -> SeriesModels:
    """series.json (and series_weights.pt for one model per series) of a format-2 directory."""
    data = json.loads((path / SERIES_FILE).read_text(encoding="utf-8"))
    state_dicts = None
    if (path / SERIES_WEIGHTS).is_file():
        state_dicts = torch.load(path / SERIES_WEIGHTS, map_location="cpu", weights_only=True)
        if not (isinstance(state_dicts, dict) and all(
                isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
                for sd in state_dicts.values())):
            raise TypeError(f"{SERIES_WEIGHTS} must hold a state dict of tensors per series")
        state_dicts = {str(k): v for k, v in state_dicts.items()}
    return SeriesModels.from_dict(data, state_dicts)


# ---------------------------------------------------------------- checks of what the files hold
# Each check reads what a file holds, not which version wrote it, so it applies to every format version.

def refuse(file: Path, problem: str, rule: str) -> NoReturn:
    """The refusal of a model saved wrong (or changed): exit 2, naming the file, what is wrong and the rule."""
    raise ModelIntegrityError(f"{file}: {problem}; rule: {rule}")


# name -> (the first format version that may hold it, the versions that must hold it); FILES: every version, always
OPTIONAL_FILES: dict[str, tuple[int, tuple[int, ...]]] = {
    SERIES_FILE: (2, (2, 6)),  # 3 to 5: present when the model serves many series; 6: always (one series too)
    SERIES_WEIGHTS: (2, ()),  # present when series.json says "local" (SeriesModels.from_dict holds them together)
    INTERVALS_FILE: (4, (4,)),  # from 5 on, absent for a quantile head without intervals
}


def check_files(path: Path, version: int) -> None:
    """The files present are those of a format-`version` model directory: none missing, none extra."""
    rule = f"a format-{version} model directory holds exactly the files of its format version (docs/model-format.md)"
    allowed = {*FILES, *(name for name, (first, _) in OPTIONAL_FILES.items() if version >= first)}
    for entry in sorted(path.iterdir()):
        if version >= EVALUATED_VERSION and entry.name == EVALUATED_DIR and entry.is_dir():
            continue  # a model directory of its own, checked as one
        if entry.name not in allowed or not entry.is_file():
            refuse(entry, f"not a file of a format-{version} model directory (its files: {', '.join(sorted(allowed))})",
                   rule)
    required = [*FILES, *(name for name, (_, need) in OPTIONAL_FILES.items() if version in need)]
    if (path / SERIES_WEIGHTS).is_file():
        required.append(SERIES_FILE)
    if version == EVALUATED_VERSION and not (path / EVALUATED_DIR).is_dir():  # from 10 on: where the model was refit
        refuse(path / EVALUATED_DIR, "missing (a directory: the evaluated model)", rule)
    for name in required:
        if not (path / name).is_file():
            refuse(path / name, "missing", rule)


def _non_finite(values: Any) -> int:
    """How many entries of `values` (numbers, nested lists, arrays) are NaN or infinite."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    return int(array.size - np.isfinite(array).sum())


def check_preprocessor(pre: Preprocessor, file: Path, who: str = "") -> None:
    """Every fitted scaler number finite, scales positive, one number per column the scaler scales."""
    from dataclasses import fields

    import numpy as np

    for name, scaler, width in (("feature_scaler", pre.feature_scaler, len(pre.features)),
                                ("target_scaler", pre.target_scaler, 1)):
        if scaler is None:
            continue
        for field in fields(scaler):
            value = np.asarray(getattr(scaler, field.name), dtype=np.float64)
            if _non_finite(value):
                refuse(file, f"{who}{name}.{field.name} holds {_non_finite(value)} NaN or infinite number(s)",
                       "every fitted scaler number is finite")
            if field.name in ("feature_range", "n_samples_seen_"):
                continue
            if value.shape not in ((width,), ()):
                refuse(file, f"{who}{name}.{field.name} has {value.size} number(s) for {width} column(s)",
                       "a scaler holds one number per column it scales")
        scale = np.asarray(scaler.scale_, dtype=np.float64)
        if (scale <= 0).any():
            refuse(file, f"{who}{name}.scale_ holds {int((scale <= 0).sum())} number(s) <= 0",
                   "a scaler divides by positive scales")


def check_weights(state: dict[str, Any], init_args: dict[str, Any], file: Path, who: str = "") -> None:
    """Every tensor finite, and the names and shapes those of the network that model.json's `init_args` build."""
    import torch

    from pipeline.model.network import build_network

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            expected = {k: tuple(v.shape) for k, v in build_network(init_args).state_dict().items()}
    except (TypeError, ValueError) as exc:
        refuse(file.parent / "model.json", f"init_args do not build the network ({exc})",
               "model.json holds the network's constructor arguments")
    rule = "weights hold the tensors, shaped as model.json's init_args build the network"
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        refuse(file, f"{who}tensors {', '.join(missing) or 'none'} missing, {', '.join(extra) or 'none'} unexpected", rule)
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            refuse(file, f"{who}{name} has shape {tuple(tensor.shape)}, but model.json's init_args give {shape}", rule)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            refuse(file, f"{who}{name} holds {int((~torch.isfinite(tensor)).sum())} NaN or infinite number(s)",
                   "every weight is finite")


def check_intervals(intervals: IntervalState, horizon: int, init_args: dict[str, Any], file: Path) -> None:
    """Finite numbers, one per horizon step, and ordered bands: each level's lower bound below its upper, and a
    wider level around a narrower one."""
    from pipeline.config.settings import tail_probabilities

    for level in intervals.levels:
        values = intervals.quantiles[level]
        if not 0 < level < 100:
            refuse(file, f"level {level}", "interval levels lie between 0 and 100 (%)")
        if _non_finite(values):
            refuse(file, f"quantiles[{level}] holds {_non_finite(values)} NaN or infinite number(s)",
                   "every interval number is finite")
        if len(values) != horizon:
            refuse(file, f"quantiles[{level}] has {len(values)} number(s) for a horizon of {horizon}",
                   "one interval number per horizon step")
    if intervals.scales is not None and (_non_finite(list(intervals.scales.values()))
                                         or any(v <= 0 for v in intervals.scales.values())):
        refuse(file, "scales holds a NaN, infinite or non-positive number", "every series' scale is a positive number")
    if intervals.method == "quantile":  # corrections to the head's own bounds, ordered by `bands`
        probabilities = {round(float(q), 6) for q in init_args.get("quantiles", ())}
        for level in intervals.levels:
            if not set(tail_probabilities(level)) <= probabilities:
                refuse(file, f"level {level} needs the head's {tail_probabilities(level)} quantiles, model.json has "
                             f"{sorted(probabilities)}", "a quantile interval reads its bounds from the quantile head")
        return
    for level in intervals.levels:
        if min(intervals.quantiles[level]) < 0:
            refuse(file, f"quantiles[{level}] holds a negative half-width ({min(intervals.quantiles[level]):.6g}): its "
                         "lower bound would lie above its upper", "each level's lower bound lies below its upper")
    ordered = sorted(intervals.levels)
    for narrow, wide in zip(ordered, ordered[1:]):
        for step, (a, b) in enumerate(zip(intervals.quantiles[narrow], intervals.quantiles[wide]), start=1):
            if a > b:
                refuse(file, f"step {step}: the {narrow} % half-width {a:.6g} exceeds the {wide} % one {b:.6g}",
                       "a wider level's band holds the narrower one (nested levels)")


# ---------------------------------------------------------------- the manifest of a logged model
MANIFEST_FILE = "manifest.json"
MANIFEST_RULE = "a logged model's files are those its manifest lists, with their SHA-256"
MANIFEST_TAG = "model_manifest_sha256"  # the run's, the logged model's and the registered version's record of it
MANIFEST_FORMAT = "lstm-forecaster-manifest"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_cache(name: str) -> bool:
    """Whether a model directory's file is Python's bytecode cache (`__pycache__`), which importing the model's code
    writes (and rewrites) beside it: never part of a model, listed, checked or copied."""
    return "__pycache__" in name.split("/")


def model_files(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every file under `root` as a POSIX path relative to it (sorted), but the manifest, Python's bytecode cache and
    `skip`ped names."""
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    return sorted(name for name in names if name not in skip and not is_cache(name))


def write_manifest(root: Path, skip: tuple[str, ...] = ()) -> str:
    """Write `manifest.json` in the model directory `root`: every file's SHA-256 and size. Returns the manifest's
    own SHA-256, which the run and the registered version record."""
    files = {name: {"sha256": file_digest((root / name).read_bytes()), "bytes": (root / name).stat().st_size}
             for name in model_files(root, skip)}
    text = json.dumps({"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}, indent=1, sort_keys=True)
    (root / MANIFEST_FILE).write_bytes(text.encode("utf-8") + b"\n")
    return file_digest((root / MANIFEST_FILE).read_bytes())


def read_manifest(root: Path, recorded: str | None = None) -> dict[str, dict[str, Any]] | None:
    """The files `manifest.json` lists (name -> sha256, bytes), or None when the directory has none and nothing
    `recorded` its digest (a model logged before manifests). With `recorded` (the digest the run or the registered
    version holds), the manifest must be present and be that very file."""
    file = root / MANIFEST_FILE
    if not file.is_file():
        if recorded:
            refuse(file, f"missing, but the registry recorded a manifest with SHA-256 {recorded}", MANIFEST_RULE)
        return None
    data = file.read_bytes()
    if recorded and file_digest(data) != recorded:
        refuse(file, f"SHA-256 {file_digest(data)}, but the registry recorded {recorded}: the manifest was changed",
               MANIFEST_RULE)
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("not a model manifest")
        return {str(name): {"sha256": str(entry["sha256"]), "bytes": int(entry["bytes"])} for name, entry in files.items()
                if not is_cache(str(name))}  # a cache an older manifest listed: importing the code rewrites it
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        refuse(file, f"unreadable ({exc})", MANIFEST_RULE)


def check_manifest(root: Path, files: dict[str, dict[str, Any]], tolerated: tuple[str, ...] = ()) -> None:
    """Each listed file present with its SHA-256; no other file, but `tolerated` names and Python's __pycache__."""
    for name, entry in files.items():
        checked_bytes(root, name, entry)
    for name in model_files(root, skip=tolerated):
        if name not in files:
            refuse(root / name, "not listed in the manifest (added after the model was logged)", MANIFEST_RULE)


def checked_bytes(root: Path, name: str, entry: dict[str, Any]) -> bytes:
    """The bytes of one listed file, once they match its manifest entry."""
    if ".." in Path(name).parts or Path(name).is_absolute():
        refuse(root / MANIFEST_FILE, f"lists {name!r}, outside the model directory", MANIFEST_RULE)
    if not (root / name).is_file():
        refuse(root / name, "missing (listed in the manifest)", MANIFEST_RULE)
    data = (root / name).read_bytes()
    if len(data) != entry["bytes"] or file_digest(data) != entry["sha256"]:
        refuse(root / name, f"SHA-256 {file_digest(data)}, but the manifest lists {entry['sha256']}: the file changed "
                            "after the model was logged", MANIFEST_RULE)
    return data


def copy_verified(root: Path, files: dict[str, dict[str, Any]], destination: Path) -> Path:
    """Copy the listed files of `root` into `destination`, each checked on the very bytes copied (nothing else:
    no file added later, no __pycache__), so what is loaded is what was checked."""
    for name, entry in files.items():
        data = checked_bytes(root, name, entry)
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    shutil.copyfile(root / MANIFEST_FILE, destination / MANIFEST_FILE)
    return destination
