"""The MLflow Model Registry: register a version, apply the promotion gate, record every alias move.

Aliases, not stages: `@champion` is the version to serve, `@challenger` the newest version the
gate has not (yet) promoted. The decision itself is `pipeline.tracking.promotion.decide` (numbers in, no
MLflow); here the champion is re-scored with its own logged preprocessing and the decision is written.
Registration and alias moves happen last and all or nothing; every move is recorded as a run in
the audit experiment (`pipeline.tracking.history` describes the record), so the champion's lineage
survives any process and can be rolled back, without cluttering the registered model's page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd

from pipeline.config.settings import theta_weight
from pipeline.errors import PipelineError, RegistryError, TrackingError
from pipeline.runtime import ProcessOwner, kill_point
from pipeline.tracking.history import (
    AUDIT_EXPERIMENT,
    MAX_REASON,
    AliasMove,
    audit_run_name,
    audit_tags,
    champion_lineage,
    in_order,
    legacy_moves,
    model_key,
    move_from_tags,
    new_key,
)
from pipeline.tracking.promotion import CHALLENGER, CHAMPION, Decision, Score, TestWindow, decide
from pipeline.tracking.store import ensure_experiment, is_local_sqlite, retry

log = logging.getLogger(__name__)

EVALUATED_NOTE = "re-scored with the model its run evaluated, not its refit on every row"  # `rescore`, format 9


# ------------------------------------------------------------------ the gate, with MLflow


def rescore(model_uri: str, raw_rows: pd.DataFrame, target: str, score_table: Callable[[pd.DataFrame], Score],
            history: pd.DataFrame | None = None) -> Score:
    """Score a logged model, with its own preprocessing and scalers, on the given test windows: its forecasts of
    every window of `raw_rows` scored by `score_table` (`promotion.table_rmse`, `promotion.table_mase`); of
    `history` instead (the same windows, every row before them), when given, for a model whose Theta part reads
    whole histories (`model.theta_weight`), so that it forecasts as it did when it was evaluated.

    Never raises for a model that cannot score this data (another target, missing columns,
    too short a horizon): the returned Score says why, and the gate refuses.
    """
    from pipeline.serving.pyfunc import load_pyfunc

    try:
        # suppress_warnings: no check of its pinned requirements against this environment (0.5 s
        # to map every installed file to a module); the gate scores it here, as it runs here.
        # load_pyfunc: the champion's copy of the code must not shadow today's (the model is data).
        model = load_pyfunc(model_uri, suppress_warnings=True)
    except Exception as exc:  # noqa: BLE001 - a champion that cannot load cannot be compared
        return Score(None, 0, f"could not be loaded ({type(exc).__name__}: {str(exc)[:300]})")
    bundle = getattr(model.unwrap_python_model(), "bundle", None)
    if bundle is not None and bundle.config.data.target != target:
        return Score(None, 0, f"forecasts {bundle.config.data.target!r}, not {target!r}: not comparable")
    evaluated = bundle is not None and bundle.evaluated is not None  # refit: score the model its run evaluated
    scored = bundle.evaluated if evaluated else bundle
    if scored is not None and history is not None and theta_weight(scored.config):
        raw_rows = history
    try:
        table = model.predict(raw_rows, params={"all_windows": True, **({"evaluated": True} if evaluated else {})})
    except Exception as exc:  # noqa: BLE001 - e.g. the data lack a column it needs
        return Score(None, 0, f"could not score this data ({str(exc).splitlines()[0][:300]})")
    score = score_table(table)
    return replace(score, note=EVALUATED_NOTE) if evaluated and score.rmse is not None else score


def in_sample_note(client: Any, run_id: str, window_start: str) -> str | None:
    """Why a champion's re-score is partly in-sample, or None: a refit champion (`train.refit`, the param of its run
    `run_id`) trained on every row of its data, and its data (the run's `data_end` tag) reach into the test window
    that starts at `window_start`. Its score there is then flattered, which favours keeping it. None too when its
    run cannot be read (the re-score itself says what went wrong). A champion of format 9 and later carries the
    model its run evaluated, and is re-scored with that instead (`rescore`): this is for those logged before."""
    from mlflow.exceptions import MlflowException

    try:
        data = client.get_run(run_id).data
    except MlflowException:
        return None
    end = data.tags.get("data_end")
    if data.params.get("train.refit") != "True" or not end or pd.Timestamp(end) < pd.Timestamp(window_start).normalize():
        return None
    return f"partly in-sample: refit on its data through {end}, inside this window"


def rescore_champion_and_decide(client: Any, name: str, version: str, challenger: float, baseline_score: float,
                                rescore_champion: Callable[[str], Score], margins: tuple[float, float],
                                measure: tuple[str, str] = ("rmse", "naive"),
                                coverage: tuple[float, float] | None = None,
                                window_start: str | None = None) -> Decision:
    """Find the current `@champion` (if any), re-score it with `rescore_champion` and take the promotion decision
    (`promotion.decide`) against it; nothing is written.

    `measure`: the metric compared and the baseline beside the champion (a metric id: rmse or mase; naive,
    seasonal_naive, ...); `coverage`: the challenger's 95 % ACD and the largest allowed (registry.max_coverage_error),
    or None for no calibration check; `window_start`: the first date of the test window, to say when a refit
    champion trained on it (`in_sample_note`)."""
    current = champion_version(client, name)
    current_version = str(current.version) if current is not None else None
    score = rescore_champion(f"models:/{name}/{current_version}") if current_version else None
    if score is not None and score.note is None and window_start:
        score = replace(score, note=in_sample_note(client, current.run_id, window_start))
    return decide(version, challenger, baseline_score, current_version, score, margins, *measure, coverage=coverage)


# ------------------------------------------------------------------ registry basics


def get_aliases(client: Any, name: str) -> dict[str, str]:
    """Alias -> version of a registered model (read from the model: version search drops them)."""
    model = client.get_registered_model(name)
    aliases = model.aliases
    pairs = aliases.items() if isinstance(aliases, dict) else ((a.alias, a.version) for a in aliases)
    return {alias: str(version) for alias, version in pairs}


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="LSTM forecaster trained by the pipeline's training flow")
        except MlflowException:  # two first registrations at once: fine if the other one created it
            client.get_registered_model(name)


def champion_version(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def require_model(client: Any, name: str) -> Any:
    """The registered model, or a RegistryError listing the names that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models() if not m.name.endswith(LOCK_SUFFIX))
        raise RegistryError(f"no registered model named {name!r} at {client.tracking_uri}; "
                            f"known models: {', '.join(known) or 'none'}") from None


def name_filter(name: str, key: str = "name") -> str:
    """`<key> = '...'` for MLflow's search (`name` of a model, `params.model_name` of a run), in the quotes the
    name does not contain (a name may hold `'`)."""
    return f"{key} = '{name}'" if "'" not in name else f'{key} = "{name}"'


def require_version(client: Any, name: str, version: str) -> Any:
    """A model version, or a RegistryError listing the versions that exist."""
    from mlflow.exceptions import MlflowException

    require_model(client, name)
    if not str(version).isdigit():
        raise RegistryError(f"model version must be a number, got {version!r}")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(name_filter(name)))
        raise RegistryError(f"model {name!r} has no version {version}; versions: "
                            f"{', '.join(map(str, versions)) or 'none'}") from None


@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved to a registered version (when it names one)."""

    uri: str  # what to load: pinned to the version when it came from the registry
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


def refuse_bare_name(uri: str) -> None:
    """Raise RegistryError for a model given as a bare word: no URI scheme (`models:`, `runs:`, `file:`...)
    and no existing local path. MLflow would fail on it deep inside, with long tracebacks."""
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", uri) and not os.path.exists(uri):
        raise RegistryError(
            f"model {uri!r} is neither a model URI nor an existing path: a registered model is "
            f"models:/NAME@ALIAS or models:/NAME/VERSION (e.g. models:/{uri or 'NAME'}@champion); "
            f"runs:/RUN_ID/PATH and local model directories work too")


def resolve_model(client: Any, uri: str) -> ModelRef:
    """Pin `models:/NAME@ALIAS` or `models:/NAME/VERSION` to a version; other URIs pass through.

    Other URIs (`runs:/...`, `file:...`, any `scheme:`) and existing local paths pass through as
    given. A bare word such as `lstm-forecaster` is neither: MLflow would fail on it with long
    tracebacks, so it is refused here with the forms a registered model takes.
    """
    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        if uri.startswith("models:/"):
            raise RegistryError(f"cannot read model URI {uri!r}; use models:/NAME@ALIAS or models:/NAME/VERSION")
        refuse_bare_name(uri)
        return ModelRef(uri)
    name, alias, version = match.groups()
    require_model(client, name)
    if alias:
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            have = get_aliases(client, name)
            raise RegistryError(f"model {name!r} has no alias @{alias}; aliases: "
                                f"{', '.join(f'@{a} -> v{v}' for a, v in sorted(have.items())) or 'none'}") from None
    else:
        mv = require_version(client, name, version)
    return ModelRef(f"models:/{name}/{mv.version}", name, str(mv.version), alias, mv.run_id)


# ------------------------------------------------------------------ history: the audit experiment


def _audit_runs(client: Any, name: str) -> list[Any]:
    """The live (not deleted) audit runs of model `name`, every page."""
    uri = client.tracking_uri
    experiment = retry(lambda: client.get_experiment_by_name(AUDIT_EXPERIMENT), "find the audit experiment", uri)
    if experiment is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = retry(lambda: client.search_runs([experiment.experiment_id], f"tags.`audit.model_key` = '{model_key(name)}'",
                                                max_results=1000, order_by=["attributes.start_time ASC"],
                                                page_token=token), "read the alias history", uri)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def read_history(client: Any, name: str) -> list[AliasMove]:
    """Every recorded alias move of a model, oldest first: audit runs and any older history tags."""
    entries = [(key, move) for _, key, move in legacy_moves(require_model(client, name).tags or {}, name)]
    for run in _audit_runs(client, name):
        try:
            entries.append(move_from_tags(run.data.tags))
        except KeyError as exc:
            log.warning("%s: audit run %s lacks the tag audit.%s; skipped", name, run.info.run_id, exc.args[0])
    return in_order(entries)


def _audit_experiment_id(client: Any) -> str:
    """The audit experiment's id, created on first use."""
    return ensure_experiment(client, AUDIT_EXPERIMENT)


def record_move(client: Any, name: str, move: AliasMove, key: str | None = None,
                written: list[str] | None = None) -> str:
    """Write one move as a finished run of the audit experiment; its run id (also added to `written`
    as soon as the run exists, so that a failure while finishing it still undoes it)."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    uri = client.tracking_uri
    experiment_id = _audit_experiment_id(client)
    run_name = audit_run_name(name, move)
    at_ms = int(datetime.fromisoformat(move.at).timestamp() * 1000)
    tags = {MLFLOW_RUN_NAME: run_name, **audit_tags(name, move, key or new_key())}
    run = retry(lambda: client.create_run(experiment_id, start_time=at_ms, tags=tags, run_name=run_name),
                "record alias move", uri)
    run_id = run.info.run_id
    if written is not None:
        written.append(run_id)
    retry(lambda: client.set_terminated(run_id, "FINISHED", end_time=at_ms), "record alias move", uri)
    return run_id


def migrate_history(client: Any, name: str) -> int:
    """Move a model's `alias_history.*` tags (earlier versions' history) into audit runs; how many.

    Idempotent and never raises: a move already recorded under its key is not written twice, and
    whatever is left behind is still read by `read_history`.
    """
    try:
        legacy = legacy_moves(require_model(client, name).tags or {}, name)
        if not legacy:
            return 0
        recorded = {run.data.tags.get("audit.key") for run in _audit_runs(client, name)}
        for tag, key, move in legacy:
            if key not in recorded:
                record_move(client, name, move, key)
            client.delete_registered_model_tag(name, tag)
        log.info("%s: moved %d alias history tags into the %r experiment", name, len(legacy), AUDIT_EXPERIMENT)
        return len(legacy)
    except Exception as exc:  # noqa: BLE001 - the old tags stay readable; try again on the next write
        log.warning("%s: could not move the alias history tags into %r: %s", name, AUDIT_EXPERIMENT, exc)
        return 0


def move_alias(client: Any, name: str, alias: str, version: str | None, by: str, reason: str, kind: str,
               run_id: str | None = None, written: list[str] | None = None) -> AliasMove:
    """Point `alias` at `version` (None: remove it) and record the move in the audit experiment.

    `written` collects the audit runs written, for `restore_aliases` to delete after a failure.
    """
    uri = client.tracking_uri
    before = retry(lambda: get_aliases(client, name), "read aliases", uri).get(alias)
    if version is None:
        if before is not None:
            retry(lambda: client.delete_registered_model_alias(name, alias), f"remove @{alias}", uri)
    else:
        retry(lambda: client.set_registered_model_alias(name, alias, str(version)), f"set @{alias}", uri)
    move = AliasMove(alias, before, None if version is None else str(version),
                     datetime.now(timezone.utc).isoformat(timespec="seconds"), by, reason[:MAX_REASON], kind, run_id)
    record_move(client, name, move, written=written)
    log.info("%s: @%s %s -> %s by %s (%s)", name, alias, before, move.to_version, by, kind)
    return move


# ------------------------------------------------------------------ state changes

LOCK_SUFFIX = ".registration-lock"
LOCK_WAIT_S = float(os.environ.get("PIPELINE_REGISTRY_LOCK_WAIT_S", "600"))  # give up waiting after this
LOCK_STALE_S = 300.0  # a lock older than this was left by a process that died holding it
LOCK_HOLDER_TAG = "pipeline.lock_holder"


@dataclass(frozen=True)
class LockState:
    """A registration lock as read back: since when (epoch seconds), held by whom, and the holder's process."""

    since: float | None
    holder: str
    owner: ProcessOwner | None

    def describe(self) -> str:
        when = "" if self.since is None else (
            f" since {datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec='seconds')}"
            f" ({time.time() - self.since:.0f} s ago)")
        return f"held by {self.holder or 'an unknown process'}{when}"


@contextmanager
def registration_lock(client: Any, name: str, wait_s: float | None = None) -> Iterator[None]:
    """Registrations of `name` take turns across processes and machines sharing a tracking server.

    The lock is a registered model `<name>.registration-lock`: creating a registered model is
    atomic on every MLflow store (a unique name), so exactly one process creates it; the others
    wait and retry, and the holder deletes it when done. The lock records its holder's process
    (`runtime.ProcessOwner`): a lock whose holder on this host has ended is broken at once, and one
    older than LOCK_STALE_S (a holder elsewhere that died) is broken too. A waiting command says
    at once what it waits for, since when, held by whom and how long it will wait. On a local
    SQLite store the caller's file lock (`store.store_lock`) already serialises, and this is a no-op.
    """
    from mlflow.exceptions import MlflowException

    if is_local_sqlite(client.tracking_uri):
        yield
        return
    lock = f"{name}{LOCK_SUFFIX}"
    here = ProcessOwner.current()
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    started = time.monotonic()
    said = False
    while True:
        try:
            client.create_registered_model(lock, description=f"registration of {name!r} in progress ({here.label}); "
                                           "deleted when it ends", tags={LOCK_HOLDER_TAG: here.label, **here.tags()})
            break
        except MlflowException:
            state = _lock_state(client, lock)
            if state is None:  # released a moment ago
                continue
            ended = state.owner.gone(here) if state.owner is not None else None
            held = None if state.since is None else time.time() - state.since
            if ended is not None or (held is not None and held > LOCK_STALE_S):
                why = f"its process has ended: {ended}" if ended else f"held for {held:.0f} s: its process died"
                log.warning("%s: breaking the registration lock %r %s (%s)", name, lock, state.describe(), why)
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(lock)
                continue
            if time.monotonic() - started > wait_s:
                raise RegistryError(f"registration of {name!r} waited {wait_s:.0f} s for the lock {lock!r} "
                                    f"{state.describe()}; if no run is registering, delete that registered model")
            if not said:
                stale_in = "" if held is None else f", or breaks it in {max(0.0, LOCK_STALE_S - held):.0f} s as left by a dead process"
                log.warning("%s: waiting for the registration lock %r %s; waits up to %.0f s%s", name, lock,
                            state.describe(), wait_s, stale_in)
                said = True
            time.sleep(0.5 + random.random())
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as exc:
            log.warning("%s: could not release the registration lock %r: %s (the next registration on this host "
                        "breaks it at once, elsewhere after %.0f s)", name, lock, exc, LOCK_STALE_S)


def _lock_state(client: Any, lock: str) -> LockState | None:
    """The lock as it stands; None when it is gone (released a moment ago)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(lock)
    except MlflowException:
        return None
    tags = dict(getattr(model, "tags", None) or {})
    created = model.creation_timestamp
    return LockState(created / 1000 if created else None, tags.get(LOCK_HOLDER_TAG, ""), ProcessOwner.from_tags(tags))


def register_and_promote(
    client: Any,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    window: TestWindow,
    challenger: float,
    baseline_score: float,
    rescore_champion: Callable[[str], Score],
    margins: tuple[float, float] = (0.0, 0.0),
    by: str = "training flow",
    *,
    model_id: str | None,
    measure: tuple[str, str] = ("rmse", "naive"),
    coverage: tuple[float, float] | None = None,
) -> Decision:
    """Register `model_uri` as a new `@challenger` version and promote it if it passes the gate.

    `coverage` (the 95 % ACD, registry.max_coverage_error) adds the gate's calibration check.
    `model_id` is the logged model's id (MLflow's ModelInfo.model_id; None only for a source that
    is no logged model): a tracking server refuses a `models:/m-...` source without it.
    The gate runs first and reads only; then the version, its tags, the alias moves and their
    history entries are written. A failure part-way deletes the version, restores the aliases
    and removes the history entries, so nothing is left half-written. All of it runs under
    `registration_lock`, so concurrent runs against one tracking server take turns.
    """
    with registration_lock(client, name):
        uri = client.tracking_uri
        retry(lambda: ensure_registered_model(client, name), "create registered model", uri)
        migrate_history(client, name)
        repair_incomplete(client, name, by)
        decision = rescore_champion_and_decide(client, name, "?", challenger, baseline_score, rescore_champion,
                                               margins, measure, coverage, window.start)
        before = retry(lambda: get_aliases(client, name), "read aliases", uri)
        if before.get(CHAMPION) != decision.champion_version:
            raise RegistryError(f"@champion of {name!r} moved to v{before.get(CHAMPION)} while the gate compared "
                                f"against v{decision.champion_version}; train again to compare with the new champion")
        metric, baseline = measure
        all_tags = {**tags, "run_id": run_id, "test_window": window.tag(), f"test_{metric}": repr(challenger),
                    f"test_{baseline}_{metric}": repr(baseline_score)}
        if model_id:  # the logged model's manifest digest, which loaders check its files against (store.log_model)
            from pipeline.serving.model_format import MANIFEST_TAG

            manifest = retry(lambda: client.get_logged_model(model_id).tags.get(MANIFEST_TAG), "read the logged model", uri)
            all_tags.update({MANIFEST_TAG: manifest} if manifest else {})
        mv = retry(lambda: client.create_model_version(name, model_uri, run_id=run_id, tags=all_tags, model_id=model_id),
                   "register version", uri)
        kill_point("registration")  # test hook (pipeline.runtime): a crash with the version created, no alias moved
        decision.version = str(mv.version)
        written: list[str] = []
        done = [f"logged the model ({model_uri})", f"registered it as version {decision.version}"]
        try:
            move_alias(client, name, CHALLENGER, decision.version, by,
                       f"registered from run {run_id}; test {measure[0].upper()} {challenger:.6g}", "register", run_id, written)
            done.append(f"moved @{CHALLENGER} to v{decision.version}")
            for key, value in decision.tags().items():
                retry(lambda: client.set_model_version_tag(name, decision.version, key, value), "tag version", uri)
            retry(lambda: client.update_model_version(name, decision.version, description=decision.description()),
                  "describe version", uri)
            if decision.promoted:
                move_alias(client, name, CHAMPION, decision.version, by, decision.reason, "gate", run_id, written)
                done.append(f"moved @{CHAMPION} to v{decision.version}")
                move_alias(client, name, CHALLENGER, None, by, f"v{decision.version} promoted to @champion",
                           "gate", run_id, written)
                done.append(f"removed @{CHALLENGER}")
            retry(lambda: client.set_model_version_tag(name, decision.version, COMPLETE_VERSION_TAG, "true"),
                  "tag version complete", uri)
        except BaseException as exc:
            left = undo_registration(client, name, decision.version, before, written)
            error = incomplete_registration(exc, client, name, decision.version, done, left)
            if error is None:
                raise
            raise error from exc
        log.info("registered %s v%s as @%s: %s", name, decision.version, decision.alias, decision.reason)
        return decision


def gate_line(client: Any, name: str, version: str) -> str | None:
    """The gate's figures of a version in one line (`promotion.recorded_line`: today's tags or those of versions gated
    before it named its metric); None when it was never gated or is gone."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.promotion import recorded_line

    try:
        return recorded_line(dict(client.get_model_version(name, version).tags))
    except MlflowException:
        return None


def promote(client: Any, name: str, version: str, reason: str, by: str) -> AliasMove | None:
    """Make `version` the champion by hand (recorded with the reason); None when it already is."""
    if not reason.strip():
        raise RegistryError("a promotion needs a reason (--reason TEXT); it goes into the history")
    mv = require_version(client, name, version)
    version = str(mv.version)
    aliases = get_aliases(client, name)
    if aliases.get(CHAMPION) == version:
        return None
    migrate_history(client, name)
    written: list[str] = []
    with registration_lock(client, name):
        aliases = get_aliases(client, name)  # again, under the lock: a run may have moved them meanwhile
        try:
            move = move_alias(client, name, CHAMPION, version, by, reason, "manual", mv.run_id, written)
            if aliases.get(CHALLENGER) == version:
                move_alias(client, name, CHALLENGER, None, by, f"v{version} promoted to @champion by hand",
                           "manual", mv.run_id, written)
            client.set_model_version_tag(name, version, "gate.override", f"{by}: {reason}"[:MAX_REASON])
        except BaseException:
            restore_aliases(client, name, aliases, written)
            raise
    return move


def rollback(client: Any, name: str, reason: str, by: str) -> AliasMove:
    """Point `@champion` back at the champion before the current one in the lineage."""
    require_model(client, name)
    current = champion_version(client, name)
    if current is None:
        raise RegistryError(f"model {name!r} has no @champion to roll back")
    lineage = champion_lineage(read_history(client, name), str(current.version))
    previous = next((v for v in reversed(lineage[:-1]) if v != str(current.version)), None)
    if previous is None:
        raise RegistryError(f"model {name!r}: v{current.version} is the first champion on record; "
                            "nothing to roll back to")
    mv = require_version(client, name, previous)
    migrate_history(client, name)
    written: list[str] = []
    with registration_lock(client, name):
        aliases = get_aliases(client, name)
        try:
            return move_alias(client, name, CHAMPION, str(mv.version), by,
                              reason or f"rollback from v{current.version}", "rollback", mv.run_id, written)
        except BaseException:
            restore_aliases(client, name, aliases, written)
            raise


COMPLETE_VERSION_TAG = "registration.complete"  # written last on a version: every alias move of its registration is done
INCOMPLETE_VERSION_TAG = "registration.incomplete"  # on a version whose registration a later one repaired: why


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An error's first line, shortened (its type's name when it has no message)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:limit]


def incomplete_registration(exc: BaseException, client: Any, name: str, version: str, done: list[str],
                            left: list[str]) -> PipelineError | None:
    """The error of a registration that failed part-way, saying what was done, what was undone and what is left.

    None for anything but a tracking or registry error (a bug, an interrupt): the caller raises it again
    as it is, after the same account is logged. The registry calls go through `store.retry`, so a
    lost server arrives here as a TrackingError.
    """
    text = f"registration of {name!r} did not complete ({first_line(exc)}). Done before the failure: {'; '.join(done)}."
    if not left:
        text += f" Undone: version {version} deleted and the aliases restored; nothing of this registration is left."
    else:
        try:
            pointing = sorted(a for a, v in get_aliases(client, name).items() if v == version)
            now = f"aliases on it now: {', '.join('@' + a for a in pointing) or 'none'}"
        except Exception:  # noqa: BLE001 - the server is still away
            now = "its aliases could not be read back"
        text += (f" Not undone ({'; '.join(left)}): version {version} stays registered ({now}). The next "
                 f"registration of {name!r} takes back the aliases of a version whose run did not finish and "
                 f"tags it {INCOMPLETE_VERSION_TAG}.")
    if not isinstance(exc, (TrackingError, RegistryError)):
        log.error("%s", text)
        return None
    return type(exc)(text)


def repair_incomplete(client: Any, name: str, by: str) -> list[str]:
    """Take back the aliases held by versions whose registration never completed and whose run did not finish
    (FAILED or KILLED, or RUNNING with its process gone from this host), and tag those versions; what was done.

    Such a version is what a registration leaves when it fails with the tracking server away, so it
    could not undo itself. The alias goes back to the version the history last recorded for it (none
    when it records none). Versions from before the complete tag existed
    are judged by their run alone: a FINISHED run's version is complete. A version promoted by hand is left.
    """
    uri = client.tracking_uri
    here = ProcessOwner.current()
    repaired: list[str] = []
    for alias, version in sorted(retry(lambda: get_aliases(client, name), "read aliases", uri).items()):
        mv = retry(lambda: client.get_model_version(name, version), "read version", uri)
        tags = dict(mv.tags or {})
        if tags.get(COMPLETE_VERSION_TAG) == "true" or "gate.override" in tags or not mv.run_id:
            continue
        try:
            run = client.get_run(mv.run_id)
        except Exception:  # noqa: BLE001 - a run deleted or elsewhere: nothing to judge by
            continue
        status = run.info.status
        if status == "RUNNING":
            owner = ProcessOwner.from_tags(run.data.tags)
            if owner is None or owner.gone(here) is None:
                continue
        elif status in ("FINISHED", "SCHEDULED"):
            continue
        # Back to the version the history last recorded for the alias (the move to this one may not be recorded).
        moves = [m for m in read_history(client, name) if m.alias == alias]
        previous = (moves[-1].from_version if moves[-1].to_version == version else moves[-1].to_version) if moves else None
        reason = (f"v{version}'s registration by run {mv.run_id} did not complete and the run ended {status}; "
                  f"@{alias} taken back")
        try:
            move_alias(client, name, alias, previous, by, reason, "repair", mv.run_id)
            client.set_model_version_tag(name, version, INCOMPLETE_VERSION_TAG, reason[:MAX_REASON])
        except Exception as exc:  # noqa: BLE001 - registration goes on; the next one tries again
            log.warning("%s: could not take @%s back from v%s (%s)", name, alias, version, first_line(exc))
            continue
        repaired.append(f"@{alias}: v{version} -> {'v' + previous if previous else 'none'}")
    if repaired:
        log.warning("%s: repaired what an incomplete registration left: %s", name, "; ".join(repaired))
    return repaired


def restore_aliases(client: Any, name: str, aliases: dict[str, str], written: list[str]) -> str | None:
    """Put aliases back as they were and delete the audit runs written since; never raises: what failed, or None."""
    try:
        now = get_aliases(client, name)
        for alias in set(now) - set(aliases):
            client.delete_registered_model_alias(name, alias)
        for alias, version in aliases.items():
            if now.get(alias) != version:
                client.set_registered_model_alias(name, alias, version)
        for audit_run in written:
            client.delete_run(audit_run)
    except Exception as exc:  # noqa: BLE001 - report, but keep the original error
        log.error("could not restore the aliases of %s to %s: %s", name, aliases, exc)
        return f"the aliases could not be restored: {first_line(exc)}"
    return None


def undo_registration(client: Any, name: str, version: str, aliases_before: dict[str, str],
                      written: list[str] | None = None) -> list[str]:
    """Delete a version registered by a failed run and restore the aliases and history it touched; what could
    not be undone (empty when everything was)."""
    left = []
    try:
        client.delete_model_version(name, version)
    except Exception as exc:  # noqa: BLE001 - report, but keep the original error
        log.error("could not delete %s v%s after a failure: %s", name, version, exc)
        left.append(f"version {version} could not be deleted: {first_line(exc)}")
    problem = restore_aliases(client, name, aliases_before, written or [])
    if problem:
        left.append(problem)
    if not left:
        log.warning("rolled back registration of %s v%s; aliases restored to %s", name, version, aliases_before)
    return left
