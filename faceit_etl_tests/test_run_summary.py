"""What a run's summary says failed it: a failed blocking check, in its own words, never a failed WARN check
beside it, which is reported as a check and nothing more."""

from __future__ import annotations

import dagster as dg

from faceit_etl.cli.summary import summarize


@dg.asset(check_specs=[dg.AssetCheckSpec("content_matches", asset="tables", blocking=True),
                       dg.AssetCheckSpec("rows_not_in_file", asset="tables")])
def tables():
    yield dg.Output(1)
    yield dg.AssetCheckResult(check_name="rows_not_in_file", passed=False, severity=dg.AssetCheckSeverity.WARN,
                              description="2 users the file lacks were kept")
    yield dg.AssetCheckResult(check_name="content_matches", passed=False, description="3 cells differ")


def test_a_run_failed_by_a_blocking_check_names_that_check_alone_among_its_errors():
    result = dg.materialize([tables], raise_on_error=False)

    summary = summarize(result)

    assert [e.step_failure_data.error.cls_name for e in result.get_step_failure_events()] == ["DagsterAssetCheckFailedError"]
    assert (summary.success, summary.errors) == (False, ["check tables.content_matches failed: 3 cells differ"])
    assert [(c.name, c.passed, c.severity, c.description) for c in summary.checks] == [
        ("rows_not_in_file", False, "WARN", "2 users the file lacks were kept"),
        ("content_matches", False, "ERROR", "3 cells differ"),
    ]
