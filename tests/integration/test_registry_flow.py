"""The gate inside the training flow: what lands on the run, the version and Prefect's artifacts."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.training import training_flow
from pipeline.tracking.registry import get_aliases, read_history
from tests.integration import registry_support as rs


def promotion_reports(flow_run_ids: list[str]) -> list[str]:
    """The promotion reports these flow runs left (the harness is shared by the whole session)."""
    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["promotion-tiny-forecaster"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))
    return [a.data for a in found]


def test_flow_records_the_gate_everywhere(tiny_run, write_config):
    first = tiny_run.summary  # the session's tiny run: tolerant of a 2-epoch model against persistence, a champion
    client = rs.client_for(tiny_run.uri)
    assert (first.version, first.alias) == ("1", "champion")

    mv = client.get_model_version("tiny-forecaster", "1")
    run = client.get_run(first.run_id)
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    for key in ("run_id", "data_digest", "test_window", "test_rmse", "test_naive_rmse", "test_rmse_ratio",
                "test_mae", "test_direction_acc", "prefect.flow_run_id", "gate.decision", "gate.check.baseline", "gate.metric",
                "gate.challenger", "gate.baseline"):
        assert key in mv.tags, key
    assert mv.tags["run_id"] == first.run_id and mv.tags["prefect.flow_run_id"] == flow_run_id
    assert mv.tags["data_digest"] == run.data.tags["data_digest"]
    assert float(mv.tags["test_rmse"]) == first.metrics["test_rmse"]
    assert run.data.tags["gate.decision"] == "promoted" and run.data.tags["registered_alias"] == "champion"
    assert run.data.tags["gate.check.champion"] == "PASS: no champion yet"
    assert "PROMOTED" in mv.description

    # an impossible margin over persistence: refused, stays @challenger, the champion does not move
    second = training_flow(config_path=write_config("strict.yaml", registry={"min_gain_over_persistence": 0.99}))
    assert (second.version, second.alias) == ("2", "challenger")
    assert client.get_run(second.run_id).info.status == "FINISHED"
    run2 = client.get_run(second.run_id)
    assert run2.data.tags["gate.decision"] == "refused"
    assert run2.data.tags["gate.check.baseline"].startswith("FAIL: test RMSE")
    assert "(margin 99.00%)" in run2.data.tags["gate.check.baseline"]
    assert "champion v1 re-scored with its own preprocessing" in run2.data.tags["gate.check.champion"]
    assert get_aliases(client, "tiny-forecaster") == {"champion": "1", "challenger": "2"}

    moves = read_history(client, "tiny-forecaster")
    assert [(m.alias, m.from_version, m.to_version, m.kind) for m in moves] == [
        ("challenger", None, "1", "register"), ("champion", None, "1", "gate"), ("challenger", "1", None, "gate"),
        ("challenger", None, "2", "register")]
    assert f"Prefect flow run {flow_run_id}" in moves[1].by and first.run_id in moves[1].by

    reports = promotion_reports([flow_run_id, run2.data.tags["prefect.flow_run_id"]])
    assert len(reports) == 2
    assert any("tiny-forecaster v1 promoted to `@champion`" in r for r in reports)
    refused = next(r for r in reports if "v2 kept as `@challenger`" in r)
    assert "| baseline | FAIL |" in refused and "| champion v1 (re-scored, its own preprocessing) |" in refused
