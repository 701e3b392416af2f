"""Hyper-parameter sweeps: the search-space file, one config per trial, the Optuna study, a trial's objective.

A sweep samples config values with Optuna's TPE sampler (seeded), trains one model per trial
on the training rows and scores it on the validation rows only: the objective is the
validation MASE in original units (comparable across transforms and scalers, unlike the
scaled validation loss). Hopeless trials stop early: every epoch's validation loss goes to a
median pruner. No Prefect and no MLflow here: `flows/sweep.py` runs each trial as a task and
logs it as a child run.

Pruning needs the finished trials' loss curves. A trial may run in another process or on a
Dask worker, far from the study, so the flow hands each trial a snapshot of the finished
trials (`TrialSpec.finished`) and the trial decides against a local in-memory copy of the study:
no shared storage, the same code on threads, processes and a cluster.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from pipeline.config.settings import PipelineConfig
from pipeline.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from pipeline.data.panel import Panel

log = logging.getLogger(__name__)

Kind = Literal["int", "float", "categorical"]
KINDS: tuple[Kind, ...] = ("int", "float", "categorical")
# The config sections a sweep may vary: how the data is windowed and transformed, the model and its training.
SECTIONS = ("window", "preprocess", "model", "train")
TOP_KEYS = ("trials", "seed", "pruning", "dask_address", "params")
PARAM_KEYS = {"int": ("type", "low", "high", "step", "log"), "float": ("type", "low", "high", "step", "log"),
              "categorical": ("type", "choices")}
PRUNING_KEYS = ("enabled", "startup_trials", "warmup_epochs")
OBJECTIVE = "val_mase"  # what the sweep minimises, and the metric its selection reads


class SweepSpaceError(ConfigError):
    """The search-space file is missing or breaks a rule (exit status 2, like a bad config)."""


@dataclass(frozen=True)
class Param:
    """One searched config value: `name` is its dotted config key, e.g. `model.hidden_size`."""

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def extremes(self) -> tuple[Any, ...]:
        """Values that bound what this parameter can take: each must make a valid config."""
        if self.kind == "categorical":
            return self.choices
        cast = int if self.kind == "int" else float
        return cast(self.low), cast(self.high)


@dataclass(frozen=True)
class Pruning:
    """Median pruning: after `warmup_epochs` epochs a trial whose validation loss is worse than the
    median of the finished trials at the same epoch stops; never before `startup_trials` have finished."""

    enabled: bool = True
    startup_trials: int = 2
    warmup_epochs: int = 5


@dataclass(frozen=True)
class SweepSpace:
    """A parsed search-space file."""

    source: str
    params: tuple[Param, ...]
    trials: int = 8
    seed: int = 0
    pruning: Pruning = Pruning()
    dask_address: str | None = None

    def distributions(self) -> dict[str, Any]:
        return {p.name: p.distribution() for p in self.params}


# ---------------------------------------------------------------- the space file
def _number(value: Any) -> float | None:
    """A YAML number, or a numeric string (PyYAML reads `1e-4` as text): None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _config_fields(section: str) -> list[str]:
    return list(PipelineConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]


def parse_param(name: str, spec: Any, problems: list[str]) -> Param | None:
    """One `params:` entry, or None with its problems appended (`params.<key>: <rule>`)."""
    where = f"params.{name}"
    section, _, key = str(name).partition(".")
    if section not in SECTIONS or not key:
        problems.append(f"{where}: a searched key is `section.key` with section one of {list(SECTIONS)}")
        return None
    if key not in _config_fields(section):
        problems.append(f"{where}: unknown key; section `{section}` takes: {', '.join(_config_fields(section))}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where}: must be a mapping such as `{{type: int, low: 1, high: 4}}` (got {spec!r})")
        return None
    kind = spec.get("type")
    if kind not in KINDS:
        problems.append(f"{where}.type: must be one of {list(KINDS)} (got {kind!r})")
        return None
    start = len(problems)
    unknown = sorted(set(spec) - set(PARAM_KEYS[kind]))
    if unknown:
        problems.append(f"{where}: unknown key(s) {unknown} for type {kind}; it takes: {', '.join(PARAM_KEYS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: must be a non-empty list (got {choices!r})")
        elif any(isinstance(c, (dict, list)) for c in choices) or len({repr(c) for c in choices}) != len(choices):
            problems.append(f"{where}.choices: must be distinct plain values (got {choices!r})")
        return None if len(problems) > start else Param(name, "categorical", choices=tuple(choices))
    low, high, step = (_number(spec.get(k)) for k in ("low", "high", "step"))
    use_log = spec.get("log", False)
    for bound, value in (("low", low), ("high", high)):
        if value is None:
            problems.append(f"{where}.{bound}: must be a number (got {spec.get(bound)!r})")
        elif kind == "int" and value != int(value):
            problems.append(f"{where}.{bound}: must be a whole number for type int (got {spec.get(bound)!r})")
    if "step" in spec and (step is None or step <= 0 or (kind == "int" and step != int(step))):
        problems.append(f"{where}.step: must be a positive {'whole ' if kind == 'int' else ''}number (got {spec.get('step')!r})")
    if not isinstance(use_log, bool):
        problems.append(f"{where}.log: must be true or false (got {use_log!r})")
    if low is not None and high is not None:
        if low >= high:
            problems.append(f"{where}: low must be below high (got low={spec['low']!r}, high={spec['high']!r})")
        if use_log is True and low <= 0:
            problems.append(f"{where}.low: must be > 0 with log: true (got {spec['low']!r})")
    if use_log is True and "step" in spec:
        problems.append(f"{where}: log and step cannot be combined (Optuna's rule)")
    if len(problems) > start:
        return None
    return Param(name, kind, low=low, high=high, step=step if "step" in spec else None, log=use_log)


def parse_space(raw: Any, source: str = "<space>") -> SweepSpace:
    """Validate a search-space mapping; a SweepSpaceError lists every problem as `file: key: rule`."""
    if not isinstance(raw, dict):
        raise SweepSpaceError(f"{source}: the search space must be a mapping with a `params:` section")
    problems: list[str] = []
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        problems.append(f"{', '.join(map(str, unknown))}: unknown key; a space file takes: {', '.join(TOP_KEYS)}")
    trials, seed = raw.get("trials", 8), raw.get("seed", 0)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        problems.append(f"trials: must be a whole number >= 1 (got {trials!r})")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed: must be a whole number (got {seed!r})")
    pruning = _parse_pruning(raw.get("pruning", {}), problems)
    address = raw.get("dask_address")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        problems.append(f"dask_address: must be a scheduler address such as tcp://host:8786 (got {address!r})")
    params_raw = raw.get("params")
    params: list[Param] = []
    if not isinstance(params_raw, dict) or not params_raw:
        problems.append("params: must map at least one `section.key` to its range, e.g. "
                        "`model.hidden_size: {type: int, low: 8, high: 64}`")
    else:
        params = [p for name, spec in params_raw.items() if (p := parse_param(str(name), spec, problems))]
    if problems:
        raise SweepSpaceError(f"invalid search space {source}:\n" + "\n".join(f"  {source}: {p}" for p in problems))
    return SweepSpace(source=source, params=tuple(params), trials=trials, seed=seed, pruning=pruning,
                      dask_address=address)


def _parse_pruning(raw: Any, problems: list[str]) -> Pruning:
    if not isinstance(raw, dict):
        problems.append(f"pruning: must be a mapping with keys {', '.join(PRUNING_KEYS)} (got {raw!r})")
        return Pruning()
    unknown = sorted(set(raw) - set(PRUNING_KEYS))
    if unknown:
        problems.append(f"pruning: unknown key(s) {unknown}; it takes: {', '.join(PRUNING_KEYS)}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"pruning.enabled: must be true or false (got {enabled!r})")
    counts = {}
    for key in ("startup_trials", "warmup_epochs"):
        value = raw.get(key, getattr(Pruning, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"pruning.{key}: must be a whole number >= 0 (got {value!r})")
            value = 0
        counts[key] = value
    return Pruning(enabled=enabled is not False, **counts)


def load_space(path: str | Path, base: PipelineConfig | None = None) -> SweepSpace:
    """Read and validate a search-space YAML file; with `base`, also check that every range's ends
    (and every choice) make a valid config, so a bad range fails now and not at trial 37."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpaceError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SweepSpaceError(f"search space file {path} is not valid YAML: {exc}") from None
    space = parse_space(raw, str(path))
    if base is not None:
        check_against(space, base)
    return space


def check_against(space: SweepSpace, base: PipelineConfig) -> None:
    """SweepSpaceError unless the base config has a validation part and every range end makes a valid config."""
    problems = []
    if base.split.val == 0 and base.split.train_end is None:
        problems.append("the config has no validation part (split.val is 0): a sweep selects on validation scores")
    if base.data.series_column is not None and base.model.strategy == "local":
        problems.append("model.strategy local trains a network per series: a sweep of many series tunes the global "
                        "strategy's one network (set model.strategy: global, or sweep one series' config)")
    for param in space.params:
        for value in param.extremes():
            try:
                trial_config(base, {param.name: value})
            except ConfigError as exc:
                reason = str(exc).split("\n", 1)[-1].strip()
                problems.append(f"params.{param.name}: the value {value!r} makes an invalid config ({reason})")
    if problems:
        raise SweepSpaceError(f"search space {space.source} does not fit the config:\n"
                              + "\n".join(f"  {space.source}: {p}" for p in problems))


# ---------------------------------------------------------------- trials
def threads_per_trial(parallel: int, cores: int) -> int:
    """Torch threads for each of `parallel` trials sharing `cores` cores, so they do not oversubscribe."""
    return max(1, cores // max(1, parallel))


def trial_config(base: PipelineConfig, params: Mapping[str, Any], threads: int | None = None) -> PipelineConfig:
    """The base config with a trial's values (dotted keys) and, when given, its torch threads."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        section, _, key = name.partition(".")
        sections.setdefault(section, {})[key] = value
    if threads is not None:
        sections.setdefault("train", {})["num_threads"] = threads
    return base.with_overrides(**sections) if sections else base


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs, picklable: its number, values, config and the finished trials (for pruning)."""

    number: int
    params: dict[str, Any]
    config: PipelineConfig  # the base config with the trial's values
    pruning: Pruning
    parallel: int = 1  # trials running at once on one machine: they share its cores
    tracking_uri: str | None = None  # where the sweep logs: a trial on a Dask worker writes there too
    finished: tuple[Any, ...] = ()  # optuna FrozenTrials finished before this trial started

    def thread_cap(self) -> int:
        """The most torch threads the trial may use on the machine it runs on: its cores over `parallel`."""
        from pipeline.runtime import usable_cores

        return threads_per_trial(self.parallel, usable_cores())


@dataclass
class TrialOutcome:
    """What a trial came to: `complete` (with the objective), `pruned` or `failed`."""

    number: int
    params: dict[str, Any]
    state: Literal["complete", "pruned", "failed"]
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    val_loss: dict[int, float] = field(default_factory=dict)  # epoch -> validation loss (scaled units)
    seconds: float = 0.0
    threads: int | None = None  # torch threads it trained with: the winner's refit uses as many (same weights)
    error: str | None = None


def make_pruner(pruning: Pruning) -> Any:
    import optuna

    if not pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials, n_warmup_steps=pruning.warmup_epochs)


def quiet_optuna() -> None:
    """Optuna's warnings go through the standard logging tree, not its own stderr handler; its per-trial
    INFO lines stay out (the flow logs each trial's end itself)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_study(space: SweepSpace) -> Any:
    """An in-memory study minimising the objective: TPE seeded by `space.seed`, median pruning."""
    import optuna

    quiet_optuna()
    sampler = optuna.samplers.TPESampler(seed=space.seed)
    return optuna.create_study(direction="minimize", sampler=sampler, pruner=make_pruner(space.pruning))


class PruningCheck:
    """An `on_epoch_end` hook: report each epoch's validation loss, raise `optuna.TrialPruned` when hopeless.

    Decides against a local in-memory study holding the finished trials (see the module notes).
    """

    def __init__(self, pruning: Pruning, finished: Sequence[Any]) -> None:
        import optuna

        quiet_optuna()
        study = optuna.create_study(direction="minimize", pruner=make_pruner(pruning))
        study.add_trials(list(finished))
        self.trial = study.ask()
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        import optuna

        if val_loss is None or not math.isfinite(val_loss):
            return
        self.trial.report(val_loss, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise optuna.TrialPruned(f"validation loss {val_loss:.6g} at epoch {epoch + 1} is worse than the median")


def peak_rss_mb() -> float:
    """The peak resident memory of the process running the trial so far, in MiB (NaN where unknown).

    On a process pool or a Dask worker that is the worker: the libraries it imported plus the
    largest trial it ran; on a thread it is the whole sweep's process.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def validation_scores(data: Panel, preps: Any, model: Any, cfg: PipelineConfig) -> tuple[float, dict[str, float]]:
    """The objective (validation MASE, the mean over series; M4's definition, scaled by each series' rows before
    its validation part) and the validation RMSE, MAE and RMSE ratio."""
    from pipeline.training import steps

    cfg = steps.with_theta_weight(lambda _: model, data, preps, cfg)  # combined with Theta as training would
    forecasts = steps.forecast_panel(lambda _: model, data, preps, cfg, "val")
    means = steps.score_panel(forecasts, data, preps, cfg, "val").means()
    return means["val_mase"], {k: means[k] for k in ("val_rmse", "val_mae", "val_rmse_ratio") if k in means}


def run_trial(data: Panel, spec: TrialSpec, on_epoch_end: Any = None) -> TrialOutcome:
    """Train the trial's config on the training rows and score it on the validation rows: its outcome.

    `data` is one validated series (a panel of one; `auto` settings resolved here, as training
    resolves them) or many (its config resolved over every series before the sweep): one global
    network on every series' windows, the objective their mean validation MASE.

    Torch threads: what `fit` would pick for the work (one for a small model), at most the trial's
    `thread_cap`, so `parallel` trials on one machine never ask for more threads than it has cores.

    `on_epoch_end` (e.g. MLflow's epoch logger) sees every epoch, the pruned one included. A
    PipelineError (a diverged loss, a lookback too long for the data) propagates: the trial failed.
    """
    import optuna

    from pipeline.data import panel
    from pipeline.data.auto import resolve_auto
    from pipeline.model.training import fit, init_model
    from pipeline.runtime import pick_threads
    from pipeline.training import steps

    started, cpu_started = time.perf_counter(), time.process_time()
    one = data.column is None  # as training resolves it: the winner retrains alike
    cfg = resolve_auto(spec.config, data.series[panel.ONE_SERIES]) if one else spec.config
    check = PruningCheck(spec.pruning, spec.finished)
    losses: dict[int, float] = {}

    def hook(epoch: int, train_loss: float, val_loss: float | None) -> None:
        if val_loss is not None:
            losses[epoch] = val_loss
        if on_epoch_end is not None:
            on_epoch_end(epoch, train_loss, val_loss)
        check(epoch, train_loss, val_loss)

    prepared = steps.prepare_panel(data, cfg)
    windows = steps.stacked(prepared)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    train = windows["train"]
    wanted = pick_threads(model, min(cfg.train.batch_size or len(train), len(train)), train.X.shape[1],
                          cfg.train.num_threads)
    train_cfg = cfg.train.model_copy(update={"num_threads": min(wanted, spec.thread_cap())})
    try:
        result = fit(model, train, windows["val"], train_cfg, on_epoch_end=hook)
    except optuna.TrialPruned:
        seconds = time.perf_counter() - started
        log.info("trial %d pruned at epoch %d", spec.number, (check.pruned_at or 0) + 1)
        return TrialOutcome(spec.number, dict(spec.params), "pruned", val_loss=losses, seconds=seconds,
                            threads=train_cfg.num_threads, metrics={"epochs": float(len(losses)), "time_trial_s": seconds})
    value, scores = validation_scores(data, prepared, result.model, cfg)
    seconds = time.perf_counter() - started
    metrics = {
        OBJECTIVE: value, **scores,
        "best_val_loss": min(result.val_loss) if result.val_loss else float("nan"),
        "best_epoch": float(result.best_epoch + 1), "epochs": float(result.epochs_run),
        "time_train_s": result.seconds, "time_trial_s": seconds, "threads": float(result.threads),
        "cpu_trial_s": time.process_time() - cpu_started,  # this process's CPU: all its threads
        "peak_rss_mb": peak_rss_mb(),
    }
    if not math.isfinite(value):  # a constant training target: fall back to RMSE so trials still rank
        value = scores["val_rmse"]
    return TrialOutcome(spec.number, dict(spec.params), "complete", value=value, metrics=metrics,
                        val_loss=losses, seconds=seconds, threads=result.threads)


def record_outcome(study: Any, trial: Any, outcome: TrialOutcome) -> None:
    """Tell the study how a trial it asked for ended, with its loss curve (for later trials' pruning)."""
    from optuna.trial import TrialState

    for epoch, loss in sorted(outcome.val_loss.items()):
        if math.isfinite(loss):
            trial.report(loss, epoch)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=TrialState.PRUNED if outcome.state == "pruned" else TrialState.FAIL)


def finished_trials(study: Any) -> tuple[Any, ...]:
    """The study's finished (complete or pruned) trials, for a new trial's pruning decisions."""
    from optuna.trial import TrialState

    return tuple(study.get_trials(deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def best_outcome(outcomes: Sequence[TrialOutcome]) -> TrialOutcome:
    """The complete trial with the lowest objective (ties: the earlier trial); TrainingError when none completed."""
    complete = [o for o in outcomes if o.state == "complete" and o.value is not None and math.isfinite(o.value)]
    if not complete:
        states = ", ".join(f"trial {o.number}: {o.state}" + (f" ({o.error})" if o.error else "") for o in outcomes)
        raise TrainingError(f"no trial of the sweep completed ({states}); widen the space, add trials or loosen pruning")
    return min(complete, key=lambda o: (o.value, o.number))


def summary_metrics(outcomes: Sequence[TrialOutcome], best: TrialOutcome) -> dict[str, float]:
    """The parent run's sweep metrics: the best trial's validation scores and the trial counts by state."""
    counts = {state: sum(o.state == state for o in outcomes) for state in ("complete", "pruned", "failed")}
    return {**{f"best_{k}" if not k.startswith("best_") else k: v for k, v in best.metrics.items()},
            "best_trial": float(best.number), "trials": float(len(outcomes)),
            **{f"trials_{state}": float(n) for state, n in counts.items()}}
