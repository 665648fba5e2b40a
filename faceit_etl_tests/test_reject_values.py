"""A reject's `value` is the value as the file wrote it, on every surface that shows one (the run's rejects
table, the validation report and `faceit-etl validate`'s output, the API's `Reject.value`): `1E400` was shown as
`Infinity` and `2.50` as `2.5` (the value was parsed again as floats and printed), while the reason quoted the
file's text; an entry refused for a repeated key as a JSON string literal of its text, and a lone surrogate's
escape with its backslash doubled (`"c\\\\ud800"`)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import faceit_etl
from faceit_etl import api
from faceit_etl.cli.report import validation_report
from faceit_etl.defs.metadata import rejects_table
from faceit_etl.mapping import map_frames
from faceit_etl.source import parse_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import examples
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import faceit_etl as cli
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)

# (the entry's text, the rejected field, its value as every surface must show it)
CASES = [
    ('{"user_id": 1, "total_requests": 1E400}', "total_requests", "1E400"),
    ('{"user_id": 2, "total_requests": -1e-400}', "total_requests", "-1e-400"),
    ('{"user_id": 3, "total_requests": -1.0}', "total_requests", "-1.0"),
    ('{"user_id": 4, "subscription": {"daily_requests": 1.0e400}}', "daily_requests", "1.0e400"),
    ('{"user_id": 12345678901234567890123}', "user_id", "12345678901234567890123"),
    ('{"user_id": 6, "total_requests": "abc"}', "total_requests", '"abc"'),
    ('{"user_id": 7, "total_requests": true}', "total_requests", "true"),
    ('{"user_id": 8, "total_requests": {"a": [1.50, null, 2E-3]}}', "total_requests", '{"a": [1.50, null, 2E-3]}'),
    ('{"user_id": null}', "user_id", "null"),
    ('{"user_id": 10, "created_at": 1e-20000}', "created_at", "1e-20000"),
    ('{"user_id": 11, "notifications_enabled": 2.50}', "notifications_enabled", "2.50"),
    ('{"user_id": 12, "language": "a\\u0000b", "extra": 1E400}', "language", '"a\\u0000b"'),
    ('{"user_id": 13, "subscription": []}', "subscription", "[]"),  # not the whole entry
    ('{"user_id": 14, "subscription": "premium", "language": "en"}', "subscription", '"premium"'),
    # refused whole as they were read: the entry's text, never a JSON string of it, nor a surrogate's escape doubled
    ('{"user_id": 31, "user_id": 32, "language": "en"}', "(entry)", '{"user_id": 31, "user_id": 32, "language": "en"}'),
    ('{"user_id": 33, "faceit_nickname": "c\\ud800"}', "(entry)", '{"user_id": 33, "faceit_nickname": "c\\ud800"}'),
    ('{"user_id": 34, "language": "\\udc01é", "language": "x"}', "(entry)", '{"user_id": 34, "language": "\\udc01é", "language": "x"}'),
]


def judged(entries: list[str]):
    return validate_entries(parse_source(('{"users": [' + ", ".join(entries) + "]}").encode(), "data.json"))


def shown_values(outcome) -> dict[str, list[str]]:
    """The value column of every surface built from a validation outcome."""
    table = rejects_table(outcome.rejects)
    report = validation_report("data.json", "list", outcome, map_frames(outcome.valid))
    rows = report.split("## Rejects")[1].strip().splitlines()[2:]  # past the header and its rule
    return {
        "run's rejects table": [record.data["value"] for record in table.records],
        "validation report": [row.split(" | ")[3] for row in rows],
        "API Reject.value": [reject.value for reject in api._rejects(outcome.reject_records())],
    }


@pytest.mark.parametrize(("entry", "field", "value"), [pytest.param(*case, id=case[2]) for case in CASES])
def test_every_surface_shows_a_rejected_value_as_the_file_wrote_it(entry, field, value):
    outcome = judged([entry])

    assert outcome.rejects["field"].tolist() == [field]
    assert shown_values(outcome) == dict.fromkeys(shown_values(outcome), [value])


@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,5})?", fullmatch=True).filter(
        lambda text: "." in text or "e" in text.lower()
    )
)
@example("1000000000000000000000000000000.00000000000000000000000000000")  # 61 characters: cut in the reason
@settings(deadline=None, max_examples=examples(200))
def test_any_number_with_a_point_or_exponent_is_shown_as_written(number):
    """A number where text belongs is rejected; its value is its text, never the float it rounds to. The reason
    quotes that text too, cut to 60 characters as every reason's value is (the value column holds it whole)."""
    outcome = judged([f'{{"user_id": 1, "language": {number}}}'])

    assert shown_values(outcome) == dict.fromkeys(shown_values(outcome), [number])
    quoted = number if len(number) <= 60 else number[:57] + "..."
    assert outcome.rejects["reason"].tolist() == [f"expected text, got {quoted}"]


def test_a_runs_rejects_show_each_value_as_written_in_its_table_file_and_result(here, db):
    """The real run: the value of each reject in the result (read from the run's rejects.jsonl), in the
    check's rejects table and in migration_rejects' `value` is the file's text; the entries are stored in
    migration_rejects (an entry holding U+0000 and 1E400 was turned into `Infinity`, which jsonb refuses,
    failing the load)."""
    data = here / "numbers.json"
    data.write_text('{"users": [' + ", ".join(entry for entry, _, _ in CASES) + ', {"user_id": 99}]}', encoding="utf-8")

    result = faceit_etl.migrate(data, force=True)

    assert result.success, result.errors
    assert [(r.field, r.value) for r in result.rejects] == [(field, value) for _, field, value in CASES]
    with api.open_instance() as instance:
        [evaluation] = [
            event.dagster_event.event_specific_data for event in instance.all_logs(result.run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            and event.dagster_event.event_specific_data.check_name == "no_rejected_entries"
        ]
    assert [r.data["value"] for r in evaluation.metadata["rejects"].records] == [value for _, _, value in CASES]
    shown = db.execute("SELECT value FROM migration_rejects ORDER BY source_index").fetchall()
    assert shown == [(value,) for _, _, value in CASES]
    stored = db.execute("SELECT raw->>'language', raw->>'extra' FROM migration_rejects WHERE source_index = 11").fetchall()
    assert stored == [("a\\u0000b", "1" + "0" * 400)]
    # jsonb keeps one value of a repeated key, so a refused entry's text is stored as a JSON string; a lone
    # surrogate, which jsonb refuses, as its escape's text
    refused = db.execute(
        "SELECT source_index, raw #>> '{}', raw->>'faceit_nickname' FROM migration_rejects "
        "WHERE source_index >= 14 ORDER BY source_index"
    ).fetchall()
    assert refused == [
        (14, CASES[14][0], None),
        (15, '{"user_id": 33, "faceit_nickname": "c\\\\ud800"}', "c\\ud800"),
        (16, CASES[16][0], None),
    ]


def test_the_cli_validate_report_shows_each_value_as_written(workdir, database_url):
    """`faceit-etl validate`, run as a user runs it, prints the report: each reject's value cell is the file's."""
    data = workdir / "data.json"
    data.write_text('{"users": [' + ", ".join(entry for entry, _, _ in CASES) + "]}", encoding="utf-8")

    done = cli(workdir, database_url, "validate", str(data))

    assert done.returncode == 2, done.stdout + done.stderr
    rows = done.stdout.split("## Rejects")[1].strip().splitlines()[2 : 2 + len(CASES)]
    assert [row.split(" | ")[2:4] for row in rows] == [[field, value] for _, field, value in CASES]


def test_the_cli_quotes_a_string_in_a_reason_as_json_so_it_never_reads_as_the_literal_asked_for(workdir, database_url):
    """An outside tester's file: `"notifications_enabled": "true"` was refused with `expected true or false, got
    'true'`, which reads as a contradiction. Each reason quotes a string as the file wrote it, in double quotes."""
    data = workdir / "data.json"
    data.write_text(
        '{"users": [{"user_id": 1, "notifications_enabled": "true"}, {"user_id": 2, "total_requests": "true"},'
        ' {"user_id": 3, "language": 5}, {"user_id": 4, "subscription": {"tier": "5"}}]}',
        encoding="utf-8",
    )

    done = cli(workdir, database_url, "validate", str(data))

    assert done.returncode == 2, done.stdout + done.stderr
    rows = done.stdout.split("## Rejects")[1].strip().splitlines()[2:6]
    assert [row.split(" | ")[2:] for row in rows] == [
        ["notifications_enabled", '"true"', 'expected true or false, got "true" |'],
        ["total_requests", '"true"', 'expected a whole number, got "true" |'],
        ["language", "5", "expected text, got 5 |"],
        ["tier", '"5"', 'unknown tier "5", expected one of free, premium, pro |'],
    ]
