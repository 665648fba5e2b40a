"""A check that had nothing to compare says so (`compared: "nothing: …"` and its description), never a bare
Passed: a flat file states no tier nor referrer (its entries have no `subscription`, so rows keep theirs),
and a file with no user gives the content and table checks nothing to judge."""

from __future__ import annotations

import json

from faceit_etl.generate import generate_users
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import content_matches
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, make_resources, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_load import SCHEMA, chain, conn, document  # noqa: F401 (conn: a fixture)
from faceit_etl_tests.test_pipeline import checks_by_name, run

NO_TIER = ("nothing: no entry of the file states a tier (an entry without `subscription`, as in the flat layout, "
           "keeps its row's tier; content_matches judges a new row's default)")
NO_REFERRER = "nothing: no subscription in the table names a referrer"


def said(evaluation) -> tuple:
    return evaluation.passed, evaluation.metadata.get("compared").value if "compared" in evaluation.metadata else None, evaluation.description


def test_a_flat_file_s_tier_and_referral_checks_say_they_compared_nothing(database_url, db, tmp_path):
    result = run(make_resources(database_url, FLAT_SAMPLE, tmp_path))

    assert result.success
    checks = checks_by_name(result)
    assert said(checks["tier_counts_match"]) == (True, NO_TIER, f"Compared {NO_TIER}.")
    assert checks["tier_counts_match"].metadata["users_compared"].value == 0
    assert said(checks["referrers_present"]) == (True, NO_REFERRER, f"Compared {NO_REFERRER}.")
    assert said(checks["no_self_referrals"]) == (True, NO_REFERRER, f"Compared {NO_REFERRER}.")
    for name in ("row_counts_match", "content_matches", "subscriptions_have_users", "rows_not_in_file", "no_rejected_entries"):
        assert "compared" not in checks[name].metadata, name  # they judged the file's 25 users


def test_a_nested_file_compares_its_tiers(database_url, db, tmp_path):
    tiers = checks_by_name(run(make_resources(database_url, NESTED_SAMPLE, tmp_path)))["tier_counts_match"]
    assert said(tiers) == (True, None, None)
    assert tiers.metadata["users_compared"].value == 25
    assert {k: v.value for k, v in tiers.metadata.items() if k.startswith(("in_database.", "expected."))} == {
        "in_database.FREE": 20, "in_database.PREMIUM": 5, "expected.FREE": 20, "expected.PREMIUM": 5}


def test_a_file_with_no_user_gives_every_check_but_the_row_counts_nothing_to_compare(database_url, db, tmp_path):
    result = run(make_resources(database_url, write_json(tmp_path / "empty.json", {"users": []}), tmp_path))

    assert result.success
    checks = checks_by_name(result)
    nothing = {
        "no_rejected_entries": "nothing: the file holds no entry",
        "tier_counts_match": "nothing: the file has no user",
        "content_matches": "nothing: the file has no user, and the tables held none to keep",
        "subscriptions_have_users": "nothing: user_subscriptions holds no row",
        "referrers_present": NO_REFERRER,
        "no_self_referrals": NO_REFERRER,
        "rows_not_in_file": "nothing: users holds no row",
    }
    assert {name: said(checks[name]) for name in nothing} == {
        name: (True, text, f"Compared {text}.") for name, text in nothing.items()
    }
    assert "compared" not in checks["row_counts_match"].metadata  # 0 rows in each table, 0 expected: compared
    assert json.loads(json.dumps(checks["row_counts_match"].metadata["users_in_database"].value)) == 0


def test_the_cli_says_which_checks_compared_nothing(workdir, database_url, db):
    done = faceit_etl(workdir, database_url, "migrate", str(FLAT_SAMPLE))

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"  check postgres_tables.tier_counts_match: passed (compared {NO_TIER})" in lines
    assert f"  check postgres_tables.referrers_present: passed (compared {NO_REFERRER})" in lines
    assert "  check postgres_tables.content_matches: passed" in lines


def test_a_file_with_no_user_over_users_kept_compares_what_was_kept_and_alone_compares_nothing(db, conn):
    """In the load, the rows it keeps are proven unchanged, so the check compared them; judged later
    without a load's proof, a file with no user gives it nothing to compare."""
    load(conn, SCHEMA, *chain(document(generate_users(3, seed=5))), "run-1")
    mapped, rejects = chain(document([]))
    seen = {}

    def judge(c, stats):
        seen["in the load"] = content_matches(c, SCHEMA, mapped.users, mapped.subscriptions)

    load(conn, SCHEMA, mapped, rejects, "run-2", before_commit=judge)
    alone = content_matches(conn, SCHEMA, mapped.users, mapped.subscriptions)

    assert (seen["in the load"].passed, seen["in the load"].description) == (True, None)
    assert seen["in the load"].metadata["kept_as_they_were"]["users_compared"] == 3
    assert (alone.passed, alone.description) == (True, "Compared nothing: the file has no user.")
