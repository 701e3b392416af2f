"""The MLflow Model Registry: register a version, decide its alias, undo on failure.

Aliases, not stages: `@champion` is the version to serve, `@challenger` the newest one that
did not beat it. Registration and alias moves happen last, after every other stage succeeded,
and a failure part-way deletes the new version and puts the aliases back as they were.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.tracking import retry

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class TestWindow:
    """The dates a run was scored on, and the data they came from."""

    start: str
    end: str
    digest: str

    def tag(self) -> str:
        return f"{self.start}..{self.end}@{self.digest}"


@dataclass
class Decision:
    version: str
    alias: str
    challenger_rmse: float
    champion_version: str | None = None
    champion_rmse: float | None = None
    reason: str = ""


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


def step_one_rmse(table: pd.DataFrame, actual: pd.Series, dates: pd.Index) -> tuple[float, int]:
    """RMSE of a forecast table's first steps against `actual` on the given target dates."""
    first = table[table["step"] == 1].set_index("date")["forecast"]
    common = [d for d in dates if d in first.index]
    if not common:
        return math.nan, 0
    errors = first.loc[common].to_numpy() - actual.loc[common].to_numpy()
    return float(np.sqrt(np.mean(errors**2))), len(common)


def rescore(model_uri: str, raw_rows: pd.DataFrame, actual: pd.Series, dates: pd.Index) -> tuple[float, int]:
    """Score a logged model with its own preprocessing on `dates` of the given rows."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    table = model.predict(raw_rows, params={"all_windows": True})
    return step_one_rmse(table, actual, dates)


def decide(
    client: Any,
    name: str,
    version: str,
    window: TestWindow,
    challenger_rmse: float,
    rescore_champion: Any,
) -> Decision:
    """Champion if there is none yet or the new version beats it on the same test window.

    `rescore_champion(model_uri) -> rmse` is called only when the champion was scored on
    another window or other data; otherwise its recorded test RMSE is compared directly.
    """
    current = champion_version(client, name)
    if current is None:
        return Decision(version, CHAMPION, challenger_rmse, reason="no champion yet")
    if current.tags.get("test_window") == window.tag() and "test_rmse" in current.tags:
        champ_rmse = float(current.tags["test_rmse"])
        how = "its recorded test RMSE on the same window"
    else:
        champ_rmse = rescore_champion(f"models:/{name}/{current.version}")
        how = "re-scored with its own scalers on this window"
    if math.isnan(champ_rmse) or challenger_rmse < champ_rmse:
        alias, verdict = CHAMPION, "beats"
    else:
        alias, verdict = CHALLENGER, "does not beat"
    reason = (f"test RMSE {challenger_rmse:.6g} {verdict} champion v{current.version} "
              f"at {champ_rmse:.6g} ({how}; window {window.start}..{window.end})")
    return Decision(version, alias, challenger_rmse, str(current.version), champ_rmse, reason)


def register_and_promote(
    client: Any,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    window: TestWindow,
    challenger_rmse: float,
    rescore_champion: Any,
) -> Decision:
    """Register `model_uri` as a new version of `name` and point an alias at it, all or nothing."""
    uri = client.tracking_uri
    retry(lambda: ensure_registered_model(client, name), "create registered model", uri)
    before = retry(lambda: get_aliases(client, name), "read aliases", uri)
    all_tags = {**tags, "run_id": run_id, "test_window": window.tag(), "test_rmse": repr(challenger_rmse)}
    mv = retry(lambda: client.create_model_version(name, model_uri, run_id=run_id, tags=all_tags), "register version", uri)
    try:
        decision = decide(client, name, str(mv.version), window, challenger_rmse, rescore_champion)
        client.set_model_version_tag(name, mv.version, "promotion", decision.reason)
        client.update_model_version(name, mv.version, description=f"{decision.alias}: {decision.reason}")
        if decision.alias == CHAMPION and decision.champion_version is not None:
            client.set_model_version_tag(name, mv.version, "previous_champion", decision.champion_version)
        client.set_registered_model_alias(name, decision.alias, mv.version)
    except BaseException:
        undo_registration(client, name, mv.version, before)
        raise
    log.info("registered %s v%s as @%s: %s", name, mv.version, decision.alias, decision.reason)
    return decision


def undo_registration(client: Any, name: str, version: str, aliases_before: dict[str, str]) -> None:
    """Delete a version registered by a failed run and restore the aliases it may have moved."""
    try:
        client.delete_model_version(name, version)
        for alias, old in aliases_before.items():
            client.set_registered_model_alias(name, alias, old)
        log.warning("rolled back registration of %s v%s; aliases restored to %s", name, version, aliases_before)
    except Exception as exc:  # noqa: BLE001 - report, but keep the original error
        log.error("could not roll back registration of %s v%s: %s", name, version, exc)
