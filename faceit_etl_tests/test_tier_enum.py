"""An enum `subscriptiontier` made by hand with labels other than the bot's is refused before anything
is written, naming the labels found and the ones the tiers need."""

from __future__ import annotations

import pytest

from faceit_etl_tests.conftest import NESTED_SAMPLE
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)

ENUMS = {
    "lower case": ("'free', 'premium', 'pro'", "'free', 'premium', 'pro'", "'FREE', 'PREMIUM', 'PRO'"),
    "one label short": ("'FREE', 'PREMIUM'", "'FREE', 'PREMIUM'", "'PRO'"),
}


def target_state(db) -> tuple:
    """The enum's labels and the relations but the run's own log tables (and their indexes), with their storage files."""
    labels = db.execute("SELECT enumlabel::text FROM pg_enum WHERE enumtypid = 'subscriptiontier'::regtype "
                        "ORDER BY enumsortorder").fetchall()
    relations = db.execute("SELECT relname, relkind, relfilenode::bigint FROM pg_class WHERE relnamespace = "
                           "'public'::regnamespace AND relname NOT LIKE '%migration\\_%' ORDER BY 1").fetchall()
    return labels, relations


@pytest.mark.parametrize("with_table", [False, True], ids=["enum only", "enum and the bot's table"])
@pytest.mark.parametrize(("labels", "shown", "missing"), ENUMS.values(), ids=ENUMS.keys())
def test_an_enum_without_the_bots_tier_labels_is_refused_before_writing(
    workdir, database_url, db, labels, shown, missing, with_table  # noqa: F811
):
    db.execute(f"CREATE TYPE subscriptiontier AS ENUM ({labels})")
    if with_table:
        db.execute("CREATE TABLE user_subscriptions (id uuid PRIMARY KEY, tier subscriptiontier)")
    before = target_state(db)

    done = faceit_etl(workdir, database_url, "migrate", str(NESTED_SAMPLE))

    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"the enum public.subscriptiontier of public.user_subscriptions.tier has the labels {shown}; "
            f"the bot's tiers need 'FREE', 'PREMIUM', 'PRO' (missing {missing}). Nothing was written. Give the enum "
            "the bot's labels (ALTER TYPE ... RENAME VALUE or ADD VALUE), then run again") in done.stdout
    assert "invalid input value for enum" not in done.stdout + done.stderr
    assert target_state(db) == before
    assert db.execute("SELECT to_regclass('users')").fetchone()[0] is None


def test_extra_labels_beside_the_bots_load_as_usual(workdir, database_url, db):  # noqa: F811
    db.execute("CREATE TYPE subscriptiontier AS ENUM ('FREE', 'PREMIUM', 'PRO', 'ENTERPRISE')")

    done = faceit_etl(workdir, database_url, "migrate", str(NESTED_SAMPLE))

    assert done.returncode == 0, done.stdout + done.stderr
    tiers = db.execute("SELECT tier::text, count(*) FROM user_subscriptions GROUP BY 1 ORDER BY 1").fetchall()
    assert sum(n for _, n in tiers) == 25 and {t for t, _ in tiers} <= {"FREE", "PREMIUM", "PRO"}
