"""`pipeline reproduce RUN_ID`: a repeat from what the run recorded, compared metric by metric."""

from __future__ import annotations

from mlflow import MlflowClient

from pipeline.cli.main import main


def test_reproduce_matches_bit_for_bit_then_refuses_changed_data(tiny_run, capsys):
    summary = tiny_run.summary  # the session's tiny run, trained by the training flow in this process
    prices_csv = tiny_run.data  # the file the run recorded
    client = MlflowClient(tiny_run.uri)
    run = client.get_run(summary.run_id)
    for tag in ("git_commit", "git_dirty", "data_source", "data_digest", "weights_digest", "version.torch"):
        assert run.data.tags.get(tag), tag

    assert main(["reproduce", summary.run_id]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and "DIFFERS" not in out
    assert f"{run.data.metrics['test_rmse']!r}" in out  # metric by metric, full precision
    repeat = [r for r in client.search_runs([run.info.experiment_id]) if r.data.tags.get("reproduces") == summary.run_id]
    assert len(repeat) == 1 and repeat[0].data.tags["reproduce_result"] == "match"
    assert repeat[0].data.tags["weights_digest"] == run.data.tags["weights_digest"]
    assert "registered_version" not in repeat[0].data.tags  # a repeat registers nothing

    # A recorded metric that the repeat cannot match: exit 1, the metric named.
    client.log_metric(summary.run_id, "test_rmse", run.data.metrics["test_rmse"] * 1.5)
    assert main(["reproduce", summary.run_id]) == 1
    out = capsys.readouterr().out
    assert "NOT REPRODUCED" in out and any(line.startswith("test_rmse ") and "DIFFERS" in line
                                           for line in out.splitlines())

    # Changed data: refused before any training, both digests named.
    recorded = run.data.tags["data_digest"]
    rows = prices_csv.read_text().splitlines()
    prices_csv.write_text("\n".join(rows[:-1]) + "\n")  # the last day removed
    before = len(client.search_runs([run.info.experiment_id]))
    assert main(["reproduce", summary.run_id]) == 2
    err = capsys.readouterr().err
    assert "data changed" in err and recorded in err
    from pipeline.data.reading import load_prices
    assert load_prices(str(prices_csv)).digest in err
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_reproduce_of_an_unknown_run_fails_cleanly(prefect_harness, mlflow_store, capsys):
    assert main(["reproduce", "0123456789abcdef0123456789abcdef"]) != 0
    assert "not found" in capsys.readouterr().err
