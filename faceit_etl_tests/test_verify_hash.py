"""The content check compares hashes of each row, taken in the database and on the frames: both sides
must agree exactly for every type, and any difference must still be found and named.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from faceit_etl.generate import write_data_file
from faceit_etl.postgres import ddl, rowhash, verify
from faceit_etl.postgres.load import load
from faceit_etl.postgres.verdicts import BLOCKING, Verdict, all_verdicts, content_matches, judge_before_commit
from faceit_etl_tests.test_load import chain, conn  # noqa: F401 (a fixture)

SCHEMA = "public"
COLUMNS = {"big": "bigint", "small": "integer", "flag": "boolean", "at": "timestamptz", "word": "varchar(255)",
           "body": "text", "tier": "subscriptiontier"}
TEXTS = {"word", "body", "tier"}

texts = st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
moments = st.none() | st.datetimes(
    min_value=pd.Timestamp("0001-01-01").to_pydatetime(), max_value=pd.Timestamp("9999-12-31").to_pydatetime(),
    timezones=st.sampled_from([pd.Timestamp.now("UTC").tz, pd.Timestamp.now("Asia/Kolkata").tz]),
)
rows = st.fixed_dictionaries({
    "big": st.none() | st.integers(-(2**63), 2**63 - 1),
    "small": st.none() | st.integers(-(2**31), 2**31 - 1),
    "flag": st.none() | st.booleans(),
    "at": moments,
    "word": texts,
    "body": texts,
    "tier": st.none() | st.sampled_from(["FREE", "PREMIUM", "PRO"]),
    "any": st.sets(st.sampled_from(list(COLUMNS))),
})


def frame_of(entries: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({
        "big": pd.array([e["big"] for e in entries], dtype="Int64"),
        "small": pd.array([e["small"] for e in entries], dtype="Int64"),
        "flag": pd.array([e["flag"] for e in entries], dtype="boolean"),
        "at": pd.Series(pd.to_datetime([e["at"] for e in entries], utc=True), dtype="datetime64[us, UTC]"),
        "word": pd.array([e["word"] for e in entries], dtype="str"),
        "body": pd.array([e["body"] for e in entries], dtype="str"),
        "tier": pd.array([e["tier"] for e in entries], dtype="str"),
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(rows, min_size=1, max_size=30))
def test_each_row_hashes_alike_in_the_database_and_on_the_frame(db, entries):
    """Every type the tables hold (big ints, time zones, NULLs, any unicode, booleans, the tier enum),
    and cells that may hold any value: the database's hash of each row is the frame's, so their sums agree."""
    ddl.ensure_target_tables(db, SCHEMA)  # the enum
    db.execute("DROP TABLE IF EXISTS pg_temp.hashed")
    db.execute("CREATE TEMP TABLE hashed (n int, " + ", ".join(f"{c} {t}" for c, t in COLUMNS.items()) + ", marks int)")
    with db.cursor().copy("COPY hashed FROM STDIN") as copy:
        for n, e in enumerate(entries):
            marks = sum(1 << i for i, c in enumerate(COLUMNS) if c in e["any"])
            copy.write_row([n, *(e[c] for c in COLUMNS), marks])
    columns = list(COLUMNS)
    marks = {c: sql.SQL("h.marks & {} <> 0").format(sql.Literal(1 << i)) for i, c in enumerate(columns)}
    query = sql.SQL("SELECT {} FROM hashed h ORDER BY n").format(
        verify.table_hash(sql.SQL("h.n"), "h", columns, TEXTS, marks)
    )
    in_database = [row[0] for row in db.execute(query).fetchall()]

    frame = frame_of(entries).assign(n=pd.array(range(len(entries)), dtype="Int64"))[["n", *columns]]
    any_value = {c: np.array([c in e["any"] for e in entries]) for c in columns}
    on_frame = verify.frame_hashes(frame, any_value)

    assert on_frame.tolist() == in_database
    total = db.execute(sql.SQL("SELECT sum({}) FROM hashed h").format(
        verify.table_hash(sql.SQL("h.n"), "h", columns, TEXTS, marks))).fetchone()[0]
    assert rowhash.hash_sum(on_frame) == int(total)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80), min_size=1, max_size=20))
def test_the_numpy_lookup3_is_postgres_hashtextextended(db, words):
    """Texts of every length, around the 12-byte blocks and their tails, in any script."""
    expected = db.execute("SELECT array_agg(hashtextextended(w, 0) ORDER BY n) FROM unnest(%s::text[]) WITH ORDINALITY AS t(w, n)",
                          [words]).fetchone()[0]
    assert rowhash.to_int64(rowhash.hash_text(pd.array(words, dtype="str").__arrow_array__())).tolist() == expected


def test_texts_beyond_one_batch_hash_as_postgres_hashes_each(db):
    """hash_text takes `_BATCH` texts at a time out of one buffer: each batch, the last one short, hashes
    its own texts from its own bytes."""
    words = [f"{n}:{'ü' * (n % 7)}{'x' * (n % 23)}" for n in range(2 * rowhash._BATCH + 5)]
    expected = db.execute("SELECT array_agg(hashtextextended(w, 0) ORDER BY n) FROM unnest(%s::text[]) WITH ORDINALITY AS t(w, n)",
                          [words]).fetchone()[0]
    assert rowhash.to_int64(rowhash.hash_text(pa.array(words, type=pa.large_string()))).tolist() == expected


def loaded(conn, tmp_path, n=40, layout="nested"):
    mapped, rejects = chain(write_data_file(tmp_path / "data.json", n, seed=5, layout=layout))
    load(conn, SCHEMA, mapped, rejects, "run-1")
    return mapped


@pytest.mark.parametrize("layout", ["nested", "first"])  # "first": no created_at, any value there
def test_equal_tables_are_judged_by_their_hashes_without_reading_rows_back(db, conn, tmp_path, monkeypatch, layout):
    mapped = loaded(conn, tmp_path, layout=layout)

    def read_back(*args):
        raise AssertionError("the rows were read back although their hashes agree")

    monkeypatch.setattr(verify, "_read_table", read_back)
    verdict = content_matches(db, SCHEMA, mapped.users, mapped.subscriptions)
    assert verdict.passed and verdict.description is None
    assert verdict.metadata[verify.USERS]["rows_compared"] == 40

    # A user the file does not have: the file's rows are still equal, and the other one is named apart.
    db.execute("INSERT INTO users (id, user_id) VALUES (%s, 123)", [str(uuid.uuid4())])
    users = verify.compare_users(db, SCHEMA, mapped.users)
    assert (users.equal, users.unexpected, users.missing) == (True, [123], [])


def test_the_verdicts_send_the_files_ids_by_copy_never_as_a_query_parameter(db, conn, tmp_path):
    """The file's Telegram ids a verdict judges the table against (tier counts, users not in the file, their
    rows) go to the server in one binary COPY: as an array parameter a million took 1.6 s to send and
    unnest, and the tier counts' join over it 8 s. The verdicts judge as before."""
    mapped = loaded(conn, tmp_path)
    kept = str(uuid.uuid4())
    db.execute("INSERT INTO users (id, user_id) VALUES (%s, 123)", [kept])
    db.execute("INSERT INTO user_subscriptions (id, user_id, tier) VALUES (%s, %s, 'PRO')", [str(uuid.uuid4()), kept])
    sent = []

    class Traced(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            sent.extend(params.values() if isinstance(params, dict) else params or ())
            return super().execute(query, params, **kwargs)

    db.cursor_factory = Traced
    verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions, rejected_user_ids=pd.Series([123], dtype="Int64"))

    assert [p for p in sent if isinstance(p, (list, tuple))] == []
    tiers = mapped.subscriptions["tier"].value_counts().to_dict()
    assert verdicts["tier_counts_match"] == Verdict(True, {"in_database": tiers, "expected": tiers, "users_compared": 40})
    assert verdicts["rows_not_in_file"] == Verdict(True, {"users_not_in_file": 0, "examples": []})
    assert verdicts["row_counts_match"].metadata == {
        "users_in_database": 41, "users_expected": 41, "user_subscriptions_in_database": 41,
        "user_subscriptions_expected": 41, "users_kept_absent": 1, "user_subscriptions_kept_absent": 1}
    absent = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions)["rows_not_in_file"]
    assert (absent.passed, absent.metadata) == (False, {"users_not_in_file": 1, "examples": [123]})


FILE_IDS = "_faceit_etl_verify_ids"  # the temporary table a judging uploads the file's Telegram ids to


def uploads_of_file_ids(connection: psycopg.Connection) -> list[str]:
    """The file's ids' uploads this connection sends from now on (every COPY, the tables' own too, is seen)."""
    copies = []

    class Traced(psycopg.Cursor):
        def copy(self, statement, *args, **kwargs):
            copies.append(statement.as_string(self))
            return super().copy(statement, *args, **kwargs)

    connection.cursor_factory = Traced
    return copies


def left_over(connection: psycopg.Connection) -> str | None:
    return connection.execute(f"SELECT to_regclass('pg_temp.{FILE_IDS}')::text").fetchone()[0]


@pytest.mark.parametrize("judging", ["in the load", "the checks after"])
def test_one_judging_uploads_the_files_ids_once(db, conn, tmp_path, judging):
    """Every verdict of one judging reads one upload of the file's Telegram ids: at 1M users each verdict
    uploading its own sent the same million ids twice in the load and three times in the checks after.
    None is left behind in the session."""
    mapped, rejects = chain(write_data_file(tmp_path / "data.json", 40, seed=5))
    verdicts = {}
    if judging == "in the load":
        judged, copies = conn, uploads_of_file_ids(conn)
        load(conn, SCHEMA, mapped, rejects, "run-1", before_commit=lambda c, stats: verdicts.update(judge_before_commit(
            c, SCHEMA, mapped.users, mapped.subscriptions, stats.kept_absent(), rejects["user_id"])))
    else:
        load(conn, SCHEMA, mapped, rejects, "run-1")
        judged, copies = db, uploads_of_file_ids(db)
        verdicts = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions)

    assert [c for c in copies if FILE_IDS in c] == [f'COPY "{FILE_IDS}" FROM STDIN (FORMAT binary)']
    assert [name for name in (*BLOCKING, "rows_not_in_file") if not verdicts[name].passed] == []
    assert left_over(judged) is None


def test_each_judging_in_one_session_judges_its_own_files_ids(db, conn, tmp_path):
    """A later judging in the same session (a re-run, the checks after a run) uploads its own file's ids:
    one that read the earlier judging's upload would judge the tables against the other file."""
    mapped = loaded(conn, tmp_path)
    users = mapped.users.iloc[:30]
    subscriptions = mapped.subscriptions[mapped.subscriptions["user_id"].isin(users["id"])]
    dropped = sorted(map(int, mapped.users["user_id"].iloc[30:]))
    tiers_of = lambda frame: dict(sorted(frame["tier"].value_counts().items()))  # noqa: E731

    whole = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions)
    fewer = all_verdicts(db, SCHEMA, users, subscriptions)
    whole_again = all_verdicts(db, SCHEMA, mapped.users, mapped.subscriptions)

    assert whole["rows_not_in_file"] == whole_again["rows_not_in_file"] == Verdict(True, {"users_not_in_file": 0, "examples": []})
    assert fewer["rows_not_in_file"].metadata == {"users_not_in_file": 10, "examples": dropped}
    assert fewer["row_counts_match"] == Verdict(True, {
        "users_in_database": 40, "users_expected": 40, "user_subscriptions_in_database": 40,
        "user_subscriptions_expected": 40, "users_kept_absent": 10, "user_subscriptions_kept_absent": 10})
    assert whole["row_counts_match"].metadata["users_kept_absent"] == whole_again["row_counts_match"].metadata["users_kept_absent"] == 0
    assert fewer["tier_counts_match"] == Verdict(True, {
        "in_database": tiers_of(subscriptions), "expected": tiers_of(subscriptions), "users_compared": 30})
    assert whole_again["tier_counts_match"].metadata["users_compared"] == 40
    assert left_over(db) is None


def test_a_judging_that_fails_in_the_database_raises_its_own_error(conn, tmp_path):
    """The file's ids' table goes with the failed transaction: dropping it there would raise "current
    transaction is aborted" in place of what failed."""
    mapped = loaded(conn, tmp_path)
    with pytest.raises(psycopg.errors.UndefinedTable, match='relation "no_such_schema.users" does not exist'):
        all_verdicts(conn, "no_such_schema", mapped.users, mapped.subscriptions)
    conn.rollback()
    assert left_over(conn) is None


def test_a_duplicated_row_standing_in_for_a_missing_one_is_found(db, conn, tmp_path):
    """Same count, one user twice and another gone: a sum of hashes that let duplicates cancel (XOR) or a
    count alone would pass; the check names both."""
    mapped = loaded(conn, tmp_path)
    twice, gone = int(mapped.users["user_id"][3]), int(mapped.users["user_id"][7])
    db.execute("ALTER TABLE user_subscriptions DROP CONSTRAINT IF EXISTS user_subscriptions_user_id_fkey")
    for name in db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'users'::regclass AND contype IN ('u', 'p')"
    ).fetchall():
        db.execute(sql.SQL("ALTER TABLE users DROP CONSTRAINT {} CASCADE").format(sql.Identifier(name[0])))
    db.execute("DROP INDEX IF EXISTS ix_users_user_id")
    db.execute("DELETE FROM users WHERE user_id = %s", [gone])
    db.execute(
        "INSERT INTO users SELECT * FROM users WHERE user_id = %s", [twice]
    )
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == len(mapped.users)

    diff = verify.compare_users(db, SCHEMA, mapped.users)
    assert (diff.missing, diff.duplicated, diff.differing, diff.equal) == ([gone], [twice], {}, False)
    assert diff.summary()["duplicated_rows"] == 1 and diff.summary()["examples"]["duplicated"] == [twice]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_one_changed_cell_is_found_and_named(db, database_url, tmp_path_factory, data):
    """One cell of one row changed to another value of its type, in any column: the hashes differ and
    the row comparison names that column and that user."""
    tmp_path = tmp_path_factory.mktemp("changed")
    with psycopg.connect(database_url) as conn:
        db.execute("DROP TABLE IF EXISTS user_subscriptions, users CASCADE")
        mapped = loaded(conn, tmp_path, n=20)
    name, frame, columns = data.draw(st.sampled_from([
        (verify.USERS, mapped.users, ["faceit_player_id", "faceit_nickname", "last_checked_match_id",
                                      "waiting_for_nickname", "language", "notifications_enabled",
                                      "total_requests", "created_at", "last_active_at"]),
        (verify.SUBSCRIPTIONS, mapped.subscriptions, ["tier", "expires_at", "auto_renew", "payment_method",
                                                      "daily_requests", "last_reset_date", "referred_by_user_id",
                                                      "referral_code", "referrals_count"]),
    ]))
    column = data.draw(st.sampled_from(columns))
    # A created_at the file does not have may be anything: change one the file gives.
    rows = np.flatnonzero(frame[column].notna().to_numpy()) if column == "created_at" else np.arange(len(frame))
    row = int(data.draw(st.sampled_from(rows)))
    change = {
        "boolean": "NOT coalesce({c}, false)", "integer": "coalesce({c}, 0) + 1", "bigint": "coalesce({c}, 0) + 1",
        "timestamp with time zone": "coalesce({c}, now()) + interval '1 microsecond'",
        "USER-DEFINED": "(CASE WHEN {c} = 'PRO' THEN 'FREE' ELSE 'PRO' END)::subscriptiontier",
    }
    kind = db.execute("SELECT data_type FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
                      [name, column]).fetchone()[0]
    db.execute(sql.SQL("UPDATE {t} SET {c} = " + change.get(kind, "coalesce({c}, '') || 'é'") + " WHERE id = %s").format(
        t=sql.Identifier(name), c=sql.Identifier(column)), [str(frame["id"].iloc[row])])
    telegram_id = dict(zip(mapped.users["id"], mapped.users["user_id"].astype(int)))[
        frame["id"].iloc[row] if name == verify.USERS else frame["user_id"].iloc[row]]

    compare = verify.compare_users if name == verify.USERS else (
        lambda c, s, f: verify.compare_subscriptions(c, s, f, mapped.users))
    diff = compare(db, SCHEMA, frame)
    assert (diff.differing, diff.missing, diff.duplicated) == ({column: [telegram_id]}, [], [])
