"""The alias history: every move of `@champion` / `@challenger`, who made it, when and why.

Each move is kept as one finished MLflow run in a dedicated audit experiment (`registry-audit`),
its fields as run tags, so a year of daily retraining adds runs to that experiment instead of
hundreds of tags to the registered model's page. Stores written by earlier versions hold one
registered-model tag `alias_history.<key>` per move (JSON); those are still read, and moved into
the audit experiment on the next write. This module is the record's layout and the lineage
arithmetic, no MLflow: `pipeline.tracking.registry` reads and writes the runs.

Audit run tags: `audit.model`, `audit.model_key` (a digest of the name, safe in a search
filter), `audit.alias`, `audit.from`, `audit.to` (absent: no version), `audit.at` (ISO 8601,
UTC), `audit.by`, `audit.reason`, `audit.kind` (register | gate | manual | rollback),
`audit.source_run` (the MLflow run of the version, when known) and `audit.key` (orders the
moves: nanoseconds since the epoch, then a random suffix).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from pipeline.tracking.promotion import CHAMPION

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "registry-audit"
LEGACY_PREFIX = "alias_history."  # one registered-model tag per move, written before the audit experiment
TAG = "audit."
MAX_REASON = 2000  # well inside MLflow's 8000 characters per run tag (5000 for model tags on SQL stores)


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


def new_key() -> str:
    """Sortable and unique: nanoseconds (strictly increasing in this process) plus a random suffix."""
    global _last_ns
    _last_ns = max(time.time_ns(), _last_ns + 1)
    return f"{_last_ns:020d}.{uuid.uuid4().hex[:6]}"


def model_key(name: str) -> str:
    """A digest of a model name: search filters cannot quote every name MLflow accepts."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def audit_run_name(name: str, move: AliasMove) -> str:
    src = f"v{move.from_version}" if move.from_version else "none"
    dst = f"v{move.to_version}" if move.to_version else "none"
    return f"{name} @{move.alias}: {src} -> {dst} [{move.kind}]"


def audit_tags(name: str, move: AliasMove, key: str) -> dict[str, str]:
    """The run tags that record `move` of model `name` (fields with no value are left out)."""
    fields = {"model": name, "model_key": model_key(name), "alias": move.alias, "from": move.from_version,
              "to": move.to_version, "at": move.at, "by": move.by, "reason": move.reason[:MAX_REASON],
              "kind": move.kind, "source_run": move.run_id, "key": key}
    return {f"{TAG}{field}": str(value) for field, value in fields.items() if value is not None}


def move_from_tags(tags: Mapping[str, str]) -> tuple[str, AliasMove]:
    """(key, move) back from an audit run's tags; KeyError when a required field is missing."""
    def get(field: str) -> str | None:
        return tags.get(f"{TAG}{field}")

    move = AliasMove(tags[f"{TAG}alias"], get("from"), get("to"), tags[f"{TAG}at"], get("by") or "",
                     get("reason") or "", tags[f"{TAG}kind"], get("source_run"))
    return tags[f"{TAG}key"], move


def legacy_moves(model_tags: Mapping[str, str], name: str = "") -> list[tuple[str, str, AliasMove]]:
    """(tag, key, move) for each readable `alias_history.*` tag of a registered model."""
    out = []
    for tag in sorted(k for k in model_tags if k.startswith(LEGACY_PREFIX)):
        try:
            out.append((tag, tag.removeprefix(LEGACY_PREFIX), AliasMove.from_json(model_tags[tag])))
        except (ValueError, TypeError) as exc:
            log.warning("%s: unreadable history tag %s: %s", name, tag, exc)
    return out


def in_order(entries: Iterable[tuple[str, AliasMove]]) -> list[AliasMove]:
    """Moves sorted by key, each key once (a move both migrated and still tagged counts once)."""
    return [move for _, move in sorted(dict(entries).items())]


def current_user(command: str) -> str:
    """Who moved an alias from the command line: user@host via the command."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()} via `pipeline {command}`"


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
