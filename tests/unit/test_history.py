"""The alias history's record (audit-run tags, the old registered-model tags) and the lineage: no MLflow."""

from __future__ import annotations

from pipeline.tracking import history
from pipeline.tracking.history import AliasMove, audit_tags, champion_lineage, in_order, legacy_moves, move_from_tags


def move(alias, src, dst, kind, reason="why"):
    return AliasMove(alias, src, dst, "2026-01-01T00:00:00+00:00", "tests", reason, kind)


def test_champion_lineage_pushes_promotions_and_pops_rollbacks():
    moves = [
        move("challenger", None, "1", "register"), move("champion", None, "1", "gate"),
        move("champion", "1", "3", "gate"), move("champion", "3", "2", "manual"),
        move("champion", "2", "3", "rollback"),
    ]
    assert champion_lineage(moves, "3") == ["1", "3"]
    assert champion_lineage(moves + [move("champion", "3", "1", "rollback")], "1") == ["1"]
    # moved outside the pipeline (the UI): the current champion still counts as in force
    assert champion_lineage(moves, "5") == ["1", "3", "5"]
    assert champion_lineage([], None) == []


def test_alias_move_round_trips_through_json():
    m = AliasMove("champion", "1", "2", "2026-01-01T00:00:00+00:00", "me", "better", "manual", "abc")
    assert AliasMove.from_json(m.to_json()) == m


def test_keys_sort_in_write_order():
    keys = [history.new_key() for _ in range(50)]
    assert keys == sorted(keys) and len(set(keys)) == 50


def test_a_move_round_trips_through_audit_run_tags():
    m = AliasMove("champion", "1", "2", "2026-01-01T00:00:00+00:00", "me", "better", "manual", "abc")
    tags = audit_tags("my model's name", m, "00000000000000000001.abcdef")
    assert tags["audit.model"] == "my model's name" and tags["audit.kind"] == "manual"
    assert tags["audit.model_key"] == history.model_key("my model's name") and tags["audit.model_key"].isalnum()
    assert move_from_tags(tags) == ("00000000000000000001.abcdef", m)
    removed = AliasMove("challenger", "2", None, m.at, "me", "promoted", "gate")  # no version after, no run
    tags = audit_tags("m", removed, "k")
    assert "audit.to" not in tags and "audit.source_run" not in tags
    assert move_from_tags(tags) == ("k", removed)
    long = audit_tags("m", move("champion", None, "1", "gate", reason="x" * 9000), "k")["audit.reason"]
    assert len(long) == history.MAX_REASON  # within MLflow's limit on a run tag


def test_old_history_tags_are_read_and_merged_in_order():
    old = {"alias_history.00000000000000000001.aaaaaa": move("challenger", None, "1", "register").to_json(),
           "alias_history.00000000000000000003.cccccc": move("champion", None, "1", "gate").to_json(),
           "alias_history.00000000000000000004.dddddd": "{not json",
           "description": "other tags are not history"}
    found = legacy_moves(old, "m")
    assert [(tag.split(".")[1], key) for tag, key, _ in found] == [
        ("00000000000000000001", "00000000000000000001.aaaaaa"), ("00000000000000000003", "00000000000000000003.cccccc")]
    entries = [(key, m) for _, key, m in found]
    newer = ("00000000000000000005.eeeeee", move("champion", "1", "2", "gate"))
    between = ("00000000000000000002.bbbbbb", move("challenger", "1", None, "gate"))
    # a move already migrated to an audit run and still tagged counts once
    merged = in_order(entries + [newer, between, entries[1]])
    assert [(m.alias, m.to_version) for m in merged] == [("challenger", "1"), ("challenger", None),
                                                         ("champion", "1"), ("champion", "2")]
