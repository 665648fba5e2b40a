"""A snapshot carries each table's definition: restoring it after the tables were dropped makes them
again exactly (columns, types, NOT NULL, defaults, constraints, indexes, the enum), for any shape."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceit_etl.postgres.ddl import ensure_target_tables
from faceit_etl.postgres.snapshot import digest_table, restore_snapshot, take_snapshot
from faceit_etl_tests.conftest import examples

TYPES = ["integer", "bigint", "text", "varchar(17)", "numeric(12,3)", "boolean", "timestamptz", "date", "jsonb",
         "uuid", "integer[]", "subscriptiontier"]
VALUES = {"integer": "7", "bigint": "5000000000", "text": "'ü\\t\"x'", "varchar(17)": "'abc'",
          "numeric(12,3)": "1.5", "boolean": "true", "timestamptz": "'2025-01-02 03:04:05+02'",
          "date": "'2025-03-04'", "jsonb": "'{\"a\": [1, null]}'", "uuid": "gen_random_uuid()",
          "integer[]": "'{1,2}'", "subscriptiontier": "'PRO'"}

extra_column = st.fixed_dictionaries({
    "type": st.sampled_from(TYPES),
    "not_null": st.booleans(),
    "default": st.booleans(),
    "indexed": st.sampled_from([None, "plain", "unique", "expression"]),
    "checked": st.booleans(),
})


def shape(db) -> dict:
    def rows(query: str) -> list:
        return db.execute(query).fetchall()

    relations = "('users'::regclass, 'user_subscriptions'::regclass)"
    return {
        "columns": rows(f"""SELECT attrelid::regclass::text, attnum, attname, format_type(atttypid, atttypmod),
                                   attnotnull, pg_get_expr(adbin, adrelid)
                            FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
                            WHERE attrelid IN {relations} AND attnum > 0 AND NOT attisdropped ORDER BY 1, 2"""),
        "constraints": rows(f"""SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
                                FROM pg_constraint WHERE conrelid IN {relations} ORDER BY 1, 2"""),
        "indexes": rows(f"SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
                        f"WHERE indrelid IN {relations} ORDER BY 1"),
        "enum": rows("SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
                     "WHERE typname = 'subscriptiontier' ORDER BY enumsortorder"),
    }


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=st.lists(extra_column, max_size=5), rows=st.integers(0, 3))
def test_restoring_a_snapshot_of_dropped_tables_makes_them_again_exactly(db, tmp_path, columns, rows):
    db.execute("DROP TABLE IF EXISTS user_subscriptions, users; DROP TYPE IF EXISTS subscriptiontier")
    with db.transaction():
        ensure_target_tables(db, "public")
    for number, column in enumerate(columns):
        name, kind = f"extra_{number}", column["type"]
        default = f" DEFAULT {VALUES[kind]}" if column["default"] else ""
        db.execute(f"ALTER TABLE users ADD COLUMN {name} {kind}{default}")
        if column["checked"] and kind in ("integer", "bigint", "numeric(12,3)"):
            db.execute(f"ALTER TABLE users ADD CONSTRAINT {name}_positive CHECK ({name} > 0)")
        if column["indexed"] == "plain":
            db.execute(f"CREATE INDEX ix_{name} ON users ({name})")
        elif column["indexed"] == "unique" and kind in ("integer", "bigint"):  # each row its own value
            db.execute(f"CREATE UNIQUE INDEX ix_{name} ON users ({name}) WHERE {name} IS NOT NULL")
        elif column["indexed"] == "expression" and kind in ("text", "varchar(17)"):
            db.execute(f"CREATE INDEX ix_{name} ON users (lower({name}))")
    for row in range(rows):
        names = "".join(f", extra_{n}" for n in range(len(columns)))
        values = "".join(f", {VALUES[c['type']]}" if c["type"] not in ("bigint", "integer") else f", {row + 1}"
                         for c in columns)
        db.execute(f"INSERT INTO users (id, user_id{names}) VALUES (gen_random_uuid(), {row + 1}{values})")
        db.execute("INSERT INTO user_subscriptions (id, user_id, tier) "
                   "SELECT gen_random_uuid(), id, 'PREMIUM' FROM users WHERE user_id = %s", [row + 1])
    for number, column in enumerate(columns):
        if column["not_null"]:
            db.execute(f"UPDATE users SET extra_{number} = {VALUES[column['type']]} WHERE extra_{number} IS NULL")
            db.execute(f"ALTER TABLE users ALTER COLUMN extra_{number} SET NOT NULL")
    before = shape(db), [digest_table(db, "public", n) for n in ("users", "user_subscriptions")]
    folder = Path(tmp_path)
    snapshot = take_snapshot(db, "public", folder)
    db.execute("DROP TABLE user_subscriptions, users; DROP TYPE subscriptiontier")

    with db.transaction():
        restore_snapshot(db, folder, snapshot)

    assert (shape(db), [digest_table(db, "public", n) for n in ("users", "user_subscriptions")]) == before


def test_a_foreign_key_backed_by_a_unique_index_is_made_again_after_that_index(db, tmp_path):
    """PostgreSQL lets a foreign key reference a unique index that is no constraint, so a table's indexes
    must be back before any foreign key is added: here one of users' own (a referrer named by handle)."""
    with db.transaction():
        ensure_target_tables(db, "public")
    db.execute("ALTER TABLE users ADD COLUMN handle text, ADD COLUMN referrer_handle text")
    db.execute("CREATE UNIQUE INDEX users_handle ON users (handle)")
    db.execute("ALTER TABLE users ADD CONSTRAINT users_referrer FOREIGN KEY (referrer_handle) REFERENCES users (handle)")
    db.execute("INSERT INTO users (id, user_id, handle) VALUES (gen_random_uuid(), 1, 'ann')")
    db.execute("INSERT INTO users (id, user_id, handle, referrer_handle) VALUES (gen_random_uuid(), 2, 'bob', 'ann')")
    before = shape(db), [digest_table(db, "public", n) for n in ("users", "user_subscriptions")]
    snapshot = take_snapshot(db, "public", tmp_path)
    db.execute("DROP TABLE user_subscriptions, users; DROP TYPE subscriptiontier")

    with db.transaction():
        restore_snapshot(db, tmp_path, snapshot)

    assert (shape(db), [digest_table(db, "public", n) for n in ("users", "user_subscriptions")]) == before
    assert ("users", "users_referrer", "f", "FOREIGN KEY (referrer_handle) REFERENCES users(handle)") in before[0]["constraints"]
