"""promote / rollback / history: a round trip through the command line and the registry."""

from __future__ import annotations

import pytest

from pipeline.cli.main import main
from pipeline.errors import RegistryError
from pipeline.tracking import registry
from pipeline.tracking.history import AUDIT_EXPERIMENT
from pipeline.tracking.registry import get_aliases, read_history
from tests.integration import registry_support as rs


@pytest.fixture
def three_versions(three_versions_saved, restored):
    """v1 champion (gate), v2 refused (stays @challenger), v3 champion (gate) (conftest.py: built once per session,
    the store restored for each test)."""
    return rs.client_for(restored(three_versions_saved))


def champions(client):
    return [(m.from_version, m.to_version, m.kind) for m in read_history(client, "planted") if m.alias == "champion"]


def test_promote_rollback_history_round_trip(three_versions, capsys):
    client = three_versions
    assert main(["promote", "planted", "2", "--reason", "ops: v3 misbehaves on live data"]) == 0
    out = capsys.readouterr().out
    assert "@champion: v3 -> v2  [manual] by" in out and "via `pipeline promote`" in out
    assert get_aliases(client, "planted") == {"champion": "2"}
    assert client.get_model_version("planted", "2").tags["gate.override"].endswith("ops: v3 misbehaves on live data")

    assert main(["rollback", "planted", "--reason", "v2 was worse"]) == 0
    assert "@champion: v2 -> v3  [rollback]" in capsys.readouterr().out
    assert main(["rollback", "planted"]) == 0  # and again: back to the first champion
    assert get_aliases(client, "planted")["champion"] == "1"
    assert champions(client) == [(None, "1", "gate"), ("1", "3", "gate"), ("3", "2", "manual"),
                                 ("2", "3", "rollback"), ("3", "1", "rollback")]

    # nothing before the first champion: refused, nothing moves
    before = (get_aliases(client, "planted"), read_history(client, "planted"))
    assert main(["rollback", "planted"]) == 1
    assert "v1 is the first champion on record; nothing to roll back to" in capsys.readouterr().err
    assert (get_aliases(client, "planted"), read_history(client, "planted")) == before

    capsys.readouterr()
    assert main(["history", "planted"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "  @champion:" in line and not line.startswith(" ")]
    assert len(lines) == 5
    assert "none -> v1  [gate] by tests" in lines[0]
    assert "v3 -> v2  [manual]" in lines[2] and "via `pipeline promote`" in lines[2]
    assert "why: ops: v3 misbehaves on live data" in out and "why: v2 was worse" in out
    assert "why: promoted to @champion: baseline PASS: test RMSE" in out  # the gate's numbers
    assert "    gate: test RMSE " in out and " vs persistence " in out  # read back from the versions' tags
    # a version gated before the gate named its metric (gate.challenger_rmse, ...) still reads
    for key in [k for k in client.get_model_version("planted", "1").tags if k.startswith("gate.")]:
        client.delete_model_version_tag("planted", "1", key)
    for key, value in {"gate.challenger_rmse": "0.5", "gate.persistence_rmse": "0.75"}.items():
        client.set_model_version_tag("planted", "1", key, value)
    assert main(["history", "planted"]) == 0
    assert "    gate: test RMSE 0.5 vs persistence 0.75" in capsys.readouterr().out
    assert "champions in force: v1" in out and "aliases now: @champion = v1" in out
    assert main(["history", "planted", "--all"]) == 0
    assert "@challenger: none -> v2  [register]" in capsys.readouterr().out


def test_refusals_name_what_exists_and_change_nothing(three_versions, capsys):
    client = three_versions
    before = (get_aliases(client, "planted"), read_history(client, "planted"))
    assert main(["promote", "nope", "1", "--reason", "x"]) == 1
    assert "no registered model named 'nope'" in capsys.readouterr().err
    assert main(["promote", "planted", "9", "--reason", "x"]) == 1
    assert "model 'planted' has no version 9; versions: 1, 2, 3" in capsys.readouterr().err
    assert main(["promote", "planted", "two", "--reason", "x"]) == 1
    assert main(["promote", "planted", "2", "--reason", "  "]) == 1
    assert "needs a reason" in capsys.readouterr().err
    assert main(["rollback", "nope"]) == 1 and main(["history", "nope"]) == 1
    assert main(["promote", "planted", "3", "--reason", "again"]) == 0
    assert "already @champion; nothing changed" in capsys.readouterr().out
    assert (get_aliases(client, "planted"), read_history(client, "planted")) == before
    client.delete_model_version("planted", "1")
    with pytest.raises(RegistryError, match="no version 1"):
        registry.rollback(client, "planted", "", "tests")
    assert (get_aliases(client, "planted"), read_history(client, "planted")) == before


def audit_runs(client) -> list:
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_moves_are_audit_runs_not_tags_on_the_model_page(three_versions):
    client = three_versions
    model = client.get_registered_model("planted")
    assert not [key for key in model.tags if key.startswith("alias_history.")]
    runs = audit_runs(client)
    moves = read_history(client, "planted")
    assert len(runs) == len(moves) == 7  # v1: registered, champion, challenger off; v2: registered; v3 as v1
    first = min(runs, key=lambda r: r.data.tags["audit.key"])
    assert first.info.status == "FINISHED" and first.data.tags["mlflow.runName"] == "planted @challenger: none -> v1 [register]"
    assert {r.data.tags["audit.model"] for r in runs} == {"planted"}


def test_history_written_by_an_earlier_version_is_read_and_moved_off_the_model_page(three_versions, capsys):
    client = three_versions
    moves = read_history(client, "planted")
    # rewrite the store as an earlier version left it: one registered-model tag per move, no audit runs
    for run in audit_runs(client):
        client.delete_run(run.info.run_id)
    for i, move in enumerate(moves):
        client.set_registered_model_tag("planted", f"alias_history.{1_780_000_000_000_000_000 + i:020d}.{i:06x}",
                                        move.to_json())
    assert read_history(client, "planted") == moves
    assert main(["history", "planted"]) == 0
    assert "champions in force: v1 -> v3" in capsys.readouterr().out

    # the next write moves the old tags into audit runs, then records its own move after them
    assert main(["rollback", "planted", "--reason", "back to v1"]) == 0
    after = read_history(client, "planted")
    assert after[:-1] == moves
    assert (after[-1].from_version, after[-1].to_version, after[-1].kind) == ("3", "1", "rollback")
    assert not [key for key in client.get_registered_model("planted").tags if key.startswith("alias_history.")]
    assert len(audit_runs(client)) == len(moves) + 1

    # a tag left behind by an interrupted migration (its audit run already written) still counts once
    client.set_registered_model_tag("planted", f"alias_history.{1_780_000_000_000_000_000:020d}.{0:06x}",
                                    moves[0].to_json())
    assert read_history(client, "planted") == after


def test_a_name_with_a_quote_is_served_like_any_other(mlflow_store, capsys):
    client, cfg, data, frame, win = rs.trend_scene(mlflow_store)
    rs.register(client, rs.plant(data, cfg, 0.005), win, frame, name="it's")
    assert main(["promote", "it's", "9", "--reason", "x"]) == 1
    assert "model \"it's\" has no version 9; versions: 1" in capsys.readouterr().err
    assert [m.kind for m in read_history(client, "it's")] == ["register", "gate", "gate"]
