"""The MLflow Model Registry: register a version, gate its promotion, record every alias move.

Aliases, not stages: `@champion` is the version to serve, `@challenger` the newest version the
gate has not (yet) promoted. A new version becomes champion only when it beats persistence and
the current champion, re-scored on the same test window with its own logged preprocessing, each
by a configurable margin. Registration and alias moves happen last and all or nothing; every
move is appended to a history kept as registered-model tags (`alias_history.*`), so the
champion's lineage survives any process and can be rolled back.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.errors import RegistryError
from pipeline.faults import kill_point
from pipeline.tracking import retry

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "alias_history."
PROMOTING_KINDS = ("gate", "manual")  # champion moves that push onto the lineage; "rollback" pops
MAX_REASON = 2000  # registered-model tag values are 5000 characters on SQL stores


# ------------------------------------------------------------------ the gate


@dataclass(frozen=True)
class TestWindow:
    """The dates a run was scored on, and the data they came from."""

    __test__ = False  # not a pytest test class

    start: str
    end: str
    digest: str

    def tag(self) -> str:
        return f"{self.start}..{self.end}@{self.digest}"


@dataclass(frozen=True)
class Score:
    """A model's RMSE on a set of test forecasts, or why it could not be computed."""

    rmse: float | None
    count: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Decision:
    """The gate's verdict on a new version, with the numbers on both sides of each check."""

    version: str
    alias: str
    challenger_rmse: float
    persistence_rmse: float
    champion_version: str | None = None
    champion_rmse: float | None = None
    checks: list[Check] = field(default_factory=list)
    margins: tuple[float, float] = (0.0, 0.0)

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def reason(self) -> str:
        verdict = "promoted to @champion" if self.promoted else "kept as @challenger"
        return f"{verdict}: " + "; ".join(f"{c.name} {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks)

    def tags(self) -> dict[str, str]:
        """Tags for the model version and the MLflow run."""
        out = {
            "gate.decision": "promoted" if self.promoted else "refused",
            "gate.challenger_rmse": repr(self.challenger_rmse),
            "gate.persistence_rmse": repr(self.persistence_rmse),
            "gate.min_gain_over_persistence": repr(self.margins[0]),
            "gate.min_gain_over_champion": repr(self.margins[1]),
        }
        if self.champion_version is not None:
            out["gate.champion_version"] = self.champion_version
        if self.champion_rmse is not None:
            out["gate.champion_rmse"] = repr(self.champion_rmse)
        for check in self.checks:
            out[f"gate.{check.name}"] = f"{'PASS' if check.passed else 'FAIL'}: {check.detail}"
        return out

    def description(self) -> str:
        lines = [f"Promotion gate: {'PROMOTED to @champion' if self.promoted else 'REFUSED, stays @challenger'}"]
        lines += [f"- {c.name}: {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def markdown(self, name: str, run_id: str | None = None) -> str:
        """A report for Prefect's artifact page."""
        head = f"# Promotion gate: {name} v{self.version} {'promoted to `@champion`' if self.promoted else 'kept as `@challenger`'}"
        rows = [
            "| model | test RMSE |", "|---|---|",
            f"| challenger v{self.version} | {self.challenger_rmse:.6g} |",
            f"| persistence | {self.persistence_rmse:.6g} |",
        ]
        if self.champion_version is not None:
            shown = "n/a" if self.champion_rmse is None else f"{self.champion_rmse:.6g}"
            rows.append(f"| champion v{self.champion_version} (re-scored, its own preprocessing) | {shown} |")
        checks = ["| check | result | detail |", "|---|---|---|"]
        checks += [f"| {c.name} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in self.checks]
        margins = (f"Margins: at least {self.margins[0]:.2%} lower RMSE than persistence, "
                   f"{self.margins[1]:.2%} lower than the champion.")
        run = f"\n\nMLflow run `{run_id}`." if run_id else ""
        return "\n\n".join([head, "\n".join(rows), "\n".join(checks), margins]) + run


def table_rmse(table: pd.DataFrame, actual: pd.Series, first_dates: list[str], horizon: int) -> Score:
    """RMSE of a forecast table (origin, step, date, forecast) on the windows whose first target
    date is in `first_dates`, steps 1..horizon, against `actual` (level by date string)."""
    first = table[table["step"] == 1].set_index("origin")["date"]
    origins = first[first.isin(set(first_dates))].index
    rows = table[table["origin"].isin(origins) & (table["step"] <= horizon) & table["date"].isin(actual.index)]
    if rows.empty:
        return Score(None, 0, "no forecasts on the test window")
    errors = rows["forecast"].to_numpy(dtype=float) - actual.loc[rows["date"]].to_numpy(dtype=float)
    return Score(float(np.sqrt(np.mean(errors**2))), len(rows))


def rescore(model_uri: str, raw_rows: pd.DataFrame, actual: pd.Series, first_dates: list[str],
            horizon: int, target: str) -> Score:
    """Score a logged model, with its own preprocessing and scalers, on the given test windows.

    Never raises for a model that cannot score this data (another target, missing columns,
    too short a horizon): the returned Score says why, and the gate refuses.
    """
    import mlflow.pyfunc

    try:
        # suppress_warnings: no check of its pinned requirements against this environment (0.5 s
        # to map every installed file to a module); the gate scores it here, as it runs here.
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
    except Exception as exc:  # noqa: BLE001 - a champion that cannot load cannot be compared
        return Score(None, 0, f"could not be loaded ({type(exc).__name__}: {str(exc)[:300]})")
    bundle = getattr(model.unwrap_python_model(), "bundle", None)
    if bundle is not None and bundle.config.data.target != target:
        return Score(None, 0, f"forecasts {bundle.config.data.target!r}, not {target!r}: not comparable")
    try:
        table = model.predict(raw_rows, params={"all_windows": True})
    except Exception as exc:  # noqa: BLE001 - e.g. the data lack a column it needs
        return Score(None, 0, f"could not score this data ({str(exc).splitlines()[0][:300]})")
    score = table_rmse(table, actual, first_dates, horizon)
    expected = len(first_dates) * horizon
    if score.error is None and score.count != expected:
        return Score(None, score.count, f"covers {score.count} of the {expected} test forecasts "
                                        "(different horizon or lead): not comparable")
    return score


def gate(challenger_rmse: float, persistence_rmse: float, champion_version: str | None,
         champion: Score | None, min_gain_over_persistence: float, min_gain_over_champion: float) -> list[Check]:
    """The two checks a challenger must pass, each against a margin (0.02 = 2 % lower RMSE)."""
    bar = persistence_rmse * (1 - min_gain_over_persistence)
    ok = math.isfinite(challenger_rmse) and challenger_rmse < bar
    checks = [Check("persistence", ok,
                    f"test RMSE {challenger_rmse:.6g} vs persistence {persistence_rmse:.6g}; needs < {bar:.6g} "
                    f"(margin {min_gain_over_persistence:.2%})")]
    if champion_version is None:
        checks.append(Check("champion", True, "no champion yet"))
    elif champion is None or champion.rmse is None:
        why = champion.error if champion else "not scored"
        checks.append(Check("champion", False, f"champion v{champion_version} {why}"))
    else:
        bar = champion.rmse * (1 - min_gain_over_champion)
        ok = math.isfinite(challenger_rmse) and challenger_rmse < bar
        checks.append(Check("champion", ok,
                            f"test RMSE {challenger_rmse:.6g} vs champion v{champion_version} re-scored with its own "
                            f"preprocessing on the same window at {champion.rmse:.6g} ({champion.count} forecasts); "
                            f"needs < {bar:.6g} (margin {min_gain_over_champion:.2%})"))
    return checks


def decide(client: Any, name: str, version: str, challenger_rmse: float, persistence_rmse: float,
           rescore_champion: Callable[[str], Score], margins: tuple[float, float]) -> Decision:
    """Run the gate against the current champion (if any) without changing anything."""
    current = champion_version(client, name)
    current_version = str(current.version) if current is not None else None
    score = rescore_champion(f"models:/{name}/{current_version}") if current_version else None
    checks = gate(challenger_rmse, persistence_rmse, current_version, score, *margins)
    alias = CHAMPION if all(c.passed for c in checks) else CHALLENGER
    return Decision(version, alias, challenger_rmse, persistence_rmse, current_version,
                    score.rmse if score else None, checks, margins)


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
        client.create_registered_model(name, description="LSTM forecaster trained by the pipeline's training flow")


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
        known = sorted(m.name for m in client.search_registered_models())
        raise RegistryError(f"no registered model named {name!r} at {client.tracking_uri}; "
                            f"known models: {', '.join(known) or 'none'}") from None


def require_version(client: Any, name: str, version: str) -> Any:
    """A model version, or a RegistryError listing the versions that exist."""
    from mlflow.exceptions import MlflowException

    require_model(client, name)
    if not str(version).isdigit():
        raise RegistryError(f"model version must be a number, got {version!r}")
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{name}'")))
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


def resolve_model(client: Any, uri: str) -> ModelRef:
    """Pin `models:/NAME@ALIAS` or `models:/NAME/VERSION` to a version; other URIs pass through."""
    from mlflow.exceptions import MlflowException

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        if uri.startswith("models:/"):
            raise RegistryError(f"cannot read model URI {uri!r}; use models:/NAME@ALIAS or models:/NAME/VERSION")
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


# ------------------------------------------------------------------ history


@dataclass(frozen=True)
class AliasMove:
    """One alias move: which alias, from which version to which, when, by whom, why."""

    alias: str
    from_version: str | None
    to_version: str | None
    at: str  # ISO 8601, UTC
    by: str
    reason: str
    kind: str  # register | gate | manual | rollback
    run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> AliasMove:
        return AliasMove(**json.loads(text))


_last_ns = 0


def _history_key() -> str:
    """Sortable and unique: nanoseconds (strictly increasing in this process) plus a random suffix."""
    global _last_ns
    _last_ns = max(time.time_ns(), _last_ns + 1)
    return f"{HISTORY_PREFIX}{_last_ns:020d}.{uuid.uuid4().hex[:6]}"


def current_user(command: str) -> str:
    """Who moved an alias from the command line: user@host via the command."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()} via `pipeline {command}`"


def read_history(client: Any, name: str) -> list[AliasMove]:
    """Every recorded alias move of a model, oldest first."""
    tags = require_model(client, name).tags or {}
    moves = []
    for key in sorted(k for k in tags if k.startswith(HISTORY_PREFIX)):
        try:
            moves.append(AliasMove.from_json(tags[key]))
        except (ValueError, TypeError) as exc:
            log.warning("%s: unreadable history tag %s: %s", name, key, exc)
    return moves


def move_alias(client: Any, name: str, alias: str, version: str | None, by: str, reason: str, kind: str,
               run_id: str | None = None, written: list[str] | None = None) -> AliasMove:
    """Point `alias` at `version` (None: remove it) and append the move to the history."""
    uri = client.tracking_uri
    before = retry(lambda: get_aliases(client, name), "read aliases", uri).get(alias)
    if version is None:
        if before is not None:
            retry(lambda: client.delete_registered_model_alias(name, alias), f"remove @{alias}", uri)
    else:
        retry(lambda: client.set_registered_model_alias(name, alias, str(version)), f"set @{alias}", uri)
    move = AliasMove(alias, before, None if version is None else str(version),
                     datetime.now(timezone.utc).isoformat(timespec="seconds"), by, reason[:MAX_REASON], kind, run_id)
    key = _history_key()
    retry(lambda: client.set_registered_model_tag(name, key, move.to_json()), "record alias move", uri)
    if written is not None:
        written.append(key)
    log.info("%s: @%s %s -> %s by %s (%s)", name, alias, before, move.to_version, by, kind)
    return move


def champion_lineage(moves: list[AliasMove], current: str | None) -> list[str]:
    """The champions in force, oldest first: promotions push a version, rollbacks pop one."""
    stack: list[str] = []
    for move in moves:
        if move.alias != CHAMPION:
            continue
        if move.kind == "rollback":
            if stack:
                stack.pop()
        elif move.to_version is not None:
            stack.append(move.to_version)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # moved outside the pipeline (UI, API): still the one in force
    return stack


# ------------------------------------------------------------------ state changes


def register_and_promote(
    client: Any,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    window: TestWindow,
    challenger_rmse: float,
    persistence_rmse: float,
    rescore_champion: Callable[[str], Score],
    margins: tuple[float, float] = (0.0, 0.0),
    by: str = "training flow",
) -> Decision:
    """Register `model_uri` as a new `@challenger` version and promote it if it passes the gate.

    The gate runs first and reads only; then the version, its tags, the alias moves and their
    history entries are written. A failure part-way deletes the version, restores the aliases
    and removes the history entries, so nothing is left half-written.
    """
    uri = client.tracking_uri
    retry(lambda: ensure_registered_model(client, name), "create registered model", uri)
    decision = decide(client, name, "?", challenger_rmse, persistence_rmse, rescore_champion, margins)
    before = retry(lambda: get_aliases(client, name), "read aliases", uri)
    if before.get(CHAMPION) != decision.champion_version:
        raise RegistryError(f"@champion of {name!r} moved to v{before.get(CHAMPION)} while the gate compared "
                            f"against v{decision.champion_version}; train again to compare with the new champion")
    all_tags = {**tags, "run_id": run_id, "test_window": window.tag(), "test_rmse": repr(challenger_rmse),
                "test_naive_rmse": repr(persistence_rmse)}
    mv = retry(lambda: client.create_model_version(name, model_uri, run_id=run_id, tags=all_tags), "register version", uri)
    kill_point("registration")  # test hook (pipeline.faults): a crash with the version created, no alias moved
    decision.version = str(mv.version)
    written: list[str] = []
    try:
        move_alias(client, name, CHALLENGER, decision.version, by,
                   f"registered from run {run_id}; test RMSE {challenger_rmse:.6g}", "register", run_id, written)
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, decision.version, key, value)
        client.update_model_version(name, decision.version, description=decision.description())
        if decision.promoted:
            move_alias(client, name, CHAMPION, decision.version, by, decision.reason, "gate", run_id, written)
            move_alias(client, name, CHALLENGER, None, by, f"v{decision.version} promoted to @champion",
                       "gate", run_id, written)
    except BaseException:
        undo_registration(client, name, decision.version, before, written)
        raise
    log.info("registered %s v%s as @%s: %s", name, decision.version, decision.alias, decision.reason)
    return decision


def promote(client: Any, name: str, version: str, reason: str, by: str) -> AliasMove | None:
    """Make `version` the champion by hand (recorded with the reason); None when it already is."""
    if not reason.strip():
        raise RegistryError("a promotion needs a reason (--reason TEXT); it goes into the history")
    mv = require_version(client, name, version)
    version = str(mv.version)
    aliases = get_aliases(client, name)
    if aliases.get(CHAMPION) == version:
        return None
    written: list[str] = []
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
    aliases = get_aliases(client, name)
    written: list[str] = []
    try:
        return move_alias(client, name, CHAMPION, str(mv.version), by,
                          reason or f"rollback from v{current.version}", "rollback", mv.run_id, written)
    except BaseException:
        restore_aliases(client, name, aliases, written)
        raise


def restore_aliases(client: Any, name: str, aliases: dict[str, str], written: list[str]) -> None:
    """Put aliases back as they were and drop the history entries written since; never raises."""
    try:
        now = get_aliases(client, name)
        for alias in set(now) - set(aliases):
            client.delete_registered_model_alias(name, alias)
        for alias, version in aliases.items():
            if now.get(alias) != version:
                client.set_registered_model_alias(name, alias, version)
        for key in written:
            client.delete_registered_model_tag(name, key)
    except Exception as exc:  # noqa: BLE001 - report, but keep the original error
        log.error("could not restore the aliases of %s to %s: %s", name, aliases, exc)


def undo_registration(client: Any, name: str, version: str, aliases_before: dict[str, str],
                      written: list[str] | None = None) -> None:
    """Delete a version registered by a failed run and restore the aliases and history it touched."""
    try:
        client.delete_model_version(name, version)
    except Exception as exc:  # noqa: BLE001 - report, but keep the original error
        log.error("could not delete %s v%s after a failure: %s", name, version, exc)
    restore_aliases(client, name, aliases_before, written or [])
    log.warning("rolled back registration of %s v%s; aliases restored to %s", name, version, aliases_before)
