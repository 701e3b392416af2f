"""One typed, frozen configuration tree, loaded from YAML and validated on load."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

Transform = Literal["level", "difference", "log_return", "log"]
AUTO = "auto"  # a setting resolved from the data (pipeline.data.auto.resolve_auto)
FLAT_WINDOW = 1e-6  # `model.window_norm: standard`: a window whose sd is at most this share of its mean's size (or
FLAT_FLOOR = 1e-12  # at most this) is flat, and its scale is 1 (pipeline.model.network.window_moments)
AUTO_KEYS = frozenset({"lookback", "season_length", "input_chunk"})  # whole numbers that may say `auto`
TransformSetting = Literal["level", "difference", "log_return", "log", "auto"]


def settled(value: Any, plain: Any) -> Any:
    """A setting's value, `plain` where it still says `auto`: a config not resolved against data
    (`defaults.resolve_frames`) builds the plain network, scalers and loss."""
    return plain if value == AUTO else value


def theta_weight(cfg: PipelineConfig) -> float:
    """The weight of Theta's forecast in the combined one (`model.theta_weight`); 0 while it still says `auto` (not
    yet chosen on validation, as in a model saved before the setting)."""
    return float(settled(cfg.model.theta_weight, 0.0))


def served_config(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` as the logged model serves it: Theta's share the run chose for serving (`model.theta_weight_served`, a
    number once chosen) as its `model.theta_weight`; `cfg` itself while none was chosen."""
    share = cfg.model.theta_weight_served
    return cfg.with_overrides(model={"theta_weight": share}) if isinstance(share, float) else cfg


# `train.patience: auto` (data.auto): many series' validation loss (one window per series and step) plateaus for longer
# than one series' (M3 quarterly and monthly validation: 50 epochs beat 20; docs/bring-your-own-series.md)
ONE_SERIES_PATIENCE = 20
MANY_SERIES_PATIENCE = 50
# `train.windows_per_epoch: auto`: an epoch draws at most this many training windows
EPOCH_WINDOWS = 20_000
# `train.loss_weight_power: auto`: one network halfway between sMAPE and MASE; an ensemble's members alternate that
# and MASE itself (docs/bring-your-own-series.md, "Ensembles": on M3 validation four members of mixed losses beat
# four of one loss)
ONE_NETWORK_POWER = 0.5
ENSEMBLE_POWERS = (0.5, 1.0)

ScalerKind = Literal["standard", "minmax", "none"]
ScalerSetting = Literal["standard", "minmax", "none", "auto"]
Activation = Literal["relu", "tanh", "none"]
BacktestWindow = Literal["expanding", "rolling"]  # every earlier row, or the last `backtest.initial` rows
CalendarPart = Literal["day", "week", "year"]  # pipeline.features.calendar
CALENDAR_PARTS: tuple[str, ...] = ("day", "week", "year")


def windows_needed(level: float) -> int:
    """The fewest calibration windows (errors) with a finite conformal quantile at `level` %: ceil((n+1)q) <= n
    (19 at 95 %; pipeline.evaluation.intervals, and `split: auto`'s validation rows)."""
    n = 1
    while math.ceil((n + 1) * level / 100 - 1e-9) > n:
        n += 1
    return n


def tail_probabilities(level: int) -> tuple[float, float]:
    """The quantiles that bound a central `level` % interval: (1 - L/100)/2 and (1 + L/100)/2, to 6 digits."""
    return round((1 - level / 100) / 2, 6), round((1 + level / 100) / 2, 6)


class _Frozen(BaseModel):
    # The docstring under each field is its description: `config_reference` reads them from this
    # file for docs/configuration.md (pydantic's use_attribute_docstrings would parse the source at
    # every import, 0.2 s of every command's start-up).
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """Where the series comes from and which columns mean what."""

    source: str | tuple[str, ...] = "data/SBUX.csv"
    """CSV file path or http(s) URL; relative paths are read from the working directory. With `series_column`
    also a folder of CSV files or a list of paths/URLs, read as one long table."""
    date_column: str = "Date"
    """Column holding each row's date or timestamp."""
    target: str = "Close"
    """Column to forecast."""
    features: tuple[str, ...] | None = None
    """Columns the model reads as inputs (a list; the target may be among them); null or left out: the target alone
    (the sample's config names its five OHLCV columns)."""
    price_columns: tuple[str, ...] | None = None
    """Columns that must be > 0 (a list; `[]` for none). null: the columns named Open, High, Low, Close or Adj Close in any case."""
    volume_column: str | None = "auto"
    """Column that must be >= 0; `auto`: a column named Volume in any case; null: none."""
    high_column: str | None = "auto"
    """Column that must be >= the low column and >= the open/close columns of its row; `auto`: one named High in any case; null: no rule."""
    low_column: str | None = "auto"
    """Column that must be <= the high column and <= the open/close columns of its row; `auto`: one named Low in any case; null: no rule."""
    freq: str | None = None
    """The dates' calendar as a pandas offset alias (`h`, `D`, `B`, `W-SUN`, `MS`, `ME`, `QS`, ...); null: inferred from the dates."""
    date_format: str | None = None
    """strptime format of the dates, e.g. `%d/%m/%Y`; null: ISO dates, or `dayfirst` for dates like 01/02/2022."""
    dayfirst: bool | None = None
    """For dates like 01/02/2022: true reads 1 February, false 2 January; null: such dates are an error naming their lines."""
    nan_policy: Literal["error", "drop", "ffill"] = "error"
    """Empty cells of the columns other than the target: `error` names them; `drop` drops their rows; `ffill` carries
    the last value forward. An empty target is a missing period (`fill_gaps`)."""
    series_column: str | None = None
    """Column naming the series of each row (long format, many series in one run); null: one series."""
    on_bad_series: Literal["error", "skip"] = "error"
    """A series that breaks the data contract: `error` fails listing every bad series; `skip` logs it and goes on."""
    fill_gaps: Literal["none", "forward", "interpolate", "zero"] = "none"
    """Missing periods of a regular calendar (a month absent from monthly data): `none` refuses the series naming
    the dates; `forward` repeats the last row, `interpolate` draws straight lines in time, `zero` writes 0 (each
    series on its own, after validation; recorded on the run). A row whose target is empty is a missing period too:
    refused with `none`, else dropped and filled. Business days and other calendars with holidays or sessions have
    no gaps (there a row with an empty target is dropped, with a note)."""
    calendar: Literal["auto", "none"] | tuple[CalendarPart, ...] = AUTO
    """Calendar inputs known ahead, which the forecast horizon receives too (pipeline.features.calendar): a list of
    `day` (time of day), `week` (day of the week), `year` (position in the year), each as a sine and a cosine;
    `none`; `auto`: none, as they did not help on validation (M3 monthly, M4 Hourly; figures in
    docs/bring-your-own-series.md, "Calendar inputs")."""
    floor: float | Literal["auto"] | None = AUTO
    """The smallest value the target can take: forecasts and interval bounds below it are raised to it, in
    evaluation and serving alike (a rainfall's 95 % interval starts at 0, not at -10). `auto`: 0 where every
    training value of the target, in every series, is >= 0 (counts, sales, rainfall, prices), else none; null: none;
    a number: that floor."""
    holidays: str | None = None
    """A country code of the `holidays` package (`US`, `GB`, `DE`, ...): an input flagging that country's public
    holidays, known ahead like the calendar; null: none."""

    @model_validator(mode="before")
    @classmethod
    def _features_default_to_the_target(cls, data: Any) -> Any:
        """No `features` given: the target alone (`features` is a tuple once validated)."""
        if isinstance(data, dict) and data.get("features") is None:
            return {**data, "features": [data.get("target", cls.model_fields["target"].default)]}
        return data

    @model_validator(mode="after")
    def _columns_distinct(self) -> DataConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"data.features lists a column twice: {list(self.features)}")
        if self.date_column in self.features or self.date_column == self.target:
            raise ValueError("data.date_column cannot also be the target or a feature")
        for key in ("high_column", "low_column"):
            given = getattr(self, key)
            if given not in (None, "auto") and given not in self.columns:
                raise ValueError(f"data.{key} {given!r} is not among the columns read (data.features and data.target: "
                                 f"{list(self.columns)})")
        if self.freq is not None:
            from pipeline.dates import parse_frequency  # pandas: loaded only when a config names a frequency

            try:
                parse_frequency(self.freq)
            except ValueError:
                raise ValueError(f"data.freq {self.freq!r} is not a pandas offset alias (such as h, D, B, W-SUN, MS, "
                                 "ME, QS)") from None
        if not isinstance(self.calendar, str) and len(set(self.calendar)) != len(self.calendar):
            raise ValueError(f"data.calendar lists a part twice: {list(self.calendar)}")
        if self.holidays is not None:
            import holidays  # loaded only when a config names a country

            known = holidays.list_supported_countries()
            if self.holidays not in known:
                close = sorted(c for c in known if c.upper() == self.holidays.upper())
                raise ValueError(f"data.holidays {self.holidays!r} is not a country code the holidays package knows"
                                 f"{f' (did you mean {close[0]!r}?)' if close else ''}; rule: an ISO 3166-1 alpha-2 code "
                                 f"such as US, GB, DE, FR, JP ({len(known)} known: python -c \"import holidays; "
                                 "print(sorted(holidays.list_supported_countries()))\")")
        if self.date_format is not None and "%" not in self.date_format:
            raise ValueError(f"data.date_format {self.date_format!r} must be a strptime format such as %d/%m/%Y")
        if self.series_column is not None and self.series_column in (self.date_column, *self.columns):
            raise ValueError("data.series_column cannot also be the date column, the target or a feature")
        if not isinstance(self.source, str) and self.series_column is None:
            raise ValueError("data.source as a list of files needs data.series_column (a long table of many series)")
        if not isinstance(self.source, str) and not self.source:
            raise ValueError("data.source lists no file")
        return self

    @property
    def source_label(self) -> str:
        """The source as one string, for run names and reports."""
        return self.source if isinstance(self.source, str) else ", ".join(self.source)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every value column the pipeline reads: the features, then the target if not among them."""
        extra = () if self.target in self.features else (self.target,)
        return (*self.features, *extra)


class SplitConfig(_Frozen):
    """Chronological split: `auto`, fractions (0-1), row counts (ints), or end dates.

    `auto` (`split: auto`, or no `split` section) chooses the sizes from the data and the window when the run
    starts (pipeline.data.auto.auto_split; the run logs the sizes it chose): for many series the last
    `window.horizon` rows of each series are its test part and the rows before them its validation part, as many
    as calibration needs (docs/bring-your-own-series.md, "Splits"); one series keeps the fractions below
    unless they leave a part too short for one window. A section with sizes gives them instead:
    `train`/`val` give the sizes of the first two parts and the test part takes the rest;
    with fractions, `test` may be given too and the three must sum to 1. Dates (`train_end`,
    `val_end`) are inclusive and override the sizes. Whole row counts `val` and `test` without
    `train` count from the end of each series: its last `test` rows are the test part, the `val`
    rows before them the validation part, and every earlier row trains.
    """

    auto: bool = True
    """Sizes chosen from the data when the run starts (`split: auto`; also a config without a `split` section); a
    section that gives sizes sets it to false. Before the data is read the split reads as the fractions below."""
    train: float | None = 0.7
    """Training part: a fraction of the rows (< 1) or a row count; null (or left out beside whole-count `val` and
    `test`): every row before validation and test, which are counted from each series' end."""
    val: float = 0.15
    """Validation part (early stopping): a fraction or a row count; 0 for none."""
    test: float | None = None
    """Test part as a fraction; null: the rows left after `train` and `val`."""
    train_end: dt.date | None = None
    """Last training date (inclusive); overrides the sizes."""
    val_end: dt.date | None = None
    """Last validation date (inclusive), with `train_end`."""

    @model_validator(mode="before")
    @classmethod
    def _counted_from_end(cls, raw: Any) -> Any:
        """`split: auto` is `{auto: true}`; a section that gives sizes is not auto. `{val: 48, test: 48}`: whole row
        counts without `train` mean "counted from the end"."""
        if raw == AUTO:
            return {"auto": True}
        if isinstance(raw, dict) and raw and "auto" not in raw:
            raw = {**raw, "auto": False}
        if isinstance(raw, dict) and "train" not in raw and "train_end" not in raw:
            test = raw.get("test")
            if isinstance(test, int) and not isinstance(test, bool) and test >= 1:
                return {**raw, "train": None}
        return raw

    @property
    def from_end(self) -> bool:
        """Whether the parts are whole row counts taken from each series' end."""
        return self.train is None and self.train_end is None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.auto:
            given = {k: v for k, v in self.model_dump(exclude={"auto"}).items()
                     if v != type(self).model_fields[k].default}
            if given:
                raise ValueError(f"split auto chooses the sizes from the data: leave out {sorted(given)}, or give "
                                 "the sizes without auto")
            return self
        if self.train is None and self.train_end is None:
            if self.test is None or self.test < 1 or self.test != int(self.test) or self.val != int(self.val):
                raise ValueError("split counted from the end (no split.train) needs whole row counts "
                                 "split.test >= 1 and split.val >= 0, e.g. {val: 48, test: 48}")
            return self
        if self.train_end is not None:
            if self.val_end is not None and self.val_end < self.train_end:
                raise ValueError("split.val_end must not be before split.train_end")
            return self
        if self.train is None or self.train <= 0 or self.val < 0:
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

    lookback: Annotated[int, Field(ge=1)] | Literal["auto"] = AUTO
    """Past rows each forecast reads; `auto`: two seasons (8 rows without a season) or the longest season of the calendar the data can feed (a week of sub-daily data, a year of daily data), at most a third of the median series' training rows and no more than the shortest series can feed before its held-out part (many series with `pad`: no more than half the median series' rows before its held-out part, shorter series padded)."""
    horizon: int = Field(1, ge=1)
    """Steps forecast at once."""
    lead: int = Field(1, ge=0)
    """Rows from the window's last row to the first forecast step (0: the tutorial's same-row estimate)."""
    pad: bool | Literal["auto"] = AUTO
    """`true`: a window whose lookback reaches before a series' first row reads that row's values as if they had
    held before it (flat history; a differenced column's change 0), so a series shorter than the lookback is
    trained on and forecast from one row on, as the M4 entries padded short series; `false`: every window reads
    `lookback` rows of the series; `auto`: `true` for many series when the `auto` lookback asks for more rows than
    the shortest series holds before its held-out part, else `false`."""


class PreprocessConfig(_Frozen):
    """Transforms and scalers, fit on the training rows only."""

    target_transform: TransformSetting = AUTO
    """How the target is modelled: `level`, `difference`, `log_return` or `log` (the last two need values > 0); `auto`: `level` with `model.window_norm`; else `level` unless the level drifts over the training rows (whole seasons compared), then `log_return` for values all > 0, else `difference`."""
    feature_transforms: dict[str, Transform] = Field(default_factory=dict)
    """Per-feature transform, e.g. `{Volume: log}`; the others take `default_feature_transform`."""
    default_feature_transform: TransformSetting = AUTO
    """Transform of every feature not named in `feature_transforms`; `auto`: the target's transform, or with an `auto` target, chosen per column by the same rule."""
    feature_scaler: ScalerSetting = AUTO
    """`standard` (mean 0, sd 1), `minmax` (0-1) or `none`; `auto`: `none` when the network normalises its own windows (`model.window_norm`), else `standard`."""
    target_scaler: ScalerSetting = AUTO
    """Scaler of the transformed target: `standard`, `minmax` or `none`; `auto`: as `feature_scaler`."""

    def transform_for(self, column: str) -> TransformSetting:
        """The column's transform: its own, else the default; an `auto` default follows the target's."""
        chosen = self.feature_transforms.get(column, self.default_feature_transform)
        return self.target_transform if chosen == AUTO else chosen


class ModelConfig(_Frozen):
    """The LSTM and the head that reads its last layer's output."""

    hidden_size: int = Field(32, ge=1)
    """Units in each LSTM layer."""
    num_layers: int = Field(1, ge=1)
    """Stacked LSTM layers."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout between LSTM layers and between head layers."""
    head_hidden: tuple[int, ...] = ()
    """Widths of hidden layers in the head, e.g. `[128]`; empty: one linear layer."""
    head_activation: Activation = "none"
    """Activation before each head layer: `relu`, `tanh` or `none`."""
    input_chunk: Annotated[int, Field(ge=1)] | Literal["auto"] = AUTO
    """Consecutive rows fed to the LSTM as one step, their values side by side (24 on hourly data makes a lookback of 168 rows 7 steps of a day each); `window.lookback` must be a multiple of it; `auto`: one season when the network normalises its windows and the lookback holds two seasons or more, else 1."""
    window_norm: Literal["none", "log_mean", "standard", "auto"] = AUTO
    """Normalisation of each window inside the network: `log_mean` feeds log(value / the window's mean) per column and predicts the target in those units, so one model serves series at any level (values must be > 0); `standard` feeds (value - the window's mean) / its sd per column and predicts the target in those units (values of any sign; a flat window's sd counts as 1); both need the target among the features, `level` transforms and no scalers; `none`: the preprocess scalers alone; `auto`: for several series, when the target is among the features and no transform or scaler is set otherwise, `log_mean` if every value read is > 0, else `standard`; for one series `none`, unless its calendar is sub-daily and a season of it is in the data (seasonal naive beats naive on the training rows), then as for several."""
    residual_to: Literal["none", "seasonal_naive", "auto"] = AUTO
    """`seasonal_naive`: the head predicts the correction to the last season of the window repeated (`model.residual_season` rows; needs the target among the features); `none`: the forecast itself; `auto`: `seasonal_naive` with `window_norm` and a season of the calendar in the data (its seasonal naive beats naive on the training rows), else `none`."""
    residual_season: Annotated[int, Field(ge=1)] | tuple[Annotated[int, Field(ge=1)], ...] | None = None
    """Rows of the season `residual_to: seasonal_naive` repeats; null: `evaluate.season_length`. With `residual_to: auto` the calendar's season (within the lookback) whose seasonal naive forecasts the training rows best: the week of sub-daily data whose week is in the data and whose day is not. A list: the members of an ensemble (`model.ensemble`) take its entries in turn, e.g. `[24, 168]` on hourly data, members correcting yesterday and last week."""
    quantiles: tuple[Annotated[float, Field(gt=0.0, lt=1.0)], ...] = ()
    """Probabilities whose quantiles the head also predicts for every step, trained with the pinball loss beside the point loss, e.g. `[0.025, 0.1, 0.9, 0.975]`; `intervals.method: quantile` builds the intervals on them. They must map one to one onto the target's units: a `difference` or `log_return` target with `window.horizon` above 1 is refused (quantiles of each step's change do not add up to quantiles of the level). `[]`: the point forecast alone."""
    strategy: Literal["global", "local"] = "global"
    """Many series (`data.series_column`): `global` trains one model on the windows of every series, each
    normalised on its own training rows; `local` trains one model per series."""
    theta_weight: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["auto"] = AUTO
    """Weight of the Theta method's forecast (each series' target up to the origin, deseasonalised where seasonal; pipeline.model.theta) in a weighted mean with the network's, in evaluation, intervals and serving alike: `0`: the network alone; `auto`: chosen after training on the validation origins, the one of 0, 0.1, ..., 1 with the lowest sum of sMAPE and scaled error, each relative to the network alone's (the run logs it as the metric `theta_weight`; the logged model serves the share `model.theta_weight_served` gives)."""
    theta_weight_served: Annotated[float, Field(ge=0.0, le=1.0)] | Literal["validation", "test", "auto"] = AUTO
    """Theta's share in the served (logged) model's forecasts, where `model.theta_weight` is `auto`: `validation`, the share the reported test scores were measured with; `test`, chosen again after scoring, as `auto` chooses, on every test origin (the reported test scores keep the validation share). Early stopping chose the network on the validation origins, so there it looks better than it is and Theta's share comes out too small; the test origins were never looked at. `auto`: `test` (docs/bring-your-own-series.md, "Combined with Theta"). A number: that share (a run records the share it chose here, so that `pipeline reproduce` serves it again; the logged model's config holds it as its `model.theta_weight`). Where no series has a test window the evaluated share is served."""
    theta_method: Literal["dynamic", "dynamic+damped", "standard"] = "dynamic"
    """The statistical partner `model.theta_weight` combines with: `dynamic`, the dynamic optimised Theta model (its line refit at every row on the rows up to it, theta optimised from 1 to 10 with the smoothing weight); `dynamic+damped`, the mean of its forecasts and damped Holt's (level and damped trend, their weights and damping chosen on a grid by the least one-step squared error on the same deseasonalised rows; ahead on validation carved from M3's training files, behind on M3's held-out years); `standard`, the classic Theta method (theta 2). A model logged before this setting combines with `standard`, as it was evaluated (docs/bring-your-own-series.md, "Combined with Theta")."""
    theta_seasonality: Literal["any", "positive"] = "any"
    """Which seasonal histories the Theta method deseasonalises (a history is seasonal when its autocorrelation at the season's lag passes the M4 benchmarks' 90 % test): `any`, classical multiplicative indices where every row is positive and additive ones elsewhere (zeros, negative values); `positive`, the multiplicative ones alone, the others forecast as they are. A model logged before this setting reads as `positive`, as it was evaluated (docs/bring-your-own-series.md, "Zeros and negative values")."""
    ensemble: int = Field(1, ge=1)
    """Networks trained apart, each from its own seed (`train.seed` + 0, 1, ...), with its own loss where `train.loss_weight_power` lists several (by default the members alternate two), and stopping early on its own, whose forecasts are combined by their elementwise median (quantile heads included) into one model that evaluates, calibrates its intervals, refits (each member for its own best epoch count) and serves as one network does; the members train in parallel with `--parallel` or a Dask scheduler. `1`: one network."""


Power = Annotated[float, Field(gt=0, le=1)]


def as_seasons(season: int | tuple[int, ...]) -> tuple[int, ...]:
    """`model.residual_season` as a tuple of seasons (one number: one season)."""
    return tuple(season) if isinstance(season, tuple) else (season,)


def member_season(season: int | tuple[int, ...] | None, member: int) -> int | None:
    """The residual season ensemble member `member` corrects: its entry of a `model.residual_season` list (modulo
    the list's length), else `season` itself."""
    return season[member % len(season)] if isinstance(season, tuple) else season


def member_power(power: float | tuple[float, ...] | str, member: int) -> float | str:
    """The loss weight power ensemble member `member` trains with: its entry of a list (modulo the list's
    length), else `power` itself."""
    return power[member % len(power)] if isinstance(power, tuple) else power


class TrainConfig(_Frozen):
    """Adam on mean squared (or absolute) error, mini-batches, early stopping on the validation loss."""

    epochs: int = Field(200, ge=1)
    """Most epochs to train (early stopping may end sooner)."""
    batch_size: int | None = Field(64, ge=1)
    """Windows per mini-batch; null: the whole training part at once."""
    learning_rate: float = Field(1e-3, gt=0)
    """Adam's learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """Adam's L2 penalty."""
    grad_clip: float | None = Field(1.0, gt=0)
    """Largest gradient norm; null: no clipping."""
    patience: Annotated[int, Field(ge=1)] | Literal["auto"] | None = AUTO
    """Epochs without a better validation loss before stopping; null: no early stopping; `auto`: 50 for many series (their validation loss, one window per series and step, plateaus for longer: on M3 quarterly and monthly validation 50 beat 20), 20 for one series."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest drop in validation loss that counts as better."""
    seed: int = 42
    """Seed of every random number generator: the same seed, data and config give the same weights."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """`cpu`, `cuda` (an error without a GPU) or `auto` (a GPU when there is one)."""
    num_threads: int | None = Field(None, ge=1)
    """Torch threads for training on the CPU; null: chosen from the work size."""
    loss: Literal["mse", "mae", "auto"] = AUTO
    """Mean squared (`mse`) or absolute (`mae`) error, for training and for early stopping; `auto`: `mae` with `model.window_norm` (an error in log-ratio units, close to sMAPE), else `mse`."""
    loss_weight: Literal["none", "mase", "auto"] = AUTO
    """`mase`: each window's error weighted by what it weighs in its series' MASE (the window's level over the series' in-sample seasonal-naive error on its training rows), normalised to mean 1, so every series counts by its MASE rather than its scale (with `model.window_norm: standard` the window's sd instead of its level; needs a `model.window_norm`); `none`: every window alike; `auto`: `mase` (with `loss_weight_power` 0.5 where that says `auto`) for many series with `window_norm`, else `none`."""
    loss_weight_power: Power | Annotated[tuple[Power, ...], Field(min_length=1)] | Literal["auto"] = AUTO
    """The MASE weights raised to this power: 1 weighs by MASE, 0.5 halfway towards the unweighted (sMAPE-like) loss. A list gives the members of an ensemble (`model.ensemble`) different losses: member i trains with entry i modulo its length (`[0.5, 1]`: 0.5, 1, 0.5, ...), as N-BEATS' members differ by loss. `auto`: 0.5 for one network, `[0.5, 1]` for an ensemble (docs/bring-your-own-series.md, "Ensembles")."""
    windows_per_epoch: Annotated[int, Field(ge=1)] | Literal["auto"] | None = AUTO
    """Training windows drawn (without replacement) per epoch; null: every window; `auto`: every window up to 20,000, else 20,000 drawn per epoch (the epoch of a large portfolio stays short, so early stopping looks often; docs/bring-your-own-series.md, "Early stopping")."""
    refit: bool = True
    """After selection, train the registered model again on every row up to the last one (its preprocessors too),
    for the epochs early stopping chose, one series or many; the reported evaluation stays the held-out one. The
    served model then forecasts from the end of rows it was trained on rather than from 2 held-out parts past them
    (docs/many-series.md, "Refit"); the kept model is logged beside it, for the gate to re-score a refit champion
    with. `false`: serve the model early stopping kept, for half the training time."""


class RegistryConfig(_Frozen):
    """Registration and the promotion gate.

    A new version becomes `@champion` only when its test metric (RMSE for one series, the mean
    MASE over the series for many) is below the strongest baseline's (or the one `baseline`
    names) by at least `min_gain_over_persistence` and below the current champion's (re-scored
    on the same window) by at least `min_gain_over_champion`; both are relative: 0.02 means 2 %
    lower. A negative margin tolerates being that much worse.
    """

    model_name: str | None = None
    """Registered model name (no '/', ':' or '%'); null: the config's `name`."""
    enabled: bool = True
    """false: log the model but register no version."""
    baseline: Literal["best", "naive", "seasonal_naive", "drift", "moving_average"] = "best"
    """The baseline the gate holds a new version to: `best`, the strongest of those the run computed
    (`evaluate.baselines` and persistence: the lowest test metric), or one of them by name (naive is persistence)."""
    min_gain_over_persistence: float = Field(0.0, gt=-1.0, lt=1.0)
    """Relative gain over the gate's baseline (`registry.baseline`; the name is kept from when it was always
    persistence) a new version needs (0.02 = 2 % lower)."""
    min_gain_over_champion: float = Field(0.0, gt=-1.0, lt=1.0)
    """Relative RMSE gain over the current champion, re-scored on the same test window."""
    max_coverage_error: float | None = Field(None, ge=0.0, lt=1.0)
    """Largest |achieved - nominal| coverage of the 95 % test intervals (ACD) a new version may have to become
    `@champion` (0.03 = 3 points); null: not checked. Needs `intervals.levels` to include 95."""

    @field_validator("model_name")
    @classmethod
    def _registrable(cls, name: str | None) -> str | None:
        """Refuse at load time what MLflow's registry would refuse after training.

        Mirrors MLflow 3.17's `_validate_model_name` (blank, '/', ':', a name that is not its own
        normalised path) and its file registry's extra refusal of '%' (and of '/').
        """
        import posixpath

        if name is None:
            return None
        norm = posixpath.normpath(name)
        if (not name.strip() or any(c in name for c in "/:%") or norm != name or norm == "."
                or norm.startswith("..")):
            raise ValueError(f"{name!r} cannot be registered: a registered model name must not be blank, must not "
                             "contain '/', ':' or '%', and must not be '.' or start with '..' (MLflow's rule)")
        return name


class TrackingConfig(_Frozen):
    """Where MLflow records the runs."""

    experiment: str | None = None
    """MLflow experiment of the training and backtest runs; null: the config's `name`."""
    uri: str | None = None
    """Tracking URI; null: $MLFLOW_TRACKING_URI, else the local store ./mlflow.db."""


BaselineName = Literal["naive", "drift", "moving_average", "seasonal_naive"]


class EvaluateConfig(_Frozen):
    """Baselines scored beside the model in every evaluation (training and backtest).

    `naive` is persistence (the last known value); `drift` extends the line from the first to
    the last known value; `moving_average` repeats the mean of the last `moving_average_window`
    known values; `seasonal_naive` repeats the value one `season_length` earlier and is scored
    only when `season_length` is set.
    """

    baselines: tuple[BaselineName, ...] = ("naive", "drift", "moving_average", "seasonal_naive")
    """Baselines to score (a list; `naive` is required)."""
    moving_average_window: int = Field(5, ge=1)
    """Values averaged by the moving-average baseline."""
    season_length: Annotated[int, Field(ge=2)] | Literal["auto"] | None = AUTO
    """Rows in one season (e.g. 7 for daily data with a weekly cycle); `auto`: from the frequency (h 24, D 7, B 5, W 52, MS/ME 12, QS/QE 4; none for years); null: no season (no seasonal naive baseline)."""

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if "naive" not in self.baselines:
            raise ValueError("evaluate.baselines must include 'naive' (persistence): every score stands next to it")
        return self


class IntervalsConfig(_Frozen):
    """Prediction intervals beside every forecast (`lower_<level>`, `upper_<level>` columns, original units).

    `conformal`: split conformal per horizon step. After training, the absolute errors of the
    forecasts from every validation origin (each window whose first target is a validation row; steps
    past the validation part left out; for many series each error divided by its series' in-sample
    seasonal-naive MAE on the training rows, so one table fits every series) give, per step and level,
    the error at rank (n+1)q of the n errors (`quantile` says how a fractional rank is read); the interval
    is the forecast plus or minus that error (times the series' scale). A step with fewer than
    1/(1-q) - 1 errors takes every step's errors scaled by sqrt(h/k) (a note says so); too few even then:
    the widest error seen, and a note (widen `split.val` for an honest interval). The baselines get intervals the same way, from their own errors.
    """

    levels: tuple[Annotated[int, Field(gt=0, lt=100)], ...] = (80, 95)
    """Nominal coverages in percent (a list); `[]`: no intervals."""
    method: Literal["conformal", "quantile"] = "conformal"
    """How intervals are fitted: `conformal`: forecast +- the validation windows' conformal error quantile; `quantile`: conformalized quantile regression on the head's quantiles (`model.quantiles` must hold (1 - L/100)/2 and (1 + L/100)/2 of every level L): the interval [q_lo - c, q_hi + c], c the conformal quantile of the validation windows' max(q_lo - y, y - q_hi), so its width follows what the head learnt of each window and its coverage is calibrated like the residual one."""
    scaling: Literal["series", "window"] = "series"
    """What each error is measured in: `series`: the target's units (one series) or its series' in-sample
    seasonal-naive MAE (many series); `window`: the window's own recent variability (mean |change| of the
    target over its `window.lookback` inputs), so intervals follow the level and the volatility of the moment."""
    quantile: Literal["expected", "finite_sample"] = "expected"
    """How the conformal rank (n+1)q among n errors is read: `expected` interpolates between neighbours, so the
    expected coverage is the nominal one (the k-th smallest of n covers with probability k/(n+1)); `finite_sample`
    rounds it up: coverage at least nominal, and up to 1/(n+1) above it (up to 4 points with 23 validation windows)."""
    served: Literal["validation", "test", "auto"] = AUTO
    """The errors the served (logged) model's intervals are fitted on: `validation`, those the reported test intervals were fitted on; `test`, those of every test origin, fitted again after scoring (the reported test scores keep the validation intervals). The validation errors are those early stopping (and `model.theta_weight`) chose on, so they flatter the model; the test origins were never looked at, and for a model that is not refit they are also the nearest to where it forecasts from once served. `auto`: `test`, refit or not (docs/intervals.md, "The served intervals"). Where no series has a test window the evaluated intervals are served."""

    @model_validator(mode="after")
    def _check(self) -> IntervalsConfig:
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"intervals.levels lists a level twice: {list(self.levels)}")
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
    """Consecutive test blocks."""
    window: BacktestWindow = "expanding"
    """`expanding` (every earlier row) or `rolling` (the last `initial` rows)."""
    initial: float = Field(0.5, gt=0)
    """Rows before the first cutoff: a fraction of the series or a row count."""
    test_size: int | None = Field(None, ge=1)
    """Rows per test block; null: the rest split evenly."""
    val: float | None = Field(None, ge=0)
    """Validation part of each fold (fraction or rows); null: as in `split`."""

    @model_validator(mode="after")
    def _check(self) -> BacktestConfig:
        if self.initial >= 1 and self.initial != int(self.initial):
            raise ValueError("backtest.initial must be a fraction (<1) or a whole row count")
        if self.val is not None and self.val >= 1 and self.val != int(self.val):
            raise ValueError("backtest.val must be a fraction (<1) or a whole row count")
        return self


class PlotsConfig(_Frozen):
    """The figures a many-series run logs beside its scores (`plots/series_forecasts.png`)."""

    series: tuple[str, ...] = ()
    """Series ids whose test forecasts are drawn with their intervals; empty: the `worst` series by test MASE."""
    worst: int = Field(4, ge=1, le=12)
    """How many series are drawn when `series` is empty: those with the highest test MASE."""


class MonitoringConfig(_Frozen):
    """`pipeline monitor`: the champion's logged forecasts scored on the actuals that arrived since, the inputs
    tested for drift, and the retraining policy (docs/monitoring.md). The registered model carries these settings;
    `pipeline monitor --config` overrides them."""

    experiment: str = "monitoring"
    """MLflow experiment of the monitor runs."""
    forecast_experiment: str = "batch-forecasts"
    """MLflow experiment where `pipeline predict` and the batch-forecast flow log their forecasts."""
    window: int = Field(30, ge=1)
    """The policy reads the last `window` forecast dates scored (pooled over series)."""
    min_points: int = Field(5, ge=1)
    """Fewer scored points than this (in the window, or of a series): no verdict on performance, only a note."""
    max_mase_ratio: float | None = Field(1.5, gt=0)
    """Retrain when live MASE over the window exceeds this multiple of the registered version's test MASE (its MAE
    where the version recorded no MASE); a series above it is reported as degraded. null: never on error."""
    coverage_tolerance: float | None = Field(0.1, ge=0.0, lt=1.0)
    """Retrain when an interval level's live coverage over the window falls below level - tolerance; null: never."""
    drift: bool = True
    """Retrain when at least `drift_share` of the series drifted (a level or variance change of the new rows)."""
    drift_share: float = Field(0.2, gt=0.0, le=1.0)
    """The share of series whose drift triggers retraining."""
    drift_alpha: float = Field(0.01, gt=0.0, lt=1.0)
    """Significance level of the drift tests (Mann-Whitney U on levels, Brown-Forsythe on changes)."""
    drift_min_level_change: float = Field(0.1, ge=0.0)
    """A level shift counts only when the new rows' median moved by at least this fraction of the reference rows' (absolute) median."""
    drift_min_variance_ratio: float = Field(1.5, ge=1.0)
    """A variance change counts only when the spread of the changes grew or shrank by at least this factor."""
    retrain_on_new_series: bool = True
    """Retrain when the data holds series the model was never trained on (it cannot forecast them)."""
    retrain_every_days: float | None = Field(None, gt=0)
    """Retrain when the champion's version is older than this many days, whatever its scores; null: never."""
    max_forecast_runs: int = Field(1000, ge=1)
    """The newest batch-forecast runs read (each one's forecasts CSV)."""
    promote_challenger: bool = False
    """Promote a shadow `@challenger` that did better than `@champion` on the same actuals (an audited alias move,
    as `pipeline promote`); false: the comparison is only reported."""
    challenger_margin: float = Field(0.05, ge=0.0, lt=1.0)
    """How much better the challenger must be: its live MASE at most (1 - margin) x the champion's on the same points."""
    challenger_min_origins: int = Field(3, ge=1)
    """Forecast origins both models were scored on before a promotion is considered."""


class PipelineConfig(_Frozen):
    """A whole run: the sections below, each optional."""

    name: str = "default"
    """Name of the config: it starts every run's name and, unless they are given, names the experiment and the registered model; in a file without it, the file's name without `.yaml`."""
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
    intervals: IntervalsConfig = IntervalsConfig()
    plots: PlotsConfig = PlotsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @model_validator(mode="before")
    @classmethod
    def _names_from_name(cls, raw: Any) -> Any:
        """`tracking.experiment` and `registry.model_name` left out (or null) take the config's name."""
        if not isinstance(raw, dict):
            return raw
        name = raw.get("name", "default")
        out = dict(raw)
        for section, key in (("tracking", "experiment"), ("registry", "model_name")):
            given = out.get(section, {})
            if isinstance(given, BaseModel):
                given = given.model_dump()
            if isinstance(name, str) and isinstance(given, dict) and given.get(key) is None:
                out[section] = {**given, key: name}
        return out

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
        self._check_window_model()
        self._check_quantiles()
        if self.registry.max_coverage_error is not None and 95 not in self.intervals.levels:
            raise ValueError("registry.max_coverage_error checks the 95 % intervals: add 95 to intervals.levels")
        return self

    def _check_quantiles(self) -> None:
        """A quantile head maps onto the target's units, and quantile intervals find their quantiles in it."""
        quantiles = self.model.quantiles
        if len(set(quantiles)) != len(quantiles):
            raise ValueError(f"model.quantiles lists a probability twice: {list(quantiles)}")
        changes = self.preprocess.target_transform in ("difference", "log_return")
        if quantiles and changes and self.window.horizon > 1:
            raise ValueError(f"model.quantiles with preprocess.target_transform {self.preprocess.target_transform} and "
                             f"window.horizon {self.window.horizon}: quantiles of each step's change do not add up to "
                             "quantiles of the level; use a level or log target_transform, or horizon 1")
        if self.intervals.method == "quantile":
            missing = sorted({round(p, 6) for level in self.intervals.levels for p in tail_probabilities(level)}
                             - {round(q, 6) for q in quantiles})
            if missing:
                raise ValueError(f"intervals.method quantile reads each level L from the head's (1 - L/100)/2 and "
                                 f"(1 + L/100)/2 quantiles: add {missing} to model.quantiles")

    def _check_window_model(self) -> None:
        """The network's own window handling (chunks, per-window normalisation, seasonal residual) fits the rest."""
        model, pre, lookback = self.model, self.preprocess, self.window.lookback
        if lookback != AUTO and model.input_chunk != AUTO and lookback % model.input_chunk:
            raise ValueError(f"window.lookback {lookback} must be a multiple of model.input_chunk {model.input_chunk}")
        uses = [k for k, on in (("model.window_norm", model.window_norm not in ("none", AUTO)),
                                ("model.residual_to", model.residual_to == "seasonal_naive")) if on]
        if uses and self.data.target not in self.data.features:
            raise ValueError(f"{' and '.join(uses)} read the target's past values: add the target "
                             f"{self.data.target!r} to data.features")
        if model.window_norm not in ("none", AUTO):
            transforms = {pre.target_transform, *(pre.transform_for(c) for c in self.data.features)} - {"level", AUTO}
            if transforms or {pre.feature_scaler, pre.target_scaler} - {"none", AUTO}:
                raise ValueError(f"model.window_norm {model.window_norm} normalises each window itself: set "
                                 "preprocess.target_transform and the feature transforms to level (or auto) and "
                                 "preprocess.feature_scaler and target_scaler to none")
        if model.residual_to == "seasonal_naive":
            season, named = ((max(as_seasons(model.residual_season)), "model.residual_season") if model.residual_season
                             else (self.evaluate.season_length, "evaluate.season_length"))
            if season is None:
                raise ValueError("model.residual_to seasonal_naive needs a season: set evaluate.season_length")
            if season != AUTO and lookback != AUTO and season > lookback:
                raise ValueError(f"model.residual_to seasonal_naive repeats the window's last season: "
                                 f"window.lookback {lookback} must be >= {named} {season}")
        if self.train.loss_weight == "mase" and model.window_norm == "none":
            raise ValueError("train.loss_weight mase turns errors in the network's window units (log ratios, or "
                             "window sds) into MASE units: it needs model.window_norm log_mean or standard")

    def with_overrides(self, **sections: dict[str, Any]) -> PipelineConfig:
        """A copy with some fields of some sections replaced, validated again."""
        raw = self.model_dump(mode="json")
        for section, values in sections.items():
            given = raw[section]
            if section == "split" and "auto" not in values:  # new sizes are given sizes (SplitConfig.auto)
                given = {k: v for k, v in given.items() if k != "auto"}
            raw[section] = {**given, **values}
        return parse_config(raw, origin="overrides")

    def flat(self) -> dict[str, str]:
        """Dotted `section.key -> value` pairs, as MLflow params."""
        out: dict[str, str] = {"name": self.name}
        for section, values in self.model_dump(mode="json").items():
            if isinstance(values, dict):
                for key, value in values.items():
                    out[f"{section}.{key}"] = str(value)
        return out


def _section_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys a config section accepts, for the section that holds `loc`."""
    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def explain(err: dict[str, Any]) -> str:
    """One validation error in the words of a config file: where, what is wrong, what to write."""
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    kind, given = err["type"], err.get("input")
    key = str(loc[-1]) if loc else ""
    if kind in ("tuple_type", "list_type", "set_type"):
        example = f"[{given}]" if isinstance(given, (str, int, float)) else "[a, b]"
        return f"{where}: must be a list, for example `{key}: {example}` (got {given!r})"
    if kind == "extra_forbidden":
        known = _section_keys(loc)
        return f"{where}: unknown key" + (f"; this section takes: {', '.join(known)}" if known else "")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where}: must be a section of `key: value` lines, not {given!r}"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{where}: must be one of {allowed} (got {given!r})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{where}: must be a whole number{' or auto' if key in AUTO_KEYS else ''} (got {given!r})"
    if kind in ("float_parsing", "float_type"):
        return f"{where}: must be a number (got {given!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"{where}: must be true or false (got {given!r})"
    if kind == "date_from_datetime_parsing" or kind.startswith("date_"):
        return f"{where}: must be a date written YYYY-MM-DD (got {given!r})"
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input ")
    shown = "" if kind == "value_error" or isinstance(given, dict) else f" (got {given!r})"
    return f"{where}: {message}{shown}"


def _without_union_branches(errors: list[Any]) -> list[dict[str, Any]]:
    """A setting that takes a number or `auto` fails on both: keep the number's error, at the setting's own place."""
    out = []
    for err in errors:
        loc = tuple(err["loc"])
        if loc and isinstance(loc[-1], str) and (loc[-1] in ("int", "float") or loc[-1].startswith(("literal[", "constrained-"))):
            if err["type"] == "literal_error" and err.get("ctx", {}).get("expected") == "'auto'":
                continue
            err = {**err, "loc": loc[:-1]}
        out.append(err)
    return out


def parse_config(raw: dict[str, Any], origin: str = "<dict>") -> PipelineConfig:
    """Validate a config mapping; a ConfigError lists every problem with what to write instead."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {explain(err)}" for err in _without_union_branches(exc.errors())]
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
    raw.setdefault("name", path.stem)  # runs, experiment and model of a config without a name follow its file
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
