"""The migration's verdicts, one function per asset check, on any connection.

Kept apart from Dagster: the load judges them inside its own transaction, after its writes and
before its commit (`judge_before_commit`), so a load whose blocking verdicts fail is rolled back
and never committed; the asset checks report what that transaction saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from faceit_etl.postgres import kept, verify
from faceit_etl.mapping import PRESENT
from faceit_etl.postgres.ddl import SUBSCRIPTIONS, USERS
from faceit_etl.validation.fields import SUBSCRIPTION_FIELDS, presence_bit

EXAMPLES = 20
DIFFERING_VALUES = "differing_values"  # content_matches: the first differing cells with both values
COMPARED = "compared"  # set only when a verdict had nothing to judge: "nothing: <why>"
COMPARED_NOTHING = "Compared nothing: "  # how such a check's description begins
NO_REFERRER = "no subscription in the table names a referrer"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metadata: dict  # plain JSON values
    description: str | None = None  # what a failure means, in words

    def as_dict(self) -> dict:
        return asdict(self)


def nothing_to_compare(why: str) -> tuple[dict, str]:
    """The metadata and description of a check that had nothing to judge: a bare pass would read as a
    comparison made."""
    return {COMPARED: f"nothing: {why}"}, f"{COMPARED_NOTHING}{why}."


def compared_nothing(verdict: Verdict, why: str) -> Verdict:
    metadata, description = nothing_to_compare(why)
    return Verdict(verdict.passed, verdict.metadata | metadata, verdict.description or description)


def row_counts_match(
    conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame, *, ids: verify.FileIds,
    kept_absent: dict[str, int] | None = None,
) -> Verdict:
    """The file's rows plus the rows the load kept of users the file does not have (`kept_absent`
    per table, as the load counted them; without a load, as the tables hold them now)."""
    kept = verify.rows_of_users_not_in(conn, schema, ids) if kept_absent is None else kept_absent
    counts = {
        USERS: (verify.row_count(conn, schema, USERS), len(users) + kept.get(USERS, 0)),
        SUBSCRIPTIONS: (verify.row_count(conn, schema, SUBSCRIPTIONS), len(subscriptions) + kept.get(SUBSCRIPTIONS, 0)),
    }
    differing = [_count_differs(name, actual, expected, kept.get(name, 0))
                 for name, (actual, expected) in counts.items() if actual != expected]
    return Verdict(
        passed=not differing,
        metadata={
            f"{name}_{side}": value
            for name, pair in counts.items()
            for side, value in zip(("in_database", "expected"), pair)
        } | {f"{name}_kept_absent": kept.get(name, 0) for name in counts},
        description="; ".join(differing) if differing else None,
    )


def _count_differs(name: str, actual: int, expected: int, kept: int) -> str:
    """Fewer rows kept than none means the writes met rows of the file's users that the tables did not
    hold when the load counted them: another session wrote them during the run."""
    if kept < 0:
        return (f"{name}: {actual} rows in the database, {expected - kept} from the file; {-kept} of the rows the "
                "run matched appeared after it counted the table: written by another session during the run, not by it")
    return (f"{name}: {actual} rows in the database, {expected} expected "
            f"({expected - kept} from the file, {kept} kept as they were of users not in it or rejected)")


def tier_counts_match(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame, *, ids: verify.FileIds) -> Verdict:
    """Counted over the users whose entry states a tier (`ids` marks them, see `_states_tier`): one without
    keeps the tier its row has (the flat layout states none: then nothing is compared, and said so). A
    user has one subscription: the subscriptions stating a tier are as many as their users."""
    stated = subscriptions[_states_tier(subscriptions)]
    actual = verify.tier_counts(conn, schema, ids)
    counts = stated["tier"].value_counts(dropna=False)
    expected = dict(sorted((str(k) if pd.notna(k) else "NULL", int(v)) for k, v in counts.items()))
    verdict = Verdict(
        actual == expected,
        {"in_database": actual, "expected": expected, "users_compared": len(stated)},
        None if actual == expected else _tiers_differ(actual, expected),
    )
    if len(stated):
        return verdict
    return compared_nothing(verdict, "the file has no user" if not len(users) else (
        "no entry of the file states a tier (an entry without `subscription`, as in the flat layout, keeps its "
        "row's tier; content_matches judges a new row's default)"))


def _states_tier(subscriptions: pd.DataFrame) -> np.ndarray:
    """Which subscriptions' entries state a tier (a frame without presence bits states every field)."""
    if PRESENT not in subscriptions.columns:
        return np.ones(len(subscriptions), dtype=bool)
    return (subscriptions[PRESENT].to_numpy(dtype="int64") & presence_bit(SUBSCRIPTION_FIELDS, "tier")) != 0


def _among(values: pd.Series, allowed: pd.Series) -> np.ndarray:
    """Which of `values` are in `allowed`, by Arrow: pandas' `isin` on a million ids as text took 11 s."""
    values = pa.array(values, type=pa.large_string())
    return pc.is_in(values, value_set=pa.array(allowed, type=pa.large_string())).to_numpy(zero_copy_only=False)


def _tiers_differ(actual: dict[str, int], expected: dict[str, int]) -> str:
    """Each tier whose count differs, in words: "PREMIUM: 5 in the database, 4 from the file"."""
    return "subscriptions per tier: " + "; ".join(
        f"{tier}: {actual.get(tier, 0)} in the database, {expected.get(tier, 0)} from the file"
        for tier in sorted(actual.keys() | expected.keys())
        if actual.get(tier, 0) != expected.get(tier, 0)
    )


def subscriptions_have_users(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    orphans = verify.orphan_subscriptions(conn, schema)
    verdict = Verdict(
        orphans == 0,
        {"orphan_subscriptions": orphans},
        f"{orphans} subscription(s) whose user is not in {USERS}" if orphans else None,
    )
    if orphans or verify.has_rows(conn, schema, SUBSCRIPTIONS):
        return verdict
    return compared_nothing(verdict, f"{SUBSCRIPTIONS} holds no row")


def content_matches(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    """Every row of the file equal in every field its entry has; inside a load's transaction also every
    field it lacks (a new row holds the bot's default, an existing one what it held), and every row the
    load keeps (users the file lacks or rejected) byte-identical to before the writes."""
    existed = kept.existed(conn)
    diffs = [
        verify.compare_users(conn, schema, users, existed),
        verify.compare_subscriptions(conn, schema, subscriptions, users, existed),
    ]
    problems = [
        f"{d.table}: {len(d.missing)} rows missing, {sum(map(len, d.differing.values()))} cells differ"
        + (f" (in {', '.join(d.differing)})" if d.differing else "")
        for d in diffs
        if not d.equal
    ]
    metadata = {d.table: d.summary() for d in diffs}
    if any(d.cells for d in diffs):
        metadata[DIFFERING_VALUES] = [cell for d in diffs for cell in d.cells]
    proof = kept.compare(conn, schema)
    if proof is not None:
        metadata["kept_as_they_were"] = {
            "users_compared": proof.compared,
            **{f"{name}_changed": len(ids) for name, ids in proof.changed.items()},
            "examples": {name: ids[:EXAMPLES] for name, ids in proof.changed.items() if ids},
        }
        problems += [
            f"{name}: {len(ids)} row(s) the load had to keep as they were changed (user_id "
            f"{', '.join(map(str, ids[:EXAMPLES]))}{', …' if len(ids) > EXAMPLES else ''})"
            for name, ids in proof.changed.items()
            if ids
        ]
    verdict = Verdict(not problems, metadata, "; ".join(problems) if problems else None)
    if len(users) or (proof is not None and proof.compared):
        return verdict
    return compared_nothing(verdict, "the file has no user" + (", and the tables held none to keep" if proof is not None else ""))


def rows_not_in_file(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame, *, ids: verify.FileIds) -> Verdict:
    """Users the table holds and the file does not: kept by a load (only `prune` deletes them). A user
    whose entry the file has but rejected (among `ids`) is in the file."""
    absent = verify.users_not_in(conn, schema, ids)
    verdict = Verdict(
        not absent.count,
        {"users_not_in_file": absent.count, "examples": absent.sample},
        f"{absent.count} user(s) in {schema}.{USERS} are not in the file and were kept "
        f"(migrate with prune to delete them): user_id {', '.join(map(str, absent.sample))}"
        + (", …" if absent.count > len(absent.sample) else "")
        if absent.count
        else None,
    )
    if absent.count or verify.has_rows(conn, schema, USERS):
        return verdict
    return compared_nothing(verdict, f"{USERS} holds no row")


def referrers_present(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    missing = verify.missing_referrers(conn, schema)
    verdict = Verdict(not missing, {"missing_referrers": len(missing), "examples": missing[:EXAMPLES]})
    return verdict if missing or verify.names_a_referrer(conn, schema) else compared_nothing(verdict, NO_REFERRER)


def no_self_referrals(conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame) -> Verdict:
    found = verify.self_referrals(conn, schema)
    verdict = Verdict(not found, {"self_referrals": len(found), "examples": found[:EXAMPLES]})
    return verdict if found or verify.names_a_referrer(conn, schema) else compared_nothing(verdict, NO_REFERRER)


# Each takes (conn, schema, users, subscriptions); those judging the tables' users against the file also `ids`.
VERDICTS: dict[str, Callable[..., Verdict]] = {
    f.__name__: f
    for f in (
        row_counts_match,
        tier_counts_match,
        subscriptions_have_users,
        content_matches,
        referrers_present,
        no_self_referrals,
        rows_not_in_file,
    )
}


def all_verdicts(
    conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame, kept_absent: dict[str, int] | None = None,
    rejected_user_ids: pd.Series | None = None,
) -> dict[str, Verdict]:
    """The file's Telegram ids are uploaded once, for every verdict of this judging (`verify.file_ids`)."""
    states_tier = _among(users["id"], subscriptions["user_id"][_states_tier(subscriptions)])
    with verify.file_ids(conn, users["user_id"], states_tier, rejected_user_ids) as ids:
        verdicts = VERDICTS | {
            "row_counts_match": partial(row_counts_match, ids=ids, kept_absent=kept_absent),
            "tier_counts_match": partial(tier_counts_match, ids=ids),
            "rows_not_in_file": partial(rows_not_in_file, ids=ids),
        }
        return {name: verdict(conn, schema, users, subscriptions) for name, verdict in verdicts.items()}


# A failure of one of these means the tables do not hold what the file says: the load is not committed.
BLOCKING = ("row_counts_match", "tier_counts_match", "subscriptions_have_users", "content_matches")


class VerificationFailed(Exception):
    """A blocking verdict failed inside the load's transaction; raised there, it rolls the load back."""

    def __init__(self, verdicts: dict[str, Verdict]):
        self.verdicts = verdicts
        super().__init__(failure_message(verdicts))


def judge_before_commit(
    conn, schema, users: pd.DataFrame, subscriptions: pd.DataFrame, kept_absent: dict[str, int] | None = None,
    rejected_user_ids: pd.Series | None = None,
) -> dict[str, Verdict]:
    """Every verdict on the tables as the open transaction holds them; raises `VerificationFailed`
    (so the transaction is rolled back) when a blocking one fails.

    Deferred constraints and constraint triggers fire first: left for the COMMIT, they could change or
    refuse rows after the verdicts. Immediate from here on, nothing deferred can run after them."""
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    verdicts = all_verdicts(conn, schema, users, subscriptions, kept_absent, rejected_user_ids)
    if any(not verdicts[name].passed for name in BLOCKING):
        raise VerificationFailed(verdicts)
    return verdicts


def failure_message(verdicts: dict[str, Verdict]) -> str:
    """One line: each failed blocking check, what differed, and a few keys of differing rows."""
    parts = []
    for name in BLOCKING:
        verdict = verdicts[name]
        if not verdict.passed:
            parts.append(f"{name}: {verdict.description or verdict.metadata}" + _example_keys(verdict))
    return "verification failed, nothing was written: " + "; ".join(parts)


def _example_keys(verdict: Verdict) -> str:
    """The keys of differing rows a content verdict gives as examples, per table and column: the file's
    rows that are missing or differ, not the table's rows the file lacks (kept, judged by their count)."""
    named = [
        f"{table} {column}: {', '.join(map(str, keys))}"
        for table, summary in verdict.metadata.items()
        if isinstance(summary, dict)
        for column, keys in summary.get("examples", {}).items()
        if column != verify.NOT_IN_FILE
    ]
    return f" (rows: {'; '.join(named)})" if named else ""
