"""The post-migration verdicts, one function per asset check, on any connection.

Kept apart from Dagster so the same verdicts run after a commit (the asset checks) and inside the
transaction of a dry run, just before it is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd
import psycopg

from faceit_etl.target import verify
from faceit_etl.target.ddl import SUBSCRIPTIONS, USERS

EXAMPLES = 20


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metadata: dict  # plain JSON values

    def as_dict(self) -> dict:
        return asdict(self)


def row_counts_match(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    counts = {
        USERS: (verify.row_count(conn, schema, USERS), len(users)),
        SUBSCRIPTIONS: (verify.row_count(conn, schema, SUBSCRIPTIONS), len(subscriptions)),
    }
    return Verdict(
        passed=all(actual == expected for actual, expected in counts.values()),
        metadata={
            f"{name}_{side}": value
            for name, pair in counts.items()
            for side, value in zip(("in_database", "expected"), pair)
        },
    )


def tier_counts_match(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    actual = verify.tier_counts(conn, schema)
    expected = {str(k): int(v) for k, v in subscriptions["tier"].value_counts().sort_index().items()}
    return Verdict(actual == expected, {"in_database": actual, "expected": expected})


def subscriptions_have_users(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    orphans = verify.orphan_subscriptions(conn, schema)
    return Verdict(orphans == 0, {"orphan_subscriptions": orphans})


def content_matches(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    diffs = [verify.compare_users(conn, schema, users), verify.compare_subscriptions(conn, schema, subscriptions)]
    return Verdict(all(d.equal for d in diffs), {d.table: d.summary() for d in diffs})


def referrers_present(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    missing = verify.missing_referrers(conn, schema)
    return Verdict(not missing, {"missing_referrers": len(missing), "examples": missing[:EXAMPLES]})


def no_self_referrals(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    found = verify.self_referrals(conn, schema)
    return Verdict(not found, {"self_referrals": len(found), "examples": found[:EXAMPLES]})


VerdictFunction = Callable[[psycopg.Connection, str, pd.DataFrame, pd.DataFrame], Verdict]
VERDICTS: dict[str, VerdictFunction] = {
    f.__name__: f
    for f in (
        row_counts_match,
        tier_counts_match,
        subscriptions_have_users,
        content_matches,
        referrers_present,
        no_self_referrals,
    )
}


def all_verdicts(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> dict[str, Verdict]:
    return {name: verdict(conn, schema, users, subscriptions) for name, verdict in VERDICTS.items()}
