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
`window_norm`, `residual_season`, `target_index`; pipeline.model): a network that uses any of
them is written as version 3, so code that predates them refuses it instead of predicting
without them. A network without them is still version 1 or 2.

Format version 4 is version 1, 2 or 3 plus

    intervals.json     the fitted prediction intervals (pipeline.intervals.IntervalState.to_dict):
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

`load_bundle` reads it back and refuses a directory whose format or version it does not know
(ModelFormatError, naming the versions it reads and the one found). A change to any of these
files' meaning needs a new format version and, in `load_bundle`, a reader for the old one;
tests/fixtures/model holds a model logged by version 1 to hold the code to that.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.errors import ModelFormatError
from pipeline.features import Preprocessor
from pipeline.intervals import IntervalState

log = logging.getLogger(__name__)

FORMAT_NAME = "lstm-forecaster"
FORMAT_VERSION = 6  # the newest, which every model is written as (one series and many alike)
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
ONE_SERIES = "series"  # the implicit id of the one series of a model without a series column
WINDOW_OPTIONS = ("input_chunk", "window_norm", "residual_season", "target_index")  # format 3's model.json keys
FILES = ("format.json", "model.json", "weights.pt", "preprocessor.json", "contract.json")
SERIES_FILE = "series.json"  # format 2
SERIES_WEIGHTS = "series_weights.pt"  # format 2, local strategy
INTERVALS_FILE = "intervals.json"  # format 4


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

    @property
    def format_version(self) -> int:
        """The format version this bundle is written as: 6, one format for one series and many."""
        return FORMAT_VERSION

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
    """Read a model directory (any readable format version) back into a ForecastBundle."""
    import torch

    version = read_format(path)
    listed = version == 2 or (version >= 3 and (path / SERIES_FILE).is_file()) or version >= 6
    needed = [*FILES, SERIES_FILE] if listed else list(FILES)
    needed += [INTERVALS_FILE] if 4 <= version <= 5 else []
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise ModelFormatError(f"{path}: model directory of format version {version} lacks {', '.join(missing)}")
    series = intervals = None
    try:
        model = json.loads((path / "model.json").read_text(encoding="utf-8"))
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        pre = Preprocessor.from_dict(json.loads((path / "preprocessor.json").read_text(encoding="utf-8")))
        contract = json.loads((path / "contract.json").read_text(encoding="utf-8"))
        config = PipelineConfig.model_validate(contract["config"])
        if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
            raise TypeError("weights.pt must hold a state dict of tensors")
        if listed:
            series = _read_series(path, torch)
            series = series if series.column is not None else None  # a model of one series (format 6)
        if 4 <= version <= 5 or (version >= 6 and _has_intervals(path)):
            intervals = IntervalState.from_dict(json.loads((path / INTERVALS_FILE).read_text(encoding="utf-8")))
        if version < 3 and any(k in model.get("init_args", {}) for k in WINDOW_OPTIONS):
            raise ValueError(f"model.json holds window options ({', '.join(WINDOW_OPTIONS)}), which need format 3")
        if version < 5 and needs_quantile_format(model.get("init_args", {}), intervals):
            raise ValueError("a quantile head or quantile intervals need format 5")
    except (OSError, ValueError, KeyError, TypeError, ValidationError, RuntimeError, pickle.UnpicklingError) as exc:
        text = " ".join(str(exc).split())
        text = text if len(text) <= 600 else text[:600] + "..."
        raise ModelFormatError(f"{path}: not a valid format-{version} model directory: {type(exc).__name__}: {text}") from None
    if model.get("class") != "LSTMForecaster":
        raise ModelFormatError(f"{path / 'model.json'}: unknown model class {model.get('class')!r} (known: LSTMForecaster)")
    return ForecastBundle(checkpoint={"init_args": model["init_args"], "state_dict": state}, preprocessor=pre, config=config,
                          series=series, intervals=intervals)


def _has_intervals(path: Path) -> bool:
    """Whether a format-6 model holds intervals (series.json says so; intervals.json must then be there)."""
    if not json.loads((path / SERIES_FILE).read_text(encoding="utf-8")).get("intervals", False):
        return False
    if not (path / INTERVALS_FILE).is_file():
        raise ValueError(f"series.json says the model has intervals but {INTERVALS_FILE} is missing")
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
